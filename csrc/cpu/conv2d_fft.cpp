// conv2d_fft.cpp: stride-1 convolution (cross-correlation) by tiled FFTs, overlap-save,
// with n x n tiles, n = 8 or 16 (NNPACK's FFT convolution; Vasilache et al. 2015, "Fast
// Convolutional Nets With fbfft"; Mathieu et al. 2014). The transforms are in math/fft.h.
//   x is (N, C, H, W), w is (K, C/g, R, S), bias is (K,) or null, y is (N, K, P, Q).
// The output is cut into tiles of mh x mw = (n-R+1) x (n-S+1) (edge tiles clipped); tile
// t reads the n x n input window at (t_h * mh - pad_h, t_w * mw - pad_w), zeros outside
// the image (the tile grid and blocks: math/tiles.h, shared with Winograd). The circular
// correlation of that window with the kernel (zero-padded to n x n) equals the linear
// one on the tile's mh x mw outputs: the rest wraps around.
//   1. kernel spectra  U[g][b][k][c] = conj(FFT(w[g*K/g+k][c])) [b] / n^2   once per call
//                      (or once per plan: prepare() below)
//   2. input spectra   X[b][c][t]    = FFT(window(c, t))[b]                per tile block
//   3. per bin b, a complex GEMM  Y[b] (K/g x T) = U[g][b] (K/g x C/g) . X[b] (C/g x T)
//   4. output          y tile (k, t) = valid part of IFFT(Y[.][k][t]) + bias[k]
// Only the n*n/2 + 2 distinct bins of a real tile's spectrum are multiplied (fft.h). The
// complex GEMM of a bin is three real GEMMs (Gauss's 3-multiplication form) on split
// planes, for U = a + bi, X = c + di:
//   k1 = a (c + d),  k2 = (a + b) d,  k3 = (b - a) c;   Re Y = k1 - k2,  Im Y = k1 + k3
// so the kernel is stored as planes (a, a + b, b - a), the input as (c + d, d, c), and the
// output transform combines k1, k2, k3 as it loads them. The four real bins (im = 0) are
// one real GEMM each. Planes, in order: real bin b (b < 4): plane b; complex bin b:
// planes 4 + 3 (b - 4) + {0, 1, 2}; kPlanes of them, plane_stride() apart.
// Tiles are processed in blocks of T so that X and Y of a block stay near the cache. Work
// is split over (image, group, tile block) with one block per thread and serial GEMMs when
// there are enough blocks, and otherwise block by block with each phase split over the
// threads (channels, the GEMMs of the planes, output channels). Transforms run on 16 lanes
// (16 tiles, or 16 input channels for the kernel) side by side, so they vectorise.
// Compiled once per ISA (FC_PER_ISA_SOURCES); float32 only.
// NaN/Inf: every output the reference makes non-finite is non-finite here too, but an
// input NaN or Inf reaches, through the transforms, every output of each tile whose n x n
// window covers it (in every output channel of the group), and a NaN/Inf weight every
// output of its output channel: those become NaN where the reference may be finite.
// Limits: stride 1, dilation 1, R and S <= n - 1 (any, non-square allowed); any padding,
// groups, sizes.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "errors.h"
#include "math/fft.h"
#include "math/tiles.h"

