// conv2d_direct.cu: direct convolution (cross-correlation) on the GPU, float and double, forward,
// data gradient and weight gradient, for every problem a ConvParams describes (params.h): any
// stride, per-side padding (pad_h/pad_w top/left; rows and columns past the input read zeros),
// dilation, groups, N >= 0. With x (N, C, H, W), w (K, Cg = C/groups, R, S), gy = grad_y
// (N, K, P, Q), NCHW and contiguous, ih = p*sh - ph + r*dh, iw = q*sw - pw + s*dw, g = k's group:
//   forward  y[n,k,p,q]    = bias[k] + sum over c < Cg, r, s of x[n, g*Cg + c, ih, iw] * w[k,c,r,s]
//   data     gx[n,c,ih,iw] = sum over k of c's group and the (p, q, r, s) reading (ih, iw) of
//                            gy[n,k,p,q] * w[k, c % Cg, r, s]
//   weight   gw[k,c,r,s]   = sum over n, p, q of gy[n,k,p,q] * x[n, g*Cg + c, ih, iw]
// (the bias gradient is conv2d_backward_bias.cu's, called by the weight op when asked for).
//
// Idea (the classic one-output-per-thread direct convolution, register-blocked over channels):
//   forward, general: a thread owns one output pixel (n, p, q) and KB (1, 4, 8 or 16) output
//     channels of one group, accumulated in registers. Threads of a block take consecutive
//     pixels (coalesced along q) and share the KB channels, whose weights the block stages in
//     shared memory as [c][r*S+s][KB] (a chunk of CB input channels at a time), so each input
//     value loaded feeds KB FMAs and the KB weights are broadcast vector loads (ld.shared.v4).
//     The tap loops test the borders once per (r, s) and run the channel loop inside, free of
//     tests. KB is the largest block that wastes at most a quarter of the FMAs on padding
//     channels and still leaves 2^17 threads; small channel counts (the first layer 3->64 7x7/2
//     of a batch) get KB = 16: 16 FMAs per input load, all the weights staged at once.
//   forward, depthwise (C/groups == 1, any channel multiplier M = K/groups): a block computes an
//     output tile of TZ planes (n, c) x TP*VP rows x TQ columns (blockDim (TQ, TP, TZ), 256
//     threads, TQ and TP sized to the map so 7x7 and 14x14 maps keep most threads busy) and
//     stages the input tile with its halo, (TP*VP-1)*sh + (R-1)*dh + 1 rows by (TQ-1)*sw +
//     (S-1)*dw + 1 columns per plane, in dynamic shared memory; each thread then computes its
//     column's VP output rows for the M output channels of its plane. 3x3 kernels (dilation 1,
//     vertical stride 1 or 2: MobileNet's) have their own kernel with VP = 4 (2, 1 when that
//     leaves too few threads): the (VP-1)*sh + 3 x 3 input values and the 9 weights sit in
//     registers (stride 1: 18 shared loads per 36 FMAs). Other shapes: VP = 1, runtime taps.
//     Tiles whose halo does not fit (huge dilations) go to the general kernel.
//   data gradient: the gather form of the same loop (no atomics, deterministic): a thread owns
//     one input pixel (n, ih, iw) and CB input channels of one group; output row p reads row
//     ih through tap r when ih + ph - r*dh = p*sh, so each r (and s) is kept when that is a
//     non-negative multiple of the stride below P*sh; the weights of a chunk of KC output
//     channels are staged as [k][r*S+s][CB].
//   weight gradient: a block owns one (k, c) pair and a chunk of TB (1, 4 or 9) taps, held in
//     registers; its threads walk the N*P*Q output positions blockDim.x apart (small planes
//     crossed image to image), each adding gy * x for its taps, and one block reduction for the
//     TB sums (through shared memory: 32 lanes per tap add a warp's worth of entries each, then
//     one thread per tap adds the 32 partial sums; two barriers for all taps, where shuffles
//     would take 5 rounds per tap) gives each sum in a fixed order. When the blocks are too few
//     to fill the GPU (depthwise: K pairs), the N*P*Q terms are split into parts (ranges of
//     images x ranges of output pixels), each block writes its partial sums to the workspace,
//     and a second kernel adds the parts in order: the same result on every run, no atomics.
// Limits: the general kernels read their inputs from L1/L2 rather than from a shared tile, and a
//   thread computes one pixel, so many-channel layers run far from peak (the im2col row's GEMM
//   is the fast path there); the depthwise tile is read with stride sw (2-way bank conflicts at
//   stride 2); the depthwise data gradient is the general gather (one input channel a thread);
//   the weight gradient's 1x1 layers with many channels re-read gy once per input channel
//   (again im2col's case). Spatial extents (H, W, P, Q and the padded spans) must fit in 32 bits
//   (supports() says so); offsets into tensors are 64-bit. Kernels are built without
//   __launch_bounds__: with it, ptxas (CUDA 13) capped registers at occupancy steps and spilled.
#include <string>

#include "cuda/kernels.h"
#include "cuda/portable.cuh"

