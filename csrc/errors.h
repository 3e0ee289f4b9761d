// errors.h: the error path of the code compiled once per ISA (the fc_kernels_<isa> objects,
// gemm_avx2.cpp, gemm_avx512.cpp). FC_ISA_CHECK throws std::invalid_argument, as FC_CHECK
// does (pybind11 -> ValueError), but through one out-of-line function compiled once, in
// errors.cpp, without ISA flags.
// Why not FC_CHECK there: its message builder (str_cat, common.h) is a template, and every
// object that uses it emits its own copy of each instantiation (and of the std::ostringstream
// code it inlines) as a weak symbol. The linker keeps one copy of each weak symbol for the
// whole module, so code compiled for any ISA may end up running the copy compiled with
// AVX-512 flags. A printf-style format keeps everything the ISA code needs in one plain call.
// Limits: printf conversions only (%d, %g, %lld with a cast to long long, %s, ...).
#pragma once

namespace fastconv {

// Throws std::invalid_argument("fastconv: " + the formatted message).
[[noreturn]] void throw_invalid_argument(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace fastconv

// Precondition check for per-ISA code; the message is a printf format and its arguments.
#define FC_ISA_CHECK(cond, ...)                                   \
  do {                                                            \
    if (!(cond)) ::fastconv::throw_invalid_argument(__VA_ARGS__); \
  } while (0)
