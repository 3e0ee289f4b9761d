// conv2d_winograd.cpp: 3x3 stride-1 convolution by Winograd's minimal filtering
// F(m x m, 3 x 3), m = 2, 4, 6 (Lavin & Gray 2015); the matrices are in math/winograd.h.
//   x is (N, C, H, W), w is (K, C/groups, 3, 3), bias is (K,) or null, y is (N, K, P, Q).
// The output is cut into tiles of m x m (edge tiles clipped); tile t reads the n x n
// (n = m + 2) input window at (t_h * m - pad_h, t_w * m - pad_w), zeros outside the image
// (the tile grid and blocks: math/tiles.h, shared with FFT).
//   1. kernel transform  U[g][xi][k][c] = (G w[g*K/g+k][c] G^T)[xi]   once per call, or
//                        once per plan (the kernel's prepared form)
//   2. input transform   V[xi][c][t]    = (B^T d(c, t) B)[xi]         per tile block
//   3. n*n GEMMs         M[xi] (K/g x T) = U[g][xi] (K/g x C/g) . V[xi] (C/g x T)
//   4. output transform  y tile (k, t)   = A^T M(k, t) A + bias[k]
// U and V are written straight into the GEMM's packed panel layouts (gemm.h's
// PackedLayout), so the products never re-pack them: U is packed once however many
// tile blocks use it, and V once however many blocks of output channels use it.
// Tiles are processed in blocks of T so that V and M of a block stay in L2. Work is split
// over (image, group, tile block) with one block per thread and serial GEMMs when there
// are enough blocks, and otherwise block by block with each phase split over the threads
// (channels, the n*n products, output channels). Transforms run on 16 lanes (16 tiles,
// or 16 input channels for the kernel) side by side, so they vectorise.
// Compiled once per ISA (FC_PER_ISA_SOURCES); float32 only.
// NaN/Inf: every output the reference makes non-finite is non-finite here too, but an
// input NaN or Inf also reaches, through the transforms' non-zero entries, other outputs
// of each tile whose n x n window covers it (in every output channel of the group): those
// may become NaN where the reference is finite. Outputs of other tiles are unaffected.
// Limits: R = S = 3, stride 1, dilation 1; any padding, groups, sizes.
#include <omp.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/partial_avx2.h"
#include "errors.h"
#include "math/tiles.h"
#include "math/winograd.h"