namespace fastconv::cuda {
namespace conv2d_direct_detail {

// ============================== helpers ==============================================

constexpr int kThreads = 256;                  // threads per block of every kernel here
constexpr int kWarp = 32;
constexpr index_t kWeightSmemBytes = 16384;    // shared memory for staged weights per block
constexpr index_t kDepthwiseSmemBytes = 49152; // most shared memory a depthwise tile may take
constexpr index_t kFillThreads = index_t(1) << 17;  // threads that keep a large GPU busy (~1k per SM)
constexpr index_t kWeightTargetBlocks = 1024;  // weight gradient: blocks wanted before splitting
constexpr index_t kWeightMinPerSplit = 2048;   // weight gradient: fewest N*P*Q terms in one part
constexpr index_t kIntMax = 0x7fffffff;

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// Channel blocks: the largest of 16, 8, 4 whose padding wastes at most a quarter of the
// FMAs for `count` channels of a group (1 when the group has one channel).
inline int channel_block(index_t count, index_t threads_per_block_of_channels) {
  if (count <= 1) return 1;
  for (int b : {16, 8, 4}) {
    const index_t padded = ceil_div(count, b) * b;
    // Fewer threads than kFillThreads: smaller blocks, more threads (unless already at 4).
    if (4 * padded <= 5 * count && threads_per_block_of_channels * ceil_div(count, b) >= kFillThreads)
      return b;
  }
  return 4;
}

// Staging: `unit` values per chunk element (a channel's KB x R x S weights); returns the chunk
// (elements per shared-memory load), or 0 when one element does not fit (weights read from
// global memory instead).
inline index_t staged_chunk(index_t unit_values, index_t elem_bytes, index_t count) {
  const index_t unit = unit_values * elem_bytes;
  if (unit > kWeightSmemBytes) return 0;
  index_t chunk = kWeightSmemBytes / unit;
  return chunk < count ? chunk : count;
}

// t / s for t >= 0 without a division for the usual strides 1 and 2 (s is uniform: no divergence).
__device__ inline int div_stride(int t, int s) { return s == 1 ? t : s == 2 ? t >> 1 : t / s; }

// Sums over the block (blockDim.x a multiple of 32, at most kThreads) of each thread's TB
// values acc[t], each in a fixed order: every value goes to shared memory, lane l of value t adds
// the entries l, l + 32, l + 64, ... (one per warp), then thread t adds its 32 partial sums.
// Two barriers and no shuffles for all TB sums at once (shuffles would cost 5 rounds a value).
// Returns sum t in thread t < TB (other threads: unspecified). scratch: TB x kThreads values.
template <class T, int TB>
__device__ inline T block_sums(const T (&acc)[TB], T (*scratch)[kThreads]) {
  const int tid = int(threadIdx.x), threads = int(blockDim.x);
  for (int t = 0; t < TB; ++t) scratch[t][tid] = acc[t];
  __syncthreads();
  for (int j = tid; j < TB * kWarp; j += threads) {  // chain (t, l): scratch[t][l + 32 i], own column
    const int t = j / kWarp, l = j % kWarp;
    T s = scratch[t][l];
    for (int i = l + kWarp; i < threads; i += kWarp) s += scratch[t][i];
    scratch[t][l] = s;
  }
  __syncthreads();
  T s = T(0);
  if (tid < TB)
    for (int l = 0; l < kWarp; ++l) s += scratch[tid][l];
  return s;
}

// ============================== forward, general ==============================================
// x (N, C, H, W), w (K, Cg, R, S), bias (K) or null, y (N, K, P, Q); x and y start at the
// launch's first image, `images` of them (images * P * Q + kThreads < 2^31: 32-bit pixels).
// Grid: blockIdx.x = pixel_block * kblocks + kb, kblocks = groups * ceil(Kg / KB); a pixel block
// is kThreads consecutive (n, p, q). Staged: dynamic shared memory of CB * R * S * KB values
// (CB input channels' weights for the KB output channels, [c][r*S+s][KB], zero past the group's
// last channel); not staged: weights read through __ldg (kernels too large to stage).
template <class T, int KB, bool Staged>
__global__ void direct_forward_general(const ConvParams p, const T* __restrict__ x, const T* __restrict__ w,
                                       const T* __restrict__ bias, T* __restrict__ y, int images, int kblocks,
                                       int CB) {
  FC_DYNAMIC_SHARED(T, ws);
  const int Cg = int(p.C) / int(p.groups), Kg = int(p.K) / int(p.groups), R = int(p.R), S = int(p.S),
            RS = R * S;
  const int H = int(p.H), W = int(p.W), P = int(p.P), Q = int(p.Q), PQ = P * Q;
  const index_t HW = index_t(H) * W;
  const int per_group = kblocks / int(p.groups);
  const int kb = int(blockIdx.x % unsigned(kblocks));
  const int pix = int(blockIdx.x / unsigned(kblocks)) * kThreads + int(threadIdx.x);
  const bool active = pix < images * PQ;
  const int g = kb / per_group;
  const int kl0 = (kb % per_group) * KB;  // first output channel within the group
  const int nk = fc_min(KB, Kg - kl0);
  const index_t k0 = index_t(g) * Kg + kl0;
  const int n = active ? pix / PQ : 0, pq = active ? pix - n * PQ : 0;
  const int oh = pq / Q, ow = pq - oh * Q;
  const int ih0 = oh * int(p.stride_h) - int(p.pad_h), iw0 = ow * int(p.stride_w) - int(p.pad_w);
  const int dh = int(p.dil_h), dw = int(p.dil_w);
  const T* xg = x + (n * p.C + index_t(g) * Cg) * HW;

  T acc[KB];
  for (int b = 0; b < KB; ++b) acc[b] = T(0);

  const int chunk = Staged ? CB : Cg;
  for (int c0 = 0; c0 < Cg; c0 += chunk) {
    const int cb = fc_min(chunk, Cg - c0);
    if (Staged) {
      __syncthreads();  // the previous chunk's readers are done
      const int vals = cb * RS;
      for (int i = int(threadIdx.x); i < KB * vals; i += kThreads) {
        const int b = i / vals, j = i - b * vals;  // j = c*RS + r*S + s within the chunk
        ws[j * KB + b] = b < nk ? w[((k0 + b) * Cg + c0) * RS + j] : T(0);
      }
      __syncthreads();
    }
    if (!active) continue;
    // Taps in the padding multiply zeros rather than being skipped: the reference's products
    // (a NaN/Inf weight times the padding is NaN). A warp runs every tap any of its threads
    // needs anyway, so this costs only warps lying wholly in the padding's band.
    for (int r = 0; r < R; ++r) {
      const int ih = ih0 + r * dh;
      const bool row_in = unsigned(ih) < unsigned(H);
      for (int s = 0; s < S; ++s) {
        const int iw = iw0 + s * dw;
        const bool in = row_in && unsigned(iw) < unsigned(W);
        const T* xp = xg + c0 * HW + (in ? index_t(ih) * W + iw : 0);
        const int tap = r * S + s;
        for (int c = 0; c < cb; ++c, xp += HW) {
          const T xv = in ? __ldg(xp) : T(0);
          if (Staged) {
            const T* wt = ws + (c * RS + tap) * KB;
            for (int b = 0; b < KB; ++b) acc[b] += xv * wt[b];
          } else {
            const T* wt = w + (k0 * Cg + c0 + c) * RS + tap;
            const index_t wk = index_t(Cg) * RS;  // between output channels
            for (int b = 0; b < KB; ++b) acc[b] += xv * __ldg(wt + fc_min(b, nk - 1) * wk);
          }
        }
      }
    }
  }
  if (!active) return;
  T* yp = y + (n * p.K + k0) * PQ + pq;
  for (int b = 0; b < KB; ++b)
    if (b < nk) yp[index_t(b) * PQ] = acc[b] + (bias ? __ldg(bias + k0 + b) : T(0));
}

// ============================== forward, depthwise ============================================
// x (N, C, H, W), w (K, 1, R, S), bias (K) or null, y (N, K, P, Q) with groups == C, K = C * M;
// x and y start at the launch's first image, `images` of them (images * C < 2^31).
// Block (TQ, TP, TZ): z-slice z computes plane nc = plane_block * TZ + z (nc = n*C + c) over the
// output tile rows [tp*TP*VP, +TP*VP) x columns [tq*TQ, +TQ), for the M output channels
// c*M .. c*M+M-1; thread (x, y) owns column q0 + x and the VP rows from p0 + y*VP. Dynamic shared
// memory: TZ planes of IH x IW input values (the tile and its halo, zeros outside the image).
// Grid: blockIdx.x = (plane_block * tiles_p + tp) * tiles_q + tq.

// Position of the block's tile and the staging of its TZ input planes (all threads, then a
// barrier); returns the thread's plane (may be >= planes: then it has nothing to compute).
struct DepthwiseBlock {
  int plane0, p0, q0;
};
template <class T>
__device__ inline DepthwiseBlock stage_depthwise_tile(const ConvParams& p, const T* __restrict__ x, T* tile,
                                                      int images, int tiles_p, int tiles_q, int VP, int IH,
                                                      int IW) {
  const int TQ = int(blockDim.x), TP = int(blockDim.y), TZ = int(blockDim.z);
  const int H = int(p.H), W = int(p.W);
  unsigned b = blockIdx.x;
  const int tq = int(b % unsigned(tiles_q));
  b /= unsigned(tiles_q);
  const int tp = int(b % unsigned(tiles_p));
  DepthwiseBlock d;
  d.plane0 = int(b / unsigned(tiles_p)) * TZ;
  d.p0 = tp * TP * VP;
  d.q0 = tq * TQ;
  const int ih0 = d.p0 * int(p.stride_h) - int(p.pad_h), iw0 = d.q0 * int(p.stride_w) - int(p.pad_w);
  const int planes = images * int(p.C);
  const index_t HW = index_t(H) * W;
  const int tid = int(threadIdx.x) + TQ * (int(threadIdx.y) + TP * int(threadIdx.z));
  const int tile_vals = IH * IW;
  for (int i = tid; i < TZ * tile_vals; i += kThreads) {
    const int z = i / tile_vals, j = i - z * tile_vals;
    const int ii = j / IW, jj = j - ii * IW;
    const int ih = ih0 + ii, iw = iw0 + jj;
    T v = T(0);
    if (d.plane0 + z < planes && unsigned(ih) < unsigned(H) && unsigned(iw) < unsigned(W))
      v = __ldg(x + (d.plane0 + z) * HW + index_t(ih) * W + iw);
    tile[i] = v;
  }
  __syncthreads();
  return d;
}

// Any R x S, stride, dilation; one output row per thread (VP = 1).
template <class T>
__global__ void direct_forward_depthwise(const ConvParams p, const T* __restrict__ x, const T* __restrict__ w,
                                         const T* __restrict__ bias, T* __restrict__ y, int images,
                                         int tiles_p, int tiles_q, int IH, int IW) {
  FC_DYNAMIC_SHARED(T, tile);
  const DepthwiseBlock d = stage_depthwise_tile(p, x, tile, images, tiles_p, tiles_q, 1, IH, IW);
  const int P = int(p.P), Q = int(p.Q), R = int(p.R), S = int(p.S), C = int(p.C), M = int(p.K) / C;
  const int nc = d.plane0 + int(threadIdx.z);
  const int oh = d.p0 + int(threadIdx.y), ow = d.q0 + int(threadIdx.x);
  if (nc >= images * C || oh >= P || ow >= Q) return;
  const T* t0 = tile + int(threadIdx.z) * IH * IW + int(threadIdx.y) * int(p.stride_h) * IW +
                int(threadIdx.x) * int(p.stride_w);
  const int dh = int(p.dil_h) * IW, dw = int(p.dil_w);
  const int c = nc % C;
  const index_t PQ = index_t(P) * Q;
  T* yp = y + index_t(nc) * M * PQ + oh * Q + ow;  // (n*K + c*M) * PQ: n*K + c*M == nc*M
  for (int m = 0; m < M; ++m) {
    const index_t k = index_t(c) * M + m;
    const T* wk = w + k * R * S;
    T acc = T(0);
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < S; ++s) acc += t0[r * dh + s * dw] * __ldg(wk + r * S + s);
    if (bias) acc += __ldg(bias + k);
    yp[m * PQ] = acc;
  }
}

// 3x3, dilation 1, vertical stride SH (1 or 2), any horizontal stride: a thread computes VP
// consecutive output rows of its column from (VP-1)*SH + 3 input rows x 3 columns held in
// registers (stride 1, VP = 4: 18 shared loads for 36 FMAs instead of 36), and the 9 weights
// of each output channel in registers.
template <class T, int SH, int VP>
__global__ void direct_forward_depthwise3x3(const ConvParams p, const T* __restrict__ x,
                                            const T* __restrict__ w, const T* __restrict__ bias,
                                            T* __restrict__ y, int images, int tiles_p, int tiles_q, int IH,
                                            int IW) {
  FC_DYNAMIC_SHARED(T, tile);
  const DepthwiseBlock d = stage_depthwise_tile(p, x, tile, images, tiles_p, tiles_q, VP, IH, IW);
  const int P = int(p.P), Q = int(p.Q), C = int(p.C), M = int(p.K) / C;
  const int nc = d.plane0 + int(threadIdx.z);
  const int oh0 = d.p0 + int(threadIdx.y) * VP, ow = d.q0 + int(threadIdx.x);
  if (nc >= images * C || oh0 >= P || ow >= Q) return;
  constexpr int kRows = (VP - 1) * SH + 3;
  const T* t0 = tile + int(threadIdx.z) * IH * IW + int(threadIdx.y) * VP * SH * IW +
                int(threadIdx.x) * int(p.stride_w);
  T v[kRows][3];
  for (int i = 0; i < kRows; ++i)
    for (int s = 0; s < 3; ++s) v[i][s] = t0[i * IW + s];
  const int c = nc % C, rows = fc_min(VP, P - oh0);
  const index_t PQ = index_t(P) * Q;
  T* yp = y + index_t(nc) * M * PQ + oh0 * Q + ow;  // (n*K + c*M) * PQ: n*K + c*M == nc*M
  for (int m = 0; m < M; ++m) {
    const index_t k = index_t(c) * M + m;
    T wk[9];
    for (int i = 0; i < 9; ++i) wk[i] = __ldg(w + k * 9 + i);
    const T b = bias ? __ldg(bias + k) : T(0);
    for (int j = 0; j < VP; ++j) {
      T acc = T(0);
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) acc += v[j * SH + r][s] * wk[r * 3 + s];
      if (j < rows) yp[m * PQ + j * Q] = acc + b;
    }
  }
}

