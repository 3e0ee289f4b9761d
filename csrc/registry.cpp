// registry.cpp: the kernel table, and the boundary every call from Python goes through
// (run, prepare, workspace_bytes): the checks every problem and tensor pass before a kernel
// sees them (Python validates first; this is the second line of defence), and the device's
// setup (the CPU backend's team size) before the kernel runs.
#include "registry.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "cpu/backend.h"
#include "cpu/kernels.h"
#include "cpu/tiled_conv2d.h"
#include "cpu_features.h"
#if FASTCONV_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace fastconv {

const char* op_name(Op op) {
  switch (op) {
    case Op::conv2d_forward: return "conv2d_forward";
    case Op::max_pool2d_forward: return "max_pool2d_forward";
    case Op::avg_pool2d_forward: return "avg_pool2d_forward";
    case Op::lp_pool2d_forward: return "lp_pool2d_forward";
    case Op::conv2d_backward_data: return "conv2d_backward_data";
    case Op::conv2d_backward_weight: return "conv2d_backward_weight";
    case Op::max_pool2d_backward: return "max_pool2d_backward";
    case Op::avg_pool2d_backward: return "avg_pool2d_backward";
    case Op::lp_pool2d_backward: return "lp_pool2d_backward";
    case Op::weighted_avg_pool2d_forward: return "weighted_avg_pool2d_forward";
    case Op::weighted_avg_pool2d_backward: return "weighted_avg_pool2d_backward";
    case Op::tiled_conv2d_forward: return "tiled_conv2d_forward";
    case Op::tiled_conv2d_backward_data: return "tiled_conv2d_backward_data";
    case Op::tiled_conv2d_backward_weight: return "tiled_conv2d_backward_weight";
  }
  return "?";
}

namespace {

bool mul_overflows(index_t a, index_t b) { return a != 0 && b > std::numeric_limits<index_t>::max() / a; }

index_t checked_count(std::initializer_list<index_t> dims, const char* what) {
  index_t n = 1;
  for (index_t d : dims) {
    FC_CHECK(!mul_overflows(n, d), what, " has more elements than int64 can index");
    n *= d;
  }
  return n;
}

}  // namespace

void check_conv_params(const ConvParams& p) {
  FC_CHECK(p.N >= 0 && p.C > 0 && p.H > 0 && p.W > 0, "input shape (", p.N, ", ", p.C, ", ", p.H, ", ", p.W,
           ") must have N >= 0 and C, H, W > 0");
  FC_CHECK(p.K > 0 && p.R > 0 && p.S > 0, "weight shape needs K, R, S > 0 (got K=", p.K, ", R=", p.R,
           ", S=", p.S, ")");
  FC_CHECK(p.groups > 0 && p.C % p.groups == 0 && p.K % p.groups == 0, "groups=", p.groups,
           " must divide C=", p.C, " and K=", p.K);
  FC_CHECK(p.stride_h > 0 && p.stride_w > 0, "stride must be positive (got ", p.stride_h, ", ", p.stride_w,
           ")");
  FC_CHECK(p.dil_h > 0 && p.dil_w > 0, "dilation must be positive (got ", p.dil_h, ", ", p.dil_w, ")");
  FC_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "padding must be non-negative (got ", p.pad_h, ", ", p.pad_w, ")");
  FC_CHECK(p.P > 0 && p.Q > 0, "output size must be positive (got P=", p.P, ", Q=", p.Q, ")");
  // Any P, Q >= 1 is a computable problem: rows and columns past the input read the
  // implied bottom/right padding (zeros), as with torch.nn.functional.pad + conv2d.
  checked_count({p.N, p.C, p.H, p.W}, "input");
  checked_count({p.N, p.K, p.P, p.Q}, "output");
  FC_CHECK(p.tiles_h > 0 && p.tiles_w > 0 && p.tiles_h <= p.P && p.tiles_w <= p.Q, "tiles (", p.tiles_h, ", ",
           p.tiles_w, ") must be positive and at most the output size (", p.P, ", ", p.Q, ")");
  checked_count({p.tiles_h, p.tiles_w, p.K, p.C_per_group(), p.R, p.S}, "weight");
  checked_count({p.N, p.C, p.R, p.S, p.P, p.Q}, "unrolled input");
  // Workspaces hold unrolled images (C*R*S*P*Q values of up to 8 bytes) for a batch or for
  // each thread: their sizes in bytes, for any batch or thread count up to kMaxTeam, fit int64
  // too, so no workspace_bytes() can wrap around to a size that a kernel would overrun.
  constexpr index_t kMaxTeam = 4096;
  checked_count({std::max(p.N, kMaxTeam), p.C, p.R, p.S, p.P, p.Q, 8}, "unrolled input in bytes");
}

