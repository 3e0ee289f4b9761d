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

namespace fastconv {

using index_t = std::int64_t;  // every size and offset: tensors may exceed 2^31 elements

enum class DType : int { f32 = 0, f64 = 1 };
inline int dtype_size(DType t) { return t == DType::f32 ? 4 : 8; }
inline const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : "float64"; }

// Concatenate streamable pieces into a message.
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace fastconv

// Precondition check that throws std::invalid_argument (pybind11 -> ValueError).
#define FC_CHECK(cond, ...)                                                         \
  do {                                                                              \
    if (!(cond))                                                                    \
      throw std::invalid_argument(::fastconv::str_cat("fastconv: ", __VA_ARGS__)); \
  } while (0)
