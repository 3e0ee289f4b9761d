// pool2d.cpp: max / average / Lp / adaptive pooling of NCHW planes with the semantics of
// torch.nn.functional's CPU kernels. Compiled once per ISA (see kernels.h): the code is
// portable C++ vectorised along the output row (`#pragma omp simd`, stride-1/stride-2
// loads), which each ISA's flags turn into SSE2, AVX2 or AVX-512 code; only the
// global-average reduction uses intrinsics (guarded, with a portable fallback).
//
//   x is (N, C, H, W); y and indices are (N, C, P, Q); indices are flat into each H*W plane.
//   max: NaN wins (a NaN in the window gives NaN and, as torch, the index of the window's
//        LAST NaN in row-major order), else the first maximum; a dilated window with no
//        tap inside the input gives -inf and the index of its first tap past the padding.
//   avg: divisor = divisor_override if non-zero, else the window clipped to the padded
//        input (count_include_pad), else the number of taps inside the input.
//   Lp:  (avg(x^p) * R*S)^(1/p) (torch's formula; its sign(out)*relu(|out|) is the
//        identity); p = +inf is the max of |x|, p = -inf the min of |x|.
//   adaptive: window o is [floor(o*in/out), ceil((o+1)*in/out)), as torch.
//   weighted (distance-weighted average): sum of w[r][s] * x over the taps inside the input,
//        divided (normalize) by the weight of the taps avg counts; see the section below.
//        Its windows read zero-padded rows (finite weights only: checked), and its backward
//        is a gather: grad_y on the stride grid correlated with the flipped window.
//
// How: a work item is one output row of one plane (OpenMP over all of them). Max and sum
// are separable, so the window's rows are first combined into a row buffer, then a
// horizontal pass over the interior columns (every tap inside the input) runs with fast
// paths for 3-wide stride 2 (even/odd columns), 2-wide stride 2 and stride 1; the few
// border columns run scalar. Max with indices is not separable (ties must pick the first
// tap in row-major order), so it scans the taps in row-major order, vectorised over the
// output row (3x3/2 keeps its running max and index in registers). Global average pooling
// (adaptive 1x1) is a plain reduction per plane.
// Backward (grad_y (N, C, P, Q) -> grad_x (N, C, H, W), overwritten), one plane per work
// item, so windows that overlap never race:
//   max: grad_x[plane][indices[o]] += grad_y[o] (the forward's indices; adaptive too); a
//        window with no tap inside the input (its y is -inf) passes no gradient.
//   avg: each window's grad_y / divisor is added to its taps inside the input: the row's
//        windows are first summed into a row buffer, which is then added to each input row
//        the windows cover (separable, as the forward).
//   Lp:  torch's autograd of (sign(a)*relu(|a|)*R*S)^(1/p), a = avg(x^p):
//        grad_x = p*x^(p-1) * sum over windows of grad_y * (1/p)*u^(1/p-1)*R*S / divisor,
//        u = y^p, written with y as grad_y*R*S/divisor * y^(1-p); a window with u == 0
//        passes no gradient (relu's mask), as torch. p = +-inf: grad_y*sign(x) to the
//        window's first max of |x| (first min for -inf), as torch's max_pool2d of |x|.
// Limits: Lp calls std::pow per element unless p is 1, 2 or +-inf.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "cpu/isa_buffer.h"
#include "cpu/kernels.h"
#include "cpu/partial_avx2.h"
#include "errors.h"

#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
// Output rows of CNN pooling are short (7..112): 16-lane vectors leave most of a row to the
// epilogue, and stride-2 deinterleaves cost more in 512 bits. 256-bit vectors with the
// AVX-512 instruction set (masks, more registers) measured faster on every layer.
#pragma GCC target("prefer-vector-width=256")
#endif

