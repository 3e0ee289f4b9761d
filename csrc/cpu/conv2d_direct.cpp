// conv2d_direct.cpp: direct convolution (cross-correlation), vectorised, compiled once
// per ISA into fastconv::cpu::<isa> (see kernels.h).
//
// Computes, for every problem a ConvParams can describe (params.h), float and double:
//   y[n,k,p,q] = bias[k] + sum_{c,r,s} x[n, g*Cg+c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s]
//   x (N, C, H, W), w (K, Cg = C/groups, R, S), bias (K) or null, y (N, K, P, Q).
//
// Idea: the input rows that a band of output rows reads are copied once into a small
// per-thread buffer, zero-padded on every side and with each row split into its
// stride_w column phases (stride 2: even columns, then odd columns). In that buffer
// every tap (r, s) of every output row is a contiguous run at a fixed offset, so one
// branch-free loop serves every stride, dilation and padding (asymmetric included):
// y_vec += w[k,c,r,s] * x_run, vectorised along the output row (Q) with GCC vector
// extensions (64/32/16-byte vectors in the avx512/avx2/scalar builds; FMA where the ISA
// has it), masked tails, register-blocked over KB output channels x NQ output vectors
// (taken across row ends, so a 7-wide output still fills a tile; on AVX2 a row's last
// vector with at most half its lanes valid runs in 128 bits). Borders cost nothing
// in the inner loop: they are the zeros of the buffer (on AVX-512 the fill itself is
// masked loads, and stride-2 phases come from two permutes per vector pair).
//   depthwise (Cg == 1, any channel multiplier K/groups): 3x3 with vertical stride 1 uses
//     row tiles (up to 8 output rows of one column vector share their input rows:
//     (NR+2)*3 loads per 9*NR FMAs); other shapes use the general tile with Cg = 1. On
//     AVX-512, float 3x3 planes of <= 32 x 32 (stride 1 or 2, multiplier 1) skip the band:
//     each input row is permuted into its three taps once, 9 FMAs an output row.
//   pointwise (1x1, no top/left pad): y_g (Kg x PQ) = W_g (Kg x Cg) * x_g (Cg x PQ) + bias,
//     one gemm() per image and group; strided or cropped outputs subsample x first.
//   general: the band kernel with Cg input channels inside the tap loop.
// Backward, gy = grad_y (N, K, P, Q), for every problem the forward serves:
//   data:   grad_x[n,c,ih,iw] = sum over k of c's group and taps (r, s) that read (ih, iw)
//           of gy[n,k,p,q] * w[k,c,r,s]: each (image, input channel) plane is one work
//           item (no two items write the same plane), scatter-added tap by tap as
//           row[q*sw + off] += sum_{b<4} w_b * gy_b[q] over 4 output channels at once
//           (fewer passes over the plane, which stays in L1/L2), vectorised along Q.
//   weight: grad_w[k,c,r,s] = sum over n, p, q of gy[n,k,p,q] * x[n, g*Cg+c, ih, iw]: one
//           (k, c) pair per work item, dot products along Q, summed in a fixed order
//           (deterministic, race-free). Best for depthwise; im2col's GEMM for the rest.
// Limits: vectorised along Q only, so outputs narrower than a vector waste lanes (Q = 7
//   uses 7 of 16 on AVX-512); the general path does not try to beat im2col + a packed
//   GEMM on many channels; 1x1 speed is the speed of gemm(). Scratch memory is
//   thread_local and bounded (~256 KiB a thread, input channels are chunked beyond that)
//   rather than the caller's workspace, because the workspace is sized before the
//   kernel's thread count is applied and could be too small for the team that runs.
#include <omp.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/isa_buffer.h"
#include "cpu/kernels.h"
#include "cpu/partial_avx2.h"

namespace fastconv::cpu::FC_ISA {
namespace {  // everything here differs per ISA: internal linkage keeps the 3 copies apart

// ============================== helpers ==============================================

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kGeneralKB = 8;    // output channels per register tile: 8 x 2 accumulators of 32
// Output vectors per tile of the kernels other than 3x3 (taps not unrolled): 8 x 3 accumulators,
// 11 loads per 24 FMAs a tap instead of 10 per 16. Sapphire Rapids-class Xeon, 2 threads, 6
// alternating processes: ResNet's 7x7 stem at batch 1 1.07x, 64->64 7x7 on 14x14 at batch 8
// 1.08x, 5x5 on 28x28 1.03x. The unrolled 3x3 tile keeps 2 (3: 0.81-0.90x at stride 2).
constexpr int kGeneralNQ = 3;
constexpr int kStemNQ = kGeneralNQ;  // see the AVX2 one
constexpr index_t kStemMinQ = 0;
constexpr int kDepthwiseNQ = 8;  // output vectors per depthwise tile (x 2 for a multiplier)
constexpr int kMultiplierKB = 8; // output channels per tile of a large channel multiplier (x 2 vectors)
constexpr int kPixelsNP = 12;    // pixels per channel-vector tile: 12 x 2 accumulators of 32
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
constexpr int kGeneralKB = 4;  // 4 x 2 accumulators + loads fit the 16 ymm registers
constexpr int kGeneralNQ = 2;
// Stems (<= 4 input channels a group, kernels other than 3x3, rows of >= kStemMinQ outputs)
// take 4 x 3 accumulators, all 16 registers with 3 x vectors and a broadcast: 7 loads per 12
// FMAs a tap instead of 6 per 8. Zen 3, 2 threads, interleaved in one process: ResNet's 7x7
// stride-2 stem 1.06x at batch 1, 1.08x at batch 8; 64->64 5x5 on 56x56 in groups of 2 1.25x;
// 3->32 5x5 stride 2 on 112x112 1.02x; on 28-32-wide rows (LeNet-5's first layer, 3->16 7x7 on
// 32x32) 0.98x, hence the bound.
constexpr int kStemNQ = 3;
constexpr index_t kStemMinQ = 48;
constexpr int kDepthwiseNQ = 4;
constexpr int kMultiplierKB = 6;  // 6 x 2 accumulators + 2 x vectors + a broadcast of 16
constexpr int kPixelsNP = 6;   // 6 x 2 accumulators + 2 weight vectors + a broadcast of 16
#else
constexpr int kVecBytes = 16;  // SSE2 on x86-64, NEON on aarch64
constexpr int kGeneralKB = 4;
constexpr int kGeneralNQ = 2;
constexpr int kStemNQ = kGeneralNQ;
constexpr index_t kStemMinQ = 0;
constexpr int kDepthwiseNQ = 4;
constexpr int kMultiplierKB = 6;
constexpr int kPixelsNP = 6;
#endif

template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
constexpr index_t kLanes = kVecBytes / index_t(sizeof(T));

// Half vectors (128 bits) for a row's last vector when at most half its lanes are valid
// (Q = 28: 8 + 8 + 8 + 4). AVX2 build only: Zen 1 runs a 256-bit FMA as two 128-bit
// halves, so a half vector costs half the FMA time (elsewhere the same, and no slower).
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr bool kHalfTail = true;
#else
constexpr bool kHalfTail = false;
#endif
template <class T>
struct HalfOf;
template <>
struct HalfOf<float> {
  typedef float type __attribute__((vector_size(kVecBytes / 2)));
};
template <>
struct HalfOf<double> {
  typedef double type __attribute__((vector_size(kVecBytes / 2)));
};
template <class T>
using Half = typename HalfOf<T>::type;

constexpr index_t kBandBytes = 256 * 1024;  // target size of one thread's band buffer (L2)
// Most bytes of weights one channel-vector tile (band_pixels) reads per row of pixels. A tile
// reads every weight vector once for its NP pixels; on AVX2 (6 pixels, so 12 FMAs per weight
// line) that pays only while they stay in L1: with them in L2 the row vectors won even at
// 4 of 8 lanes (Zen 3, 2 threads: 64->64 3x3 on 7x7 0.09 ms against 0.16, 128->128 stride 2
// on 28x28 0.59 against 1.15; LeNet-5's 6->16 5x5 on 10x10 outputs, 9.6 KB of them, a tie).
// AVX-512 keeps half the band's budget (16 pixels' lanes idle at Q = 7 otherwise).
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr index_t kPixelsWeightBytes = 32 * 1024;
#else
constexpr index_t kPixelsWeightBytes = kBandBytes / 2;
#endif
constexpr index_t kPrefetchBytes = 32 * 1024;  // most input (and output) prefetched for a next task

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// memcpy is how portable code says "unaligned load/store"; it compiles to one vmovups.
template <class T>
inline Vec<T> loadu(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// vector + scalar broadcasts the scalar: one vbroadcastss (a loop of lane inserts
// compiled to 16 masked broadcasts, a third of a small tile's time).
template <class T>
inline Vec<T> splat(T a) {
  return Vec<T>{} + a;
}
// Loads n (0 < n <= lanes) values, zeros in the rest; stores the first n lanes. Masked
// instructions with AVX-512, 16/8/4-byte pieces with AVX2 (vmaskmov is slow on Zen 1/2);
// a tail of an output row is common: Q = 7, 14, 28.
template <class T>
inline Vec<T> load_n(const T* p, index_t n) {
  if (n >= kLanes<T>) return loadu(p);
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    return (Vec<T>)_mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
  else
    return (Vec<T>)_mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p);
#elif defined(__AVX2__)
  return (Vec<T>)load_first_n(p, int(n));  // partial_avx2.h: no vmaskmov
#else
  Vec<T> v = splat(T(0));
  std::memcpy(&v, p, size_t(n) * sizeof(T));
  return v;
#endif
}
template <class T>
inline void store_n(T* p, const Vec<T>& v, index_t n) {
  if (n >= kLanes<T>) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), (__m512)v);
  else
    _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), (__m512d)v);
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4)
    store_first_n(p, (__m256)v, int(n));
  else
    store_first_n(p, (__m256d)v, int(n));
