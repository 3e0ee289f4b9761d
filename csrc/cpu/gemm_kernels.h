// gemm_kernels.h: internal interface between the packed-GEMM driver (gemm.cpp) and
// its per-ISA parts (micro-kernels and packing routines in gemm_avx512.cpp,
// gemm_avx2.cpp, and the scalar copy in gemm.cpp). Not part of the public API.
//
// The idea is BLIS's (Van Zee & van de Geijn 2015, after Goto & van de Geijn 2008):
// the driver blocks the product for the caches and packs A into MR-row micro-panels
// and B into NR-column micro-panels; an MR x NR register-blocked micro-kernel then
// does all the arithmetic, streaming both panels from contiguous memory.
//
// The packing routines and the micro-kernel are written ONCE here as templates over a
// small vector-traits type V (load, broadcast, fma, masked load/store), and each ISA
// translation unit instantiates them with its own traits and compile flags. They sit
// in an anonymous namespace on purpose: every TU then owns a private copy, so the
// linker can never merge an AVX-512 instantiation into the scalar path (ODR).
// Limits: row-major only. The C tile's vector lanes run along N: a leftover of up to
// 8 columns goes to a column kernel (vectors along M), wider leftovers use masked
// lanes, so N just above a multiple of 16 (float) wastes part of one vector.
#pragma once
#include <algorithm>
#include <utility>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "common.h"

namespace fastconv::cpu::gemm_detail {

// One ISA's contribution for one dtype: blocking parameters and three functions.
template <class T>
struct GemmKernel {
  const char* name;
  int mr, nr;          // register block: micro-tile rows (broadcast) and columns (vector lanes)
  index_t mc, kc, nc;  // cache blocks: A block mc x kc (L2), B panel (K or kc's) x nc (L3)
  // Packs op(A)[0:m, 0:k] (A already offset) into ceil(m/mr) micro-panels of mr x k,
  // k-major (dst[p*mr*k + kk*mr + i]), zero-padded to mr rows.
  void (*pack_a)(bool trans, index_t m, index_t k, const T* A, index_t lda, T* dst);
  // Packs op(B)[0:k, 0:n] (B already offset) into ceil(n/nr) micro-panels of k x nr,
  // (dst[p*nr*k + kk*nr + j]), zero-padded to nr columns.
  void (*pack_b)(bool trans, index_t k, index_t n, const T* B, index_t ldb, T* dst);
  // The same for columns [c0, c0 + n) of a gathered op(B) (GemmOperand::gathered) whose
  // first k rows start at k_offsets[0..k).
  void (*pack_b_gathered)(index_t k, index_t n, const T* data, const index_t* k_offsets,
                          const index_t* segment_offsets, index_t segment, index_t c0, T* dst);
  // c[0:m, 0:n] (row stride ldc; m <= mr, n <= nr) = alpha * ap.bp + beta * c + bias[i]
  // ap: one A micro-panel, bp: one B micro-panel, both k long. beta == 0: c is not read.
  // bias: m values, or nullptr. prefetch_c: fetch c's tile before the k loop (a C likely out
  // of the caches; see micro_kernel).
  void (*micro)(index_t k, const T* ap, const T* bp, T* c, index_t ldc, int m, int n, T alpha, T beta,
                const T* bias, bool prefetch_c);
  // The same, prefetching A ahead (see kPrefetchDepth): for an A packed long before the
  // product (GemmOperand::streamed), which is likely out of the caches.
  void (*micro_streamed_a)(index_t k, const T* ap, const T* bp, T* c, index_t ldc, int m, int n, T alpha,
                           T beta, const T* bias, bool prefetch_c);
};

// The per-ISA entry points. The scalar ones are defined in gemm.cpp; the AVX2 and AVX-512
// ones in gemm_avx2.cpp / gemm_avx512.cpp, in namespace cpu::avx2 / cpu::avx512, as every
// global symbol of an object compiled with an ISA's flags must be (its other symbols are
// private to it; tools/check_isa_objects.py checks both). The driver calls them through
// the inline kernel_<isa>_<dtype> below, which only gemm.cpp expands.
const GemmKernel<float>& kernel_scalar_f32();
const GemmKernel<double>& kernel_scalar_f64();

}  // namespace fastconv::cpu::gemm_detail

