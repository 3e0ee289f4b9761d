// backend.cu: the CUDA device's setup for a call (cuda::enter: the caller's device made current)
// and what the runtime says about the GPUs (devices(), for info() and the benchmarks). No kernels.
// Built by nvcc into _C, and by the host compiler against the emulator into _cuda_emu, where the
// one "device" is the emulator.
#include "backend.h"
#include "kernels.h"
#include "portable.cuh"

namespace fastconv::cuda {

void enter(const ExecContext& ctx) {
  int current = -1;
  FC_CUDA_CHECK(cudaGetDevice(&current));
  if (current != ctx.device_index) FC_CUDA_CHECK(cudaSetDevice(ctx.device_index));
}

#if !FC_EMULATED
namespace {

// FP32 lanes per SM by compute capability (the CUDA programming guide's arithmetic table).
int fp32_lanes_per_sm(int major, int minor) {
  if (major >= 8 && !(major == 8 && minor == 0)) return 128;  // sm_86, sm_89, sm_90, later
  return 64;                                                  // sm_75, sm_80
}

}  // namespace
#endif

Devices devices() {
  Devices out;
#if FC_EMULATED
  out.emulated = true;
  DeviceInfo d;
  d.name = "fastconv SIMT emulator (CPU)";
  d.major = 9;
  d.minor = 0;
  d.multiprocessors = 1;
  out.devices.push_back(d);
#else
  cudaRuntimeGetVersion(&out.runtime_version);
  cudaDriverGetVersion(&out.driver_version);
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    out.why_none = str_cat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.memory_bytes = double(p.totalGlobalMem);
    d.multiprocessors = p.multiProcessorCount;
    int clock_khz = 0, mem_clock_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, i);
    cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, i);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, i);
    (void)cudaGetLastError();  // attributes a runtime no longer reports read as 0
    d.clock_ghz = clock_khz * 1e-6;
    d.fp32_peak_tflops = d.multiprocessors * fp32_lanes_per_sm(p.major, p.minor) * 2.0 * d.clock_ghz * 1e-3;
    d.memory_bandwidth_gbs = 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0) * 1e-9;  // double data rate
    out.devices.push_back(d);
  }
  if (out.devices.empty()) out.why_none = "the CUDA runtime reports no device";
#endif
  return out;
}

}  // namespace fastconv::cuda