void check_pool_params(const PoolParams& p) {
  FC_CHECK(p.N >= 0 && p.C > 0 && p.H > 0 && p.W > 0, "input shape (", p.N, ", ", p.C, ", ", p.H, ", ", p.W,
           ") must have N >= 0 and C, H, W > 0");
  FC_CHECK(p.P > 0 && p.Q > 0, "output size must be positive (got P=", p.P, ", Q=", p.Q, ")");
  if (!p.adaptive) {
    FC_CHECK(p.R > 0 && p.S > 0, "kernel_size must be positive (got ", p.R, ", ", p.S, ")");
    FC_CHECK(p.stride_h > 0 && p.stride_w > 0, "stride must be positive (got ", p.stride_h, ", ", p.stride_w,
             ")");
    FC_CHECK(p.dil_h > 0 && p.dil_w > 0, "dilation must be positive (got ", p.dil_h, ", ", p.dil_w, ")");
    const index_t eff_r = p.dil_h * (p.R - 1) + 1, eff_s = p.dil_w * (p.S - 1) + 1;
    FC_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= eff_r && 2 * p.pad_w <= eff_s, "padding (",
             p.pad_h, ", ", p.pad_w, ") must be >= 0 and at most half the effective kernel (", eff_r, ", ",
             eff_s, ")");
    FC_CHECK((p.P - 1) * p.stride_h - p.pad_h < p.H && (p.Q - 1) * p.stride_w - p.pad_w < p.W,
             "output size (", p.P, ", ", p.Q, ") has windows starting past the input");
  }
  // torch accepts any non-zero norm_type (negative, +-inf); only 0 divides by zero.
  FC_CHECK(p.norm_type != 0, "norm_type must be non-zero (got ", p.norm_type, ")");
  checked_count({p.N, p.C, p.H, p.W}, "input");
  checked_count({p.N, p.C, p.P, p.Q}, "output");
}

namespace {

template <class T>
const T* cp(const void* p) {
  return static_cast<const T*>(p);
}
template <class T>
T* mp(void* p) {
  return static_cast<T*>(p);
}

std::string any_conv(const Problem& pr) { return pr.op == Op::conv2d_forward ? "" : "not a convolution"; }

// ---- direct -------------------------------------------------------------------
index_t direct_ws(const Problem& pr, const ExecContext&) {
  return FC_PICK_ISA(conv2d_direct_workspace_bytes)(pr.conv, pr.dtype);
}
void direct_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(conv2d_direct<float>)(pr.conv, cp<float>(t.x), cp<float>(t.w), cp<float>(t.bias),
                                      mp<float>(t.y), t.workspace);
  else
    FC_PICK_ISA(conv2d_direct<double>)(pr.conv, cp<double>(t.x), cp<double>(t.w), cp<double>(t.bias),
                                       mp<double>(t.y), t.workspace);
}

// ---- im2col + GEMM --------------------------------------------------------------
index_t im2col_ws(const Problem& pr, const ExecContext&) {
  return cpu::conv2d_im2col_workspace_bytes(pr.conv, pr.dtype, pr.prepared);
}
template <class T>
void im2col_run_t(const Problem& pr, const Tensors& t) {
  const T* w = cp<T>(t.w);
  cpu::conv2d_im2col<T>(pr.conv, cp<T>(t.x), pr.prepared ? nullptr : w, pr.prepared ? w : nullptr,
                        cp<T>(t.bias), mp<T>(t.y), t.workspace);
}
void im2col_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    im2col_run_t<float>(pr, t);
  else
    im2col_run_t<double>(pr, t);
}
index_t im2col_prepared_bytes(const Problem& pr) {
  return pr.dtype == DType::f32 ? cpu::conv2d_im2col_prepared_elems<float>(pr.conv) * 4
                                : cpu::conv2d_im2col_prepared_elems<double>(pr.conv) * 8;
}
void im2col_prepare(const Problem& pr, const void* w, void* out, const ExecContext&) {
  if (pr.dtype == DType::f32)
    cpu::conv2d_im2col_prepare<float>(pr.conv, cp<float>(w), mp<float>(out));
  else
    cpu::conv2d_im2col_prepare<double>(pr.conv, cp<double>(w), mp<double>(out));
}

// ---- backward (direct and im2col) -----------------------------------------------------
std::string any_conv_backward(const Problem& pr) {
  return pr.op == Op::conv2d_backward_data || pr.op == Op::conv2d_backward_weight
             ? ""
             : "not a convolution backward";
}
void backward_bias(const Problem& pr, const Tensors& t) {
  if (!t.grad_bias) return;
  if (pr.dtype == DType::f32)
    cpu::conv2d_backward_bias<float>(pr.conv, cp<float>(t.grad_y), mp<float>(t.grad_bias));
  else
    cpu::conv2d_backward_bias<double>(pr.conv, cp<double>(t.grad_y), mp<double>(t.grad_bias));
}
void direct_data_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(conv2d_direct_backward_data<float>)(pr.conv, cp<float>(t.grad_y), cp<float>(t.w),
                                                    mp<float>(t.grad_x));
  else
    FC_PICK_ISA(conv2d_direct_backward_data<double>)(pr.conv, cp<double>(t.grad_y), cp<double>(t.w),
                                                     mp<double>(t.grad_x));
}
void direct_weight_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (t.grad_w) {
    if (pr.dtype == DType::f32)
      FC_PICK_ISA(conv2d_direct_backward_weight<float>)(pr.conv, cp<float>(t.grad_y), cp<float>(t.x),
                                                        mp<float>(t.grad_w));
    else
      FC_PICK_ISA(conv2d_direct_backward_weight<double>)(pr.conv, cp<double>(t.grad_y), cp<double>(t.x),
                                                         mp<double>(t.grad_w));
  }
  backward_bias(pr, t);
}
index_t im2col_data_ws(const Problem& pr, const ExecContext&) {
  return cpu::conv2d_im2col_backward_data_workspace_bytes(pr.conv, pr.dtype);
}
void im2col_data_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    cpu::conv2d_im2col_backward_data<float>(pr.conv, cp<float>(t.grad_y), cp<float>(t.w), mp<float>(t.grad_x),
                                            t.workspace);
  else
    cpu::conv2d_im2col_backward_data<double>(pr.conv, cp<double>(t.grad_y), cp<double>(t.w),
                                             mp<double>(t.grad_x), t.workspace);
}
index_t im2col_weight_ws(const Problem& pr, const ExecContext&) {
  return cpu::conv2d_im2col_backward_weight_workspace_bytes(pr.conv, pr.dtype);
}
void im2col_weight_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (t.grad_w) {
    if (pr.dtype == DType::f32)
      cpu::conv2d_im2col_backward_weight<float>(pr.conv, cp<float>(t.grad_y), cp<float>(t.x),
                                                mp<float>(t.grad_w), t.workspace);
    else
      cpu::conv2d_im2col_backward_weight<double>(pr.conv, cp<double>(t.grad_y), cp<double>(t.x),
                                                 mp<double>(t.grad_w), t.workspace);
  }
  backward_bias(pr, t);
}

