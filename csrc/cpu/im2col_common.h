// im2col_common.h: internal helpers shared by the GEMM-based convolution files —
// conv2d_im2col.cpp (forward; data gradient by GEMM + col2im), conv2d_backward_weight_gemm.cpp
// (weight gradient as an implicit GEMM) and conv2d_backward_bias.cpp — so that their
// rules for shapes, batching and threading exist once. Not part of the kernel interface
// (kernels.h). Limits: for files compiled once with the baseline flags, not for the
// per-ISA objects: these inline functions are emitted as weak symbols in every object that
// uses them, and the linker keeps one copy.
#pragma once
#include <algorithm>
#include <cstring>

#include "params.h"

namespace fastconv::cpu::im2col_detail {

// Below this many values a copy or a reduction runs on one thread: starting a team costs a
// few microseconds, roughly what one core takes to stream 32K floats (128 KiB). A rule of
// thumb from the first kernels (commits 1144b5f, 5135844), not a measured crossover.
constexpr index_t kParallelMinValues = 32768;

// Buffers carved out of one workspace are rounded to whole cache lines, so the next one
// starts on a line (and no two threads' buffers share one).
constexpr index_t kCacheLineBytes = 64;
// Elements of `elem` bytes in the lines that cover `bytes`.
inline index_t elems_in_lines(index_t bytes, int elem) {
  return (bytes + kCacheLineBytes - 1) / kCacheLineBytes * (kCacheLineBytes / elem);
}
// `elems` rounded up to whole lines of float (so to pairs of lines for double), whatever T.
constexpr index_t kLineFloats = kCacheLineBytes / index_t(sizeof(float));
inline index_t round_to_lines(index_t elems) { return (elems + kLineFloats - 1) / kLineFloats * kLineFloats; }

// Rows of one group's unrolled patch matrix: C/g * R * S.
inline index_t col_rows(const ConvParams& p) { return p.C_per_group() * p.R * p.S; }

// 1x1, stride 1, unpadded: each image's (C/g, H*W) planes are the patch matrix itself.
inline bool is_plain_gemm(const ConvParams& p) {
  return p.is_pointwise() && p.stride_h == 1 && p.stride_w == 1 && p.P == p.H && p.Q == p.W;
}

// Parallelise over (image, group) pairs, one serial GEMM each, when there are enough
// of them and each is small; otherwise one pair at a time with a threaded GEMM.
// Not for images of a few output pixels: their GEMMs would be a few columns wide and each
// re-pack the weights; the batched mode puts the images side by side in one GEMM instead
// (LeNet-5's 16->120 5x5 layer on 5x5 maps, batch 64: 0.60 ms image by image).
constexpr index_t kOuterMinPixels = 64;
// Pairs of fewer flops than this are too small to keep a team busy one at a time (2e7 flops:
// about 0.2 ms of one core at 100 GFLOP/s). From the first version (1144b5f), not measured.
constexpr double kOuterMaxFlopsPerPair = 2e7;
inline bool outer_parallel(const ConvParams& p, int threads) {
  const index_t pairs = p.N * p.groups;
  const double flops_per_pair = p.flops() / double(std::max<index_t>(pairs, 1));
  const bool batched = p.groups == 1 && p.P * p.Q < kOuterMinPixels && p.N > 1;
  return threads > 1 && pairs >= 2 * threads && flops_per_pair < kOuterMaxFlopsPerPair && !batched;
}

// The output columns [lo, hi) within [oq0, oq1) whose input column oq*stride + off lies
// in [0, W): computed once per row, so the copy loops run without a bounds test per
// element (and vectorise).
inline void valid_columns(index_t oq0, index_t oq1, index_t off, index_t stride, index_t W, index_t& lo,
                          index_t& hi) {
  auto ceil_div = [](index_t a, index_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
  lo = std::clamp(ceil_div(-off, stride), oq0, oq1);
  hi = std::clamp(ceil_div(W - off, stride), lo, oq1);
}

// Backward of small images, threaded GEMM (data and weight gradients): whole images per
// GEMM, so that its reduction (images x P*Q) is at least kBackwardReduction long. One image
// of ResNet's 7x7 maps is a reduction of 49, and each such GEMM reads and writes all of
// grad_w (512 x 4608 floats, 9 MiB) for 2*49 flops per element; batched, grad_w is updated
// once per K block of the GEMM. One batch's buffers are bounded by kBackwardBatchBytes and
// the batches balanced (8 images of 196 pixels: 4 + 4, not 6 + 2). 4 MiB: with 16 MiB the
// batches of ResNet-18's 28x28 and 14x14 layers fell out of cache and ran 5-10% slower
// than one image at a time; its 7x7 layers gain 5-15% (2 cores, Zen 4, medians vs torch).
// The data gradient batches the same way: its GEMM w^T @ grad_y packs all of w^T
// (9 MiB for 512x256x3x3) once per batch instead of once per image of 49 pixels.
constexpr index_t kBackwardReduction = 1024;
constexpr index_t kBackwardBatchBytes = index_t(4) << 20;

// Images per backward GEMM, given what one image of the batch occupies (bytes).
inline index_t balanced_images_per_gemm(const ConvParams& p, index_t per_image_bytes) {
  const index_t PQ = p.P * p.Q;
  if (p.N <= 1 || PQ >= kBackwardReduction) return 1;
  const index_t fit = std::max<index_t>(kBackwardBatchBytes / per_image_bytes, 1);
  const index_t m = std::min({(kBackwardReduction + PQ - 1) / PQ, fit, p.N});
  const index_t batches = (p.N + m - 1) / m;
  return (p.N + batches - 1) / batches;
}

// grad_y (N, K, P, Q)'s rows of images [n0, n1), group g, side by side:
// gyb (K/g, (n1-n0)*P*Q), the A (weight gradient) or B (data gradient) of a batched GEMM.
template <class T>
void gather_grad_y(const ConvParams& p, const T* grad_y, index_t g, index_t n0, index_t n1, T* gyb) {
  const index_t Kg = p.K_per_group(), G = p.groups, PQ = p.P * p.Q, cols = (n1 - n0) * PQ;
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t n = n0; n < n1; ++n)
    for (index_t k = 0; k < Kg; ++k)
      std::memcpy(gyb + k * cols + (n - n0) * PQ, grad_y + ((n * G + g) * Kg + k) * PQ, sizeof(T) * PQ);
}

}  // namespace fastconv::cpu::im2col_detail