namespace fastconv::cpu::FC_ISA {
namespace {

using winograd::WinogradMatrices;

constexpr int kL = 16;                             // lanes of the transforms
constexpr index_t kBlockBytes = index_t(768) << 10;  // V + M of one tile block, per thread
constexpr index_t kMinBlockTiles = 128;              // fewer: narrower, less efficient GEMMs
constexpr index_t kChannelBlock = 32;                // output channels per task when weight-bound
// A flipped task's block of U (n*n x cb x kb floats): 384 KiB, below Zen 4's 1 MiB L2 with V.
// Per call at batch 1 (Intel Xeon, 2 threads), against cb = the GEMM's kc (256): F(4x4) on
// 512 -> 512, 14x14 2.51 ms (cb 48) vs 3.27; F(2x2) on 512 -> 512, 7x7 1.17 (cb 128) vs 1.18.
constexpr index_t kFlippedBlockBytes = index_t(384) << 10;

using tiles::ceil_div;
using tiles::round_up;

// Floats between the n*n planes of U and V: whole 64-byte lines, an odd number of them.
// The transforms store one vector into each of the n*n planes in turn; planes a multiple
// of 4 KiB apart would all land in one L1 set (8 ways) and evict each other.
index_t plane_stride(index_t floats) {
  const index_t lines = ceil_div(floats, 16);
  return (lines | 1) * 16;
}

// How the work is cut: the tile grid (math/tiles.h: m x m outputs a tile), its blocks and
// parallel scheme (V/M buffers per worker, M's rows ldt apart), the workspace layout.
struct Plan : tiles::Grid, tiles::Blocks {
  int m = 0, n = 0;
  bool prepared = false;                // U comes from a plan (not in the workspace)
  PackedLayout ul, vl;                  // packed U[g][xi] (K/g x C/g) and V[xi] (C/g x T)
  index_t u_xi = 0, v_xi = 0;           // floats per xi of packed U and V (64-byte multiples)
  index_t u_floats = 0, v_floats = 0, m_floats = 0;
  // Weight-bound problems (K/g >= all tiles: deep layers on small images): V of every
  // tile once, then blocks of kb output channels per thread, each transforming its own
  // rows of U into a private buffer (ub_floats) while they are hot, so the transformed
  // kernel (n*n*K*C/g floats) never travels through memory: cb input channels at a time
  // (V's K block), so that the block (n*n*kb*cb floats) stays in L2 with V for its
  // products. With a plan they read their rows of the prepared U instead.
  bool kblocked = false;
  // Per call (no plan) with fewer tiles than a B panel (nr), the products of a K block are
  // flipped: M[xi]^T (T x kb) = V[xi]^T (T x C/g, packed A) . U[xi]^T (C/g x kb, packed B).
  // The few tiles are the broadcast side and the output channels the vector side, so the
  // micro-kernel runs its full 8 x nr tile, not 8 x 16 on N = T = 16 columns whose B panels
  // are padded to 48 (those products ran at 27 % of peak on 512 -> 512, 7x7, batch 1; flipped,
  // the call is 1.33x faster, 1024 -> 1024 1.47x, F(4x4) on 512 -> 512, 14x14 1.56x; Intel
  // Xeon). With 49 tiles or more flipping lost (0.74-0.94x). kb is then nr; the products are
  // transposed into the output transform's (kb, n*n, ldt) layout: n*n*T*kb moves per
  // n*n*T*kb*C/g FMAs. A plan keeps the unflipped products of its prepared U, which it
  // streams with prefetching (the weights are out of the caches in a model): a plan keeping
  // U as the flipped calls' blocks ran 1.2-1.3x faster with U in cache but 0.75-0.95x with
  // it in memory (bench, contenders interleaved). So for these problems a plan's sums run in
  // another order than the call's: equal within Winograd's tolerance, not bitwise.
  bool flipped = false;
  index_t kb = 0, cb = 0, ub_floats = 0;
  index_t ub_xi = 0;  // floats per xi of a private block of U (kb x cb, packed)
  index_t floats() const {
    const index_t u = prepared ? 0 : u_floats;
    return kblocked ? round_up(v_floats, 16) + workers * ((prepared ? 0 : ub_floats) + m_floats)
                    : u + workers * (v_floats + m_floats);
  }
};

Plan make_plan(const ConvParams& p, int m, int threads, bool prepared) {
  Plan pl;
  pl.m = m;
  pl.n = m + 2;
  static_cast<tiles::Grid&>(pl) = tiles::make_grid(p, m, m);
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), nn = index_t(pl.n) * pl.n;
  const index_t per_tile = nn * (Cg + Kg) * index_t(sizeof(float));
  const index_t tmax = std::max<index_t>(kMinBlockTiles, kBlockBytes / per_tile / kL * kL);
  const index_t all = std::max<index_t>(1, p.N * pl.tiles);  // tiles of every image of one group
  static_cast<tiles::Blocks&>(pl) = tiles::split_blocks<kL>(all, tmax, p.groups, threads);
  pl.prepared = prepared;
  pl.ul = gemm_pack_a_layout<float>(Kg, Cg);
  pl.u_xi = plane_stride(pl.ul.elems());
  pl.u_floats = p.groups * nn * pl.u_xi;
  if (Kg >= all && nn * Cg * round_up(all, kL) * index_t(sizeof(float)) <= (index_t(16) << 20)) {
    pl.kblocked = true;
    pl.nblocks = 1;
    pl.T = all;
    pl.ldt = round_up(all, kL);
    const index_t nr = gemm_pack_b_layout<float>(1, 1).panel;
    pl.flipped = !prepared && all < nr;
    // Flipped: one B panel of output channels. Else a multiple of every ISA's mr: rows
    // of packed U.
    pl.kb = std::min<index_t>(Kg, pl.flipped ? nr : kChannelBlock);
    pl.workers = threads;
  }
  pl.vl = pl.flipped ? gemm_pack_a_layout<float>(pl.T, Cg) : gemm_pack_b_layout<float>(Cg, pl.T);
  if (pl.kblocked) {
    pl.cb = std::min(Cg, pl.vl.kc);
    if (pl.flipped) {  // fewer input channels at a time, so that U's block stays in L2
      const index_t fit = kFlippedBlockBytes / (nn * pl.kb * index_t(sizeof(float))) / kL * kL;
      pl.cb = std::min(pl.cb, std::max<index_t>(kL, fit));
      pl.vl.kc = pl.cb;  // V in K blocks of cb: each block of depth is one product's operand
    }
    pl.ub_xi = plane_stride(pl.flipped ? gemm_pack_b_layout<float>(pl.cb, pl.kb).elems()
                                       : gemm_pack_a_layout<float>(pl.kb, pl.cb).elems());
    pl.ub_floats = nn * pl.ub_xi;
  }
  pl.v_xi = plane_stride(pl.vl.elems());
  pl.v_floats = nn * pl.v_xi;
  // Flipped: the products (n*n, ldt, kb) and, after them, their transpose (kb, n*n, ldt).
  pl.m_floats = (pl.flipped ? 2 : 1) * nn * (pl.kblocked ? pl.kb : Kg) * pl.ldt;
  return pl;
}

// ---- register shuffles (AVX2 and AVX-512) ----------------------------------------------------
#if defined(__AVX2__)
// r[j][l] <- r[l][j].
inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif
#if defined(__AVX512F__)
// GCC 12 warns that some AVX-512 shuffles' (and casts') own undefined pass-through operand
// may be used uninitialised: its bug 105593, fixed in GCC 13.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
inline __m256 lower_half(__m512 v) { return _mm512_castps512_ps256(v); }
inline __m256 upper_half(__m512 v) { return _mm512_extractf32x8_ps(v, 1); }

// r[j][l] <- r[l][j], 16 x 16.
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit lane q of r[4i + j]: rows 4i .. 4i+3 of column 4q + j
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Stores n*n vectors of `lanes` values (v + xi * kL), consecutive in the outer index
// (i0, i0 + 1, ...) at depth k, into n*n packed operands (base + xi * xi_stride) laid out
// alike; only outer indices below outer_limit. The offsets are worked out once for all
// xi (they cost divisions), and the common shapes are fixed-size copies (vector moves):
// 16 lanes inside one panel (AVX-512's B panels of 48) or two whole panels of 8 (its A).
template <int NN>
void store_packed(const PackedLayout& lay, float* base, index_t xi_stride, index_t i0, index_t k,
                  const float* v, int lanes, index_t outer_limit) {
  if (lanes == kL && i0 + kL <= outer_limit) {
    const index_t r = i0 % lay.panel, off = lay.offset(i0, k);
    if (r + kL <= lay.panel) {
      for (int xi = 0; xi < NN; ++xi)
        std::memcpy(base + xi * xi_stride + off, v + xi * kL, sizeof(float) * kL);
      return;
    }
    if (lay.panel == 8 && r == 0) {
      const index_t off2 = lay.offset(i0 + 8, k);
      for (int xi = 0; xi < NN; ++xi) {
#if defined(__AVX512F__)
        // One 64-byte load, split in registers: v was just stored as whole vectors, and a
        // 32-byte load of a 64-byte store's upper half misses store-to-load forwarding.
        const __m512 u = _mm512_load_ps(v + xi * kL);
        _mm256_storeu_ps(base + xi * xi_stride + off, lower_half(u));
        _mm256_storeu_ps(base + xi * xi_stride + off2, upper_half(u));
#else
        std::memcpy(base + xi * xi_stride + off, v + xi * kL, sizeof(float) * 8);
        std::memcpy(base + xi * xi_stride + off2, v + xi * kL + 8, sizeof(float) * 8);
#endif
      }
      return;
    }
  }
  const index_t end = std::min<index_t>(i0 + lanes, outer_limit);
  for (index_t i = i0; i < end;) {
    const index_t run = std::min(end - i, lay.panel - i % lay.panel), off = lay.offset(i, k);
    for (int xi = 0; xi < NN; ++xi)
      std::memcpy(base + xi * xi_stride + off, v + xi * kL + (i - i0), sizeof(float) * run);
    i += run;
  }
}

// ---- 1. kernel transform: packed U[g][xi] (K/g x C/g), 16 output channels at a time --------
// The kernels of 16 output channels, side by side: t[f * kL + l] = w_l[f] for f < 9 * cc,
// where w_l = w + l * kstride (row l: output channel l's 9 * cc weights, cc <= 16 input
// channels); lanes >= `lanes` and elements f >= 9 * cc are zero. Each row is read with
// contiguous vector loads (prefetched ahead: 16 streams) and the 16 rows are transposed in
// registers. Reading element by element, 16 rows 9 * C/g floats apart, made the kernel
// transform 55 % of a per-call F(2x2) at batch 1 (Zen 4, 1 thread, 512 -> 512 on 7x7: 2.0 ms
// of 3.4; the products 1.15 ms). With this, Lanes16 below and store_packed's whole-vector
// loads the call took 1.48 ms instead of 2.18 at 2 threads (python -m fastconv bench).
#if defined(__AVX512F__)
// 4.5 KiB ahead in each of the 16 rows, into L2 (72 KiB in flight would overflow L1): with
// cold weights (a 64 MiB write between calls), 512 -> 512 on 7x7 at batch 1 took 1.59-1.72 ms
// against 1.94-2.10 prefetching into L1, 1024 -> 1024 6.0-6.2 ms against 6.8-7.0 (Zen 4, 2 threads).
constexpr int kPrefetchFloats = 8 * 9 * kL;

inline void load_kernels_transposed(const float* w0, index_t kstride, int lanes, int cc, float* t) {
  const int len = 9 * cc;
  for (int f0 = 0; f0 < 9 * kL; f0 += kL) {
    const __mmask16 mask = f0 + kL <= len ? __mmask16(0xFFFF)
                           : f0 >= len    ? 0
                                          : __mmask16((1u << (len - f0)) - 1u);
    __m512 r[16];
    for (int l = 0; l < kL; ++l) {
      r[l] = l < lanes ? _mm512_maskz_loadu_ps(mask, w0 + l * kstride + f0) : _mm512_setzero_ps();
      _mm_prefetch(reinterpret_cast<const char*>(w0 + l * kstride + f0 + kPrefetchFloats), _MM_HINT_T1);
    }
    transpose16x16(r);
    for (int j = 0; j < kL; ++j) _mm512_store_ps(t + (f0 + j) * kL, r[j]);
  }
}
#elif defined(__AVX2__)
inline void load_kernels_transposed(const float* w0, index_t kstride, int lanes, int cc, float* t) {
  const int len = 9 * cc;
  for (int half = 0; half < kL; half += 8)
    for (int f0 = 0; f0 < 9 * kL; f0 += 8) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l)
        r[l] = half + l < lanes && f0 < len
                   ? load_first_n(w0 + (half + l) * kstride + f0, std::min(8, len - f0))
                   : _mm256_setzero_ps();
      transpose8x8(r);
      for (int j = 0; j < 8; ++j) _mm256_store_ps(t + (f0 + j) * kL + half, r[j]);
    }
}
#else
inline void load_kernels_transposed(const float* w0, index_t kstride, int lanes, int cc, float* t) {
  for (int f = 0; f < 9 * kL; ++f)
    for (int l = 0; l < kL; ++l) t[f * kL + l] = l < lanes && f < 9 * cc ? w0[l * kstride + f] : 0.f;
}
#endif