namespace fastconv::cpu::FC_ISA {
namespace {

constexpr int kL = 16;                               // lanes of the transforms
constexpr index_t kBlockBytes = index_t(768) << 10;  // X + Y of one tile block, per thread
constexpr index_t kMinBlockTiles = 64;               // fewer: U is re-packed by more, smaller GEMMs

template <int N>
constexpr index_t kPlanes = 4 + 3 * (fft::Spectrum<N>::bins - 4);

index_t planes(int n) { return n == 8 ? kPlanes<8> : kPlanes<16>; }

// Floats between consecutive planes of U, X or Y: one cache line more than a plane, because
// planes of 64 x 64 floats (16 KiB) would put every plane's row in the same L1 set, and the
// transforms touch all 94 (n = 8) or 382 (n = 16) planes of a row at once.
index_t plane_stride(index_t floats) { return floats + 16; }

// How the work is cut: the tile grid (math/tiles.h: (n-R+1) x (n-S+1) outputs a tile),
// its blocks and parallel scheme (X/Y buffers per worker, rows ldt apart), the workspace.
struct Plan : tiles::Grid, tiles::Blocks {
  int n = 0;
  index_t u_floats = 0, x_floats = 0, y_floats = 0;
  index_t u_ps = 0, x_ps = 0, y_ps = 0;  // plane strides
  bool prepared = false;                // U comes with the call: no room for it here
  index_t floats() const { return (prepared ? 0 : u_floats) + workers * (x_floats + y_floats); }
};

Plan make_plan(const ConvParams& p, int n, int threads, bool prepared) {
  Plan pl;
  pl.n = n;
  static_cast<tiles::Grid&>(pl) = tiles::make_grid(p, int(n - p.R + 1), int(n - p.S + 1));
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), np = planes(n);
  const index_t per_tile = np * (Cg + Kg) * index_t(sizeof(float));
  const index_t tmax = std::max<index_t>(kMinBlockTiles, kBlockBytes / per_tile / kL * kL);
  static_cast<tiles::Blocks&>(pl) = tiles::split_blocks<kL>(p.N * pl.tiles, tmax, p.groups, threads);
  pl.u_ps = plane_stride(Kg * Cg);
  pl.x_ps = plane_stride(Cg * pl.ldt);
  pl.y_ps = plane_stride(Kg * pl.ldt);
  pl.u_floats = p.groups * np * pl.u_ps;
  pl.x_floats = np * pl.x_ps;
  pl.y_floats = np * pl.y_ps;
  pl.prepared = prepared;
  return pl;
}

// ---- 1. kernel spectra: U[g][plane][k][c], 16 input channels at a time ----------------
// Output channel gk (of all K) of w (K, C/g, R, S) into Ug (planes of K/g x C/g, plane_stride apart), row k.
template <int N>
void kernel_row(const ConvParams& p, const float* w, index_t gk, float* Ug) {
  using Sp = fft::Spectrum<N>;
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), k = gk % Kg;
  const int R = int(p.R), S = int(p.S), RS = R * S;
  constexpr float scale = 1.f / float(N * N);  // the inverse's 1/n^2, exact (power of 2)
  alignas(64) float t[N * N * kL];
  alignas(64) float re[Sp::bins * kL];
  alignas(64) float im[Sp::bins * kL];
  std::memset(t, 0, sizeof(t));
  for (index_t c0 = 0; c0 < Cg; c0 += kL) {
    const int lanes = int(std::min<index_t>(kL, Cg - c0));
    const float* src = w + (gk * Cg + c0) * RS;  // lane l: the kernel at src + l * RS
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < S; ++s)
        for (int l = 0; l < kL; ++l) t[(r * N + s) * kL + l] = l < lanes ? src[l * RS + r * S + s] : 0.f;
    fft::forward<N, kL>(t, R, re, im);
    // U = conj(W) / n^2 = a + b i with a = re / n^2, b = -im / n^2.
    for (int b = 0; b < Sp::bins; ++b) {
      const index_t ps = plane_stride(Kg * Cg);
      float* dst = Ug + (b < 4 ? b : 4 + 3 * (b - 4)) * ps + k * Cg + c0;
      const float* wr = re + b * kL;
      const float* wi = im + b * kL;
      if (b < 4) {
        for (int l = 0; l < lanes; ++l) dst[l] = scale * wr[l];
        continue;
      }
      for (int l = 0; l < lanes; ++l) {
        const float a = scale * wr[l], bb = -scale * wi[l];
        dst[l] = a;
        dst[ps + l] = a + bb;
        dst[2 * ps + l] = bb - a;
      }
    }
  }
}

