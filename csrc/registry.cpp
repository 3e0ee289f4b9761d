// registry.cpp: the kernel table, and the checks every problem passes before a
// kernel sees it (Python validates first; this is the second line of defence).
#include "registry.h"

#include <limits>

#include "cpu/kernels.h"
#include "cpu_features.h"

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
  }
  return "?";
}

namespace {

bool mul_overflows(index_t a, index_t b) {
  return a != 0 && b > std::numeric_limits<index_t>::max() / a;
}

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
  FC_CHECK(p.N >= 0 && p.C > 0 && p.H > 0 && p.W > 0, "input shape (", p.N, ", ", p.C, ", ",
           p.H, ", ", p.W, ") must have N >= 0 and C, H, W > 0");
  FC_CHECK(p.K > 0 && p.R > 0 && p.S > 0, "weight shape needs K, R, S > 0 (got K=", p.K,
           ", R=", p.R, ", S=", p.S, ")");
  FC_CHECK(p.groups > 0 && p.C % p.groups == 0 && p.K % p.groups == 0, "groups=", p.groups,
           " must divide C=", p.C, " and K=", p.K);
  FC_CHECK(p.stride_h > 0 && p.stride_w > 0, "stride must be positive (got ", p.stride_h, ", ",
           p.stride_w, ")");
  FC_CHECK(p.dil_h > 0 && p.dil_w > 0, "dilation must be positive (got ", p.dil_h, ", ",
           p.dil_w, ")");
  FC_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "padding must be non-negative (got ", p.pad_h, ", ",
           p.pad_w, ")");
  FC_CHECK(p.P > 0 && p.Q > 0, "output size must be positive (got P=", p.P, ", Q=", p.Q, ")");
  // Any P, Q >= 1 is a computable problem: rows and columns past the input read the
  // implied bottom/right padding (zeros), as with torch.nn.functional.pad + conv2d.
  checked_count({p.N, p.C, p.H, p.W}, "input");
  checked_count({p.N, p.K, p.P, p.Q}, "output");
  checked_count({p.K, p.C_per_group(), p.R, p.S}, "weight");
  checked_count({p.N, p.C, p.R, p.S, p.P, p.Q}, "unrolled input");
}

void check_pool_params(const PoolParams& p) {
  FC_CHECK(p.N >= 0 && p.C > 0 && p.H > 0 && p.W > 0, "input shape (", p.N, ", ", p.C, ", ",
           p.H, ", ", p.W, ") must have N >= 0 and C, H, W > 0");
  FC_CHECK(p.P > 0 && p.Q > 0, "output size must be positive (got P=", p.P, ", Q=", p.Q, ")");
  if (!p.adaptive) {
    FC_CHECK(p.R > 0 && p.S > 0, "kernel_size must be positive (got ", p.R, ", ", p.S, ")");
    FC_CHECK(p.stride_h > 0 && p.stride_w > 0, "stride must be positive (got ", p.stride_h,
             ", ", p.stride_w, ")");
    FC_CHECK(p.dil_h > 0 && p.dil_w > 0, "dilation must be positive (got ", p.dil_h, ", ",
             p.dil_w, ")");
    const index_t eff_r = p.dil_h * (p.R - 1) + 1, eff_s = p.dil_w * (p.S - 1) + 1;
    FC_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= eff_r && 2 * p.pad_w <= eff_s,
             "padding (", p.pad_h, ", ", p.pad_w,
             ") must be >= 0 and at most half the effective kernel (", eff_r, ", ", eff_s, ")");
    FC_CHECK((p.P - 1) * p.stride_h - p.pad_h < p.H && (p.Q - 1) * p.stride_w - p.pad_w < p.W,
             "output size (", p.P, ", ", p.Q, ") has windows starting past the input");
  }
  // torch accepts any non-zero norm_type (negative, +-inf); only 0 divides by zero.
  FC_CHECK(p.norm_type != 0, "norm_type must be non-zero (got ", p.norm_type, ")");
  checked_count({p.N, p.C, p.H, p.W}, "input");
  checked_count({p.N, p.C, p.P, p.Q}, "output");
}

