// conv2d_im2col.cpp: convolution as unroll + GEMM (Chellapilla et al. 2006; Caffe's
// im2col.cpp). For each image n and group g:
//   col (C/g*R*S, P*Q) = unrolled patches of x[n, g*C/g : (g+1)*C/g]
//   y[n, g*K/g : (g+1)*K/g] (K/g, P*Q) = w_g (K/g, C/g*R*S) @ col + bias
// The columns are unrolled in chunks of at most kChunkBytes, so the workspace stays
// bounded and the chunk stays in cache between the unroll and the GEMM's packing.
// 1x1 unpadded stride-1 convolutions skip the unroll: x itself is the col matrix.
// Small images in a batch share one GEMM: the columns of several whole images sit side
// by side, so the weights are packed once per chunk instead of once per image, and the
// result is scattered back into y.
// Plans: the prepared form of the weights is each group's w_g packed into the GEMM's A
// panels (gemm_pack_a), so repeated calls skip re-packing them (for every chunk and, on
// small images, most of the work besides the products).
// Limits: none (any stride, dilation, padding, groups); the GEMM does the work.
//
// Backward, gy = grad_y (N, K, P, Q):
//   data:   (same unroll, same chunks) col (C/g*R*S, chunk) = w_g^T @ gy[n, g] (K/g, chunk),
//           then col2im adds each column back onto the input pixels it was unrolled from:
//           grad_x (N, C, H, W). col2im runs one input channel per thread (the R*S rows of
//           one channel hit the same plane; different channels never do), so there are no
//           races. Small images go several per GEMM (grad_y's rows side by side).
//   weight: an implicit GEMM: grad_w_g (K/g, R*S*C/g) = sum over images of gy_g @ patches,
//           the patches gathered by the GEMM's packing from a padded channels-last copy
//           of each image (no col is written; see "weight gradient" below), then permuted
//           to (K, C/g, R, S). Race-free and deterministic: either one threaded GEMM at a
//           time (images in a fixed order; small images several per GEMM), or for many
//           small (image, group) pairs, or a gradient of at most 1 MiB, one serial GEMM per
//           pair into per-thread partial sums (static assignment, reduced in thread order),
//           or, with at least as many groups as threads, one group per thread.
//   bias:   grad_b[k] = sum over n, p, q of gy[n, k, p, q] (float64 accumulation); shared
//           by every algorithm's backward (it is a plain reduction).
// Also shared: transpose_rotate_weight, the weight (C, K/g, R, S) of the data gradient taken
// as a forward convolution of grad_y (the Python side runs it with the forward kernels).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "cpu/gemm.h"
#include "cpu/kernels.h"

