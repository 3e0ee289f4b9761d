// params.h: the plain problem descriptions shared by every kernel, CPU and CUDA.
//
// Convolution (cross-correlation; Python flips the kernel for flip=True):
//   x is (N, C, H, W), w is (K, C/groups, R, S), bias is (K,), y is (N, K, P, Q)
//   y[n,k,p,q] = bias[k] + sum_{c,r,s} x[n, g*C/groups + c, p*stride_h - pad_h + r*dil_h,
//                                                       q*stride_w - pad_w + s*dil_w] * w[k,c,r,s]
//   with g = k / (K/groups) and x = 0 outside the image. pad_h/pad_w are the top/left
//   pads; the bottom/right pads are implied by P and Q (they may differ from the top/left).
// Pooling: x is (N, C, H, W), y is (N, C, P, Q), windows of R x S (see pool_window()).
// 1-D problems are 2-D problems with H = R = P = 1.
// Tiled convolution (ops tiled_conv2d_*): tiles_h x tiles_w kernel sets cycled over the
// outputs, w (tiles_h, tiles_w, K, C/groups, R, S), output (p, q) using set
// (p % tiles_h, q % tiles_w); 1 x 1 is conv2d, P x Q a locally connected layer. Every other
// op requires tiles 1 x 1. With channel_bias the bias (forward) and grad_bias (weight
// gradient) are (K,), one per output channel shared by every set: the weight gradient then sums
// the bias gradient over all positions (in double), so no op needs a broadcast or reduction
// outside the kernel.
#pragma once
#include "common.h"

namespace fastconv {

struct ConvParams {
  index_t N = 0, C = 0, H = 0, W = 0;  // input
  index_t K = 0, R = 0, S = 0;         // output channels, kernel height/width
  index_t P = 0, Q = 0;                // output height/width
  index_t pad_h = 0, pad_w = 0;        // top, left
  index_t stride_h = 1, stride_w = 1;
  index_t dil_h = 1, dil_w = 1;
  index_t groups = 1;
  index_t tiles_h = 1, tiles_w = 1;  // kernel sets (tiled_conv2d_* ops only)
  bool channel_bias = false;         // tiled ops: bias / grad_bias (K,), not (tiles_h, tiles_w, K)

  FC_HD index_t C_per_group() const { return C / groups; }
  FC_HD index_t K_per_group() const { return K / groups; }
  FC_HD bool is_depthwise() const { return groups == C && groups == K; }
  FC_HD bool is_pointwise() const {  // 1x1, no padding: a plain GEMM per image (strided pixels)
    return R == 1 && S == 1 && pad_h == 0 && pad_w == 0;
  }
  FC_HD double flops() const {  // 2 per multiply-add, as every conv benchmark counts
    return 2.0 * double(N) * double(K) * double(P) * double(Q) * double(C_per_group()) * double(R * S);
  }
};

// Output extent of a sliding window: floor((in + pads - dil*(k-1) - 1) / stride) + 1.
FC_HD inline index_t conv_out_size(index_t in, index_t pad_lo, index_t pad_hi, index_t k, index_t stride,
                                   index_t dil) {
  index_t span = in + pad_lo + pad_hi - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

struct PoolParams {
  index_t N = 0, C = 0, H = 0, W = 0;  // input
  index_t P = 0, Q = 0;                // output
  index_t R = 1, S = 1;                // window (ignored when adaptive)
  index_t pad_h = 0, pad_w = 0;
  index_t stride_h = 1, stride_w = 1;
  index_t dil_h = 1, dil_w = 1;
  bool adaptive = false;          // windows [floor(p*H/P), ceil((p+1)*H/P)), as torch
  bool count_include_pad = true;  // avg pooling divisor
  double norm_type = 2.0;         // Lp pooling
  index_t divisor_override = 0;   // avg pooling: divide by this instead of the count (0 = none)
  // Weighted average pooling: divide by the counted taps' weight sum (else a plain weighted
  // sum); the window w is (R, S), or its factors (R + S: rows then columns) when separable.
  bool normalize = true;
  bool separable = false;
};

// Checks that a ConvParams is self-consistent; throws std::invalid_argument.
void check_conv_params(const ConvParams& p);
void check_pool_params(const PoolParams& p);

}  // namespace fastconv