namespace {

constexpr unsigned kAllIsas = (1u << int(Isa::scalar)) | (1u << int(Isa::avx2)) | (1u << int(Isa::avx512));

template <class T>
const T* cp(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* mp(void* p) { return static_cast<T*>(p); }

std::string any_conv(const Problem& pr) {
  return pr.op == Op::conv2d_forward ? "" : "not a convolution";
}

// ---- direct -------------------------------------------------------------------
index_t direct_ws(const Problem& pr) { return FC_PICK_ISA(conv2d_direct_workspace_bytes)(pr.conv, pr.dtype); }
void direct_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(conv2d_direct<float>)(pr.conv, cp<float>(t.x), cp<float>(t.w), cp<float>(t.bias), mp<float>(t.y), t.workspace);
  else
    FC_PICK_ISA(conv2d_direct<double>)(pr.conv, cp<double>(t.x), cp<double>(t.w), cp<double>(t.bias), mp<double>(t.y), t.workspace);
}

// ---- im2col + GEMM --------------------------------------------------------------
index_t im2col_ws(const Problem& pr) { return cpu::conv2d_im2col_workspace_bytes(pr.conv, pr.dtype); }
template <class T>
void im2col_run_t(const Problem& pr, const Tensors& t) {
  const T* w = cp<T>(t.w);
  cpu::conv2d_im2col<T>(pr.conv, cp<T>(t.x), pr.prepared ? nullptr : w, pr.prepared ? w : nullptr,
                        cp<T>(t.bias), mp<T>(t.y), t.workspace);
}
void im2col_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    im2col_run_t<float>(pr, t);
  else
    im2col_run_t<double>(pr, t);
}
index_t im2col_prepared_bytes(const Problem& pr) {
  return pr.dtype == DType::f32 ? cpu::conv2d_im2col_prepared_elems<float>(pr.conv) * 4
                                : cpu::conv2d_im2col_prepared_elems<double>(pr.conv) * 8;
}
void im2col_prepare(const Problem& pr, const void* w, void* out) {
  if (pr.dtype == DType::f32)
    cpu::conv2d_im2col_prepare<float>(pr.conv, cp<float>(w), mp<float>(out));
  else
    cpu::conv2d_im2col_prepare<double>(pr.conv, cp<double>(w), mp<double>(out));
}

// ---- backward (direct and im2col) -----------------------------------------------------
std::string any_conv_backward(const Problem& pr) {
  return pr.op == Op::conv2d_backward_data || pr.op == Op::conv2d_backward_weight ? ""
                                                                                  : "not a convolution backward";
}
void backward_bias(const Problem& pr, const Tensors& t) {
  if (!t.grad_bias) return;
  if (pr.dtype == DType::f32)
    cpu::conv2d_backward_bias<float>(pr.conv, cp<float>(t.grad_y), mp<float>(t.grad_bias));
  else
    cpu::conv2d_backward_bias<double>(pr.conv, cp<double>(t.grad_y), mp<double>(t.grad_bias));
}
void direct_data_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(conv2d_direct_backward_data<float>)(pr.conv, cp<float>(t.grad_y), cp<float>(t.w), mp<float>(t.grad_x));
  else
    FC_PICK_ISA(conv2d_direct_backward_data<double>)(pr.conv, cp<double>(t.grad_y), cp<double>(t.w), mp<double>(t.grad_x));
}
void direct_weight_run(const Problem& pr, const Tensors& t) {
  if (t.grad_w) {
    if (pr.dtype == DType::f32)
      FC_PICK_ISA(conv2d_direct_backward_weight<float>)(pr.conv, cp<float>(t.grad_y), cp<float>(t.x), mp<float>(t.grad_w));
    else
      FC_PICK_ISA(conv2d_direct_backward_weight<double>)(pr.conv, cp<double>(t.grad_y), cp<double>(t.x), mp<double>(t.grad_w));
  }
  backward_bias(pr, t);
}
index_t im2col_data_ws(const Problem& pr) { return cpu::conv2d_im2col_backward_data_workspace_bytes(pr.conv, pr.dtype); }
void im2col_data_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    cpu::conv2d_im2col_backward_data<float>(pr.conv, cp<float>(t.grad_y), cp<float>(t.w), mp<float>(t.grad_x), t.workspace);
  else
    cpu::conv2d_im2col_backward_data<double>(pr.conv, cp<double>(t.grad_y), cp<double>(t.w), mp<double>(t.grad_x), t.workspace);
}
index_t im2col_weight_ws(const Problem& pr) { return cpu::conv2d_im2col_backward_weight_workspace_bytes(pr.conv, pr.dtype); }
void im2col_weight_run(const Problem& pr, const Tensors& t) {
  if (t.grad_w) {
    if (pr.dtype == DType::f32)
      cpu::conv2d_im2col_backward_weight<float>(pr.conv, cp<float>(t.grad_y), cp<float>(t.x), mp<float>(t.grad_w), t.workspace);
    else
      cpu::conv2d_im2col_backward_weight<double>(pr.conv, cp<double>(t.grad_y), cp<double>(t.x), mp<double>(t.grad_w), t.workspace);
  }
  backward_bias(pr, t);
}

