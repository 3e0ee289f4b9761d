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