// 16 lanes as one value, for winograd.h's transforms (written for L lanes of any type): with
// float and L = 16, GCC 12 compiled the kernel transform into scalar and 128-bit pieces
// between shuffles; with one 16-float vector per element every step is one vector operation.
#if defined(__AVX2__)
struct Lanes16 {
  typedef float V __attribute__((vector_size(64), may_alias));
  V v;
  Lanes16() = default;
  explicit Lanes16(double d) : v(V{} + float(d)) {}
  Lanes16& operator+=(const Lanes16& o) {
    v += o.v;
    return *this;
  }
  friend Lanes16 operator*(const Lanes16& a, const Lanes16& b) { return Lanes16(a.v * b.v); }

 private:
  explicit Lanes16(V x) : v(x) {}
};

template <int M>
inline void kernel_transform16(const float* g, float* u) {
  winograd::kernel_transform<M, 1>(reinterpret_cast<const Lanes16*>(g), reinterpret_cast<Lanes16*>(u));
}
#else
template <int M>
inline void kernel_transform16(const float* g, float* u) {
  winograd::kernel_transform<M, kL>(g, u);
}
#endif

// Output channels gk0 .. gk0 + lanes - 1 (of all K; one group), input channels c_begin ..
// c_end - 1 of the group, into rows row0 .. and depths 0 .. c_end - c_begin - 1 of the packed
// operands Ug + xi * xi_stride, laid out by `lay`. Lanes run along output channels because
// packed A keeps consecutive rows (mr of them) side by side at each depth.
template <int M>
void kernel_rows(const ConvParams& p, const float* w, index_t gk0, int lanes, index_t c_begin, index_t c_end,
                 float* Ug, index_t row0, const PackedLayout& lay, index_t xi_stride) {
  constexpr int n = M + 2, nn = n * n;
  const index_t kstride = p.C_per_group() * 9;
  alignas(64) float gt[9 * kL * kL];  // 16 input channels' kernels of the 16 lanes
  alignas(64) float ut[nn * kL];
  for (index_t c0 = c_begin; c0 < c_end; c0 += kL) {
    const int cc = int(std::min<index_t>(kL, c_end - c0));
    load_kernels_transposed(w + gk0 * kstride + c0 * 9, kstride, lanes, cc, gt);
    for (int c = 0; c < cc; ++c) {
      kernel_transform16<M>(gt + c * 9 * kL, ut);
      store_packed<nn>(lay, Ug, xi_stride, row0, c0 - c_begin + c, ut, lanes, lay.outer_padded);
    }
  }
}

