// tiled_conv2d.cpp: tiled and locally connected convolution (unshared weights), compiled
// once per ISA into fastconv::cpu::<isa> (see tiled_conv2d.h), float and double.
//
//   y[n,k,p,q] = bias[s,k] + sum_{c,r,s'} x[n, g*Cg+c, p*sh - ph + r*dh, q*sw - pw + s'*dw]
//                                         * w[s, k, c, r, s']
//   with the kernel set s = (p % tiles_h, q % tiles_w), g = k / (K/groups), x = 0 outside
//   (bias[k] for every set with p.channel_bias).
// tiles 1x1 is conv2d; tiles P x Q is a locally connected layer (a kernel per position).
//
// Idea: a batched GEMM over positions. Each set's weight w[s] is (K, Cg*R*S) row-major, so
// group g's rows are a (K/g, L = Cg*R*S) matrix whose rows are contiguous runs. For one
// output position the patches of a block of images are gathered (C*R*S values each, zeros
// in the padding) into a small per-thread buffer that stays in L1/L2; then every weight row
// is read once and dotted with each image's patch (4 rows and 2 images at a time: 8
// independent vector accumulators), vectorised along the contiguous L axis. At batch 1 this is a
// matrix-vector product per position, bound by reading the weights once
// (P*Q*K*Cg*R*S values for a locally connected layer); positions are split over threads.
// Backward, gy = grad_y (N, K, P, Q):
//   weight: grad_w[s] = sum over the positions of set s (row-major order) and images of
//           gy[n,:,p,q] (outer) patch[n,p,q]: one work item per (set, block of K rows), so
//           no two items write the same rows (no atomics) and each sum runs in a fixed
//           order whatever the thread count. grad_bias[s,k] sums gy in double likewise; a
//           channel bias's grad_bias[k] (p.channel_bias) sums all of channel k's gy in double,
//           images then positions, one channel per work item.
//   data:   two phases, both race-free and independent of the thread count: (1) per position
//           (parallel), dpatch[n] = sum_k gy[n,k,p,q] * w[s,k,:], streaming each weight row
//           once per image block, written to the workspace (unrolled gradient, N_blk x P*Q x
//           C*R*S); (2) per (image, input channel) plane (parallel), col2im: each plane adds
//           its taps in position order.
// Work items are handed out dynamically (forward: blocks of 16-32 positions, at least 4 a
// thread, written to y as runs): each writes outputs of its own, so the results do not depend
// on the schedule, and on a shared machine a thread that loses its core does not hold the
// others up at a static partition's end.
// Limits: the dot products of the forward are horizontal reductions (4 per 4 rows); at
// batch > 1 and tiles 1x1 this is not a packed GEMM and conv2d's kernels are faster; the data
// gradient's workspace is the unrolled gradient of up to 64 MiB of images at a time.
#include "cpu/tiled_conv2d.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu/isa_buffer.h"