template <int N>
void transform_kernels(const ConvParams& p, const float* w, float* U, bool parallel) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), ps = plane_stride(Kg * Cg);
  for (index_t q = 0; q < p.groups * kPlanes<N>; ++q)  // the padding: defined, never read
    std::memset(U + q * ps + Kg * Cg, 0, sizeof(float) * (ps - Kg * Cg));
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t gk = 0; gk < p.K; ++gk)
    kernel_row<N>(p, w, gk, U + (gk / Kg) * kPlanes<N> * plane_stride(Kg * Cg));
}

// Tile geometry of a block (math/tiles.h), computed once per block, not per channel.
using TileGeo = tiles::Tile;

// ---- 2. input spectra of one block: X[plane][c][t - t0] -----------------------------------
template <int N>
void transform_inputs(const ConvParams& p, const Plan& pl, const float* x, const TileGeo* geo, index_t T,
                      float* X, bool parallel) {
  using Sp = fft::Spectrum<N>;
  const index_t Cg = p.C_per_group(), H = p.H, W = p.W, ldt = pl.ldt, ps = pl.x_ps;
  const int mw = pl.mw;
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t c = 0; c < Cg; ++c) {
    alignas(64) float t[N * N * kL];
    alignas(64) float re[Sp::bins * kL];
    alignas(64) float im[Sp::bins * kL];
    const float* xc = x + c * H * W;
    for (index_t tb = 0; tb < ldt; tb += kL) {
      if (tb + kL <= T && geo[tb].run) {
        // 16 interior tiles side by side: lane l reads src[i * W + j + mw * l].
        const float* src = xc + geo[tb].x_off;
        for (int i = 0; i < N; ++i)
          for (int j = 0; j < N; ++j) {
            FC_UNROLL(16)
            for (int l = 0; l < kL; ++l) t[(i * N + j) * kL + l] = src[i * W + j + mw * l];
          }
      } else {
        for (int l = 0; l < kL; ++l) {
          if (tb + l >= T) {
            for (int e = 0; e < N * N; ++e) t[e * kL + l] = 0.f;
            continue;
          }
          const TileGeo& e = geo[tb + l];
          const float* src = xc + e.x_off;
          if (e.interior) {
            for (int i = 0; i < N; ++i)
              for (int j = 0; j < N; ++j) t[(i * N + j) * kL + l] = src[i * W + j];
          } else {
            for (int i = 0; i < N; ++i) {
              const bool row_in = e.ih0 + i >= 0 && e.ih0 + i < H;
              for (int j = 0; j < N; ++j) {
                const bool in = row_in && e.iw0 + j >= 0 && e.iw0 + j < W;
                t[(i * N + j) * kL + l] = in ? src[i * W + j] : 0.f;
              }
            }
          }
        }
      }
      fft::forward<N, kL>(t, N, re, im);
      // Planes (c + d, d, c) of X = c + d i; the real bins' one plane is c.
      for (int b = 0; b < 4; ++b) std::memcpy(X + b * ps + c * ldt + tb, re + b * kL, sizeof(float) * kL);
      for (int b = 4; b < Sp::bins; ++b) {
        float* dst = X + (4 + 3 * (b - 4)) * ps + c * ldt + tb;
        const float* cr = re + b * kL;
        const float* ci = im + b * kL;
        FC_UNROLL(16)
        for (int l = 0; l < kL; ++l) {
          dst[l] = cr[l] + ci[l];
          dst[ps + l] = ci[l];
          dst[2 * ps + l] = cr[l];
        }
      }
    }
  }
}

// ---- 3. the real GEMMs of the planes: Y[q] (K/g x T) = U_g[q] (K/g x C/g) . X[q] (C/g x T) ----
void multiply(const ConvParams& p, const Plan& pl, const float* Ug, const float* X, index_t T, float* Y,
              bool parallel) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), np = planes(pl.n);
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (index_t q = 0; q < np; ++q)
    gemm<float>(false, false, Kg, T, Cg, 1.f, Ug + q * pl.u_ps, Cg, X + q * pl.x_ps, pl.ldt, 0.f,
                Y + q * pl.y_ps, pl.ldt);
}

