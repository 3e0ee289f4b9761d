// cpu_features.cpp: which instruction set the CPU kernels use. Detection asks the
// CPU and the OS (GCC's __builtin_cpu_supports checks XCR0 for the AVX states);
// FASTCONV_ISA may only lower the level, so one machine can test every path.
#include "cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(FC_X86) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

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

CpuIdentity identify() {
  CpuIdentity id{CpuVendor::other, "", 0, 0};
#if defined(FC_X86) && (defined(__GNUC__) || defined(__clang__))
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return id;
  char name[13] = {};
  std::memcpy(name, &ebx, 4);  // the vendor string is EBX, EDX, ECX
  std::memcpy(name + 4, &edx, 4);
  std::memcpy(name + 8, &ecx, 4);
  id.vendor_id = name;
  if (id.vendor_id == "GenuineIntel") id.vendor = CpuVendor::intel;
  if (id.vendor_id == "AuthenticAMD") id.vendor = CpuVendor::amd;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
    const int base_family = int((eax >> 8) & 0xF), base_model = int((eax >> 4) & 0xF);
    id.family = base_family == 0xF ? base_family + int((eax >> 20) & 0xFF) : base_family;
    id.model =
        (base_family == 0x6 || base_family == 0xF) ? (int((eax >> 16) & 0xF) << 4) | base_model : base_model;
  }
#endif
  return id;
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

const CpuIdentity& cpu_identity() {
  static const CpuIdentity id = identify();
  return id;
}

const char* cpu_vendor_name(CpuVendor vendor) {
  switch (vendor) {
    case CpuVendor::intel: return "intel";
    case CpuVendor::amd: return "amd";
    default: return "other";
  }
}

Isa active_isa() { return Isa(active().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  FC_CHECK(int(isa) <= int(detected_isa()), "ISA '", isa_name(isa), "' is not supported by this CPU (best: '",
           isa_name(detected_isa()), "')");
  active().store(int(isa), std::memory_order_relaxed);
}

}  // namespace fastconv
