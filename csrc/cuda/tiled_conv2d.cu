// tiled_conv2d.cu: tiled and locally connected convolution on the GPU, float and double, forward,
// data gradient and weight gradient (cpu/tiled_conv2d.cpp's rows on the CUDA device). With
// x (N, C, H, W), w (TH, TW, K, Cg = C/groups, R, S), bias and grad_bias (TH, TW, K), gy = grad_y
// (N, K, P, Q), output (p, q) using set s = (p % TH, q % TW), L = Cg*R*S:
//   forward  y[n,k,p,q]    = bias[s,k] + sum over l < L of patch[n,p,q][g*L + l] * w[s,k,l]
//   data     gx[n,c,ih,iw] = sum over the (p, q, r, s') reading (ih, iw) and k of c's group of
//                            gy[n,k,p,q] * w[set(p,q), k, c % Cg, r, s']
//   weight   gw[s,k,l]     = sum over the positions of set s and n of gy[n,k,p,q] * patch[n,p,q][g*L + l]
//            gb[s,k]       = the same sums of gy (in double); with p.channel_bias, bias and gb are
//                            (K,): gb[k] sums every position's gy of channel k (in double)
// Idea: forward, a warp per (position, output channel): its lanes read the weight row w[s,k,:]
//   32 consecutive values at a time (coalesced; at batch 1 the weights are read once, which is
//   the cost), gather the matching input taps, and a shuffle reduction adds the lanes' sums in a
//   fixed order, once per image. Data gradient: the gather form, a thread per input value
//   (no atomics). Weight gradient: a thread per weight (consecutive threads, consecutive taps),
//   summing its set's positions and the images in a fixed order. Every result is the same on
//   every run and for any thread order.
// Limits: first rows, not tuned: the data gradient reads the weights K/g-strided (uncoalesced),
//   the weight gradient re-reads x per weight, and a warp per output leaves lanes idle when
//   L < 32 (1x1 kernels on few channels).
#include "cuda/kernels.h"
#include "cuda/portable.cuh"

namespace fastconv::cuda {
namespace tiled_conv2d_detail {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <class T>
__device__ inline T patch_value(const ConvParams& p, const T* __restrict__ xn, index_t c, index_t r,
                                index_t s, index_t oh, index_t ow) {
  const index_t ih = oh * p.stride_h - p.pad_h + r * p.dil_h, iw = ow * p.stride_w - p.pad_w + s * p.dil_w;
  return ih >= 0 && ih < p.H && iw >= 0 && iw < p.W ? xn[(c * p.H + ih) * p.W + iw] : T(0);
}

// Grid: (P*Q*K) warps, kThreads / 32 a block; warp item = pos * K + k.
template <class T>
__global__ void tiled_forward(const ConvParams p, const T* __restrict__ x, const T* __restrict__ w,
                              const T* __restrict__ bias, T* __restrict__ y) {
  const index_t item = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = int(threadIdx.x) % kWarp;
  const index_t PQ = p.P * p.Q, RS = p.R * p.S, Cg = p.C / p.groups, L = Cg * RS;
  if (item >= PQ * p.K) return;  // whole warps leave together
  const index_t pos = item / p.K, k = item % p.K, oh = pos / p.Q, ow = pos % p.Q;
  const index_t set = (oh % p.tiles_h) * p.tiles_w + ow % p.tiles_w, g = k / (p.K / p.groups);
  const T* wrow = w + (set * p.K + k) * L;
  for (index_t n = 0; n < p.N; ++n) {
    const T* xn = x + (n * p.C + g * Cg) * p.H * p.W;
    T acc = 0;
    for (index_t l = lane; l < L; l += kWarp) {
      const index_t c = l / RS, rs = l % RS;
      acc += patch_value(p, xn, c, rs / p.S, rs % p.S, oh, ow) * __ldg(wrow + l);
    }
    for (int d = kWarp / 2; d > 0; d /= 2) acc += __shfl_down_sync(0xffffffffu, acc, d);
    if (lane == 0)
      y[(n * p.K + k) * PQ + pos] = acc + (bias ? bias[(p.channel_bias ? 0 : set) * p.K + k] : T(0));
  }
}

// Grid: one thread per input value (n, c, ih, iw).
template <class T>
__global__ void tiled_backward_data(const ConvParams p, const T* __restrict__ gy, const T* __restrict__ w,
                                    T* __restrict__ gx) {
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.N * p.C * p.H * p.W) return;
  const index_t iw = i % p.W, ih = (i / p.W) % p.H, c = (i / (p.W * p.H)) % p.C, n = i / (p.W * p.H * p.C);
  const index_t Cg = p.C / p.groups, Kg = p.K / p.groups, g = c / Cg, RS = p.R * p.S, L = Cg * RS;
  const index_t PQ = p.P * p.Q;
  T acc = 0;
  for (index_t r = 0; r < p.R; ++r) {
    const index_t th = ih + p.pad_h - r * p.dil_h;  // = oh * stride_h for the output row reading ih
    if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.P) continue;
    const index_t oh = th / p.stride_h;
    for (index_t s = 0; s < p.S; ++s) {
      const index_t tw = iw + p.pad_w - s * p.dil_w;
      if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.Q) continue;
      const index_t ow = tw / p.stride_w, pos = oh * p.Q + ow;
      const index_t set = (oh % p.tiles_h) * p.tiles_w + ow % p.tiles_w;
      const T* wk = w + (set * p.K + g * Kg) * L + (c % Cg) * RS + r * p.S + s;
      const T* gyk = gy + (n * p.K + g * Kg) * PQ + pos;
      for (index_t k = 0; k < Kg; ++k) acc += gyk[k * PQ] * __ldg(wk + k * L);
    }
  }
  gx[i] = acc;
}

