// cuda/backend.h: the CUDA device as the rest of fastconv sees it (plain C++, no CUDA types):
// which GPUs there are and what they are, for info() and the benchmarks. Entering a device
// before a kernel runs is cuda::enter in kernels.h.
#pragma once
#include <string>
#include <vector>

namespace fastconv::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  double memory_bytes = 0;
  int multiprocessors = 0;
  double clock_ghz = 0;          // SM clock (0 where the runtime does not report it)
  double fp32_peak_tflops = 0;   // multiprocessors x FP32 lanes per SM x 2 x clock
  double memory_bandwidth_gbs = 0;
};

struct Devices {
  std::vector<DeviceInfo> devices;
  std::string why_none;  // when devices is empty: the runtime's reason (no driver, no GPU)
  int runtime_version = 0, driver_version = 0;
  bool emulated = false;  // the SIMT emulator of the tests, not a GPU
};

// Asks the CUDA runtime (never throws: no driver or no GPU gives an empty list and the reason).
Devices devices();

}  // namespace fastconv::cuda