// ============================== data gradient (gather) ========================================
// gy (N, K, P, Q), w (K, Cg, R, S), gx (N, C, H, W); gy and gx start at the launch's first
// image, `images` of them (images * H * W + kThreads < 2^31: 32-bit pixels).
// Grid: blockIdx.x = pixel_block * cblocks + cb, cblocks = groups * ceil(Cg / CB); a pixel block
// is kThreads consecutive (n, ih, iw). Staged: dynamic shared memory of KC * R * S * CB values
// (KC output channels' weights for the CB input channels, [k][r*S+s][CB], zero past the group).
template <class T, int CB, bool Staged>
__global__ void direct_backward_data(const ConvParams p, const T* __restrict__ gy, const T* __restrict__ w,
                                     T* __restrict__ gx, int images, int cblocks, int KC) {
  FC_DYNAMIC_SHARED(T, ws);
  const int Cg = int(p.C) / int(p.groups), Kg = int(p.K) / int(p.groups), R = int(p.R), S = int(p.S),
            RS = R * S;
  const int H = int(p.H), W = int(p.W), P = int(p.P), Q = int(p.Q), HW = H * W;
  const index_t PQ = index_t(P) * Q;
  const int sh = int(p.stride_h), sw = int(p.stride_w), dh = int(p.dil_h), dw = int(p.dil_w);
  const int per_group = cblocks / int(p.groups);
  const int cbi = int(blockIdx.x % unsigned(cblocks));
  const int pix = int(blockIdx.x / unsigned(cblocks)) * kThreads + int(threadIdx.x);
  const bool active = pix < images * HW;
  const int g = cbi / per_group;
  const int cl0 = (cbi % per_group) * CB;  // first input channel within the group
  const int nc = fc_min(CB, Cg - cl0);
  const index_t kg0 = index_t(g) * Kg;     // the group's first output channel
  const int n = active ? pix / HW : 0, hw = active ? pix - n * HW : 0;
  const int ih = hw / W, iw = hw - ih * W;
  const int th0 = ih + int(p.pad_h), tw0 = iw + int(p.pad_w);

  T acc[CB];
  for (int b = 0; b < CB; ++b) acc[b] = T(0);

  const int chunk = Staged ? KC : Kg;
  for (int k0 = 0; k0 < Kg; k0 += chunk) {
    const int kc = fc_min(chunk, Kg - k0);
    if (Staged) {
      __syncthreads();
      const int vals = CB * RS;
      for (int i = int(threadIdx.x); i < kc * vals; i += kThreads) {
        const int kk = i / vals, j = i - kk * vals, b = j / RS, rs = j - b * RS;
        ws[(kk * RS + rs) * CB + b] = b < nc ? w[((kg0 + k0 + kk) * Cg + cl0 + b) * RS + rs] : T(0);
      }
      __syncthreads();
    }
    if (!active) continue;
    for (int r = 0; r < R; ++r) {
      const int th = th0 - r * dh;  // = oh * sh when tap r of output row oh reads row ih
      if (th < 0) break;           // and for every later r
      const int oh = div_stride(th, sh);
      if (oh * sh != th || oh >= P) continue;
      for (int s = 0; s < S; ++s) {
        const int tw = tw0 - s * dw;
        if (tw < 0) break;
        const int ow = div_stride(tw, sw);
        if (ow * sw != tw || ow >= Q) continue;
        const T* gp = gy + (n * p.K + kg0 + k0) * PQ + index_t(oh) * Q + ow;
        const int tap = r * S + s;
        for (int k = 0; k < kc; ++k, gp += PQ) {
          const T gv = __ldg(gp);
          if (Staged) {
            const T* wt = ws + (k * RS + tap) * CB;
            for (int b = 0; b < CB; ++b) acc[b] += gv * wt[b];
          } else {
            const T* wt = w + ((kg0 + k0 + k) * Cg + cl0) * RS + tap;
            for (int b = 0; b < CB; ++b) acc[b] += gv * __ldg(wt + fc_min(b, nc - 1) * RS);
          }
        }
      }
    }
  }
  if (!active) return;
  T* gp = gx + (n * p.C + index_t(g) * Cg + cl0) * HW + hw;
  for (int b = 0; b < CB; ++b)
    if (b < nc) gp[index_t(b) * HW] = acc[b];
}

