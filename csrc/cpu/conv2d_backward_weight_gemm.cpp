// conv2d_backward_weight_gemm.cpp: the weight gradient of a convolution as an implicit GEMM
// (the im2col algorithm's weight gradient). For each group g, with gy = grad_y (N, K, P, Q)
// and x (N, C, H, W):
//   grad_w_g (K/g, R*S*C/g) = sum over images n of gy[n, g] (K/g, P*Q) @ patches_n (P*Q, R*S*C/g)
// in (k, r, s, c) order, permuted to grad_w (K, C/g, R, S) at the end.
// Idea: the patches are never written out. Each image is copied once into a padded
// channels-last form (Hp, Wp, C/g), where one output pixel's kernel row is S*C/g contiguous
// values, and the GEMM's packing gathers them from there (GemmOperand::gathered: Chetlur et
// al., "cuDNN", 2014; XNNPACK's indirection buffer). See "the implicit GEMM" below.
// Threads: race-free and deterministic, in one of three plans (weight_plan): one threaded
// GEMM at a time (images in a fixed order; small images several per GEMM); one serial GEMM
// per (image, group) pair into per-thread partial sums (static assignment, reduced in thread
// order) for many small pairs or a gradient of at most 1 MiB; or, with at least as many
// groups as threads, one group per thread.
// Limits: float and double; any stride, dilation, padding and groups. The padded copy costs
// one pass over x and Hp*Wp*C/g values of workspace per image in a GEMM; 1x1 stride-1
// unpadded kernels skip it (their GEMM reads x itself).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "cpu/gemm.h"
#include "cpu/im2col_common.h"
#include "cpu/kernels.h"

namespace fastconv::cpu {
namespace {

using namespace im2col_detail;

// ---- the implicit GEMM ---------------------------------------------------------------
//
// grad_w_g in (k, r, s, c) order, (K/g, R*S*C/g), = sum over the images' pixels of
// gy_g (K/g, pixels) @ patches (pixels, R*S*C/g), where a pixel's patch is read by the
// GEMM straight from a padded channels-last copy xpad (Hp, Wp, C/g) of the image: for
// output pixel (op, oq) and kernel row r, the S*C/g values (s, c) lie contiguous at
// ((op*stride_h + r*dil_h) * Wp + oq*stride_w) * C/g (with dil_w > 1, C/g at a time). So
// the GEMM's B is gathered (GemmOperand::gathered): its packing copies runs of whole rows
// instead of transposing an unrolled col matrix, and no col is written at all. ResNet-18's
// 64->64 3x3 layer on 56x56 spent 19% of its time in that transposing pack and 15% in the
// unroll (Zen 4, 2 threads), before this file's kernel replaced im2col + GEMM (2de2c82).

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
index_t padded_elems(const ConvParams& p) {  // of one image's group, whole lines (of float)
  return round_to_lines(padded_rows(p) * padded_cols(p) * p.C_per_group());
}

// The gathered B's segments: one per kernel row (S*C/g values), or per tap with dil_w > 1.
index_t weight_segment(const ConvParams& p) { return p.dil_w == 1 ? p.S * p.C_per_group() : p.C_per_group(); }
std::vector<index_t> weight_segment_offsets(const ConvParams& p) {
  const index_t Cg = p.C_per_group(), Wp = padded_cols(p);
  std::vector<index_t> offs;
  for (index_t r = 0; r < p.R; ++r)
    for (index_t s = 0; s < (p.dil_w == 1 ? 1 : p.S); ++s)
      offs.push_back((r * p.dil_h * Wp + s * p.dil_w) * Cg);
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
// x_g[c, hp*row_step - pad_h, wp*col_step - pad_w], zero outside the image. Strips of
// kStripCols columns, so the strided side stays within a few cache lines (two lines of float).
constexpr index_t kStripCols = 32;
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
    for (index_t w0 = lo; w0 < hi; w0 += kStripCols)
      transpose_strip(in + w0 * sw, HW, sw, Cg, std::min(kStripCols, hi - w0), row + w0 * Cg, Cg);
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

// ---- plans and workspace ----------------------------------------------------------------

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
  // The pairs split evenly among the threads, or are enough that one more for some threads
  // costs them at most a quarter more work.
  if (threads > 1 && p.groups == 1 && pairs >= threads && (pairs % threads == 0 || pairs >= 4 * threads) &&
      p.K * col_rows(p) * elem <= kPartialMaxBytes && p.P * p.Q >= kPartialMinPixels)
    return WeightPlan::per_thread_partials;
  if (!outer_parallel(p, threads)) return WeightPlan::threaded_gemm;
  return p.groups >= threads ? WeightPlan::per_group : WeightPlan::per_thread_partials;
}

// Images per weight-gradient GEMM: whole images, so that its reduction (images x P*Q) is at
// least kBackwardReduction long (im2col_common.h), the padded images and grad_y's rows within
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
  const index_t rows = m * p.P * p.Q;
  if (m == 1 && is_plain_gemm(p)) return {0, 0, 0};
  return {m * padded_elems(p), elems_in_lines(rows * index_t(sizeof(index_t)), elem),
          m > 1 ? elems_in_lines(p.K_per_group() * rows * elem, elem) : 0};
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
    gemm<T>(false, true, Kg, Cg, PQ, T(1), grad_y + (n0 * G + g) * Kg * PQ, PQ, x + (n0 * G + g) * Cg * PQ,
            PQ, first ? T(0) : T(1), acc_g, Cg);
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
#pragma omp parallel for schedule(static) if (p.K * Cg * RS > kParallelMinValues)
  for (index_t k = 0; k < p.K; ++k)
    for (index_t rs = 0; rs < RS; ++rs)
      for (index_t c = 0; c < Cg; ++c) grad_w[(k * Cg + c) * RS + rs] = acc[(k * RS + rs) * Cg + c];
}

// The weight gradient's workspace: the (K, R*S, C/g) sums when R*S > 1 (else grad_w holds
// them directly), then the scratch of one GEMM (threaded) or of each thread, and the
// threads' partial sums (per_thread_partials).
index_t weight_acc_elems(const ConvParams& p, int elem) {
  return p.R * p.S > 1 ? elems_in_lines(p.K * col_rows(p) * elem, elem) : 0;
}

}  // namespace

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

// grad_y (N, K, P, Q), x (N, C, H, W) -> grad_w (K, C/g, R, S), overwritten; the workspace
// holds conv2d_im2col_backward_weight_workspace_bytes (aligned for index_t).
template <class T>
void conv2d_im2col_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w,
                                   void* workspace) {
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

template void conv2d_im2col_backward_weight<float>(const ConvParams&, const float*, const float*, float*,
                                                   void*);
template void conv2d_im2col_backward_weight<double>(const ConvParams&, const double*, const double*, double*,
                                                    void*);

}  // namespace fastconv::cpu