// ---- Winograd F(m x m, 3 x 3) --------------------------------------------------------
std::string winograd_supports(const Problem& pr) {
  if (pr.op != Op::conv2d_forward) return "not a convolution";
  const ConvParams& p = pr.conv;
  if (p.R != 3 || p.S != 3 || p.stride_h != 1 || p.stride_w != 1 || p.dil_h != 1 || p.dil_w != 1)
    return str_cat("winograd supports only 3x3 kernels with stride 1 and dilation 1 (got kernel ", p.R, "x",
                   p.S, ", stride (", p.stride_h, ", ", p.stride_w, "), dilation (", p.dil_h, ", ", p.dil_w,
                   "))");
  if (pr.dtype != DType::f32)
    return str_cat("winograd supports only float32 (got ", dtype_name(pr.dtype),
                   "; float64 runs with direct, im2col or reference)");
  return "";
}
template <int M>
index_t winograd_ws(const Problem& pr, const ExecContext&) {
  return FC_PICK_ISA(conv2d_winograd_workspace_bytes)(pr.conv, M, pr.prepared);
}
template <int M>
void winograd_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  const float* w = cp<float>(t.w);
  FC_PICK_ISA(conv2d_winograd)(pr.conv, M, cp<float>(t.x), pr.prepared ? nullptr : w,
                               pr.prepared ? w : nullptr, cp<float>(t.bias), mp<float>(t.y), t.workspace);
}
template <int M>
index_t winograd_prepared_bytes(const Problem& pr) {
  return FC_PICK_ISA(conv2d_winograd_prepared_bytes)(pr.conv, M);
}
template <int M>
void winograd_prepare(const Problem& pr, const void* w, void* out, const ExecContext&) {
  FC_PICK_ISA(conv2d_winograd_prepare)(pr.conv, M, cp<float>(w), mp<float>(out));
}

// ---- FFT (overlap-save), n x n tiles ------------------------------------------------------
template <int N>
std::string fft_supports(const Problem& pr) {
  if (pr.op != Op::conv2d_forward) return "not a convolution";
  const ConvParams& p = pr.conv;
  if (p.stride_h != 1 || p.stride_w != 1 || p.dil_h != 1 || p.dil_w != 1)
    return str_cat("fft supports only stride 1 and dilation 1 (got stride (", p.stride_h, ", ", p.stride_w,
                   "), dilation (", p.dil_h, ", ", p.dil_w, "))");
  if (p.R > N - 1 || p.S > N - 1)
    return str_cat("fft:", N, " supports kernels up to ", N - 1, "x", N - 1, " (got kernel ", p.R, "x", p.S,
                   (N == 8 && p.R <= 15 && p.S <= 15 ? "; fft:16 takes up to 15x15)" : ")"));
  if (pr.dtype != DType::f32)
    return str_cat("fft supports only float32 (got ", dtype_name(pr.dtype),
                   "; float64 runs with direct, im2col or reference)");
  return "";
}
template <int N>
index_t fft_ws(const Problem& pr, const ExecContext&) {
  return FC_PICK_ISA(conv2d_fft_workspace_bytes)(pr.conv, N, pr.prepared);
}
template <int N>
void fft_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  FC_PICK_ISA(conv2d_fft)(pr.conv, N, cp<float>(t.x), cp<float>(t.w), cp<float>(t.bias), mp<float>(t.y),
                          t.workspace, pr.prepared);
}
template <int N>
index_t fft_prepared_bytes(const Problem& pr) {
  return FC_PICK_ISA(conv2d_fft_prepared_bytes)(pr.conv, N);
}
template <int N>
void fft_prepare(const Problem& pr, const void* w, void* out, const ExecContext&) {
  FC_PICK_ISA(conv2d_fft_prepare)(pr.conv, N, cp<float>(w), mp<float>(out));
}