// ============================== weight gradient ===============================================
// gy (N, K, P, Q), x (N, C, H, W) -> out: gw (K, Cg, R, S) when there is one part, else the
// partial sums (K*Cg*R*S, parts) in the workspace. The N*P*Q terms are split into sn x sp parts:
// images [sn_i*nlen, +nlen) x output pixels [sp_i*plen, +plen) (empty parts write zeros).
// Grid: blockIdx.x = ((pair * chunks + chunk) * sn + sn_i) * sp + sp_i, pair = k*Cg + c, chunk =
// taps [chunk*TB, +TB) of the R*S. Block: 32 .. kThreads threads (a multiple of 32).
template <class T, int TB>
__global__ void direct_backward_weight(const ConvParams p, const T* __restrict__ gy, const T* __restrict__ x,
                                       T* __restrict__ out, int chunks, int sn, int sp, index_t nlen,
                                       int plen) {
  __shared__ T scratch[TB][kThreads];
  const int Cg = int(p.C) / int(p.groups), Kg = int(p.K) / int(p.groups), S = int(p.S), RS = int(p.R) * S;
  const int H = int(p.H), W = int(p.W), P = int(p.P), Q = int(p.Q), PQ = P * Q;
  const index_t HW = index_t(H) * W;
  const int sh = int(p.stride_h), sw = int(p.stride_w);
  unsigned b = blockIdx.x;
  const int sp_i = int(b % unsigned(sp));
  b /= unsigned(sp);
  const int sn_i = int(b % unsigned(sn));
  b /= unsigned(sn);
  const int chunk = int(b % unsigned(chunks));
  const unsigned pair = b / unsigned(chunks);
  const unsigned ku = pair / unsigned(Cg);  // K * Cg < 2^31 (supports())
  const index_t k = ku, c = index_t(ku / unsigned(Kg)) * Cg + pair % unsigned(Cg);
  const int t0 = chunk * TB, nt = fc_min(TB, RS - t0);

  int offh[TB], offw[TB];  // the taps' offsets from (oh*sh, ow*sw)
  for (int t = 0; t < TB; ++t) {
    const int tap = t0 + fc_min(t, nt - 1), r = tap / S, s = tap - r * S;
    offh[t] = r * int(p.dil_h) - int(p.pad_h);
    offw[t] = s * int(p.dil_w) - int(p.pad_w);
  }
  T acc[TB];
  for (int t = 0; t < TB; ++t) acc[t] = T(0);

  // Terms (n, pq) of the part, blockDim.x apart in the order n-major, advanced by carries.
  const index_t n_lo = sn_i * nlen, n_hi = fc_min(p.N, n_lo + nlen);
  const int pq_lo = sp_i * plen, pq_hi = fc_min(PQ, pq_lo + plen), cpq = pq_hi - pq_lo;
  if (cpq > 0 && n_lo < n_hi) {
    const int step = int(blockDim.x), step_n = step / cpq, step_pq = step % cpq;
    const int step_p = step_pq / Q, step_q = step_pq % Q;
    index_t n = n_lo + int(threadIdx.x) / cpq;
    int pq = pq_lo + int(threadIdx.x) % cpq;
    int oh = pq / Q, ow = pq - oh * Q;
    while (n < n_hi) {
      const T gv = __ldg(gy + (n * p.K + k) * PQ + pq);
      const T* xp = x + (n * p.C + c) * HW;
      const int ihb = oh * sh, iwb = ow * sw;
      for (int t = 0; t < TB; ++t) {
        const int ih = ihb + offh[t], iw = iwb + offw[t];
        // A tap in the padding adds gv * 0, as the reference (NaN/Inf grad_y: NaN).
        if (t < nt)
          acc[t] += gv * (unsigned(ih) < unsigned(H) && unsigned(iw) < unsigned(W)
                              ? __ldg(xp + index_t(ih) * W + iw)
                              : T(0));
      }
      n += step_n;
      pq += step_pq;
      if (pq >= pq_hi) {  // into the next image: (oh, ow) afresh
        pq -= cpq;
        ++n;
        oh = pq / Q;
        ow = pq - oh * Q;
      } else {
        oh += step_p;
        ow += step_q;
        if (ow >= Q) {
          ow -= Q;
          ++oh;
        }
      }
    }
  }

  const int parts = sn * sp, part = sn_i * sp + sp_i;
  const index_t e0 = index_t(pair) * RS + t0;  // first weight element of the chunk
  const T sum = block_sums(acc, scratch);
  if (int(threadIdx.x) < nt) out[(e0 + threadIdx.x) * parts + part] = sum;
}

