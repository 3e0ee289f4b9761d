// portable.cuh: the one header a CUDA kernel file includes for its device code, so that the same
// source compiles twice:
//   - by nvcc, for real GPUs, into fastconv._C (FC_EMULATED == 0);
//   - by the host compiler, against the SIMT emulator (cuda/emu/emu.h: every CUDA thread a fiber),
//     into the test-only module fastconv._cuda_emu (FC_EMULATED == 1), so CI runs every kernel.
// What a kernel file may use: the CUDA built-ins the emulator provides (emu.h lists them), plus
//   FC_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)   the only way to launch; checked.
//     A template kernel is launched through a named pointer, which also names it in errors:
//       const auto sgemm_128x64 = sgemm_kernel<float, 128, 64>;  FC_LAUNCH(sgemm_128x64, ...);
//   FC_DYNAMIC_SHARED(type, name)    the block's dynamic shared memory as `type* name` (16-byte aligned)
//   FC_USE_PTX                       1 where inline PTX may be used (nvcc, sm_80+); 0 in the emulator,
//                                    which runs the plain-CUDA fallback every PTX block must keep
//   fc_min / fc_max                  for device code (std:: is host-only under nvcc)
//   FC_CUDA_CHECK(call)              a runtime call whose error throws (naming the call)
// Kernel files put their code in namespace fastconv::cuda (in both builds: the two never link
// into one module).
#pragma once

#include "../common.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define FC_EMULATED 0
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define FC_USE_PTX 1
#else
#define FC_USE_PTX 0
#endif
#else
#include "emu/emu.h"
#define FC_EMULATED 1
#define FC_USE_PTX 0
#endif

namespace fastconv::cuda {

// Throws std::runtime_error "fastconv: CUDA error in <what>: <name>: <description>" unless e is
// cudaSuccess. Clears the runtime's sticky last error first so the next call starts clean.
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw std::runtime_error(
      str_cat("fastconv: CUDA error in ", what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
}

template <class T>
FC_HD inline constexpr T fc_min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
FC_HD inline constexpr T fc_max(T a, T b) {
  return a < b ? b : a;
}
// Blocks to cover n items with b per block (grid sizes are 32-bit on the x axis up to 2^31-1).
inline unsigned blocks_for(index_t n, int b) {
  const index_t g = (n + b - 1) / b;
  if (g > 0x7fffffff) throw std::invalid_argument(str_cat("fastconv: a grid of ", g, " blocks is too large"));
  return unsigned(g > 0 ? g : 1);
}

}  // namespace fastconv::cuda

#define FC_CUDA_CHECK(call) ::fastconv::cuda::check((call), #call)

#if FC_EMULATED
#define FC_LAUNCH(kernel, grid, block, smem, stream, ...)                   \
  ::fastconv::emu::launch(#kernel, kernel, dim3(grid), dim3(block), (smem), \
                          static_cast<cudaStream_t>(stream), __VA_ARGS__)
#define FC_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::fastconv::emu::dynamic_shared())
#else
// The launch error (bad configuration, too much shared memory) is checked here; an error while
// the kernel runs surfaces at the caller's next synchronising call, as with every CUDA library.
#define FC_LAUNCH(kernel, grid, block, smem, stream, ...)                                        \
  do {                                                                                           \
    kernel<<<dim3(grid), dim3(block), (smem), static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__); \
    ::fastconv::cuda::check(cudaGetLastError(), "launch of kernel " #kernel);                    \
  } while (0)
#define FC_DYNAMIC_SHARED(type, name)                               \
  extern __shared__ __align__(16) unsigned char fc_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(fc_dynamic_smem_)
#endif
