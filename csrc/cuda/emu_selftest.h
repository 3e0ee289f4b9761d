// emu_selftest.h: self-test kernels of the SIMT emulator (emu/emu.h), defined in emu_selftest.cu
// and driven by tests/test_emulator.py through fastconv._cuda_emu. Some are correct kernels whose
// output must match a host computation; others carry planted bugs (a missing __syncthreads, an
// early return before a barrier, a full-mask shuffle in a divergent branch, ...) that the emulator
// must report or that must give wrong results in some thread order. Plain C++ (no CUDA types).
#pragma once
#include <string>
#include <vector>

namespace fastconv::emu_selftest {

// Every self-test's name.
std::vector<std::string> names();

// Runs one self-test through the emulator in the current thread order and returns the largest
// absolute error of its output against a host computation (0 when exact). Errors the emulator
// reports (fastconv::emu::Error, a std::runtime_error) propagate; an unknown name throws
// std::invalid_argument.
double run(const std::string& name);

}  // namespace fastconv::emu_selftest
