// pool2d.cu: max / average / Lp / adaptive pooling of NCHW planes on the GPU, forward and
// backward, float32 and float64, with the semantics of cpu/pool2d.cpp (torch's):
//
//   x is (N, C, H, W); y and indices are (N, C, P, Q); indices are int64, flat into each H*W
//   plane (h*W + w). Windows along an axis: output o's taps are o*stride - pad + j*dil,
//   j < k, those inside [0, in) counted; adaptive: [floor(o*in/out), ceil((o+1)*in/out)),
//   made a regular window (k = stride = in/out) when out divides in, as the CPU does.
//   max: NaN wins; with indices, torch's row-major update (v > m || v != v): the first
//        maximum, the last NaN; a (dilated) window with no tap inside the input gives -inf and
//        the index (first tap row >= 0)*W + (first tap column >= 0), as the CPU.
//   avg: sum / divisor, divisor = divisor_override, else the product of the axes' counts
//        (the window clipped to the padded input with count_include_pad, else its taps inside
//        the input). No dilation (avg and Lp build their axes with dil 1, as the CPU).
//   Lp:  (sum x^p / divisor * R*S)^(1/p); p = +inf the max of |x|, -inf the min of |x|.
// Backward (grad_y -> grad_x, every element of grad_x written) is a GATHER: one thread per
// input element sums, in the CPU's order (window rows ascending, then columns), the gradients
// of the windows that have it as a tap; the windows are found by arithmetic (regular:
// p in [ceil((h+pad-(k-1)*dil)/stride), floor((h+pad)/stride)] with (h+pad-p*stride) % dil == 0;
// adaptive: p in [floor(h*P/H), ceil((h+1)*P/H))). Deterministic, no atomics:
//   max: grad_y of each covering window whose forward index is this element;
//   avg: grad_y / divisor of each covering window;
//   Lp:  x^(p-1) * sum of grad_y * R*S/divisor * y^(1-p) (0 where y^p is 0), as the CPU;
//        +-inf: grad_y * sign(x) from each covering window whose first max of +-|x| (recomputed,
//        the window scanned) is this element.
//
// How: the forward runs one thread per output (grid-stride over N*C*P*Q, consecutive threads on
// consecutive q, so a warp reads neighbouring windows of one row through the read-only cache;
// 2x2 and 3x3 undilated windows have their own kernels, whose full windows reduce unrolled);
// windows of 32 taps or more (adaptive and global pooling, large kernels) run a group of 8, 16
// or 32 lanes per output instead (about a quarter of the taps), the lanes striding over the
// window's taps (contiguous ones for global pooling), reduced by shuffles (max with indices
// reduces (value, index) pairs by the row-major rule: the NaN of highest index, else the
// maximum of lowest index). Flat indices are split by multiply-high division (32-bit indexing
// when every tensor and coordinate fits, else plain 64-bit division; the window bounds divide by
// the stride, or by in and out for adaptive windows, the same way). The backward's "plain"
// kernel drops the adaptive and dilation branches where no axis has them. No __launch_bounds__:
// with it ptxas (CUDA 13) capped registers at occupancy steps and spilled around the division
// and pow calls on sm_75-89.
// Sums run in the CPU's order (each window column's rows, then the columns) in the thread
// kernel, so avg and max results are those of the CPU bit for bit (the lane-group kernel and the
// global average reorder the sum; Lp may differ by pow's rounding and nvcc's FMA contraction).
//
// Limits: the max backward adds a gradient only where a window's index names one of that
//   window's taps (every index the forward writes does); other indices, in range or not, are
//   ignored (the CPU adds in-range ones anywhere in the plane and rejects the others; an error
//   cannot be raised from the device without a synchronisation).
//   Lp +-inf backward rescans each covering window: (taps per window) x (windows per element)
//   reads per element, fine for the usual non-overlapping kernels, quadratic for large
//   overlapping ones.
#include "kernels.h"
#include "portable.cuh"

