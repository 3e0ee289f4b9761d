// partial_avx2.h: loads and stores of the first n lanes of a ymm vector without
// vmaskmovps/pd. On Zen 1/2 those are several times slower than plain moves (the masked
// store is microcoded): a GEMM whose 49th column went through a masked load ran 35 %
// slower than the 48-column one. Here a partial vector is moved as 16-, 8- and 4-byte
// pieces; loads zero the lanes from n on. 0 < n <= lanes; n is usually a constant or
// the same for a whole loop, so the branches predict well.
// For the AVX2 copies of the kernels. Private to each including file (anonymous
// namespace), so the linker never merges a copy compiled with AVX-512 flags into the
// AVX2 path.
#pragma once
#if defined(__AVX2__)
#include <immintrin.h>

namespace fastconv::cpu {
namespace {

// ---- 128-bit pieces ------------------------------------------------------------------

// Two floats move as one unaligned 8-byte integer (movq): p is only 4-byte aligned, so
// reading them through a double* (movsd) was undefined behaviour (UBSan: misaligned).

// The first n (1..4) floats of p, zeros above.
inline __m128 load_first_n_128(const float* p, int n) {
  switch (n) {
    case 1: return _mm_load_ss(p);
    case 2: return _mm_castsi128_ps(_mm_loadu_si64(p));
    case 3: return _mm_movelh_ps(_mm_castsi128_ps(_mm_loadu_si64(p)), _mm_load_ss(p + 2));
    default: return _mm_loadu_ps(p);
  }
}

inline void store_first_n_128(float* p, __m128 v, int n) {
  switch (n) {
    case 1: _mm_store_ss(p, v); return;
    case 2: _mm_storeu_si64(p, _mm_castps_si128(v)); return;
    case 3:
      _mm_storeu_si64(p, _mm_castps_si128(v));
      _mm_store_ss(p + 2, _mm_movehl_ps(v, v));
      return;
    default: _mm_storeu_ps(p, v);
  }
}

// ---- 256-bit vectors -------------------------------------------------------------------

// The first n (1..8) floats of p, zeros in lanes n..7.
inline __m256 load_first_n(const float* p, int n) {
  if (n <= 4) return _mm256_insertf128_ps(_mm256_setzero_ps(), load_first_n_128(p, n), 0);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)), load_first_n_128(p + 4, n - 4), 1);
}

inline void store_first_n(float* p, __m256 v, int n) {
  if (n <= 4) {
    store_first_n_128(p, _mm256_castps256_ps128(v), n);
    return;
  }
  _mm_storeu_ps(p, _mm256_castps256_ps128(v));
  store_first_n_128(p + 4, _mm256_extractf128_ps(v, 1), n - 4);
}

// The first n (1..4) doubles of p, zeros in lanes n..3.
inline __m256d load_first_n(const double* p, int n) {
  const __m128d lo = n == 1 ? _mm_load_sd(p) : _mm_loadu_pd(p);
  if (n <= 2) return _mm256_insertf128_pd(_mm256_setzero_pd(), lo, 0);
  const __m128d hi = n == 3 ? _mm_load_sd(p + 2) : _mm_loadu_pd(p + 2);
  return _mm256_insertf128_pd(_mm256_castpd128_pd256(lo), hi, 1);
}

inline void store_first_n(double* p, __m256d v, int n) {
  const __m128d lo = _mm256_castpd256_pd128(v);
  if (n == 1) {
    _mm_store_sd(p, lo);
    return;
  }
  _mm_storeu_pd(p, lo);
  if (n == 2) return;
  const __m128d hi = _mm256_extractf128_pd(v, 1);
  if (n == 3)
    _mm_store_sd(p + 2, hi);
  else
    _mm_storeu_pd(p + 2, hi);
}

}  // namespace
}  // namespace fastconv::cpu
#endif