// ---- pooling --------------------------------------------------------------------
std::string pool_supports(const Problem&) { return ""; }
std::string weighted_pool_supports(const Problem& pr) {
  const PoolParams& p = pr.pool;
  if (p.adaptive || p.dil_h != 1 || p.dil_w != 1 || p.divisor_override != 0)
    return "weighted average pooling takes no adaptive windows, dilation or divisor_override";
  return "";
}
index_t no_ws(const Problem&, const ExecContext&) { return 0; }
void max_pool_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(max_pool2d<float>)(pr.pool, cp<float>(t.x), mp<float>(t.y), t.indices);
  else
    FC_PICK_ISA(max_pool2d<double>)(pr.pool, cp<double>(t.x), mp<double>(t.y), t.indices);
}
void avg_pool_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(avg_pool2d<float>)(pr.pool, cp<float>(t.x), mp<float>(t.y));
  else
    FC_PICK_ISA(avg_pool2d<double>)(pr.pool, cp<double>(t.x), mp<double>(t.y));
}
void lp_pool_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(lp_pool2d<float>)(pr.pool, cp<float>(t.x), mp<float>(t.y));
  else
    FC_PICK_ISA(lp_pool2d<double>)(pr.pool, cp<double>(t.x), mp<double>(t.y));
}
void max_pool_backward_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(max_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), t.indices, mp<float>(t.grad_x));
  else
    FC_PICK_ISA(max_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), t.indices, mp<double>(t.grad_x));
}
void avg_pool_backward_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(avg_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), mp<float>(t.grad_x));
  else
    FC_PICK_ISA(avg_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), mp<double>(t.grad_x));
}
void lp_pool_backward_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(lp_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), cp<float>(t.x), cp<float>(t.y),
                                           mp<float>(t.grad_x));
  else
    FC_PICK_ISA(lp_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), cp<double>(t.x), cp<double>(t.y),
                                            mp<double>(t.grad_x));
}
void weighted_avg_pool_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(weighted_avg_pool2d<float>)(pr.pool, cp<float>(t.x), cp<float>(t.w), mp<float>(t.y));
  else
    FC_PICK_ISA(weighted_avg_pool2d<double>)(pr.pool, cp<double>(t.x), cp<double>(t.w), mp<double>(t.y));
}
void weighted_avg_pool_backward_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(weighted_avg_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), cp<float>(t.w),
                                                     mp<float>(t.grad_x));
  else
    FC_PICK_ISA(weighted_avg_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), cp<double>(t.w),
                                                      mp<double>(t.grad_x));
}

// ---- tiled / locally connected convolution -------------------------------------------------
std::string tiled_supports(const Problem& pr) {
  return pr.op == Op::tiled_conv2d_forward || pr.op == Op::tiled_conv2d_backward_data ||
                 pr.op == Op::tiled_conv2d_backward_weight
             ? ""
             : "not a tiled convolution";
}
void tiled_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(tiled_conv2d<float>)(pr.conv, cp<float>(t.x), cp<float>(t.w), cp<float>(t.bias),
                                     mp<float>(t.y));
  else
    FC_PICK_ISA(tiled_conv2d<double>)(pr.conv, cp<double>(t.x), cp<double>(t.w), cp<double>(t.bias),
                                      mp<double>(t.y));
}
index_t tiled_data_ws(const Problem& pr, const ExecContext&) {
  return FC_PICK_ISA(tiled_conv2d_backward_data_workspace_bytes)(pr.conv, pr.dtype);
}
void tiled_data_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(tiled_conv2d_backward_data<float>)(pr.conv, cp<float>(t.grad_y), cp<float>(t.w),
                                                   mp<float>(t.grad_x), t.workspace);
  else
    FC_PICK_ISA(tiled_conv2d_backward_data<double>)(pr.conv, cp<double>(t.grad_y), cp<double>(t.w),
                                                    mp<double>(t.grad_x), t.workspace);
}
void tiled_weight_run(const Problem& pr, const Tensors& t, const ExecContext&) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(tiled_conv2d_backward_weight<float>)(pr.conv, cp<float>(t.grad_y), cp<float>(t.x),
                                                     mp<float>(t.grad_w), mp<float>(t.grad_bias));
  else
    FC_PICK_ISA(tiled_conv2d_backward_weight<double>)(pr.conv, cp<double>(t.grad_y), cp<double>(t.x),
                                                      mp<double>(t.grad_w), mp<double>(t.grad_bias));
}

}  // namespace