// gw[e] = sum over j < parts of part[e * parts + j], in order. gw (elems), part (elems, parts).
template <class T>
__global__ void sum_parts(const T* __restrict__ part, T* __restrict__ gw, index_t elems, int parts) {
  const index_t e = index_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= elems) return;
  const T* pp = part + e * parts;
  T s = T(0);
  for (int j = 0; j < parts; ++j) s += pp[j];
  gw[e] = s;
}

// ============================== launchers =====================================================

// Calls f(n0, images) over chunks of the batch with images * per_image + kThreads < 2^31, so
// the kernels index a launch's pixels (and blocks) in 32 bits.
template <class F>
void for_image_chunks(index_t N, index_t per_image, F f) {
  const index_t most = (kIntMax - kThreads) / (per_image > 0 ? per_image : 1);
  const index_t chunk = most > 1 ? most : 1;
  for (index_t n0 = 0; n0 < N; n0 += chunk) f(n0, N - n0 < chunk ? N - n0 : chunk);
}

// Depthwise tile: (TQ, TP, TZ) threads, VP output rows a thread, input tile IH x IW per plane,
// the shared bytes and the grid.
struct DepthwiseTile {
  int TQ, TP, TZ, VP;
  index_t IH, IW, smem, tiles_p, tiles_q;
  index_t blocks(index_t images, index_t C) const { return ceil_div(images * C, TZ) * tiles_p * tiles_q; }
};
inline DepthwiseTile depthwise_tile(const ConvParams& p, index_t elem_bytes, int VP) {
  DepthwiseTile d;
  d.VP = VP;
  d.TQ = p.Q > 16 ? 32 : p.Q > 8 ? 16 : 8;
  d.TP = 1;
  while (d.TP * VP < p.P && d.TQ * d.TP * 2 <= kThreads) d.TP *= 2;
  d.TZ = kThreads / (d.TQ * d.TP);
  d.IH = (d.TP * VP - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1;
  d.IW = (d.TQ - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1;
  d.smem = d.TZ * d.IH * d.IW * elem_bytes;
  d.tiles_p = ceil_div(p.P, d.TP * VP);
  d.tiles_q = ceil_div(p.Q, d.TQ);
  return d;
}

// SH = 0: the general depthwise kernel; 1, 2: the 3x3 kernel with that vertical stride.
template <class T, int SH, int VP>
void launch_depthwise(const ConvParams& p, const Tensors& t, const ExecContext& ctx, const DepthwiseTile& d) {
  for_image_chunks(p.N, p.C * d.tiles_p * d.tiles_q, [&](index_t n0, index_t images) {
    const T* x = static_cast<const T*>(t.x) + n0 * p.C * p.H * p.W;
    const T* w = static_cast<const T*>(t.w);
    const T* bias = static_cast<const T*>(t.bias);
    T* y = static_cast<T*>(t.y) + n0 * p.K * p.P * p.Q;
    const unsigned grid = blocks_for(d.blocks(images, p.C), 1);
    const dim3 block(d.TQ, d.TP, d.TZ);
    if constexpr (SH > 0) {
      const auto kernel = direct_forward_depthwise3x3<T, SH, VP>;
      FC_LAUNCH(kernel, grid, block, size_t(d.smem), static_cast<cudaStream_t>(ctx.stream), p, x, w, bias, y,
                int(images), int(d.tiles_p), int(d.tiles_q), int(d.IH), int(d.IW));
    } else {
      const auto kernel = direct_forward_depthwise<T>;
      FC_LAUNCH(kernel, grid, block, size_t(d.smem), static_cast<cudaStream_t>(ctx.stream), p, x, w, bias, y,
                int(images), int(d.tiles_p), int(d.tiles_q), int(d.IH), int(d.IW));
    }
  });
}

// The depthwise kernels; false when the tile does not fit in shared memory (the general kernel
// runs instead). 3x3 with dilation 1 and vertical stride 1 or 2 takes the register-blocked
// kernel with 4 rows a thread, or 2 or 1 when 4 would leave fewer than kFillThreads threads.
template <class T>
bool forward_depthwise(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  const bool is3x3 = p.R == 3 && p.S == 3 && p.dil_h == 1 && p.dil_w == 1 && p.stride_h <= 2;
  if (is3x3) {
    for (int VP : {4, 2, 1}) {
      const DepthwiseTile d = depthwise_tile(p, sizeof(T), VP);
      if (d.smem > kDepthwiseSmemBytes) continue;
      if (VP > 1 && p.N * p.C * ceil_div(p.P, VP) * p.Q < kFillThreads) continue;  // too few threads
      if (p.stride_h == 1) {
        if (VP == 4)
          launch_depthwise<T, 1, 4>(p, t, ctx, d);
        else if (VP == 2)
          launch_depthwise<T, 1, 2>(p, t, ctx, d);
        else
          launch_depthwise<T, 1, 1>(p, t, ctx, d);
      } else {
        if (VP == 4)
          launch_depthwise<T, 2, 4>(p, t, ctx, d);
        else if (VP == 2)
          launch_depthwise<T, 2, 2>(p, t, ctx, d);
        else
          launch_depthwise<T, 2, 1>(p, t, ctx, d);
      }
      return true;
    }
    return false;
  }
  const DepthwiseTile d = depthwise_tile(p, sizeof(T), 1);
  if (d.smem > kDepthwiseSmemBytes) return false;
  launch_depthwise<T, 0, 1>(p, t, ctx, d);
  return true;
}

template <class T, int KB>
void forward_general(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  const index_t RS = p.R * p.S, PQ = p.P * p.Q;
  const index_t kblocks = p.groups * ceil_div(p.K_per_group(), KB);
  const index_t CB = staged_chunk(RS * KB, sizeof(T), p.C_per_group());
  const T* w = static_cast<const T*>(t.w);
  const T* bias = static_cast<const T*>(t.bias);
  for_image_chunks(p.N, PQ * kblocks, [&](index_t n0, index_t images) {
    const unsigned grid = blocks_for(ceil_div(images * PQ, kThreads) * kblocks, 1);
    const T* x = static_cast<const T*>(t.x) + n0 * p.C * p.H * p.W;
    T* y = static_cast<T*>(t.y) + n0 * p.K * PQ;
    if (CB > 0) {
      const auto kernel = direct_forward_general<T, KB, true>;
      FC_LAUNCH(kernel, grid, kThreads, size_t(CB * RS * KB * sizeof(T)),
                static_cast<cudaStream_t>(ctx.stream), p, x, w, bias, y, int(images), int(kblocks), int(CB));
    } else {
      const auto kernel = direct_forward_general<T, KB, false>;
      FC_LAUNCH(kernel, grid, kThreads, 0, static_cast<cudaStream_t>(ctx.stream), p, x, w, bias, y,
                int(images), int(kblocks), 0);
    }
  });
}

template <class T>
void forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  const ConvParams& p = pr.conv;
  if (p.N * p.K * p.P * p.Q == 0) return;  // nothing to write
  if (p.C_per_group() == 1 && forward_depthwise<T>(p, t, ctx)) return;
  switch (channel_block(p.K_per_group(), p.N * p.P * p.Q * p.groups)) {
    case 1: return forward_general<T, 1>(p, t, ctx);
    case 4: return forward_general<T, 4>(p, t, ctx);
    case 8: return forward_general<T, 8>(p, t, ctx);
    default: return forward_general<T, 16>(p, t, ctx);
  }
}

template <class T, int CB>
void backward_data_run(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  const index_t RS = p.R * p.S, HW = p.H * p.W;
  const index_t cblocks = p.groups * ceil_div(p.C_per_group(), CB);
  const index_t KC = staged_chunk(RS * CB, sizeof(T), p.K_per_group());
  const T* w = static_cast<const T*>(t.w);
  for_image_chunks(p.N, HW * cblocks, [&](index_t n0, index_t images) {
    const unsigned grid = blocks_for(ceil_div(images * HW, kThreads) * cblocks, 1);
    const T* gy = static_cast<const T*>(t.grad_y) + n0 * p.K * p.P * p.Q;
    T* gx = static_cast<T*>(t.grad_x) + n0 * p.C * HW;
    if (KC > 0) {
      const auto kernel = direct_backward_data<T, CB, true>;
      FC_LAUNCH(kernel, grid, kThreads, size_t(KC * RS * CB * sizeof(T)),
                static_cast<cudaStream_t>(ctx.stream), p, gy, w, gx, int(images), int(cblocks), int(KC));
    } else {
      const auto kernel = direct_backward_data<T, CB, false>;
      FC_LAUNCH(kernel, grid, kThreads, 0, static_cast<cudaStream_t>(ctx.stream), p, gy, w, gx, int(images),
                int(cblocks), 0);
    }
  });
}

template <class T>
void backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  const ConvParams& p = pr.conv;
  if (p.N * p.C * p.H * p.W == 0) return;
  switch (channel_block(p.C_per_group(), p.N * p.H * p.W * p.groups)) {
    case 1: return backward_data_run<T, 1>(p, t, ctx);
    case 4: return backward_data_run<T, 4>(p, t, ctx);
    case 8: return backward_data_run<T, 8>(p, t, ctx);
    default: return backward_data_run<T, 16>(p, t, ctx);
  }
}

