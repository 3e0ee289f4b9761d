// pool2d.cpp: TEMPORARY plain pooling (correct, not vectorised) until the
// vectorised one lands. Compiled once per ISA (see kernels.h). Semantics are
// torch.nn.functional's: max (NaN wins, first maximum's index), avg (window
// clipped to the padded input; count_include_pad), Lp (torch's formula), adaptive.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/kernels.h"

namespace fastconv::cpu::FC_ISA {
namespace {

struct Window {
  index_t h0, h1, w0, w1;  // taps h0, h0+dh, ... < h1 (already clipped to the input)
  index_t count;           // divisor for average pooling
};

inline index_t first_inside(index_t start, index_t dil) {
  while (start < 0) start += dil;
  return start;
}

Window window(const PoolParams& p, index_t op, index_t oq) {
  Window win;
  if (p.adaptive) {
    win.h0 = op * p.H / p.P;
    win.h1 = ((op + 1) * p.H + p.P - 1) / p.P;
    win.w0 = oq * p.W / p.Q;
    win.w1 = ((oq + 1) * p.W + p.Q - 1) / p.Q;
    win.count = (win.h1 - win.h0) * (win.w1 - win.w0);
    return win;
  }
  index_t hs = op * p.stride_h - p.pad_h, ws = oq * p.stride_w - p.pad_w;
  index_t he = std::min(hs + (p.R - 1) * p.dil_h + 1, p.H + p.pad_h);
  index_t we = std::min(ws + (p.S - 1) * p.dil_w + 1, p.W + p.pad_w);
  index_t padded = (he - hs) * (we - ws);
  win.h0 = first_inside(hs, p.dil_h);
  win.w0 = first_inside(ws, p.dil_w);
  win.h1 = std::min(he, p.H);
  win.w1 = std::min(we, p.W);
  win.count = p.count_include_pad ? padded : (win.h1 - win.h0) * (win.w1 - win.w0);
  return win;
}

}  // namespace

template <class T>
void max_pool2d(const PoolParams& p, const T* x, T* y, std::int64_t* indices) {
  const index_t dh = p.adaptive ? 1 : p.dil_h, dw = p.adaptive ? 1 : p.dil_w;
#pragma omp parallel for
  for (index_t plane = 0; plane < p.N * p.C; ++plane) {
    const T* xp = x + plane * p.H * p.W;
    for (index_t op = 0; op < p.P; ++op)
      for (index_t oq = 0; oq < p.Q; ++oq) {
        Window win = window(p, op, oq);
        T best = -std::numeric_limits<T>::infinity();
        index_t arg = win.h0 * p.W + win.w0;
        for (index_t ih = win.h0; ih < win.h1; ih += dh)
          for (index_t iw = win.w0; iw < win.w1; iw += dw) {
            T v = xp[ih * p.W + iw];
            if (v > best || std::isnan(v)) {
              best = v;
              arg = ih * p.W + iw;
              if (std::isnan(v)) goto done;
            }
          }
      done:
        const index_t o = (plane * p.P + op) * p.Q + oq;
        y[o] = best;
        if (indices) indices[o] = arg;
      }
  }
}

template <class T>
void avg_pool2d(const PoolParams& p, const T* x, T* y) {
#pragma omp parallel for
  for (index_t plane = 0; plane < p.N * p.C; ++plane) {
    const T* xp = x + plane * p.H * p.W;
    for (index_t op = 0; op < p.P; ++op)
      for (index_t oq = 0; oq < p.Q; ++oq) {
        Window win = window(p, op, oq);
        T sum = 0;
        for (index_t ih = win.h0; ih < win.h1; ++ih)
          for (index_t iw = win.w0; iw < win.w1; ++iw) sum += xp[ih * p.W + iw];
        y[(plane * p.P + op) * p.Q + oq] = sum / T(win.count);
      }
  }
}

template <class T>
void lp_pool2d(const PoolParams& p, const T* x, T* y) {
  // torch: (avg_pool2d(x^p, count_include_pad) * R*S)^(1/p); padding is always 0.
  const T pw = T(p.norm_type), inv = T(1) / pw, full = T(p.R * p.S);
#pragma omp parallel for
  for (index_t plane = 0; plane < p.N * p.C; ++plane) {
    const T* xp = x + plane * p.H * p.W;
    for (index_t op = 0; op < p.P; ++op)
      for (index_t oq = 0; oq < p.Q; ++oq) {
        Window win = window(p, op, oq);
        T sum = 0;
        for (index_t ih = win.h0; ih < win.h1; ++ih)
          for (index_t iw = win.w0; iw < win.w1; ++iw) sum += std::pow(xp[ih * p.W + iw], pw);
        y[(plane * p.P + op) * p.Q + oq] = std::pow(sum / T(win.count) * full, inv);
      }
  }
}

#define FC_INSTANTIATE(T)                                                        \
  template void max_pool2d<T>(const PoolParams&, const T*, T*, std::int64_t*); \
  template void avg_pool2d<T>(const PoolParams&, const T*, T*);                \
  template void lp_pool2d<T>(const PoolParams&, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)

}  // namespace fastconv::cpu::FC_ISA