// Rows k0 .. k1 of one group's U (output channels g*K/g + k), packed by `lay`.
template <int M>
void kernel_block(const ConvParams& p, const float* w, index_t g, index_t k0, index_t k1, index_t c_begin,
                  index_t c_end, float* Ug, index_t row0, const PackedLayout& lay, index_t xi_stride) {
  const index_t Kg = p.K_per_group();
  for (index_t k = k0; k < k1; k += kL)
    kernel_rows<M>(p, w, g * Kg + k, int(std::min<index_t>(kL, k1 - k)), c_begin, c_end, Ug, row0 + k - k0,
                   lay, xi_stride);
}

// All of U, packed (the kernel's prepared form): U + (g * nn + xi) * u_xi.
template <int M>
void transform_kernels(const ConvParams& p, const Plan& pl, const float* w, float* U, bool parallel) {
  constexpr int nn = (M + 2) * (M + 2);
  const index_t Kg = p.K_per_group(), per_group = ceil_div(Kg, kL);
  // Padding rows of the last panel are multiplied (never stored): keep them zero.
  if (pl.ul.outer_padded != Kg) std::memset(U, 0, sizeof(float) * pl.u_floats);
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t i = 0; i < p.groups * per_group; ++i) {
    const index_t g = i / per_group, k0 = i % per_group * kL;
    kernel_block<M>(p, w, g, k0, std::min(Kg, k0 + kL), 0, p.C_per_group(), U + g * nn * pl.u_xi, k0, pl.ul,
                    pl.u_xi);
  }
}

// ---- strided rows of 16 side-by-side tiles (AVX-512, m = 2 and 4) ---------------------------
// Tile l of a run starts m*l columns after tile 0, so lane l of element j of a window row
// is src[j + m*l]: a stride-m gather, done with two-source permutes of contiguous loads
// instead of 16 scalar loads. The output side is the inverse interleave.
#if defined(__AVX512F__)
constexpr bool kVectorRuns = true;

// dt[j*16 + l] = src[j + M*l] for j < n (one window row of 16 tiles).
template <int M, int n>
inline void gather_row(const float* src, float* dt) {
  static_assert(M == 2 || M == 4, "stride-2 and stride-4 runs only");
  if constexpr (M == 2) {
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int j = 0; j < n; ++j) {  // needs src[j .. j + 30]
      const __m512 a = _mm512_loadu_ps(src + j), b = _mm512_maskz_loadu_ps(0x7FFF, src + j + 16);
      _mm512_store_ps(dt + j * kL, _mm512_permutex2var_ps(a, idx, b));
    }
  } else {
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    for (int j = 0; j < n; ++j) {  // needs src[j .. j + 60]
      const __m512 a = _mm512_loadu_ps(src + j), b = _mm512_loadu_ps(src + j + 16);
      const __m512 c = _mm512_loadu_ps(src + j + 32), d = _mm512_maskz_loadu_ps(0x1FFF, src + j + 48);
      const __m512 lo = _mm512_permutex2var_ps(a, idx, b), hi = _mm512_permutex2var_ps(c, idx, d);
      _mm512_store_ps(dt + j * kL, _mm512_mask_blend_ps(0xFF00, lo, hi));
    }
  }
}

// dst[j + M*l] = yt[j*16 + l] + bias for j < M (one output row of 16 tiles).
template <int M>
inline void scatter_row(const float* yt, float b, float* dst) {
  static_assert(M == 2 || M == 4, "stride-2 and stride-4 runs only");
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512 vb = _mm512_set1_ps(b);
  if constexpr (M == 2) {
    const __m512 y0 = _mm512_add_ps(_mm512_load_ps(yt), vb), y1 = _mm512_add_ps(_mm512_load_ps(yt + kL), vb);
    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(y0, lo, y1));
    _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(y0, hi, y1));
  } else {
    __m512 y[4];
    for (int j = 0; j < 4; ++j) y[j] = _mm512_add_ps(_mm512_load_ps(yt + j * kL), vb);
    // a: y0/y2 interleaved, b: y1/y3 interleaved; then a/b interleaved gives j-fastest order.
    const __m512 a0 = _mm512_permutex2var_ps(y[0], lo, y[2]), a1 = _mm512_permutex2var_ps(y[0], hi, y[2]);
    const __m512 b0 = _mm512_permutex2var_ps(y[1], lo, y[3]), b1 = _mm512_permutex2var_ps(y[1], hi, y[3]);
    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(a0, lo, b0));
    _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(a0, hi, b0));
    _mm512_storeu_ps(dst + 32, _mm512_permutex2var_ps(a1, lo, b1));
    _mm512_storeu_ps(dst + 48, _mm512_permutex2var_ps(a1, hi, b1));
  }
}
#endif  // __AVX512F__: kVectorRuns is only read under the same condition