// ---- 4. inverse transforms of one block into y (N, K, P, Q), group g, + bias --------------
template <int N>
void transform_outputs(const ConvParams& p, const Plan& pl, const float* Y, const TileGeo* geo, index_t T,
                       const float* bias_g, float* y, bool parallel) {
  using Sp = fft::Spectrum<N>;
  const index_t P = p.P, Q = p.Q, ldt = pl.ldt, ps = pl.y_ps;
  const int mh = pl.mh, mw = pl.mw;
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t k = 0; k < p.K_per_group(); ++k) {
    const float b = bias_g ? bias_g[k] : 0.f;
    float* yk = y + k * P * Q;
    alignas(64) float t[N * N * kL];
    alignas(64) float re[Sp::bins * kL];
    alignas(64) float im[Sp::bins * kL];
    for (index_t tb = 0; tb < T; tb += kL) {
      for (int q = 0; q < 4; ++q) std::memcpy(re + q * kL, Y + q * ps + k * ldt + tb, sizeof(float) * kL);
      for (int q = 4; q < Sp::bins; ++q) {  // Re = k1 - k2, Im = k1 + k3
        const float* src = Y + (4 + 3 * (q - 4)) * ps + k * ldt + tb;
        FC_UNROLL(16)
        for (int l = 0; l < kL; ++l) {
          re[q * kL + l] = src[l] - src[ps + l];
          im[q * kL + l] = src[l] + src[2 * ps + l];
        }
      }
      fft::inverse<N, kL>(re, im, mh, t);
      if (tb + kL <= T && geo[tb].run) {  // 16 full tiles side by side
        float* dst = yk + geo[tb].y_off;
        for (int i = 0; i < mh; ++i)
          for (int j = 0; j < mw; ++j) {
            FC_UNROLL(16)
            for (int l = 0; l < kL; ++l) dst[i * Q + j + mw * l] = t[(i * N + j) * kL + l] + b;
          }
        continue;
      }
      const int lanes = int(std::min<index_t>(kL, T - tb));
      for (int l = 0; l < lanes; ++l) {
        const TileGeo& e = geo[tb + l];
        float* dst = yk + e.y_off;
        for (int i = 0; i < e.rows; ++i)
          for (int j = 0; j < e.cols; ++j) dst[i * Q + j] = t[(i * N + j) * kL + l] + b;
      }
    }
  }
}

// ---- launchers ---------------------------------------------------------------------------
// U: the kernel spectra (planes of every group, as prepare() writes them), computed here
// into the workspace unless the call brings them (`prepared`).
template <int N>
void run(const ConvParams& p, const float* x, const float* w, const float* bias, float* y, void* workspace,
         bool prepared) {
  if (p.N == 0) return;
  const int threads = omp_get_max_threads();
  const Plan pl = make_plan(p, N, threads, prepared);
  const index_t Kg = p.K_per_group(), G = p.groups;
  float* ws = static_cast<float*>(workspace);
  const float* U = w;
  float* bufs = ws;
  if (!prepared) {
    transform_kernels<N>(p, w, ws, threads > 1);
    U = ws;
    bufs = ws + pl.u_floats;
  }
  const index_t per_worker = pl.x_floats + pl.y_floats;

  // One (group, block) item: all four phases, split over threads when `parallel`.
  auto item = [&](index_t it, float* X, float* Y, bool parallel) {
    const index_t blk = it % pl.nblocks, g = it / pl.nblocks;
    const index_t t0 = blk * pl.T, T = std::min(pl.T, p.N * pl.tiles - t0);
    if (T <= 0) return;
    std::vector<TileGeo> geo(T);
    tiles::fill<kL>(p, pl, g, t0, T, geo.data());
    transform_inputs<N>(p, pl, x, geo.data(), T, X, parallel);
    multiply(p, pl, U + g * kPlanes<N> * pl.u_ps, X, T, Y, parallel);
    transform_outputs<N>(p, pl, Y, geo.data(), T, bias ? bias + g * Kg : nullptr, y, parallel);
  };
  const index_t items = G * pl.nblocks;
  if (pl.outer) {
#pragma omp parallel
    {
      float* X = bufs + omp_get_thread_num() * per_worker;
#pragma omp for schedule(dynamic)
      for (index_t it = 0; it < items; ++it) item(it, X, X + pl.x_floats, false);
    }
  } else {
    for (index_t it = 0; it < items; ++it) item(it, bufs, bufs + pl.x_floats, threads > 1);
  }
}