#if defined(FC_X86)
namespace fastconv::cpu::avx2 {
const gemm_detail::GemmKernel<float>& gemm_kernel_f32();
const gemm_detail::GemmKernel<double>& gemm_kernel_f64();
}  // namespace fastconv::cpu::avx2
namespace fastconv::cpu::avx512 {
const gemm_detail::GemmKernel<float>& gemm_kernel_f32();
const gemm_detail::GemmKernel<double>& gemm_kernel_f64();
}  // namespace fastconv::cpu::avx512
#endif

namespace fastconv::cpu::gemm_detail {

#if defined(FC_X86)
inline const GemmKernel<float>& kernel_avx2_f32() { return avx2::gemm_kernel_f32(); }
inline const GemmKernel<double>& kernel_avx2_f64() { return avx2::gemm_kernel_f64(); }
inline const GemmKernel<float>& kernel_avx512_f32() { return avx512::gemm_kernel_f32(); }
inline const GemmKernel<double>& kernel_avx512_f64() { return avx512::gemm_kernel_f64(); }
#endif

namespace {  // private to each including TU (see the header comment)

// ---- packing -----------------------------------------------------------------------
//
// Two access patterns cover all four transpose cases:
//  * copy:      the panel's k-th row is contiguous in the source (op(A) transposed in
//               memory, or op(B) not): dst[kk*P + j] = src[kk*ld + j].
//  * transpose: the panel's rows are contiguous in k (op(A) not transposed, or op(B)
//               transposed): dst[kk*P + i] = src[i*ld + kk]. This is the one the conv
//               callers hit for A (the weights), so it gets 4 x 8 register transposes
//               where the ISA has them (Tr, below), not one scalar per element.

// The scalar transposer: 4 source rows x BK columns at a time.
template <class T>
struct TransposeScalar {
  static constexpr int BK = 8;
  static void block(const T* src, index_t ld, T* dst, index_t P) {
    for (int r = 0; r < 4; ++r)
      for (int q = 0; q < BK; ++q) dst[q * P + r] = src[r * ld + q];
  }
};

#if defined(__AVX__)
// AVX transposers: 4 rows x 8 floats (or 4 doubles) per call, written as 16-byte
// (32-byte) runs of 4 rows at each k, where the micro-panel wants them.
template <class T>
struct TransposeAvx;
template <>
struct TransposeAvx<float> {
  static constexpr int BK = 8;
  static void block(const float* src, index_t ld, float* dst, index_t P) {
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld);
    const __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 k04 = _mm256_shuffle_ps(t0, t2, 0x44), k15 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 k26 = _mm256_shuffle_ps(t1, t3, 0x44), k37 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm_storeu_ps(dst + 0 * P, _mm256_castps256_ps128(k04));
    _mm_storeu_ps(dst + 1 * P, _mm256_castps256_ps128(k15));
    _mm_storeu_ps(dst + 2 * P, _mm256_castps256_ps128(k26));
    _mm_storeu_ps(dst + 3 * P, _mm256_castps256_ps128(k37));
    _mm_storeu_ps(dst + 4 * P, _mm256_extractf128_ps(k04, 1));
    _mm_storeu_ps(dst + 5 * P, _mm256_extractf128_ps(k15, 1));
    _mm_storeu_ps(dst + 6 * P, _mm256_extractf128_ps(k26, 1));
    _mm_storeu_ps(dst + 7 * P, _mm256_extractf128_ps(k37, 1));
  }
};
template <>
struct TransposeAvx<double> {
  static constexpr int BK = 4;
  static void block(const double* src, index_t ld, double* dst, index_t P) {
    const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ld);
    const __m256d r2 = _mm256_loadu_pd(src + 2 * ld), r3 = _mm256_loadu_pd(src + 3 * ld);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst + 0 * P, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + 1 * P, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * P, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * P, _mm256_permute2f128_pd(t1, t3, 0x31));
  }
};
#endif

