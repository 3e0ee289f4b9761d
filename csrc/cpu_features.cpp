// cpu_features.cpp: which instruction set the CPU kernels use. Detection asks the
// CPU and the OS (GCC's __builtin_cpu_supports checks XCR0 for the AVX states);
// FASTCONV_ISA may only lower the level, so one machine can test every path.
#include "cpu_features.h"

#include <atomic>
#include <cstdlib>

#include "common.h"

namespace fastconv {
namespace {

Isa detect() {
#if defined(FC_X86) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::scalar;
}

Isa initial_isa() {
  Isa best = detect();
  if (const char* env = std::getenv("FASTCONV_ISA")) {
    std::string want(env);
    if (!want.empty()) {
      Isa lowered = isa_from_name(want);  // an unknown name fails the import loudly
      if (int(lowered) < int(best)) best = lowered;
    }
  }
  return best;
}

std::atomic<int>& active() {
  static std::atomic<int> level{int(initial_isa())};
  return level;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

Isa isa_from_name(const std::string& name) {
  if (name == "avx512") return Isa::avx512;
  if (name == "avx2") return Isa::avx2;
  if (name == "scalar") return Isa::scalar;
  FC_CHECK(false, "unknown ISA '", name, "'; expected one of avx512, avx2, scalar");
  return Isa::scalar;
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return Isa(active().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  FC_CHECK(int(isa) <= int(detected_isa()), "ISA '", isa_name(isa), "' is not supported by this CPU (best: '",
           isa_name(detected_isa()), "')");
  active().store(int(isa), std::memory_order_relaxed);
}

}  // namespace fastconv