// Helpers live in an anonymous namespace inside the per-ISA namespace: each ISA's copy is
// private to its object file (no ODR clash between copies compiled with different flags).
namespace fastconv::cpu::FC_ISA {
namespace {

// ---- geometry of one spatial axis ----------------------------------------------------
// For output o the taps inside the input are first[o] + j*dil, j < count[o]; padded[o] is
// the window clipped to the padded input (the count_include_pad divisor). Outputs in
// [lo, hi) have every tap inside the input and regular windows (k, stride, pad, dil).
struct Axis {
  index_t k = 1, stride = 1, pad = 0, dil = 1;
  index_t lo = 0, hi = 0;
  Buffer<index_t> first, count, padded;
};

Axis make_axis(index_t in, index_t out, index_t k, index_t stride, index_t pad, index_t dil, bool adaptive) {
  Axis a;
  a.first.resize(out);
  a.count.resize(out);
  a.padded.resize(out);
  if (adaptive && in % out == 0) {  // torch's adaptive windows are then regular ones
    adaptive = false;
    k = stride = in / out;
    pad = 0;
    dil = 1;
  }
  if (adaptive) {  // windows of varying size: no interior, all "border" (scalar)
    for (index_t o = 0; o < out; ++o) {
      const index_t s = o * in / out, e = ((o + 1) * in + out - 1) / out;
      a.first[o] = s;
      a.count[o] = a.padded[o] = e - s;
    }
    return a;
  }
  a.k = k, a.stride = stride, a.pad = pad, a.dil = dil;
  const index_t span = (k - 1) * dil + 1;
  for (index_t o = 0; o < out; ++o) {
    const index_t s = o * stride - pad;
    const index_t f = s >= 0 ? s : s + (-s + dil - 1) / dil * dil;  // first tap >= 0 (torch's loop)
    const index_t end = std::min(s + span, in);
    a.first[o] = f;
    a.count[o] = f < end ? (end - 1 - f) / dil + 1 : 0;
    a.padded[o] = std::min(s + span, in + pad) - s;
  }
  const index_t lo = (pad + stride - 1) / stride;                     // o*stride - pad >= 0
  const index_t hi = in - span + pad >= 0 ? (in - span + pad) / stride + 1 : 0;  // ... + span <= in
  a.lo = std::min(lo, out);
  a.hi = std::max(a.lo, std::min(hi, out));
  return a;
}

// ---- reductions -----------------------------------------------------------------------
// NaN-sticky max: once the running value is NaN it stays NaN (v > NaN is false).
template <class T>
inline T max_nan(T m, T v) {
  return (v > m || v != v) ? v : m;
}

struct MaxOp {
  template <class T> static T init() { return -std::numeric_limits<T>::infinity(); }
  template <class T> static T apply(T a, T b) { return max_nan(a, b); }
};
struct SumOp {
  template <class T> static T init() { return T(0); }
  template <class T> static T apply(T a, T b) { return a + b; }
};

// t[w] = Op over the rows h0 + j*dh (j < n, n >= 2) of the plane xp, for all W columns.
template <class Op, class T>
void combine_rows(const T* xp, index_t W, index_t h0, index_t dh, index_t n, T* t) {
  const T* r0 = xp + h0 * W;
  const T* r1 = r0 + dh * W;
  index_t j = 2;
  if (n >= 3) {  // three rows in one pass: the 3x3 case never re-reads t
    const T* r2 = r1 + dh * W;
#pragma omp simd
    for (index_t w = 0; w < W; ++w) t[w] = Op::apply(Op::apply(r0[w], r1[w]), r2[w]);
    j = 3;
  } else {
#pragma omp simd
    for (index_t w = 0; w < W; ++w) t[w] = Op::apply(r0[w], r1[w]);
  }
  for (; j < n; ++j) {
    const T* r = xp + (h0 + j * dh) * W;
#pragma omp simd
    for (index_t w = 0; w < W; ++w) t[w] = Op::apply(t[w], r[w]);
  }
}

// y[q] = Op over the taps of column window q of the row t, for interior q in [lo, hi).
template <class Op, class T>
void horizontal_interior(const Axis& a, const T* t, T* y) {
  const index_t lo = a.lo, hi = a.hi, S = a.k, sw = a.stride, pw = a.pad, dw = a.dil;
  if (lo >= hi) return;
  if (S == 3 && sw == 2 && dw == 1) {  // 3x3/2 (ResNet stem): even/odd column deinterleave
#pragma omp simd
    for (index_t q = lo; q < hi; ++q) {
      const index_t b = 2 * q - pw;
      y[q] = Op::apply(Op::apply(t[b], t[b + 1]), t[b + 2]);
    }
  } else if (S == 2 && sw == 2 && dw == 1) {  // 2x2/2: pairs of columns
#pragma omp simd
    for (index_t q = lo; q < hi; ++q) {
      const index_t b = 2 * q - pw;
      y[q] = Op::apply(t[b], t[b + 1]);
    }
  } else if (sw == 1) {  // stride 1: S contiguous passes over the output row (in L1)
    const T* b = t + (lo - pw);
    T* o = y + lo;
    const index_t n = hi - lo;
#pragma omp simd
    for (index_t i = 0; i < n; ++i) o[i] = b[i];
    for (index_t s = 1; s < S; ++s) {
      const T* bs = b + s * dw;
#pragma omp simd
      for (index_t i = 0; i < n; ++i) o[i] = Op::apply(o[i], bs[i]);
    }
  } else {  // any stride/dilation: strided loads
#pragma omp simd
    for (index_t q = lo; q < hi; ++q) y[q] = t[q * sw - pw];
    for (index_t s = 1; s < S; ++s) {
      const index_t c = s * dw - pw;
#pragma omp simd
      for (index_t q = lo; q < hi; ++q) y[q] = Op::apply(y[q], t[q * sw + c]);
    }
  }
}

// Border (or adaptive) columns q in [q0, q1): scalar over the taps inside the input.
template <class Op, class T>
void horizontal_scalar(const Axis& a, index_t q0, index_t q1, const T* t, T* y) {
  for (index_t q = q0; q < q1; ++q) {
    T m = Op::template init<T>();
    const T* tq = t + a.first[q];
    for (index_t j = 0; j < a.count[q]; ++j) m = Op::apply(m, tq[j * a.dil]);
    y[q] = m;
  }
}

// One output row y (Q values) of plane xp: Op over each window (no division yet).
// t is a scratch row of W values.
template <class Op, class T>
void pool_row(const Axis& ah, const Axis& aw, index_t op, const T* xp, index_t W, index_t Q, T* t, T* y) {
  const index_t n = ah.count[op], h0 = ah.first[op];
  if (n == 0) {  // dilated window entirely in the padding (max only): torch's -inf
    std::fill(y, y + Q, Op::template init<T>());
    return;
  }
  const T* row = xp + h0 * W;
  if (n > 1) {
    combine_rows<Op>(xp, W, h0, ah.dil, n, t);
    row = t;
  }
  horizontal_scalar<Op>(aw, 0, aw.lo, row, y);
  horizontal_interior<Op>(aw, row, y);
  horizontal_scalar<Op>(aw, aw.hi, Q, row, y);
}

// One output row of max pooling with indices: taps in row-major order, torch's update rule
// (v > m || isnan(v)), so ties keep the first maximum and the last NaN wins.
template <class T>
void max_row_indices(const Axis& ah, const Axis& aw, index_t op, const T* xp, index_t W, index_t Q, T* y,
                     std::int64_t* ind) {
  const index_t nh = ah.count[op], h0 = ah.first[op], dh = ah.dil;
  const T ninf = -std::numeric_limits<T>::infinity();
  auto one = [&](index_t q) {
    T m = ninf;
    index_t arg = h0 * W + aw.first[q];
    for (index_t j = 0; j < nh; ++j) {
      const index_t ih = h0 + j * dh;
      for (index_t i = 0; i < aw.count[q]; ++i) {
        const index_t at = ih * W + aw.first[q] + i * aw.dil;
        const T v = xp[at];
        if (v > m || v != v) m = v, arg = at;
      }
    }
    y[q] = m;
    ind[q] = arg;
  };
  for (index_t q = 0; q < aw.lo; ++q) one(q);
  for (index_t q = aw.hi; q < Q; ++q) one(q);
  const index_t lo = aw.lo, hi = aw.hi, sw = aw.stride, pw = aw.pad, dw = aw.dil;
  if (lo >= hi) return;
#pragma omp simd
  for (index_t q = lo; q < hi; ++q) {
    y[q] = ninf;
    ind[q] = h0 * W + q * sw - pw;
  }
  if (aw.k == 3 && sw == 2 && dw == 1 && nh == 3) {
    // 3x3/2 (stem), all three rows inside: the running max and index stay in registers
    // across the 9 taps (fixed trip counts, so the q loop vectorises).
    const T* r0 = xp + h0 * W;
    const index_t rs = dh * W;
#pragma omp simd
    for (index_t q = lo; q < hi; ++q) {
      const index_t c0 = 2 * q - pw;
      T m = ninf;
      index_t arg = h0 * W + c0;
      for (index_t j = 0; j < 3; ++j) {
        const index_t at = h0 * W + j * rs + c0;
        for (index_t s = 0; s < 3; ++s) {
          const T v = r0[j * rs + c0 + s];
          const bool take = v > m || v != v;
          m = take ? v : m;
          arg = take ? at + s : arg;
        }
      }
      y[q] = m;
      ind[q] = arg;
    }
    return;
  }
  for (index_t j = 0; j < nh; ++j) {
    const index_t ih = h0 + j * dh;
    const T* r = xp + ih * W;
    for (index_t s = 0; s < aw.k; ++s) {
      const index_t c = s * dw - pw, base = ih * W + c;
#pragma omp simd
      for (index_t q = lo; q < hi; ++q) {
        const T v = r[q * sw + c];
        const bool take = v > y[q] || v != v;
        y[q] = take ? v : y[q];
        ind[q] = take ? base + q * sw : ind[q];
      }
    }
  }
}

// Runs fn(plane, output row, scratch row of W) over every output row of every plane.
template <class T, class Fn>
void for_each_row(const PoolParams& p, Fn fn) {
  const index_t items = p.N * p.C * p.P;
  const bool big = items * p.Q * p.R * p.S > 32768;  // below this, threads cost more than they save
#pragma omp parallel if (big)
  {
    Buffer<T> t(p.W);
#pragma omp for schedule(static)
    for (index_t item = 0; item < items; ++item) fn(item / p.P, item % p.P, t.data());
  }
}

// Sum of n contiguous values: the global-average reduction. GCC's own `omp simd reduction`
// code spends most of its time in the loop epilogue for the short planes of CNNs (7x7), so
// AVX-512 and AVX2 use one accumulator register and a masked load for the tail; the
// fallback is the plain reduction.
#if defined(__AVX512F__)
// Horizontal sums with zero-masked extracts: GCC 12's unmasked ones (and _mm512_reduce_add_*)
// start from an "undefined" register and trip -Wmaybe-uninitialized.
inline float hsum(__m512 v) {
  const __m256 h =
      _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xFF, v, 0), _mm512_maskz_extractf32x8_ps(0xFF, v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
inline double hsum(__m512d v) {
  const __m256d h =
      _mm256_add_pd(_mm512_maskz_extractf64x4_pd(0xF, v, 0), _mm512_maskz_extractf64x4_pd(0xF, v, 1));
  const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}
inline float plane_sum(const float* p, index_t n) {
  __m512 acc = _mm512_setzero_ps();
  index_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(p + i));
  if (i < n) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(__mmask16((1u << (n - i)) - 1), p + i));
  return hsum(acc);
}
inline double plane_sum(const double* p, index_t n) {
  __m512d acc = _mm512_setzero_pd();
  index_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm512_add_pd(acc, _mm512_loadu_pd(p + i));
  if (i < n) acc = _mm512_add_pd(acc, _mm512_maskz_loadu_pd(__mmask8((1u << (n - i)) - 1), p + i));
  return hsum(acc);
}
#elif defined(__AVX2__)
inline float plane_sum(const float* p, index_t n) {
  __m256 acc = _mm256_setzero_ps();
  index_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(p + i));
  if (i < n) acc = _mm256_add_ps(acc, load_first_n(p + i, int(n - i)));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
inline double plane_sum(const double* p, index_t n) {
  __m256d acc = _mm256_setzero_pd();
  index_t i = 0;
  for (; i + 4 <= n; i += 4) acc = _mm256_add_pd(acc, _mm256_loadu_pd(p + i));
  if (i < n) acc = _mm256_add_pd(acc, load_first_n(p + i, int(n - i)));
  const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}
#else
template <class T>
inline T plane_sum(const T* p, index_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (index_t i = 0; i < n; ++i) s += p[i];
  return s;
}
#endif

// Adaptive average to 1x1: the mean of each contiguous plane.
template <class T>
void global_avg(const PoolParams& p, const T* x, T* y) {
  const index_t planes = p.N * p.C, hw = p.H * p.W;
#pragma omp parallel for schedule(static) if (planes * hw > 32768)
  for (index_t plane = 0; plane < planes; ++plane) y[plane] = plane_sum(x + plane * hw, hw) / T(hw);
}

// Divisor of the columns (times the row's, below) for average pooling.
template <class T>
Buffer<T> column_divisors(const PoolParams& p, const Axis& aw) {
  Buffer<T> d(p.Q, T(1));
  if (p.divisor_override == 0)
    for (index_t q = 0; q < p.Q; ++q) d[q] = T(p.count_include_pad ? aw.padded[q] : aw.count[q]);
  return d;
}

template <class T>
T row_divisor(const PoolParams& p, const Axis& ah, index_t op) {
  if (p.divisor_override != 0) return T(p.divisor_override);
  return T(p.count_include_pad ? ah.padded[op] : ah.count[op]);
}

// ---- backward helpers --------------------------------------------------------------------

// Adds v[q] to every tap inside the input of window (op, q), for all q, into the plane gxp.
// t is a scratch row of W values.
template <class T>
void scatter_window_row(const Axis& ah, const Axis& aw, index_t op, const T* v, index_t W, index_t Q, T* t,
                        T* gxp) {
  const index_t nh = ah.count[op];
  if (nh == 0) return;
  std::fill(t, t + W, T(0));
  for (index_t q = 0; q < Q; ++q) {
    T* tq = t + aw.first[q];
    for (index_t i = 0; i < aw.count[q]; ++i) tq[i * aw.dil] += v[q];
  }
  for (index_t j = 0; j < nh; ++j) {
    T* row = gxp + (ah.first[op] + j * ah.dil) * W;
#pragma omp simd
    for (index_t w = 0; w < W; ++w) row[w] += t[w];
  }
}

// torch's sign: -1, 0, +1, NaN for NaN.
template <class T>
inline T sign_of(T v) {
  return v > 0 ? T(1) : v < 0 ? T(-1) : v;
}

bool pool_parallel(const PoolParams& p) { return p.N * p.C * (p.H * p.W + p.P * p.Q) > 32768; }

}  // namespace