namespace fastconv::cuda {
namespace {

// ---- helpers ------------------------------------------------------------------------------

constexpr int kBlock = 256;              // threads per block, every kernel
constexpr int kWarp = 32;                // lanes per warp
constexpr unsigned kMaxBlocks = 1u << 16;  // grid-stride: at most this many blocks (enough for any GPU)
constexpr index_t kWideTaps = 32;        // windows of at least this many taps: lanes per output

enum Mode : int { kMax, kMaxIndices, kAvg, kLp, kLpInf };

// Splits n into n / d and n % d for a fixed d. 32-bit: multiply-high division (Granlund and
// Montgomery; PyTorch's IntDivider), exact for 0 <= n, d < 2^31. 64-bit: plain division.
struct Div32 {
  unsigned d = 1, m = 1, s = 0;
  Div32() = default;
  explicit Div32(index_t div) : d(unsigned(div)) {
    while ((std::uint64_t(1) << s) < d) ++s;
    m = unsigned(((std::uint64_t(1) << 32) * ((std::uint64_t(1) << s) - d)) / d + 1);
  }
  FC_HD int div(int n) const {
    const unsigned t = unsigned((std::uint64_t(unsigned(n)) * m) >> 32);
    return int((t + unsigned(n)) >> s);
  }
  FC_HD int divisor() const { return int(d); }
};
struct Div64 {
  index_t d = 1;
  Div64() = default;
  explicit Div64(index_t div) : d(div) {}
  FC_HD index_t div(index_t n) const { return n / d; }
  FC_HD index_t divisor() const { return d; }
};
template <class I>
struct DivOf;
template <>
struct DivOf<int> {
  using type = Div32;
};
template <>
struct DivOf<index_t> {
  using type = Div64;
};

template <class T>
FC_HD inline T inf_of();
template <>
FC_HD inline float inf_of<float>() {
  return HUGE_VALF;
}
template <>
FC_HD inline double inf_of<double>() {
  return HUGE_VAL;
}

FC_HD inline float abs_of(float v) { return fabsf(v); }
FC_HD inline double abs_of(double v) { return fabs(v); }
FC_HD inline float pow_of(float a, float b) { return powf(a, b); }
FC_HD inline double pow_of(double a, double b) { return pow(a, b); }
FC_HD inline float sqrt_of(float v) { return sqrtf(v); }
FC_HD inline double sqrt_of(double v) { return sqrt(v); }

// a / b for 0 <= a <= 2^20 and b >= 1, through a float quotient corrected by one either way
// (cheaper than an integer division, which the GPU builds from about 20 instructions).
template <class I>
FC_HD inline I small_div(I a, I b) {
  I q = I(float(a) / float(b));
  if (q * b > a) --q;
  if ((q + 1) * b <= a) ++q;
  return q;
}

// NaN-sticky max (the CPU's max_nan): once the running value is NaN it stays NaN.
template <class T>
FC_HD inline T max_nan(T m, T v) {
  return (v > m || v != v) ? v : m;
}
// torch's sign: -1, 0, +1, NaN for NaN.
template <class T>
FC_HD inline T sign_of(T v) {
  return v > T(0) ? T(1) : v < T(0) ? T(-1) : v;
}

// One spatial axis of the windows (the CPU's make_axis before its tables), with dividers by the
// stride (regular windows) or by in and out (adaptive ones).
template <class I>
struct Axis {
  I in = 1, out = 1, k = 1, stride = 1, pad = 0, dil = 1;
  bool adaptive = false;
  typename DivOf<I>::type by_stride, by_in, by_out;
};

// Output o's window along an axis: taps first + j*dil, j < count, inside the input; padded is
// the window clipped to the padded input (count_include_pad's divisor).
template <class I>
struct Window {
  I first, count, padded;
};

template <class I>
FC_HD inline Window<I> window_of(const Axis<I>& a, I o) {
  Window<I> w;
  if (a.adaptive) {  // [floor(o*in/out), ceil((o+1)*in/out))
    w.first = a.by_out.div(o * a.in);
    w.count = w.padded = a.by_out.div((o + 1) * a.in + a.out - 1) - w.first;
    return w;
  }
  const I s = o * a.stride - a.pad, span = (a.k - 1) * a.dil + 1;
  const I end = fc_min(s + span, a.in);
  if (a.dil == 1) {
    w.first = fc_max(s, I(0));
    w.count = fc_max(end - w.first, I(0));
  } else {  // first tap >= 0 (torch's loop)
    w.first = s >= 0 ? s : s + (-s + a.dil - 1) / a.dil * a.dil;
    w.count = w.first < end ? (end - 1 - w.first) / a.dil + 1 : I(0);
  }
  w.padded = fc_min(s + span, a.in + a.pad) - s;
  return w;
}

// window_of for a regular axis without dilation (the K x K kernels' axes).
template <class I>
FC_HD inline Window<I> window_undilated(const Axis<I>& a, I o) {
  const I s = o * a.stride - a.pad, e = s + a.k;
  Window<I> w;
  w.first = fc_max(s, I(0));
  w.count = fc_max(fc_min(e, a.in) - w.first, I(0));
  w.padded = fc_min(e, a.in + a.pad) - s;
  return w;
}

// The outputs [lo, hi) whose windows may have input position h as a tap; with dilation, also
// check is_tap (adaptive windows and dil 1: every one of them does).
template <class I>
FC_HD inline void windows_covering(const Axis<I>& a, I h, I& lo, I& hi) {
  if (a.adaptive) {  // [floor(h*out/in), ceil((h+1)*out/in))
    lo = a.by_in.div(h * a.out);
    hi = fc_min(a.by_in.div((h + 1) * a.out + a.in - 1), a.out);
    return;
  }
  const I num = h + a.pad, low = num - (a.k - 1) * a.dil;
  lo = low <= 0 ? I(0) : a.by_stride.div(low + a.stride - 1);
  hi = fc_min(a.by_stride.div(num) + 1, a.out);
}
// windows_covering for a regular axis without dilation (every window in the range has h).
template <class I>
FC_HD inline void windows_covering_undilated(const Axis<I>& a, I h, I& lo, I& hi) {
  const I num = h + a.pad, low = num - (a.k - 1);
  lo = low <= 0 ? I(0) : a.by_stride.div(low + a.stride - 1);
  hi = fc_min(a.by_stride.div(num) + 1, a.out);
}
template <class I>
FC_HD inline bool is_tap(const Axis<I>& a, I h, I o) {
  return a.adaptive || a.dil == 1 || (h + a.pad - o * a.stride) % a.dil == 0;
}

// Everything a kernel needs of the problem, by value. The flat index runs over planes x rows x
// cols (outputs P x Q in the forward, inputs H x W in the backward).
template <class T, class I>
struct Args {
  Axis<I> h, w;
  I total = 0;  // planes * rows * cols
  typename DivOf<I>::type cols, rows;
  // avg / Lp
  index_t divisor_override = 0;
  bool count_include_pad = true;
  int norm = 0;  // Lp: 1, 2, anything else is generic pow
  bool negative = false;  // Lp: p < 0 (for +-inf: the min of |x|)
  T pw = 0, inv_p = 0, full = 0, one_minus_p = 0, p_minus_one = 0;