// ---- 8 tiles at a time through an 8 x 8 transpose (AVX2 and AVX-512) ----------------------
// The runs above need 16 tiles in one row of tiles, which ResNet's maps never give (14 tiles
// a row at 56 x 56, 7 at 28 x 28, 4 at 14 x 14). Any 8 tiles can instead load each window
// row as one vector per tile and transpose them: per row 8 loads, 24 shuffles and n stores,
// where the per-tile loop moves 8*n scalars (Zen 1, 64->64 on 56x56, winograd:4: the
// transforms were a third of the layer). AVX2 does it for interior tiles (plain loads);
// AVX-512 for every tile, with masked loads that skip the columns outside the image. On
// Zen 5 that beat 16-lane masked gathers by 9-13 % of the whole layer (64->64 on 56x56 and
// 128->128 on 28x28, winograd:4, batch 1 and 8), and the output side's transposes instead of
// per-lane scalar stores gained 7-9 % more.
#if defined(__AVX2__)
constexpr bool kTranspose8 = true;

// dt[(i*n + j)*kL + l] = src[l][i*W + j] for i, j < n: 8 windows wholly inside the image
// (dt: lane 0 or 8 of a 64-byte aligned block; reads no element outside the windows).
template <int n>
inline void gather8(const float* const* src, index_t W, float* dt) {
  for (int i = 0; i < n; ++i) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) r[l] = load_first_n(src[l] + i * W, n);
    transpose8x8(r);
    for (int j = 0; j < n; ++j) _mm256_store_ps(dt + (i * n + j) * kL, r[j]);
  }
}

// dst[l][i*Q + j] = yt[(i*M + j)*kL + l] + b for i, j < M: 8 tiles wholly inside P x Q.
template <int M>
inline void scatter8(const float* yt, float b, float* const* dst, index_t Q) {
  const __m256 vb = _mm256_set1_ps(b);
  for (int i = 0; i < M; ++i) {
    __m256 r[8];
    for (int j = 0; j < 8; ++j)
      r[j] = j < M ? _mm256_add_ps(_mm256_load_ps(yt + (i * M + j) * kL), vb) : _mm256_setzero_ps();
    transpose8x8(r);
    for (int l = 0; l < 8; ++l) store_first_n(dst[l] + i * Q, r[l], M);
  }
}
#else
constexpr bool kTranspose8 = false;
template <int n>
inline void gather8(const float* const*, index_t, float*) {}
template <int M>
inline void scatter8(const float*, float, float* const*, index_t) {}
#endif

// ---- tile geometry of a block (math/tiles.h), computed once per block (not per channel) ---
struct TileGeo : tiles::Tile {
  bool interior8;  // tiles i .. i+7 are all interior (i a multiple of 8; AVX2's input side)
  bool full8;      // tiles i .. i+7 all have M x M outputs inside P x Q (likewise)
};

template <int M>
void tile_geometry(const ConvParams& p, const Plan& pl, index_t g, index_t t0, index_t T, TileGeo* geo) {
  tiles::fill<kL>(p, pl, g, t0, T, geo);
  for (index_t i = 0; i < T; ++i) geo[i].interior8 = geo[i].full8 = false;
  for (index_t i = 0; i + 8 <= T; i += 8) {  // groups of 8 tiles for the 8 x 8 transposes
    geo[i].interior8 = std::all_of(geo + i, geo + i + 8, [](const TileGeo& e) { return e.interior; });
    geo[i].full8 =
        std::all_of(geo + i, geo + i + 8, [](const TileGeo& e) { return e.rows == M && e.cols == M; });
  }
}

#if defined(__AVX512F__)
// dt[(i*n + j)*kL + l] for lanes l < 8 of tiles g8[0 .. lanes) of any geometry, zeros
// elsewhere: a window row inside the image is one masked load (columns outside the image
// are neither read nor kept), a row outside is zero; then the 8 x 8 transpose.
template <int n>
inline void gather8_masked(const float* xc, const TileGeo* g8, int lanes, index_t H, index_t W, float* dt) {
  __mmask8 cols[8];
  for (int l = 0; l < 8; ++l) {
    const int lo = l < lanes ? std::max(0, -g8[l].iw0) : n;
    const int hi = l < lanes ? int(std::min<index_t>(n, W - g8[l].iw0)) : 0;
    cols[l] = hi > lo ? __mmask8(((1u << hi) - 1u) & ~((1u << lo) - 1u)) : __mmask8(0);
  }
  for (int i = 0; i < n; ++i) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) {
      const bool row_in = l < lanes && g8[l].ih0 + i >= 0 && g8[l].ih0 + i < H;
      r[l] = row_in ? _mm256_maskz_loadu_ps(cols[l], xc + g8[l].x_off + i * W) : _mm256_setzero_ps();
    }
    transpose8x8(r);
    for (int j = 0; j < n; ++j) _mm256_store_ps(dt + (i * n + j) * kL, r[j]);
  }
}
#endif