// ---- entry points ---------------------------------------------------------------------

template <class T>
void max_pool2d(const PoolParams& p, const T* x, T* y, std::int64_t* indices) {
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h, p.adaptive);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w, p.adaptive);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q;
  if (indices) {
    for_each_row<T>(p, [&](index_t plane, index_t op, T*) {
      const index_t o = plane * PQ + op * p.Q;
      max_row_indices(ah, aw, op, x + plane * HW, p.W, p.Q, y + o, indices + o);
    });
  } else {
    for_each_row<T>(p, [&](index_t plane, index_t op, T* t) {
      pool_row<MaxOp>(ah, aw, op, x + plane * HW, p.W, p.Q, t, y + plane * PQ + op * p.Q);
    });
  }
}

template <class T>
void avg_pool2d(const PoolParams& p, const T* x, T* y) {
  if (p.adaptive && p.P == 1 && p.Q == 1) return global_avg(p, x, y);
  // Average pooling has no dilation (torch's avg_pool2d takes none).
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, p.adaptive);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, p.adaptive);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q;
  if (ah.k == 2 && aw.k == 2 && ah.stride == 2 && aw.stride == 2 && ah.pad == 0 && aw.pad == 0 &&
      ah.lo == 0 && ah.hi == p.P && aw.lo == 0 && aw.hi == p.Q) {
    // 2x2/2 with every window inside (LeNet-5's subsampling): whole planes, one pass per
    // output row, the sums in pool_row's order (rows first, then the column pair). Every
    // window has the same divisor d; a power of two (4, unless overridden) multiplies by
    // 1/d, which is exactly the division (LeNet-5's 6x28x28 planes, batch 64: ~30 % less time).
    const T d = p.divisor_override != 0 ? T(p.divisor_override) : T(4);
    int exponent = 0;
    const bool exact_inverse = std::frexp(d, &exponent) == T(0.5);
    const T inv = T(1) / d;
    const index_t planes = p.N * p.C;
#pragma omp parallel for schedule(static) if (planes * HW > 32768)
    for (index_t plane = 0; plane < planes; ++plane)
      for (index_t op = 0; op < p.P; ++op) {
        const T* r0 = x + plane * HW + 2 * op * p.W;
        const T* r1 = r0 + p.W;
        T* yr = y + plane * PQ + op * p.Q;
        if (exact_inverse) {
#pragma omp simd
          for (index_t q = 0; q < p.Q; ++q)
            yr[q] = ((r0[2 * q] + r1[2 * q]) + (r0[2 * q + 1] + r1[2 * q + 1])) * inv;
        } else {
#pragma omp simd
          for (index_t q = 0; q < p.Q; ++q)
            yr[q] = ((r0[2 * q] + r1[2 * q]) + (r0[2 * q + 1] + r1[2 * q + 1])) / d;
        }
      }
    return;
  }
  const Buffer<T> cdiv = column_divisors<T>(p, aw);
  for_each_row<T>(p, [&](index_t plane, index_t op, T* t) {
    T* yr = y + plane * PQ + op * p.Q;
    pool_row<SumOp>(ah, aw, op, x + plane * HW, p.W, p.Q, t, yr);
    const T dh = row_divisor<T>(p, ah, op);
    const T* cd = cdiv.data();
#pragma omp simd
    for (index_t q = 0; q < p.Q; ++q) yr[q] = yr[q] / (dh * cd[q]);  // division, as torch
  });
}

template <class T>
void lp_pool2d(const PoolParams& p, const T* x, T* y) {
  const double np = p.norm_type;
  const bool to_inf = std::isinf(np), neg = np < 0;
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, p.adaptive);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, p.adaptive);
  const Buffer<T> cdiv = column_divisors<T>(p, aw);
  const T pw = T(np), inv = T(1.0 / np), full = T(p.R * p.S);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, planes = p.N * p.C;
  // x^p is computed once per plane (windows overlap) into a per-thread buffer.
#pragma omp parallel if (planes * HW > 32768)
  {
    Buffer<T> xq(HW), t(p.W);
#pragma omp for schedule(static)
    for (index_t plane = 0; plane < planes; ++plane) {
      const T* xp = x + plane * HW;
      T* b = xq.data();
      if (to_inf) {  // torch: max_pool(|x|), or -max_pool(-|x|) for -inf
        const T sign = neg ? T(-1) : T(1);
#pragma omp simd
        for (index_t i = 0; i < HW; ++i) b[i] = sign * std::fabs(xp[i]);
      } else if (np == 1) {
        std::copy(xp, xp + HW, b);
      } else if (np == 2) {
#pragma omp simd
        for (index_t i = 0; i < HW; ++i) b[i] = xp[i] * xp[i];
      } else {
        for (index_t i = 0; i < HW; ++i) b[i] = std::pow(xp[i], pw);
      }
      for (index_t op = 0; op < p.P; ++op) {
        T* yr = y + plane * PQ + op * p.Q;
        if (to_inf) {
          pool_row<MaxOp>(ah, aw, op, b, p.W, p.Q, t.data(), yr);
          if (neg)
            for (index_t q = 0; q < p.Q; ++q) yr[q] = -yr[q];
          continue;
        }
        pool_row<SumOp>(ah, aw, op, b, p.W, p.Q, t.data(), yr);
        const T dh = row_divisor<T>(p, ah, op);
        for (index_t q = 0; q < p.Q; ++q) {
          const T v = yr[q] / (dh * cdiv[q]) * full;
          yr[q] = np == 2 ? std::sqrt(v) : np == 1 ? v : std::pow(v, inv);
        }
      }
    }
  }
}