// dst[kk*P + i] = src[i*ld + kk] for i < rows (<= P), zero rows up to P.
template <class Tr, int P, class T>
void pack_transpose(index_t rows, index_t k, const T* src, index_t ld, T* dst) {
  constexpr int BK = Tr::BK;
  index_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const T* s = src + i * ld;
    // The source usually comes from L3 or memory in rows ld apart, which the hardware
    // prefetcher follows poorly: fetch the next 4 rows while these are transposed.
    const T* next = s + 4 * ld;
    const bool pf = i + 8 <= rows;
    index_t kk = 0;
    for (; kk + BK <= k; kk += BK) {
      if (pf && (kk * index_t(sizeof(T))) % 64 == 0)
        for (int r = 0; r < 4; ++r) __builtin_prefetch(next + r * ld + kk);
      Tr::block(s + kk, ld, dst + kk * P + i, P);
    }
    for (; kk < k; ++kk)
      for (int r = 0; r < 4; ++r) dst[kk * P + i + r] = s[r * ld + kk];
  }
  for (; i < rows; ++i)
    for (index_t kk = 0; kk < k; ++kk) dst[kk * P + i] = src[i * ld + kk];
  if (rows < P)
    for (index_t kk = 0; kk < k; ++kk)
      for (index_t r = rows; r < P; ++r) dst[kk * P + r] = T(0);
}

// Panels of P columns from rows contiguous in the source: dst[p*P*k + kk*P + j] =
// src[kk*ld + p*P + j]. Row by row (one source stream), the last panel zero-padded.
template <int P, class T>
void pack_copy(index_t cols, index_t k, const T* src, index_t ld, T* dst) {
  const index_t full = cols / P, rem = cols % P;
  constexpr index_t kAhead = 4;  // rows ld apart: prefetch a few rows ahead, line by line
  for (index_t kk = 0; kk < k; ++kk) {
    const T* s = src + kk * ld;
    T* d = dst + kk * P;
    if (kk + kAhead < k)
      for (index_t j = 0; j < cols; j += 64 / index_t(sizeof(T))) __builtin_prefetch(s + kAhead * ld + j);
    for (index_t p = 0; p < full; ++p)
      for (int j = 0; j < P; ++j) d[p * P * k + j] = s[p * P + j];  // fixed length: vectorises
    if (rem) {
      T* dr = d + full * P * k;
      for (index_t j = 0; j < rem; ++j) dr[j] = s[full * P + j];
      for (index_t j = rem; j < P; ++j) dr[j] = T(0);
    }
  }
}

// One run of n (<= P) contiguous values, in vectors: full ones, then the first n % L lanes
// (masked: never past the run's end). A panel that spans several output rows (3x3 on 14x14
// and 7x7 maps: runs of 14 and 7) copied element by element took 6.7 % of 256->256 3x3 on 14x14
// (Zen 3, perf); in vectors, one process interleaved: that layer 1.06x (plans and calls, batch 1
// and 8), 512->512 3x3 on 7x7 1.00-1.04x, 64->64 5x5 on 7x7 1.11x.
template <class V>
inline void copy_run(const typename V::T* s, typename V::T* d, int n) {
  constexpr int L = V::L;
  int j = 0;
  for (; j + L <= n; j += L) V::store(d + j, V::loadu(s + j));
  if (j < n) V::store_n(d + j, V::load_n(s + j, n - j), n - j);
}