// ---- 2. input transform of one block: packed V[xi] (C/g x T), column t - t0 -------------------
// Tile t (of every image of group g): image t / tiles, tile t % tiles of that image. Columns
// T .. of the last panel get the transform of zeros (zero), so the products stay finite.
template <int M>
void transform_inputs(const ConvParams& p, const Plan& pl, const float* x, const TileGeo* geo, index_t T,
                      float* V, bool parallel) {
  constexpr int n = M + 2, nn = n * n;
  const index_t Cg = p.C_per_group(), H = p.H, W = p.W, ldt = pl.ldt;
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t c = 0; c < Cg; ++c) {
    alignas(64) float dt[nn * kL];
    alignas(64) float vt[nn * kL];
    const float* xc = x + c * H * W;
    for (index_t tb = 0; tb < ldt; tb += kL) {
      if (tb + kL <= T && geo[tb].run) {
        // 16 interior tiles side by side: lane l reads src[i * W + j + M * l].
        const float* src = xc + geo[tb].x_off;
#if defined(__AVX512F__)
        if constexpr (kVectorRuns && (M == 2 || M == 4)) {
          for (int i = 0; i < n; ++i) gather_row<M, n>(src + i * W, dt + i * n * kL);
        } else
#endif
        {
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) {
              FC_UNROLL(16)
              for (int l = 0; l < kL; ++l) dt[(i * n + j) * kL + l] = src[i * W + j + M * l];
            }
        }
      }
#if defined(__AVX512F__)
      else {  // any 16 tiles: two groups of 8 through masked loads and transposes
        const int lanes = int(std::min<index_t>(kL, T - tb));
        gather8_masked<n>(xc, geo + tb, std::min(lanes, 8), H, W, dt);
        gather8_masked<n>(xc, lanes > 8 ? geo + tb + 8 : geo + tb, std::max(lanes - 8, 0), H, W, dt + 8);
      }
#else
      else {
        for (int l = 0; l < kL; ++l) {
          if (kTranspose8 && l % 8 == 0 && tb + l < T && geo[tb + l].interior8) {
            const float* src[8];
            for (int h = 0; h < 8; ++h) src[h] = xc + geo[tb + l + h].x_off;
            gather8<n>(src, W, dt + l);
            l += 7;
            continue;
          }
          if (tb + l >= T) {
            for (int e = 0; e < nn; ++e) dt[e * kL + l] = 0.f;
            continue;
          }
          const TileGeo& e = geo[tb + l];
          const float* src = xc + e.x_off;
          if (e.interior) {
            for (int i = 0; i < n; ++i)
              for (int j = 0; j < n; ++j) dt[(i * n + j) * kL + l] = src[i * W + j];
          } else {
            for (int i = 0; i < n; ++i) {
              const bool row_in = e.ih0 + i >= 0 && e.ih0 + i < H;
              for (int j = 0; j < n; ++j) {
                const bool in = row_in && e.iw0 + j >= 0 && e.iw0 + j < W;
                dt[(i * n + j) * kL + l] = in ? src[i * W + j] : 0.f;
              }
            }
          }
        }
      }
#endif
      winograd::input_transform<M, kL>(dt, vt);
      store_packed<nn>(pl.vl, V, pl.v_xi, tb, c, vt, kL, pl.vl.outer_padded);
    }
  }
}

// ---- 3. the n*n products: M[xi] (K/g x T) = U_g[xi] (K/g x C/g) . V[xi] (C/g x T) -------------
// Rows k0 .. k0 + rows of U (packed with `outer` rows, u_xi apart per xi) into Mb, laid out
// (rows, n*n, ldt): the output transform of one channel then reads one contiguous run
// instead of n*n streams far apart. V was packed for pl.T columns; a shorter last block
// uses its first T. Only depths (input channels) c0 .. c0 + depth - 1 of V, which are one
// packed block of it when c0 is a multiple of its K block; added to Mb when `accumulate`.
void multiply(const Plan& pl, const float* Ug, index_t u_outer, index_t u_xi, index_t k0, index_t rows,
              const float* V, index_t T, float* Mb, bool parallel, bool u_streamed, index_t c0, index_t depth,
              bool accumulate) {
  const index_t nn = index_t(pl.n) * pl.n;
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (index_t xi = 0; xi < nn; ++xi) {
    const auto a = GemmOperand<float>::prepacked(Ug + xi * u_xi, u_outer, k0, u_streamed);
    const auto b = GemmOperand<float>::prepacked(V + xi * pl.v_xi + c0 * pl.vl.outer_padded, pl.T);
    gemm_ex<float>(rows, T, depth, 1.f, a, b, accumulate ? 1.f : 0.f, Mb + xi * pl.ldt, nn * pl.ldt);
  }
}

// Flipped products of one K block (Plan::flipped): Ct[xi] (T x rows, kb apart; planes ldt*kb apart) =
// V[xi]^T (T x depth, packed A from depth c0) . Ub[xi] (depth x rows, packed B), added
// to Ct when `accumulate`. On the calling thread.
void multiply_flipped(const Plan& pl, const float* Ub, index_t rows, const float* V, index_t T, float* Ct,
                      index_t c0, index_t depth, bool accumulate) {
  const index_t nn = index_t(pl.n) * pl.n;
  for (index_t xi = 0; xi < nn; ++xi) {
    const auto a = GemmOperand<float>::prepacked(V + xi * pl.v_xi + c0 * pl.vl.outer_padded, pl.T);
    const auto b = GemmOperand<float>::prepacked(Ub + xi * pl.ub_xi, pl.kb);
    gemm_ex<float>(T, rows, depth, 1.f, a, b, accumulate ? 1.f : 0.f, Ct + xi * pl.ldt * pl.kb, pl.kb);
  }
}