  FC_HD void split(I i, I& plane, I& row, I& col) const {
    const I r = cols.div(i);
    col = i - r * cols.divisor();
    plane = rows.div(r);
    row = r - plane * rows.divisor();
  }
  FC_HD T divisor(const Window<I>& wh, const Window<I>& ww) const {  // the CPU's dh * cd
    if (divisor_override != 0) return T(divisor_override);
    return count_include_pad ? T(wh.padded) * T(ww.padded) : T(wh.count) * T(ww.count);
  }
  FC_HD T power(T v) const {  // x^p of Lp's sum
    return norm == 2 ? v * v : norm == 1 ? v : pow_of(v, pw);
  }
  FC_HD T root(T v) const {  // v^(1/p)
    return norm == 2 ? sqrt_of(v) : norm == 1 ? v : pow_of(v, inv_p);
  }
};

template <class T>
FC_HD inline T load(const T* p) {
  return __ldg(p);
}

// ---- kernels: forward ----------------------------------------------------------------------

// One window's reduction by mode M over its nh x nw taps at xp + r*rs + s*cs: the max (kMax,
// kMaxIndices with off the offset of torch's pick, kLpInf of +-|x|), or the sum (kAvg, kLp of
// x^p) in the CPU's order: each column's rows, then the columns.
template <class T, int M, class I>
FC_HD inline T reduce_window(const T* xp, I nh, I nw, I rs, I cs, const Args<T, I>& a, I& off) {
  if (M == kMaxIndices) {  // row-major, torch's update rule
    T m = -inf_of<T>();
    off = 0;
    for (I r = 0; r < nh; ++r)
      for (I s = 0; s < nw; ++s) {
        const T v = load(xp + r * rs + s * cs);
        if (v > m || v != v) m = v, off = r * rs + s * cs;
      }
    return m;
  } else if (M == kMax || M == kLpInf) {
    T m = -inf_of<T>();
    for (I r = 0; r < nh; ++r)
      for (I s = 0; s < nw; ++s) {
        const T v = load(xp + r * rs + s * cs);
        m = max_nan(m, M == kLpInf ? (a.negative ? -abs_of(v) : abs_of(v)) : v);
      }
    return m;
  } else {
    T acc = T(0);
    if (nh > 0)
      for (I s = 0; s < nw; ++s) {
        T c = M == kLp ? a.power(load(xp + s * cs)) : load(xp + s * cs);
        for (I r = 1; r < nh; ++r) {
          const T v = load(xp + r * rs + s * cs);
          c += M == kLp ? a.power(v) : v;
        }
        acc = s == 0 ? c : acc + c;
      }
    return acc;
  }
}

// x (N, C, H, W) -> y (N, C, P, Q) [and indices (N, C, P, Q) for kMaxIndices]: one thread per
// output, flat index i over N*C*P*Q (a.cols = Q, a.rows = P). K > 0: K x K windows of regular
// undilated axes, whose full (interior) ones run the reduction unrolled.
template <class T, int M, class I, int K>
__global__ void pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                    std::int64_t* __restrict__ indices, const Args<T, I> a) {
  const I W = a.w.in, plane_size = a.h.in * a.w.in;
  const I step = I(gridDim.x) * I(blockDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += step) {
    I plane, p, q;
    a.split(i, plane, p, q);
    const Window<I> wh = K > 0 ? window_undilated(a.h, p) : window_of(a.h, p);
    const Window<I> ww = K > 0 ? window_undilated(a.w, q) : window_of(a.w, q);
    const I start = wh.first * W + ww.first;
    const T* xp = x + plane * plane_size + start;
    I off = 0;
    const T m = K > 0 && wh.count == K && ww.count == K
                    ? reduce_window<T, M, I>(xp, I(K), I(K), W, I(1), a, off)
                    : reduce_window<T, M, I>(xp, wh.count, ww.count, a.h.dil * W, a.w.dil, a, off);
    if (M == kMaxIndices) {
      y[i] = m;
      indices[i] = std::int64_t(start + off);
    } else if (M == kMax || M == kLpInf) {
      y[i] = M == kLpInf && a.negative ? -m : m;
    } else {
      const T v = m / a.divisor(wh, ww);
      y[i] = M == kLp ? a.root(v * a.full) : v;
    }
  }
}

// One tap v (at offset `at`) into a lane's running reduction (m, arg) by mode M.
template <class T, int M, class I>
FC_HD inline void take_tap(T& m, std::int64_t& arg, T v, std::int64_t at, const Args<T, I>& a) {
  if (M == kMaxIndices) {
    if (v > m || v != v) m = v, arg = at;
  } else if (M == kMax) {
    m = max_nan(m, v);
  } else if (M == kLpInf) {
    m = max_nan(m, a.negative ? -abs_of(v) : abs_of(v));
  } else {
    m += M == kLp ? a.power(v) : v;
  }
}

// (value, index) of the row-major rule, combined across lanes: a NaN beats any number and the
// later NaN (higher index) wins; else the larger value, and the lower index on a tie.
template <class T>
FC_HD inline bool takes(T v, std::int64_t iv, T m, std::int64_t im) {
  const bool vn = v != v, mn = m != m;
  if (vn || mn) return vn && (!mn || iv > im);
  return v > m || (v == m && iv < im);
}

// The same as pool_forward_kernel with G lanes per output (G = 8, 16 or 32; windows of kWideTaps
// taps or more): the lanes stride over the window's taps in row-major order and reduce by
// shuffles within their group. The loop over outputs is warp-uniform (every lane reaches the
// shuffles), a group past the end idles through it.
template <class T, int M, class I, int G>
__global__ void pool_forward_wide_kernel(const T* __restrict__ x, T* __restrict__ y,
                                         std::int64_t* __restrict__ indices, const Args<T, I> a) {
  static_assert(G == 8 || G == 16 || G == 32, "lanes per output: 8, 16 or 32");
  const I W = a.w.in, plane_size = a.h.in * a.w.in;
  const I lane = I(threadIdx.x) % G, group = (I(threadIdx.x) % kWarp) / G;
  const I step = I(gridDim.x) * (kBlock / G);
  constexpr std::int64_t kNone = 0x7fffffffffffffff;  // no tap above -inf seen yet
  for (I base = (I(blockIdx.x) * kBlock + I(threadIdx.x)) / kWarp * (kWarp / G); base < a.total;
       base += step) {
    const I i = base + group;
    const bool active = i < a.total;
    T m = M == kAvg || M == kLp ? T(0) : -inf_of<T>();
    std::int64_t arg = kNone;
    I start = 0;
    Window<I> wh{0, 0, 0}, ww{0, 0, 0};
    if (active) {
      I plane, p, q;
      a.split(i, plane, p, q);
      wh = window_of(a.h, p), ww = window_of(a.w, q);
      start = wh.first * W + ww.first;
      const I rs = a.h.dil * W, cs = a.w.dil;
      const T* xp = x + plane * plane_size + start;
      const I taps = wh.count * ww.count, cw = ww.count > 0 ? ww.count : I(1);
      // Whole rows (global pooling): the taps are contiguous, tap t at offset t. Else this
      // lane's taps t = lane, lane + G, ... as (row r, column s), stepped without division.
      if (cs == 1 && rs == ww.count) {
        const T* end = xp + taps;
        for (const T* tp = xp + lane; tp < end; tp += G)
          take_tap<T, M, I>(m, arg, load(tp), std::int64_t(start) + (tp - xp), a);
      } else {
        I r = small_div(lane, cw), s = lane - r * cw;
        const I dr = small_div(I(G), cw), ds = I(G) - dr * cw;
        for (I t = lane; t < taps; t += G) {
          const I off = r * rs + s * cs;
          take_tap<T, M, I>(m, arg, load(xp + off), std::int64_t(start + off), a);
          s += ds;
          r += dr;
          if (s >= cw) s -= cw, ++r;
        }
      }
    }
    for (int o = G / 2; o > 0; o /= 2) {  // xor below G: within the group
      const T v = __shfl_xor_sync(0xffffffffu, m, o);
      if (M == kMaxIndices) {
        const std::int64_t iv = __shfl_xor_sync(0xffffffffu, arg, o);
        if (takes(v, iv, m, arg)) m = v, arg = iv;
      } else if (M == kMax || M == kLpInf) {
        m = max_nan(m, v);
      } else {
        m += v;
      }
    }
    if (active && lane == 0) {
      if (M == kMaxIndices) {
        y[i] = m;
        indices[i] = arg == kNone ? std::int64_t(start) : arg;  // every tap -inf: the first one
      } else if (M == kMax || M == kLpInf) {
        y[i] = M == kLpInf && a.negative ? -m : m;
      } else {
        const T v = m / a.divisor(wh, ww);
        y[i] = M == kLp ? a.root(v * a.full) : v;
      }
    }
  }
}

// ---- kernels: backward ---------------------------------------------------------------------

// grad_y (N, C, P, Q) [, indices (N, C, P, Q) for kMax; x (N, C, H, W) and y (N, C, P, Q) for
// kLp and kLpInf] -> grad_x (N, C, H, W), every element written: one thread per input element,
// flat index i over N*C*H*W (a.cols = W, a.rows = H), gathering the windows that have it as a tap.
// Plain: both axes regular and undilated (no adaptive or dilation branches).
template <class T, int M, class I, bool Plain>
__global__ void pool_backward_kernel(const T* __restrict__ grad_y, const std::int64_t* __restrict__ indices,
                                     const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ grad_x,
                                     const Args<T, I> a) {
  const I W = a.w.in, Q = a.w.out, plane_size = a.h.in * a.w.in, out_size = a.h.out * a.w.out;
  const I step = I(gridDim.x) * I(blockDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += step) {
    I plane, h, w;
    a.split(i, plane, h, w);
    I p0, p1, q0, q1;
    if (Plain) {
      windows_covering_undilated(a.h, h, p0, p1);
      windows_covering_undilated(a.w, w, q0, q1);
    } else {
      windows_covering(a.h, h, p0, p1);
      windows_covering(a.w, w, q0, q1);
    }
    const I me = h * W + w;
    const T* gy = grad_y + plane * out_size;
    T acc = T(0);
    if (M == kMax) {  // the covering windows whose forward index is this element
      const std::int64_t* ind = indices + plane * out_size;
      for (I p = p0; p < p1; ++p) {
        if (!Plain && !is_tap(a.h, h, p)) continue;
        for (I q = q0; q < q1; ++q)
          if ((Plain || is_tap(a.w, w, q)) && load(ind + p * Q + q) == std::int64_t(me))
            acc += load(gy + p * Q + q);
      }
    } else if (M == kLpInf) {  // the covering windows whose first max of +-|x| is this element
      const T* xp = x + plane * plane_size;  // (Lp windows have no dilation)
      const T xv = load(xp + me), sgn = a.negative ? T(-1) : T(1);
      for (I p = p0; p < p1; ++p) {
        const Window<I> wh = Plain ? window_undilated(a.h, p) : window_of(a.h, p);
        for (I q = q0; q < q1; ++q) {
          const Window<I> ww = Plain ? window_undilated(a.w, q) : window_of(a.w, q);
          const I start = wh.first * W + ww.first;
          T m = -inf_of<T>();
          I arg = start;
          for (I r = 0, row = start; r < wh.count; ++r, row += W)
            for (I s = row; s < row + ww.count; ++s) {
              const T v = sgn * abs_of(load(xp + s));
              if (v > m || v != v) m = v, arg = s;
            }
          if (arg == me) acc += load(gy + p * Q + q) * sign_of(xv);
        }
      }
    } else {  // avg, Lp: per window row, the columns' terms summed, then added (the CPU's order)
      const T* yp = M == kLp ? y + plane * out_size : nullptr;  // avg pooling's backward has no y (null)
      for (I p = p0; p < p1; ++p) {
        const Window<I> wh = Plain ? window_undilated(a.h, p) : window_of(a.h, p);
        T t = T(0);
        for (I q = q0; q < q1; ++q) {
          const Window<I> ww = Plain ? window_undilated(a.w, q) : window_of(a.w, q);
          const T g = load(gy + p * Q + q);
          if (M == kAvg) {
            t += g / a.divisor(wh, ww);
          } else {
            const T yv = load(yp + p * Q + q);
            const bool u_zero = a.negative ? (yv == inf_of<T>() || yv == -inf_of<T>()) : yv == T(0);
            const T ypow = a.norm == 2 ? T(1) / yv : a.norm == 1 ? T(1) : pow_of(yv, a.one_minus_p);
            t += u_zero ? T(0) : g * (a.full / a.divisor(wh, ww)) * ypow;
          }
        }
        acc += t;
      }
      if (M == kLp && a.norm != 1) {  // times x^(p-1)
        const T xv = load(x + plane * plane_size + me);
        acc *= a.norm == 2 ? xv : pow_of(xv, a.p_minus_one);
      }
    }
    grad_x[i] = acc;
  }
}

// ---- launchers -----------------------------------------------------------------------------

// The axis of the CPU's make_axis: adaptive windows that divide evenly are regular ones.
template <class I>
Axis<I> make_axis(index_t in, index_t out, index_t k, index_t stride, index_t pad, index_t dil,
                  bool adaptive) {
  if (adaptive && in % out == 0) {
    adaptive = false;
    k = stride = in / out;
    pad = 0;
    dil = 1;
  }
  using Div = typename DivOf<I>::type;
  Axis<I> a;
  a.in = I(in), a.out = I(out), a.adaptive = adaptive;
  a.by_in = Div(in), a.by_out = Div(out);
  if (!adaptive) a.k = I(k), a.stride = I(stride), a.pad = I(pad), a.dil = I(dil), a.by_stride = Div(stride);
  return a;
}

// Whether every offset and coordinate of the problem fits a 32-bit int, with room for the
// grid-stride step and the window arithmetic (a window's first tap lies below in + span, an
// empty window's index is (first row)*W + first column, adaptive bounds take (in+1)*(out+1)).
bool fits_32(const PoolParams& p, bool dilated) {
  constexpr index_t kLimit = (index_t(1) << 31) - 1 - index_t(kMaxBlocks) * kBlock;
  constexpr index_t kAxisLimit = index_t(1) << 30;
  const index_t planes = p.N * p.C;
  const auto span = [&](index_t k, index_t dil) {
    return p.adaptive ? 0 : (k - 1) * (dilated ? dil : 1) + 1;
  };
  const index_t span_h = span(p.R, p.dil_h), span_w = span(p.S, p.dil_w);
  const index_t reach_h = p.H + p.pad_h + span_h, reach_w = p.W + p.pad_w + span_w;  // < 2^30 each
  const index_t stride_h = p.adaptive ? 1 : p.stride_h, stride_w = p.adaptive ? 1 : p.stride_w;
  const bool adaptive_ok =
      !p.adaptive || ((p.H + 1) * (p.P + 1) <= kLimit && (p.W + 1) * (p.Q + 1) <= kLimit);
  return reach_h < kAxisLimit && reach_w < kAxisLimit && p.P * stride_h < kAxisLimit &&
         p.Q * stride_w < kAxisLimit && reach_h * reach_w <= kLimit && planes * p.H * p.W <= kLimit &&
         planes * p.P * p.Q <= kLimit && adaptive_ok;
}

// Args of a problem; forward: the flat index over outputs, else over inputs. Avg and Lp have no
// dilation (their CPU axes take dil 1).
template <class T, class I>
Args<T, I> make_args(const PoolParams& p, bool forward, bool dilated) {
  Args<T, I> a;
  a.h = make_axis<I>(p.H, p.P, p.R, p.stride_h, p.pad_h, dilated ? p.dil_h : 1, p.adaptive);
  a.w = make_axis<I>(p.W, p.Q, p.S, p.stride_w, p.pad_w, dilated ? p.dil_w : 1, p.adaptive);
  const index_t rows = forward ? p.P : p.H, cols = forward ? p.Q : p.W;
  a.total = I(p.N * p.C * rows * cols);
  a.rows = typename DivOf<I>::type(rows);
  a.cols = typename DivOf<I>::type(cols);
  a.divisor_override = p.divisor_override;
  a.count_include_pad = p.count_include_pad;
  const double np = p.norm_type;
  a.norm = np == 1 ? 1 : np == 2 ? 2 : 0;
  a.negative = np < 0;
  a.pw = T(np);
  a.inv_p = T(1.0 / np);
  a.full = T(p.R * p.S);
  a.one_minus_p = T(1.0 - np);
  a.p_minus_one = T(np - 1.0);
  return a;
}

// Taps of the largest window (adaptive: at most ceil(in/out) + 1 per axis).
index_t max_taps(const PoolParams& p) {
  if (!p.adaptive) return p.R * p.S;
  return ((p.H + p.P - 1) / p.P + 1) * ((p.W + p.Q - 1) / p.Q + 1);
}

template <class T, int M, class I>
void forward_as(const PoolParams& p, const Tensors& t, cudaStream_t stream) {
  const Args<T, I> a = make_args<T, I>(p, true, M == kMax || M == kMaxIndices);
  const T* x = static_cast<const T*>(t.x);
  T* y = static_cast<T*>(t.y);
  const index_t taps = max_taps(p);
  if (taps >= kWideTaps) {  // lanes per output: about a quarter of the taps, 8 to 32
    const int lanes = taps >= 128 ? 32 : taps >= 64 ? 16 : 8;
    const unsigned blocks = blocks_for(a.total, kBlock / lanes),
                   grid = blocks < kMaxBlocks ? blocks : kMaxBlocks;
    const auto pool_forward_wide8 = pool_forward_wide_kernel<T, M, I, 8>;
    const auto pool_forward_wide16 = pool_forward_wide_kernel<T, M, I, 16>;
    const auto pool_forward_wide32 = pool_forward_wide_kernel<T, M, I, 32>;
    if (lanes == 8)
      FC_LAUNCH(pool_forward_wide8, grid, kBlock, 0, stream, x, y, t.indices, a);
    else if (lanes == 16)
      FC_LAUNCH(pool_forward_wide16, grid, kBlock, 0, stream, x, y, t.indices, a);
    else
      FC_LAUNCH(pool_forward_wide32, grid, kBlock, 0, stream, x, y, t.indices, a);
  } else {  // one thread per output; 2x2 and 3x3 undilated windows unrolled where full
    const unsigned blocks = blocks_for(a.total, kBlock), grid = blocks < kMaxBlocks ? blocks : kMaxBlocks;
    const auto pool_forward = pool_forward_kernel<T, M, I, 0>;
    if constexpr (sizeof(I) == 4) {  // (the 64-bit path keeps the general kernel only)
      const bool undilated = !a.h.adaptive && !a.w.adaptive && a.h.dil == 1 && a.w.dil == 1 && a.h.k == a.w.k;
      const auto pool_forward_2x2 = pool_forward_kernel<T, M, I, 2>;
      const auto pool_forward_3x3 = pool_forward_kernel<T, M, I, 3>;
      if (undilated && a.h.k == 2) {
        FC_LAUNCH(pool_forward_2x2, grid, kBlock, 0, stream, x, y, t.indices, a);
        return;
      }
      if (undilated && a.h.k == 3) {
        FC_LAUNCH(pool_forward_3x3, grid, kBlock, 0, stream, x, y, t.indices, a);
        return;
      }
    }
    FC_LAUNCH(pool_forward, grid, kBlock, 0, stream, x, y, t.indices, a);
  }
}

template <class T, int M, class I>
void backward_as(const PoolParams& p, const Tensors& t, cudaStream_t stream) {
  const Args<T, I> a = make_args<T, I>(p, false, M == kMax);
  const unsigned blocks = blocks_for(a.total, kBlock), grid = blocks < kMaxBlocks ? blocks : kMaxBlocks;
  const T* gy = static_cast<const T*>(t.grad_y);
  const T* x = static_cast<const T*>(t.x);
  const T* y = static_cast<const T*>(t.y);
  T* gx = static_cast<T*>(t.grad_x);
  if constexpr (sizeof(I) == 4) {  // (the 64-bit path keeps the general kernel only)
    if (!a.h.adaptive && !a.w.adaptive && a.h.dil == 1 && a.w.dil == 1) {
      const auto pool_backward_plain = pool_backward_kernel<T, M, I, true>;
      FC_LAUNCH(pool_backward_plain, grid, kBlock, 0, stream, gy, t.indices, x, y, gx, a);
      return;
    }
  }
  const auto pool_backward = pool_backward_kernel<T, M, I, false>;
  FC_LAUNCH(pool_backward, grid, kBlock, 0, stream, gy, t.indices, x, y, gx, a);
}

// Runs mode M (or M_inf for an Lp of +-inf norm) in the problem's dtype and index width.
template <int M>
void forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  const PoolParams& p = pr.pool;
  if (p.N * p.C * p.P * p.Q == 0) return;
  const bool i64 = !fits_32(p, M == kMax || M == kMaxIndices);
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  if (pr.dtype == DType::f32)
    i64 ? forward_as<float, M, index_t>(p, t, stream) : forward_as<float, M, int>(p, t, stream);
  else
    i64 ? forward_as<double, M, index_t>(p, t, stream) : forward_as<double, M, int>(p, t, stream);
}

