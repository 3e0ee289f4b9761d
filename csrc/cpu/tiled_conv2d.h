// tiled_conv2d.h: the entry points of the tiled / locally connected convolution
// (tiled_conv2d.cpp), compiled once per ISA into fastconv::cpu::<isa> like kernels.h's
// FC_PER_ISA_DECLARATIONS (kept in a header of its own so the file adds no lines there).
// Sizes come from ConvParams with tiles_h x tiles_w kernel sets (params.h):
//   x (N, C, H, W), w (tiles_h, tiles_w, K, C/groups, R, S), bias (tiles_h, tiles_w, K) (or
//   (K,) with p.channel_bias) or null, y and grad_y (N, K, P, Q); output (p, q) uses set
//   (p % tiles_h, q % tiles_w).
// Outputs are overwritten. Scratch is per thread and allocated inside (bounded by the
// image block), except the data gradient's unrolled gradient, which is the caller's
// workspace of tiled_conv2d_backward_data_workspace_bytes.
#pragma once
#include "params.h"

#define FC_TILED_DECLARATIONS                                                                       \
  template <class T>                                                                                \
  void tiled_conv2d(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);              \
  index_t tiled_conv2d_backward_data_workspace_bytes(const ConvParams& p, DType dtype);             \
  template <class T>                                                                                \
  void tiled_conv2d_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x,      \
                                  void* workspace);                                                 \
  /* grad_w (tiles_h, tiles_w, K, C/groups, R, S) and grad_bias (tiles_h, tiles_w, K), or (K,) with \
     p.channel_bias: either may be null */                                                          \
  template <class T>                                                                                \
  void tiled_conv2d_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w,    \
                                    T* grad_bias);

namespace fastconv::cpu {
namespace scalar {
FC_TILED_DECLARATIONS
}
#if defined(FC_X86)
namespace avx2 {
FC_TILED_DECLARATIONS
}
namespace avx512 {
FC_TILED_DECLARATIONS
}
#endif
}  // namespace fastconv::cpu