const std::vector<Kernel>& kernel_table() {
  static const std::vector<Kernel> table = {
      // algorithm  op  device  supports  workspace  run  [prepared_bytes  prepare]
      {"direct", Op::conv2d_forward, Device::cpu, any_conv, direct_ws, direct_run},
      {"im2col", Op::conv2d_forward, Device::cpu, any_conv, im2col_ws, im2col_run, im2col_prepared_bytes,
       im2col_prepare},
      {"winograd:2", Op::conv2d_forward, Device::cpu, winograd_supports, winograd_ws<2>, winograd_run<2>,
       winograd_prepared_bytes<2>, winograd_prepare<2>},
      {"winograd:4", Op::conv2d_forward, Device::cpu, winograd_supports, winograd_ws<4>, winograd_run<4>,
       winograd_prepared_bytes<4>, winograd_prepare<4>},
      {"winograd:6", Op::conv2d_forward, Device::cpu, winograd_supports, winograd_ws<6>, winograd_run<6>,
       winograd_prepared_bytes<6>, winograd_prepare<6>},
      {"fft:8", Op::conv2d_forward, Device::cpu, fft_supports<8>, fft_ws<8>, fft_run<8>,
       fft_prepared_bytes<8>, fft_prepare<8>},
      {"fft:16", Op::conv2d_forward, Device::cpu, fft_supports<16>, fft_ws<16>, fft_run<16>,
       fft_prepared_bytes<16>, fft_prepare<16>},
      {"direct", Op::max_pool2d_forward, Device::cpu, pool_supports, no_ws, max_pool_run},
      {"direct", Op::avg_pool2d_forward, Device::cpu, pool_supports, no_ws, avg_pool_run},
      {"direct", Op::lp_pool2d_forward, Device::cpu, pool_supports, no_ws, lp_pool_run},
      {"direct", Op::conv2d_backward_data, Device::cpu, any_conv_backward, no_ws, direct_data_run},
      {"im2col", Op::conv2d_backward_data, Device::cpu, any_conv_backward, im2col_data_ws, im2col_data_run},
      {"direct", Op::conv2d_backward_weight, Device::cpu, any_conv_backward, no_ws, direct_weight_run},
      {"im2col", Op::conv2d_backward_weight, Device::cpu, any_conv_backward, im2col_weight_ws,
       im2col_weight_run},
      {"direct", Op::max_pool2d_backward, Device::cpu, pool_supports, no_ws, max_pool_backward_run},
      {"direct", Op::avg_pool2d_backward, Device::cpu, pool_supports, no_ws, avg_pool_backward_run},
      {"direct", Op::lp_pool2d_backward, Device::cpu, pool_supports, no_ws, lp_pool_backward_run},
      {"direct", Op::weighted_avg_pool2d_forward, Device::cpu, weighted_pool_supports, no_ws,
       weighted_avg_pool_run},
      {"direct", Op::weighted_avg_pool2d_backward, Device::cpu, weighted_pool_supports, no_ws,
       weighted_avg_pool_backward_run},
      {"direct", Op::tiled_conv2d_forward, Device::cpu, tiled_supports, no_ws, tiled_run},
      {"direct", Op::tiled_conv2d_backward_data, Device::cpu, tiled_supports, tiled_data_ws, tiled_data_run},
      {"direct", Op::tiled_conv2d_backward_weight, Device::cpu, tiled_supports, no_ws, tiled_weight_run},
#if FASTCONV_WITH_CUDA
      // CUDA (csrc/cuda/; in fastconv._cuda_emu the same source on the SIMT emulator).
      {"direct", Op::conv2d_forward, Device::cuda, cuda::conv2d_direct_supports,
       cuda::conv2d_direct_workspace_bytes, cuda::conv2d_direct_forward},
      {"im2col", Op::conv2d_forward, Device::cuda, cuda::conv2d_im2col_supports,
       cuda::conv2d_im2col_workspace_bytes, cuda::conv2d_im2col_forward},
      {"direct", Op::max_pool2d_forward, Device::cuda, pool_supports, no_ws, cuda::max_pool2d_forward},
      {"direct", Op::avg_pool2d_forward, Device::cuda, pool_supports, no_ws, cuda::avg_pool2d_forward},
      {"direct", Op::lp_pool2d_forward, Device::cuda, pool_supports, no_ws, cuda::lp_pool2d_forward},
      {"direct", Op::conv2d_backward_data, Device::cuda, cuda::conv2d_direct_supports,
       cuda::conv2d_direct_workspace_bytes, cuda::conv2d_direct_backward_data},
      {"im2col", Op::conv2d_backward_data, Device::cuda, cuda::conv2d_im2col_supports,
       cuda::conv2d_im2col_workspace_bytes, cuda::conv2d_im2col_backward_data},
      {"direct", Op::conv2d_backward_weight, Device::cuda, cuda::conv2d_direct_supports,
       cuda::conv2d_direct_workspace_bytes, cuda::conv2d_direct_backward_weight},
      {"im2col", Op::conv2d_backward_weight, Device::cuda, cuda::conv2d_im2col_supports,
       cuda::conv2d_im2col_workspace_bytes, cuda::conv2d_im2col_backward_weight},
      {"direct", Op::max_pool2d_backward, Device::cuda, pool_supports, no_ws, cuda::max_pool2d_backward},
      {"direct", Op::avg_pool2d_backward, Device::cuda, pool_supports, no_ws, cuda::avg_pool2d_backward},
      {"direct", Op::lp_pool2d_backward, Device::cuda, pool_supports, no_ws, cuda::lp_pool2d_backward},
      {"direct", Op::weighted_avg_pool2d_forward, Device::cuda, weighted_pool_supports, no_ws,
       cuda::weighted_avg_pool2d_forward},
      {"direct", Op::weighted_avg_pool2d_backward, Device::cuda, weighted_pool_supports, no_ws,
       cuda::weighted_avg_pool2d_backward},
      {"direct", Op::tiled_conv2d_forward, Device::cuda, tiled_supports, no_ws, cuda::tiled_conv2d_forward},
      {"direct", Op::tiled_conv2d_backward_data, Device::cuda, tiled_supports, no_ws,
       cuda::tiled_conv2d_backward_data},
      {"direct", Op::tiled_conv2d_backward_weight, Device::cuda, tiled_supports, no_ws,
       cuda::tiled_conv2d_backward_weight},
#endif
  };
  return table;
}

const Kernel* find_kernel(Op op, std::string_view algorithm, Device device) {
  for (const Kernel& k : kernel_table())
    if (k.op == op && k.device == device && algorithm == k.algorithm) return &k;
  std::string known;  // the error names the rows there are
  for (const Kernel& k : kernel_table())
    if (k.op == op && k.device == device) known += (known.empty() ? "" : ", ") + std::string(k.algorithm);
  FC_CHECK(false, "no ", device_name(device), " kernel '", algorithm, "' for ", op_name(op),
           " (have: ", known.empty() ? "none" : known, ")");
  return nullptr;
}

// ---- the boundary ----------------------------------------------------------------------------

