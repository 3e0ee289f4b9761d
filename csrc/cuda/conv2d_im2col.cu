// conv2d_im2col.cu: convolution as GEMM on the GPU (the CUDA rows of algorithm "im2col"), on
// gemm.cu's tiled GEMM. x (N, C, H, W), w (K, C/g, R, S), y / grad_y (N, K, P, Q); per group g,
// with patches_g (C/g*R*S, N*P*Q) the unrolled patch matrix of im2col (Chellapilla et al. 2006):
//   forward          y_g = w_g @ patches_g + bias_g: one implicit GEMM (Chetlur et al., "cuDNN",
//                    2014): the GEMM's B tiles are gathered from x, the images side by side as
//                    columns, the result and the bias written straight into y. No workspace.
//   data gradient    col_g = w_g^T @ grad_y_g (C/g*R*S, m*P*Q) for m images at a time into the
//                    workspace, then col2im_gather folds it: each input pixel sums the columns that
//                    read it (at most R*S), in a fixed order: deterministic, no atomics. The images
//                    go in chunks whose col fits kMaxColBytes (at least one image). 1x1 stride-1
//                    unpadded kernels have col == grad_x: the GEMM writes grad_x, no workspace.
//   weight gradient  grad_w_g = grad_y_g @ patches_g^T: one implicit GEMM whose reduction runs over
//                    every pixel of the batch, its B gathered from x; few output tiles split the
//                    reduction into slices summed in order (gemm.cu; workspace for the slices).
//                    The bias gradient is conv2d_backward_bias.cu's.
// Limits: float and double; any stride, dilation, per-side padding and groups. The kernels index
// images with 32-bit ints: H, W, P, Q, R, S, pads, strides and dilations below 2^30, and the GEMMs'
// reductions (C/g*R*S, K/g, N*P*Q) below 2^31 (supports() says so otherwise). No tensor cores.
#include <cstdint>

#include "gemm.h"
#include "kernels.h"
#include "portable.cuh"

namespace fastconv::cuda {
namespace {

// ---- helpers -------------------------------------------------------------------------------

// The data gradient's col of one chunk of images stays within this (at least one image):
// bounded for any batch, large enough that ResNet-50's layers at batch 32-64 take one or a few
// GEMMs (its largest col, 3x3 on 56x56 with 64 channels, is 7 MiB of float per image).
constexpr index_t kMaxColBytes = index_t(256) << 20;

// Bytes of one image's col (every group: C*R*S rows of P*Q).
index_t col_bytes_per_image(const ConvParams& p, int elem) { return p.C * p.R * p.S * p.P * p.Q * elem; }

// Images per data-gradient chunk.
index_t data_chunk_images(const ConvParams& p, int elem) {
  const index_t per_image = col_bytes_per_image(p, elem), n = fc_max<index_t>(p.N, 1);
  if (per_image == 0) return n;
  return fc_max<index_t>(1, fc_min(n, kMaxColBytes / per_image));
}

// ---- kernels -------------------------------------------------------------------------------

// grad_x of m images (m*C*H*W values = count, gx (m, C, H, W)) from their col (groups, C/g*R*S,
// cols = m*P*Q): gx[n, c, h, w] = sum over (r, s) with h = p*stride_h - pad_h + r*dil_h,
// w = q*stride_w - pad_w + s*dil_w for some output pixel (p, q) of col[g, (c%C/g*R + r)*S + s,
// n*P*Q + p*Q + q], r and s ascending. One thread per value, grid-stride. I: the index type, int
// when every index of gx and col fits (the divisions are then 32-bit), else index_t.
template <class T, class I>
__global__ void col2im_gather(const ConvParams p, const T* col, I cols, I count, T* gx) {
  const I W = I(p.W), HW = I(p.H) * W, CHW = I(p.C) * HW, Cg = I(p.C_per_group()), RS = I(p.R * p.S);
  const I PQ = I(p.P * p.Q);
  const int R = int(p.R), S = int(p.S), P = int(p.P), Q = int(p.Q);
  const int sh = int(p.stride_h), sw = int(p.stride_w), dh = int(p.dil_h), dw = int(p.dil_w);
  const int ph = int(p.pad_h), pw = int(p.pad_w);
  const I step = I(gridDim.x) * I(blockDim.x);
  for (I e = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); e < count; e += step) {
    const I n = e / CHW, chw = e - n * CHW, c = chw / HW, hw = chw - c * HW;
    const int h = int(hw / W), w = int(hw - I(h) * W);
    const I g = c / Cg;
    const T* cc = col + (g * Cg * RS + (c - g * Cg) * RS) * cols + n * PQ;
    T sum = T(0);
    for (int r = 0; r < R; ++r) {
      const int th = h + ph - r * dh;  // = p * stride_h for the output row p that reads (h, w)
      if (th < 0) break;               // and for every later r
      if (th % sh != 0 || th / sh >= P) continue;
      const T* cr = cc + I(r) * S * cols + I(th / sh) * Q;
      for (int s = 0; s < S; ++s) {
        const int tw = w + pw - s * dw;
        if (tw < 0) break;
        if (tw % sw != 0 || tw / sw >= Q) continue;
        sum += cr[I(s) * cols + tw / sw];
      }
    }
    gx[e] = sum;
  }
}

// ---- launchers ------------------------------------------------------------------------------

template <class T>
void col2im(const ConvParams& p, const T* col, index_t m, T* gx, void* stream) {
  const index_t count = m * p.C * p.H * p.W;
  if (count == 0) return;
  constexpr int kThreads = 256;
  constexpr index_t kMaxBlocks = index_t(1) << 20;  // grid-stride beyond
  const unsigned blocks = blocks_for(fc_min(count, kMaxBlocks * kThreads), kThreads);
  const index_t cols = m * p.P * p.Q;
  constexpr index_t kIntMax = 0x7fffffff;
  if (count + index_t(blocks) * kThreads <= kIntMax && p.C * p.R * p.S * cols <= kIntMax) {
    const auto col2im_kernel = col2im_gather<T, int>;
    FC_LAUNCH(col2im_kernel, blocks, kThreads, 0, stream, p, col, int(cols), int(count), gx);
  } else {
    const auto col2im_kernel_64 = col2im_gather<T, index_t>;
    FC_LAUNCH(col2im_kernel_64, blocks, kThreads, 0, stream, p, col, cols, count, gx);
  }
}

template <class T>
void forward(const ConvParams& p, const Tensors& t, void* stream) {
  conv_forward_gemm<T>(p, static_cast<const T*>(t.x), static_cast<const T*>(t.w),
                       static_cast<const T*>(t.bias), static_cast<T*>(t.y), stream);
}

template <class T>
void backward_data(const ConvParams& p, const Tensors& t, void* stream) {
  const T* gy = static_cast<const T*>(t.grad_y);
  const T* w = static_cast<const T*>(t.w);
  T* gx = static_cast<T*>(t.grad_x);
  if (p.N == 0) return;
  if (conv_data_gemm_is_grad_x(p)) {
    conv_backward_data_gemm<T>(p, gy, w, 0, p.N, gx, stream);
    return;
  }
  T* col = static_cast<T*>(t.workspace);
  const index_t chunk = data_chunk_images(p, sizeof(T)), image = p.C * p.H * p.W;
  for (index_t n0 = 0; n0 < p.N; n0 += chunk) {
    const index_t m = fc_min(chunk, p.N - n0);
    conv_backward_data_gemm<T>(p, gy, w, n0, m, col, stream);
    col2im<T>(p, col, m, gx + n0 * image, stream);
  }
}

template <class T>
void backward_weight(const ConvParams& p, const Tensors& t, void* stream) {
  conv_backward_weight_gemm<T>(p, static_cast<const T*>(t.x), static_cast<const T*>(t.grad_y),
                               static_cast<T*>(t.grad_w), t.workspace, stream);
}

}  // namespace