namespace fastconv::cpu::FC_ISA {
namespace {  // everything here differs per ISA: internal linkage keeps the 3 copies apart

constexpr index_t kPatchBlockBytes = 96 * 1024;     // a block of gathered patches (L2)
constexpr index_t kMaxImageBlock = 16;              // images sharing one pass over the weights
constexpr index_t kPosBlock = 32;                   // output positions of one forward work item
constexpr index_t kColBlockBytes = 64 * 1024 * 1024;  // the data gradient's unrolled block
constexpr double kParallelMinMacs = 1 << 15;         // smaller problems run on one thread

struct Shape {
  index_t L, CRS, RS, PQ, Kg, set_elems, tiles;
  explicit Shape(const ConvParams& p)
      : L(p.C_per_group() * p.R * p.S),
        CRS(p.C * p.R * p.S),
        RS(p.R * p.S),
        PQ(p.P * p.Q),
        Kg(p.K_per_group()),
        set_elems(p.K * p.C_per_group() * p.R * p.S),
        tiles(p.tiles_h * p.tiles_w) {}
};

index_t set_of(const ConvParams& p, index_t oh, index_t ow) {
  return (oh % p.tiles_h) * p.tiles_w + ow % p.tiles_w;
}

index_t image_block(const ConvParams& p, index_t elem_bytes) {
  const index_t per_image = std::max<index_t>(1, p.C * p.R * p.S * elem_bytes);
  return std::max<index_t>(1, std::min({p.N, kMaxImageBlock, kPatchBlockBytes / per_image}));
}

// Images whose unrolled data gradient (P*Q x C*R*S each) one workspace block holds.
index_t col_images(const ConvParams& p, index_t elem_bytes) {
  const index_t per_image = std::max<index_t>(1, p.P * p.Q * p.C * p.R * p.S * elem_bytes);
  return std::max<index_t>(1, std::min(p.N, kColBlockBytes / per_image));
}

bool parallel_worth(const ConvParams& p) {
  return double(p.N) * double(p.P * p.Q) * double(p.K) * double(p.C_per_group() * p.R * p.S) >=
         kParallelMinMacs;
}

// patch[c*R*S + r*S + s] = x[n, c, oh*sh - ph + r*dh, ow*sw - pw + s*dw], 0 outside the image.
template <class T>
void gather_patch(const ConvParams& p, const T* xn, index_t oh, index_t ow, T* patch) {
  const index_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  const bool inside_w = w0 >= 0 && w0 + (p.S - 1) * p.dil_w < p.W;
  for (index_t c = 0; c < p.C; ++c) {
    const T* xc = xn + c * p.H * p.W;
    for (index_t r = 0; r < p.R; ++r) {
      T* out = patch + (c * p.R + r) * p.S;
      const index_t ih = h0 + r * p.dil_h;
      if (ih < 0 || ih >= p.H) {
        std::fill(out, out + p.S, T(0));
        continue;
      }
      const T* row = xc + ih * p.W + w0;
      if (inside_w) {
        for (index_t s = 0; s < p.S; ++s) out[s] = row[s * p.dil_w];
      } else {
        for (index_t s = 0; s < p.S; ++s) {
          const index_t iw = w0 + s * p.dil_w;
          out[s] = iw >= 0 && iw < p.W ? row[s * p.dil_w] : T(0);
        }
      }
    }
  }
}

// out[i] = dot(x, w_i) for 4 rows of length L: 4 independent vector accumulators.
template <class T>
inline void dot4(const T* x, const T* w0, const T* w1, const T* w2, const T* w3, index_t L, T* out) {
  T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
  for (index_t l = 0; l < L; ++l) {
    const T v = x[l];
    a0 += v * w0[l];
    a1 += v * w1[l];
    a2 += v * w2[l];
    a3 += v * w3[l];
  }
  out[0] = a0;
  out[1] = a1;
  out[2] = a2;
  out[3] = a3;
}

// The same for two patches: 8 accumulators, each weight vector loaded once for both.
template <class T>
inline void dot4x2(const T* x, const T* z, const T* w0, const T* w1, const T* w2, const T* w3, index_t L,
                   T* out_x, T* out_z) {
  T a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
  for (index_t l = 0; l < L; ++l) {
    const T u = x[l], v = z[l], c0 = w0[l], c1 = w1[l], c2 = w2[l], c3 = w3[l];
    a0 += u * c0;
    a1 += u * c1;
    a2 += u * c2;
    a3 += u * c3;
    b0 += v * c0;
    b1 += v * c1;
    b2 += v * c2;
    b3 += v * c3;
  }
  out_x[0] = a0;
  out_x[1] = a1;
  out_x[2] = a2;
  out_x[3] = a3;
  out_z[0] = b0;
  out_z[1] = b1;
  out_z[2] = b2;
  out_z[3] = b3;
}

template <class T>
inline T dot1(const T* x, const T* w, index_t L) {
  T a = 0;
#pragma omp simd reduction(+ : a)
  for (index_t l = 0; l < L; ++l) a += x[l] * w[l];
  return a;
}

}  // namespace

template <class T>
void tiled_conv2d(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const Shape sh(p);
  const index_t nb = image_block(p, sizeof(T));
  // Blocks of up to 32 positions, but at least 4 per thread (a 12x12 output on 2 threads: 18
  // positions a block, not 5 blocks of 32 split 3:2) and at least 16 positions (64 bytes of y).
  const index_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const index_t pb = std::max<index_t>(std::min<index_t>(16, sh.PQ),
                                       std::min(kPosBlock, (sh.PQ + 4 * threads - 1) / (4 * threads)));
  const index_t blocks = (sh.PQ + pb - 1) / pb;
#pragma omp parallel if (parallel_worth(p))
  {
    Buffer<T> patches = Buffer<T>::uninitialized(nb * sh.CRS);
    Buffer<T> out = Buffer<T>::uninitialized(nb * p.K * kPosBlock);  // (image, k, position of the block)
#pragma omp for schedule(dynamic, 1)
    for (index_t b = 0; b < blocks; ++b) {
      const index_t pos0 = b * pb, npos = std::min(pb, sh.PQ - pos0);
      for (index_t n0 = 0; n0 < p.N; n0 += nb) {
        const index_t nn = std::min(nb, p.N - n0);
        for (index_t j = 0; j < npos; ++j) {
          const index_t pos = pos0 + j, oh = pos / p.Q, ow = pos % p.Q, set = set_of(p, oh, ow);
          const T* ws = w + set * sh.set_elems;
          const T* bs = bias ? bias + (p.channel_bias ? 0 : set) * p.K : nullptr;
          for (index_t i = 0; i < nn; ++i)
            gather_patch(p, x + (n0 + i) * p.C * p.H * p.W, oh, ow, patches.data() + i * sh.CRS);
          for (index_t g = 0; g < p.groups; ++g) {
            const index_t kend = (g + 1) * sh.Kg;
            index_t k = g * sh.Kg;
            for (; k + 4 <= kend; k += 4) {  // 4 weight rows stay in L1 while every image reads them
              const T* w0 = ws + k * sh.L;
              const T* pg = patches.data() + g * sh.L;
              auto store = [&](index_t i, const T* acc) {
                T* o = out.data() + (i * p.K + k) * kPosBlock + j;
                for (int r = 0; r < 4; ++r) o[r * kPosBlock] = acc[r] + (bs ? bs[k + r] : T(0));
              };
              index_t i = 0;
              for (; i + 2 <= nn; i += 2) {  // two images per pass over the 4 rows
                T acc[4], acc2[4];
                dot4x2(pg + i * sh.CRS, pg + (i + 1) * sh.CRS, w0, w0 + sh.L, w0 + 2 * sh.L, w0 + 3 * sh.L,
                       sh.L, acc, acc2);
                store(i, acc);
                store(i + 1, acc2);
              }
              if (i < nn) {
                T acc[4];
                dot4(pg + i * sh.CRS, w0, w0 + sh.L, w0 + 2 * sh.L, w0 + 3 * sh.L, sh.L, acc);
                store(i, acc);
              }
            }
            for (; k < kend; ++k)
              for (index_t i = 0; i < nn; ++i)
                out[(i * p.K + k) * kPosBlock + j] =
                    dot1(patches.data() + i * sh.CRS + g * sh.L, ws + k * sh.L, sh.L) + (bs ? bs[k] : T(0));
          }
        }
        // Runs of npos outputs per (image, channel): threads never share a cache line of y
        // except at block ends (writing y position by position made them fight over every line).
        for (index_t i = 0; i < nn; ++i)
          for (index_t k = 0; k < p.K; ++k)
            std::copy_n(out.data() + (i * p.K + k) * kPosBlock, npos,
                        y + ((n0 + i) * p.K + k) * sh.PQ + pos0);
      }
    }
  }
}

index_t tiled_conv2d_backward_data_workspace_bytes(const ConvParams& p, DType dtype) {
  const index_t elem = dtype_size(dtype);
  return col_images(p, elem) * p.P * p.Q * p.C * p.R * p.S * elem;
}

template <class T>
void tiled_conv2d_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x,
                                void* workspace) {
  const Shape sh(p);
  const index_t chunk = col_images(p, sizeof(T));
  const index_t nb = std::min(chunk, image_block(p, sizeof(T)));
  T* col = static_cast<T*>(workspace);  // (images of the chunk, P*Q, C*R*S)
  const bool par = parallel_worth(p);
  for (index_t c0 = 0; c0 < p.N; c0 += chunk) {
    const index_t cn = std::min(chunk, p.N - c0);
    // (1) dpatch per position: each weight row read once per block of nb images.
#pragma omp parallel for schedule(dynamic, 4) if (par)
    for (index_t pos = 0; pos < sh.PQ; ++pos) {
      const index_t set = set_of(p, pos / p.Q, pos % p.Q);
      const T* ws = w + set * sh.set_elems;
      for (index_t n0 = 0; n0 < cn; n0 += nb) {
        const index_t nn = std::min(nb, cn - n0);
        for (index_t i = 0; i < nn; ++i) std::fill_n(col + ((n0 + i) * sh.PQ + pos) * sh.CRS, sh.CRS, T(0));
        for (index_t g = 0; g < p.groups; ++g) {
          const index_t kend = (g + 1) * sh.Kg;
          index_t k = g * sh.Kg;
          for (; k + 4 <= kend; k += 4) {
            const T *w0 = ws + k * sh.L, *w1 = w0 + sh.L, *w2 = w1 + sh.L, *w3 = w2 + sh.L;
            for (index_t i = 0; i < nn; ++i) {
              const T* gy = grad_y + ((c0 + n0 + i) * p.K + k) * sh.PQ + pos;
              const T a0 = gy[0], a1 = gy[sh.PQ], a2 = gy[2 * sh.PQ], a3 = gy[3 * sh.PQ];
              T* d = col + ((n0 + i) * sh.PQ + pos) * sh.CRS + g * sh.L;
#pragma omp simd
              for (index_t l = 0; l < sh.L; ++l) d[l] += a0 * w0[l] + a1 * w1[l] + a2 * w2[l] + a3 * w3[l];
            }
          }
          for (; k < kend; ++k) {
            const T* wk = ws + k * sh.L;
            for (index_t i = 0; i < nn; ++i) {
              const T a = grad_y[((c0 + n0 + i) * p.K + k) * sh.PQ + pos];
              T* d = col + ((n0 + i) * sh.PQ + pos) * sh.CRS + g * sh.L;
#pragma omp simd
              for (index_t l = 0; l < sh.L; ++l) d[l] += a * wk[l];
            }
          }
        }
      }
    }
    // (2) col2im: one (image, channel) plane per work item, taps added in position order.
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (index_t nc = 0; nc < cn * p.C; ++nc) {
      const index_t i = nc / p.C, c = nc % p.C;
      T* plane = grad_x + ((c0 + i) * p.C + c) * p.H * p.W;
      std::fill_n(plane, p.H * p.W, T(0));
      for (index_t oh = 0; oh < p.P; ++oh) {
        const index_t h0 = oh * p.stride_h - p.pad_h;
        for (index_t ow = 0; ow < p.Q; ++ow) {
          const index_t w0 = ow * p.stride_w - p.pad_w;
          const T* d = col + (i * sh.PQ + oh * p.Q + ow) * sh.CRS + c * sh.RS;
          for (index_t r = 0; r < p.R; ++r) {
            const index_t ih = h0 + r * p.dil_h;
            if (ih < 0 || ih >= p.H) continue;
            T* row = plane + ih * p.W;
            for (index_t s = 0; s < p.S; ++s) {
              const index_t iw = w0 + s * p.dil_w;
              if (iw >= 0 && iw < p.W) row[iw] += d[r * p.S + s];
            }
          }
        }
      }
    }
  }
}