// Panels of P columns [c0, c0 + cols) of a gathered op(B) (gemm.h): dst[p*P*k + kk*P + j]
// = B(kk, c0 + p*P + j). A panel's columns fall in a few runs of contiguous values, found
// once per panel; a panel inside one segment (3x3 convs over >= 16 channels: segments of
// 3*C) is one fixed-length copy per row; runs across segments go through copy_run.
template <class V, int P, class T>
void pack_gathered(index_t k, index_t cols, const T* data, const index_t* k_offsets,
                   const index_t* segment_offsets, index_t segment, index_t c0, T* dst) {
  for (index_t p0 = 0; p0 < cols; p0 += P) {
    const int width = int(std::min<index_t>(P, cols - p0));
    T* dp = dst + p0 * k;
    index_t from[P];  // run q: columns [at[q], at[q+1]) of the panel, read from row + from[q]
    int at[P + 1], runs = 0;
    for (int j = 0; j < width; ++runs) {
      const index_t c = c0 + p0 + j, o = c % segment;
      from[runs] = segment_offsets[c / segment] + o - j;
      at[runs] = j;
      j += int(std::min<index_t>(width - j, segment - o));
    }
    at[runs] = width;
    if (runs == 1 && width == P) {
      const T* base = data + from[0];
      for (index_t kk = 0; kk < k; ++kk) {
        const T* s = base + k_offsets[kk];
        T* d = dp + kk * P;
        for (int j = 0; j < P; ++j) d[j] = s[j];  // fixed length: vectorises
      }
      continue;
    }
    for (index_t kk = 0; kk < k; ++kk) {
      const T* row = data + k_offsets[kk];
      T* d = dp + kk * P;
      for (int q = 0; q < runs; ++q) copy_run<V>(row + from[q] + at[q], d + at[q], at[q + 1] - at[q]);
      for (int j = width; j < P; ++j) d[j] = T(0);
    }
  }
}

template <class Tr, class T, int MR>
void pack_a(bool trans, index_t m, index_t k, const T* A, index_t lda, T* dst) {
  if (trans) {  // op(A)(i, kk) = A[kk*lda + i]
    pack_copy<MR>(m, k, A, lda, dst);
    return;
  }
  for (index_t r0 = 0; r0 < m; r0 += MR)  // op(A)(i, kk) = A[i*lda + kk]
    pack_transpose<Tr, MR>(std::min<index_t>(MR, m - r0), k, A + r0 * lda, lda, dst + r0 * k);
}

template <class Tr, class T, int NR>
void pack_b(bool trans, index_t k, index_t n, const T* B, index_t ldb, T* dst) {
  if (!trans) {  // op(B)(kk, j) = B[kk*ldb + j]
    pack_copy<NR>(n, k, B, ldb, dst);
    return;
  }
  for (index_t c0 = 0; c0 < n; c0 += NR)  // op(B)(kk, j) = B[j*ldb + kk]
    pack_transpose<Tr, NR>(std::min<index_t>(NR, n - c0), k, B + c0 * ldb, ldb, dst + c0 * k);
}

// ---- micro-kernel --------------------------------------------------------------------
//
// V: vector traits with
//   using T, reg; static constexpr int L (lanes);
//   zero(), load(p), bcast(p), fma(a, b, c) = a*b + c, mul(a, b), set1(x),
//   load_n(p, n) / store_n(p, r, n) (first n lanes, 0 < n <= L; load_n zero-fills),
//   store(p, r), loadu(p).
// MRF/NRF: the packed panel strides; MR x NV*L: the tile this instance computes
// (MR <= MRF, NV*L <= NRF; edges get smaller instances, chosen from a table).