void check_tile(int n) { FC_ISA_CHECK(n == 8 || n == 16, "fft tile size must be 8 or 16 (got %d)", n); }

}  // namespace

index_t conv2d_fft_workspace_bytes(const ConvParams& p, int n, bool prepared) {
  check_tile(n);
  return make_plan(p, n, omp_get_max_threads(), prepared).floats() * index_t(sizeof(float));
}

index_t conv2d_fft_prepared_bytes(const ConvParams& p, int n) {
  check_tile(n);
  return p.groups * planes(n) * plane_stride(p.K_per_group() * p.C_per_group()) * index_t(sizeof(float));
}

void conv2d_fft_prepare(const ConvParams& p, int n, const float* w, float* prepared) {
  check_tile(n);
  const bool parallel = omp_get_max_threads() > 1;
  if (n == 8)
    transform_kernels<8>(p, w, prepared, parallel);
  else
    transform_kernels<16>(p, w, prepared, parallel);
}

void conv2d_fft(const ConvParams& p, int n, const float* x, const float* w, const float* bias, float* y,
                void* workspace, bool prepared) {
  check_tile(n);
  if (n == 8)
    run<8>(p, x, w, bias, y, workspace, prepared);
  else
    run<16>(p, x, w, bias, y, workspace, prepared);
}

// One tile through the transforms of math/fft.h, for the tests. Spectra are the Hermitian
// half, n x (n/2+1) complex as interleaved (re, im) floats (numpy's rfft2 layout).
// which 0: forward, in n x n real -> out spectrum (the bins that mirror distinct ones
// filled by conjugate symmetry); which 1: inverse, in spectrum (only the distinct bins
// read) -> out n x n real, unnormalised (n^2 times numpy's irfft2).
template <int N>
void one_tile(int which, const float* in, float* out) {
  using Sp = fft::Spectrum<N>;
  constexpr int C = Sp::cols;
  alignas(64) float t[N * N * kL] = {};
  alignas(64) float re[Sp::bins * kL] = {};
  alignas(64) float im[Sp::bins * kL] = {};
  if (which == 0) {
    for (int e = 0; e < N * N; ++e) t[e * kL] = in[e];
    fft::forward<N, kL>(t, N, re, im);
    for (int b = 0; b < Sp::bins; ++b) {
      const int u = Sp::bin_u(b), v = Sp::bin_v(b);
      out[2 * (u * C + v)] = re[b * kL];
      out[2 * (u * C + v) + 1] = im[b * kL];
      if ((v == 0 || v == Sp::half) && u != 0 && u != Sp::half) {  // the mirrored bin
        out[2 * ((N - u) * C + v)] = re[b * kL];
        out[2 * ((N - u) * C + v) + 1] = -im[b * kL];
      }
    }
  } else {
    for (int b = 0; b < Sp::bins; ++b) {
      const int u = Sp::bin_u(b), v = Sp::bin_v(b);
      re[b * kL] = in[2 * (u * C + v)];
      im[b * kL] = in[2 * (u * C + v) + 1];
    }
    fft::inverse<N, kL>(re, im, N, t);
    for (int e = 0; e < N * N; ++e) out[e] = t[e * kL];
  }
}

void fft_tile_transform(int n, int which, const float* in, float* out) {
  check_tile(n);
  FC_ISA_CHECK(which == 0 || which == 1, "fft transform must be forward or inverse");
  if (n == 8)
    one_tile<8>(which, in, out);
  else
    one_tile<16>(which, in, out);
}

}  // namespace fastconv::cpu::FC_ISA