#else
  std::memcpy(p, &v, size_t(n) * sizeof(T));
#endif
}

// Per-thread scratch reused across calls (OpenMP keeps its threads); requests larger
// than kKeepBytes get a private buffer instead, so no thread holds on to a huge block.
// The contents are not kept from one get() to the next. Slot: a thread's scratches of
// different slots are different buffers (one may be in use while another is taken).
template <class T, int Slot = 0>
class Scratch {
 public:
  T* get(index_t n) {
    constexpr index_t kKeepBytes = 8 * 1024 * 1024;
    Buffer<T>& v = n * index_t(sizeof(T)) <= kKeepBytes ? kept() : own_;
    if (v.size() < n) v.resize(n);
    return v.data();
  }

 private:
  static Buffer<T>& kept() {
    static thread_local Buffer<T> v;
    return v;
  }
  Buffer<T> own_;
};

// Copies n elements (vectors, then one masked vector).
template <class T>
inline void copy_run(T* d, const T* s, index_t n) {
  constexpr index_t L = kLanes<T>;
  index_t j = 0;
  for (; j + L <= n; j += L) std::memcpy(d + j, s + j, sizeof(Vec<T>));
  if (j < n) store_n(d + j, load_n(s + j, n - j), n - j);
}

#if defined(__AVX512F__)
// x[i0 .. i0 + lanes) of a row of W values, zero outside [0, W): one masked load (lanes
// outside the row are neither read nor faulted on), so padding costs no extra pass.
template <class T>
inline Vec<T> load_clipped(const T* row, index_t i0, index_t W) {
  constexpr index_t L = kLanes<T>;
  const index_t lo = std::clamp<index_t>(-i0, 0, L), hi = std::clamp<index_t>(W - i0, 0, L);
  if (lo >= hi) return splat(T(0));
  const unsigned m = ((1u << hi) - 1) & ~((1u << lo) - 1);
  if constexpr (sizeof(T) == 4)
    return (Vec<T>)_mm512_maskz_loadu_ps(__mmask16(m), row + i0);
  else
    return (Vec<T>)_mm512_maskz_loadu_pd(__mmask8(m), row + i0);
}

// Even and odd lanes of the 2*lanes values a:b (stride-2 column phases).
inline void split2(const Vec<float>& a, const Vec<float>& b, float* d0, float* d1) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  _mm512_storeu_ps(d0, _mm512_permutex2var_ps((__m512)a, even, (__m512)b));
  _mm512_storeu_ps(d1, _mm512_permutex2var_ps((__m512)a, odd, (__m512)b));
}
inline void split2(const Vec<double>& a, const Vec<double>& b, double* d0, double* d1) {
  const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i odd = _mm512_add_epi64(even, _mm512_set1_epi64(1));
  _mm512_storeu_pd(d0, _mm512_permutex2var_pd((__m512d)a, even, (__m512d)b));
  _mm512_storeu_pd(d1, _mm512_permutex2var_pd((__m512d)a, odd, (__m512d)b));
}
#endif

// Band rows of one channel, padded and phase-split: dst is (rows, sw, Wph) with
// dst[i][ph][j] = x[ih0 + i][j*sw + ph - pad_w], zero outside the image.
template <class T>
void fill_band(T* dst, const T* xplane, index_t H, index_t W, index_t ih0, index_t rows, index_t pad_w,
               index_t sw, index_t Wph) {
  constexpr index_t L = kLanes<T>;
  const Vec<T> zero = splat(T(0));
  const index_t row_elems = sw * Wph;  // Wph is a multiple of the vector width
  for (index_t i = 0; i < rows; ++i) {
    T* d = dst + i * row_elems;
    const index_t ih = ih0 + i;
    if (ih < 0 || ih >= H) {
      for (index_t j = 0; j < row_elems; j += L) std::memcpy(d + j, &zero, sizeof zero);
      continue;
    }
    const T* src = xplane + ih * W;
#if defined(__AVX512F__)
    if (sw == 1) {  // straight copy shifted by pad_w, padding from the masks
      for (index_t j = 0; j < Wph; j += L) {
        const Vec<T> v = load_clipped(src, j - pad_w, W);
        std::memcpy(d + j, &v, sizeof v);
      }
      continue;
    }
    if (sw == 2) {  // two masked loads, two cross-lane permutes per pair of output vectors
      for (index_t j = 0; j < Wph; j += L)
        split2(load_clipped(src, 2 * j - pad_w, W), load_clipped(src, 2 * j + L - pad_w, W), d + j,
               d + Wph + j);
      continue;
    }
#endif
    for (index_t j = 0; j < row_elems; j += L) std::memcpy(d + j, &zero, sizeof zero);
    for (index_t ph = 0; ph < sw; ++ph) {
      // j is inside the image when 0 <= j*sw + ph - pad_w < W (sw == 1 without the two
      // divisions: they were 3 % of LeNet-5's first layer, one input channel of short rows).
      const index_t lo = std::min(Wph, sw == 1 ? pad_w : pad_w > ph ? ceil_div(pad_w - ph, sw) : index_t(0));
      const index_t hi = std::max(lo, std::min(Wph, sw == 1 ? W + pad_w : ceil_div(W + pad_w - ph, sw)));
      const T* s = src + lo * sw + ph - pad_w;
      T* dp = d + ph * Wph + lo;
      if (sw == 1)
        copy_run(dp, s, hi - lo);
      else if (sw == 2)  // constant stride: the compiler vectorises with shuffles
        for (index_t j = 0; j < hi - lo; ++j) dp[j] = s[2 * j];
      else
        for (index_t j = 0; j < hi - lo; ++j) dp[j] = s[j * sw];
    }
  }
}

// ============================== band kernel (depthwise and general) =================
//
// A band is output rows [p0, p0 + prows) of one image n and one group g. Its buffer
// holds, for cc input channels, the rows padded rows p0*sh .. p0*sh + rows - 1 as
// (cc, rows, sw, Wph). Output row p, column q, tap (r, s) of channel c reads
// buf[c][(p - p0)*sh + r*dh][(s*dw) % sw][q + (s*dw) / sw]: a fixed offset per tap.

