// common.h: what every fastconv source needs: FC_HD for math shared by CPU and
// CUDA, FC_CHECK (throws, never aborts), 64-bit indices.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FC_HD __host__ __device__
#else
#define FC_HD
#endif

// FC_UNROLL(n): `#pragma GCC unroll n` on the loop that follows: the FFT and Winograd codelets'
// short fixed-trip loops, fully unrolled into straight-line code. Not in a sanitizer build
// (FASTCONV_SANITIZE defines FC_SANITIZE): every access there carries its checks, and the
// unrolled, force-inlined codelets grew into functions that took clang and GCC over half an
// hour per ISA copy of conv2d_fft.cpp (/work/shared/notes/build-times.md). Unrolling changes no
// result; the sanitizers check the same source.
#define FC_PRAGMA(text) _Pragma(#text)
#if defined(FC_SANITIZE)
#define FC_UNROLL(n)
#else
#define FC_UNROLL(n) FC_PRAGMA(GCC unroll n)
#endif

namespace fastconv {

using index_t = std::int64_t;  // every size and offset: tensors may exceed 2^31 elements

// Element types of tensors. Kernels compute in f32 (and f64 on the CPU); i64 holds max
// pooling's indices, u8 a workspace's bytes. The codes are explicit so that f16 and bf16
// can join without renumbering.
enum class DType : int { f32 = 0, f64 = 1, i64 = 2, u8 = 3 };
inline int dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::u8: return 1;
    default: return 8;
  }
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i64: return "int64";
    default: return "uint8";
  }
}

// Where a tensor lives and a kernel runs.
enum class Device : int { cpu = 0, cuda = 1 };
inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

// Concatenate streamable pieces into a message.
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace fastconv

// Precondition check that throws std::invalid_argument (pybind11 -> ValueError).
#define FC_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond)) throw std::invalid_argument(::fastconv::str_cat("fastconv: ", __VA_ARGS__)); \
  } while (0)
