// cuda/kernels.h: the host entry points of the CUDA kernel files, one group per file, as the
// kernel table (registry.cpp) calls them. Each takes the checked Problem, the tensors' device
// pointers and the context (ctx.stream is the caller's cudaStream_t, null for the default
// stream); it queues its kernels on that stream and returns without synchronising. pr.dtype is
// float32 or float64 (supports() says which the algorithm takes). Workspaces are device memory
// of the bytes the *_workspace_bytes function asked for, 16-byte aligned.
// Plain C++: included by registry.cpp, which the host compiler builds.
#pragma once
#include <string>

#include "../registry.h"

namespace fastconv::cuda {

// Makes ctx.device_index the calling thread's current device (a no-op in the emulator).
void enter(const ExecContext& ctx);

// ---- conv2d_direct.cu: one output element per thread; depthwise and small channel counts -----
std::string conv2d_direct_supports(const Problem& pr);  // forward and both backward ops
index_t conv2d_direct_workspace_bytes(const Problem& pr, const ExecContext& ctx);
void conv2d_direct_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void conv2d_direct_backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx);
// grad_w when t.grad_w, grad_bias when t.grad_bias (either may be null).
void conv2d_direct_backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx);

// ---- conv2d_backward_bias.cu: grad_bias[k] = sum over n, p, q of grad_y (t.grad_y -> t.grad_bias) ----
void conv2d_backward_bias(const Problem& pr, const Tensors& t, const ExecContext& ctx);

// ---- conv2d_im2col.cu: im2col / col2im around gemm.cu's tiled GEMM ---------------------------
std::string conv2d_im2col_supports(const Problem& pr);
index_t conv2d_im2col_workspace_bytes(const Problem& pr, const ExecContext& ctx);  // per op
void conv2d_im2col_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void conv2d_im2col_backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void conv2d_im2col_backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx);

// ---- pool2d.cu: every pooling op, forward and backward (pr.pool; adaptive included) ----------
void max_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);  // t.indices optional
void avg_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void lp_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void max_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void avg_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void lp_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
// distance-weighted average pooling: the window (or its factors) in t.w
void weighted_avg_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void weighted_avg_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx);

// ---- tiled_conv2d.cu: tiled / locally connected convolution (tiles_h x tiles_w kernel sets) ---
void tiled_conv2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx);
void tiled_conv2d_backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx);
// grad_w when t.grad_w, grad_bias (per set) when t.grad_bias (either may be null).
void tiled_conv2d_backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx);

}  // namespace fastconv::cuda