template <int M>
void backward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  const PoolParams& p = pr.pool;
  if (p.N * p.C * p.H * p.W == 0) return;
  const bool i64 = !fits_32(p, M == kMax);
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  if (pr.dtype == DType::f32)
    i64 ? backward_as<float, M, index_t>(p, t, stream) : backward_as<float, M, int>(p, t, stream);
  else
    i64 ? backward_as<double, M, index_t>(p, t, stream) : backward_as<double, M, int>(p, t, stream);
}

bool is_inf(double v) { return v == HUGE_VAL || v == -HUGE_VAL; }

}  // namespace

// ---- entry points --------------------------------------------------------------------------

void max_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  t.indices ? forward<kMaxIndices>(pr, t, ctx) : forward<kMax>(pr, t, ctx);
}
void avg_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  forward<kAvg>(pr, t, ctx);
}
void lp_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  is_inf(pr.pool.norm_type) ? forward<kLpInf>(pr, t, ctx) : forward<kLp>(pr, t, ctx);
}
void max_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  backward<kMax>(pr, t, ctx);
}
void avg_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  backward<kAvg>(pr, t, ctx);
}
void lp_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  is_inf(pr.pool.norm_type) ? backward<kLpInf>(pr, t, ctx) : backward<kLp>(pr, t, ctx);
}

