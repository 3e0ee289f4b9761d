// isa_buffer.h: Buffer<T>, an owning array of trivially copyable values for the code
// compiled once per ISA (conv2d_direct.cpp, pool2d.cpp, peak.cpp, ...), used instead of
// std::vector. Private to each including file (anonymous namespace).
// Why: std::vector's members are templates; an object compiled with -mavx512f emits the ones
// it does not inline (_M_default_append, the destructor) as weak symbols with AVX-512 code,
// and the linker keeps one copy of each weak symbol for the whole module, so scalar code
// could end up running the AVX-512 copy. Buffer has internal linkage and calls only
// out-of-line library functions (operator new/delete), so each object keeps its own code.
// tools/check_isa_objects.py checks the objects for symbols outside their ISA's namespace.
// Limits: no copying (move only), no push_back; resize() does not keep the contents.
#pragma once
#include <cstring>
#include <new>
#include <type_traits>

#include "common.h"

namespace fastconv::cpu {
namespace {

template <class T>
class Buffer {
  static_assert(std::is_trivially_copyable_v<T>, "Buffer holds plain values");

 public:
  Buffer() = default;
  explicit Buffer(index_t n) { resize(n); }
  Buffer(index_t n, T fill) {
    allocate(n);
    for (index_t i = 0; i < n; ++i) p_[i] = fill;
  }
  Buffer(Buffer&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  // n values left uninitialised, for a caller that writes them itself (e.g. each thread its
  // own part first, so its pages land on its memory node).
  static Buffer uninitialized(index_t n) {
    Buffer b;
    b.allocate(n);
    return b;
  }

  // n zeros (the previous contents are dropped).
  void resize(index_t n) {
    allocate(n);
    if (n > 0) std::memset(static_cast<void*>(p_), 0, std::size_t(n) * sizeof(T));
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  index_t size() const { return n_; }
  T& operator[](index_t i) { return p_[i]; }
  const T& operator[](index_t i) const { return p_[i]; }

 private:
  // Plain operator new, as std::vector allocates (16-byte aligned): an over-aligned new goes
  // through memalign, which cost a small pooling call ~5,000 more instructions (callgrind,
  // 1x16x8x8 max pool: 25.5k -> 16.8k with this) for an alignment no kernel relies on.
  // Throws std::bad_alloc.
  void allocate(index_t n) {
    release();
    if (n > 0) {
      p_ = static_cast<T*>(::operator new(std::size_t(n) * sizeof(T)));
      n_ = n;
    }
  }
  void release() {
    if (p_) ::operator delete(static_cast<void*>(p_));
    p_ = nullptr;
    n_ = 0;
  }

  T* p_ = nullptr;
  index_t n_ = 0;
};

}  // namespace
}  // namespace fastconv::cpu
