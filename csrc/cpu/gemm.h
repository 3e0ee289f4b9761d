// gemm.h: the project's own packed GEMM (BLIS-style), used by im2col and, later,
// by the batched products of Winograd and FFT.
#pragma once
#include "common.h"

namespace fastconv::cpu {

// C (M x N) = alpha * op(A) * op(B) + beta * C + bias_m[m]   (row-major)
//   op(A) is M x K: A[m*lda + k], or A[k*lda + m] when trans_a
//   op(B) is K x N: B[k*ldb + n], or B[n*ldb + k] when trans_b
//   bias_m: M values added to each row of the result, or nullptr.
// beta == 0 overwrites C without reading it (C may hold NaN on entry).
// Threads: the OpenMP team of the caller; called inside a parallel region it runs
// on the calling thread alone (so batched callers can parallelise outside).
template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc,
          const T* bias_m = nullptr);

}  // namespace fastconv::cpu