// ---- distance-weighted average pooling --------------------------------------------------------
// As cpu/pool2d.cpp's: y = sum over the taps inside the input of w[r][s] * x, divided (normalize)
// by the weight of the counted taps (the window clipped to the padded input with
// count_include_pad, else the taps inside the input); w is the (R, S) window, or its factors
// wv (R) then wh (S) when separable. Forward: one thread per output, the separable sum in the
// CPU's order (each column's rows, then the columns), so a window of ones gives avg_pool2d's
// result bit for bit (the divisor is the row weight times the column weight, as there).
// Backward: a gather, one thread per input element over the windows that cover it (output rows
// ascending, then columns), each window's grad_y / divisor times the tap's weight; the separable
// sum in the CPU's order (each output row's columns, then the rows). No atomics.
namespace {

template <class I>
struct WeightedArgs {
  I H, W, P, Q, R, S, sh, sw, ph, pw, total;
  typename DivOf<I>::type rows, cols;  // split a flat index: by P (or H), by Q (or W)
  Axis<I> ah, aw;  // the window axes (undilated), for windows_covering_undilated in the backward
  bool separable, normalize, include_pad;
};

// Counted taps of a window starting at `start` on an axis of `in` values (pad before it): the
// taps inside the input [b, e), and the ones the divisor counts [cb, ce).
template <class I>
FC_HD inline void weighted_taps(I start, I in, I k, I pad, bool include_pad, I& b, I& e, I& cb, I& ce) {
  b = fc_max(I(0), -start);
  e = fc_min(k, in - start);
  cb = include_pad ? I(0) : b;
  ce = include_pad ? fc_min(k, in + pad - start) : e;
}

template <class T, class I>
FC_HD inline T weighted_divisor(const T* __restrict__ w, const WeightedArgs<I>& a, I cb_h, I ce_h, I cb_w,
                                I ce_w) {
  if (a.separable) {
    T rs = T(0), cs = T(0);
    for (I r = cb_h; r < ce_h; ++r) rs += load(w + r);
    for (I s = cb_w; s < ce_w; ++s) cs += load(w + a.R + s);
    return rs * cs;
  }
  T d = T(0);
  for (I r = cb_h; r < ce_h; ++r) {
    T c = T(0);  // the CPU's order: each column's rows, then the columns
    for (I s = cb_w; s < ce_w; ++s) c += load(w + r * a.S + s);
    d += c;
  }
  return d;
}

template <class T, class I>
__global__ void weighted_pool_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                             T* __restrict__ y, const WeightedArgs<I> a) {
  const I step = I(gridDim.x) * I(blockDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += step) {
    const I pq = a.cols.div(i), q = i - pq * a.Q, plane = a.rows.div(pq), p = pq - plane * a.P;
    const I h0 = p * a.sh - a.ph, w0 = q * a.sw - a.pw;
    I rb, re, cb_h, ce_h, sb, se, cb_w, ce_w;
    weighted_taps(h0, a.H, a.R, a.ph, a.include_pad, rb, re, cb_h, ce_h);
    weighted_taps(w0, a.W, a.S, a.pw, a.include_pad, sb, se, cb_w, ce_w);
    const T* xp = x + plane * a.H * a.W + h0 * a.W + w0;
    T acc = T(0);
    for (I s = sb; s < se; ++s) {
      T c = T(0);
      if (a.separable) {
        for (I r = rb; r < re; ++r)
          c = r == rb ? load(w + r) * load(xp + r * a.W + s) : c + load(w + r) * load(xp + r * a.W + s);
        acc = s == sb ? load(w + a.R + s) * c : acc + load(w + a.R + s) * c;
      } else {
        for (I r = rb; r < re; ++r) c += load(w + r * a.S + s) * load(xp + r * a.W + s);
        acc += c;
      }
    }
    y[i] = a.normalize ? acc / weighted_divisor(w, a, cb_h, ce_h, cb_w, ce_w) : acc;
  }
}