// Ct (n*n, ldt, kb) -> Mb (rows, n*n, ldt): the layout transform_outputs reads. 16 x 16
// blocks are transposed in registers (AVX-512); they also read Ct's rows T .. ldt, which the
// products never write, into Mb's padding lanes, whose outputs transform_outputs drops.
void transpose_products(const Plan& pl, const float* Ct, index_t T, index_t rows, float* Mb) {
  const index_t nn = index_t(pl.n) * pl.n, kb = pl.kb, ldt = pl.ldt;
  for (index_t xi = 0; xi < nn; ++xi) {
    const float* C = Ct + xi * ldt * kb;
    index_t k = 0;
#if defined(__AVX512F__)
    for (; k + kL <= rows; k += kL)
      for (index_t t = 0; t < T; t += kL) {  // t + 16 <= ldt
        __m512 r[kL];
        for (int l = 0; l < kL; ++l) r[l] = _mm512_loadu_ps(C + (t + l) * kb + k);
        transpose16x16(r);
        for (int j = 0; j < kL; ++j) _mm512_storeu_ps(Mb + ((k + j) * nn + xi) * ldt + t, r[j]);
      }
#endif
    for (; k < rows; ++k)
      for (index_t t = 0; t < T; ++t) Mb[(k * nn + xi) * ldt + t] = C[t * kb + k];
  }
}

// ---- 4. output transform of one block into y (N, K, P, Q), group g, + bias ------------------
// Mb holds rows k0 .. k1-1 of the group's output channels, laid out (k1 - k0, n*n, ldt).
template <int M>
void transform_outputs(const ConvParams& p, const Plan& pl, const float* Mb, const TileGeo* geo, index_t T,
                       index_t k0, index_t k1, const float* bias_g, float* y, bool parallel) {
  constexpr int n = M + 2, nn = n * n;
  const index_t P = p.P, Q = p.Q, ldt = pl.ldt;
#pragma omp parallel for schedule(static) if (parallel)
  for (index_t k = k0; k < k1; ++k) {
    const float b = bias_g ? bias_g[k] : 0.f;
    float* yk = y + k * P * Q;
    alignas(64) float mt[nn * kL];
    alignas(64) float yt[M * M * kL];
    for (index_t tb = 0; tb < T; tb += kL) {
      for (int xi = 0; xi < nn; ++xi)
        std::memcpy(mt + xi * kL, Mb + ((k - k0) * nn + xi) * ldt + tb, sizeof(float) * kL);
      winograd::output_transform<M, kL>(mt, yt);
      if (tb + kL <= T && geo[tb].run) {  // 16 full tiles side by side
        float* dst = yk + geo[tb].y_off;
#if defined(__AVX512F__)
        if constexpr (kVectorRuns && (M == 2 || M == 4)) {
          for (int i = 0; i < M; ++i) scatter_row<M>(yt + i * M * kL, b, dst + i * Q);
          continue;
        }
#endif
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < M; ++j) {
            FC_UNROLL(16)
            for (int l = 0; l < kL; ++l) dst[i * Q + j + M * l] = yt[(i * M + j) * kL + l] + b;
          }
        continue;
      }
      const int lanes = int(std::min<index_t>(kL, T - tb));
      for (int l = 0; l < lanes; ++l) {
        if (kTranspose8 && l % 8 == 0 && geo[tb + l].full8) {
          float* dst[8];
          for (int h = 0; h < 8; ++h) dst[h] = yk + geo[tb + l + h].y_off;
          scatter8<M>(yt + l, b, dst, Q);
          l += 7;
          continue;
        }
        const TileGeo& e = geo[tb + l];
        float* dst = yk + e.y_off;
        for (int i = 0; i < e.rows; ++i)
          for (int j = 0; j < e.cols; ++j) dst[i * Q + j] = yt[(i * M + j) * kL + l] + b;
      }
    }
  }
}

template <int M>
void run_kblocked(const ConvParams& p, const Plan& pl, const float* x, const float* w, const float* U,
                  const float* bias, float* y, float* ws) {
  const int threads = omp_get_max_threads();
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group(), nn = index_t(pl.n) * pl.n;
  const index_t T = pl.T, nkb = ceil_div(Kg, pl.kb);
  float* V = ws;
  float* bufs = ws + round_up(pl.v_floats, 16);
  const index_t ub_floats = U ? 0 : pl.ub_floats;
  std::vector<TileGeo> geo(T);
  for (index_t g = 0; g < p.groups; ++g) {
    tile_geometry<M>(p, pl, g, 0, T, geo.data());
    transform_inputs<M>(p, pl, x, geo.data(), T, V, threads > 1);
    const float* Ug = U ? U + g * nn * pl.u_xi : nullptr;
#pragma omp parallel
    {
      float* Ut = bufs + omp_get_thread_num() * (ub_floats + pl.m_floats);
      float* Mt = Ut + ub_floats;
      float* Ct = Mt + pl.m_floats / 2;  // flipped products, before their transpose
#pragma omp for schedule(dynamic)
      for (index_t kbi = 0; kbi < nkb; ++kbi) {
        const index_t k0 = kbi * pl.kb, k1 = std::min(Kg, k0 + pl.kb), rows = k1 - k0;
        if (U) {  // the plan's rows k0 .. k1 of U
          multiply(pl, Ug, Kg, pl.u_xi, k0, rows, V, T, Mt, false, true, 0, Cg, false);
        } else {  // transform them now, a K block of input channels at a time, into a private
                  // packed block that stays in L2 for its products
          for (index_t c0 = 0; c0 < Cg; c0 += pl.cb) {
            const index_t cc = std::min(pl.cb, Cg - c0);
            const PackedLayout ubl =
                pl.flipped ? gemm_pack_b_layout<float>(cc, pl.kb) : gemm_pack_a_layout<float>(pl.kb, cc);
            if (rows % ubl.panel) std::memset(Ut, 0, sizeof(float) * ub_floats);
            kernel_block<M>(p, w, g, k0, k1, c0, c0 + cc, Ut, 0, ubl, pl.ub_xi);
            if (pl.flipped)
              multiply_flipped(pl, Ut, rows, V, T, Ct, c0, cc, c0 > 0);
            else
              multiply(pl, Ut, pl.kb, pl.ub_xi, 0, rows, V, T, Mt, false, false, c0, cc, c0 > 0);
          }
          if (pl.flipped) transpose_products(pl, Ct, T, rows, Mt);
        }
        transform_outputs<M>(p, pl, Mt, geo.data(), T, k0, k1, bias ? bias + g * Kg : nullptr, y, false);
      }
    }
  }
}