Op op_from_name(std::string_view name) {
  for (int i = 0; i <= int(kLastOp); ++i)
    if (name == op_name(Op(i))) return Op(i);
  FC_CHECK(false, "unknown op '", name, "'");
  return Op::conv2d_forward;
}

Device device_from_name(std::string_view name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  FC_CHECK(false, "unknown device '", name, "'; expected 'cpu' or 'cuda'");
  return Device::cpu;
}

DType dtype_from_name(std::string_view name) {
  if (name == "float32") return DType::f32;
  if (name == "float64") return DType::f64;
  throw dtype_error(str_cat("fastconv: dtype '", name, "' is not supported; supported: float32, float64"));
}

namespace {

bool is_tiled(Op op) {
  return op == Op::tiled_conv2d_forward || op == Op::tiled_conv2d_backward_data ||
         op == Op::tiled_conv2d_backward_weight;
}

bool is_conv(Op op) {
  return op == Op::conv2d_forward || op == Op::conv2d_backward_data || op == Op::conv2d_backward_weight ||
         is_tiled(op);
}

void check_params(const Problem& pr) {
  if (is_conv(pr.op)) {
    check_conv_params(pr.conv);
    FC_CHECK(is_tiled(pr.op) || (pr.conv.tiles_h == 1 && pr.conv.tiles_w == 1), op_name(pr.op),
             " takes tiles 1 x 1 (got ", pr.conv.tiles_h, " x ", pr.conv.tiles_w,
             "); tiled_conv2d_* take more");
    FC_CHECK(is_tiled(pr.op) || !pr.conv.channel_bias, op_name(pr.op),
             " takes no channel_bias (its bias is always per channel); only tiled_conv2d_* take it");
  } else {
    check_pool_params(pr.pool);
  }
}

// The kernel of (op, algorithm, device) after checking the problem and that the kernel can
// run it (and, for a plan, that it has a prepared form).
const Kernel& kernel_for(const Problem& pr, std::string_view algorithm, Device device) {
  check_params(pr);
  const Kernel& k = *find_kernel(pr.op, algorithm, device);
  const std::string why = k.supports(pr);
  FC_CHECK(why.empty(), "algorithm '", algorithm, "' cannot run this problem: ", why);
  FC_CHECK(!pr.prepared || k.prepare, "algorithm '", algorithm, "' has no prepared weights");
  return k;
}

// Makes ctx's device current for the calling thread (CPU: the OpenMP team size; CUDA: the
// device index).
void enter(const ExecContext& ctx) {
  if (ctx.device == Device::cpu) return cpu::enter(ctx);
#if FASTCONV_WITH_CUDA
  if (ctx.device == Device::cuda) return cuda::enter(ctx);
#endif
  FC_CHECK(false, "this build of fastconv has no ", device_name(ctx.device), " backend");
}

// Workspaces, like NumPy's and malloc's buffers, start on 16 bytes: kernels may use aligned
// 128-bit accesses on them.
constexpr std::uintptr_t kWorkspaceAlign = 16;

// The dtype a call computes in, from its first input: float32 or float64, else dtype_error.
DType compute_dtype(const TensorDesc& d, const char* name) {
  if (d.dtype != DType::f32 && d.dtype != DType::f64)
    throw dtype_error(
        str_cat("fastconv: ", name, " has dtype ", dtype_name(d.dtype), "; supported: float32, float64"));
  return d.dtype;
}

// Checks one descriptor against what the op expects; returns its pointer (null when the
// tensor is optional and absent).
void* checked(const TensorDesc& d, const char* name, DType dtype, std::initializer_list<index_t> shape,
              bool writable, bool required, const ExecContext& ctx) {
  if (!d.present) {
    FC_CHECK(!required, name, " is required");
    return nullptr;
  }
  if (d.dtype != dtype)
    throw dtype_error(
        str_cat("fastconv: ", name, " has dtype ", dtype_name(d.dtype), ", expected ", dtype_name(dtype)));
  FC_CHECK(d.device == ctx.device && d.device_index == ctx.device_index, name, " is on ",
           device_name(d.device), ":", d.device_index, " but the call runs on ", device_name(ctx.device), ":",
           ctx.device_index);
  FC_CHECK(d.ndim == int(shape.size()), name, " must have ", shape.size(), " dimensions, got ", d.ndim);
  int i = 0;
  for (index_t want : shape) {
    FC_CHECK(d.shape[i] == want, name, " dimension ", i, " is ", d.shape[i], ", expected ", want);
    ++i;
  }
  FC_CHECK(d.contiguous(), name, " must be C-contiguous");
  FC_CHECK(!writable || d.writable, name, " must be writable");
  FC_CHECK(d.numel() == 0 || reinterpret_cast<std::uintptr_t>(d.data) % dtype_size(dtype) == 0, name,
           " is not aligned to its ", dtype_size(dtype), "-byte elements");
  return d.data;
}

}  // namespace

std::string supports(const Problem& pr, std::string_view algorithm, Device device) {
  return find_kernel(pr.op, algorithm, device)->supports(pr);
}

index_t workspace_bytes(const Problem& pr, std::string_view algorithm, const ExecContext& ctx) {
  check_params(pr);
  const Kernel& k = *find_kernel(pr.op, algorithm, ctx.device);
  FC_CHECK(!pr.prepared || k.prepare, "algorithm '", algorithm, "' has no prepared weights");
  // CPU workspaces are sized for the team that will run the kernel; a CUDA workspace depends
  // on the problem only, so explain() and the tests can size it on a machine without a GPU.
  if (ctx.device == Device::cpu) enter(ctx);
  return k.workspace_bytes(pr, ctx);
}