template <class T>
struct Band {
  const T* buf;        // (cc, rows, sw, Wph)
  index_t cstride;     // rows * sw * Wph: between channels in buf
  index_t cc;          // input channels in buf
  const index_t* off;  // RS tap offsets into one channel of buf
  index_t RS;
  index_t row_step;    // sh * sw * Wph: between consecutive output rows in buf
  const T* w;          // weight of the group's first output channel, first channel of buf
  index_t wk;          // Cg * R * S: between output channels in w
  const T* bias;       // bias of the group's first output channel, or null
  bool accumulate;     // add to y (a later channel chunk) instead of starting from bias
  const T* wt;         // channel-vector tiles: the group's weights as (Cg, R*S, kpad), or null
  index_t kpad;        // wt's row stride: Kg rounded up to whole vectors, an odd number of lines
  T* y;                // y[n, group's first k, p0, 0]
  index_t Kg, PQ, Q, prows;
};

// KB output channels x NQ output vectors: acc = bias (or y) + sum over channels and taps
// of w * x_run. Vector j starts at xp[j] in channel 0 of the buffer and at yp[j] in y
// (output channel 0 of the block) and holds nv[j] valid columns. The NQ vectors are
// independent accumulation chains, enough to hide the FMA latency.
template <class T, int KB, int NQ, int RSc, int CGc>
inline void tile(const Band<T>& b, const T* w, const T* bias, const T* const* xp, T* const* yp,
                 const index_t* nv) {
  const index_t cc = CGc ? CGc : b.cc;
  const index_t RS = RSc ? RSc : b.RS;
  Vec<T> acc[KB][NQ];
  // Unrolled (the pragmas), so acc[] stays in registers from the first FMA to the stores:
  // left as loops, GCC kept it on the stack around the tap loop (LeNet-5's 1->6 5x5,
  // 25 taps a tile, Zen 1, 1 thread: 695 -> 590 us).
#pragma GCC unroll 16
  for (int kb = 0; kb < KB; ++kb)
#pragma GCC unroll 4
    for (int j = 0; j < NQ; ++j)
      acc[kb][j] = b.accumulate ? load_n(yp[j] + kb * b.PQ, nv[j]) : splat(bias ? bias[kb] : T(0));
  for (index_t c = 0; c < cc; ++c) {
    const index_t xc = c * b.cstride;
    const T* wc = w + c * RS;
    for (index_t t = 0; t < RS; ++t) {
      const index_t o = xc + b.off[t];
      Vec<T> xv[NQ];
      for (int j = 0; j < NQ; ++j) xv[j] = loadu(xp[j] + o);
      for (int kb = 0; kb < KB; ++kb) {
        const T wv = wc[kb * b.wk + t];
        for (int j = 0; j < NQ; ++j) acc[kb][j] += xv[j] * wv;
      }
    }
  }
#pragma GCC unroll 16
  for (int kb = 0; kb < KB; ++kb)
#pragma GCC unroll 4
    for (int j = 0; j < NQ; ++j) store_n(yp[j] + kb * b.PQ, acc[kb][j], nv[j]);
}

// *p in every lane, loaded as one vbroadcastss/sd (splat() of a loaded value is an add and
// a register broadcast, both on the FP pipes).
template <class T>
inline Vec<T> broadcast(const T* p) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    return (Vec<T>)_mm256_broadcast_ss(p);
  else
    return (Vec<T>)_mm256_broadcast_sd(p);
#else
  return splat(*p);
#endif
}

// tile() for NQ = 2 whose second vector has nv[1] <= lanes / 2 valid columns (kHalfTail):
// it runs in half vectors.
template <class T, int KB, int RSc, int CGc>
inline void tile_half_last(const Band<T>& b, const T* w, const T* bias, const T* const* xp, T* const* yp,
                           const index_t* nv) {
  const index_t cc = CGc ? CGc : b.cc;
  const index_t RS = RSc ? RSc : b.RS;
  auto half_of = [](const Vec<T>& v) {
    Half<T> h;
    std::memcpy(&h, &v, sizeof h);
    return h;
  };
  Vec<T> acc[KB];
  Half<T> acch[KB];
#pragma GCC unroll 16
  for (int kb = 0; kb < KB; ++kb) {
    acc[kb] = b.accumulate ? load_n(yp[0] + kb * b.PQ, nv[0]) : splat(bias ? bias[kb] : T(0));
    acch[kb] = half_of(b.accumulate ? load_n(yp[1] + kb * b.PQ, nv[1]) : acc[kb]);
  }
  for (index_t c = 0; c < cc; ++c) {
    const index_t xc = c * b.cstride;
    const T* wc = w + c * RS;
    for (index_t t = 0; t < RS; ++t) {
      const index_t o = xc + b.off[t];
      const Vec<T> xv = loadu(xp[0] + o);
      Half<T> xh;
      std::memcpy(&xh, xp[1] + o, sizeof xh);
#pragma GCC unroll 16
      for (int kb = 0; kb < KB; ++kb) {
        const Vec<T> wv = broadcast(wc + kb * b.wk + t);  // its low half feeds xh
        acc[kb] += xv * wv;
        acch[kb] += xh * half_of(wv);
      }
    }
  }
#pragma GCC unroll 16
  for (int kb = 0; kb < KB; ++kb) {
    store_n(yp[0] + kb * b.PQ, acc[kb], nv[0]);
    Vec<T> v = splat(T(0));
    std::memcpy(&v, &acch[kb], sizeof acch[kb]);
    store_n(yp[1] + kb * b.PQ, v, nv[1]);
  }
}

// Output channels [k, k + KB) of the band. The output vectors of the band, row by row
// (a row of Q columns is ceil(Q / lanes) vectors, the last one partial: the buffer has
// room to read it), are taken NQ at a time across row ends, so narrow rows (Q = 7)
// still fill every tile; the last few go through halving tiles.
template <class T, int KB, int NQ, int RSc, int CGc>
void band_vectors(const Band<T>& b, const T* w, const T* bias, T* y, index_t& pr, index_t& qv,
                  index_t& left) {
  constexpr index_t L = kLanes<T>;
  const index_t nq = ceil_div(b.Q, L);
  for (; left >= NQ; left -= NQ) {
    const T* xp[NQ];
    T* yp[NQ];
    index_t nv[NQ];
    for (int j = 0; j < NQ; ++j) {
      xp[j] = b.buf + pr * b.row_step + qv * L;
      yp[j] = y + pr * b.Q + qv * L;
      nv[j] = std::min(L, b.Q - qv * L);
      if (++qv == nq) qv = 0, ++pr;
    }
    if constexpr (kHalfTail && NQ == 2) {
      if (nv[0] == L && nv[1] <= L / 2) {
        tile_half_last<T, KB, RSc, CGc>(b, w, bias, xp, yp, nv);
        continue;
      }
    }
    tile<T, KB, NQ, RSc, CGc>(b, w, bias, xp, yp, nv);
  }
  if constexpr (NQ > 1) band_vectors<T, KB, NQ / 2, RSc, CGc>(b, w, bias, y, pr, qv, left);
}

template <class T, int KB, int NQ, int RSc, int CGc>
void band_rows(const Band<T>& b, index_t k) {
  index_t pr = 0, qv = 0, left = b.prows * ceil_div(b.Q, kLanes<T>);
  band_vectors<T, KB, NQ, RSc, CGc>(b, b.w + k * b.wk, b.bias ? b.bias + k : nullptr, b.y + k * b.PQ, pr, qv,
                                    left);
}

