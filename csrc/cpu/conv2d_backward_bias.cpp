// conv2d_backward_bias.cpp: the bias gradient of a convolution, shared by every algorithm's
// backward (it depends on grad_y only):
//   grad_bias (K) [k] = sum over n, p, q of grad_y (N, K, P, Q) [n, k, p, q]
// Idea: one output channel per thread, each plane summed in a vectorised float64 reduction,
// so float32 gradients of large batches and maps lose no precision to the order of the
// sums, and the result does not depend on the thread count.
// Limits: float and double; grad_y contiguous (NCHW).
#include "cpu/im2col_common.h"
#include "cpu/kernels.h"

namespace fastconv::cpu {

template <class T>
void conv2d_backward_bias(const ConvParams& p, const T* grad_y, T* grad_bias) {
  const index_t PQ = p.P * p.Q;
#pragma omp parallel for schedule(static) if (p.N * p.K * PQ > im2col_detail::kParallelMinValues)
  for (index_t k = 0; k < p.K; ++k) {
    double sum = 0.0;
    for (index_t n = 0; n < p.N; ++n) {
      const T* g = grad_y + (n * p.K + k) * PQ;
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (index_t j = 0; j < PQ; ++j) s += double(g[j]);
      sum += s;
    }
    grad_bias[k] = T(sum);
  }
}

template void conv2d_backward_bias<float>(const ConvParams&, const float*, float*);
template void conv2d_backward_bias<double>(const ConvParams&, const double*, double*);

}  // namespace fastconv::cpu
