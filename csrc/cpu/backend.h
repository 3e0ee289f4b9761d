// backend.h: the CPU backend's execution setup. The registry calls enter() before a CPU
// kernel sizes its workspace or runs, so kernels read their team size from OpenMP
// (omp_get_max_threads) as they always have; nothing else in the core touches OpenMP's
// settings. Also the finiteness check that auto and plans run on outputs and inputs.
#pragma once
#include "tensor.h"

namespace fastconv::cpu {

void set_num_threads(int n);  // throws unless n > 0
int num_threads();  // set_num_threads' value, else OpenMP's default (OMP_NUM_THREADS or all cores)
// OpenMP's team size is a per-OS-thread setting: apply ctx.threads (0: num_threads()) in
// whichever thread is about to run a kernel.
void enter(const ExecContext& ctx);

// False when any of a[0:n) is NaN or +-Inf; num_threads() threads read it from 64 KiB up.
template <class T>
bool all_finite(const T* a, index_t n);

}  // namespace fastconv::cpu