// Taps per weight-gradient block: all of a 1x1 or a 2x2, else chunks of 9 (a 3x3 at once).
inline int weight_taps(const ConvParams& p) {
  const index_t RS = p.R * p.S;
  return RS == 1 ? 1 : RS <= 4 ? 4 : 9;
}
// How the N*P*Q terms of each weight element are split (one part: no workspace): into sn
// ranges of nlen images x sp ranges of plen output pixels, every part non-empty, so that
// there are about kWeightTargetBlocks blocks of at least kWeightMinPerSplit terms each.
struct WeightSplit {
  index_t sn = 1, sp = 1, nlen = 0, plen = 0;
  index_t parts() const { return sn * sp; }
};
inline WeightSplit weight_split(const ConvParams& p) {
  const index_t PQ = p.P * p.Q, terms = p.N * PQ;
  const index_t blocks = p.K * p.C_per_group() * ceil_div(p.R * p.S, weight_taps(p));
  WeightSplit s;
  s.nlen = p.N;
  s.plen = PQ;
  if (blocks >= kWeightTargetBlocks || terms < 2 * kWeightMinPerSplit) return s;
  index_t want = ceil_div(kWeightTargetBlocks, blocks);
  if (want > terms / kWeightMinPerSplit) want = terms / kWeightMinPerSplit;
  s.sn = want < p.N ? want : p.N;
  s.nlen = ceil_div(p.N, s.sn);
  s.sn = ceil_div(p.N, s.nlen);
  index_t sp = ceil_div(want, s.sn);
  const index_t most = s.nlen * PQ / kWeightMinPerSplit;
  if (sp > most) sp = most;
  if (sp > 1) {
    s.plen = ceil_div(PQ, sp);
    s.sp = ceil_div(PQ, s.plen);
  }
  return s;
}

