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
// Limits: row-major only; the micro-kernel's C tile is stored with vector lanes
// along N, so a narrow N (e.g. 49) wastes the lanes of its last vector.
#pragma once
#include <algorithm>
#include <cstring>
#include <utility>

#include "common.h"

namespace fastconv::cpu::gemm_detail {

// One ISA's contribution for one dtype: blocking parameters and three functions.
template <class T>
struct GemmKernel {
  const char* name;
  int mr, nr;          // register block: micro-tile rows (broadcast) and columns (vector lanes)
  index_t mc, kc, nc;  // cache blocks: A block mc x kc (L2), B panel kc x nc (L3)
  // Packs op(A)[0:m, 0:k] (A already offset) into ceil(m/mr) micro-panels of mr x k,
  // k-major (dst[p*mr*k + kk*mr + i]), zero-padded to mr rows.
  void (*pack_a)(bool trans, index_t m, index_t k, const T* A, index_t lda, T* dst);
  // Packs op(B)[0:k, 0:n] (B already offset) into ceil(n/nr) micro-panels of k x nr,
  // (dst[p*nr*k + kk*nr + j]), zero-padded to nr columns.
  void (*pack_b)(bool trans, index_t k, index_t n, const T* B, index_t ldb, T* dst);
  // c[0:m, 0:n] (row stride ldc; m <= mr, n <= nr) = alpha * ap.bp + beta * c + bias[i]
  // ap: one A micro-panel, bp: one B micro-panel, both k long. beta == 0: c is not read.
  // bias: m values, or nullptr.
  void (*micro)(index_t k, const T* ap, const T* bp, T* c, index_t ldc, int m, int n, T alpha,
                T beta, const T* bias);
};

// The per-ISA entry points (defined in gemm.cpp / gemm_avx2.cpp / gemm_avx512.cpp).
const GemmKernel<float>& kernel_scalar_f32();
const GemmKernel<double>& kernel_scalar_f64();
#if defined(FC_X86)
const GemmKernel<float>& kernel_avx2_f32();
const GemmKernel<double>& kernel_avx2_f64();
const GemmKernel<float>& kernel_avx512_f32();
const GemmKernel<double>& kernel_avx512_f64();
#endif

namespace {  // private to each including TU (see the header comment)

// ---- packing -----------------------------------------------------------------------

template <class T, int MR>
void pack_a(bool trans, index_t m, index_t k, const T* A, index_t lda, T* dst) {
  for (index_t r0 = 0; r0 < m; r0 += MR, dst += MR * k) {
    const int mr = int(std::min<index_t>(MR, m - r0));
    if (trans) {  // op(A)(i, kk) = A[kk*lda + i]: each k step is a contiguous run of mr
      const T* src = A + r0;
      for (index_t kk = 0; kk < k; ++kk) {
        T* d = dst + kk * MR;
        if (mr == MR) {
          for (int i = 0; i < MR; ++i) d[i] = src[kk * lda + i];
        } else {
          for (int i = 0; i < mr; ++i) d[i] = src[kk * lda + i];
          for (int i = mr; i < MR; ++i) d[i] = T(0);
        }
      }
    } else {  // op(A)(i, kk) = A[i*lda + kk]: a transpose; walk k in short strips so the
              // mr source rows stream in parallel and the writes stay within a few lines
      const T* src = A + r0 * lda;
      constexpr index_t kStrip = 8;
      index_t kk = 0;
      for (; kk + kStrip <= k; kk += kStrip) {
        T* d = dst + kk * MR;
        for (int i = 0; i < mr; ++i) {
          const T* s = src + i * lda + kk;
          for (index_t q = 0; q < kStrip; ++q) d[q * MR + i] = s[q];
        }
      }
      for (; kk < k; ++kk)
        for (int i = 0; i < mr; ++i) dst[kk * MR + i] = src[i * lda + kk];
      if (mr < MR)
        for (index_t q = 0; q < k; ++q)
          for (int i = mr; i < MR; ++i) dst[q * MR + i] = T(0);
    }
  }
}

template <class T, int NR>
void pack_b(bool trans, index_t k, index_t n, const T* B, index_t ldb, T* dst) {
  for (index_t c0 = 0; c0 < n; c0 += NR, dst += NR * k) {
    const int nr = int(std::min<index_t>(NR, n - c0));
    if (!trans) {  // op(B)(kk, j) = B[kk*ldb + j]: contiguous rows of nr
      const T* src = B + c0;
      for (index_t kk = 0; kk < k; ++kk) {
        T* d = dst + kk * NR;
        const T* s = src + kk * ldb;
        if (nr == NR) {
          for (int j = 0; j < NR; ++j) d[j] = s[j];  // fixed length: vectorises
        } else {
          for (int j = 0; j < nr; ++j) d[j] = s[j];
          for (int j = nr; j < NR; ++j) d[j] = T(0);
        }
      }
    } else {  // op(B)(kk, j) = B[j*ldb + kk]: a transpose, in k strips as in pack_a
      const T* src = B + c0 * ldb;
      constexpr index_t kStrip = 8;
      index_t kk = 0;
      for (; kk + kStrip <= k; kk += kStrip) {
        T* d = dst + kk * NR;
        for (int j = 0; j < nr; ++j) {
          const T* s = src + j * ldb + kk;
          for (index_t q = 0; q < kStrip; ++q) d[q * NR + j] = s[q];
        }
      }
      for (; kk < k; ++kk)
        for (int j = 0; j < nr; ++j) dst[kk * NR + j] = src[j * ldb + kk];
      if (nr < NR)
        for (index_t q = 0; q < k; ++q)
          for (int j = nr; j < NR; ++j) dst[q * NR + j] = T(0);
    }
  }
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

template <class V, int MRF, int NRF, int MR, int NV>
void micro_kernel(index_t k, const typename V::T* __restrict ap, const typename V::T* __restrict bp,
                  typename V::T* __restrict c, index_t ldc, int /*m*/, int n, typename V::T alpha,
                  typename V::T beta, const typename V::T* __restrict bias) {
  using R = typename V::reg;
  using T = typename V::T;
  constexpr int L = V::L;
  R acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

  // The inner product: per k, NV vector loads of B, MR broadcasts of A, MR*NV FMAs
  // into independent accumulators (enough of them to hide the FMA latency).
#pragma GCC unroll 4
  for (index_t kk = 0; kk < k; ++kk) {
    R b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = V::load(bp + v * L);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const R a = V::bcast(ap + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(a, b[v], acc[i][v]);
    }
    ap += MRF;
    bp += NRF;
  }

  // Epilogue, fused: C = alpha*acc + beta*C + bias, C read only when beta != 0.
  const R va = V::set1(alpha), vb = V::set1(beta);
  const int last = n - (NV - 1) * L;  // lanes of the last vector, 1..L
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    const R bi = V::set1(bias ? bias[i] : T(0));
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      R r = V::mul(acc[i][v], va);
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

// Table of micro-kernel instances: [m-1][nv-1] for m in 1..MRF, nv in 1..NRF/L.
template <class V, int MRF, int NRF>
struct MicroTable {
  using T = typename V::T;
  using Fn = void (*)(index_t, const T*, const T*, T*, index_t, int, int, T, T, const T*);
  static constexpr int NVF = NRF / V::L;
  Fn fn[MRF][NVF];

  template <int M, int... NV>
  constexpr void fill_row(std::integer_sequence<int, NV...>) {
    ((fn[M - 1][NV] = &micro_kernel<V, MRF, NRF, M, NV + 1>), ...);
  }
  template <int... M>
  constexpr void fill(std::integer_sequence<int, M...>) {
    (fill_row<M + 1>(std::make_integer_sequence<int, NVF>{}), ...);
  }
  constexpr MicroTable() : fn{} { fill(std::make_integer_sequence<int, MRF>{}); }

  // The entry stored in GemmKernel::micro: picks the instance for an m x n tile.
  static void dispatch(index_t k, const T* ap, const T* bp, T* c, index_t ldc, int m, int n,
                       T alpha, T beta, const T* bias) {
    static constexpr MicroTable table{};
    const int nv = (n + V::L - 1) / V::L;
    table.fn[m - 1][nv - 1](k, ap, bp, c, ldc, m, n, alpha, beta, bias);
  }
};

}  // namespace
}  // namespace fastconv::cpu::gemm_detail