namespace fastconv::cpu {
namespace {

constexpr index_t kChunkBytes = index_t(2) << 20;  // per thread; about an L2

// ---- helpers -------------------------------------------------------------------

bool is_plain_gemm(const ConvParams& p) {
  return p.is_pointwise() && p.stride_h == 1 && p.stride_w == 1 && p.P == p.H && p.Q == p.W;
}

index_t col_rows(const ConvParams& p) { return p.C_per_group() * p.R * p.S; }

// A window that covers the whole unpadded image (one output pixel: a fully connected
// layer, LeNet-5's 16->120 5x5 on 5x5 maps): the unrolled patch is the image itself.
bool is_whole_image(const ConvParams& p) {
  return p.P == 1 && p.Q == 1 && p.R == p.H && p.S == p.W && p.pad_h == 0 && p.pad_w == 0 &&
         (p.R == 1 || p.dil_h == 1) && (p.S == 1 || p.dil_w == 1);
}

// Columns per chunk: a multiple of 16 (the GEMM's widest register block) when possible.
index_t chunk_capacity(const ConvParams& p, int elem) {
  const index_t cols = kChunkBytes / (col_rows(p) * elem);
  return std::max<index_t>(cols / 16 * 16, 16);
}
index_t chunk_cols(const ConvParams& p, int elem) { return std::min(chunk_capacity(p, elem), p.P * p.Q); }

// Whole images per GEMM in the batched mode (1: one image at a time).
// Only small images: from about 512 output pixels one image's GEMM is wide enough, and the
// batched mode's unroll and scatter copies cost more than re-packing the weights (ResNet-50
// 1x1 at 56x56, batch 8: 0.4-0.6x torch batched, 1.0-1.3x image by image).
constexpr index_t kBatchedMaxPixels = 512;
index_t images_per_gemm(const ConvParams& p, int elem) {
  if (p.P * p.Q >= kBatchedMaxPixels) return 1;
  return std::min(p.N, std::max<index_t>(chunk_capacity(p, elem) / (p.P * p.Q), 1));
}

// Parallelise over (image, group) pairs, one serial GEMM each, when there are enough
// of them and each is small; otherwise one pair at a time with a threaded GEMM.
// Not for images of a few output pixels: their GEMMs would be a few columns wide and each
// re-pack the weights; the batched mode puts the images side by side in one GEMM instead
// (LeNet-5's 16->120 5x5 layer on 5x5 maps, batch 64: 0.60 ms image by image).
constexpr index_t kOuterMinPixels = 64;
bool outer_parallel(const ConvParams& p, int threads) {
  const index_t pairs = p.N * p.groups;
  const double flops_per_pair = p.flops() / double(std::max<index_t>(pairs, 1));
  const bool batched = p.groups == 1 && p.P * p.Q < kOuterMinPixels && p.N > 1;
  return threads > 1 && pairs >= 2 * threads && flops_per_pair < 2e7 && !batched;
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

// o[oq] = xr[oq * stride + off] over [lo, hi); strides 1 and 2 (ResNet's downsampling) as
// constants, so the compiler vectorises them (stride 2's gather as permutes).
template <class T>
inline void strided_copy(T* o, const T* xr, index_t lo, index_t hi, index_t stride, index_t off) {
  if (stride == 1) {
#pragma omp simd
    for (index_t oq = lo; oq < hi; ++oq) o[oq] = xr[oq + off];
  } else if (stride == 2) {
#pragma omp simd
    for (index_t oq = lo; oq < hi; ++oq) o[oq] = xr[2 * oq + off];
  } else {
    for (index_t oq = lo; oq < hi; ++oq) o[oq] = xr[oq * stride + off];
  }
}

// The adjoint: xr[oq * stride + off] += o[oq] over [lo, hi) (distinct targets for stride >= 1).
template <class T>
inline void strided_add(T* xr, const T* o, index_t lo, index_t hi, index_t stride, index_t off) {
  if (stride == 1) {
#pragma omp simd
    for (index_t oq = lo; oq < hi; ++oq) xr[oq + off] += o[oq];
  } else if (stride == 2) {
#pragma omp simd
    for (index_t oq = lo; oq < hi; ++oq) xr[2 * oq + off] += o[oq];
  } else {
    for (index_t oq = lo; oq < hi; ++oq) xr[oq * stride + off] += o[oq];
  }
}

// Calls f(op, oq0, oq1, offset) for each output row's piece [oq0, oq1) of the columns
// [j0, j1) (column j = op*Q + oq; offset = the piece's first column - j0), in order. One
// division per call: per piece, two 64-bit divisions cost more than copying its ~28 values
// (ResNet-50's 3x3 stride-2 unroll, 1152 rows x 28 pieces, was a quarter of the layer).
template <class F>
inline void for_each_row_piece(const ConvParams& p, index_t j0, index_t j1, F&& f) {
  index_t op = j0 / p.Q, oq0 = j0 % p.Q;
  for (index_t j = j0; j < j1; ++op, oq0 = 0) {
    const index_t oq1 = std::min(p.Q, oq0 + (j1 - j));
    f(op, oq0, oq1, j - j0);
    j += oq1 - oq0;
  }
}

// Unroll columns [j0, j1) of image x_g (C/g, H, W) into col (rows, ld): row i of the
// result starts at col + i*ld.
template <class T>
void unroll(const ConvParams& p, const T* x_g, index_t j0, index_t j1, T* col, index_t ld, bool parallel) {
  const index_t rows = col_rows(p);
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t row = 0; row < rows; ++row) {
    const index_t c = row / (p.R * p.S), r = (row / p.S) % p.R, s = row % p.S;
    const T* xc = x_g + c * p.H * p.W;
    const index_t iw_off = s * p.dil_w - p.pad_w;
    index_t lo_row, hi_row;  // the output columns of a whole row whose input column is inside
    valid_columns(0, p.Q, iw_off, p.stride_w, p.W, lo_row, hi_row);
    T* const out = col + row * ld;
    for_each_row_piece(p, j0, j1, [&](index_t op, index_t oq0, index_t oq1, index_t at) {
      T* o = out + at - oq0;  // o[oq] is column (op, oq)
      const index_t ih = op * p.stride_h - p.pad_h + r * p.dil_h;
      if (ih < 0 || ih >= p.H) {
        std::fill(o + oq0, o + oq1, T(0));
        return;
      }
      const index_t lo = std::clamp(lo_row, oq0, oq1), hi = std::clamp(hi_row, lo, oq1);
      std::fill(o + oq0, o + lo, T(0));
      strided_copy(o, xc + ih * p.W, lo, hi, p.stride_w, iw_off);
      std::fill(o + hi, o + oq1, T(0));
    });
  }
}

// Images [n0, n1) of group g unrolled side by side into col (rows, (n1-n0)*P*Q): the
// batched mode's small images. One parallel region over (image, channel) and no division
// per row: with a few output pixels per row the bookkeeping is the cost (LeNet-5's 16->120
// layer at batch 64, one pixel per row: 0.2 ms as unroll() per image, most of it forking
// and index arithmetic).
template <class T>
void unroll_images(const ConvParams& p, const T* x, index_t g, index_t n0, index_t n1, T* col) {
  const index_t Cg = p.C_per_group(), PQ = p.P * p.Q, cols = (n1 - n0) * PQ;
  // Per kernel column s: the output columns [lo, hi) whose input column is inside the row.
  std::vector<index_t> lo(static_cast<size_t>(p.S)), hi(static_cast<size_t>(p.S));
  for (index_t s = 0; s < p.S; ++s)
    valid_columns(0, p.Q, s * p.dil_w - p.pad_w, p.stride_w, p.W, lo[size_t(s)], hi[size_t(s)]);
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t n = n0; n < n1; ++n)
    for (index_t c = 0; c < Cg; ++c) {
      const T* xc = x + ((n * p.groups + g) * Cg + c) * p.H * p.W;
      for (index_t r = 0; r < p.R; ++r)
        for (index_t s = 0; s < p.S; ++s) {
          T* out = col + ((c * p.R + r) * p.S + s) * cols + (n - n0) * PQ;
          const index_t iw_off = s * p.dil_w - p.pad_w, l = lo[size_t(s)], h = hi[size_t(s)];
          for (index_t op = 0; op < p.P; ++op, out += p.Q) {
            const index_t ih = op * p.stride_h - p.pad_h + r * p.dil_h;
            if (ih < 0 || ih >= p.H) {
              std::fill(out, out + p.Q, T(0));
              continue;
            }
            std::fill(out, out + l, T(0));
            strided_copy(out, xc + ih * p.W, l, h, p.stride_w, iw_off);
            std::fill(out + h, out + p.Q, T(0));
          }
        }
    }
}

// Elements of one group's packed weights (64-byte multiple).
template <class T>
index_t packed_group_elems(const ConvParams& p) {
  return (gemm_pack_a_elems<T>(p.K_per_group(), col_rows(p)) + 15) / 16 * 16;
}

// Group g's weights as the GEMM's A: packed (a plan's, streamed from memory) or plain.
template <class T>
GemmOperand<T> weights_of(const ConvParams& p, const T* w, const T* packed, index_t g) {
  if (packed)
    return GemmOperand<T>::prepacked(packed + g * packed_group_elems<T>(p), p.K_per_group(), 0, true);
  return GemmOperand<T>::plain(w + g * p.K_per_group() * col_rows(p), col_rows(p));
}

// y_g (K/g, P*Q) = w_g @ unroll(x_g) + bias_g, chunk by chunk.
template <class T>
void conv_one(const ConvParams& p, const T* x_g, const GemmOperand<T>& w_g, const T* bias_g, T* y_g,
              T* col, bool threaded) {
  const index_t Kg = p.K_per_group(), rows = col_rows(p), PQ = p.P * p.Q;
  if (is_plain_gemm(p)) {
    gemm_ex<T>(Kg, PQ, rows, T(1), w_g, GemmOperand<T>::plain(x_g, PQ), T(0), y_g, PQ, bias_g);
    return;
  }
  const index_t step = chunk_cols(p, sizeof(T));
  for (index_t j0 = 0; j0 < PQ; j0 += step) {
    const index_t j1 = std::min(PQ, j0 + step);
    unroll(p, x_g, j0, j1, col, j1 - j0, threaded);
    gemm_ex<T>(Kg, j1 - j0, rows, T(1), w_g, GemmOperand<T>::plain(col, j1 - j0), T(0), y_g + j0, PQ,
               bias_g);
  }
}

// Images [n0, n1) of group g in one GEMM: col (rows, m*PQ) holds their unrolled patches
// side by side, out (K/g, m*PQ) the products, scattered into y afterwards.
template <class T>
void conv_images(const ConvParams& p, const T* x, const GemmOperand<T>& w_g, const T* bias, T* y,
                 index_t g, index_t n0, index_t n1, T* col, T* out) {
  const index_t Kg = p.K_per_group(), rows = col_rows(p), PQ = p.P * p.Q;
  const index_t cols = (n1 - n0) * PQ;
  GemmOperand<T> patches = GemmOperand<T>::plain(col, cols);
  if (is_whole_image(p))  // image n's one patch is x[n, group g] itself: read x as B^T
    patches = GemmOperand<T>::plain(x + (n0 * p.groups + g) * rows, p.C * p.H * p.W, true);
  else
    unroll_images(p, x, g, n0, n1, col);
  gemm_ex<T>(Kg, cols, rows, T(1), w_g, patches, T(0), out, cols, bias ? bias + g * Kg : nullptr);
#pragma omp parallel for schedule(static)
  for (index_t n = n0; n < n1; ++n)
    for (index_t k = 0; k < Kg; ++k) {
      T* dst = y + ((n * p.groups + g) * Kg + k) * PQ;
      const T* src = out + k * cols + (n - n0) * PQ;
      if (PQ == 1)
        *dst = *src;
      else
        std::memcpy(dst, src, sizeof(T) * PQ);
    }
}

// ---- backward helpers ------------------------------------------------------------

// The adjoint of unroll: adds columns [j0, j1) of col (rows, ld) onto the image
// gx_g (C/g, H, W) they were unrolled from. Parallel over input channels (the R*S rows
// of one channel write one plane; two channels never share a plane).
template <class T>
void col2im(const ConvParams& p, const T* col, index_t j0, index_t j1, index_t ld, T* gx_g, bool parallel) {
  const index_t Cg = p.C_per_group();
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t c = 0; c < Cg; ++c) {
    T* xc = gx_g + c * p.H * p.W;
    for (index_t r = 0; r < p.R; ++r)
      for (index_t s = 0; s < p.S; ++s) {
        const T* in = col + ((c * p.R + r) * p.S + s) * ld;
        const index_t iw_off = s * p.dil_w - p.pad_w;
        index_t lo_row, hi_row;
        valid_columns(0, p.Q, iw_off, p.stride_w, p.W, lo_row, hi_row);
        for_each_row_piece(p, j0, j1, [&](index_t op, index_t oq0, index_t oq1, index_t at) {
          const index_t ih = op * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) return;
          const index_t lo = std::clamp(lo_row, oq0, oq1), hi = std::clamp(hi_row, lo, oq1);
          strided_add(xc + ih * p.W, in + at - oq0, lo, hi, p.stride_w, iw_off);  // in[at - oq0 + oq]: (op, oq)
        });
      }
  }
}