// U: the prepared (packed, transformed) kernel, or null to transform w in this call.
template <int M>
void run(const ConvParams& p, const float* x, const float* w, const float* U, const float* bias, float* y,
         void* workspace) {
  if (p.N == 0) return;
  const int threads = omp_get_max_threads();
  const Plan pl = make_plan(p, M, threads, U != nullptr);
  const index_t Kg = p.K_per_group(), G = p.groups, nn = index_t(pl.n) * pl.n;
  float* ws = static_cast<float*>(workspace);
  if (pl.kblocked) {
    run_kblocked<M>(p, pl, x, w, U, bias, y, ws);
    return;
  }
  float* bufs = ws;
  const bool u_streamed = U != nullptr;  // the plan's transformed kernel, else this call's
  if (!U) {
    transform_kernels<M>(p, pl, w, ws, threads > 1);
    U = ws;
    bufs = ws + pl.u_floats;
  }
  const index_t per_worker = pl.v_floats + pl.m_floats;

  // One (image, group, block) item: all four phases, split over threads when `parallel`.
  auto item = [&](index_t it, float* V, float* Mb, bool parallel) {
    const index_t blk = it % pl.nblocks, g = it / pl.nblocks;
    const index_t t0 = blk * pl.T, T = std::min(pl.T, p.N * pl.tiles - t0);
    if (T <= 0) return;
    std::vector<TileGeo> geo(T);
    tile_geometry<M>(p, pl, g, t0, T, geo.data());
    transform_inputs<M>(p, pl, x, geo.data(), T, V, parallel);
    multiply(pl, U + g * nn * pl.u_xi, Kg, pl.u_xi, 0, Kg, V, T, Mb, parallel, u_streamed, 0, p.C_per_group(),
             false);
    transform_outputs<M>(p, pl, Mb, geo.data(), T, 0, Kg, bias ? bias + g * Kg : nullptr, y, parallel);
  };
  const index_t items = G * pl.nblocks;
  if (pl.outer) {
#pragma omp parallel
    {
      float* V = bufs + omp_get_thread_num() * per_worker;
#pragma omp for schedule(dynamic)
      for (index_t it = 0; it < items; ++it) item(it, V, V + pl.v_floats, false);
    }
  } else {
    for (index_t it = 0; it < items; ++it) item(it, bufs, bufs + pl.v_floats, threads > 1);
  }
}

template <int M>
void prepare(const ConvParams& p, const float* w, float* U) {
  const Plan pl = make_plan(p, M, 1, false);
  transform_kernels<M>(p, pl, w, U, omp_get_max_threads() > 1);
}

}  // namespace

index_t conv2d_winograd_workspace_bytes(const ConvParams& p, int m, bool prepared) {
  return make_plan(p, m, omp_get_max_threads(), prepared).floats() * index_t(sizeof(float));
}

index_t conv2d_winograd_prepared_bytes(const ConvParams& p, int m) {
  return make_plan(p, m, 1, false).u_floats * index_t(sizeof(float));
}

void conv2d_winograd_prepare(const ConvParams& p, int m, const float* w, float* prepared) {
  switch (m) {
    case 2: prepare<2>(p, w, prepared); break;
    case 4: prepare<4>(p, w, prepared); break;
    case 6: prepare<6>(p, w, prepared); break;
    default: FC_ISA_CHECK(false, "winograd tile size must be 2, 4 or 6 (got %d)", m);
  }
}

void conv2d_winograd(const ConvParams& p, int m, const float* x, const float* w, const float* prepared,
                     const float* bias, float* y, void* workspace) {
  switch (m) {
    case 2: run<2>(p, x, w, prepared, bias, y, workspace); break;
    case 4: run<4>(p, x, w, prepared, bias, y, workspace); break;
    case 6: run<6>(p, x, w, prepared, bias, y, workspace); break;
    default: FC_ISA_CHECK(false, "winograd tile size must be 2, 4 or 6 (got %d)", m);
  }
}

// One tile through the kernel's own transforms, for the tests: `which` 0 = input
// (n x n -> n x n), 1 = kernel (3 x 3 -> n x n), 2 = output (n x n -> m x m).
template <int M>
void one_tile(int which, const float* in, float* out) {
  constexpr int n = M + 2;
  alignas(64) float a[n * n * kL] = {};
  alignas(64) float b[n * n * kL] = {};
  const int in_len = which == 1 ? 9 : n * n, out_len = which == 2 ? M * M : n * n;
  for (int e = 0; e < in_len; ++e) a[e * kL] = in[e];
  if (which == 0) winograd::input_transform<M, kL>(a, b);
  if (which == 1) winograd::kernel_transform<M, kL>(a, b);
  if (which == 2) winograd::output_transform<M, kL>(a, b);
  for (int e = 0; e < out_len; ++e) out[e] = b[e * kL];
}

void winograd_tile_transform(int m, int which, const float* in, float* out) {
  FC_ISA_CHECK(which >= 0 && which <= 2, "transform must be input, kernel or output");
  switch (m) {
    case 2: one_tile<2>(which, in, out); break;
    case 4: one_tile<4>(which, in, out); break;
    case 6: one_tile<6>(which, in, out); break;
    default: FC_ISA_CHECK(false, "winograd tile size must be 2, 4 or 6 (got %d)", m);
  }
}

}  // namespace fastconv::cpu::FC_ISA
