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
// Data gradient, gy = grad_y (N, K, P, Q) -> grad_x (N, C, H, W), the same unroll's adjoint
// in the same chunks: col (C/g*R*S, chunk) = w_g^T @ gy[n, g] (K/g, chunk), then col2im adds
// each column back onto the input pixels it was unrolled from. col2im runs one input channel
// per thread (the R*S rows of one channel hit the same plane; different channels never do),
// so there are no races. Small images go several per GEMM (grad_y's rows side by side).
// The rest of the backward lives elsewhere: the weight gradient, an implicit GEMM that
// gathers the patches instead of unrolling them, in conv2d_backward_weight_gemm.cpp; the bias
// gradient in conv2d_backward_bias.cpp; the transposed weight of the data gradient as a
// forward convolution in weight_transpose.cpp. Rules shared with the weight gradient
// (batching, threading) are in im2col_common.h.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/im2col_common.h"
#include "cpu/kernels.h"

namespace fastconv::cpu {
namespace {

using namespace im2col_detail;

constexpr index_t kChunkBytes = index_t(2) << 20;  // per thread; about an L2
// Chunks are a multiple of this many columns when they can be, so each row of a chunk is
// whole 64-byte lines of float. (Chosen in 1144b5f as the GEMM's register block width; the
// micro-panels are 24-48 columns wide now, gemm_avx2.cpp / gemm_avx512.cpp.)
constexpr index_t kChunkColsMultiple = 16;

// ---- forward helpers -----------------------------------------------------------

// A window that covers the whole unpadded image (one output pixel: a fully connected
// layer, LeNet-5's 16->120 5x5 on 5x5 maps): the unrolled patch is the image itself.
bool is_whole_image(const ConvParams& p) {
  return p.P == 1 && p.Q == 1 && p.R == p.H && p.S == p.W && p.pad_h == 0 && p.pad_w == 0 &&
         (p.R == 1 || p.dil_h == 1) && (p.S == 1 || p.dil_w == 1);
}

// Columns per chunk: within kChunkBytes, a multiple of kChunkColsMultiple (at least one).
index_t chunk_capacity(const ConvParams& p, int elem) {
  const index_t cols = kChunkBytes / (col_rows(p) * elem);
  return std::max<index_t>(cols / kChunkColsMultiple * kChunkColsMultiple, kChunkColsMultiple);
}
index_t chunk_cols(const ConvParams& p, int elem) { return std::min(chunk_capacity(p, elem), p.P * p.Q); }

// Bytes of one thread's chunk of unrolled columns (none when x is the col matrix itself).
index_t col_bytes(const ConvParams& p, int elem) {
  return is_plain_gemm(p) ? 0 : col_rows(p) * chunk_cols(p, elem) * elem;
}

// Elements of the batched mode's workspace for m images: col (rows, m*PQ), then (K/g, m*PQ)
// for the forward's products before their scatter into y, or the data gradient's grad_y
// rows side by side.
index_t batch_elems(const ConvParams& p, index_t m) {
  return (col_rows(p) + p.K_per_group()) * m * p.P * p.Q;
}
// The forward's batched workspace for m images: col (none for 1x1 stride-1 images, which
// conv_images gathers from x), then the products.
index_t forward_col_elems(const ConvParams& p, index_t m) {
  return is_plain_gemm(p) ? 0 : col_rows(p) * m * p.P * p.Q;
}
index_t forward_batch_elems(const ConvParams& p, index_t m) {
  return forward_col_elems(p, m) + p.K_per_group() * m * p.P * p.Q;
}

// Whole images per GEMM in the batched mode (1: one image at a time).
// Only small images: from about 512 output pixels one image's GEMM is wide enough, and the
// batched mode's unroll and scatter copies cost more than re-packing the weights (ResNet-50
// 1x1 at 56x56, batch 8: 0.4-0.6x torch batched, 1.0-1.3x image by image).
constexpr index_t kBatchedMaxPixels = 512;
// 1x1 stride-1 images have no unrolled columns (conv_images gathers them from x), so only the
// products' buffer bounds a batch: up to this many columns (2048->512 on 7x7 at batch 8: 8
// images a GEMM, not 5 + 3; 512 to 4096 columns measured alike on 7x7 and 14x14 maps).
constexpr index_t kBatchedPlainCols = 512;
index_t images_per_gemm(const ConvParams& p, int elem) {
  if (p.P * p.Q >= kBatchedMaxPixels) return 1;
  const index_t capacity =
      is_plain_gemm(p) ? std::max(kBatchedPlainCols, chunk_capacity(p, elem)) : chunk_capacity(p, elem);
  return std::min(p.N, std::max<index_t>(capacity / (p.P * p.Q), 1));
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

// Elements of one group's packed weights, in whole lines (of float), so each group's start
// on a line.
template <class T>
index_t packed_group_elems(const ConvParams& p) {
  return round_to_lines(gemm_pack_a_elems<T>(p.K_per_group(), col_rows(p)));
}

// Group g's weights as the GEMM's A: packed (a plan's, or a call's packed once for its
// pairs; streamed: likely out of L2, see gemm.h) or plain.
template <class T>
GemmOperand<T> weights_of(const ConvParams& p, const T* w, const T* packed, index_t g, bool streamed = true) {
  if (packed)
    return GemmOperand<T>::prepacked(packed + g * packed_group_elems<T>(p), p.K_per_group(), 0, streamed);
  return GemmOperand<T>::plain(w + g * p.K_per_group() * col_rows(p), col_rows(p));
}

// ---- padded gather -----------------------------------------------------------------
// With stride 1 along W, patch-matrix row (c, r, s) at column (op, oq) is
// xpad[c][op*stride_h + r*dil_h][oq + s*dil_w] of a zero-padded copy of the image: runs of Q
// contiguous values. The GEMM then gathers its B panels from that copy (GemmOperand::gathered:
// row offsets per (c, r, s), a segment of Q columns per output row) instead of from an
// unrolled col: no unroll pass (a tenth of 512->512 3x3 on 7x7 at batch 1, Zen 3, perf: 7-pixel
// rows make it all bookkeeping) and no col written and packed again. Only where the padded
// copy fits the workspace that col had (one chunk holds all the image's columns).
index_t padded_rows(const ConvParams& p) { return (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1; }
index_t padded_cols(const ConvParams& p) { return p.Q + (p.S - 1) * p.dil_w; }
index_t padded_image_elems(const ConvParams& p) { return p.C_per_group() * padded_rows(p) * padded_cols(p); }

bool gathers_padded(const ConvParams& p, int elem) {
  return p.stride_w == 1 && !is_plain_gemm(p) && chunk_cols(p, elem) == p.P * p.Q &&
         padded_image_elems(p) <= col_rows(p) * p.P * p.Q;
}

// xpad (C/g, padded_rows, padded_cols) from x_g (C/g, H, W): row i, column j holds
// x_g[c][i - pad_h][j - pad_w], zero outside the image.
template <class T>
void pad_image(const ConvParams& p, const T* x_g, T* xpad, bool parallel) {
  const index_t Hp = padded_rows(p), Wp = padded_cols(p);
  const index_t lo = std::min(p.pad_w, Wp), hi = std::max(lo, std::min(Wp, p.pad_w + p.W));
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t c = 0; c < p.C_per_group(); ++c)
    for (index_t i = 0; i < Hp; ++i) {
      T* d = xpad + (c * Hp + i) * Wp;
      const index_t ih = i - p.pad_h;
      if (ih < 0 || ih >= p.H) {
        std::fill(d, d + Wp, T(0));
        continue;
      }
      std::fill(d, d + lo, T(0));
      std::copy(x_g + (c * p.H + ih) * p.W, x_g + (c * p.H + ih) * p.W + (hi - lo), d + lo);
      std::fill(d + hi, d + Wp, T(0));
    }
}

// The gather's offsets: k_offsets[(c, r, s)] into one padded image, segment_offsets[n*P + op]
// for images [0, images) side by side, each padded_image_elems apart. They depend on the
// problem only: a call computes one image's once for all its (image, group) pairs.
void padded_offsets(const ConvParams& p, index_t images, std::vector<index_t>& k_offsets,
                    std::vector<index_t>& segment_offsets) {
  const index_t Hp = padded_rows(p), Wp = padded_cols(p);
  k_offsets.resize(size_t(col_rows(p)));
  for (index_t c = 0, row = 0; c < p.C_per_group(); ++c)
    for (index_t r = 0; r < p.R; ++r)
      for (index_t s = 0; s < p.S; ++s) k_offsets[size_t(row++)] = (c * Hp + r * p.dil_h) * Wp + s * p.dil_w;
  segment_offsets.resize(size_t(images * p.P));
  for (index_t n = 0; n < images; ++n)
    for (index_t op = 0; op < p.P; ++op)
      segment_offsets[size_t(n * p.P + op)] = n * padded_image_elems(p) + op * p.stride_h * Wp;
}

struct PaddedOffsets {
  std::vector<index_t> k_offsets, segment_offsets;
};

// y_g (K/g, P*Q) = w_g @ unroll(x_g) + bias_g, chunk by chunk; or, with `padded` (one image's
// offsets, where gathers_padded), gathered from x_g padded into col.
template <class T>
void conv_one(const ConvParams& p, const T* x_g, const GemmOperand<T>& w_g, const T* bias_g, T* y_g, T* col,
              bool threaded, const PaddedOffsets* padded) {
  const index_t Kg = p.K_per_group(), rows = col_rows(p), PQ = p.P * p.Q;
  if (is_plain_gemm(p)) {
    gemm_ex<T>(Kg, PQ, rows, T(1), w_g, GemmOperand<T>::plain(x_g, PQ), T(0), y_g, PQ, bias_g);
    return;
  }
  if (padded) {  // col holds the padded image instead
    pad_image(p, x_g, col, threaded);
    gemm_ex<T>(Kg, PQ, rows, T(1), w_g,
               GemmOperand<T>::gathered(col, padded->k_offsets.data(), padded->segment_offsets.data(), p.Q),
               T(0), y_g, PQ, bias_g);
    return;
  }
  const index_t step = chunk_cols(p, sizeof(T));
  for (index_t j0 = 0; j0 < PQ; j0 += step) {
    const index_t j1 = std::min(PQ, j0 + step);
    unroll(p, x_g, j0, j1, col, j1 - j0, threaded);
    gemm_ex<T>(Kg, j1 - j0, rows, T(1), w_g, GemmOperand<T>::plain(col, j1 - j0), T(0), y_g + j0, PQ, bias_g);
  }
}

// Images [n0, n1) of group g in one GEMM: col (rows, m*PQ) holds their unrolled patches
// side by side, out (K/g, m*PQ) the products, scattered into y afterwards.
template <class T>
void conv_images(const ConvParams& p, const T* x, const GemmOperand<T>& w_g, const T* bias, T* y, index_t g,
                 index_t n0, index_t n1, T* col, T* out) {
  const index_t Kg = p.K_per_group(), rows = col_rows(p), PQ = p.P * p.Q;
  const index_t cols = (n1 - n0) * PQ;
  GemmOperand<T> patches = GemmOperand<T>::plain(col, cols);
  std::vector<index_t> k_offsets, image_offsets;
  if (is_whole_image(p)) {  // image n's one patch is x[n, group g] itself: read x as B^T
    patches = GemmOperand<T>::plain(x + (n0 * p.groups + g) * rows, p.C * p.H * p.W, true);
  } else if (is_plain_gemm(p)) {
    // 1x1 stride 1: image n's patches are x[n, group g] itself, so the GEMM gathers them
    // (channel c at c*PQ, image n at n*C*PQ) straight into its packed panels, and col
    // stays unused. With 8 images a GEMM (kBatchedPlainCols) and gemm.cpp's K blocks
    // outermost, against unrolling them (d345c96; Sapphire Rapids-class Xeon, 2 threads, 6
    // alternating processes): 2048->512 on 7x7 at batch 8 1.44x, 1024->2048 1.12x,
    // 512->2048 1.06x.
    k_offsets.resize(size_t(rows));
    for (index_t c = 0; c < rows; ++c) k_offsets[size_t(c)] = c * PQ;
    image_offsets.resize(size_t(n1 - n0));
    for (index_t n = n0; n < n1; ++n) image_offsets[size_t(n - n0)] = n * p.C * PQ;
    patches = GemmOperand<T>::gathered(x + g * rows * PQ, k_offsets.data(), image_offsets.data(), PQ);
  } else if (gathers_padded(p, sizeof(T))) {  // col holds the images padded, side by side
    padded_offsets(p, n1 - n0, k_offsets, image_offsets);
#pragma omp parallel for schedule(static)
    for (index_t n = n0; n < n1; ++n)
      pad_image(p, x + (n * p.groups + g) * p.C_per_group() * p.H * p.W,
                col + (n - n0) * padded_image_elems(p), false);
    patches = GemmOperand<T>::gathered(col, k_offsets.data(), image_offsets.data(), p.Q);
  } else {
    unroll_images(p, x, g, n0, n1, col);
  }
  gemm_ex<T>(Kg, cols, rows, T(1), w_g, patches, T(0), out, cols, bias ? bias + g * Kg : nullptr);
  // Row by row of out, each thread a contiguous half of it: out is read in order (image by
  // image it was read in strided runs of PQ). 512->2048 and 2048->512 1x1 on 7x7 at batch 8
  // 1.04x, 1024->256 on 14x14 1.03x (Sapphire Rapids-class Xeon, 6 alternating processes).
#pragma omp parallel for schedule(static)
  for (index_t k = 0; k < Kg; ++k)
    for (index_t n = n0; n < n1; ++n) {
      T* dst = y + ((n * p.groups + g) * Kg + k) * PQ;
      const T* src = out + k * cols + (n - n0) * PQ;
      if (PQ == 1)
        *dst = *src;
      else
        std::memcpy(dst, src, sizeof(T) * PQ);
    }
}

// ---- data gradient helpers -----------------------------------------------------

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
          strided_add(xc + ih * p.W, in + at - oq0, lo, hi, p.stride_w,
                      iw_off);  // in[at - oq0 + oq]: (op, oq)
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

// The data gradient's batches: their unrolled columns.
index_t backward_images_per_gemm(const ConvParams& p, int elem) {
  return balanced_images_per_gemm(p, col_rows(p) * p.P * p.Q * elem);
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

}  // namespace

// ---- forward ---------------------------------------------------------------------------

// A batch of 1x1 stride-1 images (no unroll: x is the patch matrix) runs one (image, group)
// pair a thread, each a serial GEMM on x itself, when the pairs split evenly over the team,
// as direct's pointwise path does: a threaded GEMM per image splits a narrow N between the
// threads. ResNet-50's 512->128 on 28x28 at batch 8 (Zen 4, 2 threads, 3 runs): image by
// image 5.7-5.9 ms, pair by pair (direct) 4.9, torch 5.5-5.6.
bool plain_pairs_parallel(const ConvParams& p, int threads) {
  const index_t pairs = p.N * p.groups;
  return threads > 1 && is_plain_gemm(p) && p.P * p.Q >= kOuterMinPixels && pairs >= threads &&
         pairs % threads == 0;
}

// The forward's pair-by-pair mode: the shared rule (im2col_common.h) or the one above.
bool forward_pairs_parallel(const ConvParams& p, int threads) {
  return outer_parallel(p, threads) || plain_pairs_parallel(p, threads);
}

// Pair by pair, every pair's serial GEMM packed its group's weights again: N times per
// call, the work a plan does once. A call without prepared weights now packs them once,
// into the workspace, when each group's weights serve several images. 1024->256 1x1 on 14x14 at
// batch 8 had spent 4 % of its time in pack_a (Zen 3, perf).
bool pack_weights_per_call(const ConvParams& p, int threads, bool prepared) {
  return !prepared && p.N > 1 && forward_pairs_parallel(p, threads);
}

index_t conv2d_im2col_workspace_bytes(const ConvParams& p, DType dtype, bool prepared) {
  const int elem = dtype_size(dtype), threads = omp_get_max_threads();
  if (forward_pairs_parallel(p, threads)) {
    index_t packed = 0;  // elements of the weights packed by the call itself
    if (pack_weights_per_call(p, threads, prepared))
      packed = elem == 4 ? conv2d_im2col_prepared_elems<float>(p) : conv2d_im2col_prepared_elems<double>(p);
    return packed * elem + col_bytes(p, elem) * threads;
  }
  const index_t m = images_per_gemm(p, elem);
  return m > 1 ? forward_batch_elems(p, m) * elem : col_bytes(p, elem);
}

template <class T>
index_t conv2d_im2col_prepared_elems(const ConvParams& p) {
  return p.groups * packed_group_elems<T>(p);
}

template <class T>
void conv2d_im2col_prepare(const ConvParams& p, const T* w, T* prepared) {
  const index_t rows = col_rows(p), Kg = p.K_per_group();
  auto pack = [&](index_t g) {
    gemm_pack_a<T>(false, Kg, rows, w + g * Kg * rows, rows, prepared + g * packed_group_elems<T>(p));
  };
  if (p.groups == 1) {  // gemm_pack_a shares out its K blocks itself (from outside any team)
    pack(0);
    return;
  }
#pragma omp parallel for schedule(static)
  for (index_t g = 0; g < p.groups; ++g) pack(g);
}

template <class T>
void conv2d_im2col(const ConvParams& p, const T* x, const T* w, const T* prepared, const T* bias, T* y,
                   void* workspace) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), G = p.groups;
  const index_t x_group = Cg * p.H * p.W, y_group = Kg * p.P * p.Q;
  const int threads = omp_get_max_threads();
  T* ws = static_cast<T*>(workspace);
  const bool pairs_parallel = forward_pairs_parallel(p, threads);
  const index_t m = pairs_parallel ? 1 : images_per_gemm(p, sizeof(T));
  if (m > 1) {  // batched: conv_images gathers its own images
    T* out = ws + forward_col_elems(p, m);
    for (index_t g = 0; g < G; ++g)
      for (index_t n0 = 0; n0 < p.N; n0 += m)
        conv_images<T>(p, x, weights_of(p, w, prepared, g), bias, y, g, n0, std::min(p.N, n0 + m), ws, out);
    return;
  }
  // Pair by pair: one image's padded-gather offsets serve every pair.
  PaddedOffsets padded;
  const bool gathers = gathers_padded(p, sizeof(T));
  if (gathers) padded_offsets(p, 1, padded.k_offsets, padded.segment_offsets);
  auto pair = [&](index_t i, const T* packed, bool streamed, T* col, bool threaded) {
    const index_t n = i / G, g = i % G;
    conv_one<T>(p, x + (n * G + g) * x_group, weights_of(p, w, packed, g, streamed),
                bias ? bias + g * Kg : nullptr, y + (n * G + g) * y_group, col, threaded,
                gathers ? &padded : nullptr);
  };
  if (pairs_parallel) {
    const index_t packed_elems = conv2d_im2col_prepared_elems<T>(p);
    const T* packed = prepared;
    T* cols = ws;
    if (pack_weights_per_call(p, threads, prepared != nullptr)) {
      conv2d_im2col_prepare(p, w, ws);
      packed = ws;
      cols = ws + packed_elems;
    }
    const bool streamed = prepared || packed_elems * index_t(sizeof(T)) > kStreamedPackedABytes;
    const index_t per_thread = col_bytes(p, sizeof(T)) / index_t(sizeof(T));
#pragma omp parallel
    {
      T* col = cols ? cols + omp_get_thread_num() * per_thread : nullptr;
#pragma omp for schedule(dynamic)
      for (index_t i = 0; i < p.N * G; ++i) pair(i, packed, streamed, col, false);
    }
    return;
  }
  for (index_t i = 0; i < p.N * G; ++i) pair(i, prepared, true, ws, true);
}

#define FC_IM2COL_INSTANCES(T)                                             \
  template index_t conv2d_im2col_prepared_elems<T>(const ConvParams&);     \
  template void conv2d_im2col_prepare<T>(const ConvParams&, const T*, T*); \
  template void conv2d_im2col<T>(const ConvParams&, const T*, const T*, const T*, const T*, T*, void*);
FC_IM2COL_INSTANCES(float)
FC_IM2COL_INSTANCES(double)
#undef FC_IM2COL_INSTANCES

// ---- data gradient -------------------------------------------------------------------

index_t conv2d_im2col_backward_data_workspace_bytes(const ConvParams& p, DType dtype) {
  const int elem = dtype_size(dtype), threads = omp_get_max_threads();
  if (outer_parallel(p, threads)) return col_bytes(p, elem) * threads;
  const index_t m = backward_images_per_gemm(p, elem);
  return m > 1 ? batch_elems(p, m) * elem : col_bytes(p, elem);
}

template <class T>
void conv2d_im2col_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x,
                                 void* workspace) {
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

template void conv2d_im2col_backward_data<float>(const ConvParams&, const float*, const float*, float*,
                                                 void*);
template void conv2d_im2col_backward_data<double>(const ConvParams&, const double*, const double*, double*,
                                                  void*);

}  // namespace fastconv::cpu