// grad_x_g (C/g, H, W) = col2im(w_g^T @ gy_g), chunk by chunk; gy_g is (K/g, P*Q).
template <class T>
void backward_data_one(const ConvParams& p, const T* gy_g, const T* w_g, T* gx_g, T* col, bool threaded) {
  const index_t Kg = p.K_per_group(), rows = col_rows(p), PQ = p.P * p.Q;
  if (is_plain_gemm(p)) {  // 1x1, stride 1, no padding: col is grad_x itself
    gemm<T>(true, false, rows, PQ, Kg, T(1), w_g, rows, gy_g, PQ, T(0), gx_g, PQ);
    return;
  }
  std::fill(gx_g, gx_g + p.C_per_group() * p.H * p.W, T(0));
  const index_t step = chunk_cols(p, sizeof(T));
  for (index_t j0 = 0; j0 < PQ; j0 += step) {
    const index_t j1 = std::min(PQ, j0 + step);
    gemm<T>(true, false, rows, j1 - j0, Kg, T(1), w_g, rows, gy_g + j0, PQ, T(0), col, j1 - j0);
    col2im(p, col, j0, j1, j1 - j0, gx_g, threaded);
  }
}

// How the weight gradient is parallelised (see the opening comment).
enum class WeightPlan { threaded_gemm, per_group, per_thread_partials };

