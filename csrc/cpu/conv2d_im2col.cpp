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
#include <omp.h>

#include <algorithm>
#include <cstring>

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

// Columns per chunk: a multiple of 16 (the GEMM's widest register block) when possible.
index_t chunk_capacity(const ConvParams& p, int elem) {
  const index_t cols = kChunkBytes / (col_rows(p) * elem);
  return std::max<index_t>(cols / 16 * 16, 16);
}
index_t chunk_cols(const ConvParams& p, int elem) { return std::min(chunk_capacity(p, elem), p.P * p.Q); }

// Whole images per GEMM in the batched mode (1: one image at a time).
index_t images_per_gemm(const ConvParams& p, int elem) {
  return std::min(p.N, std::max<index_t>(chunk_capacity(p, elem) / (p.P * p.Q), 1));
}

// Parallelise over (image, group) pairs, one serial GEMM each, when there are enough
// of them and each is small; otherwise one pair at a time with a threaded GEMM.
bool outer_parallel(const ConvParams& p, int threads) {
  const index_t pairs = p.N * p.groups;
  const double flops_per_pair = p.flops() / double(std::max<index_t>(pairs, 1));
  return threads > 1 && pairs >= 2 * threads && flops_per_pair < 2e7;
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
    T* out = col + row * ld;
    index_t j = j0;
    while (j < j1) {
      const index_t op = j / p.Q, oq0 = j % p.Q;
      const index_t oq1 = std::min(p.Q, oq0 + (j1 - j));  // end of this output row in the chunk
      const index_t ih = op * p.stride_h - p.pad_h + r * p.dil_h;
      T* o = out + (j - j0);
      if (ih < 0 || ih >= p.H) {
        std::fill(o, o + (oq1 - oq0), T(0));
      } else {
        const T* xr = xc + ih * p.W;
        const index_t iw_off = s * p.dil_w - p.pad_w;
        if (p.stride_w == 1) {
          // valid oq: 0 <= oq + iw_off < W
          const index_t lo = std::clamp(-iw_off, oq0, oq1), hi = std::clamp(p.W - iw_off, lo, oq1);
          std::fill(o, o + (lo - oq0), T(0));
          std::memcpy(o + (lo - oq0), xr + lo + iw_off, sizeof(T) * (hi - lo));
          std::fill(o + (hi - oq0), o + (oq1 - oq0), T(0));
        } else {
          for (index_t oq = oq0; oq < oq1; ++oq) {
            const index_t iw = oq * p.stride_w + iw_off;
            o[oq - oq0] = (iw >= 0 && iw < p.W) ? xr[iw] : T(0);
          }
        }
      }
      j += oq1 - oq0;
    }
  }
}

// Elements of one group's packed weights (64-byte multiple).
template <class T>
index_t packed_group_elems(const ConvParams& p) {
  return (gemm_pack_a_elems<T>(p.K_per_group(), col_rows(p)) + 15) / 16 * 16;
}

// Group g's weights as the GEMM's A: packed (a plan) or plain.
template <class T>
GemmOperand<T> weights_of(const ConvParams& p, const T* w, const T* packed, index_t g) {
  if (packed) return GemmOperand<T>::prepacked(packed + g * packed_group_elems<T>(p), p.K_per_group());
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
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), rows = col_rows(p), PQ = p.P * p.Q;
  const index_t cols = (n1 - n0) * PQ;
  for (index_t n = n0; n < n1; ++n)
    unroll(p, x + (n * p.groups + g) * Cg * p.H * p.W, 0, PQ, col + (n - n0) * PQ, cols, true);
  gemm_ex<T>(Kg, cols, rows, T(1), w_g, GemmOperand<T>::plain(col, cols), T(0), out, cols,
             bias ? bias + g * Kg : nullptr);
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t n = n0; n < n1; ++n)
    for (index_t k = 0; k < Kg; ++k)
      std::memcpy(y + ((n * p.groups + g) * Kg + k) * PQ, out + k * cols + (n - n0) * PQ, sizeof(T) * PQ);
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

}  // namespace fastconv::cpu
