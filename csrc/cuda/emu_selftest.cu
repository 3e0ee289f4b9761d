// emu_selftest.cu: kernels that test the SIMT emulator (emu/emu.h) itself, written as ordinary
// CUDA (portable.cuh, FC_LAUNCH, FC_DYNAMIC_SHARED) so that nvcc compiles them too
// (`nvcc -std=c++17 -arch=sm_90 -I csrc -c csrc/cuda/emu_selftest.cu`); only the emulator runs
// them (fastconv._cuda_emu.selftest, tests/test_emulator.py). Each test returns the largest
// absolute error of its output against a host computation.
//   Correct kernels (error ~0): a tiled SGEMM with shared tiles, warp shuffles (down, xor, up,
//     indexed, sub-warp widths, disjoint sub-masks), ballot/any/all, __syncthreads_count/and/or,
//     atomics, dynamic shared memory (NaN bytes before writes; above 48 KiB after opting in),
//     thread and block indices of a 3-D launch, vector types and intrinsics.
//   Planted bugs the emulator must report (each raises): an early return before a barrier, a
//     divergent barrier, a full-mask shuffle in a divergent branch, warp masks that disagree, a
//     lane at __syncthreads while named in a __syncwarp mask, an exception inside a kernel,
//     launches a GPU refuses (1025 threads, block z 65, grid y 65536, 64 KiB of dynamic shared
//     memory without opting in), an opt-in above 227 KiB, a host pointer given as a device one.
//   Planted out-of-bounds writes (global, dynamic shared and local memory) that AddressSanitizer
//     must stop; refused (an error) in a build without it.
//   Planted bugs that must give wrong results in some thread order: a tiled SGEMM without its
//     second __syncthreads, a legacy warp-synchronous shared-memory reduction without __syncwarp.
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "emu_selftest.h"
#include "portable.cuh"

namespace fastconv::emu_selftest {
namespace {

// =============================================================================================
// Host helpers
// =============================================================================================

// Device memory of n elements of T, freed on scope exit.
template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  std::size_t n = 0;
  explicit DeviceBuffer(std::size_t count) : n(count) { FC_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T))); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(p); }
  void upload(const std::vector<T>& h) {
    FC_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    FC_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    FC_CUDA_CHECK(cudaDeviceSynchronize());
    return h;
  }
};

// Signed uniform values in [-1, 1) from a fixed seed.
std::vector<float> random_floats(std::size_t n, std::uint64_t seed) {
  std::vector<float> v(n);
  for (auto& x : v) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x = float(double(seed >> 40) / double(1ull << 24) * 2.0 - 1.0);
  }
  return v;
}

template <class A, class B>
double max_abs_diff(const std::vector<A>& got, const std::vector<B>& want) {
  if (got.size() != want.size()) return INFINITY;
  double e = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    if (std::isnan(d)) return INFINITY;
    e = d > e ? d : e;
  }
  return e;
}

// =============================================================================================
// Kernels
// =============================================================================================

constexpr int kTile = 16;