// Per-thread partial sums also for images of many pixels when the gradient is small: each
// thread's GEMMs then keep its own padded image and partial sums in its own L2, and there
// are no team barriers. ResNet-18's batch-8 weight gradients on Zen 4, 2 threads (medians):
// the 7x7 stem 17.0 -> 15.3 ms, 64->64 3x3 on 56x56 12-16 -> 11.0 ms (torch 11.0); gradients
// of 1.2-4.7 MiB were equal or slower (256->512 3x3 stride 2: 0.85-0.93x of the team GEMM).
constexpr index_t kPartialMaxBytes = index_t(1) << 20;
constexpr index_t kPartialMinPixels = 256;  // a shorter reduction re-reads the partial too often

WeightPlan weight_plan(const ConvParams& p, int threads, int elem) {
  const index_t pairs = p.N * p.groups;
  if (threads > 1 && p.groups == 1 && pairs >= threads && (pairs % threads == 0 || pairs >= 4 * threads) &&
      p.K * col_rows(p) * elem <= kPartialMaxBytes && p.P * p.Q >= kPartialMinPixels)
    return WeightPlan::per_thread_partials;
  if (!outer_parallel(p, threads)) return WeightPlan::threaded_gemm;
  return p.groups >= threads ? WeightPlan::per_group : WeightPlan::per_thread_partials;
}

index_t col_bytes(const ConvParams& p, int elem) {
  return is_plain_gemm(p) ? 0 : col_rows(p) * chunk_cols(p, elem) * elem;
}

// Backward of small images, threaded GEMM: whole images per GEMM, so that its
// reduction (images x P*Q) is at least kBackwardReduction long. One image of ResNet's 7x7
// maps is a reduction of 49, and each such GEMM reads and writes all of grad_w
// (512 x 4608 floats, 9 MiB) for 2*49 flops per element; batched, grad_w is updated
// once per K block of the GEMM. The unrolled images are bounded by kBackwardBatchBytes and
// the batches balanced (8 images of 196 pixels: 4 + 4, not 6 + 2). 4 MiB: with 16 MiB the
// batches of ResNet-18's 28x28 and 14x14 layers fell out of cache and ran 5-10% slower
// than one image at a time; its 7x7 layers gain 5-15% (2 cores, Zen 4, medians vs torch).
// The data gradient batches the same way: its GEMM w^T @ grad_y packs all of w^T
// (9 MiB for 512x256x3x3) once per batch instead of once per image of 49 pixels.
constexpr index_t kBackwardReduction = 1024;
constexpr index_t kBackwardBatchBytes = index_t(4) << 20;

// Images per backward GEMM, given what one image of the batch occupies (bytes).
index_t balanced_images_per_gemm(const ConvParams& p, index_t per_image_bytes) {
  const index_t PQ = p.P * p.Q;
  if (p.N <= 1 || PQ >= kBackwardReduction) return 1;
  const index_t fit = std::max<index_t>(kBackwardBatchBytes / per_image_bytes, 1);
  const index_t m = std::min({(kBackwardReduction + PQ - 1) / PQ, fit, p.N});
  const index_t batches = (p.N + m - 1) / m;
  return (p.N + batches - 1) / batches;
}

// The data gradient's batches: their unrolled columns.
index_t backward_images_per_gemm(const ConvParams& p, int elem) {
  return balanced_images_per_gemm(p, col_rows(p) * p.P * p.Q * elem);
}

// Elements of the batched mode's workspace: col (rows, m*PQ) and grad_y's rows of the m
// images side by side (K/g, m*PQ).
index_t backward_batch_elems(const ConvParams& p, index_t m) {
  return (col_rows(p) + p.K_per_group()) * m * p.P * p.Q;
}

// grad_y's rows of images [n0, n1), group g, side by side: gyb (K/g, (n1-n0)*P*Q).
template <class T>
void gather_grad_y(const ConvParams& p, const T* grad_y, index_t g, index_t n0, index_t n1, T* gyb) {
  const index_t Kg = p.K_per_group(), G = p.groups, PQ = p.P * p.Q, cols = (n1 - n0) * PQ;
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t n = n0; n < n1; ++n)
    for (index_t k = 0; k < Kg; ++k)
      std::memcpy(gyb + k * cols + (n - n0) * PQ, grad_y + ((n * G + g) * Kg + k) * PQ, sizeof(T) * PQ);
}

// grad_x of images [n0, n1), group g: col (rows, m*PQ) = w_g^T @ gyb as one GEMM, then
// col2im of each image's columns.
template <class T>
void backward_data_images(const ConvParams& p, const T* grad_y, const T* w_g, T* grad_x, index_t g,
                          index_t n0, index_t n1, T* col, T* gyb) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), G = p.groups, rows = col_rows(p), PQ = p.P * p.Q;
  const index_t cols = (n1 - n0) * PQ;
  gather_grad_y(p, grad_y, g, n0, n1, gyb);
  gemm<T>(true, false, rows, cols, Kg, T(1), w_g, rows, gyb, cols, T(0), col, cols);
  for (index_t n = n0; n < n1; ++n) {
    T* gx_g = grad_x + (n * G + g) * Cg * p.H * p.W;
    std::fill(gx_g, gx_g + Cg * p.H * p.W, T(0));
    col2im(p, col + (n - n0) * PQ, 0, PQ, cols, gx_g, true);
  }
}

// ---- weight gradient: an implicit GEMM over padded channels-last images ----------------
//
// grad_w_g in (k, r, s, c) order, (K/g, R*S*C/g), = sum over the images' pixels of
// gy_g (K/g, pixels) @ patches (pixels, R*S*C/g), where a pixel's patch is read by the
// GEMM straight from a padded channels-last copy xpad (Hp, Wp, C/g) of the image: for
// output pixel (op, oq) and kernel row r, the S*C/g values (s, c) lie contiguous at
// ((op*stride_h + r*dil_h) * Wp + oq*stride_w) * C/g (with dil_w > 1, C/g at a time). So
// the GEMM's B is gathered (GemmOperand::gathered): its packing copies runs of whole rows
// instead of transposing an unrolled col matrix, and no col is written at all. ResNet-18's
// 64->64 3x3 layer on 56x56 spent 19% of its time in that transposing pack and 15% in the
// unroll (Zen 4, 2 threads). The (k, r, s, c) result is permuted to (K, C/g, R, S) at the end.

