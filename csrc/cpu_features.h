// cpu_features.h: run-time instruction-set detection and selection.
// The detected level is the best the CPU and OS support; the active level may be
// lowered (FASTCONV_ISA=avx2|scalar at import, or set_isa()) but never raised.
#pragma once
#include <string>

namespace fastconv {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument
Isa detected_isa();
Isa active_isa();
void set_isa(Isa isa);  // throws when isa is above detected_isa()

// Who made the CPU and which core it is, from CPUID (never from the build's -march): the choices
// tuned per microarchitecture key on the vendor (fastconv.algorithms' rules: Intel's AVX-512
// cores run two full-width FMAs a cycle where Zen 4 splits one zmm FMA in two, so Winograd's
// transforms weigh more against its products there). family/model are CPUID's display values;
// a hypervisor may report a model of its own, hence the key is the vendor, not the model.
enum class CpuVendor : int { other = 0, amd = 1, intel = 2 };
struct CpuIdentity {
  CpuVendor vendor;
  std::string vendor_id;  // CPUID leaf 0's 12 characters, e.g. "GenuineIntel"; "" off x86
  int family, model;      // display family and model (leaf 1), 0 off x86
};
const CpuIdentity& cpu_identity();
const char* cpu_vendor_name(CpuVendor vendor);  // "intel", "amd", "other"

// Pick the implementation compiled for the active ISA (x86 builds have all three).
template <class F>
F pick_isa(F scalar_fn, F avx2_fn, F avx512_fn) {
  switch (active_isa()) {
    case Isa::avx512: return avx512_fn;
    case Isa::avx2: return avx2_fn;
    default: return scalar_fn;
  }
}

}  // namespace fastconv