index_t prepared_bytes(const Problem& pr, std::string_view algorithm, Device device) {
  const Kernel& k = kernel_for(pr, algorithm, device);
  return k.prepare ? k.prepared_bytes(pr) : 0;
}

void prepare(Problem pr, std::string_view algorithm, const ExecContext& ctx, const TensorDesc& w,
             const TensorDesc& out) {
  FC_CHECK(pr.op == Op::conv2d_forward && !pr.prepared, "prepare takes a conv2d_forward problem");
  FC_CHECK(w.present && out.present, "prepare needs the weight and out");
  pr.dtype = compute_dtype(w, "weight");
  const Kernel& k = kernel_for(pr, algorithm, ctx.device);
  FC_CHECK(k.prepare, "algorithm '", algorithm, "' has no prepared weights");
  const ConvParams& p = pr.conv;
  const void* wp = checked(w, "weight", pr.dtype, {p.K, p.C_per_group(), p.R, p.S}, false, true, ctx);
  void* op = checked(out, "out", pr.dtype, {k.prepared_bytes(pr) / dtype_size(pr.dtype)}, true, true, ctx);
  enter(ctx);
  k.prepare(pr, wp, op, ctx);
}

namespace {

bool is_backward(Op op) {
  return op == Op::conv2d_backward_data || op == Op::conv2d_backward_weight ||
         op == Op::tiled_conv2d_backward_data || op == Op::tiled_conv2d_backward_weight ||
         op == Op::max_pool2d_backward || op == Op::avg_pool2d_backward || op == Op::lp_pool2d_backward ||
         op == Op::weighted_avg_pool2d_backward;
}

// The tensors of one call, checked slot by slot; remembers which slots the op read, so that a
// tensor passed in a slot the op does not take is an error rather than silently ignored.
class Slots {
 public:
  Slots(const TensorArgs& a, DType dtype, const ExecContext& ctx) : a_(a), dtype_(dtype), ctx_(ctx) {}

  const void* in(const TensorDesc TensorArgs::* slot, const char* name, std::initializer_list<index_t> shape,
                 bool required = true) {
    return take(slot, name, shape, false, required, dtype_);
  }
  void* out(const TensorDesc TensorArgs::* slot, const char* name, std::initializer_list<index_t> shape,
            bool required = true) {
    return take(slot, name, shape, true, required, dtype_);
  }
  std::int64_t* indices(std::initializer_list<index_t> shape, bool writable, bool required) {
    return static_cast<std::int64_t*>(
        take(&TensorArgs::indices, "indices", shape, writable, required, DType::i64));
  }
  // Throws if the caller gave a tensor that no in()/out()/indices() call read.
  void check_no_others(Op op) const {
    static constexpr std::pair<const TensorDesc TensorArgs::*, const char*> kAll[] = {
        {&TensorArgs::x, "x"},
        {&TensorArgs::w, "w"},
        {&TensorArgs::bias, "bias"},
        {&TensorArgs::y, "y"},
        {&TensorArgs::indices, "indices"},
        {&TensorArgs::grad_y, "grad_y"},
        {&TensorArgs::grad_x, "grad_x"},
        {&TensorArgs::grad_w, "grad_w"},
        {&TensorArgs::grad_bias, "grad_bias"}};
    for (const auto& [slot, name] : kAll) {
      bool read = false;
      for (int i = 0; i < taken_; ++i) read = read || taken_slots_[i] == slot;
      FC_CHECK(read || !(a_.*slot).present, op_name(op), " takes no tensor '", name, "'");
    }
  }

 private:
  void* take(const TensorDesc TensorArgs::* slot, const char* name, std::initializer_list<index_t> shape,
             bool writable, bool required, DType dtype) {
    taken_slots_[taken_++] = slot;
    return checked(a_.*slot, name, dtype, shape, writable, required, ctx_);
  }
  const TensorArgs& a_;
  DType dtype_;
  const ExecContext& ctx_;
  const TensorDesc TensorArgs::* taken_slots_[9] = {};
  int taken_ = 0;
};

}  // namespace