// ---- backward entry points ------------------------------------------------------------

template <class T>
void max_pool2d_backward(const PoolParams& p, const T* grad_y, const std::int64_t* indices, T* grad_x) {
  // A dilated window with no tap inside the input gave -inf whatever x is: its gradient goes
  // nowhere (its forward index lies past the plane; torch's kernel writes out of bounds there).
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h, p.adaptive);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w, p.adaptive);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, planes = p.N * p.C;
  index_t bad = 0;  // an index outside its plane (counted; reported after the loop)
#pragma omp parallel for schedule(static) if (pool_parallel(p)) reduction(+ : bad)
  for (index_t plane = 0; plane < planes; ++plane) {
    T* g = grad_x + plane * HW;
    std::fill(g, g + HW, T(0));
    const T* gy = grad_y + plane * PQ;
    const std::int64_t* ind = indices + plane * PQ;
    for (index_t op = 0; op < p.P; ++op) {
      if (ah.count[op] == 0) continue;
      for (index_t q = 0; q < p.Q; ++q) {
        const std::int64_t i = ind[op * p.Q + q];
        if (aw.count[q] == 0) continue;
        if (i < 0 || i >= HW) {
          ++bad;
          continue;
        }
        g[i] += gy[op * p.Q + q];
      }
    }
  }
  FC_ISA_CHECK(bad == 0, "max_pool2d_backward: %lld indices lie outside [0, H*W) = [0, %lld)", (long long)bad,
               (long long)HW);
}

template <class T>
void avg_pool2d_backward(const PoolParams& p, const T* grad_y, T* grad_x) {
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, p.adaptive);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, p.adaptive);
  const Buffer<T> cdiv = column_divisors<T>(p, aw);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, planes = p.N * p.C;
#pragma omp parallel if (pool_parallel(p))
  {
    Buffer<T> t(p.W), v(p.Q);
#pragma omp for schedule(static)
    for (index_t plane = 0; plane < planes; ++plane) {
      T* gxp = grad_x + plane * HW;
      std::fill(gxp, gxp + HW, T(0));
      for (index_t op = 0; op < p.P; ++op) {
        const T* gr = grad_y + plane * PQ + op * p.Q;
        const T dh = row_divisor<T>(p, ah, op);
        for (index_t q = 0; q < p.Q; ++q) v[q] = gr[q] / (dh * cdiv[q]);  // the forward's divisor
        scatter_window_row(ah, aw, op, v.data(), p.W, p.Q, t.data(), gxp);
      }
    }
  }
}

template <class T>
void lp_pool2d_backward(const PoolParams& p, const T* grad_y, const T* x, const T* y, T* grad_x) {
  const double np = p.norm_type;
  const bool to_inf = std::isinf(np);
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, p.adaptive);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, p.adaptive);
  const Buffer<T> cdiv = column_divisors<T>(p, aw);
  const T full = T(p.R * p.S), one_minus_p = T(1.0 - np), p_minus_one = T(np - 1.0);
  const T sgn = np < 0 ? T(-1) : T(1);  // +-inf: the max of sgn*|x|
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, planes = p.N * p.C;
#pragma omp parallel if (pool_parallel(p))
  {
    Buffer<T> t(p.W), v(p.Q);
#pragma omp for schedule(static)
    for (index_t plane = 0; plane < planes; ++plane) {
      T* gxp = grad_x + plane * HW;
      const T* xp = x + plane * HW;
      const T* yp = y + plane * PQ;
      const T* gp = grad_y + plane * PQ;
      std::fill(gxp, gxp + HW, T(0));
      if (to_inf) {  // torch's max_pool2d(|x|) backward, times d|x|/dx = sign(x)
        for (index_t op = 0; op < p.P; ++op)
          for (index_t q = 0; q < p.Q; ++q) {
            T m = -std::numeric_limits<T>::infinity();
            index_t arg = ah.first[op] * p.W + aw.first[q];
            for (index_t j = 0; j < ah.count[op]; ++j)
              for (index_t i = 0; i < aw.count[q]; ++i) {
                const index_t at = (ah.first[op] + j) * p.W + aw.first[q] + i;
                const T val = sgn * std::fabs(xp[at]);
                if (val > m || val != val) m = val, arg = at;
              }
            gxp[arg] += gp[op * p.Q + q] * sign_of(xp[arg]);
          }
        continue;
      }
      // Sum over windows of grad_y * R*S / divisor * y^(1-p) (0 where u = y^p is 0) ...
      for (index_t op = 0; op < p.P; ++op) {
        const T dh = row_divisor<T>(p, ah, op);
        for (index_t q = 0; q < p.Q; ++q) {
          const T yv = yp[op * p.Q + q];
          const bool u_zero = np > 0 ? yv == T(0) : std::isinf(yv);
          const T ypow = np == 2 ? T(1) / yv : np == 1 ? T(1) : std::pow(yv, one_minus_p);
          v[q] = u_zero ? T(0) : gp[op * p.Q + q] * (full / (dh * cdiv[q])) * ypow;
        }
        scatter_window_row(ah, aw, op, v.data(), p.W, p.Q, t.data(), gxp);
      }
      // ... times x^(p-1), everywhere (as torch: 0 * inf is NaN where x^(p-1) is infinite).
      if (np == 2) {
#pragma omp simd
        for (index_t i = 0; i < HW; ++i) gxp[i] *= xp[i];
      } else if (np != 1) {
        for (index_t i = 0; i < HW; ++i) gxp[i] *= std::pow(xp[i], p_minus_one);
      }
    }
  }
}