// Channel-vector tiles, for narrow outputs with many channels (LeNet-5's 6->16 5x5 on
// 10x10 outputs, ResNet's 7x7 maps): vectors run along the output channels instead of Q,
// so no lane idles past a short row (Q = 10 fills 10 of 16 lanes; 16 channels fill 16).
// A tile is NP consecutive pixels of one output row x KV channel vectors: per tap, KV
// weight vectors (w transposed to (Cg, R*S, kpad)) and NP broadcast inputs feed NP*KV FMAs.
// The tile is transposed through a small buffer on its way to y (N, K, P, Q).
template <class T, int KV, int NP>
void tile_pixels(const Band<T>& b, index_t k0, index_t pr, index_t q0) {
  constexpr index_t L = kLanes<T>;
  Vec<T> acc[NP][KV];
  for (int v = 0; v < KV; ++v) {
    const index_t nk = std::min(L, b.Kg - k0 - v * L);
    const Vec<T> init = b.bias ? load_n(b.bias + k0 + v * L, nk) : splat(T(0));
    for (int j = 0; j < NP; ++j) acc[j][v] = init;
  }
  const T* xb = b.buf + pr * b.row_step + q0;
  for (index_t c = 0; c < b.cc; ++c) {
    const T* xc = xb + c * b.cstride;
    const T* wc = b.wt + c * b.RS * b.kpad + k0;
    for (index_t t = 0; t < b.RS; ++t) {
      const T* xt = xc + b.off[t];
      Vec<T> wv[KV];
      for (int v = 0; v < KV; ++v) wv[v] = loadu(wc + t * b.kpad + v * L);
      for (int j = 0; j < NP; ++j) {
        const T xs = xt[j];
        for (int v = 0; v < KV; ++v) acc[j][v] += wv[v] * xs;
      }
    }
  }
  alignas(64) T tile[NP][KV * L];
  for (int j = 0; j < NP; ++j)
    for (int v = 0; v < KV; ++v) std::memcpy(&tile[j][v * L], &acc[j][v], sizeof(Vec<T>));
  const index_t nk = std::min<index_t>(KV * L, b.Kg - k0);
  T* yq = b.y + k0 * b.PQ + pr * b.Q + q0;
  for (index_t k = 0; k < nk; ++k)
    for (int j = 0; j < NP; ++j) yq[k * b.PQ + j] = tile[j][k];
}

// The tile of exactly np (1 <= np <= NP) pixels.
template <class T, int KV, int NP>
void tile_pixels_n(const Band<T>& b, index_t k0, index_t pr, index_t q0, index_t np) {
  if (np == NP) return tile_pixels<T, KV, NP>(b, k0, pr, q0);
  if constexpr (NP > 1) tile_pixels_n<T, KV, NP - 1>(b, k0, pr, q0, np);
}

template <class T>
void band_pixels(const Band<T>& b) {
  constexpr index_t L = kLanes<T>;
  for (index_t k0 = 0; k0 < b.Kg;) {
    const bool two = b.Kg - k0 > L;  // two channel vectors per tile while more than one remains
    for (index_t pr = 0; pr < b.prows; ++pr)
      for (index_t q0 = 0; q0 < b.Q; q0 += kPixelsNP) {
        const index_t np = std::min<index_t>(kPixelsNP, b.Q - q0);
        if (two)
          tile_pixels_n<T, 2, kPixelsNP>(b, k0, pr, q0, np);
        else
          tile_pixels_n<T, 1, kPixelsNP>(b, k0, pr, q0, np);
      }
    k0 += two ? 2 * L : L;
  }
}

// Depthwise 3x3 with vertical stride and dilation 1: NR output rows of one column
// vector share input rows, so (NR + 2) * 3 loads feed 9 * NR FMAs (instead of 9 * NR
// loads); the 9 weights stay in registers. Row j of the tile starts at xb + j*row_step
// in the buffer and at yb + j*Q in y.
template <class T, int NR>
inline void tile_rows3(const Band<T>& b, const T* xb, const T* w9, T bias, T* yb, index_t nv) {
  Vec<T> acc[NR];
  for (int j = 0; j < NR; ++j) acc[j] = b.accumulate ? load_n(yb + j * b.Q, nv) : splat(bias);
  T wr[9];
  for (int t = 0; t < 9; ++t) wr[t] = w9[t];
  // Fully unrolled (the pragmas), so acc[] lives in registers.
#pragma GCC unroll 16
  for (int i = 0; i < NR + 2; ++i)  // input row i feeds output row i - r with weight row r
#pragma GCC unroll 3
    for (int s = 0; s < 3; ++s) {
      const Vec<T> xv = loadu(xb + i * b.row_step + b.off[s]);
#pragma GCC unroll 3
      for (int r = 0; r < 3; ++r)
        if (i - r >= 0 && i - r < NR) acc[i - r] += xv * wr[r * 3 + s];
    }
  for (int j = 0; j < NR; ++j) store_n(yb + j * b.Q, acc[j], nv);
}

// One column strip of the band: tiles of kDepthwiseNQ rows, then one tile of exactly the
// rows left (7 rows of a 7x7 plane are one tile of 7 independent chains, not 4 + 2 + 1).
template <class T>
void rows3_strip(const Band<T>& b, const T* w9, T bias, T* y, index_t qv) {
  constexpr index_t L = kLanes<T>;
  constexpr int NR = kDepthwiseNQ;
  const index_t nv = std::min(L, b.Q - qv * L);
  index_t pr = 0;
  auto at = [&](index_t r) { return b.buf + r * b.row_step + qv * L; };
  auto yt = [&](index_t r) { return y + r * b.Q + qv * L; };
  for (; pr + NR <= b.prows; pr += NR) tile_rows3<T, NR>(b, at(pr), w9, bias, yt(pr), nv);
  switch (b.prows - pr) {  // 0 .. NR-1 rows left
    case 7:
      if constexpr (NR > 7) tile_rows3<T, 7>(b, at(pr), w9, bias, yt(pr), nv);
      break;
    case 6:
      if constexpr (NR > 6) tile_rows3<T, 6>(b, at(pr), w9, bias, yt(pr), nv);
      break;
    case 5:
      if constexpr (NR > 5) tile_rows3<T, 5>(b, at(pr), w9, bias, yt(pr), nv);
      break;
    case 4:
      if constexpr (NR > 4) tile_rows3<T, 4>(b, at(pr), w9, bias, yt(pr), nv);
      break;
    case 3: tile_rows3<T, 3>(b, at(pr), w9, bias, yt(pr), nv); break;
    case 2: tile_rows3<T, 2>(b, at(pr), w9, bias, yt(pr), nv); break;
    case 1: tile_rows3<T, 1>(b, at(pr), w9, bias, yt(pr), nv); break;
    default: break;
  }
}

// Every output channel of a depthwise 3x3 band (stride_h = dil_h = 1), column strip by
// column strip, kDepthwiseNQ rows at a time.
template <class T>
void band_rows3(const Band<T>& b) {
  const index_t nq = ceil_div(b.Q, kLanes<T>);
  for (index_t k = 0; k < b.Kg; ++k)
    for (index_t qv = 0; qv < nq; ++qv)
      rows3_strip(b, b.w + k * b.wk, b.bias ? b.bias[k] : T(0), b.y + k * b.PQ, qv);
}

// All Kg output channels of the band, in register blocks of KBMAX, then halves.
template <class T, int KBMAX, int NQ, int RSc, int CGc>
void band_all_k(const Band<T>& b) {
  index_t k = 0;
  for (; k + KBMAX <= b.Kg; k += KBMAX) band_rows<T, KBMAX, NQ, RSc, CGc>(b, k);
  if constexpr (KBMAX > 1) {
    if (k < b.Kg) {
      Band<T> rest = b;  // the remainder is < KBMAX channels: shift the origin and recurse
      rest.w = b.w + k * b.wk;
      rest.bias = b.bias ? b.bias + k : nullptr;
      rest.y = b.y + k * b.PQ;
      rest.Kg = b.Kg - k;
      band_all_k<T, KBMAX / 2, NQ, RSc, CGc>(rest);
    }
  }
}