template <class T, int TB>
void backward_weight_run(const ConvParams& p, const T* gy, const T* x, T* gw, T* workspace,
                         const ExecContext& ctx) {
  const index_t elems = p.K * p.C_per_group() * p.R * p.S;
  const WeightSplit s = weight_split(p);
  const index_t chunks = ceil_div(p.R * p.S, TB);
  const index_t terms = s.nlen * s.plen;  // of one part
  int threads = kWarp;  // enough warps for the terms of one part, at most kThreads
  while (threads < kThreads && threads < terms) threads *= 2;
  T* out = s.parts() > 1 ? workspace : gw;
  const auto kernel = direct_backward_weight<T, TB>;
  FC_LAUNCH(kernel, blocks_for(p.K * p.C_per_group() * chunks * s.parts(), 1), threads, 0,
            static_cast<cudaStream_t>(ctx.stream), p, gy, x, out, int(chunks), int(s.sn), int(s.sp), s.nlen,
            int(s.plen));
  if (s.parts() > 1) {
    const auto finish = sum_parts<T>;
    FC_LAUNCH(finish, blocks_for(elems, kThreads), kThreads, 0, static_cast<cudaStream_t>(ctx.stream),
              workspace, gw, elems, int(s.parts()));
  }
}

template <class T>
void backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  const ConvParams& p = pr.conv;
  if (t.grad_w && p.K * p.C_per_group() * p.R * p.S > 0) {
    const T* gy = static_cast<const T*>(t.grad_y);
    const T* x = static_cast<const T*>(t.x);
    T* gw = static_cast<T*>(t.grad_w);
    T* ws = static_cast<T*>(t.workspace);
    FC_CHECK(weight_split(p).parts() == 1 || ws, "CUDA direct weight gradient: the workspace is missing");
    switch (weight_taps(p)) {
      case 1: backward_weight_run<T, 1>(p, gy, x, gw, ws, ctx); break;
      case 4: backward_weight_run<T, 4>(p, gy, x, gw, ws, ctx); break;
      default: backward_weight_run<T, 9>(p, gy, x, gw, ws, ctx); break;
    }
  }
  if (t.grad_bias) conv2d_backward_bias(pr, t, ctx);
}

}  // namespace conv2d_direct_detail