// ---- distance-weighted average ------------------------------------------------------------
// y = sum over the window's taps inside the input of w[r][s] * x (zero padding), divided (with
// p.normalize) by the sum of the weights of the taps avg_pool2d counts: the window clipped to
// the padded input (count_include_pad), else the taps inside the input. w is the (R, S) window
// row-major, or, with p.separable, its two factors: wv (R) then wh (S), w[r][s] = wv[r]*wh[s].
// Separable windows (every Gaussian) take a vertical then a horizontal pass, R + S
// multiply-adds per output instead of R*S; the passes run in avg_pool2d's order, so a window of
// ones gives avg_pool2d's result bit for bit (forward and backward; multiplying by 1 is exact).
namespace {

// Window coordinate of the first counted tap of output o, and how many taps are counted.
inline void counted_taps(const Axis& a, index_t o, bool include_pad, index_t& first, index_t& n) {
  const index_t start = o * a.stride - a.pad;  // >= -pad: the window starts inside the padded input
  first = include_pad ? 0 : a.first[o] - start;
  n = include_pad ? a.padded[o] : a.count[o];
}

// Per output along one axis: the sum of the factor f over the counted taps (separable windows).
template <class T>
Buffer<T> axis_weight_sums(const Axis& a, index_t out, const T* f, bool include_pad) {
  Buffer<T> d(out);
  for (index_t o = 0; o < out; ++o) {
    index_t b = 0, n = 0;
    counted_taps(a, o, include_pad, b, n);
    T sum = 0;
    for (index_t j = 0; j < n; ++j) sum += f[b + j];
    d[o] = sum;
  }
  return d;
}

// Per output (P x Q) of a 2-D window: the sum of w over the counted rectangle.
template <class T>
Buffer<T> window_weight_sums(const PoolParams& p, const Axis& ah, const Axis& aw, const T* w) {
  Buffer<T> d(p.P * p.Q), colsum(p.S);
  for (index_t op = 0; op < p.P; ++op) {
    index_t rb = 0, rn = 0;
    counted_taps(ah, op, p.count_include_pad, rb, rn);
    for (index_t s = 0; s < p.S; ++s) {
      T sum = 0;
      for (index_t j = 0; j < rn; ++j) sum += w[(rb + j) * p.S + s];
      colsum[s] = sum;
    }
    for (index_t q = 0; q < p.Q; ++q) {
      index_t sb = 0, sn = 0;
      counted_taps(aw, q, p.count_include_pad, sb, sn);
      T sum = 0;
      for (index_t i = 0; i < sn; ++i) sum += colsum[sb + i];
      d[op * p.Q + q] = sum;
    }
  }
  return d;
}

// Per output (P x Q): the normalised window's divisor, the weight of its counted taps (separable:
// the row factor's sum times the column factor's). The forward and the backward divide by it.
template <class T>
Buffer<T> window_divisors(const PoolParams& p, const Axis& ah, const Axis& aw, const T* w) {
  if (!p.separable) return window_weight_sums(p, ah, aw, w);
  const Buffer<T> rsum = axis_weight_sums(ah, p.P, w, p.count_include_pad);
  const Buffer<T> csum = axis_weight_sums(aw, p.Q, w + p.R, p.count_include_pad);
  Buffer<T> d(p.P * p.Q);
  for (index_t op = 0; op < p.P; ++op)
    for (index_t q = 0; q < p.Q; ++q) d[op * p.Q + q] = rsum[op] * csum[q];
  return d;
}

// out[i] = fin(sum over j < n of c[j] * in[i + j*step], i) for i < len, the taps summed first
// to last. Tap counts up to 7 keep the n products in registers (one load per tap, one store per
// output); more taps run pass by pass over out.
template <int K, class T, class Fin>
inline void taps_fixed(const T* in, index_t step, const T* c, index_t len, T* out, Fin fin) {
  T cc[K];
  for (int j = 0; j < K; ++j) cc[j] = c[j];
#pragma omp simd
  for (index_t i = 0; i < len; ++i) {
    T a = cc[0] * in[i];
    for (int j = 1; j < K; ++j) a += cc[j] * in[i + j * step];
    out[i] = fin(a, i);
  }
}
template <class T, class Fin>
void taps(const T* in, index_t step, const T* c, index_t n, index_t len, T* out, Fin fin) {
  switch (n) {
    case 1: return taps_fixed<1>(in, step, c, len, out, fin);
    case 2: return taps_fixed<2>(in, step, c, len, out, fin);
    case 3: return taps_fixed<3>(in, step, c, len, out, fin);
    case 4: return taps_fixed<4>(in, step, c, len, out, fin);
    case 5: return taps_fixed<5>(in, step, c, len, out, fin);
    case 6: return taps_fixed<6>(in, step, c, len, out, fin);
    case 7: return taps_fixed<7>(in, step, c, len, out, fin);
    default: break;
  }
  taps_fixed<7>(in, step, c, len, out, [](T a, index_t) { return a; });
  for (index_t j = 7; j < n; ++j) {
    const T* b = in + j * step;
    const T cj = c[j];
#pragma omp simd
    for (index_t i = 0; i < len; ++i) out[i] += cj * b[i];
  }
#pragma omp simd
  for (index_t i = 0; i < len; ++i) out[i] = fin(out[i], i);
}

// out[r * ostride] = fin(sum over j < n of c[j] * in[r * istride + j], r) for r < rows: one
// border column of a block, its taps (n of them, fixed for the column) unrolled for n <= 7.
template <int K, class T, class Fin>
inline void column_fixed(const T* in, index_t istride, const T* c, index_t rows, T* out, index_t ostride,
                         Fin fin) {
  T cc[K];
  for (int j = 0; j < K; ++j) cc[j] = c[j];
  for (index_t r = 0; r < rows; ++r) {
    const T* x = in + r * istride;
    T a = cc[0] * x[0];
    for (int j = 1; j < K; ++j) a += cc[j] * x[j];
    out[r * ostride] = fin(a, r);
  }
}
template <class T, class Fin>
void column_taps(const T* in, index_t istride, const T* c, index_t n, index_t rows, T* out, index_t ostride,
                 Fin fin) {
  switch (n) {
    case 1: return column_fixed<1>(in, istride, c, rows, out, ostride, fin);
    case 2: return column_fixed<2>(in, istride, c, rows, out, ostride, fin);
    case 3: return column_fixed<3>(in, istride, c, rows, out, ostride, fin);
    case 4: return column_fixed<4>(in, istride, c, rows, out, ostride, fin);
    case 5: return column_fixed<5>(in, istride, c, rows, out, ostride, fin);
    case 6: return column_fixed<6>(in, istride, c, rows, out, ostride, fin);
    case 7: return column_fixed<7>(in, istride, c, rows, out, ostride, fin);
    default: break;
  }
  for (index_t r = 0; r < rows; ++r) {
    const T* x = in + r * istride;
    T a = c[0] * x[0];
    for (index_t j = 1; j < n; ++j) a += c[j] * x[j];
    out[r * ostride] = fin(a, r);
  }
}

// out[i] = fin(sum over j < n of c[j] * in[i * stride + j], i) for i < len: a row of windows
// `stride` apart (taps() is stride 1). Stride 2 is fixed at compile time, so its loads are
// even/odd deinterleaves rather than gathers.
template <int K, class T, class Fin>
inline void stride2_taps_fixed(const T* in, const T* c, index_t len, T* out, Fin fin) {
  T cc[K];
  for (int j = 0; j < K; ++j) cc[j] = c[j];
#pragma omp simd
  for (index_t i = 0; i < len; ++i) {
    T a = cc[0] * in[2 * i];
    for (int j = 1; j < K; ++j) a += cc[j] * in[2 * i + j];
    out[i] = fin(a, i);
  }
}
template <class T, class Fin>
void strided_taps(const T* in, index_t stride, const T* c, index_t n, index_t len, T* out, Fin fin) {
  if (stride == 1) return taps(in, 1, c, n, len, out, fin);
  if (stride == 2) {
    switch (n) {
      case 1: return stride2_taps_fixed<1>(in, c, len, out, fin);
      case 2: return stride2_taps_fixed<2>(in, c, len, out, fin);
      case 3: return stride2_taps_fixed<3>(in, c, len, out, fin);
      case 4: return stride2_taps_fixed<4>(in, c, len, out, fin);
      case 5: return stride2_taps_fixed<5>(in, c, len, out, fin);
      default: break;
    }
  }
  for (index_t i = 0; i < len; ++i) {
    const T* x = in + i * stride;
    T a = c[0] * x[0];
    for (index_t j = 1; j < n; ++j) a += c[j] * x[j];
    out[i] = fin(a, i);
  }
}

// y[i] = sum over r < R, s < S of w[r*S + s] * x[i * stride + r*W + s], i < n (stride 1 or 2).
// Square windows of 2, 3, 5 and 7 run one pass with the R*S products in registers (sizes fixed
// at compile time: with a run-time row count GCC's vector code was 3-4x slower); other windows
// a pass per window row.
template <int K, int STRIDE, class T>
void window_2d_fixed(const T* x, index_t W, const T* w, index_t n, T* y) {
  T c[K * K];
  for (int j = 0; j < K * K; ++j) c[j] = w[j];
#pragma omp simd
  for (index_t i = 0; i < n; ++i) {
    T a = 0;
    for (int r = 0; r < K; ++r)
      for (int s = 0; s < K; ++s) a += c[r * K + s] * x[STRIDE * i + r * W + s];
    y[i] = a;
  }
}
template <int STRIDE, class T>
bool window_2d_square(const T* x, index_t W, const T* w, index_t K, index_t n, T* y) {
  switch (K) {
    case 2: return window_2d_fixed<2, STRIDE>(x, W, w, n, y), true;
    case 3: return window_2d_fixed<3, STRIDE>(x, W, w, n, y), true;
    case 5: return window_2d_fixed<5, STRIDE>(x, W, w, n, y), true;
    case 7: return window_2d_fixed<7, STRIDE>(x, W, w, n, y), true;
    default: return false;
  }
}
template <class T>
void window_2d(const T* x, index_t W, index_t stride, const T* w, index_t R, index_t S, index_t n, T* y) {
  if (R == S && stride == 1 && window_2d_square<1>(x, W, w, R, n, y)) return;
  if (R == S && stride == 2 && window_2d_square<2>(x, W, w, R, n, y)) return;
  for (index_t r = 0; r < R; ++r) {
    if (r == 0)
      strided_taps(x, stride, w, S, n, y, [](T a, index_t) { return a; });
    else
      strided_taps(x + r * W, stride, w + r * S, S, n, y, [y](T a, index_t i) { return y[i] + a; });
  }
}

// The width of a zero-padded row holding every column the Q windows read: column c is input
// column c - pad (zero outside the input).
inline index_t padded_width(const Axis& a, index_t Q) { return (Q - 1) * a.stride + a.k; }

// dst[i] = src[i], i < n, for short rows (7-112 values), inline: a memcpy call cost more than
// the copy, and GCC turns plain copy loops into memcpy calls. AVX-512: 64-byte moves, the last
// one masked; other ISAs: memcpy.
template <class T>
inline void copy_short_row(const T* src, index_t n, T* dst) {
#if defined(__AVX512F__)
  constexpr index_t L = 64 / sizeof(T);
  index_t i = 0;
  for (; i + L <= n; i += L) _mm512_storeu_si512(dst + i, _mm512_loadu_si512(src + i));
  if (i == n) return;
  if constexpr (sizeof(T) == 4) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_epi32(dst + i, m, _mm512_maskz_loadu_epi32(m, src + i));
  } else {
    const __mmask8 m = static_cast<__mmask8>((1u << (n - i)) - 1);
    _mm512_mask_storeu_epi64(dst + i, m, _mm512_maskz_loadu_epi64(m, src + i));
  }
#else
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
#endif
}