// Driver: tasks are (image, group, band of output rows); each task fills its band
// buffer once per chunk of input channels and runs every output channel of the group.
template <class T, int KBMAX, int NQ, int RSc, int CGc>
void conv_banded(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  constexpr index_t L = kLanes<T>;
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), RS = p.R * p.S;
  const index_t sw = p.stride_w, sh = p.stride_h;
  const index_t Wph = round_up(round_up(p.Q, L) + (p.S - 1) * p.dil_w / sw, L);
  const index_t row_elems = sw * Wph;
  const index_t span_r = (p.R - 1) * p.dil_h + 1;  // padded rows one output row reads
  const index_t row_bytes = row_elems * index_t(sizeof(T));

  // Channel chunk and band height: the buffer stays near kBandBytes; at least one row
  // of one channel. Bands also shrink so that small batches still give every thread work.
  index_t cc = Cg, PB = 1;
  if (Cg * span_r * row_bytes > kBandBytes) {
    cc = std::max<index_t>(1, kBandBytes / (span_r * row_bytes));
  } else {
    const index_t rows_max = kBandBytes / (Cg * row_bytes);
    PB = std::max<index_t>(1, (rows_max - span_r) / sh + 1);
    const index_t threads = omp_get_max_threads();
    const index_t want_bands = ceil_div(4 * threads, p.N * p.groups);
    PB = std::max<index_t>(1, std::min(PB, ceil_div(p.P, want_bands)));
  }
  const index_t nbands = ceil_div(p.P, PB);
  const index_t tasks = p.N * p.groups * nbands;
  const index_t max_rows = (PB - 1) * sh + span_r;

  // Depthwise 3x3 with vertical stride and dilation 1 shares loads between rows.
  const bool rows3 = RSc == 9 && CGc == 1 && sh == 1 && p.dil_h == 1;
  // Channel-vector tiles (band_pixels) where they fill more lanes than row vectors do, the
  // band holds every input channel (one pass, nothing to accumulate), and the weights of
  // one tile's channel vectors stay in cache (kPixelsWeightBytes): every row of pixels reads
  // them all (512->512 3x3 on 7x7 maps, 590 KiB of them per tile: 11 ms against 3.8 ms with
  // row vectors).
  const bool pixels = CGc == 0 && cc == Cg && Kg >= L &&
                      Cg * RS * 2 * L * index_t(sizeof(T)) <= kPixelsWeightBytes &&
                      double(Kg) / double(round_up(Kg, L)) > double(p.Q) / double(round_up(p.Q, L));
  // wt's rows span an odd number of cache lines: a tile reads one vector pair per row, and rows
  // of 2^n lines would all fall into a few of L1's sets (128 channels: 512 B rows, 8 of 64
  // sets; 128->128 3x3 on 14x14 through these tiles, AVX2 on Zen 3: 1.13-1.33 ms, with odd
  // rows 0.73-0.84).
  constexpr index_t kLineElems = 64 / index_t(sizeof(T));
  index_t kpad = round_up(Kg, L);
  if (round_up(kpad, kLineElems) / kLineElems % 2 == 0) kpad = round_up(kpad, kLineElems) + kLineElems;
  Buffer<T> wt;  // pixels: w as (groups, Cg, R*S, kpad), zero-padded channels
  if (pixels) {
    wt.resize(p.groups * Cg * RS * kpad);
    for (index_t g = 0; g < p.groups; ++g)
      for (index_t k = 0; k < Kg; ++k)
        for (index_t c = 0; c < Cg; ++c)
          for (index_t t = 0; t < RS; ++t)
            wt[((g * Cg + c) * RS + t) * kpad + k] = w[((g * Kg + k) * Cg + c) * RS + t];
  }
  Buffer<index_t> off(RS);  // tap offsets inside one channel of the buffer
  for (index_t r = 0; r < p.R; ++r)
    for (index_t s = 0; s < p.S; ++s)
      off[r * p.S + s] = (r * p.dil_h * sw + (s * p.dil_w) % sw) * Wph + (s * p.dil_w) / sw;

  // Task t: image n, group g, output rows [p0, p0 + prows); its band reads the padded input
  // rows [ih0, ih0 + rows).
  struct Task {
    index_t n, g, p0, prows, ih0, rows;
  };
  auto task_of = [&](index_t t) {
    const index_t band = t % nbands, ng = t / nbands;
    const index_t p0 = band * PB, prows = std::min(PB, p.P - p0);
    return Task{ng / p.groups, ng % p.groups, p0, prows, p0 * sh - p.pad_h, (prows - 1) * sh + span_r};
  };
  // Task t's input rows of its first channel chunk and its output rows (about
  // kPrefetchBytes of each at most), prefetched while the task before it computes: without
  // it, a band fill waits on one cache miss after another, and the stores on one line fill
  // after another, whenever the data is not in cache, as in a model (LeNet-5's 1->6 and
  // 6->16 5x5 after a cache flush, 2 threads: input rows 477 -> 425 us and 771 -> 680 us,
  // then output rows 488 -> 459 us and 757 -> 706 us; warm: equal, and 606 -> 585 us).
  auto prefetch_task = [&](index_t t) {
    if (t >= tasks) return;
    const Task k = task_of(t);
    auto lines = [](const T* from, index_t bytes, index_t& budget, bool write) {
      const char* a = reinterpret_cast<const char*>(from);
      const char* e = a + std::min(bytes, budget);
      budget -= e - a;
      for (; a < e; a += 64) {
        if (write)
          __builtin_prefetch(a, 1, 3);
        else
          __builtin_prefetch(a, 0, 3);
      }
    };
    const index_t ih0 = std::clamp<index_t>(k.ih0, 0, p.H),
                  ih1 = std::clamp<index_t>(k.ih0 + k.rows, ih0, p.H);
    index_t budget = kPrefetchBytes;
    for (index_t c = 0; c < cc && budget > 0; ++c)
      lines(x + ((k.n * p.C + k.g * Cg + c) * p.H + ih0) * p.W, (ih1 - ih0) * p.W * index_t(sizeof(T)),
            budget, false);
    budget = kPrefetchBytes;
    for (index_t kk = 0; kk < Kg && budget > 0; ++kk)
      lines(y + ((k.n * p.K + k.g * Kg + kk) * p.P + k.p0) * p.Q, k.prows * p.Q * index_t(sizeof(T)), budget,
            true);
  };
#pragma omp parallel
  {
    Scratch<T> scratch;
    T* buf = scratch.get(cc * max_rows * row_elems);
    // Guided: shrinking chunks of tasks, so 1024 tiny depthwise planes do not pay one atomic
    // each and the team still ends together (against dynamic chunks of tasks / (8 * threads),
    // 2 threads: LeNet-5's 1->6 and 6->16 5x5 at batch 64 -2 %, 6->16 at batch 1 -12 %,
    // 512-channel depthwise 3x3 on 14x14 -6 %).
#pragma omp for schedule(guided)
    for (index_t t = 0; t < tasks; ++t) {
      const auto [n, g, p0, prows, ih0, rows] = task_of(t);
      for (index_t c0 = 0; c0 < Cg; c0 += cc) {
        const index_t ncc = std::min(cc, Cg - c0);
        for (index_t c = 0; c < ncc; ++c)
          fill_band(buf + c * rows * row_elems, x + (n * p.C + g * Cg + c0 + c) * p.H * p.W, p.H, p.W, ih0,
                    rows, p.pad_w, sw, Wph);
        if (c0 == 0) prefetch_task(t + 1);  // likely this thread's next task (chunks of tasks)
        Band<T> b;
        b.buf = buf;
        b.cstride = rows * row_elems;
        b.cc = ncc;
        b.off = off.data();
        b.RS = RS;
        b.row_step = sh * row_elems;
        b.w = w + (g * Kg * Cg + c0) * RS;
        b.wk = Cg * RS;
        b.bias = bias ? bias + g * Kg : nullptr;
        b.accumulate = c0 > 0;
        b.y = y + ((n * p.K + g * Kg) * p.P + p0) * p.Q;
        b.Kg = Kg;
        b.PQ = p.P * p.Q;
        b.Q = p.Q;
        b.prows = prows;
        b.wt = pixels ? wt.data() + g * Cg * RS * kpad : nullptr;
        b.kpad = kpad;
        if (rows3)
          band_rows3(b);
        else if (pixels)
          band_pixels(b);
        else
          band_all_k<T, KBMAX, NQ, RSc, CGc>(b);
      }
    }
  }
}

// ============================== depthwise ===========================================
#if defined(__AVX512F__)
// Small planes (AVX-512, float): 3x3, stride 1 or 2 (both axes), dilation 1, multiplier 1,
// rows of at most 32 input and 16 output pixels, at most 32 input rows (MobileNet's 28x28
// stride-2, 14x14 and 7x7 layers). The band path spends more on each plane's band fill,
// tile setup and task than on its 9 FMAs a vector: 512 channels on 14x14 -> 7x7 at batch 8
// took 0.35 ms, torch 0.18 (about 600 cycles a plane). Here a plane is one pass: each input
// row is one or two masked loads and three permutes, its taps s = 0, 1, 2 as vectors along
// the output row (lane q holds x[i][q*stride - pad_w + s], zero outside the row), kept in a
// 6 KiB buffer; then each output row is 9 FMAs from the rows it reads (rows outside the
// image are skipped).
//   x (N, C, H, W), w (C, 1, 3, 3), bias (C) or null, y (N, C, P, Q).
bool depthwise_small_plane(const ConvParams& p) {
  return p.K == p.C && p.groups == p.C && p.R == 3 && p.S == 3 && p.dil_h == 1 && p.dil_w == 1 &&
         p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2) && p.W <= 32 && p.Q <= 16 &&
         p.H <= 32;
}

