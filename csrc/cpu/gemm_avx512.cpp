// gemm_avx512.cpp: the AVX-512 part of the packed GEMM (see gemm.cpp for the driver):
// vector traits for float and double, the instantiated packing routines and
// micro-kernels, and their blocking parameters. Compiled with -mavx512f/vl/bw/dq -mfma.
// Idea: BLIS micro-kernels (Van Zee & van de Geijn 2015; Goto & van de Geijn 2008):
// an MR x NR tile of C held in zmm registers, B micro-panel rows loaded as vectors,
// A values broadcast, one FMA per (row, vector) per k.
// Limits: tuned on AMD Zen 4 (AVX-512 executed as 2 x 256 bits: one zmm FMA per cycle
// per pipe pair, 4 cycles latency, 32 zmm registers, L1d 32 KiB, L2 1 MiB).
#include <immintrin.h>

#include "cpu/gemm_kernels.h"

namespace fastconv::cpu::gemm_detail {
namespace {

// ---- helpers: vector traits ------------------------------------------------------------

struct VecF {
  using T = float;
  using reg = __m512;
  static constexpr int L = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const T* p) { return _mm512_loadu_ps(p); }
  static reg loadu(const T* p) { return _mm512_loadu_ps(p); }
  static reg bcast(const T* p) { return _mm512_set1_ps(*p); }
  static reg set1(T x) { return _mm512_set1_ps(x); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static __mmask16 mask(int n) { return __mmask16((1u << n) - 1u); }
  static reg load_n(const T* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(T* p, reg r) { _mm512_storeu_ps(p, r); }
  static void store_n(T* p, reg r, int n) { _mm512_mask_storeu_ps(p, mask(n), r); }
};

struct VecD {
  using T = double;
  using reg = __m512d;
  static constexpr int L = 8;
  static reg zero() { return _mm512_setzero_pd(); }
  static reg load(const T* p) { return _mm512_loadu_pd(p); }
  static reg loadu(const T* p) { return _mm512_loadu_pd(p); }
  static reg bcast(const T* p) { return _mm512_set1_pd(*p); }
  static reg set1(T x) { return _mm512_set1_pd(x); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static reg mul(reg a, reg b) { return _mm512_mul_pd(a, b); }
  static reg add(reg a, reg b) { return _mm512_add_pd(a, b); }
  static __mmask8 mask(int n) { return __mmask8((1u << n) - 1u); }
  static reg load_n(const T* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store(T* p, reg r) { _mm512_storeu_pd(p, r); }
  static void store_n(T* p, reg r, int n) { _mm512_mask_storeu_pd(p, mask(n), r); }
};

// ---- blocking ---------------------------------------------------------------------------
// 8 rows x 3 vectors (float 8 x 48, double 8 x 24): 24 zmm accumulators + 3 B vectors +
// 1 broadcast (of 32 registers); 24 independent FMA chains cover the 4-cycle latency
// at one zmm FMA per cycle. Measured on Zen 4 against 12 x 2 and 6 x 4 vectors: equal
// on large squares, better on the conv shapes: M = 64 is 8 whole tiles (12 x 32 pads it
// to 72), and N = 49 = 48 + 1 leaves a single column to the column kernel (32 + 17 does
// a masked 16-wide vector). kc = 256: the A block mc x kc (192 KiB float) sits in L2;
// the kc x nr B micro-panel (48 KiB) streams from L2 with prefetching; kc in 128..384
// and mc in 96..480 measured within noise of each other.
constexpr int kMrF = 8, kNrF = 48;
constexpr int kMrD = 8, kNrD = 24;

}  // namespace
}  // namespace fastconv::cpu::gemm_detail

// The entry points, in this ISA's namespace (gemm_kernels.h).
namespace fastconv::cpu::avx512 {
using namespace gemm_detail;

const GemmKernel<float>& gemm_kernel_f32() {
  static const GemmKernel<float> k = make_kernel<TransposeAvx<float>, VecF, float, kMrF, kNrF>(
      "avx512", /*mc*/ 192, /*kc*/ 256, /*nc*/ 4800);
  return k;
}

const GemmKernel<double>& gemm_kernel_f64() {
  static const GemmKernel<double> k = make_kernel<TransposeAvx<double>, VecD, double, kMrD, kNrD>(
      "avx512", /*mc*/ 192, /*kc*/ 256, /*nc*/ 2400);
  return k;
}

}  // namespace fastconv::cpu::avx512