// ---- entry points (kernels.h) ------------------------------------------------------------

std::string conv2d_im2col_supports(const Problem& pr) {
  if (pr.op != Op::conv2d_forward && pr.op != Op::conv2d_backward_data && pr.op != Op::conv2d_backward_weight)
    return str_cat("im2col computes convolutions, not ", op_name(pr.op));
  if (pr.dtype != DType::f32 && pr.dtype != DType::f64)
    return str_cat("im2col on CUDA takes float32 and float64, not ", dtype_name(pr.dtype));
  if (!conv_gemm_fits(pr.conv))
    return "im2col on CUDA takes image sizes, padding, strides and dilations below 2^30 and GEMM sizes "
           "(C/groups*R*S, K/groups, N*P*Q) below 2^31";
  return "";
}

index_t conv2d_im2col_workspace_bytes(const Problem& pr, const ExecContext&) {
  const ConvParams& p = pr.conv;
  const int elem = dtype_size(pr.dtype);
  switch (pr.op) {
    case Op::conv2d_backward_data:
      if (p.N == 0 || conv_data_gemm_is_grad_x(p)) return 0;
      return data_chunk_images(p, elem) * col_bytes_per_image(p, elem);
    case Op::conv2d_backward_weight: return conv_backward_weight_gemm_workspace(p, elem);
    default: return 0;
  }
}

void conv2d_im2col_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f32)
    forward<float>(pr.conv, t, ctx.stream);
  else
    forward<double>(pr.conv, t, ctx.stream);
}

void conv2d_im2col_backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f32)
    backward_data<float>(pr.conv, t, ctx.stream);
  else
    backward_data<double>(pr.conv, t, ctx.stream);
}

void conv2d_im2col_backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (t.grad_w) {
    if (pr.dtype == DType::f32)
      backward_weight<float>(pr.conv, t, ctx.stream);
    else
      backward_weight<double>(pr.conv, t, ctx.stream);
  }
  if (t.grad_bias) conv2d_backward_bias(pr, t, ctx);
}

}  // namespace fastconv::cuda
