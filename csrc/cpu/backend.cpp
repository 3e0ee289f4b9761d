// backend.cpp: the CPU backend's thread count (see backend.h).
#include "cpu/backend.h"

#include <omp.h>

#include <atomic>

namespace fastconv::cpu {
namespace {
std::atomic<int> g_num_threads{0};  // 0: not set; OpenMP's default applies
}  // namespace

void set_num_threads(int n) {
  FC_CHECK(n > 0, "number of threads must be positive (got ", n, ")");
  g_num_threads = n;
}

int num_threads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

void enter(const ExecContext& ctx) {
  FC_CHECK(ctx.threads >= 0, "threads must be >= 0 (got ", ctx.threads, ")");
  omp_set_num_threads(ctx.threads > 0 ? ctx.threads : num_threads());
}

}  // namespace fastconv::cpu
