// kernels.h: the entry points of every CPU kernel, as the kernel table (registry.cpp) calls
// them. Two kinds:
//  - compiled once per ISA: conv2d_direct.cpp, pool2d.cpp, peak.cpp, conv2d_winograd.cpp and
//    conv2d_fft.cpp (CMakeLists.txt's FC_PER_ISA_SOURCES). CMake builds each of those files
//    once per instruction set, with -DFC_ISA=<isa> and that ISA's flags; each copy lives in
//    namespace fastconv::cpu::<isa> (scalar, avx2, avx512), declared below by the
//    FC_*_DECLARATIONS macros, and FC_PICK_ISA takes the active ISA's copy at run time.
//  - compiled once, with the baseline flags, in namespace fastconv::cpu: the GEMM-based
//    convolution (im2col forward and data gradient, the implicit-GEMM weight gradient), the
//    bias gradient and the transposed weight. Their ISA-specific work happens inside the
//    GEMM (gemm.h), which picks its own micro-kernels.
// Tensors are contiguous (NCHW) and the sizes come from ConvParams / PoolParams (params.h):
// x (N, C, H, W), w (K, C/groups, R, S), y and grad_y (N, K, P, Q). Outputs are overwritten.
// A workspace holds at least the matching *_workspace_bytes (it may be null when that is 0).
#pragma once
#include "params.h"

#define FC_PER_ISA_DECLARATIONS                                                                           \
  /* conv2d_direct.cpp: x (N,C,H,W), w (K,C/groups,R,S), bias (K) or null, y (N,K,P,Q) */                 \
  index_t conv2d_direct_workspace_bytes(const ConvParams& p, DType dtype);                                \
  template <class T>                                                                                      \
  void conv2d_direct(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, void* workspace);  \
  /* pool2d.cpp: x (N,C,H,W), y (N,C,P,Q); indices (N,C,P,Q) int64 into H*W, or null */                   \
  template <class T>                                                                                      \
  void max_pool2d(const PoolParams& p, const T* x, T* y, std::int64_t* indices);                          \
  template <class T>                                                                                      \
  void avg_pool2d(const PoolParams& p, const T* x, T* y);                                                 \
  template <class T>                                                                                      \
  void lp_pool2d(const PoolParams& p, const T* x, T* y);                                                  \
  /* conv2d_direct.cpp, backward: grad_y (N,K,P,Q); grad_x (N,C,H,W) and grad_w                           \
     (K,C/groups,R,S) are overwritten */                                                                  \
  template <class T>                                                                                      \
  void conv2d_direct_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x);          \
  template <class T>                                                                                      \
  void conv2d_direct_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w);        \
  /* pool2d.cpp, backward: grad_y (N,C,P,Q); grad_x (N,C,H,W) is overwritten. Max takes                   \
     the forward's indices (throws if one is outside its H*W plane); Lp takes x and the                   \
     forward's y */                                                                                       \
  template <class T>                                                                                      \
  void max_pool2d_backward(const PoolParams& p, const T* grad_y, const std::int64_t* indices, T* grad_x); \
  template <class T>                                                                                      \
  void avg_pool2d_backward(const PoolParams& p, const T* grad_y, T* grad_x);                              \
  template <class T>                                                                                      \
  void lp_pool2d_backward(const PoolParams& p, const T* grad_y, const T* x, const T* y, T* grad_x);       \
  /* pool2d.cpp, distance-weighted average: w is the (R,S) window, or (R + S) factors when                \
     p.separable; forward x -> y, backward grad_y -> grad_x (overwritten) */                              \
  template <class T>                                                                                      \
  void weighted_avg_pool2d(const PoolParams& p, const T* x, const T* w, T* y);                            \
  template <class T>                                                                                      \
  void weighted_avg_pool2d_backward(const PoolParams& p, const T* grad_y, const T* w, T* grad_x);         \
  /* peak.cpp: fp32 FMA GFLOP/s on every OpenMP thread; copy GB/s (read + write) */                       \
  double peak_fma_gflops(double seconds);                                                                 \
  double peak_copy_gbs(double seconds, index_t bytes);

namespace fastconv::cpu {
namespace scalar {
FC_PER_ISA_DECLARATIONS
}
#if defined(FC_X86)
namespace avx2 {
FC_PER_ISA_DECLARATIONS
}
namespace avx512 {
FC_PER_ISA_DECLARATIONS
}
#endif
}  // namespace fastconv::cpu

// Picks fastconv::cpu::<active isa>::fn (a function pointer of the given type).
#if defined(FC_X86)
#define FC_PICK_ISA(fn) \
  ::fastconv::pick_isa(&::fastconv::cpu::scalar::fn, &::fastconv::cpu::avx2::fn, &::fastconv::cpu::avx512::fn)
#else
#define FC_PICK_ISA(fn) (&::fastconv::cpu::scalar::fn)
#endif

