// conv2d_direct.cpp: TEMPORARY plain direct convolution (correct, not vectorised)
// until the vectorised one lands. Compiled once per ISA (see kernels.h).
#include "cpu/kernels.h"

namespace fastconv::cpu::FC_ISA {

index_t conv2d_direct_workspace_bytes(const ConvParams&, DType) { return 0; }

template <class T>
void conv2d_direct(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, void*) {
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group();
#pragma omp parallel for collapse(2)
  for (index_t n = 0; n < p.N; ++n)
    for (index_t k = 0; k < p.K; ++k) {
      const index_t g = k / Kg;
      for (index_t op = 0; op < p.P; ++op)
        for (index_t oq = 0; oq < p.Q; ++oq) {
          T acc = bias ? bias[k] : T(0);
          for (index_t c = 0; c < Cg; ++c)
            for (index_t r = 0; r < p.R; ++r) {
              index_t ih = op * p.stride_h - p.pad_h + r * p.dil_h;
              if (ih < 0 || ih >= p.H) continue;
              for (index_t s = 0; s < p.S; ++s) {
                index_t iw = oq * p.stride_w - p.pad_w + s * p.dil_w;
                if (iw < 0 || iw >= p.W) continue;
                acc += x[((n * p.C + g * Cg + c) * p.H + ih) * p.W + iw] *
                       w[((k * Cg + c) * p.R + r) * p.S + s];
              }
            }
          y[((n * p.K + k) * p.P + op) * p.Q + oq] = acc;
        }
    }
}

template void conv2d_direct<float>(const ConvParams&, const float*, const float*, const float*, float*, void*);
template void conv2d_direct<double>(const ConvParams&, const double*, const double*, const double*, double*, void*);

}  // namespace fastconv::cpu::FC_ISA