void run(Problem pr, std::string_view algorithm, const ExecContext& ctx, const TensorArgs& a,
         const TensorDesc& workspace) {
  const bool backward = is_backward(pr.op);
  const TensorDesc& first = backward ? a.grad_y : a.x;
  const char* first_name = backward ? "grad_y" : "x";
  FC_CHECK(first.present, op_name(pr.op), " needs ", first_name);
  pr.dtype = compute_dtype(first, first_name);
  const Kernel& k = kernel_for(pr, algorithm, ctx.device);
  Slots s(a, pr.dtype, ctx);
  Tensors t;
  bool needs_workspace = true, skip_empty_batch = true;
  if (is_conv(pr.op)) {
    const ConvParams& p = pr.conv;
    const auto x_shape = {p.N, p.C, p.H, p.W}, y_shape = {p.N, p.K, p.P, p.Q},
               w_shape = {p.K, p.C_per_group(), p.R, p.S};
    const auto tw_shape = {p.tiles_h, p.tiles_w, p.K, p.C_per_group(), p.R, p.S},
               tb_shape = {p.tiles_h, p.tiles_w, p.K}, channel_shape = {p.K};
    switch (pr.op) {
      case Op::tiled_conv2d_forward:
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.w = s.in(&TensorArgs::w, "weight", tw_shape);
        t.bias = s.in(&TensorArgs::bias, "bias", p.channel_bias ? channel_shape : tb_shape, false);
        t.y = s.out(&TensorArgs::y, "y", y_shape);
        break;
      case Op::tiled_conv2d_backward_data:
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.w = s.in(&TensorArgs::w, "weight", tw_shape);
        t.grad_x = s.out(&TensorArgs::grad_x, "grad_x", x_shape);
        break;
      case Op::tiled_conv2d_backward_weight:
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.grad_w = s.out(&TensorArgs::grad_w, "grad_w", tw_shape, false);
        t.grad_bias =
            s.out(&TensorArgs::grad_bias, "grad_bias", p.channel_bias ? channel_shape : tb_shape, false);
        FC_CHECK(t.grad_w || t.grad_bias, "tiled_conv2d_backward_weight needs grad_w, grad_bias or both");
        needs_workspace = false;
        skip_empty_batch = false;  // N == 0 runs too: the gradients are then zero
        break;
      case Op::conv2d_forward:
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        if (pr.prepared)
          t.w = s.in(&TensorArgs::w, "prepared weight", {k.prepared_bytes(pr) / dtype_size(pr.dtype)});
        else
          t.w = s.in(&TensorArgs::w, "weight", w_shape);
        t.bias = s.in(&TensorArgs::bias, "bias", {p.K}, false);
        t.y = s.out(&TensorArgs::y, "y", y_shape);
        break;
      case Op::conv2d_backward_data:
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.w = s.in(&TensorArgs::w, "weight", w_shape);
        t.grad_x = s.out(&TensorArgs::grad_x, "grad_x", x_shape);
        break;
      default:  // conv2d_backward_weight
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.grad_w = s.out(&TensorArgs::grad_w, "grad_w", w_shape, false);
        t.grad_bias = s.out(&TensorArgs::grad_bias, "grad_bias", {p.K}, false);
        FC_CHECK(t.grad_w || t.grad_bias, "conv2d_backward_weight needs grad_w, grad_bias or both");
        needs_workspace = t.grad_w != nullptr;
        skip_empty_batch = false;  // N == 0 runs too: the gradients are then zero
    }
  } else {
    const PoolParams& p = pr.pool;
    const auto x_shape = {p.N, p.C, p.H, p.W}, y_shape = {p.N, p.C, p.P, p.Q};
    // Weighted average pooling's window: (R, S), or its two factors (R + S) when separable.
    auto window = [&] {
      return p.separable ? s.in(&TensorArgs::w, "w (window factors)", {p.R + p.S})
                         : s.in(&TensorArgs::w, "w (window)", {p.R, p.S});
    };
    switch (pr.op) {
      case Op::max_pool2d_forward:
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.y = s.out(&TensorArgs::y, "y", y_shape);
        t.indices = s.indices(y_shape, true, false);
        break;
      case Op::avg_pool2d_forward:
      case Op::lp_pool2d_forward:
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.y = s.out(&TensorArgs::y, "y", y_shape);
        break;
      case Op::max_pool2d_backward:
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.indices = s.indices(y_shape, false, true);
        t.grad_x = s.out(&TensorArgs::grad_x, "grad_x", x_shape);
        break;
      case Op::avg_pool2d_backward:
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.grad_x = s.out(&TensorArgs::grad_x, "grad_x", x_shape);
        break;
      case Op::weighted_avg_pool2d_forward:
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.w = window();
        t.y = s.out(&TensorArgs::y, "y", y_shape);
        break;
      case Op::weighted_avg_pool2d_backward:
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.w = window();
        t.grad_x = s.out(&TensorArgs::grad_x, "grad_x", x_shape);
        break;
      default:  // lp_pool2d_backward
        t.grad_y = s.in(&TensorArgs::grad_y, "grad_y", y_shape);
        t.x = s.in(&TensorArgs::x, "x", x_shape);
        t.y = const_cast<void*>(s.in(&TensorArgs::y, "y", y_shape));  // read only: the forward's output
        t.grad_x = s.out(&TensorArgs::grad_x, "grad_x", x_shape);
    }
  }
  s.check_no_others(pr.op);
  enter(ctx);
  const index_t need = needs_workspace ? k.workspace_bytes(pr, ctx) : 0;
  if (need > 0) {
    FC_CHECK(workspace.present, "algorithm '", algorithm, "' needs a workspace of ", need, " bytes");
    FC_CHECK(workspace.device == ctx.device && workspace.device_index == ctx.device_index, "workspace is on ",
             device_name(workspace.device), ":", workspace.device_index, " but the call runs on ",
             device_name(ctx.device), ":", ctx.device_index);
    FC_CHECK(workspace.contiguous() && workspace.writable, "workspace must be contiguous and writable");
    const index_t have = workspace.numel() * dtype_size(workspace.dtype);
    FC_CHECK(have >= need, "workspace has ", have, " bytes, needs ", need);
    FC_CHECK(reinterpret_cast<std::uintptr_t>(workspace.data) % kWorkspaceAlign == 0,
             "workspace must start on a ", kWorkspaceAlign, "-byte boundary");
    t.workspace = workspace.data;
  }
  if (skip_empty_batch && (is_conv(pr.op) ? pr.conv.N : pr.pool.N) == 0) return;
  k.run(pr, t, ctx);
}

}  // namespace fastconv