// Normalised windows other than ones run with the window scaled to sum 1, which is every
// interior output's divisor; the outputs whose windows reach past the input (border rows and
// columns) are then multiplied by corr = full sum / their divisor.
template <class T>
void correct_border(const Axis& ah, const Axis& aw, index_t Q, const T* corr, T* yp, index_t op0,
                    index_t op1) {
  for (index_t op = op0; op < op1; ++op) {
    T* yr = yp + op * Q;
    const T* cr = corr + op * Q;
    if (op < ah.lo || op >= ah.hi) {
#pragma omp simd
      for (index_t q = 0; q < Q; ++q) yr[q] *= cr[q];
      continue;
    }
    for (index_t q = 0; q < aw.lo; ++q) yr[q] *= cr[q];
    for (index_t q = aw.hi; q < Q; ++q) yr[q] *= cr[q];
  }
}

// How a normalised window is applied, forward and backward alike. A window of ones divides
// each output by its divisor (div: avg_pool2d's row divisor times column divisor, so the result
// is avg_pool2d's bit for bit). Any other window runs scaled to sum 1 (scaled), the interior
// outputs' divisor, and the outputs whose windows reach past the input are multiplied by
// corr = full sum / their divisor (null when there are none: count_include_pad without
// ceil_mode's partial windows). A weighted sum (normalize false) uses w as it is. Both passes
// read zero padding, which adds nothing only while every weight is finite: checked here, for
// the forward and the backward alike (Python refuses other windows first); op names the caller.
template <class T>
struct WindowNorm {
  Buffer<T> div, corr, scaled;
  const T* window = nullptr;  // what the passes use: w or scaled
};
template <class T>
WindowNorm<T> normalise_window(const PoolParams& p, const Axis& ah, const Axis& aw, const T* w,
                               const char* op) {
  FC_ISA_CHECK(
      std::all_of(w, w + (p.separable ? p.R + p.S : p.R * p.S), [](T v) { return std::isfinite(v); }),
      "%s: the window's weights must be finite", op);
  WindowNorm<T> n;
  n.window = w;
  if (!p.normalize) return n;
  Buffer<T> d = window_divisors(p, ah, aw, w);
  T full = 0;
  if (p.separable) {
    T sv = 0, sh = 0;
    for (index_t r = 0; r < p.R; ++r) sv += w[r];
    for (index_t s = 0; s < p.S; ++s) sh += w[p.R + s];
    full = sv * sh;
    if (std::all_of(w, w + p.R + p.S, [](T v) { return v == T(1); })) {
      n.div = std::move(d);
      return n;
    }
    n.scaled.resize(p.R + p.S);
    for (index_t r = 0; r < p.R; ++r) n.scaled[r] = w[r] / sv;
    for (index_t s = 0; s < p.S; ++s) n.scaled[p.R + s] = w[p.R + s] / sh;
  } else {
    for (index_t i = 0; i < p.R * p.S; ++i) full += w[i];
    n.scaled.resize(p.R * p.S);
    for (index_t i = 0; i < p.R * p.S; ++i) n.scaled[i] = w[i] / full;
  }
  n.window = n.scaled.data();
  const index_t PQ = p.P * p.Q;
  n.corr.resize(PQ);
  bool any = false;
  for (index_t i = 0; i < PQ; ++i) {
    n.corr[i] = full / d[i];
    any = any || n.corr[i] != T(1);
  }
  if (!any) n.corr = Buffer<T>();
  return n;
}

// Output rows [op0, op1) of one plane with a separable window; t is scratch of (op1 - op0) * W.
// div: the divisor of every output of the plane, to divide by (a window of ones: avg_pool2d's
// rounding), or null; corr: the border outputs' corrections of a scaled window (correct_border),
// or null. Rows whose taps are all inside the input take whole-block loops where the layout allows: with
// stride 1 the vertical pass is one flat pass over the block's rows, and with horizontal stride 1 and Q == W
// ("same" pooling) the horizontal pass is one flat pass too (the values it computes at border columns read
// across rows and are then recomputed), so short rows (28, 14, 7) cost no per-row loop
// overhead. Each pass keeps its R (S) products in registers and stores once; the sums run in
// the per-row order (first tap first).
template <class T>
void weighted_separable_rows(const PoolParams& p, const Axis& ah, const Axis& aw, const T* wv, const T* wh,
                             const T* div, const T* corr, const T* xp, T* yp, index_t op0, index_t op1,
                             T* t) {
  const index_t W = p.W, Q = p.Q, R = p.R, S = p.S;
  const index_t ilo = std::min(std::max(op0, ah.lo), op1), ihi = std::max(ilo, std::min(op1, ah.hi));
  auto vertical = [&](const T* r0, const T* c, index_t n_rows, index_t n, T* out) {
    taps(r0, W, c, n_rows, n, out, [](T a, index_t) { return a; });
  };
  const index_t rows = op1 - op0, pw = aw.pad;
  T* y0 = yp + op0 * Q;
  const T* d0 = div ? div + op0 * Q : nullptr;
  // The same for every block of a call (an interior window means S <= W, so flat_end > pw):
  // the padded path's zero columns in t are never overwritten by the flat path's rows.
  const index_t flat_end = rows * W - (S - 1 - pw);
  const bool flat = aw.stride == 1 && Q == W && aw.lo < aw.hi;
  if (!flat) {
    // Each output row's vertical sums land in t between zero columns (rows Wp wide), so every
    // horizontal window reads a whole row with no border case (short rows had spent more time in
    // scalar border windows than in the vector loop). The zeros add nothing, as the weights are
    // finite (checked on entry), and leave each sum's order: first tap first. t came zeroed and
    // only columns [pw, pw + nc) are ever written: the others stay zero.
    const index_t Wp = padded_width(aw, Q), nc = std::max<index_t>(0, std::min(W, Wp - pw));
    for (index_t op = op0; op < op1; ++op) {
      const index_t h0 = ah.first[op], rb = h0 - (op * ah.stride - ah.pad);
      vertical(xp + h0 * W, wv + rb, ah.count[op], nc, t + (op - op0) * Wp + pw);
    }
    for (index_t r = 0; r < rows; ++r)
      strided_taps(t + r * Wp, aw.stride, wh, S, Q, y0 + r * Q, [](T a, index_t) { return a; });
    if (div) {
      const index_t n = rows * Q;
#pragma omp simd
      for (index_t i = 0; i < n; ++i) y0[i] = y0[i] / d0[i];  // division, as avg_pool2d
    }
    if (corr) correct_border(ah, aw, Q, corr, yp, op0, op1);
    return;
  }
  auto vertical_row = [&](index_t op) {  // the counted-inside rows of output row op
    const index_t h0 = ah.first[op], rb = h0 - (op * ah.stride - ah.pad);
    vertical(xp + h0 * W, wv + rb, ah.count[op], W, t + (op - op0) * W);
  };
  for (index_t op = op0; op < ilo; ++op) vertical_row(op);
  for (index_t op = ihi; op < op1; ++op) vertical_row(op);
  if (ah.stride == 1 && ihi > ilo)
    vertical(xp + (ilo - ah.pad) * W, wv, R, (ihi - ilo) * W, t + (ilo - op0) * W);
  else
    for (index_t op = ilo; op < ihi; ++op) vertical_row(op);
  {  // flat: y0[i] reads t[i - pw + s]; as i starts at pw, the loop runs over j = i - pw from 0.
    T* yb = y0 + pw;
    const index_t n = flat_end - pw;
    if (!div)
      taps(t, 1, wh, S, n, yb, [](T a, index_t) { return a; });
    else
      taps(t, 1, wh, S, n, yb,
           [d = d0 + pw](T a, index_t i) { return a / d[i]; });  // division, as avg_pool2d
    // Border columns, column by column over the block's rows (their taps fixed per column).
    // The first tap starts the sum (avg_pool2d's 0 + t: the same value but for the sign of 0).
    auto border = [&](index_t q) {
      const index_t s0 = aw.first[q] - (q - pw), cnt = aw.count[q];
      const T* tq = t + aw.first[q];
      T* yq = y0 + q;
      if (!div)
        column_taps(tq, W, wh + s0, cnt, rows, yq, Q, [](T a, index_t) { return a; });
      else
        column_taps(tq, W, wh + s0, cnt, rows, yq, Q,
                    [d = d0 + q, Q](T a, index_t r) { return a / d[r * Q]; });
    };
    for (index_t q = 0; q < aw.lo; ++q) border(q);
    for (index_t q = aw.hi; q < Q; ++q) border(q);
  }
  if (corr) correct_border(ah, aw, Q, corr, yp, op0, op1);
}