// The padded image samples the input every `step` rows (columns): 1, or the stride for a
// kernel one row (column) tall, whose other rows the windows never read (ResNet's 1x1
// stride-2 shortcuts: a quarter of the image).
index_t row_step(const ConvParams& p) { return p.R == 1 ? p.stride_h : 1; }
index_t col_step(const ConvParams& p) { return p.S == 1 ? p.stride_w : 1; }
index_t padded_rows(const ConvParams& p) {
  if (p.R == 1) return p.P;
  return std::max(p.H + p.pad_h, (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1);
}
index_t padded_cols(const ConvParams& p) {
  if (p.S == 1) return p.Q;
  return std::max(p.W + p.pad_w, (p.Q - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1);
}
index_t padded_elems(const ConvParams& p) {  // of one image's group, a 64-byte multiple for float
  return (padded_rows(p) * padded_cols(p) * p.C_per_group() + 15) / 16 * 16;
}

// The gathered B's segments: one per kernel row (S*C/g values), or per tap with dil_w > 1.
index_t weight_segment(const ConvParams& p) { return p.dil_w == 1 ? p.S * p.C_per_group() : p.C_per_group(); }
std::vector<index_t> weight_segment_offsets(const ConvParams& p) {
  const index_t Cg = p.C_per_group(), Wp = padded_cols(p);
  std::vector<index_t> offs;
  for (index_t r = 0; r < p.R; ++r)
    for (index_t s = 0; s < (p.dil_w == 1 ? 1 : p.S); ++s) offs.push_back((r * p.dil_h * Wp + s * p.dil_w) * Cg);
  return offs;
}

// out[w*ld_out + c] = in[c*ld_in + w*step] for c < rows, w < cols: a small transpose. Float
// with step 1 goes 4 x 4 through SSE registers (x86-64's baseline, which this file is built
// for): ResNet-18's 64->64 3x3 weight gradient on 56x56 at batch 8, 12.3 -> 11.3 ms (Zen 4).
template <class T>
inline void transpose_strip(const T* in, index_t ld_in, index_t step, index_t rows, index_t cols, T* out,
                            index_t ld_out) {
  index_t c0 = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    if (step == 1)
      for (; c0 + 4 <= rows; c0 += 4) {
        const float* i0 = in + c0 * ld_in;
        index_t w = 0;
        for (; w + 4 <= cols; w += 4) {
          __m128 r0 = _mm_loadu_ps(i0 + w), r1 = _mm_loadu_ps(i0 + ld_in + w);
          __m128 r2 = _mm_loadu_ps(i0 + 2 * ld_in + w), r3 = _mm_loadu_ps(i0 + 3 * ld_in + w);
          _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
          _mm_storeu_ps(out + w * ld_out + c0, r0);
          _mm_storeu_ps(out + (w + 1) * ld_out + c0, r1);
          _mm_storeu_ps(out + (w + 2) * ld_out + c0, r2);
          _mm_storeu_ps(out + (w + 3) * ld_out + c0, r3);
        }
        for (; w < cols; ++w)
          for (index_t c = c0; c < c0 + 4; ++c) out[w * ld_out + c] = in[c * ld_in + w];
      }
  }
#endif
  for (index_t c = c0; c < rows; ++c)
    for (index_t w = 0; w < cols; ++w) out[w * ld_out + c] = in[c * ld_in + w * step];
}

// x_g (C/g, H, W), channel planes H*W apart -> xpad (Hp, Wp, C/g): xpad[hp, wp, c] =
// x_g[c, hp*row_step - pad_h, wp*col_step - pad_w], zero outside the image. Strips of 32
// columns, so the strided side stays within a few cache lines.
template <class T>
void pad_channels_last(const ConvParams& p, const T* x_g, T* xpad, bool parallel) {
  const index_t Cg = p.C_per_group(), Hp = padded_rows(p), Wp = padded_cols(p), HW = p.H * p.W;
  const index_t sh = row_step(p), sw = col_step(p);
  index_t lo, hi;  // the padded columns inside the image
  valid_columns(0, Wp, -p.pad_w, sw, p.W, lo, hi);
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t hp = 0; hp < Hp; ++hp) {
    T* row = xpad + hp * Wp * Cg;
    const index_t ih = hp * sh - p.pad_h;
    if (ih < 0 || ih >= p.H) {
      std::fill(row, row + Wp * Cg, T(0));
      continue;
    }
    std::fill(row, row + lo * Cg, T(0));
    std::fill(row + hi * Cg, row + Wp * Cg, T(0));
    const T* in = x_g + ih * p.W - p.pad_w;  // in[c*HW + wp*sw]: column wp
    for (index_t w0 = lo; w0 < hi; w0 += 32)
      transpose_strip(in + w0 * sw, HW, sw, Cg, std::min<index_t>(32, hi - w0), row + w0 * Cg, Cg);
  }
}

// The row offsets of images [0, m) padded back to back: pixel (i, op, oq) at
// koffs[i*P*Q + op*Q + oq].
inline void weight_pixel_offsets(const ConvParams& p, index_t m, index_t* koffs) {
  const index_t Cg = p.C_per_group(), Wp = padded_cols(p), pad = padded_elems(p);
  const index_t dh = p.stride_h / row_step(p), dw = p.stride_w / col_step(p);
  for (index_t i = 0; i < m; ++i)
    for (index_t op = 0; op < p.P; ++op)
      for (index_t oq = 0; oq < p.Q; ++oq) *koffs++ = i * pad + (op * dh * Wp + oq * dw) * Cg;
}