// grad_bias[k] = sum over images and positions of gy[n,k,:,:] in double (a channel bias, shared
// by every set): one channel per work item, images then positions in order.
template <class T>
void channel_bias_gradient(const ConvParams& p, const T* grad_y, T* grad_bias) {
  const index_t PQ = p.P * p.Q;
#pragma omp parallel for schedule(static) if (double(p.N) * double(PQ) * double(p.K) >= kParallelMinMacs)
  for (index_t k = 0; k < p.K; ++k) {
    double acc = 0.0;
    for (index_t n = 0; n < p.N; ++n) {
      const T* gy = grad_y + (n * p.K + k) * PQ;
      for (index_t pos = 0; pos < PQ; ++pos) acc += double(gy[pos]);
    }
    grad_bias[k] = T(acc);
  }
}

template <class T>
void tiled_conv2d_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w, T* grad_bias) {
  if (grad_bias && p.channel_bias) {
    channel_bias_gradient(p, grad_y, grad_bias);
    grad_bias = nullptr;  // the per-set sums below are not wanted
    if (!grad_w) return;
  }
  const Shape sh(p);
  const index_t nb = image_block(p, sizeof(T));
  // Work items: (set, block of K rows). Enough of them for every thread even with one set
  // (tiles 1x1); the sums inside an item do not depend on how K is split.
  const index_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const index_t kblocks =
      sh.tiles >= 2 * threads ? 1 : std::min(p.K, (2 * threads + sh.tiles - 1) / sh.tiles);
  const index_t krows = (p.K + kblocks - 1) / kblocks;
#pragma omp parallel if (parallel_worth(p))
  {
    Buffer<T> patches = Buffer<T>::uninitialized(nb * sh.CRS);
#pragma omp for schedule(dynamic, 1)
    for (index_t item = 0; item < sh.tiles * kblocks; ++item) {
      const index_t set = item / kblocks, k0 = (item % kblocks) * krows, k1 = std::min(p.K, k0 + krows);
      if (k0 >= k1) continue;
      const index_t th = set / p.tiles_w, tw = set % p.tiles_w;
      T* gws = grad_w ? grad_w + set * sh.set_elems : nullptr;
      if (gws) std::fill(gws + k0 * sh.L, gws + k1 * sh.L, T(0));
      double bsum[64];  // the bias sums of up to 64 rows at a time
      for (index_t kb0 = k0; kb0 < k1; kb0 += 64) {
        const index_t kb1 = std::min(k1, kb0 + 64);
        std::fill(bsum, bsum + 64, 0.0);
        for (index_t oh = th; oh < p.P; oh += p.tiles_h)
          for (index_t ow = tw; ow < p.Q; ow += p.tiles_w) {
            const index_t pos = oh * p.Q + ow;
            for (index_t n0 = 0; n0 < p.N; n0 += nb) {
              const index_t nn = std::min(nb, p.N - n0);
              if (gws)
                for (index_t i = 0; i < nn; ++i)
                  gather_patch(p, x + (n0 + i) * p.C * p.H * p.W, oh, ow, patches.data() + i * sh.CRS);
              for (index_t k = kb0; k < kb1; ++k) {
                const index_t g = k / sh.Kg;
                T* row = gws ? gws + k * sh.L : nullptr;
                for (index_t i = 0; i < nn; ++i) {
                  const T a = grad_y[((n0 + i) * p.K + k) * sh.PQ + pos];
                  bsum[k - kb0] += double(a);
                  if (!row) continue;
                  const T* xv = patches.data() + i * sh.CRS + g * sh.L;
#pragma omp simd
                  for (index_t l = 0; l < sh.L; ++l) row[l] += a * xv[l];
                }
              }
            }
          }
        if (grad_bias)
          for (index_t k = kb0; k < kb1; ++k) grad_bias[set * p.K + k] = T(bsum[k - kb0]);
        if (!gws && !grad_bias) break;
      }
    }
  }
}

#define FC_TILED_INSTANTIATE(T)                                                                  \
  template void tiled_conv2d<T>(const ConvParams&, const T*, const T*, const T*, T*);            \
  template void tiled_conv2d_backward_data<T>(const ConvParams&, const T*, const T*, T*, void*); \
  template void tiled_conv2d_backward_weight<T>(const ConvParams&, const T*, const T*, T*, T*);
FC_TILED_INSTANTIATE(float)
FC_TILED_INSTANTIATE(double)

}  // namespace fastconv::cpu::FC_ISA
