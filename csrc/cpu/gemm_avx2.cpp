// gemm_avx2.cpp: the AVX2+FMA part of the packed GEMM (see gemm.cpp for the driver):
// vector traits for float and double, the instantiated packing routines and
// micro-kernels, and their blocking parameters. Compiled with -mavx2 -mfma.
// Idea: BLIS micro-kernels (Van Zee & van de Geijn 2015; Goto & van de Geijn 2008):
// an MR x NR tile of C held in ymm registers, B micro-panel rows loaded as vectors,
// A values broadcast, one FMA per (row, vector) per k.
// Limits: 16 ymm registers bound the tile to 12 accumulators; on Zen 4 two ymm FMAs
// issue per cycle, so 12 chains of 4-cycle latency just suffice.
#include <immintrin.h>

#include "cpu/gemm_kernels.h"
#include "cpu/partial_avx2.h"

namespace fastconv::cpu::gemm_detail {
namespace {

// ---- helpers: vector traits ------------------------------------------------------------

struct VecF {
  using T = float;
  using reg = __m256;
  static constexpr int L = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const T* p) { return _mm256_loadu_ps(p); }
  static reg loadu(const T* p) { return _mm256_loadu_ps(p); }
  static reg bcast(const T* p) { return _mm256_broadcast_ss(p); }
  static reg set1(T x) { return _mm256_set1_ps(x); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg load_n(const T* p, int n) { return load_first_n(p, n); }  // partial_avx2.h
  static void store(T* p, reg r) { _mm256_storeu_ps(p, r); }
  static void store_n(T* p, reg r, int n) { store_first_n(p, r, n); }
};

struct VecD {
  using T = double;
  using reg = __m256d;
  static constexpr int L = 4;
  static reg zero() { return _mm256_setzero_pd(); }
  static reg load(const T* p) { return _mm256_loadu_pd(p); }
  static reg loadu(const T* p) { return _mm256_loadu_pd(p); }
  static reg bcast(const T* p) { return _mm256_broadcast_sd(p); }
  static reg set1(T x) { return _mm256_set1_pd(x); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static reg mul(reg a, reg b) { return _mm256_mul_pd(a, b); }
  static reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static reg load_n(const T* p, int n) { return load_first_n(p, n); }
  static void store(T* p, reg r) { _mm256_storeu_pd(p, r); }
  static void store_n(T* p, reg r, int n) { store_first_n(p, r, n); }
};

// ---- blocking ---------------------------------------------------------------------------
// 4 rows x 3 vectors (float 4 x 24, double 4 x 12): 12 accumulators + 3 B vectors +
// 1 broadcast = all 16 ymm registers. 12 chains of 4-cycle latency feed two ymm FMA
// pipes at 1.5 chains per slot. Measured on Zen 4 against 6 x 2 vectors: equal on
// large squares, 15-20 % faster on M = 64 shapes and on double. kc = 256 keeps the
// kc x nr B micro-panel (24 KiB float) in L1, the mc x kc A block in L2.
constexpr int kMrF = 4, kNrF = 24;
constexpr int kMrD = 4, kNrD = 12;

}  // namespace
}  // namespace fastconv::cpu::gemm_detail

// The entry points, in this ISA's namespace (gemm_kernels.h).
namespace fastconv::cpu::avx2 {
using namespace gemm_detail;

const GemmKernel<float>& gemm_kernel_f32() {
  static const GemmKernel<float> k =
      make_kernel<TransposeAvx<float>, VecF, float, kMrF, kNrF>("avx2", /*mc*/ 192, /*kc*/ 256, /*nc*/ 4800);
  return k;
}

const GemmKernel<double>& gemm_kernel_f64() {
  static const GemmKernel<double> k = make_kernel<TransposeAvx<double>, VecD, double, kMrD, kNrD>(
      "avx2", /*mc*/ 192, /*kc*/ 256, /*nc*/ 2400);
  return k;
}

}  // namespace fastconv::cpu::avx2