// Images per weight-gradient GEMM: whole images, so that its reduction (images x P*Q) is at
// least kBackwardReduction long (see above), the padded images and grad_y's rows within
// kBackwardBatchBytes, and the batches balanced. One for a 1x1 stride-1 unpadded kernel, whose
// GEMM then reads x itself (ResNet-50's 1024->256 1x1 on 14x14, batch 8: 4.9 ms image by
// image, 7.2 ms four images per GEMM through the channels-last copy; 2048->512 on 7x7: 4.3, 4.7).
index_t weight_images_per_gemm(const ConvParams& p, int elem) {
  if (is_plain_gemm(p)) return 1;
  return balanced_images_per_gemm(p, (padded_elems(p) + p.K_per_group() * p.P * p.Q) * elem);
}

// One GEMM's scratch for m images: xpad (m padded images), koffs (m*P*Q row offsets), gyb
// (grad_y's rows side by side, K/g x m*P*Q; only for m > 1). Elements of T, 64-byte multiples.
// None for one image of a 1x1 stride-1 unpadded kernel: its GEMM reads x itself as the
// transposed B (the channels-last copy cost more than it saved there: 256->64 1x1 on 56x56,
// batch 8, 15.3 against 8.5 ms on Zen 4; 64->256 7.2 against 5.8).
struct WeightScratch {
  index_t xpad, koffs, gyb;
  index_t total() const { return xpad + koffs + gyb; }
};
WeightScratch weight_scratch(const ConvParams& p, index_t m, int elem) {
  const index_t rows = m * p.P * p.Q, per_line = 64 / elem;
  auto lines = [&](index_t bytes) { return (bytes + 63) / 64 * per_line; };
  if (m == 1 && is_plain_gemm(p)) return {0, 0, 0};
  return {m * padded_elems(p), lines(rows * index_t(sizeof(index_t))),
          m > 1 ? lines(p.K_per_group() * rows * elem) : 0};
}

// acc_g (K/g, R*S*C/g) (+)= gy @ patches over images [n0, n1) of group g as one GEMM
// (beta = 0 when `first`); ws holds weight_scratch(p, n1 - n0) elements.
template <class T>
void weight_images(const ConvParams& p, const T* grad_y, const T* x, index_t g, index_t n0, index_t n1,
                   const std::vector<index_t>& segment_offsets, T* ws, T* acc_g, bool first, bool threaded) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), G = p.groups, PQ = p.P * p.Q;
  const index_t m = n1 - n0, cols = m * PQ;
  const WeightScratch sizes = weight_scratch(p, m, sizeof(T));
  T* xpad = ws;
  index_t* koffs = reinterpret_cast<index_t*>(ws + sizes.xpad);
  T* gyb = ws + sizes.xpad + sizes.koffs;
  if (m == 1 && is_plain_gemm(p)) {  // x_g (C/g, P*Q) is the patches' transpose itself
    gemm<T>(false, true, Kg, Cg, PQ, T(1), grad_y + (n0 * G + g) * Kg * PQ, PQ, x + (n0 * G + g) * Cg * PQ, PQ,
            first ? T(0) : T(1), acc_g, Cg);
    return;
  }
  for (index_t n = n0; n < n1; ++n)
    pad_channels_last(p, x + (n * G + g) * Cg * p.H * p.W, xpad + (n - n0) * padded_elems(p), threaded);
  weight_pixel_offsets(p, m, koffs);
  GemmOperand<T> a = GemmOperand<T>::plain(grad_y + (n0 * G + g) * Kg * PQ, PQ);
  if (m > 1) {
    gather_grad_y(p, grad_y, g, n0, n1, gyb);
    a = GemmOperand<T>::plain(gyb, cols);
  }
  gemm_ex<T>(Kg, col_rows(p), cols, T(1), a,
             GemmOperand<T>::gathered(xpad, koffs, segment_offsets.data(), weight_segment(p)),
             first ? T(0) : T(1), acc_g, col_rows(p));
}

// grad_w (K, C/g, R, S) from acc (K, R*S, C/g).
template <class T>
void weight_from_channels_last(const ConvParams& p, const T* acc, T* grad_w) {
  const index_t Cg = p.C_per_group(), RS = p.R * p.S;
#pragma omp parallel for schedule(static) if (p.K * Cg * RS > 32768)
  for (index_t k = 0; k < p.K; ++k)
    for (index_t rs = 0; rs < RS; ++rs)
      for (index_t c = 0; c < Cg; ++c) grad_w[(k * Cg + c) * RS + rs] = acc[(k * RS + rs) * Cg + c];
}

}  // namespace

index_t conv2d_im2col_workspace_bytes(const ConvParams& p, DType dtype) {
  const int elem = dtype_size(dtype), threads = omp_get_max_threads();
  if (outer_parallel(p, threads))
    return is_plain_gemm(p) ? 0 : col_rows(p) * chunk_cols(p, elem) * elem * threads;
  const index_t m = images_per_gemm(p, elem);
  if (m > 1) return (col_rows(p) + p.K_per_group()) * m * p.P * p.Q * elem;
  return is_plain_gemm(p) ? 0 : col_rows(p) * chunk_cols(p, elem) * elem;
}

template <class T>
index_t conv2d_im2col_prepared_elems(const ConvParams& p) {
  return p.groups * packed_group_elems<T>(p);
}

template <class T>
void conv2d_im2col_prepare(const ConvParams& p, const T* w, T* prepared) {
  const index_t rows = col_rows(p), Kg = p.K_per_group();
#pragma omp parallel for schedule(static) if (p.groups > 1)
  for (index_t g = 0; g < p.groups; ++g)
    gemm_pack_a<T>(false, Kg, rows, w + g * Kg * rows, rows, prepared + g * packed_group_elems<T>(p));
}