// A's micro-panel is read once per call, and its panels lie back to back, so one stream
// runs through a whole A block. In a conv plan A holds the pre-packed weights, which in a
// model come from memory (the other layers' weights evicted them), and with few columns
// (N = 49 on 7x7 maps) each A value serves only N FMAs: the hardware prefetcher fell
// behind. With PFA the kernel prefetches this many depths ahead (2 KiB of float A on
// AVX-512; every k, so twice per line). Measured on Zen 5, 2 threads, cold weights:
// 512->512 3x3 on 7x7 1.28 -> 0.95 ms, 2048->512 1x1 on 7x7 0.57 -> 0.42 ms, ResNet-50
// forward at batch 1 32.0 -> 26.9 ms (AVX2 kernel: 43.7 -> 41.3 ms); 32 depths gained
// less, 128 and 256 the same. On an A packed just before (hot in L2) it only costs load
// slots: Winograd's data gradient with its kernel transformed per call ran 2-4 % slower,
// hence only operands marked streamed take it.
constexpr index_t kPrefetchDepth = 64;

// Edge instances with few accumulators (on AVX2's 4-row tile, the last 1-4 columns of an
// image: 4 x 1 vectors) are bound by the FMA latency, not its throughput: 4 chains of 4
// cycles fill half of two pipes. They run KU interleaved k streams instead, summed at the
// end, so that every instance keeps at least kMinChains FMAs in flight.
constexpr int kMinChains = 8;

template <class V, int MRF, int NRF, int MR, int NV, bool PFA>
void micro_kernel(index_t k, const typename V::T* __restrict ap, const typename V::T* __restrict bp,
                  typename V::T* __restrict c, index_t ldc, int /*m*/, int n, typename V::T alpha,
                  typename V::T beta, const typename V::T* __restrict bias, bool prefetch_c) {
  using R = typename V::reg;
  using T = typename V::T;
  constexpr int L = V::L;
  constexpr int KU = std::max(1, std::min(4, kMinChains / (MR * NV)));
  R acc[KU][MR][NV];
#pragma GCC unroll 4
  for (int u = 0; u < KU; ++u)
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[u][i][v] = V::zero();
  // prefetch_c: C's tile, fetched now so its lines arrive during the k loop. Without it the
  // epilogue's stores to lines out of cache stalled once the store buffer filled (on shallow
  // products, a quarter of the kernel's samples). One prefetch per row and vector (a tile is
  // all its own rows: edge tiles are smaller instances). A read prefetch: prefetchw measured
  // 0.9-1.0x of it. Sapphire Rapids-class Xeon, 6 alternating processes each: 64->256 1x1 on
  // 56x56 at batch 1 (a 256 x 3136 x 64 product) 1.13x (1.06-1.19x per pair), at batch 8
  // 1.03x; 256 x 3136 x 64 alone 1.05x, 1024^3 1.03x, other shapes within +-3 %. Winograd's
  // products ran 0.94-0.98x with it, hence the flag (gemm.cpp's kPrefetchCMinBytes).
  if (L > 1 && prefetch_c) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) __builtin_prefetch(c + i * ldc + v * L);
  }

  // The inner product: per k, NV vector loads of B, MR broadcasts of A, MR*NV FMAs
  // into independent accumulators (enough of them to hide the FMA latency).
  auto step = [&](R(&a_acc)[MR][NV], const T* a, const T* b) __attribute__((always_inline)) {
    if constexpr (PFA && L > 1) __builtin_prefetch(a + kPrefetchDepth * MRF);
    R bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * L);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const R ai = V::bcast(a + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) a_acc[i][v] = V::fma(ai, bv[v], a_acc[i][v]);
    }
  };
  index_t kk = 0;
  if constexpr (KU > 1) {
    for (; kk + KU <= k; kk += KU) {
#pragma GCC unroll 4
      for (int u = 0; u < KU; ++u) step(acc[u], ap + u * MRF, bp + u * NRF);
      ap += KU * MRF;
      bp += KU * NRF;
    }
  }
#pragma GCC unroll 4
  for (; kk < k; ++kk) {
    step(acc[0], ap, bp);
    ap += MRF;
    bp += NRF;
  }