// Output rows [op0, op1) of one plane with a 2-D window. The block's input rows are copied
// between zero rows and columns (xb: rows_in x Wp), so that every window reads whole rows with
// no border case; the zeros add nothing (finite weights, checked on entry). Strides 1: one flat
// pass over the block (output (r, q) at tb[r * Wp + q], the values between rows discarded),
// else one pass per output row. xb came zeroed and only the input's columns [pw, pw + nc) are
// ever written, so the padding columns stay zero; tb (rows x Wp, strides 1 only) is apart.
template <class T>
void weighted_2d_rows(const PoolParams& p, const Axis& ah, const Axis& aw, const T* w, const T* corr,
                      const T* xp, T* yp, index_t op0, index_t op1, T* xb, T* tb) {
  const index_t W = p.W, Q = p.Q, R = p.R, S = p.S, pw = aw.pad;
  const index_t Wp = padded_width(aw, Q), rows = op1 - op0, sh = ah.stride, sw = aw.stride;
  const index_t rows_in = (rows - 1) * sh + R, h_first = op0 * sh - ah.pad;
  const index_t nc = std::max<index_t>(0, std::min(W, Wp - pw));
  for (index_t i = 0; i < rows_in; ++i) {
    const index_t h = h_first + i;
    T* b = xb + i * Wp + pw;
    if (h < 0 || h >= p.H)
      std::fill(b, b + nc, T(0));
    else
      copy_short_row(xp + h * W, nc, b);
  }
  if (sh == 1 && sw == 1) {
    window_2d(xb, Wp, 1, w, R, S, (rows - 1) * Wp + Q, tb);
    for (index_t r = 0; r < rows; ++r) copy_short_row(tb + r * Wp, Q, yp + (op0 + r) * Q);
  } else {
    for (index_t r = 0; r < rows; ++r) window_2d(xb + r * sh * Wp, Wp, sw, w, R, S, Q, yp + (op0 + r) * Q);
  }
  if (corr) correct_border(ah, aw, Q, corr, yp, op0, op1);
}

}  // namespace

template <class T>
void weighted_avg_pool2d(const PoolParams& p, const T* x, const T* w, T* y) {
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, false);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, false);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, planes = p.N * p.C;
  const WindowNorm<T> norm = normalise_window(p, ah, aw, w, "weighted_avg_pool2d");
  const T* wk = norm.window;
  // Work items: blocks of output rows of one plane; whole planes unless there are fewer planes
  // than a few per thread (one large image), so that every thread gets work.
#if defined(_OPENMP)
  const index_t threads = omp_get_max_threads();
#else
  const index_t threads = 1;
#endif
  // Blocks also small enough that a block's intermediate rows (8 KiB) and the input and output
  // rows it touches stay in L1 (a 56x56 plane's 12 KiB of intermediate rows did not).
  const index_t cache_rows = std::max<index_t>(1, index_t(8192 / sizeof(T)) / p.W);
  const index_t blocks =
      std::min(p.P, std::max<index_t>({1, (4 * threads + planes - 1) / std::max<index_t>(planes, 1),
                                       (p.P + cache_rows - 1) / cache_rows}));
  const index_t rows_per_block = (p.P + blocks - 1) / blocks;
  const index_t items = planes * blocks;
  const bool big = planes * PQ * (p.separable ? p.R + p.S : p.R * p.S) > 32768;
  const T* d = norm.div.data();
  const T* c = norm.corr.data();
  const index_t Wp = padded_width(aw, p.Q);
  // t: the separable passes' rows, or the 2-D path's padded input rows; tb: the 2-D flat output.
  const index_t scratch =
      p.separable ? rows_per_block * std::max(p.W, Wp) : ((rows_per_block - 1) * p.stride_h + p.R) * Wp;
  const index_t flat_2d = !p.separable && p.stride_h == 1 && p.stride_w == 1 ? rows_per_block * Wp : 0;
#pragma omp parallel if (big)
  {
    Buffer<T> t(scratch, T(0)), tb(flat_2d);  // t zeroed: the padded paths' zero columns
#pragma omp for schedule(static)
    for (index_t item = 0; item < items; ++item) {
      const index_t plane = item / blocks, b = item % blocks;
      const index_t op0 = b * rows_per_block, op1 = std::min(p.P, op0 + rows_per_block);
      if (op0 >= op1) continue;
      if (p.separable)
        weighted_separable_rows(p, ah, aw, wk, wk + p.R, d, c, x + plane * HW, y + plane * PQ, op0, op1,
                                t.data());
      else
        weighted_2d_rows(p, ah, aw, wk, c, x + plane * HW, y + plane * PQ, op0, op1, t.data(), tb.data());
    }
  }
}