void conv_depthwise_small(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  const index_t planes = p.N * p.C, H = p.H, W = p.W, P = p.P, Q = p.Q, sh = p.stride_h;
  const __mmask16 lo_mask = __mmask16((1u << std::min<index_t>(W, 16)) - 1u);
  const __mmask16 hi_mask = __mmask16((1u << std::max<index_t>(W - 16, 0)) - 1u);
  const __mmask16 out_mask = __mmask16((1u << Q) - 1u);
  __m512i idx[3];
  __mmask16 tap_mask[3];
  for (int s = 0; s < 3; ++s) {  // lane q of tap s reads column q*stride - pad_w + s
    alignas(64) int lane[16];
    tap_mask[s] = 0;
    for (int q = 0; q < 16; ++q) {
      const index_t col = q * sh - p.pad_w + s;
      const bool in = q < Q && col >= 0 && col < W;
      lane[q] = in ? int(col) : 0;
      if (in) tap_mask[s] = __mmask16(tap_mask[s] | (1u << q));
    }
    idx[s] = _mm512_load_si512(lane);
  }
#pragma omp parallel for schedule(static)
  for (index_t pl = 0; pl < planes; ++pl) {
    const index_t c = pl % p.C;
    const float* xp = x + pl * H * W;
    float* yp = y + pl * P * Q;
    alignas(64) float taps[32 * 3 * 16];  // [input row][s][lane]
    for (index_t i = 0; i < H; ++i) {
      const __m512 lo = _mm512_maskz_loadu_ps(lo_mask, xp + i * W);
      const __m512 hi = hi_mask ? _mm512_maskz_loadu_ps(hi_mask, xp + i * W + 16) : _mm512_setzero_ps();
      for (int s = 0; s < 3; ++s)
        _mm512_store_ps(taps + (i * 3 + s) * 16, _mm512_maskz_permutex2var_ps(tap_mask[s], lo, idx[s], hi));
    }
    __m512 wv[9];
    for (int t = 0; t < 9; ++t) wv[t] = _mm512_set1_ps(w[c * 9 + t]);
    const __m512 b = _mm512_set1_ps(bias ? bias[c] : 0.f);
    for (index_t o = 0; o < P; ++o) {
      __m512 acc = b;
      for (int r = 0; r < 3; ++r) {
        const index_t i = o * sh - p.pad_h + r;
        if (i < 0 || i >= H) continue;
        const float* t = taps + i * 3 * 16;
        acc = _mm512_fmadd_ps(wv[r * 3], _mm512_load_ps(t), acc);
        acc = _mm512_fmadd_ps(wv[r * 3 + 1], _mm512_load_ps(t + 16), acc);
        acc = _mm512_fmadd_ps(wv[r * 3 + 2], _mm512_load_ps(t + 32), acc);
      }
      _mm512_mask_storeu_ps(yp + o * Q, out_mask, acc);
    }
  }
}
#elif defined(__AVX2__)
// Small planes (AVX2, float): 3x3, stride 1 or 2 (both axes), dilation 1, multiplier 1, rows of at
// most 64 input pixels and of 32 output pixels at stride 2 (one, two or four vectors), 16 at stride
// 1, at most 64 input rows, left pad <= 2 (MobileNet's 56x56 and 28x28 stride-2, 14x14 and 7x7
// layers). The band path's per-plane costs (fill, tile setup, task) outweigh a 7x7 plane's 63 FMAs
// (512 channels on 14x14 -> 7x7 at batch 8 took 0.67 ms on Zen 3, torch 0.48), and so do they at
// stride 2 on 56x56 maps (128 channels to 28x28: 0.21 ms at batch 1, here 0.13; not the stride-2
// fill: vectorising it by hand changed nothing). Stride 1 on 28x28 maps stays on the band's row
// tiles (256 channels at batch 1: 0.13 ms, here 0.15). As on AVX-512, a plane is one pass: its
// input rows are copied into zero-padded stack rows (up to 22 KiB), each then turned into its three
// taps s = 0, 1, 2 as vectors along the output row (lane q holds x[i][q*stride - pad_w + s], zero
// outside the row; stride 2 deinterleaves two loads with a shuffle and a lane permute), kept in a
// buffer of up to 24 KiB; then each output row is 9 FMAs a vector from the rows it reads (rows
// outside the image are skipped).
//   x (N, C, H, W), w (C, 1, 3, 3), bias (C) or null, y (N, C, P, Q).
bool depthwise_small_plane(const ConvParams& p) {
  return p.K == p.C && p.groups == p.C && p.R == 3 && p.S == 3 && p.dil_h == 1 && p.dil_w == 1 &&
         p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2) && p.W <= 64 &&
         p.Q <= (p.stride_w == 2 ? 32 : 16) && p.H <= 64 && p.pad_w <= 2;
}

template <int NV>  // output vectors a row: Q <= 8 * NV
void conv_depthwise_small_nv(const ConvParams& p, const float* x, const float* w, const float* bias,
                             float* y) {
  const index_t planes = p.N * p.C, H = p.H, W = p.W, P = p.P, Q = p.Q, sh = p.stride_h;
  constexpr index_t kRowOffset = 8;  // row[kRowOffset + col] = x[i][col]; zeros around
#pragma omp parallel
  {
    constexpr index_t kLanesRow = 8 * NV;  // a tap row's lanes
    // Zero-padded input rows, [8 zeros][W values][zeros]: stride 2 reads up to lane 2 * kLanesRow + 10.
    constexpr index_t kRowLen = kRowOffset + 2 * kLanesRow + 16;
    alignas(32) float rows[64 * kRowLen] = {};
    alignas(32) float taps[64 * 3 * kLanesRow];  // [input row][s][lane]
#pragma omp for schedule(static)
    for (index_t pl = 0; pl < planes; ++pl) {
      const index_t c = pl % p.C;
      const float* xp = x + pl * H * W;
      float* yp = y + pl * P * Q;
      // All rows copied before any is read back: a tap's unaligned load that overlaps the
      // stores of the row just copied waits for them to leave the store buffer (Zen 3, 6
      // alternating processes of 1000 calls, medians: 512 channels 14x14 -> 7x7 at batch 1
      // 1.35x, at batch 8 1.14x, 1024 on 7x7 at batch 8 1.22x; 56x56 maps 0.97x, within noise).
      for (index_t i = 0; i < H; ++i)
        for (index_t j = 0; j < W; j += 8)  // the zeros that load_n leaves past W stay zeros
          _mm256_storeu_ps(rows + i * kRowLen + kRowOffset + j, (__m256)load_n(xp + i * W + j, W - j));
      for (index_t i = 0; i < H; ++i) {
        const float* row = rows + i * kRowLen;
        for (int s = 0; s < 3; ++s) {
          const float* r0 = row + kRowOffset - p.pad_w + s;  // column q*sh of this tap
          for (int v = 0; v < NV; ++v) {
            __m256 tap;
            if (sh == 1) {
              tap = _mm256_loadu_ps(r0 + 8 * v);
            } else {  // even lanes of two vectors: [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
              const __m256 a = _mm256_loadu_ps(r0 + 16 * v), b = _mm256_loadu_ps(r0 + 16 * v + 8);
              const __m256 even = _mm256_shuffle_ps(a, b, 0x88);
              tap = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8));
            }
            _mm256_store_ps(taps + (i * 3 + s) * kLanesRow + 8 * v, tap);
          }
        }
      }
      __m256 wv[9];
      for (int t = 0; t < 9; ++t) wv[t] = _mm256_set1_ps(w[c * 9 + t]);
      const __m256 b = _mm256_set1_ps(bias ? bias[c] : 0.f);
      for (index_t o = 0; o < P; ++o) {
        __m256 acc[NV];
        for (int v = 0; v < NV; ++v) acc[v] = b;
        for (int r = 0; r < 3; ++r) {
          const index_t i = o * sh - p.pad_h + r;
          if (i < 0 || i >= H) continue;
          const float* t = taps + i * 3 * kLanesRow;
          for (int v = 0; v < NV; ++v) {
            acc[v] = _mm256_fmadd_ps(wv[r * 3], _mm256_load_ps(t + 8 * v), acc[v]);
            acc[v] = _mm256_fmadd_ps(wv[r * 3 + 1], _mm256_load_ps(t + kLanesRow + 8 * v), acc[v]);
            acc[v] = _mm256_fmadd_ps(wv[r * 3 + 2], _mm256_load_ps(t + 2 * kLanesRow + 8 * v), acc[v]);
          }
        }
        for (int v = 0; v < NV && 8 * v < Q; ++v) store_n(yp + o * Q + 8 * v, (Vec<float>)acc[v], Q - 8 * v);
      }
    }
  }
}