template <class T>
void conv2d_im2col(const ConvParams& p, const T* x, const T* w, const T* prepared, const T* bias,
                   T* y, void* workspace) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), G = p.groups;
  const index_t x_group = Cg * p.H * p.W, y_group = Kg * p.P * p.Q;
  const int threads = omp_get_max_threads();
  T* ws = static_cast<T*>(workspace);
  auto pair = [&](index_t i, T* col, bool threaded) {
    const index_t n = i / G, g = i % G;
    conv_one<T>(p, x + (n * G + g) * x_group, weights_of(p, w, prepared, g),
                bias ? bias + g * Kg : nullptr, y + (n * G + g) * y_group, col, threaded);
  };
  if (outer_parallel(p, threads)) {
    const index_t per_thread = is_plain_gemm(p) ? 0 : col_rows(p) * chunk_cols(p, sizeof(T));
#pragma omp parallel
    {
      T* col = ws ? ws + omp_get_thread_num() * per_thread : nullptr;
#pragma omp for schedule(dynamic)
      for (index_t i = 0; i < p.N * G; ++i) pair(i, col, false);
    }
    return;
  }
  const index_t m = images_per_gemm(p, sizeof(T));
  if (m > 1) {
    T* out = ws + col_rows(p) * m * p.P * p.Q;
    for (index_t g = 0; g < G; ++g)
      for (index_t n0 = 0; n0 < p.N; n0 += m)
        conv_images<T>(p, x, weights_of(p, w, prepared, g), bias, y, g, n0, std::min(p.N, n0 + m), ws, out);
    return;
  }
  for (index_t i = 0; i < p.N * G; ++i) pair(i, ws, true);
}

#define FC_IM2COL_INSTANCES(T)                                                                 \
  template index_t conv2d_im2col_prepared_elems<T>(const ConvParams&);                          \
  template void conv2d_im2col_prepare<T>(const ConvParams&, const T*, T*);                      \
  template void conv2d_im2col<T>(const ConvParams&, const T*, const T*, const T*, const T*, T*, \
                                 void*);
FC_IM2COL_INSTANCES(float)
FC_IM2COL_INSTANCES(double)
#undef FC_IM2COL_INSTANCES

// ---- backward -----------------------------------------------------------------------

index_t conv2d_im2col_backward_data_workspace_bytes(const ConvParams& p, DType dtype) {
  const int elem = dtype_size(dtype), threads = omp_get_max_threads();
  if (outer_parallel(p, threads)) return col_bytes(p, elem) * threads;
  const index_t m = backward_images_per_gemm(p, elem);
  return m > 1 ? backward_batch_elems(p, m) * elem : col_bytes(p, elem);
}

template <class T>
void conv2d_im2col_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x, void* workspace) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), G = p.groups;
  const index_t x_group = Cg * p.H * p.W, y_group = Kg * p.P * p.Q, w_group = Kg * col_rows(p);
  const int threads = omp_get_max_threads();
  T* ws = static_cast<T*>(workspace);
  auto pair = [&](index_t i, T* col, bool threaded) {
    const index_t n = i / G, g = i % G;
    backward_data_one<T>(p, grad_y + (n * G + g) * y_group, w + g * w_group, grad_x + (n * G + g) * x_group,
                         col, threaded);
  };
  if (outer_parallel(p, threads)) {
    const index_t per_thread = col_bytes(p, sizeof(T)) / index_t(sizeof(T));
#pragma omp parallel
    {
      T* col = ws ? ws + omp_get_thread_num() * per_thread : nullptr;
#pragma omp for schedule(dynamic)
      for (index_t i = 0; i < p.N * G; ++i) pair(i, col, false);
    }
    return;
  }
  const index_t m = backward_images_per_gemm(p, sizeof(T));
  if (m > 1) {
    T* gyb = ws + col_rows(p) * m * p.P * p.Q;
    for (index_t g = 0; g < G; ++g)
      for (index_t n0 = 0; n0 < p.N; n0 += m)
        backward_data_images<T>(p, grad_y, w + g * w_group, grad_x, g, n0, std::min(p.N, n0 + m), ws, gyb);
    return;
  }
  for (index_t i = 0; i < p.N * G; ++i) pair(i, ws, true);
}

// The weight gradient's workspace: the (K, R*S, C/g) sums when R*S > 1 (else grad_w holds
// them directly), then the scratch of one GEMM (threaded) or of each thread, and the
// threads' partial sums (per_thread_partials).
index_t weight_acc_elems(const ConvParams& p, int elem) {
  const index_t per_line = 64 / elem;
  return p.R * p.S > 1 ? (p.K * col_rows(p) + per_line - 1) / per_line * per_line : 0;
}

index_t conv2d_im2col_backward_weight_workspace_bytes(const ConvParams& p, DType dtype) {
  const int elem = dtype_size(dtype), threads = omp_get_max_threads();
  const index_t acc = weight_acc_elems(p, elem);
  switch (weight_plan(p, threads, elem)) {
    case WeightPlan::threaded_gemm:
      return (acc + weight_scratch(p, weight_images_per_gemm(p, elem), elem).total()) * elem;
    case WeightPlan::per_group: return (acc + weight_scratch(p, 1, elem).total() * threads) * elem;
    case WeightPlan::per_thread_partials:
      return (acc + (weight_scratch(p, 1, elem).total() + p.K * col_rows(p)) * threads) * elem;
  }
  return 0;
}