// ---- Winograd F(m x m, 3 x 3) --------------------------------------------------------
std::string winograd_supports(const Problem& pr) {
  if (pr.op != Op::conv2d_forward) return "not a convolution";
  const ConvParams& p = pr.conv;
  if (p.R != 3 || p.S != 3 || p.stride_h != 1 || p.stride_w != 1 || p.dil_h != 1 || p.dil_w != 1)
    return str_cat("winograd supports only 3x3 kernels with stride 1 and dilation 1 (got kernel ",
                   p.R, "x", p.S, ", stride (", p.stride_h, ", ", p.stride_w, "), dilation (",
                   p.dil_h, ", ", p.dil_w, "))");
  if (pr.dtype != DType::f32)
    return str_cat("winograd supports only float32 (got ", dtype_name(pr.dtype),
                   "; float64 runs with direct, im2col or reference)");
  return "";
}
template <int M>
index_t winograd_ws(const Problem& pr) {
  return FC_PICK_ISA(conv2d_winograd_workspace_bytes)(pr.conv, M, pr.prepared);
}
template <int M>
void winograd_run(const Problem& pr, const Tensors& t) {
  const float* w = cp<float>(t.w);
  FC_PICK_ISA(conv2d_winograd)(pr.conv, M, cp<float>(t.x), pr.prepared ? nullptr : w,
                               pr.prepared ? w : nullptr, cp<float>(t.bias), mp<float>(t.y), t.workspace);
}
template <int M>
index_t winograd_prepared_bytes(const Problem& pr) {
  return FC_PICK_ISA(conv2d_winograd_prepared_bytes)(pr.conv, M);
}
template <int M>
void winograd_prepare(const Problem& pr, const void* w, void* out) {
  FC_PICK_ISA(conv2d_winograd_prepare)(pr.conv, M, cp<float>(w), mp<float>(out));
}

// ---- FFT (overlap-save), n x n tiles ------------------------------------------------------
template <int N>
std::string fft_supports(const Problem& pr) {
  if (pr.op != Op::conv2d_forward) return "not a convolution";
  const ConvParams& p = pr.conv;
  if (p.stride_h != 1 || p.stride_w != 1 || p.dil_h != 1 || p.dil_w != 1)
    return str_cat("fft supports only stride 1 and dilation 1 (got stride (", p.stride_h, ", ",
                   p.stride_w, "), dilation (", p.dil_h, ", ", p.dil_w, "))");
  if (p.R > N - 1 || p.S > N - 1)
    return str_cat("fft:", N, " supports kernels up to ", N - 1, "x", N - 1, " (got kernel ", p.R,
                   "x", p.S, (N == 8 && p.R <= 15 && p.S <= 15 ? "; fft:16 takes up to 15x15)" : ")"));
  if (pr.dtype != DType::f32)
    return str_cat("fft supports only float32 (got ", dtype_name(pr.dtype),
                   "; float64 runs with direct, im2col or reference)");
  return "";
}
template <int N>
index_t fft_ws(const Problem& pr) { return FC_PICK_ISA(conv2d_fft_workspace_bytes)(pr.conv, N, pr.prepared); }
template <int N>
void fft_run(const Problem& pr, const Tensors& t) {
  FC_PICK_ISA(conv2d_fft)(pr.conv, N, cp<float>(t.x), cp<float>(t.w), cp<float>(t.bias), mp<float>(t.y),
                          t.workspace, pr.prepared);
}
template <int N>
index_t fft_prepared_bytes(const Problem& pr) { return FC_PICK_ISA(conv2d_fft_prepared_bytes)(pr.conv, N); }
template <int N>
void fft_prepare(const Problem& pr, const void* w, void* out) {
  FC_PICK_ISA(conv2d_fft_prepare)(pr.conv, N, cp<float>(w), mp<float>(out));
}

