// emu_selftest_main.cpp: a standalone driver of the SIMT emulator's self-tests (csrc/cuda/
// emu_selftest.cu) for developing the emulator without the Python module. Build it with the
// self-tests in a second translation unit (which also checks that two TUs including emu.h link):
//   echo '#include "cuda/emu_selftest.cu"' > selftest_tu.cpp
//   g++ -std=c++17 -O2 -Wall -Wextra -I csrc -I . tools/emu_selftest_main.cpp selftest_tu.cpp -o emu_selftest
// Run: ./emu_selftest [name...]   runs each self-test in each order (forward, reverse, shuffle)
//      and prints its error or the emulator's message, then the fiber switches per second.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "csrc/cuda/emu/emu.h"
#include "csrc/cuda/emu_selftest.h"

int main(int argc, char** argv) {
  namespace st = fastconv::emu_selftest;
  std::vector<std::string> names(argv + 1, argv + argc);
  if (names.empty()) names = st::names();
  for (const char* order : {"forward", "reverse", "shuffle"}) {
    fastconv::emu::set_order(order);
    for (const std::string& name : names) {
      try {
        std::printf("%-8s %-30s error %.3g\n", order, name.c_str(), st::run(name));
      } catch (const std::exception& e) {
        std::printf("%-8s %-30s raised: %s\n", order, name.c_str(), e.what());
      }
    }
  }
  // Speed: the tiled SGEMM (127x129x131, 16x16 blocks) in forward order.
  fastconv::emu::set_order("forward");
  const auto s0 = fastconv::emu::fiber_switches();
  const auto t0 = std::chrono::steady_clock::now();
  int reps = 0;
  double secs = 0;
  while (secs < 1.0) {
    st::run("sgemm");
    ++reps;
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double sw = double(fastconv::emu::fiber_switches() - s0);
  std::printf("sgemm: %.1f ms per run (incl. host reference), %.3g fiber switches/s\n", 1e3 * secs / reps,
              sw / secs);
  return 0;
}