#pragma GCC unroll 4
  for (int u = 1; u < KU; ++u)
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[0][i][v] = V::add(acc[0][i][v], acc[u][i][v]);

  // Epilogue, fused: C = alpha*acc + beta*C + bias, C read only when beta != 0.
  const R va = V::set1(alpha), vb = V::set1(beta);
  const int last = n - (NV - 1) * L;  // lanes of the last vector, 1..L
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    const R bi = V::set1(bias ? bias[i] : T(0));
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      R r = V::mul(acc[0][i][v], va);
      const bool full = v < NV - 1 || last == L;
      if (beta != T(0)) r = V::fma(vb, full ? V::loadu(ci + v * L) : V::load_n(ci + v * L, last), r);
      if (bias) r = V::add(r, bi);
      if (full)
        V::store(ci + v * L, r);
      else
        V::store_n(ci + v * L, r, last);
    }
  }
}

// Narrow-N edge: the last r (< L) columns of a tile, with vectors along M instead.
// The masked vector kernel would spend MR FMAs per k on them (one per row, mostly
// empty lanes); this one spends ceil(MR/L) per column, e.g. N = 49 = 3*16 + 1 costs
// 37 instead of 48 FMAs per k on a 12-row tile. The A micro-panel's k-th column is
// contiguous (packing is k-major), so it loads as a vector; B values are broadcast.
// KU interleaved k streams give enough independent accumulators to hide FMA latency.
template <class V, int MRF, int NRF, int R>
void column_kernel(index_t k, const typename V::T* __restrict ap, const typename V::T* __restrict bp,
                   typename V::T* __restrict c, index_t ldc, int m, typename V::T alpha, typename V::T beta,
                   const typename V::T* __restrict bias) {
  using Rg = typename V::reg;
  using T = typename V::T;
  constexpr int L = V::L, MV = (MRF + L - 1) / L, LAST = MRF - (MV - 1) * L;
  constexpr int KU = std::max(1, std::min(4, 8 / (R * MV)));
  Rg acc[KU][R][MV];
#pragma GCC unroll 4
  for (int u = 0; u < KU; ++u)
#pragma GCC unroll 8
    for (int j = 0; j < R; ++j)
#pragma GCC unroll 4
      for (int v = 0; v < MV; ++v) acc[u][j][v] = V::zero();
  auto step = [&](int u, const T* a, const T* b) __attribute__((always_inline)) {
    Rg av[MV];
#pragma GCC unroll 4
    for (int v = 0; v < MV; ++v)
      av[v] = (v < MV - 1 || LAST == L) ? V::loadu(a + v * L) : V::load_n(a + v * L, LAST);
#pragma GCC unroll 8
    for (int j = 0; j < R; ++j) {
      const Rg bj = V::bcast(b + j);
#pragma GCC unroll 4
      for (int v = 0; v < MV; ++v) acc[u][j][v] = V::fma(av[v], bj, acc[u][j][v]);
    }
  };
  index_t kk = 0;
  for (; kk + KU <= k; kk += KU)
#pragma GCC unroll 4
    for (int u = 0; u < KU; ++u) step(u, ap + (kk + u) * MRF, bp + (kk + u) * NRF);
  for (; kk < k; ++kk) step(0, ap + kk * MRF, bp + kk * NRF);

  // Reduce the k streams, then a transposed (scalar) store: only m x r elements.
  alignas(64) T tmp[R][MV * L];
#pragma GCC unroll 8
  for (int j = 0; j < R; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < MV; ++v) {
      Rg s = acc[0][j][v];
#pragma GCC unroll 4
      for (int u = 1; u < KU; ++u) s = V::add(s, acc[u][j][v]);
      V::store(&tmp[j][v * L], s);
    }
  for (int i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    const T bi = bias ? bias[i] : T(0);
    for (int j = 0; j < R; ++j) {
      T x = alpha * tmp[j][i];
      if (beta != T(0)) x += beta * ci[j];
      ci[j] = x + bi;
    }
  }
}