// Grid: one thread per weight (set, k, l).
template <class T>
__global__ void tiled_backward_weight(const ConvParams p, const T* __restrict__ gy, const T* __restrict__ x,
                                      T* __restrict__ gw) {
  const index_t RS = p.R * p.S, Cg = p.C / p.groups, L = Cg * RS, PQ = p.P * p.Q;
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.tiles_h * p.tiles_w * p.K * L) return;
  const index_t l = i % L, k = (i / L) % p.K, set = i / (L * p.K);
  const index_t c = (k / (p.K / p.groups)) * Cg + l / RS, r = (l % RS) / p.S, s = l % p.S;
  T acc = 0;
  for (index_t oh = set / p.tiles_w; oh < p.P; oh += p.tiles_h)
    for (index_t ow = set % p.tiles_w; ow < p.Q; ow += p.tiles_w)
      for (index_t n = 0; n < p.N; ++n)
        acc +=
            gy[(n * p.K + k) * PQ + oh * p.Q + ow] * patch_value(p, x + n * p.C * p.H * p.W, c, r, s, oh, ow);
  gw[i] = acc;
}

// Grid: one thread per (set, k).
template <class T>
__global__ void tiled_backward_bias(const ConvParams p, const T* __restrict__ gy, T* __restrict__ gb) {
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.tiles_h * p.tiles_w * p.K) return;
  const index_t k = i % p.K, set = i / p.K, PQ = p.P * p.Q;
  double acc = 0.0;
  for (index_t oh = set / p.tiles_w; oh < p.P; oh += p.tiles_h)
    for (index_t ow = set % p.tiles_w; ow < p.Q; ow += p.tiles_w)
      for (index_t n = 0; n < p.N; ++n) acc += double(gy[(n * p.K + k) * PQ + oh * p.Q + ow]);
  gb[i] = T(acc);
}

// Grid: a warp per output channel k (a channel bias shared by every set). Lane j sums the
// elements j, j + 32, ... of channel k's N x P*Q values (images then positions: coalesced), in
// double; the shuffle adds the lanes in a fixed order.
template <class T>
__global__ void tiled_backward_channel_bias(const ConvParams p, const T* __restrict__ gy,
                                            T* __restrict__ gb) {
  const index_t k = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = int(threadIdx.x) % kWarp;
  if (k >= p.K) return;  // whole warps leave together
  const index_t PQ = p.P * p.Q;
  double acc = 0.0;
  for (index_t i = lane; i < p.N * PQ; i += kWarp) acc += double(gy[((i / PQ) * p.K + k) * PQ + i % PQ]);
  for (int d = kWarp / 2; d > 0; d /= 2) acc += __shfl_down_sync(0xffffffffu, acc, d);
  if (lane == 0) gb[k] = T(acc);
}

template <class T>
void forward(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  const auto kernel = tiled_forward<T>;
  FC_LAUNCH(kernel, blocks_for(p.P * p.Q * p.K * kWarp, kThreads), kThreads, 0, ctx.stream, p,
            static_cast<const T*>(t.x), static_cast<const T*>(t.w), static_cast<const T*>(t.bias),
            static_cast<T*>(t.y));
}

template <class T>
void backward_data(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  const auto kernel = tiled_backward_data<T>;
  FC_LAUNCH(kernel, blocks_for(p.N * p.C * p.H * p.W, kThreads), kThreads, 0, ctx.stream, p,
            static_cast<const T*>(t.grad_y), static_cast<const T*>(t.w), static_cast<T*>(t.grad_x));
}

template <class T>
void backward_weight(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  if (t.grad_w) {
    const auto kernel = tiled_backward_weight<T>;
    FC_LAUNCH(kernel, blocks_for(p.tiles_h * p.tiles_w * p.K * (p.C / p.groups) * p.R * p.S, kThreads),
              kThreads, 0, ctx.stream, p, static_cast<const T*>(t.grad_y), static_cast<const T*>(t.x),
              static_cast<T*>(t.grad_w));
  }
  if (t.grad_bias && p.channel_bias) {
    const auto kernel = tiled_backward_channel_bias<T>;
    FC_LAUNCH(kernel, blocks_for(p.K * kWarp, kThreads), kThreads, 0, ctx.stream, p,
              static_cast<const T*>(t.grad_y), static_cast<T*>(t.grad_bias));
  } else if (t.grad_bias) {
    const auto kernel = tiled_backward_bias<T>;
    FC_LAUNCH(kernel, blocks_for(p.tiles_h * p.tiles_w * p.K, kThreads), kThreads, 0, ctx.stream, p,
              static_cast<const T*>(t.grad_y), static_cast<T*>(t.grad_bias));
  }
}

}  // namespace tiled_conv2d_detail

void tiled_conv2d_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    tiled_conv2d_detail::forward<double>(pr.conv, t, ctx);
  else
    tiled_conv2d_detail::forward<float>(pr.conv, t, ctx);
}

void tiled_conv2d_backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    tiled_conv2d_detail::backward_data<double>(pr.conv, t, ctx);
  else
    tiled_conv2d_detail::backward_data<float>(pr.conv, t, ctx);
}

void tiled_conv2d_backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    tiled_conv2d_detail::backward_weight<double>(pr.conv, t, ctx);
  else
    tiled_conv2d_detail::backward_weight<float>(pr.conv, t, ctx);
}

}  // namespace fastconv::cuda