// C[M,N] = A[M,K] B[K,N] (row-major), one 16x16 tile of C per 16x16 block, the K dimension in
// 16-wide steps through shared tiles. kSkipSecondSync plants a bug: without the barrier after the
// inner product, fast threads overwrite the tiles while slow ones still read them.
template <bool kSkipSecondSync>
__global__ void sgemm_tiled(int M, int N, int K, const float* __restrict__ A, const float* __restrict__ B,
                            float* __restrict__ C) {
  __shared__ float As[kTile][kTile];
  __shared__ float Bs[kTile][kTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    As[ty][tx] = (row < M && k0 + tx < K) ? A[index_t(row) * K + k0 + tx] : 0.0f;
    Bs[ty][tx] = (k0 + ty < K && col < N) ? B[index_t(k0 + ty) * N + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += As[ty][k] * Bs[k][tx];
    if (!kSkipSecondSync) __syncthreads();
  }
  if (row < M && col < N) C[index_t(row) * N + col] = acc;
}

// Planted bug: thread 37 returns before the barrier the others wait at. Block: 64 threads.
__global__ void early_return_kernel(float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  if (t == 37) return;
  s[t] = float(t);
  __syncthreads();
  out[t] = s[63 - t];
}

// Planted bug: the two halves of the block wait at different __syncthreads. Block: 64 threads.
__global__ void divergent_barrier_kernel(float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = float(t);
  if (t < 32) {
    __syncthreads();
    out[t] = s[t + 32];
  } else {
    __syncthreads();
    out[t] = s[t - 32];
  }
}

// Planted bug: a full-mask shuffle reduction inside a branch half the warp skips. Block: 32.
__global__ void shfl_divergent_kernel(float* out) {
  float v = float(threadIdx.x);
  if (threadIdx.x % 32 < 16) {
    for (int o = 8; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  out[threadIdx.x] = v;
}

// Planted bug: lanes 0-15 pass mask 0x1ffff (one lane too many), lanes 16-31 the full mask, so
// the masks overlap without being equal. Block: 32.
__global__ void shfl_mask_disagree_kernel(float* out) {
  const unsigned lane = threadIdx.x % 32;
  float v = float(threadIdx.x);
  if (lane < 16)
    v = __shfl_xor_sync(0x0001ffffu, v, 1);
  else
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

// Planted bug: lane 0 waits at a full-mask __syncwarp that the other lanes skip for the block
// barrier. Block: 64.
__global__ void syncwarp_vs_syncthreads_kernel(float* out) {
  if (threadIdx.x % 32 == 0) __syncwarp();
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Warp shuffles, each against the host. in: [blocks*96], out: [blocks*96][8]. Block: 96 (three
// full warps).
__global__ void warp_shuffle_kernel(const float* __restrict__ in, float* __restrict__ out) {
  const int t = threadIdx.x, lane = t % 32;
  const index_t g = index_t(blockIdx.x) * blockDim.x + t;
  const float x = in[g];
  float* o = out + g * 8;
  // 0: tree reduction down to lane 0 (other lanes: partial sums, not checked)
  float v = x;
  for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  o[0] = lane == 0 ? v : 0.0f;
  // 1: butterfly: every lane gets the warp's sum
  v = x;
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  o[1] = v;
  // 2: inclusive prefix sum with __shfl_up_sync
  v = x;
  for (int d = 1; d < 32; d *= 2) {
    const float u = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += u;
  }
  o[2] = v;
  // 3: broadcast of lane 3's value (double)
  o[3] = float(__shfl_sync(0xffffffffu, double(x), 3));
  // 4: within groups of 8 lanes, the value of the group's lane 5 (srcLane 13 wraps modulo width)
  o[4] = __shfl_sync(0xffffffffu, x, 13, 8);
  // 5: shfl_down within groups of 8: lanes past the group's end keep their own value (int)
  o[5] = float(__shfl_down_sync(0xffffffffu, int(lane), 3, 8));
  // 6: disjoint sub-masks: the two half-warps each exchange with lane ^ 1 / lane ^ 2
  if (lane < 16)
    o[6] = __shfl_xor_sync(0x0000ffffu, x, 1);
  else
    o[6] = __shfl_xor_sync(0xffff0000u, x, 2);
  __syncwarp();
  // 7: 64-bit integer rotation by one lane
  const unsigned long long w = __shfl_sync(0xffffffffu, (unsigned long long)(g) << 33, (lane + 1) % 32);
  o[7] = float(w >> 33);
}

// Planted bug: the classic warp-synchronous last steps of a shared-memory reduction, without
// __syncwarp between them (correct only on pre-Volta lockstep warps). Block: 64; out: [blocks].
__global__ void legacy_warp_reduce_kernel(const float* __restrict__ in, float* __restrict__ out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * 64 + t];
  __syncthreads();
  if (t < 32) {
    volatile float* v = s;
    v[t] += v[t + 32];
    v[t] += v[t + 16];
    v[t] += v[t + 8];
    v[t] += v[t + 4];
    v[t] += v[t + 2];
    v[t] += v[t + 1];
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// __syncthreads_count/and/or. Block: 100 (a partial last warp); out: [100][5].
__global__ void syncthreads_count_kernel(int* out) {
  const int t = threadIdx.x;
  int* o = out + t * 5;
  o[0] = __syncthreads_count(t % 3 == 0);
  o[1] = __syncthreads_and(t < 1000);
  o[2] = __syncthreads_and(t != 5);
  o[3] = __syncthreads_or(t == 77);
  o[4] = __syncthreads_or(0);
}

// __ballot_sync, __any_sync, __all_sync, __activemask, __popc. Block: 80 (warp 2 has 16 lanes);
// out: [80][8].
__global__ void ballot_kernel(unsigned* out) {
  const int t = threadIdx.x, lane = t % 32;
  unsigned* o = out + t * 8;
  const unsigned b = __ballot_sync(0xffffffffu, lane % 3 == 0);
  o[0] = b;
  o[1] = unsigned(__popc(b));
  o[2] = unsigned(__any_sync(0xffffffffu, t == 70));
  o[3] = unsigned(__all_sync(0xffffffffu, lane < 20));
  o[4] = __activemask();
  // in a divergent branch: the lanes that take the same branch
  if (lane % 2 == 0)
    o[5] = __activemask();
  else
    o[5] = __activemask();
  // after an early exit: the lanes left; then a shuffle over them
  if (t >= 75) return;
  const unsigned m = __activemask();
  o[6] = m;
  o[7] = __shfl_sync(m, unsigned(lane) + 100u, 0);
}

// Atomics on global and shared memory. Grid: 4 blocks of 128. in: [512];
// acc: int histogram [8], then float sum, double sum, int max, int min, CAS-max (float), exch,
// unsigned long long sum, sub (see atomics_host).
struct AtomicOut {
  int hist[8];
  float fsum;
  double dsum;
  int imax, imin;
  float casmax;
  int exch_seen;  // the thread index of atomicExch's last writer
  unsigned long long usum;
  unsigned sub;
  int shared_count[4];
};
__global__ void atomics_kernel(const float* __restrict__ in, AtomicOut* acc) {
  __shared__ int count;
  const int t = threadIdx.x;
  const float x = in[blockIdx.x * 128 + t];
  if (t == 0) count = 0;
  __syncthreads();
  const int bin = int((x + 1.0f) * 4.0f);
  atomicAdd(&acc->hist[bin < 0 ? 0 : bin > 7 ? 7 : bin], 1);
  atomicAdd(&acc->fsum, x);
  atomicAdd(&acc->dsum, double(x));
  atomicMax(&acc->imax, int(x * 1000.0f));
  atomicMin(&acc->imin, int(x * 1000.0f));
  int* bits = reinterpret_cast<int*>(&acc->casmax);
  int old = *bits;
  while (__int_as_float(old) < x) {
    const int assumed = old;
    old = atomicCAS(bits, assumed, __float_as_int(x));
    if (old == assumed) break;
  }
  atomicExch(&acc->exch_seen, t);
  atomicAdd(&acc->usum, (unsigned long long)(t + 1) << 20);
  atomicSub(&acc->sub, 2u);
  atomicAdd(&count, 1);
  __syncthreads();
  if (t == 0) acc->shared_count[blockIdx.x] = count;
}

// Dynamic shared memory: every block sees NaN bytes before it writes, then a reversal through
// shared memory. Grid: 3 blocks of n threads, n floats of dynamic shared memory. out: [3*n][2].
__global__ void dynamic_smem_kernel(const float* __restrict__ in, float* __restrict__ out, int n) {
  FC_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  const index_t g = index_t(blockIdx.x) * n + t;
  out[2 * g] = isnan(s[t]) ? 1.0f : 0.0f;  // its own slot: no other thread wrote it yet
  s[t] = in[g];
  __syncthreads();
  out[2 * g + 1] = s[n - 1 - t];
}

// 64 KiB of dynamic shared memory (one kernel per variant: the opt-in is per kernel). Block: 256.
// out: [256]: 1 where the thread read back what its neighbour wrote and the memory is 16-byte
// aligned.
template <int kVariant>
__global__ void big_smem_kernel(float* out) {
  FC_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  constexpr int kFloats = 65536 / 4;
  for (int i = t; i < kFloats; i += 256) s[i] = float(i + kVariant);
  __syncthreads();
  bool ok = (reinterpret_cast<unsigned long long>(s) % 16) == 0;
  for (int i = (t + 1) % 256; i < kFloats; i += 256) ok = ok && s[i] == float(i + kVariant);
  out[t] = ok ? 1.0f : 0.0f;
}

// Thread and block indices of a 3-D launch. Block (5,3,2) (30 threads: one partial warp), grid
// (3,2,2). out: [12*30][4]: linear global id, the decoded thread index, block dims, grid dims.
__global__ void index_kernel(int* out) {
  const int tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int nt = blockDim.x * blockDim.y * blockDim.z;
  int* o = out + (bl * nt + tl) * 4;
  o[0] = bl * nt + tl;
  o[1] = int(threadIdx.x * 100 + threadIdx.y * 10 + threadIdx.z);
  o[2] = int(blockDim.x * 100 + blockDim.y * 10 + blockDim.z);
  o[3] = int(gridDim.x * 100 + gridDim.y * 10 + gridDim.z + warpSize * 1000);
}

// Vector types, __ldg and intrinsics. Block: 64. in: [256] floats; out: [64][8].
__global__ void intrinsics_kernel(const float* __restrict__ in, float* __restrict__ out) {
  const int t = threadIdx.x;
  const float4 q = __ldg(reinterpret_cast<const float4*>(in) + t);
  const float2 h = reinterpret_cast<const float2*>(in)[2 * t + 1];
  float* o = out + t * 8;
  o[0] = q.x + q.y + q.z + q.w;
  o[1] = h.x - h.y;
  o[2] = float(__clz(t) + __popc(unsigned(t) * 2654435761u) + __ffs(t << 3));
  o[3] = __saturatef(q.x * 2.0f);
  o[4] = rsqrtf(fabsf(q.y) + 1.0f);
  o[5] = __int_as_float(__float_as_int(q.z) ^ int(0x80000000u));  // negation through the bits
  o[6] = __fmaf_rn(q.x, q.y, q.w);
  const int2 ij = make_int2(t, -t);
  const double2 dd = make_double2(double(ij.x), double(ij.y) * 0.5);
  o[7] = float(dd.x + dd.y);
}

// Planted bug: a device-side check fails (an exception in the emulator) in block 1, thread 3.
__global__ void exception_kernel(float* out) {
#if FC_EMULATED
  if (blockIdx.x == 1 && threadIdx.x == 3) throw std::runtime_error("planted device-side check failed");
#endif
  out[blockIdx.x * 32 + threadIdx.x] = 1.0f;
}

// A kernel for the launch-limit checks (never runs). Block: 1.
__global__ void noop_kernel(float* out) { out[0] = 1.0f; }

// Planted out-of-bounds writes, one past the end of: a cudaMalloc'ed array of n floats (the
// last thread of the grid), a block's n floats of dynamic shared memory (the last thread of the
// block), a thread's local array (thread 5). Grid: 2 blocks of n/2 threads. Only AddressSanitizer
// sees them (the emulator gives each allocation its exact size, and each fiber stack holds ASan's
// redzones), so they run only in an ASan build, and there in a child process that ASan ends.
__global__ void global_oob_kernel(float* out, int n) {
  const int g = int(blockIdx.x * blockDim.x + threadIdx.x);
  out[g + (g == n - 1)] = 1.0f;
}

__global__ void shared_oob_kernel(float* out, int n) {
  FC_DYNAMIC_SHARED(float, s);
  const int t = int(threadIdx.x), m = int(blockDim.x);
  s[t + (t == m - 1)] = float(t);
  __syncthreads();
  out[blockIdx.x * m + t] = t < m - 1 ? s[t] : 0.0f;
  (void)n;
}

__global__ void local_oob_kernel(float* out, int n) {
  float local[5];
  const int t = int(threadIdx.x);
  for (int i = 0; i < 5; ++i) local[i] = float(t + i);
  float* p = local;  // through a pointer: UBSan's bounds check would see local[5] first
  p[t == 5 ? 5 : t % 5] = 0.0f;
  out[blockIdx.x * blockDim.x + t] = local[t % 5];
  (void)n;
}

// =============================================================================================
// Tests (host side)
// =============================================================================================

double sgemm_test(bool skip_second_sync) {
  const int M = 127, N = 129, K = 131;
  const auto a = random_floats(std::size_t(M) * K, 1), b = random_floats(std::size_t(K) * N, 2);
  DeviceBuffer<float> A(a.size()), B(b.size()), C(std::size_t(M) * N);
  A.upload(a);
  B.upload(b);
  const dim3 grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile), block(kTile, kTile);
  if (skip_second_sync) {
    const auto sgemm_missing_sync = sgemm_tiled<true>;
    FC_LAUNCH(sgemm_missing_sync, grid, block, 0, nullptr, M, N, K, A.p, B.p, C.p);
  } else {
    const auto sgemm = sgemm_tiled<false>;
    FC_LAUNCH(sgemm, grid, block, 0, nullptr, M, N, K, A.p, B.p, C.p);
  }
  std::vector<double> want(std::size_t(M) * N, 0.0);
  for (int i = 0; i < M; ++i)
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < N; ++j)
        want[std::size_t(i) * N + j] += double(a[std::size_t(i) * K + k]) * b[std::size_t(k) * N + j];
  return max_abs_diff(C.download(), want);
}

double early_return_test() {
  DeviceBuffer<float> out(64);
  FC_LAUNCH(early_return_kernel, 1, 64, 0, nullptr, out.p);
  return 0;
}

double divergent_barrier_test() {
  DeviceBuffer<float> out(64);
  FC_LAUNCH(divergent_barrier_kernel, 1, 64, 0, nullptr, out.p);
  return 0;
}

double shfl_divergent_test() {
  DeviceBuffer<float> out(32);
  FC_LAUNCH(shfl_divergent_kernel, 1, 32, 0, nullptr, out.p);
  return 0;
}

double shfl_mask_disagree_test() {
  DeviceBuffer<float> out(32);
  FC_LAUNCH(shfl_mask_disagree_kernel, 1, 32, 0, nullptr, out.p);
  return 0;
}

double syncwarp_vs_syncthreads_test() {
  DeviceBuffer<float> out(64);
  FC_LAUNCH(syncwarp_vs_syncthreads_kernel, 1, 64, 0, nullptr, out.p);
  return 0;
}

double warp_shuffle_test() {
  const int blocks = 2, n = blocks * 96;
  const auto x = random_floats(n, 3);
  DeviceBuffer<float> in(n), out(std::size_t(n) * 8);
  in.upload(x);
  FC_LAUNCH(warp_shuffle_kernel, blocks, 96, 0, nullptr, in.p, out.p);
  std::vector<double> want(std::size_t(n) * 8);
  for (int w = 0; w < n / 32; ++w) {
    const float* xs = &x[std::size_t(w) * 32];
    double sum = 0;
    for (int l = 0; l < 32; ++l) sum += xs[l];
    double prefix = 0;
    for (int l = 0; l < 32; ++l) {
      double* o = &want[(std::size_t(w) * 32 + l) * 8];
      prefix += xs[l];
      o[0] = l == 0 ? sum : 0.0;
      o[1] = sum;
      o[2] = prefix;
      o[3] = xs[3];
      o[4] = xs[(l & ~7) + 5];
      o[5] = (l % 8) + 3 < 8 ? l + 3 : l;
      o[6] = l < 16 ? xs[l ^ 1] : xs[l ^ 2];
      o[7] = double(w * 32 + (l + 1) % 32);
    }
  }
  return max_abs_diff(out.download(), want);
}

double legacy_warp_reduce_test() {
  const int blocks = 8;
  const auto x = random_floats(std::size_t(blocks) * 64, 4);
  DeviceBuffer<float> in(x.size()), out(blocks);
  in.upload(x);
  FC_LAUNCH(legacy_warp_reduce_kernel, blocks, 64, 0, nullptr, in.p, out.p);
  std::vector<double> want(blocks, 0.0);
  for (int b = 0; b < blocks; ++b)
    for (int i = 0; i < 64; ++i) want[b] += x[std::size_t(b) * 64 + i];
  return max_abs_diff(out.download(), want);
}

double syncthreads_count_test() {
  DeviceBuffer<int> out(100 * 5);
  FC_LAUNCH(syncthreads_count_kernel, 1, 100, 0, nullptr, out.p);
  std::vector<int> want;
  for (int t = 0; t < 100; ++t) want.insert(want.end(), {34, 1, 0, 1, 0});
  return max_abs_diff(out.download(), want);
}

double ballot_test() {
  DeviceBuffer<unsigned> out(80 * 8);
  FC_LAUNCH(ballot_kernel, 1, 80, 0, nullptr, out.p);
  const auto got = out.download();
  double mismatches = 0;
  for (int t = 0; t < 80; ++t) {
    const int w = t / 32, lanes = w < 2 ? 32 : 16;
    const unsigned existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    unsigned b = 0;
    for (int l = 0; l < lanes; ++l)
      if (l % 3 == 0) b |= 1u << l;
    const unsigned branch = existing & (t % 2 == 0 ? 0x55555555u : 0xaaaaaaaau);
    const unsigned left = t >= 75 ? 0xffffffffu : w < 2 ? existing : 0x7ffu;  // exited: NaN bytes
    const unsigned want[8] = {
        b,    unsigned(__builtin_popcount(b)), unsigned(w == 2), unsigned(lanes <= 20), existing, branch,
        left, t >= 75 ? 0xffffffffu : 100u};
    for (int k = 0; k < 8; ++k) mismatches += got[std::size_t(t) * 8 + k] != want[k];
  }
  return mismatches;
}

double atomics_test() {
  const auto x = random_floats(512, 5);
  DeviceBuffer<float> in(512);
  in.upload(x);
  AtomicOut init{};
  init.imax = -1000000;
  init.imin = 1000000;
  init.casmax = -2.0f;
  init.exch_seen = -1;
  init.sub = 5000;
  DeviceBuffer<AtomicOut> acc(1);
  acc.upload({init});
  FC_LAUNCH(atomics_kernel, 4, 128, 0, nullptr, in.p, acc.p);
  const AtomicOut got = acc.download()[0];
  AtomicOut want = init;
  double fsum = 0;
  for (int i = 0; i < 512; ++i) {
    const int bin = int((x[i] + 1.0f) * 4.0f);
    ++want.hist[bin < 0 ? 0 : bin > 7 ? 7 : bin];
    fsum += x[i];
    const int v = int(x[i] * 1000.0f);
    want.imax = v > want.imax ? v : want.imax;
    want.imin = v < want.imin ? v : want.imin;
    want.casmax = x[i] > want.casmax ? x[i] : want.casmax;
    want.usum += (unsigned long long)(i % 128 + 1) << 20;
    want.sub -= 2;
  }
  double e = std::fabs(got.fsum - fsum) + std::fabs(got.dsum - fsum);
  for (int k = 0; k < 8; ++k) e += std::abs(got.hist[k] - want.hist[k]);
  for (int k = 0; k < 4; ++k) e += std::abs(got.shared_count[k] - 128);
  e += std::abs(got.imax - want.imax) + std::abs(got.imin - want.imin) + std::fabs(got.casmax - want.casmax);
  e += got.exch_seen < 0 || got.exch_seen > 127;  // the last writer's thread index
  e += got.usum != want.usum;
  e += got.sub != want.sub;
  return e;
}

double dynamic_smem_test() {
  const int n = 96, blocks = 3;
  const auto x = random_floats(std::size_t(n) * blocks, 6);
  DeviceBuffer<float> in(x.size()), out(x.size() * 2);
  in.upload(x);
  FC_LAUNCH(dynamic_smem_kernel, blocks, n, n * sizeof(float), nullptr, in.p, out.p, n);
  std::vector<float> want(x.size() * 2);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      want[2 * (std::size_t(b) * n + t)] = 1.0f;
      want[2 * (std::size_t(b) * n + t) + 1] = x[std::size_t(b) * n + n - 1 - t];
    }
  return max_abs_diff(out.download(), want);
}

double big_smem_test(bool opt_in) {
  DeviceBuffer<float> out(256);
  if (opt_in) {
    const auto big_smem_opted_in = big_smem_kernel<1>;
    FC_CUDA_CHECK(
        cudaFuncSetAttribute(big_smem_opted_in, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536));
    FC_LAUNCH(big_smem_opted_in, 1, 256, 65536, nullptr, out.p);
  } else {
    const auto big_smem_not_opted_in = big_smem_kernel<0>;
    FC_LAUNCH(big_smem_not_opted_in, 1, 256, 65536, nullptr, out.p);
  }
  return max_abs_diff(out.download(), std::vector<float>(256, 1.0f));
}

double smem_optin_too_large_test() {
  FC_CUDA_CHECK(
      cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 232448 + 1024));
  return 0;
}

double index_test() {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const int nt = 30, nb = 12;
  DeviceBuffer<int> out(std::size_t(nt) * nb * 4);
  FC_LAUNCH(index_kernel, grid, block, 0, nullptr, out.p);
  std::vector<int> want;
  for (int bl = 0; bl < nb; ++bl)
    for (int tz = 0; tz < 2; ++tz)
      for (int ty = 0; ty < 3; ++ty)
        for (int tx = 0; tx < 5; ++tx) {
          const int tl = tx + 5 * (ty + 3 * tz);
          want.insert(want.end(), {bl * nt + tl, tx * 100 + ty * 10 + tz, 532, 322 + 32000});
        }
  return max_abs_diff(out.download(), want);
}

double intrinsics_test() {
  const auto x = random_floats(256, 7);
  DeviceBuffer<float> in(256), out(64 * 8);
  in.upload(x);
  FC_LAUNCH(intrinsics_kernel, 1, 64, 0, nullptr, in.p, out.p);
  std::vector<double> want;
  for (int t = 0; t < 64; ++t) {
    const float* q = &x[std::size_t(t) * 4];
    const int clz = t ? __builtin_clz(unsigned(t)) : 32;
    const int popc = __builtin_popcount(unsigned(t) * 2654435761u);
    const int ffs = __builtin_ffs(t << 3);
    const float sat = q[0] * 2.0f > 1.0f ? 1.0f : q[0] * 2.0f < 0.0f ? 0.0f : q[0] * 2.0f;
    want.insert(want.end(),
                {double(q[0]) + q[1] + q[2] + q[3], double(q[2]) - q[3], double(clz + popc + ffs), sat,
                 1.0 / std::sqrt(std::fabs(double(q[1])) + 1.0), -q[2], double(q[0]) * q[1] + q[3], t * 0.5});
  }
  return max_abs_diff(out.download(), want);
}

double exception_test() {
  DeviceBuffer<float> out(64);
  FC_LAUNCH(exception_kernel, 2, 32, 0, nullptr, out.p);
  return 0;
}

double too_many_threads_test() {
  DeviceBuffer<float> out(1);
  FC_LAUNCH(noop_kernel, 1, 1025, 0, nullptr, out.p);
  return 0;
}

double block_z_too_large_test() {
  DeviceBuffer<float> out(1);
  FC_LAUNCH(noop_kernel, 1, dim3(1, 1, 65), 0, nullptr, out.p);
  return 0;
}

double grid_y_too_large_test() {
  DeviceBuffer<float> out(1);
  FC_LAUNCH(noop_kernel, dim3(1, 65536, 1), 1, 0, nullptr, out.p);
  return 0;
}

// The planted out-of-bounds kernels above: refused unless AddressSanitizer is there to stop them
// (without it they would corrupt the heap or a fiber stack and run on).
template <class Kernel>
double oob_test(Kernel kernel, bool dynamic_shared) {
#if defined(FASTCONV_EMU_ASAN)
  const int n = 64;
  DeviceBuffer<float> out(n);
  FC_LAUNCH(kernel, 2, n / 2, dynamic_shared ? (n / 2) * sizeof(float) : 0, nullptr, out.p, n);
  FC_CUDA_CHECK(cudaDeviceSynchronize());
  return 0;
#else
  (void)kernel;
  (void)dynamic_shared;
  throw std::runtime_error(
      "fastconv emulator: this planted out-of-bounds self-test runs only in an "
      "AddressSanitizer build (FASTCONV_SANITIZE=address)");
#endif
}

// A host pointer given as the destination of a host-to-device copy.
double memcpy_host_as_device_test() {
  std::vector<float> host(16, 0.0f), other(16, 1.0f);
  FC_CUDA_CHECK(cudaMemcpy(host.data(), other.data(), 16 * sizeof(float), cudaMemcpyHostToDevice));
  return 0;
}

const std::vector<std::pair<std::string, std::function<double()>>>& table() {
  static const std::vector<std::pair<std::string, std::function<double()>>> t = {
      {"sgemm", [] { return sgemm_test(false); }},
      {"sgemm_missing_sync", [] { return sgemm_test(true); }},
      {"early_return_barrier", early_return_test},
      {"divergent_barrier", divergent_barrier_test},
      {"shfl_divergent", shfl_divergent_test},
      {"shfl_mask_disagree", shfl_mask_disagree_test},
      {"syncwarp_vs_syncthreads", syncwarp_vs_syncthreads_test},
      {"warp_shuffle", warp_shuffle_test},
      {"legacy_warp_reduce", legacy_warp_reduce_test},
      {"syncthreads_count", syncthreads_count_test},
      {"ballot", ballot_test},
      {"atomics", atomics_test},
      {"dynamic_smem", dynamic_smem_test},
      {"dynamic_smem_64k_refused", [] { return big_smem_test(false); }},
      {"dynamic_smem_64k_opt_in", [] { return big_smem_test(true); }},
      {"dynamic_smem_opt_in_too_large", smem_optin_too_large_test},
      {"index_3d", index_test},
      {"intrinsics", intrinsics_test},
      {"kernel_exception", exception_test},
      {"too_many_threads", too_many_threads_test},
      {"block_z_too_large", block_z_too_large_test},
      {"grid_y_too_large", grid_y_too_large_test},
      {"memcpy_host_as_device", memcpy_host_as_device_test},
      {"global_oob_write", [] { return oob_test(global_oob_kernel, false); }},
      {"shared_oob_write", [] { return oob_test(shared_oob_kernel, true); }},
      {"local_oob_write", [] { return oob_test(local_oob_kernel, false); }},
  };
  return t;
}

}  // namespace

std::vector<std::string> names() {
  std::vector<std::string> n;
  for (const auto& e : table()) n.push_back(e.first);
  return n;
}

double run(const std::string& name) {
  for (const auto& e : table())
    if (e.first == name) return e.second();
  throw std::invalid_argument("fastconv: unknown emulator self-test '" + name + "'");
}

}  // namespace fastconv::emu_selftest