void conv_depthwise_small(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  if (p.Q <= 8)
    conv_depthwise_small_nv<1>(p, x, w, bias, y);
  else if (p.Q <= 16)
    conv_depthwise_small_nv<2>(p, x, w, bias, y);
  else
    conv_depthwise_small_nv<4>(p, x, w, bias, y);
}
#endif

// x (N, C, H, W), w (K, 1, R, S), K = m*C (channel multiplier m >= 1), y (N, K, P, Q).
// Memory bound: one pass over x and y; the band buffer of one plane stays in L2.
// kDepthwiseNQ vectors per tile: each broadcast weight feeds that many independent FMA chains.
// A large multiplier (a first layer on one input channel: LeNet-5's 1->6 5x5) is compute
// bound instead: kMultiplierKB channels x 2 vectors per tile load fewer x vectors per FMA
// (Zen 1, 1->6 5x5 on 32x32, 1 thread: 6x2 tiles 747 us, 2x4 tiles 862 us, 3x4 827 us).
template <class T>
void conv_depthwise(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (depthwise_small_plane(p)) {
      conv_depthwise_small(p, x, w, bias, y);
      return;
    }
  }
#endif
  if (p.R == 3 && p.S == 3)
    conv_banded<T, 2, kDepthwiseNQ, 9, 1>(p, x, w, bias, y);
  else if (p.K_per_group() >= kMultiplierKB)
    conv_banded<T, kMultiplierKB, 2, 0, 1>(p, x, w, bias, y);
  else
    conv_banded<T, 2, kDepthwiseNQ, 0, 1>(p, x, w, bias, y);
}

// ============================== pointwise (1x1) =====================================
// x (N, C, H, W), w (K, Cg, 1, 1), y (N, K, P, Q), no top/left padding, so output pixel
// (p, q) reads input (p*sh, q*sw), always inside the image (check_conv_params).
// Per image and group: y_g (Kg x PQ) = W_g (Kg x Cg) * x_g (Cg x PQ) + bias_g (gemm's bias_m).
template <class T>
void conv_pointwise(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group();
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, jobs = p.N * p.groups;
  // Stride 1 along W with full rows, and consecutive rows: x_g is already Cg x PQ.
  const bool contiguous = p.stride_w == 1 && p.Q == p.W && (p.stride_h == 1 || p.P == 1);

  auto gather = [&](index_t n, index_t g, T* dst, bool parallel) {  // dst (Cg, P, Q)
#pragma omp parallel for if (parallel)
    for (index_t c = 0; c < Cg; ++c) {
      const T* xc = x + (n * p.C + g * Cg + c) * HW;
      T* d = dst + c * PQ;
      for (index_t i = 0; i < p.P; ++i) {
        const T* src = xc + i * p.stride_h * p.W;
        for (index_t j = 0; j < p.Q; ++j) d[i * p.Q + j] = src[j * p.stride_w];
      }
    }
  };
  // The weights as the GEMM's A: packed once per call for the job-per-thread mode below
  // (each job's serial GEMM packed them again: 512->1024 1x1 stride 2 at batch 8 spent 3.7 %
  // of its time there, Zen 3, perf), else plain.
  const T* packed = nullptr;
  const index_t packed_group = (gemm_pack_a_elems<T>(Kg, Cg) + 15) / 16 * 16;  // groups on lines
  const bool streamed = p.groups * packed_group * index_t(sizeof(T)) > kStreamedPackedABytes;
  auto weights = [&](index_t g) {
    return packed ? GemmOperand<T>::prepacked(packed + g * packed_group, Kg, 0, streamed)
                  : GemmOperand<T>::plain(w + g * Kg * Cg, Cg);
  };
  auto job = [&](index_t n, index_t g, const T* B, index_t ldb) {
    gemm_ex<T>(Kg, PQ, Cg, T(1), weights(g), GemmOperand<T>::plain(B, ldb), T(0), y + (n * p.K + g * Kg) * PQ,
               PQ, bias ? bias + g * Kg : nullptr);
  };

  const index_t threads = omp_get_max_threads();
  // One (image, group) job; `threaded` lets the gather use the team when the gemm does.
  auto run = [&](index_t t, T* buf, bool threaded) {
    const index_t n = t / p.groups, g = t % p.groups;
    if (contiguous) {
      job(n, g, x + (n * p.C + g * Cg) * HW, HW);
    } else {
      gather(n, g, buf, threaded);
      job(n, g, buf, PQ);
    }
  };
  if (threads > 1 && (jobs >= 4 * threads || (jobs >= threads && jobs % threads == 0))) {
    // Many images/groups: one gemm per thread at a time (gemm runs single-threaded
    // inside a parallel region).
    Scratch<T, 1> packed_scratch;
    if (p.N > 1) {  // weights used by several jobs
      T* dst = packed_scratch.get(p.groups * packed_group);
      for (index_t g = 0; g < p.groups; ++g)  // gemm_pack_a shares each group's K blocks out
        gemm_pack_a<T>(false, Kg, Cg, w + g * Kg * Cg, Cg, dst + g * packed_group);
      packed = dst;
    }
#pragma omp parallel
    {
      Scratch<T> scratch;
      T* buf = contiguous ? nullptr : scratch.get(Cg * PQ);
#pragma omp for schedule(dynamic, 1)
      for (index_t t = 0; t < jobs; ++t) run(t, buf, false);
    }
  } else {
    // Few images: gemm uses the whole team on each.
    Scratch<T> scratch;
    T* buf = contiguous ? nullptr : scratch.get(Cg * PQ);
    for (index_t t = 0; t < jobs; ++t) run(t, buf, true);
  }
}

// ============================== general =============================================
// x (N, C, H, W), w (K, Cg, R, S), y (N, K, P, Q): any groups, kernel, stride, dilation,
// padding. KB output channels x 2 vectors of Q per register tile, 3x3 taps unrolled; other
// kernels kGeneralNQ vectors, stems on wide rows kStemNQ.
template <class T>
void conv_general(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  if (p.R == 3 && p.S == 3)
    conv_banded<T, kGeneralKB, 2, 9, 0>(p, x, w, bias, y);
  else if (kStemNQ != kGeneralNQ && p.C / p.groups <= 4 && p.Q >= kStemMinQ)
    conv_banded<T, kGeneralKB, kStemNQ, 0, 0>(p, x, w, bias, y);
  else
    conv_banded<T, kGeneralKB, kGeneralNQ, 0, 0>(p, x, w, bias, y);
}

// ============================== backward =============================================

// Outputs o in [lo, hi) whose tap o*stride + off lies inside [0, in).
struct TapRange {
  index_t lo, hi;
};
TapRange tap_range(index_t in, index_t out, index_t stride, index_t off) {
  index_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  index_t hi = in - 1 - off < 0 ? 0 : (in - 1 - off) / stride + 1;
  hi = std::min(hi, out);
  return {std::min(lo, hi), hi};
}