// Table of micro-kernel instances: [m-1][nv-1] for m in 1..MRF, nv in 1..NRF/L.
template <class V, int MRF, int NRF>
struct MicroTable {
  using T = typename V::T;
  using Fn = void (*)(index_t, const T*, const T*, T*, index_t, int, int, T, T, const T*, bool);
  static constexpr int NVF = NRF / V::L;
  Fn fn[MRF][NVF];
  Fn fn_streamed_a[MRF][NVF];  // prefetching A

  template <int M, int... NV>
  constexpr void fill_row(std::integer_sequence<int, NV...>) {
    ((fn[M - 1][NV] = &micro_kernel<V, MRF, NRF, M, NV + 1, false>), ...);
    ((fn_streamed_a[M - 1][NV] = &micro_kernel<V, MRF, NRF, M, NV + 1, true>), ...);
  }
  template <int... M>
  constexpr void fill(std::integer_sequence<int, M...>) {
    (fill_row<M + 1>(std::make_integer_sequence<int, NVF>{}), ...);
  }
  // Column kernels for r = 1..kColMax leftover columns; used when they take fewer
  // FMAs than a masked vector (ceil(MRF/L) * r < MRF).
  using ColFn = void (*)(index_t, const T*, const T*, T*, index_t, int, T, T, const T*);
  static constexpr int kMV = (MRF + V::L - 1) / V::L;
  static constexpr int kColMax = V::L == 1 ? 0 : std::min({8, V::L - 1, (MRF - 1) / kMV});
  ColFn col[kColMax > 0 ? kColMax : 1];
  template <int... R>
  constexpr void fill_col(std::integer_sequence<int, R...>) {
    ((col[R] = &column_kernel<V, MRF, NRF, R + 1>), ...);
  }

  constexpr MicroTable() : fn{}, fn_streamed_a{}, col{} {
    fill(std::make_integer_sequence<int, MRF>{});
    fill_col(std::make_integer_sequence<int, kColMax>{});
  }

  // The entry stored in GemmKernel::micro (micro_streamed_a with PFA): picks the
  // instance(s) for an m x n tile.
  template <bool PFA>
  static void dispatch(index_t k, const T* ap, const T* bp, T* c, index_t ldc, int m, int n, T alpha, T beta,
                       const T* bias, bool prefetch_c) {
    static constexpr MicroTable table{};
    const auto& fn = PFA ? table.fn_streamed_a : table.fn;
    const int nvf = n / V::L, r = n % V::L;
    if (r != 0 && r <= kColMax) {
      if (nvf > 0) fn[m - 1][nvf - 1](k, ap, bp, c, ldc, m, nvf * V::L, alpha, beta, bias, prefetch_c);
      table.col[r - 1](k, ap, bp + nvf * V::L, c + nvf * V::L, ldc, m, alpha, beta, bias);
      return;
    }
    const int nv = (n + V::L - 1) / V::L;
    fn[m - 1][nv - 1](k, ap, bp, c, ldc, m, n, alpha, beta, bias, prefetch_c);
  }
};

// One ISA's table entry for one element type: the register block Mr x Nr, the cache blocks,
// and the packing and micro-kernel functions instantiated for them with the ISA's transpose
// and vector types. Prefetch: whether micro_streamed_a prefetches A (the scalar kernel's one
// lane does not: its streamed entry is its plain one).
template <class Transpose, class Vec, class T, int Mr, int Nr, bool Prefetch = true>
GemmKernel<T> make_kernel(const char* name, index_t mc, index_t kc, index_t nc) {
  return {name,
          Mr,
          Nr,
          mc,
          kc,
          nc,
          &pack_a<Transpose, T, Mr>,
          &pack_b<Transpose, T, Nr>,
          &pack_gathered<Vec, Nr, T>,
          &MicroTable<Vec, Mr, Nr>::template dispatch<false>,
          &MicroTable<Vec, Mr, Nr>::template dispatch<Prefetch>};
}

}  // namespace
}  // namespace fastconv::cpu::gemm_detail