template <class T>
void conv2d_im2col_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w, void* workspace) {
  const index_t G = p.groups, N = p.N, w_group = p.K_per_group() * col_rows(p);
  const int threads = omp_get_max_threads();
  if (N == 0) {  // nothing to sum: the gradient is zero
    std::fill(grad_w, grad_w + p.K * col_rows(p), T(0));
    return;
  }
  T* ws = static_cast<T*>(workspace);
  FC_CHECK(reinterpret_cast<std::uintptr_t>(ws) % alignof(index_t) == 0, "im2col: misaligned workspace");
  T* acc = p.R * p.S > 1 ? ws : grad_w;  // (K, R*S, C/g)
  ws += weight_acc_elems(p, sizeof(T));
  const std::vector<index_t> segments = weight_segment_offsets(p);
  switch (weight_plan(p, threads, sizeof(T))) {
    case WeightPlan::threaded_gemm: {
      const index_t m = weight_images_per_gemm(p, sizeof(T));
      for (index_t g = 0; g < G; ++g)
        for (index_t n0 = 0; n0 < N; n0 += m)
          weight_images<T>(p, grad_y, x, g, n0, std::min(N, n0 + m), segments, ws, acc + g * w_group, n0 == 0,
                           true);
      break;
    }
    case WeightPlan::per_group: {  // each group's gradient is one thread's, summed in image order
      const index_t scratch = weight_scratch(p, 1, sizeof(T)).total();
#pragma omp parallel
      {
        T* mine = ws + omp_get_thread_num() * scratch;
#pragma omp for schedule(dynamic)
        for (index_t g = 0; g < G; ++g)
          for (index_t n = 0; n < N; ++n)
            weight_images<T>(p, grad_y, x, g, n, n + 1, segments, mine, acc + g * w_group, n == 0, false);
      }
      break;
    }
    case WeightPlan::per_thread_partials: {
      // Thread t sums the (image, group) pairs of a fixed contiguous range into its own
      // partial; the partials are then added in thread order, element-parallel.
      const index_t scratch = weight_scratch(p, 1, sizeof(T)).total(), partial = p.K * col_rows(p);
      const index_t pairs = N * G;
      T* partials = ws + threads * scratch;
      int team = 1;
#pragma omp parallel
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        team = nt;
        T* mine = partials + t * partial;
        std::fill(mine, mine + partial, T(0));
        const index_t i0 = pairs * t / nt, i1 = pairs * (t + 1) / nt;
        for (index_t i = i0; i < i1; ++i)
          weight_images<T>(p, grad_y, x, i % G, i / G, i / G + 1, segments, ws + t * scratch,
                           mine + (i % G) * w_group, false, false);
      }
#pragma omp parallel for schedule(static)
      for (index_t e = 0; e < partial; ++e) {
        T sum = partials[e];
        for (int t = 1; t < team; ++t) sum += partials[t * partial + e];
        acc[e] = sum;
      }
      break;
    }
  }
  if (acc != grad_w) weight_from_channels_last(p, acc, grad_w);
}

template <class T>
void conv2d_backward_bias(const ConvParams& p, const T* grad_y, T* grad_bias) {
  const index_t PQ = p.P * p.Q;
#pragma omp parallel for schedule(static) if (p.N * p.K * PQ > 32768)
  for (index_t k = 0; k < p.K; ++k) {
    double sum = 0.0;
    for (index_t n = 0; n < p.N; ++n) {
      const T* g = grad_y + (n * p.K + k) * PQ;
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (index_t j = 0; j < PQ; ++j) s += double(g[j]);
      sum += s;
    }
    grad_bias[k] = T(sum);
  }
}

// Blocks of kTile output channels x kTile input channels: each block reads kTile runs of
// kTile*R*S values and writes kTile runs of kTile*R*S, all within L1. 3x3 and 1x1 kernels
// get a fixed-size run (a runtime-length reversed copy of 9 took ~2.5 cycles a value).
template <index_t RS, class T>
void transpose_rotate_block(index_t RSr, const T* w, T* wt, index_t Kg, index_t Cg, index_t g,
                            index_t c0, index_t c1, index_t k0, index_t k1) {
  const index_t n = RS > 0 ? RS : RSr;  // RS > 0: a compile-time size, so the run unrolls
  for (index_t c = c0; c < c1; ++c) {
    T* dst = wt + (g * Cg + c) * Kg * n;
    for (index_t k = k0; k < k1; ++k) {
      const T* src = w + ((g * Kg + k) * Cg + c) * n;
      for (index_t e = 0; e < n; ++e) dst[k * n + e] = src[n - 1 - e];
    }
  }
}

template <class T>
void transpose_rotate_weight(index_t K, index_t Cg, index_t groups, index_t RS, const T* w, T* wt) {
  constexpr index_t kTile = 16;
  const index_t Kg = K / groups, kb = (Kg + kTile - 1) / kTile, cb = (Cg + kTile - 1) / kTile;
#pragma omp parallel for collapse(3) schedule(static) if (K * Cg * RS > (index_t(1) << 16))
  for (index_t g = 0; g < groups; ++g)
    for (index_t ci = 0; ci < cb; ++ci)
      for (index_t ki = 0; ki < kb; ++ki) {
        const index_t c0 = ci * kTile, c1 = std::min(Cg, c0 + kTile);
        const index_t k0 = ki * kTile, k1 = std::min(Kg, k0 + kTile);
        if (RS == 9)
          transpose_rotate_block<9>(RS, w, wt, Kg, Cg, g, c0, c1, k0, k1);
        else if (RS == 1)
          transpose_rotate_block<1>(RS, w, wt, Kg, Cg, g, c0, c1, k0, k1);
        else
          transpose_rotate_block<0>(RS, w, wt, Kg, Cg, g, c0, c1, k0, k1);
      }
}

#define FC_IM2COL_BACKWARD(T)                                                                    \
  template void conv2d_im2col_backward_data<T>(const ConvParams&, const T*, const T*, T*, void*); \
  template void conv2d_im2col_backward_weight<T>(const ConvParams&, const T*, const T*, T*, void*); \
  template void conv2d_backward_bias<T>(const ConvParams&, const T*, T*);                     \
  template void transpose_rotate_weight<T>(index_t, index_t, index_t, index_t, const T*, T*);
FC_IM2COL_BACKWARD(float)
FC_IM2COL_BACKWARD(double)

}  // namespace fastconv::cpu