// dst[q*sw] += sum_b wv[b] * g[b][q] for q in [q0, q1), KB output channels at once.
template <class T, int KB>
inline void scatter_row(T* dst, index_t sw, const T* const* g, const T* wv, index_t q0, index_t q1) {
  if (sw == 1) {
#pragma omp simd
    for (index_t q = q0; q < q1; ++q) {
      T v = dst[q];
      for (int b = 0; b < KB; ++b) v += wv[b] * g[b][q];
      dst[q] = v;
    }
  } else {
    for (index_t q = q0; q < q1; ++q) {
      T v = dst[q * sw];
      for (int b = 0; b < KB; ++b) v += wv[b] * g[b][q];
      dst[q * sw] = v;
    }
  }
}

// Output channels [k0, k0 + KB) of group g into the plane gxp of input channel cl.
template <class T, int KB>
void data_block(const ConvParams& p, const T* gy_n, const T* w, index_t k0, index_t cl, T* gxp,
                const Buffer<TapRange>& rr, const Buffer<TapRange>& sr) {
  const index_t PQ = p.P * p.Q, RS = p.R * p.S, Cg = p.C_per_group();
  const T* g[KB];
  for (int b = 0; b < KB; ++b) g[b] = gy_n + (k0 + b) * PQ;
  for (index_t r = 0; r < p.R; ++r) {
    const index_t off_h = r * p.dil_h - p.pad_h;
    for (index_t s = 0; s < p.S; ++s) {
      const index_t off_w = s * p.dil_w - p.pad_w;
      T wv[KB];
      for (int b = 0; b < KB; ++b) wv[b] = w[((k0 + b) * Cg + cl) * RS + r * p.S + s];
      const TapRange qr = sr[s];
      for (index_t op = rr[r].lo; op < rr[r].hi; ++op) {
        const T* gr[KB];
        for (int b = 0; b < KB; ++b) gr[b] = g[b] + op * p.Q;
        scatter_row<T, KB>(gxp + (op * p.stride_h + off_h) * p.W + off_w, p.stride_w, gr, wv, qr.lo, qr.hi);
      }
    }
  }
}

template <class T>
void direct_backward_data(const ConvParams& p, const T* gy, const T* w, T* gx) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), HW = p.H * p.W, PQ = p.P * p.Q;
  Buffer<TapRange> rr(p.R), sr(p.S);
  for (index_t r = 0; r < p.R; ++r) rr[r] = tap_range(p.H, p.P, p.stride_h, r * p.dil_h - p.pad_h);
  for (index_t s = 0; s < p.S; ++s) sr[s] = tap_range(p.W, p.Q, p.stride_w, s * p.dil_w - p.pad_w);
  const bool big = p.flops() > 1e5;
#pragma omp parallel for collapse(2) schedule(static) if (big)
  for (index_t n = 0; n < p.N; ++n)
    for (index_t c = 0; c < p.C; ++c) {
      const index_t g = c / Cg, cl = c % Cg;
      T* gxp = gx + (n * p.C + c) * HW;
      std::fill(gxp, gxp + HW, T(0));
      const T* gy_n = gy + n * p.K * PQ;
      index_t k = g * Kg;
      const index_t k_end = k + Kg;
      for (; k + 4 <= k_end; k += 4) data_block<T, 4>(p, gy_n, w, k, cl, gxp, rr, sr);
      for (; k < k_end; ++k) data_block<T, 1>(p, gy_n, w, k, cl, gxp, rr, sr);
    }
}

// True when every value of a[0, n) is finite (no NaN, no Inf).
template <class T>
bool all_finite(const T* a, index_t n) {
  T z = T(0);
#pragma omp simd reduction(+ : z)
  for (index_t i = 0; i < n; ++i) z += a[i] * T(0);  // 0 for finite values, NaN for NaN/Inf
  return z == T(0);
}

// sum of grad_y * 0 over the outputs of plane gk (P x Q) outside [pr) x [qr): those outputs
// read tap (r, s) from the zero padding, which the kernel skips. The reference multiplies them
// (IEEE: NaN * 0 and Inf * 0 are NaN), so a non-finite grad_y there makes the tap's gradient
// NaN; for finite grad_y the sum is an exact 0.
template <class T>
T padding_products(const T* gk, index_t P, index_t Q, TapRange pr, TapRange qr) {
  T z = T(0);
  for (index_t op = 0; op < P; ++op) {
    const T* gr = gk + op * Q;
    const bool row_inside = op >= pr.lo && op < pr.hi;
    for (index_t q = 0; q < Q; ++q)
      if (!row_inside || q < qr.lo || q >= qr.hi) z += gr[q] * T(0);
  }
  return z;
}

template <class T>
void direct_backward_weight(const ConvParams& p, const T* gy, const T* x, T* gw) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), HW = p.H * p.W, PQ = p.P * p.Q, RS = p.R * p.S;
  const bool big = p.flops() > 1e5;
  // Finite grad_y (the usual case): the padding's products are zeros and are skipped.
  const bool gy_finite = all_finite(gy, p.N * p.K * PQ);
#pragma omp parallel for collapse(2) schedule(static) if (big)
  for (index_t k = 0; k < p.K; ++k)
    for (index_t cl = 0; cl < Cg; ++cl) {
      const index_t c = (k / Kg) * Cg + cl;
      for (index_t r = 0; r < p.R; ++r) {
        const index_t off_h = r * p.dil_h - p.pad_h;
        const TapRange pr = tap_range(p.H, p.P, p.stride_h, off_h);
        for (index_t s = 0; s < p.S; ++s) {
          const index_t off_w = s * p.dil_w - p.pad_w, sw = p.stride_w;
          const TapRange qr = tap_range(p.W, p.Q, sw, off_w);
          T acc = T(0);
          for (index_t n = 0; n < p.N; ++n) {
            const T* xp = x + (n * p.C + c) * HW;
            const T* gk = gy + (n * p.K + k) * PQ;
            for (index_t op = pr.lo; op < pr.hi; ++op) {
              const T* xr = xp + (op * p.stride_h + off_h) * p.W + off_w;
              const T* gr = gk + op * p.Q;
              T dot = T(0);
#pragma omp simd reduction(+ : dot)
              for (index_t q = qr.lo; q < qr.hi; ++q) dot += gr[q] * xr[q * sw];
              acc += dot;
            }
            if (!gy_finite) acc += padding_products(gk, p.P, p.Q, pr, qr);
          }
          gw[(k * Cg + cl) * RS + r * p.S + s] = acc;
        }
      }
    }
}

}  // namespace

// ============================== entry point =========================================

index_t conv2d_direct_workspace_bytes(const ConvParams&, DType) { return 0; }

template <class T>
void conv2d_direct(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, void*) {
  check_conv_params(p);
  if (p.N == 0) return;
  if (p.C_per_group() == 1)
    conv_depthwise(p, x, w, bias, y);
  else if (p.is_pointwise() && (p.P - 1) * p.stride_h < p.H && (p.Q - 1) * p.stride_w < p.W)
    conv_pointwise(p, x, w, bias, y);  // (the second test holds today by check_conv_params;
                                       // it keeps bottom/right padding rows off this path)
  else
    conv_general(p, x, w, bias, y);
}

template <class T>
void conv2d_direct_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x) {
  check_conv_params(p);
  if (p.N == 0) return;
  direct_backward_data(p, grad_y, w, grad_x);
}

template <class T>
void conv2d_direct_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w) {
  check_conv_params(p);
  direct_backward_weight(p, grad_y, x, grad_w);  // N == 0: every sum is empty, grad_w = 0
}

template void conv2d_direct_backward_data<float>(const ConvParams&, const float*, const float*, float*);
template void conv2d_direct_backward_data<double>(const ConvParams&, const double*, const double*, double*);
template void conv2d_direct_backward_weight<float>(const ConvParams&, const float*, const float*, float*);
template void conv2d_direct_backward_weight<double>(const ConvParams&, const double*, const double*, double*);

template void conv2d_direct<float>(const ConvParams&, const float*, const float*, const float*, float*,
                                   void*);
template void conv2d_direct<double>(const ConvParams&, const double*, const double*, const double*, double*,
                                    void*);

}  // namespace fastconv::cpu::FC_ISA