// ============================== entry points ==================================================

std::string conv2d_direct_supports(const Problem& pr) {
  using conv2d_direct_detail::kIntMax;
  const ConvParams& p = pr.conv;
  // Coordinates, plane offsets and per-group weight offsets are 32-bit inside the kernels.
  const index_t span_h = p.pad_h + (p.R - 1) * p.dil_h + p.P * p.stride_h + p.H;
  const index_t span_w = p.pad_w + (p.S - 1) * p.dil_w + p.Q * p.stride_w + p.W;
  const index_t wg = (p.K_per_group() > p.C_per_group() ? p.K_per_group() : p.C_per_group()) * p.R * p.S;
  if (span_h > kIntMax || span_w > kIntMax || p.H * p.W > kIntMax - 256 || p.P * p.Q > kIntMax - 256 ||
      wg * 16 > kIntMax || p.K * p.C_per_group() > kIntMax || p.groups > kIntMax || p.C > kIntMax)
    return "CUDA direct: an image plane, padded extent or group's weights of 2^31 or more elements";
  return "";
}

index_t conv2d_direct_workspace_bytes(const Problem& pr, const ExecContext&) {
  if (pr.op != Op::conv2d_backward_weight) return 0;
  const conv2d_direct_detail::WeightSplit s = conv2d_direct_detail::weight_split(pr.conv);
  const ConvParams& p = pr.conv;
  return s.parts() > 1 ? p.K * p.C_per_group() * p.R * p.S * s.parts() * dtype_size(pr.dtype) : 0;
}

void conv2d_direct_forward(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    conv2d_direct_detail::forward<double>(pr, t, ctx);
  else
    conv2d_direct_detail::forward<float>(pr, t, ctx);
}

void conv2d_direct_backward_data(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    conv2d_direct_detail::backward_data<double>(pr, t, ctx);
  else
    conv2d_direct_detail::backward_data<float>(pr, t, ctx);
}

void conv2d_direct_backward_weight(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    conv2d_direct_detail::backward_weight<double>(pr, t, ctx);
  else
    conv2d_direct_detail::backward_weight<float>(pr, t, ctx);
}

}  // namespace fastconv::cuda
