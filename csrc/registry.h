// registry.h: THE table of kernels. One row per (algorithm, op, device); dispatch,
// explain(), the tests and the benchmarks all read it through fastconv._C.kernels().
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "params.h"

namespace fastconv {

enum class Op : int {
  conv2d_forward, max_pool2d_forward, avg_pool2d_forward, lp_pool2d_forward,
  // Backward: grad_y -> grad_x (data), grad_w and grad_bias (weight), grad_x (pooling).
  conv2d_backward_data, conv2d_backward_weight,
  max_pool2d_backward, avg_pool2d_backward, lp_pool2d_backward,
};
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

struct Tensors {  // raw, contiguous, already checked against the Problem
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

struct Kernel {
  const char* algorithm;  // "direct", "im2col", ...
  Op op;
  const char* device;  // "cpu" (and "cuda" later)
  unsigned isas;       // bit i set: has code of its own for Isa(i)
  std::string (*supports)(const Problem&);  // "" when it can run the problem, else why not
  index_t (*workspace_bytes)(const Problem&);
  void (*run)(const Problem&, const Tensors&);
  // Plans (fastconv.plan_conv2d): the weight in the form the kernel computes with
  // (Winograd/FFT transforms, packed GEMM panels), made once and reused by run() with
  // Problem::prepared. Null when the kernel has no such form. The bytes may depend on the
  // ISA (panel shapes) but not on the thread count.
  index_t (*prepared_bytes)(const Problem&) = nullptr;
  void (*prepare)(const Problem&, const void* w, void* prepared) = nullptr;
};

const std::vector<Kernel>& kernel_table();
// The row for (op, algorithm, device); throws (never null) when there is none. A pointer,
// not a reference, so callers passing temporaries do not look dangling to the compiler.
const Kernel* find_kernel(Op op, std::string_view algorithm, std::string_view device = "cpu");

}  // namespace fastconv
