// gemm.cpp: TEMPORARY plain GEMM (correct, unblocked) until the packed one lands.
#include "cpu/gemm.h"

#include <omp.h>

namespace fastconv::cpu {

template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc, const T* bias_m) {
#pragma omp parallel for if (!omp_in_parallel())
  for (index_t m = 0; m < M; ++m) {
    T* c = C + m * ldc;
    for (index_t n = 0; n < N; ++n) c[n] = beta == T(0) ? T(0) : beta * c[n];
    for (index_t k = 0; k < K; ++k) {
      T a = alpha * (trans_a ? A[k * lda + m] : A[m * lda + k]);
      for (index_t n = 0; n < N; ++n) c[n] += a * (trans_b ? B[n * ldb + k] : B[k * ldb + n]);
    }
    if (bias_m)
      for (index_t n = 0; n < N; ++n) c[n] += bias_m[m];
  }
}

template void gemm<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                          const float*, index_t, float, float*, index_t, const float*);
template void gemm<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t,
                           const double*, index_t, double, double*, index_t, const double*);

}  // namespace fastconv::cpu
