// errors.cpp: throw_invalid_argument (errors.h), compiled once without ISA flags, so that the
// per-ISA objects call it instead of instantiating string and stream code of their own.
#include "errors.h"

#include <cstdarg>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace fastconv {

void throw_invalid_argument(const char* format, ...) {
  std::va_list args, again;
  va_start(args, format);
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, format, args);
  va_end(args);
  std::string message = "fastconv: ";
  if (n > 0) {
    const std::size_t prefix = message.size();
    message.resize(prefix + std::size_t(n) + 1);  // vsnprintf writes the terminating NUL too
    std::vsnprintf(&message[prefix], std::size_t(n) + 1, format, again);
    message.resize(prefix + std::size_t(n));
  }
  va_end(again);
  throw std::invalid_argument(message);
}

}  // namespace fastconv
