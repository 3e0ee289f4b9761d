// cuda/gemm.h: fastconv's own tiled GEMM on the GPU (gemm.cu), and the convolution products
// that run on it as implicit GEMMs (the conv2d_im2col.cu kernels' work).
// Plain C++ (no CUDA types): streams are cudaStream_t passed as void*; every pointer is device
// memory. Every function queues its kernels on the stream and returns without synchronising.
// float and double.
#pragma once
#include "../common.h"
#include "../params.h"

namespace fastconv::cuda {

// ---- the GEMM ---------------------------------------------------------------------------
// C = alpha * op(A) @ op(B) + beta * C, row-major: op(A) is M x K (A is M x K with row pitch
// lda, or K x M when trans_a), op(B) is K x N (B is K x N with pitch ldb, or N x K when
// trans_b), C is M x N with pitch ldc. `batch` independent products in one launch, the i-th at
// A + i*stride_a, B + i*stride_b, C + i*stride_c. beta == 0 never reads C (it may hold NaN).
// Any M, N, K >= 0 (K == 0: C = beta * C). The tile shape follows M, N and the batch; the
// environment variable FASTCONV_CUDA_GEMM_TILE=large|medium|small forces one (tests, benchmarks).
template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, void* stream, index_t batch = 1,
          index_t stride_a = 0, index_t stride_b = 0, index_t stride_c = 0);

// ---- convolutions as implicit GEMMs (x (N, C, H, W), w (K, C/g, R, S), y (N, K, P, Q)) -----
// One launch each, the groups as the GEMM's batch. The unrolled patch matrix of im2col is never
// written: the GEMM's tile loads gather it from x (see gemm.cu).

// Whether the problem's sizes fit the kernels' 32-bit indices: H, W, P, Q, R, S, N, pads, strides
// and dilations below 2^30, C/g*R*S, K/g and N*P*Q below 2^31. The functions below throw otherwise.
bool conv_gemm_fits(const ConvParams& p);

// y = conv(x, w) + bias (bias may be null): per group g, y_g (K/g, N*P*Q) = w_g (K/g, C/g*R*S)
// @ patches_g (C/g*R*S, N*P*Q), the images side by side in the GEMM's columns.
template <class T>
void conv_forward_gemm(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, void* stream);

// Whether the data gradient's product is grad_x itself (1x1, stride 1, unpadded: the patch
// matrix is the image), so conv_backward_data_gemm writes grad_x and no col2im follows.
inline bool conv_data_gemm_is_grad_x(const ConvParams& p) {
  return p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0 && p.stride_h == 1 && p.stride_w == 1 &&
         p.P == p.H && p.Q == p.W;
}

// Images [n0, n0 + m) of the data gradient's product: per group g,
// col_g (C/g*R*S, m*P*Q) = w_g^T @ grad_y[n0 : n0+m, g] (K/g, m*P*Q), written to out as
// (groups, C/g*R*S, m*P*Q) for a col2im to fold; or, when conv_data_gemm_is_grad_x(p), straight
// into grad_x (out = grad_x of the whole batch, (N, C, H, W); images [n0, n0 + m) written).
template <class T>
void conv_backward_data_gemm(const ConvParams& p, const T* grad_y, const T* w, index_t n0, index_t m, T* out,
                             void* stream);

// grad_w (K, C/g, R, S) = per group g, grad_y_g (K/g, N*P*Q) @ patches_g^T, the reduction over
// every image's pixels; with N*P*Q == 0 it writes zeros. Few output tiles and a long reduction
// split the reduction into slices (deterministic: each slice's partial product goes to the
// workspace, then the slices are summed in order); the workspace bytes it needs:
index_t conv_backward_weight_gemm_workspace(const ConvParams& p, int elem_bytes);
template <class T>
void conv_backward_weight_gemm(const ConvParams& p, const T* x, const T* grad_y, T* grad_w, void* workspace,
                               void* stream);

}  // namespace fastconv::cuda