template <class T, class I>
__global__ void weighted_pool_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ w,
                                              T* __restrict__ grad_x, const WeightedArgs<I> a) {
  const I step = I(gridDim.x) * I(blockDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += step) {
    const I hw = a.cols.div(i), v = i - hw * a.W, plane = a.rows.div(hw), h = hw - plane * a.H;
    I p_lo, p_hi, q_lo, q_hi;
    windows_covering_undilated(a.ah, h, p_lo, p_hi);  // outputs [lo, hi) whose windows hold (h, v)
    windows_covering_undilated(a.aw, v, q_lo, q_hi);
    const T* gy = grad_y + plane * a.P * a.Q;
    T acc = T(0);
    for (I p = p_lo; p < p_hi; ++p) {
      const I r = h + a.ph - p * a.sh, h0 = p * a.sh - a.ph;
      I rb, re, cb_h, ce_h;
      weighted_taps(h0, a.H, a.R, a.ph, a.include_pad, rb, re, cb_h, ce_h);
      T c = T(0);
      for (I q = q_lo; q < q_hi; ++q) {
        const I s = v + a.pw - q * a.sw, w0 = q * a.sw - a.pw;
        T g = load(gy + p * a.Q + q);
        if (a.normalize) {
          I sb, se, cb_w, ce_w;
          weighted_taps(w0, a.W, a.S, a.pw, a.include_pad, sb, se, cb_w, ce_w);
          g = g / weighted_divisor(w, a, cb_h, ce_h, cb_w, ce_w);
        }
        c += (a.separable ? load(w + a.R + s) : load(w + r * a.S + s)) * g;
      }
      acc += a.separable ? load(w + r) * c : c;
    }
    grad_x[i] = acc;
  }
}

