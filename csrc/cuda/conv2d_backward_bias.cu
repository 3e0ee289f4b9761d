// conv2d_backward_bias.cu: the bias gradient of a convolution on the GPU, shared by every CUDA
// algorithm's weight gradient (it depends on grad_y only):
//   grad_bias (K) [k] = sum over n, p, q of grad_y (N, K, P, Q) [n, k, p, q]
// Idea: one block per output channel k. Its threads walk the N*P*Q values of channel k
// blockDim.x apart (consecutive threads read consecutive pixels of a plane; small planes are
// crossed image to image, so a 7x7 map keeps every thread busy), each summing in float64, and a
// block reduction (warp shuffles, then one warp over the warps' sums) adds the threads' sums in
// a fixed order: the result is the same on every run (no atomics), and float32 gradients of
// large batches lose no precision to the order of the sums, as on the CPU
// (cpu/conv2d_backward_bias.cpp). N == 0 writes zeros.
// Limits: float and double; grad_y contiguous (NCHW); one block per channel, so a layer with
// fewer channels than the GPU has SMs leaves SMs idle (a 64-channel layer of a large batch is
// bandwidth-bound on 64 SMs); float64 adds run at the card's FP64 rate (fine for a pass that
// reads memory once).
#include "cuda/kernels.h"
#include "cuda/portable.cuh"

namespace fastconv::cuda {
namespace conv2d_backward_bias_detail {

constexpr int kThreads = 512;  // most threads per block
constexpr int kWarp = 32;
constexpr int kUnroll = 4;     // values loaded per thread before they are added

// Sum over the block of v (blockDim.x a multiple of 32), in a fixed order; valid in thread 0.
__device__ inline double block_sum(double v, double* scratch) {
  const int lane = int(threadIdx.x) % kWarp, warp = int(threadIdx.x) / kWarp;
  const int warps = int(blockDim.x) / kWarp;
  for (int d = kWarp / 2; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? scratch[lane] : 0.0;
    for (int d = kWarp / 2; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  }
  return v;
}

// gy (N, K, P, Q) as (N, K, PQ) -> gb (K). Grid: one block per k (blockIdx.x).
template <class T>
__global__ void bias_grad(const T* __restrict__ gy, T* __restrict__ gb, index_t N, index_t K, index_t PQ) {
  __shared__ double scratch[kWarp];
  const index_t k = blockIdx.x;
  const int step = int(blockDim.x);
  // This thread's first value (n, j) and the step (step_n, step_j) with a carry: 32-bit
  // divisions only (PQ below the step when they run).
  index_t n = 0, j = threadIdx.x, step_n = 0, step_j = step;
  if (PQ < step && PQ > 0) {
    const int pq = int(PQ);
    n = int(threadIdx.x) / pq;
    j = int(threadIdx.x) % pq;
    step_n = step / pq;
    step_j = step % pq;
  }
  double acc = 0.0;
  if (PQ > 0)
    while (n < N) {  // kUnroll loads in flight per thread, then their adds in order
      T v[kUnroll];
      for (int u = 0; u < kUnroll; ++u) {
        v[u] = n < N ? __ldg(gy + (n * K + k) * PQ + j) : T(0);
        n += step_n;
        j += step_j;
        if (j >= PQ) {
          j -= PQ;
          ++n;
        }
      }
      for (int u = 0; u < kUnroll; ++u) acc += double(v[u]);
    }
  const double sum = block_sum(acc, scratch);
  if (threadIdx.x == 0) gb[k] = T(sum);
}

template <class T>
void run(const ConvParams& p, const Tensors& t, const ExecContext& ctx) {
  if (p.K == 0) return;
  const index_t values = p.N * p.P * p.Q;  // per channel
  int threads = kWarp;
  while (threads < kThreads && threads < values) threads *= 2;
  const auto kernel = bias_grad<T>;
  FC_LAUNCH(kernel, blocks_for(p.K, 1), threads, 0, static_cast<cudaStream_t>(ctx.stream),
            static_cast<const T*>(t.grad_y), static_cast<T*>(t.grad_bias), p.N, p.K, p.P * p.Q);
}

}  // namespace conv2d_backward_bias_detail

void conv2d_backward_bias(const Problem& pr, const Tensors& t, const ExecContext& ctx) {
  if (pr.dtype == DType::f64)
    conv2d_backward_bias_detail::run<double>(pr.conv, t, ctx);
  else
    conv2d_backward_bias_detail::run<float>(pr.conv, t, ctx);
}

}  // namespace fastconv::cuda
