// tensor.h: what crosses the boundary from Python to a kernel, for any device.
//   TensorDesc   one tensor: pointer, dtype, shape, strides (elements), device, writability.
//                It owns nothing: the caller's library (NumPy, torch, CuPy) keeps the memory
//                alive for the call.
//   ExecContext  where and how a kernel runs: device, device index, stream, CPU threads.
// Strides are carried so that channels-last inputs and views can later reach a kernel
// without a copy; today every kernel takes row-major (C-contiguous) tensors and the
// registry checks that before a kernel runs.
#pragma once
#include "common.h"

namespace fastconv {

struct TensorDesc {
  static constexpr int kMaxDims = 6;  // the largest rank an op takes (1-D prepared weights .. 4-D)
  void* data = nullptr;
  bool present = false;  // false: the optional tensor was not given (None)
  bool writable = false;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int device_index = 0;
  int ndim = 0;
  index_t shape[kMaxDims] = {};
  index_t strides[kMaxDims] = {};  // in elements, as the caller's library reports them

  index_t numel() const {
    index_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  // Row-major with no gaps (size-1 dimensions may have any stride, as NumPy allows; an
  // empty tensor addresses nothing and counts as contiguous whatever its strides).
  bool contiguous() const {
    if (numel() == 0) return true;
    index_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
};

struct ExecContext {
  Device device = Device::cpu;
  int device_index = 0;
  void* stream = nullptr;  // the caller's cudaStream_t on CUDA (null: the default stream); unused on the CPU
  int threads = 0;  // CPU: team size of the call; 0 = the CPU backend's setting (set_num_threads)
};

}  // namespace fastconv