template <class I>
WeightedArgs<I> weighted_args(const PoolParams& p, bool forward) {
  WeightedArgs<I> a;
  a.H = I(p.H), a.W = I(p.W), a.P = I(p.P), a.Q = I(p.Q), a.R = I(p.R), a.S = I(p.S);
  a.sh = I(p.stride_h), a.sw = I(p.stride_w), a.ph = I(p.pad_h), a.pw = I(p.pad_w);
  a.total = I(p.N * p.C * (forward ? p.P * p.Q : p.H * p.W));
  a.rows = typename DivOf<I>::type(forward ? p.P : p.H);
  a.cols = typename DivOf<I>::type(forward ? p.Q : p.W);
  a.ah = make_axis<I>(p.H, p.P, p.R, p.stride_h, p.pad_h, 1, false);
  a.aw = make_axis<I>(p.W, p.Q, p.S, p.stride_w, p.pad_w, 1, false);
  a.separable = p.separable, a.normalize = p.normalize, a.include_pad = p.count_include_pad;
  return a;
}

template <class T, class I>
void weighted_run(const PoolParams& p, const Tensors& t, bool forward, cudaStream_t stream) {
  const WeightedArgs<I> a = weighted_args<I>(p, forward);
  const unsigned blocks = blocks_for(a.total, kBlock), grid = blocks < kMaxBlocks ? blocks : kMaxBlocks;
  const T* w = static_cast<const T*>(t.w);
  if (forward) {
    const auto weighted_pool_forward = weighted_pool_forward_kernel<T, I>;
    FC_LAUNCH(weighted_pool_forward, grid, kBlock, 0, stream, static_cast<const T*>(t.x), w,
              static_cast<T*>(t.y), a);
  } else {
    const auto weighted_pool_backward = weighted_pool_backward_kernel<T, I>;
    FC_LAUNCH(weighted_pool_backward, grid, kBlock, 0, stream, static_cast<const T*>(t.grad_y), w,
              static_cast<T*>(t.grad_x), a);
  }
}

void weighted(const Problem& pr, const Tensors& t, const ExecContext& ctx, bool forward) {
  const PoolParams& p = pr.pool;
  if (p.N * p.C * (forward ? p.P * p.Q : p.H * p.W) == 0) return;
  const bool i64 = !fits_32(p, false);
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  if (pr.dtype == DType::f32)
    i64 ? weighted_run<float, index_t>(p, t, forward, stream)
        : weighted_run<float, int>(p, t, forward, stream);
  else
    i64 ? weighted_run<double, index_t>(p, t, forward, stream)
        : weighted_run<double, int>(p, t, forward, stream);
}

}  // namespace

void weighted_avg_pool2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  weighted(pr, t, ctx, true);
}
void weighted_avg_pool2d_backward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  weighted(pr, t, ctx, false);
}

}  // namespace fastconv::cuda
