// registry.h: THE table of kernels. One row per (algorithm, op, device); dispatch,
// explain(), the tests and the benchmarks all read it through fastconv._C.kernels().
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "params.h"
#include "tensor.h"

namespace fastconv {

enum class Op : int {
  conv2d_forward,
  max_pool2d_forward,
  avg_pool2d_forward,
  lp_pool2d_forward,
  // Backward: grad_y -> grad_x (data), grad_w and grad_bias (weight), grad_x (pooling).
  conv2d_backward_data,
  conv2d_backward_weight,
  max_pool2d_backward,
  avg_pool2d_backward,
  lp_pool2d_backward,
  // Distance-weighted average pooling: the window in slot w.
  weighted_avg_pool2d_forward,
  weighted_avg_pool2d_backward,
  // Tiled / locally connected convolution (ConvParams::tiles_h x tiles_w kernel sets): w is
  // (tiles_h, tiles_w, K, C/groups, R, S), bias and grad_bias (tiles_h, tiles_w, K).
  tiled_conv2d_forward,
  tiled_conv2d_backward_data,
  tiled_conv2d_backward_weight,
};
constexpr Op kLastOp = Op::tiled_conv2d_backward_weight;  // keep it the enum's last entry
const char* op_name(Op op);

struct Problem {
  Op op = Op::conv2d_forward;
  DType dtype = DType::f32;
  ConvParams conv;  // for conv ops
  PoolParams pool;  // for pooling ops
  // Plans: w arrives as the kernel's prepare() output (pre-transformed weights) instead
  // of (K, C/groups, R, S). Only for kernels with a prepare function.
  bool prepared = false;
};

// What a kernel reads and writes: raw pointers on the kernel's device, already checked
// against the Problem by run() below.
struct Tensors {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;
  void* y = nullptr;                // forward output (an input of lp_pool2d_backward)
  std::int64_t* indices = nullptr;  // max pooling: written by the forward, read by the backward
  void* workspace = nullptr;
  // Backward ops: grad_y is read; the gradients asked for are overwritten. The weight
  // op computes grad_w when it is non-null and grad_bias when it is non-null.
  const void* grad_y = nullptr;
  void* grad_x = nullptr;
  void* grad_w = nullptr;
  void* grad_bias = nullptr;
};

// The same slots as descriptors, as they arrive from Python (absent: present == false).
struct TensorArgs {
  TensorDesc x, w, bias, y, indices, grad_y, grad_x, grad_w, grad_bias;
};

struct Kernel {
  const char* algorithm;  // "direct", "im2col", ...
  Op op;
  Device device;
  std::string (*supports)(const Problem&);  // "" when it can run the problem, else why not
  // Scratch bytes of one run() in this context (CPU: sized for ctx's thread count).
  index_t (*workspace_bytes)(const Problem&, const ExecContext&);
  void (*run)(const Problem&, const Tensors&, const ExecContext&);
  // Plans (fastconv.plan_conv2d): the weight in the form the kernel computes with
  // (Winograd/FFT transforms, packed GEMM panels), made once and reused by run() with
  // Problem::prepared. Null when the kernel has no such form. The bytes may depend on the
  // ISA (panel shapes) but not on the thread count.
  index_t (*prepared_bytes)(const Problem&) = nullptr;
  void (*prepare)(const Problem&, const void* w, void* prepared, const ExecContext&) = nullptr;
};

const std::vector<Kernel>& kernel_table();
// The row for (op, algorithm, device); throws (never null) when there is none. A pointer,
// not a reference, so callers passing temporaries do not look dangling to the compiler.
const Kernel* find_kernel(Op op, std::string_view algorithm, Device device);

// ---- the boundary: every call from Python goes through these, for any device -------------
// Each checks the problem's parameters, that the device has the kernel and the kernel can run
// the problem, and (run, prepare) every tensor's presence, dtype, shape, contiguity, device
// and alignment, throwing std::invalid_argument / std::domain_error (TypeError in Python)
// before a kernel sees anything.
Op op_from_name(std::string_view name);
Device device_from_name(std::string_view name);
DType dtype_from_name(std::string_view name);  // float32 / float64, else throws dtype_error
std::string supports(const Problem& pr, std::string_view algorithm, Device device);
index_t workspace_bytes(const Problem& pr, std::string_view algorithm, const ExecContext& ctx);
index_t prepared_bytes(const Problem& pr, std::string_view algorithm, Device device);
// Writes the kernel's prepared weights for w (K, C/groups, R, S) into out (1-D); pr.dtype is
// taken from w.
void prepare(Problem pr, std::string_view algorithm, const ExecContext& ctx, const TensorDesc& w,
             const TensorDesc& out);
// Runs pr.op; pr.dtype is taken from the op's first input (x, or grad_y for backward ops).
void run(Problem pr, std::string_view algorithm, const ExecContext& ctx, const TensorArgs& t,
         const TensorDesc& workspace);

// Thrown for a dtype no kernel takes (pybind11 turns it into TypeError, as Python's checks do).
struct dtype_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace fastconv