namespace {

// One plane of the backward as a gather: with v = grad_y / divisor (WindowNorm: grad_y / div,
// or grad_y * corr with the scaled window, or grad_y) placed on a grid of the
// strides (v_up[op * stride_h][q * stride_w] = v[op][q], zero elsewhere and outside),
// grad_x[h][w] = sum over r, s of w[r][s] * v_up[h + pad_h - r][w + pad_w - s]: a stride-1
// correlation of v_up, zero-padded by R-1-pad_h rows and S-1-pad_w columns, with the window
// flipped (wf: flipped, in the kernel's layout: separable factors or R x S). The zeros add
// nothing (finite weights). Separable: a horizontal pass over each row of v (its row of v_up
// padded: vb; one flat pass into u), then each grad_x row sums the rows of u whose windows
// cover it, skipping v_up's zero rows. That is avg_pool2d_backward's order (per column the
// windows in ascending q, then the rows in ascending p), so a window of ones gives its result
// bit for bit. 2-D windows: the forward's zero-padded 2-D rows on the transposed problem,
// v_up -> grad_x.
// Scratch, zeroed once (only v's own positions are ever written): vb and u, P x (W + S - 1)
// each, and c, R (separable); v_up and the 2-D rows' scratch (2-D).
// The gather as the forward's passes on the transposed problem: input Hu x Wu (v_up, or v when
// the strides are 1) -> grad_x (H x W), stride 1, pads R-1-pad_h and S-1-pad_w, the flipped
// window used as it is (normalize off).
struct TransposedPool {
  PoolParams t;
  Axis th, tw;
};
TransposedPool transposed_pool(const PoolParams& p, index_t Hu, index_t Wu) {
  const index_t ph = p.R - 1 - p.pad_h, pw = p.S - 1 - p.pad_w;
  TransposedPool tp;
  tp.t = p;
  tp.t.H = Hu, tp.t.W = Wu, tp.t.P = p.H, tp.t.Q = p.W, tp.t.pad_h = ph, tp.t.pad_w = pw;
  tp.t.stride_h = tp.t.stride_w = 1;
  tp.t.normalize = false;
  tp.th = make_axis(Hu, p.H, p.R, 1, ph, 1, false);
  tp.tw = make_axis(Wu, p.W, p.S, 1, pw, 1, false);
  return tp;
}

template <class T>
void weighted_backward_plane(const PoolParams& p, const T* div, const T* corr, const T* wf, const T* gy,
                             T* gx, T* vb, T* u, T* scratch2d, T* c) {
  const index_t P = p.P, Q = p.Q, H = p.H, W = p.W, R = p.R, S = p.S, sh = p.stride_h, sw = p.stride_w;
  const index_t pw = S - 1 - p.pad_w;  // the transposed problem's left pad (transposed_pool)
  auto v = [&](index_t i) { return div ? gy[i] / div[i] : corr ? gy[i] * corr[i] : gy[i]; };
  if (!p.separable) {
    const index_t Pu = (P - 1) * sh + 1, Qu = (Q - 1) * sw + 1;
    for (index_t op = 0; op < P; ++op)
      for (index_t q = 0; q < Q; ++q) vb[op * sh * Qu + q * sw] = v(op * Q + q);
    const TransposedPool tp = transposed_pool(p, Pu, Qu);
    weighted_2d_rows(tp.t, tp.th, tp.tw, wf, static_cast<const T*>(nullptr), vb, gx, 0, H, scratch2d,
                     scratch2d + (H - 1 + R) * (W + S - 1));
    return;
  }
  if (!div && sh == 1 && sw == 1) {
    // Any window but ones, strides 1: the forward's separable rows on the transposed problem
    // (v, P x Q -> grad_x, H x W, pads R-1-pad_h and S-1-pad_w, the window flipped), whose
    // vertical and horizontal passes each run flat over the plane where the layout allows,
    // instead of a call per row (Zen 4, 1 thread, vs torch: Gaussian 3x3 on 512 x 28x28
    // 1.31 -> 1.58x, 5x5 on 256 x 56x56 1.70 -> 1.86x). A window of ones keeps
    // avg_pool2d_backward's order, below.
    const T* vp = gy;
    if (corr) {
      const index_t PQ = P * Q;
#pragma omp simd
      for (index_t i = 0; i < PQ; ++i) vb[i] = gy[i] * corr[i];
      vp = vb;
    }
    const TransposedPool tp = transposed_pool(p, P, Q);
    weighted_separable_rows(tp.t, tp.th, tp.tw, wf, wf + R, static_cast<const T*>(nullptr),
                            static_cast<const T*>(nullptr), vp, gx, 0, H, scratch2d);
    return;
  }
  // vb row op: v's row op on the stride grid between zero columns (column c holds v_up's
  // column c - pw); the last window starts inside the input or its left padding, so
  // pw + (Q - 1) * sw < Wp.
  const index_t Wp = W + S - 1;
  for (index_t op = 0; op < P; ++op) {
    T* b = vb + op * Wp + pw;
    const T* g = gy + op * Q;
    if (sw == 1 && div) {
      const T* d = div + op * Q;
#pragma omp simd
      for (index_t q = 0; q < Q; ++q) b[q] = g[q] / d[q];
    } else if (sw == 1 && corr) {
      const T* k = corr + op * Q;
#pragma omp simd
      for (index_t q = 0; q < Q; ++q) b[q] = g[q] * k[q];
    } else if (sw == 1) {
      copy_short_row(g, Q, b);
    } else {
      for (index_t q = 0; q < Q; ++q) b[q * sw] = v(op * Q + q);
    }
  }
  // u[op][w] = sum over s of whf[s] * vb[op][w + s]: flat over the rows (values between rows unused).
  taps(vb, 1, wf + R, S, (P - 1) * Wp + W, u, [](T a, index_t) { return a; });
  // grad_x row h: the rows op whose windows cover it (0 <= h + pad_h - op * sh < R), ascending.
  for (index_t h = 0; h < H; ++h) {
    const index_t top = h + p.pad_h;  // = op * sh + r
    const index_t lo = std::max<index_t>(0, top - R + sh) / sh, hi = std::min(P - 1, top / sh);
    T* gr = gx + h * W;
    if (lo > hi) {
      std::fill(gr, gr + W, T(0));
      continue;
    }
    for (index_t op = lo; op <= hi; ++op) c[op - lo] = wf[R - 1 - (top - op * sh)];  // w[r] = wf[R-1-r]
    taps(u + lo * Wp, Wp, c, hi - lo + 1, W, gr, [](T a, index_t) { return a; });
  }
}

}  // namespace

// grad_x[h][w] = sum over the windows o covering (h, w) of w[tap] * grad_y[o] / divisor[o]; one
// plane per work item (no two threads write one value), each plane's windows in row order.
// A gather (weighted_backward_plane); the weights must be finite (normalise_window checks).
template <class T>
void weighted_avg_pool2d_backward(const PoolParams& p, const T* grad_y, const T* w, T* grad_x) {
  const Axis ah = make_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, false);
  const Axis aw = make_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, false);
  const index_t HW = p.H * p.W, PQ = p.P * p.Q, planes = p.N * p.C;
  const index_t n_weights = p.separable ? p.R + p.S : p.R * p.S;
  const WindowNorm<T> norm = normalise_window(p, ah, aw, w, "weighted_avg_pool2d_backward");  // the forward's
  w = norm.window;
  Buffer<T> wf(n_weights);  // the window flipped: each factor reversed, or the R x S reversed
  if (p.separable) {
    for (index_t r = 0; r < p.R; ++r) wf[r] = w[p.R - 1 - r];
    for (index_t s = 0; s < p.S; ++s) wf[p.R + s] = w[p.R + p.S - 1 - s];
  } else {
    for (index_t i = 0; i < n_weights; ++i) wf[i] = w[n_weights - 1 - i];
  }
  const index_t Wp = p.W + p.S - 1;
  const index_t Pu = (p.P - 1) * p.stride_h + 1, Qu = (p.Q - 1) * p.stride_w + 1;
  const index_t vb_size = p.separable ? p.P * Wp : Pu * Qu;
  // The 2-D path's padded rows and flat output, or the separable transposed rows' scratch.
  const index_t pad2d = p.separable ? p.H * std::max(p.Q, Wp) : (p.H - 1 + p.R + p.H) * Wp;
#pragma omp parallel if (pool_parallel(p))
  {
    Buffer<T> vb(vb_size, T(0)), u(p.separable ? p.P * Wp : 0), s2(pad2d, T(0)), c(p.R);
#pragma omp for schedule(static)
    for (index_t plane = 0; plane < planes; ++plane)
      weighted_backward_plane(p, norm.div.data(), norm.corr.data(), wf.data(), grad_y + plane * PQ,
                              grad_x + plane * HW, vb.data(), u.data(), s2.data(), c.data());
  }
}

#define FC_INSTANTIATE(T)                                                                     \
  template void max_pool2d<T>(const PoolParams&, const T*, T*, std::int64_t*);                \
  template void avg_pool2d<T>(const PoolParams&, const T*, T*);                               \
  template void lp_pool2d<T>(const PoolParams&, const T*, T*);                                \
  template void max_pool2d_backward<T>(const PoolParams&, const T*, const std::int64_t*, T*); \
  template void avg_pool2d_backward<T>(const PoolParams&, const T*, T*);                      \
  template void lp_pool2d_backward<T>(const PoolParams&, const T*, const T*, const T*, T*);   \
  template void weighted_avg_pool2d<T>(const PoolParams&, const T*, const T*, T*);            \
  template void weighted_avg_pool2d_backward<T>(const PoolParams&, const T*, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)

}  // namespace fastconv::cpu::FC_ISA