// ---- pooling --------------------------------------------------------------------
std::string pool_supports(const Problem&) { return ""; }
index_t no_ws(const Problem&) { return 0; }
void max_pool_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(max_pool2d<float>)(pr.pool, cp<float>(t.x), mp<float>(t.y), t.indices);
  else
    FC_PICK_ISA(max_pool2d<double>)(pr.pool, cp<double>(t.x), mp<double>(t.y), t.indices);
}
void avg_pool_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(avg_pool2d<float>)(pr.pool, cp<float>(t.x), mp<float>(t.y));
  else
    FC_PICK_ISA(avg_pool2d<double>)(pr.pool, cp<double>(t.x), mp<double>(t.y));
}
void lp_pool_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(lp_pool2d<float>)(pr.pool, cp<float>(t.x), mp<float>(t.y));
  else
    FC_PICK_ISA(lp_pool2d<double>)(pr.pool, cp<double>(t.x), mp<double>(t.y));
}
void max_pool_backward_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(max_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), t.indices, mp<float>(t.grad_x));
  else
    FC_PICK_ISA(max_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), t.indices, mp<double>(t.grad_x));
}
void avg_pool_backward_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(avg_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), mp<float>(t.grad_x));
  else
    FC_PICK_ISA(avg_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), mp<double>(t.grad_x));
}
void lp_pool_backward_run(const Problem& pr, const Tensors& t) {
  if (pr.dtype == DType::f32)
    FC_PICK_ISA(lp_pool2d_backward<float>)(pr.pool, cp<float>(t.grad_y), cp<float>(t.x), cp<float>(t.y), mp<float>(t.grad_x));
  else
    FC_PICK_ISA(lp_pool2d_backward<double>)(pr.pool, cp<double>(t.grad_y), cp<double>(t.x), cp<double>(t.y), mp<double>(t.grad_x));
}

}  // namespace

const std::vector<Kernel>& kernel_table() {
  static const std::vector<Kernel> table = {
      // algorithm  op                      device isas      supports       workspace   run
      {"direct", Op::conv2d_forward, "cpu", kAllIsas, any_conv, direct_ws, direct_run},
      {"im2col", Op::conv2d_forward, "cpu", kAllIsas, any_conv, im2col_ws, im2col_run,
       im2col_prepared_bytes, im2col_prepare},
      {"winograd:2", Op::conv2d_forward, "cpu", kAllIsas, winograd_supports, winograd_ws<2>, winograd_run<2>,
       winograd_prepared_bytes<2>, winograd_prepare<2>},
      {"winograd:4", Op::conv2d_forward, "cpu", kAllIsas, winograd_supports, winograd_ws<4>, winograd_run<4>,
       winograd_prepared_bytes<4>, winograd_prepare<4>},
      {"winograd:6", Op::conv2d_forward, "cpu", kAllIsas, winograd_supports, winograd_ws<6>, winograd_run<6>,
       winograd_prepared_bytes<6>, winograd_prepare<6>},
      {"fft:8", Op::conv2d_forward, "cpu", kAllIsas, fft_supports<8>, fft_ws<8>, fft_run<8>, fft_prepared_bytes<8>, fft_prepare<8>},
      {"fft:16", Op::conv2d_forward, "cpu", kAllIsas, fft_supports<16>, fft_ws<16>, fft_run<16>, fft_prepared_bytes<16>, fft_prepare<16>},
      {"direct", Op::max_pool2d_forward, "cpu", kAllIsas, pool_supports, no_ws, max_pool_run},
      {"direct", Op::avg_pool2d_forward, "cpu", kAllIsas, pool_supports, no_ws, avg_pool_run},
      {"direct", Op::lp_pool2d_forward, "cpu", kAllIsas, pool_supports, no_ws, lp_pool_run},
      {"direct", Op::conv2d_backward_data, "cpu", kAllIsas, any_conv_backward, no_ws, direct_data_run},
      {"im2col", Op::conv2d_backward_data, "cpu", kAllIsas, any_conv_backward, im2col_data_ws, im2col_data_run},
      {"direct", Op::conv2d_backward_weight, "cpu", kAllIsas, any_conv_backward, no_ws, direct_weight_run},
      {"im2col", Op::conv2d_backward_weight, "cpu", kAllIsas, any_conv_backward, im2col_weight_ws, im2col_weight_run},
      {"direct", Op::max_pool2d_backward, "cpu", kAllIsas, pool_supports, no_ws, max_pool_backward_run},
      {"direct", Op::avg_pool2d_backward, "cpu", kAllIsas, pool_supports, no_ws, avg_pool_backward_run},
      {"direct", Op::lp_pool2d_backward, "cpu", kAllIsas, pool_supports, no_ws, lp_pool_backward_run},
  };
  return table;
}

const Kernel* find_kernel(Op op, std::string_view algorithm, std::string_view device) {
  std::string known;
  for (const Kernel& k : kernel_table()) {
    if (k.op != op || device != k.device) continue;
    if (algorithm == k.algorithm) return &k;
    known += (known.empty() ? "" : ", ") + std::string(k.algorithm);
  }
  FC_CHECK(false, "no ", device, " kernel '", algorithm, "' for ", op_name(op), " (have: ", known, ")");
  return nullptr;
}

}  // namespace fastconv
