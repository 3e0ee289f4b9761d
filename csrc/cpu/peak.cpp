// peak.cpp: what this machine can do at best, so benchmark tables can say how close a
// kernel comes: (1) fp32 FMA throughput and (2) memory copy bandwidth. Compiled once per
// ISA (see kernels.h), so the FMA loop measures the vector width the kernels really use.
//
// FMA: every OpenMP thread runs a loop of 12 independent vector accumulators,
//   acc = acc * a + b (one fused multiply-add = 2 FLOPs per lane), for `seconds`.
//   12 chains cover an FMA latency of 4-6 cycles on two FMA pipes. Result: total FLOPs of
//   all threads / the longest thread's wall time, in GFLOP/s. The accumulators converge to
//   b / (1 - a) = 1, so no overflow and no denormals slow the loop down. A warm-up of
//   min(50 ms, seconds / 4) runs first (clock ramp-up measured 187 instead of 231 GFLOP/s
//   in a 0.1 s run without it).
// Copy: every thread memcpy's its share of a `bytes` source buffer into a destination of the
//   same size (both first touched by the thread that copies them), repeated for `seconds`;
//   the best repetition counts read + write bytes (STREAM's convention for copy): GB/s =
//   2 * bytes / time. Use buffers well above the last-level cache (256 MiB by default).
// Limits: a clock that drops under all-core vector load (AVX-512 licences) lowers the FMA
//   number, which is what the kernels see too; turbo on a short run may raise it. Other
//   processes on the same cores lower both numbers. glibc's memcpy may use non-temporal
//   stores for large copies (no read-for-ownership), as a tuned kernel could too.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu/isa_buffer.h"
#include "cpu/kernels.h"
#include "errors.h"

namespace fastconv::cpu::FC_ISA {
namespace {

constexpr int kChains = 12;
constexpr index_t kInner = 4096;  // iterations between clock reads

#if defined(__AVX512F__)
using vec = __m512;
constexpr int kLanes = 16;
inline vec vset(float v) { return _mm512_set1_ps(v); }
inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vfirst(vec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__) && defined(__FMA__)
using vec = __m256;
constexpr int kLanes = 8;
inline vec vset(float v) { return _mm256_set1_ps(v); }
inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vfirst(vec v) { return _mm256_cvtss_f32(v); }
#else
// Portable: GCC/Clang vector extension of 4 floats (SSE2 on x86-64, NEON on aarch64); the
// multiply-add may or may not be fused, so this is a lower bound on the scalar build.
typedef float vec __attribute__((vector_size(16)));
constexpr int kLanes = 4;
inline vec vset(float v) { return vec{v, v, v, v}; }
inline vec vfma(vec a, vec b, vec c) { return a * b + c; }
inline float vfirst(vec v) { return v[0]; }
#endif

// One thread's FMA loop; returns the FLOPs it did and writes its wall time.
double fma_loop(double seconds, double* elapsed, float* sink) {
  const vec a = vset(0.999999f), b = vset(1e-6f);
  vec acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = vset(float(i) * 0.01f);
  double flops = 0.0;
  const double t0 = omp_get_wtime();
  double t = t0;
  do {
    for (index_t it = 0; it < kInner; ++it) {
      for (int i = 0; i < kChains; ++i) acc[i] = vfma(acc[i], a, b);
    }
    flops += 2.0 * kLanes * kChains * double(kInner);
    t = omp_get_wtime();
  } while (t - t0 < seconds);
  float s = 0.0f;
  for (int i = 0; i < kChains; ++i) s += vfirst(acc[i]);
  *sink = s;  // keeps the loop alive
  *elapsed = t - t0;
  return flops;
}

}  // namespace

double peak_fma_gflops(double seconds) {
  FC_ISA_CHECK(seconds > 0.0, "peak: seconds must be positive (got %g)", seconds);
  const int threads = omp_get_max_threads();
  Buffer<double> flops(threads), elapsed(threads);
  Buffer<float> sink(threads);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    fma_loop(std::min(0.05, seconds / 4), &elapsed[t], &sink[t]);  // warm-up: clocks ramp, threads start
#pragma omp barrier
    flops[t] = fma_loop(seconds, &elapsed[t], &sink[t]);
  }
  double total = 0.0, longest = 0.0;
  for (int t = 0; t < threads; ++t) {
    total += flops[t];
    longest = std::max(longest, elapsed[t]);
  }
  FC_ISA_CHECK(sink[0] == sink[0], "peak: FMA loop produced NaN");
  return longest > 0.0 ? total / longest / 1e9 : 0.0;
}

double peak_copy_gbs(double seconds, index_t bytes) {
  FC_ISA_CHECK(seconds > 0.0, "peak: seconds must be positive (got %g)", seconds);
  FC_ISA_CHECK(bytes >= (1 << 20), "peak: copy buffer must be at least 1 MiB (got %lld bytes)",
               (long long)bytes);
  const int threads = omp_get_max_threads();
  const index_t chunk = (bytes / threads) & ~index_t(63);
  const std::size_t total = std::size_t(chunk) * std::size_t(threads);
  // Not written here (each thread touches its part first, below), and each copy starts on a
  // cache line: Buffer gives only operator new's 16-byte alignment, hence 64 spare bytes.
  Buffer<char> src = Buffer<char>::uninitialized(index_t(total) + 64);
  Buffer<char> dst = Buffer<char>::uninitialized(index_t(total) + 64);
  char* s = src.data() + (64 - reinterpret_cast<std::uintptr_t>(src.data()) % 64) % 64;
  char* d = dst.data() + (64 - reinterpret_cast<std::uintptr_t>(dst.data()) % 64) % 64;
#pragma omp parallel num_threads(threads)
  {  // first touch by the copying thread
    const index_t t = omp_get_thread_num();
    std::memset(s + t * chunk, int(t + 1), std::size_t(chunk));
    std::memset(d + t * chunk, 0, std::size_t(chunk));
  }
  double best = 0.0;
  const double start = omp_get_wtime();
  int reps = 0;
  while (reps < 2 || omp_get_wtime() - start < seconds) {
    double t0 = 0.0, t1 = 0.0;
#pragma omp parallel num_threads(threads)
    {
      const index_t t = omp_get_thread_num();
#pragma omp barrier
#pragma omp single
      t0 = omp_get_wtime();  // implicit barrier after single
      std::memcpy(d + t * chunk, s + t * chunk, std::size_t(chunk));
#pragma omp barrier
#pragma omp single
      t1 = omp_get_wtime();
    }
    if (t1 > t0) best = std::max(best, 2.0 * double(total) / (t1 - t0) / 1e9);
    ++reps;
  }
  FC_ISA_CHECK(d[0] == 1, "peak: copy did not copy");
  return best;
}

}  // namespace fastconv::cpu::FC_ISA
