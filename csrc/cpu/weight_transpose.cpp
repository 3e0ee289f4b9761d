// weight_transpose.cpp: the weight that turns a stride-1 convolution's data gradient into a
// forward convolution of grad_y (the Python side computes grad_x that way where it can, with
// whichever forward kernel `auto` picks for the transposed problem: Winograd for 3x3 float32):
//   w (K, C/g, R, S) -> wt (C, K/g, R, S),  wt[g*C/g + c][k][r][s] = w[g*K/g + k][c][R-1-r][S-1-s]
// i.e. per group, the channel axes swapped and each kernel rotated by 180 degrees.
// Idea: blocks of kTile output x kTile input channels, so each block's reads and writes
// (kTile runs of kTile*R*S values each) stay within L1; 3x3 and 1x1 kernels get a
// fixed-size reversed run, which the compiler unrolls (a run-time length of 9 took about
// 2.5 cycles a value). 512x512x3x3: 1.9 ms as NumPy's strided copy, 0.9 ms here (Zen 5,
// warm, 6a16297).
// Limits: float and double; w and wt contiguous and distinct.
#include <algorithm>

#include "cpu/kernels.h"

namespace fastconv::cpu {
namespace {

constexpr index_t kTile = 16;  // channels per block side: a 3x3 float block reads and writes 9 KiB, in L1
// Below this many values the copy runs on one thread (a team costs more than it saves).
// Set with the kernel (6a16297), not measured separately.
constexpr index_t kParallelMinValues = index_t(1) << 16;

// Block [c0, c1) x [k0, k1) of group g; RS > 0 is R*S at compile time, RS == 0 takes RSr.
template <index_t RS, class T>
void transpose_rotate_block(index_t RSr, const T* w, T* wt, index_t Kg, index_t Cg, index_t g, index_t c0,
                            index_t c1, index_t k0, index_t k1) {
  const index_t n = RS > 0 ? RS : RSr;
  for (index_t c = c0; c < c1; ++c) {
    T* dst = wt + (g * Cg + c) * Kg * n;
    for (index_t k = k0; k < k1; ++k) {
      const T* src = w + ((g * Kg + k) * Cg + c) * n;
      for (index_t e = 0; e < n; ++e) dst[k * n + e] = src[n - 1 - e];
    }
  }
}

}  // namespace

template <class T>
void transpose_rotate_weight(index_t K, index_t Cg, index_t groups, index_t RS, const T* w, T* wt) {
  const index_t Kg = K / groups, kb = (Kg + kTile - 1) / kTile, cb = (Cg + kTile - 1) / kTile;
#pragma omp parallel for collapse(3) schedule(static) if (K * Cg * RS > kParallelMinValues)
  for (index_t g = 0; g < groups; ++g)
    for (index_t ci = 0; ci < cb; ++ci)
      for (index_t ki = 0; ki < kb; ++ki) {
        const index_t c0 = ci * kTile, c1 = std::min(Cg, c0 + kTile);
        const index_t k0 = ki * kTile, k1 = std::min(Kg, k0 + kTile);
        if (RS == 9)
          transpose_rotate_block<9>(RS, w, wt, Kg, Cg, g, c0, c1, k0, k1);
        else if (RS == 1)
          transpose_rotate_block<1>(RS, w, wt, Kg, Cg, g, c0, c1, k0, k1);
        else
          transpose_rotate_block<0>(RS, w, wt, Kg, Cg, g, c0, c1, k0, k1);
      }
}

template void transpose_rotate_weight<float>(index_t, index_t, index_t, index_t, const float*, float*);
template void transpose_rotate_weight<double>(index_t, index_t, index_t, index_t, const double*, double*);

}  // namespace fastconv::cpu