// Kernels compiled once, float and double (their ISA-specific work happens inside the GEMM).
namespace fastconv::cpu {
// conv2d_im2col.cpp, forward: x (N,C,H,W), w (K,C/groups,R,S), bias (K) or null -> y (N,K,P,Q).
// prepared: w's GEMM panels (conv2d_im2col_prepared_elems<T> values) from
// conv2d_im2col_prepare, valid for the ISA active when prepared (then w is unused), or null;
// the workspace's size depends on which (prepared: whether the run gets them).
index_t conv2d_im2col_workspace_bytes(const ConvParams& p, DType dtype, bool prepared);
template <class T>
index_t conv2d_im2col_prepared_elems(const ConvParams& p);
template <class T>
void conv2d_im2col_prepare(const ConvParams& p, const T* w, T* prepared);
template <class T>
void conv2d_im2col(const ConvParams& p, const T* x, const T* w, const T* prepared, const T* bias, T* y,
                   void* workspace);
// conv2d_im2col.cpp, data gradient (GEMM + col2im): grad_y (N,K,P,Q), w (K,C/groups,R,S)
// -> grad_x (N,C,H,W).
index_t conv2d_im2col_backward_data_workspace_bytes(const ConvParams& p, DType dtype);
template <class T>
void conv2d_im2col_backward_data(const ConvParams& p, const T* grad_y, const T* w, T* grad_x,
                                 void* workspace);
// conv2d_backward_weight_gemm.cpp, the im2col algorithm's weight gradient (an implicit GEMM):
// grad_y (N,K,P,Q), x (N,C,H,W) -> grad_w (K,C/groups,R,S). The workspace is aligned for
// index_t (it holds the gathered B's row offsets).
index_t conv2d_im2col_backward_weight_workspace_bytes(const ConvParams& p, DType dtype);
template <class T>
void conv2d_im2col_backward_weight(const ConvParams& p, const T* grad_y, const T* x, T* grad_w,
                                   void* workspace);
// conv2d_backward_bias.cpp: grad_bias (K) = grad_y (N,K,P,Q) summed over N, P, Q (every
// algorithm's bias gradient; float64 sums).
template <class T>
void conv2d_backward_bias(const ConvParams& p, const T* grad_y, T* grad_bias);
// weight_transpose.cpp: the weight of the data gradient as a forward convolution:
// w (K, C/g, R, S) -> wt (C, K/g, R, S), wt[g*C/g + c][k][r][s] = w[g*K/g + k][c][R-1-r][S-1-s]
// (Cg = C/g, RS = R*S).
template <class T>
void transpose_rotate_weight(index_t K, index_t Cg, index_t groups, index_t RS, const T* w, T* wt);
}  // namespace fastconv::cpu

// conv2d_winograd.cpp, compiled once per ISA: F(m x m, 3 x 3), m = 2, 4, 6; float32.
// x (N,C,H,W), w (K,C/groups,3,3), bias (K) or null, y (N,K,P,Q); stride 1, dilation 1.
// prepared: the packed transformed kernel from conv2d_winograd_prepare (then w is unused),
// or null to transform w in the call.
#define FC_WINOGRAD_DECLARATIONS                                                                          \
  index_t conv2d_winograd_workspace_bytes(const ConvParams& p, int m, bool prepared);                     \
  index_t conv2d_winograd_prepared_bytes(const ConvParams& p, int m);                                     \
  void conv2d_winograd_prepare(const ConvParams& p, int m, const float* w, float* out);                   \
  void conv2d_winograd(const ConvParams& p, int m, const float* x, const float* w, const float* prepared, \
                       const float* bias, float* y, void* workspace);                                     \
  /* one tile through the transforms: which 0 = input, 1 = kernel, 2 = output (tests) */                  \
  void winograd_tile_transform(int m, int which, const float* in, float* out);

namespace fastconv::cpu {
namespace scalar {
FC_WINOGRAD_DECLARATIONS
}
#if defined(FC_X86)
namespace avx2 {
FC_WINOGRAD_DECLARATIONS
}
namespace avx512 {
FC_WINOGRAD_DECLARATIONS
}
#endif
}  // namespace fastconv::cpu

// conv2d_fft.cpp, compiled once per ISA: tiled FFT (overlap-save), n x n tiles, n = 8, 16;
// float32. x (N,C,H,W), w (K,C/groups,R,S) with R, S <= n-1, bias (K) or null,
// y (N,K,P,Q); stride 1, dilation 1. With `prepared`, w is conv2d_fft_prepare's output
// (the kernel spectra, conv2d_fft_prepared_bytes) and the workspace has no room for them.
#define FC_FFT_DECLARATIONS                                                                                \
  index_t conv2d_fft_workspace_bytes(const ConvParams& p, int n, bool prepared);                           \
  index_t conv2d_fft_prepared_bytes(const ConvParams& p, int n);                                           \
  void conv2d_fft_prepare(const ConvParams& p, int n, const float* w, float* prepared);                    \
  void conv2d_fft(const ConvParams& p, int n, const float* x, const float* w, const float* bias, float* y, \
                  void* workspace, bool prepared);                                                         \
  /* one tile through math/fft.h: which 0 = forward, 1 = inverse (tests) */                                \
  void fft_tile_transform(int n, int which, const float* in, float* out);

namespace fastconv::cpu {
namespace scalar {
FC_FFT_DECLARATIONS
}
#if defined(FC_X86)
namespace avx2 {
FC_FFT_DECLARATIONS
}
namespace avx512 {
FC_FFT_DECLARATIONS
}
#endif
}  // namespace fastconv::cpu
