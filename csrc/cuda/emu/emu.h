// emu.h: a header-only SIMT emulator that lets the host compiler (g++/clang, -std=c++17) build
// CUDA kernel source written for nvcc and run every kernel on the CPU, for tests. portable.cuh
// includes it when the compiler is not nvcc; kernel files never include it directly.
//
// What it emulates
//   - The CUDA built-ins kernel code uses: __global__/__device__/__shared__ and the other
//     qualifiers, threadIdx/blockIdx/blockDim/gridDim/warpSize, __syncthreads (and _count/_and/
//     _or), warp operations (__syncwarp, __shfl*_sync, __ballot/__any/__all_sync, __activemask),
//     atomics, vector types (float2/float4/double2/int2/int4/uint2/uint4), __ldg, the fast-math
//     and bit intrinsics, __trap (see the sections below), and a runtime API subset (cudaMalloc,
//     cudaMemcpy, cudaMemset, their Async forms, streams as no-ops, cudaFuncSetAttribute, the
//     device attributes of an sm_90 GPU with 132 SMs, last-error handling).
//   - fastconv::emu::launch(): checks the launch as an sm_90 GPU would (threads per block,
//     block and grid dimensions, dynamic shared memory with the 48 KiB opt-in rule), then runs
//     the blocks of the grid one after another on the calling OS thread, each CUDA thread of a
//     block a cooperative fiber (fiber.h). Fibers switch only at barriers and warp operations.
//     All state is thread_local, so two OS threads may emulate at once.
//   - Memory poisoning: cudaMalloc'ed memory and each block's dynamic shared memory start as
//     0xFF bytes (NaN as float or double).
//
// What it catches (each an Error naming the kernel, the block and the thread):
//   - a divergent barrier: threads of one block waiting at different __syncthreads call sites;
//   - a thread that exits while others of its block wait at a barrier (e.g. an early return
//     before __syncthreads), or reaches a barrier after another thread of its block exited;
//   - a warp operation whose mask names a lane that has exited, exits instead, or waits at a
//     __syncthreads instead (e.g. a full-mask shuffle inside a divergent branch); masks that
//     disagree between lanes (overlapping but different); a mask without the calling lane;
//     lanes of one mask at different warp operations;
//   - a deadlock (no runnable thread), listing where each thread waits;
//   - an exception thrown inside a kernel (rethrown from launch() as an Error with the thread's
//     indices and the exception's message), __trap();
//   - a launch a GPU would refuse; a kernel that launches a kernel;
//   - with AddressSanitizer: out-of-bounds dynamic shared memory and cudaMalloc'ed memory
//     (each an exact-size heap block); a stack overflow hits a guard page (SIGSEGV).
// It also runs the threads of a block in a chosen order (set_order: forward, reverse, shuffle)
// when a block starts and after every barrier, so code that relies on an order between
// unsynchronised threads (a missing __syncthreads, legacy warp-synchronous code without
// __syncwarp) gives wrong results in some order.
//
// What it cannot catch
//   - Lost updates and other races between unsynchronised threads: a fiber runs from one
//     synchronisation point to the next without interruption, so a plain read-modify-write of
//     shared or global memory is atomic here; only the order between sync points varies.
//   - Inter-block communication: blocks run one after another, so a spin-wait on another block
//     hangs (or reads stale data), and grid-wide cooperative groups are not provided.
//   - Host/device pointer mix-ups inside kernels (one address space); cudaMemcpy/cudaMemset do
//     check that their device side lies inside one cudaMalloc allocation.
//   - Uninitialised static __shared__ reads: static shared arrays are per-OS-thread storage
//     (`static thread_local`) that keeps the previous block's values; only dynamic shared memory
//     is poisoned per block. Out-of-bounds shared accesses are caught only under ASan (dynamic).
//   - Inline PTX and __CUDA_ARCH__ paths (undefined here: the plain-CUDA fallback runs), warp
//     lanes' lockstep (independent thread scheduling is assumed, as on sm_70+), floating-point
//     contraction as nvcc does it (the host compiler decides), limits on registers and static
//     shared memory. A device-side assert() is the host's: it aborts the process.
//   - __activemask() cannot know which lanes a GPU would have converged. Here a lane calling it
//     waits until every other live lane of its warp has either called it too or stopped at
//     another synchronisation point (or exited), and gets the lanes that called it at the same
//     call site: the lanes that "arrived together", as a converged warp would report them.
//
// How: each block's threads are fibers (64 KiB stacks, pooled per OS thread) driven by a
// scheduler on the launching thread's stack. A barrier or warp operation records its call site
// (the macros pass __FILE__/__LINE__), parks the fiber and, when the last participant arrives,
// makes all participants runnable again in the chosen order; the scheduler checks the rules above
// at each arrival and exit. Static __shared__ is `static thread_local`.
//
// Build notes: include after the standard headers you need (this header defines macros such as
// __noinline__ and __shared__). Warning-free under -Wall -Wextra (g++ 12). -fno-strict-aliasing
// is advisable for kernel code that reinterprets arrays (float4 loads of float data), as it is
// for any host build of such code. Speed: ~1e7 fiber switches/s (two per thread per barrier).
#pragma once

#include <math.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "fiber.h"

// =============================================================================================
// CUDA types (global namespace, as cuda_runtime.h declares them)
// =============================================================================================

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// Vector types with CUDA's sizes and alignments.
struct __attribute__((aligned(8))) float2 {
  float x, y;
};
struct float3 {
  float x, y, z;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(16))) double2 {
  double x, y;
};
struct __attribute__((aligned(8))) int2 {
  int x, y;
};
struct int3 {
  int x, y, z;
};
struct __attribute__((aligned(16))) int4 {
  int x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
  unsigned int x, y;
};
struct __attribute__((aligned(16))) uint4 {
  unsigned int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int3 make_int3(int x, int y, int z) { return int3{x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return uint4{x, y, z, w};
}

// Runtime API types (the numeric values are CUDA's).
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
};
typedef cudaError_t cudaError;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxBlockDimX = 2,
  cudaDevAttrMaxBlockDimY = 3,
  cudaDevAttrMaxBlockDimZ = 4,
  cudaDevAttrMaxGridDimX = 5,
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
struct CUstream_st {
  int unused;
};
typedef CUstream_st* cudaStream_t;

// =============================================================================================
// Built-in variables. The scheduler sets threadIdx before it resumes a fiber; the others per
// block / launch. Plain thread_local globals: one OS thread runs one fiber at a time.
// =============================================================================================

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace fastconv::emu {

// Every error the emulator reports (a bad launch, a divergent barrier, a deadlock, an exception
// thrown inside a kernel, ...). The message starts "fastconv emulator: kernel '<name>' ...".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

// ---- settings (process-wide) -----------------------------------------------------------------

enum class Order : int { forward = 0, reverse = 1, shuffle = 2 };
inline const char* order_name(int o) { return o == 0 ? "forward" : o == 1 ? "reverse" : "shuffle"; }
inline int parse_order(const std::string& s) {
  if (s == "forward") return 0;
  if (s == "reverse") return 1;
  if (s == "shuffle") return 2;
  return -1;
}

struct Settings {
  std::atomic<int> order{0};
  std::atomic<std::uint64_t> seed{0x9e3779b97f4a7c15ull};
  std::atomic<std::uint64_t> switches{0};
  Settings() {
    if (const char* e = std::getenv("FASTCONV_EMU_ORDER"); e && *e) {
      const int o = parse_order(e);
      if (o < 0)
        throw std::invalid_argument(std::string("fastconv emulator: FASTCONV_EMU_ORDER='") + e +
                                    "' is not an order (forward, reverse or shuffle)");
      order = o;
    }
    if (const char* e = std::getenv("FASTCONV_EMU_SEED"); e && *e) {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(e, &end, 0);
      if (*end != '\0')
        throw std::invalid_argument(std::string("fastconv emulator: FASTCONV_EMU_SEED='") + e +
                                    "' is not an unsigned integer");
      seed = v;
    }
  }
};
inline Settings& settings() {
  static Settings s;
  return s;
}

// ---- small helpers ---------------------------------------------------------------------------

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
inline std::string hex32(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}
inline std::string triple(uint3 v) { return cat('(', v.x, ',', v.y, ',', v.z, ')'); }
inline std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// ---- per-thread scheduler state --------------------------------------------------------------

// Synchronisation operations a fiber can wait at.
enum class Op : unsigned char {
  syncthreads,
  syncthreads_count,
  syncthreads_and,
  syncthreads_or,
  syncwarp,
  shfl,
  shfl_up,
  shfl_down,
  shfl_xor,
  ballot,
  any,
  all,
  activemask,
};
inline const char* op_name(Op op) {
  switch (op) {
    case Op::syncthreads: return "__syncthreads()";
    case Op::syncthreads_count: return "__syncthreads_count()";
    case Op::syncthreads_and: return "__syncthreads_and()";
    case Op::syncthreads_or: return "__syncthreads_or()";
    case Op::syncwarp: return "__syncwarp()";
    case Op::shfl: return "__shfl_sync()";
    case Op::shfl_up: return "__shfl_up_sync()";
    case Op::shfl_down: return "__shfl_down_sync()";
    case Op::shfl_xor: return "__shfl_xor_sync()";
    case Op::ballot: return "__ballot_sync()";
    case Op::any: return "__any_sync()";
    case Op::all: return "__all_sync()";
    case Op::activemask: return "__activemask()";
  }
  return "?";
}

// A call site of a synchronisation operation.
struct Site {
  const char* file;
  int line;
  Op op;
};
inline bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && a.op == b.op && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}
inline std::string site_str(const Site& s) { return cat(op_name(s.op), " at ", s.file, ':', s.line); }

enum class State : unsigned char { ready, running, barrier, warp, done };

// One CUDA thread of the block being run.
struct Thread {
  uint3 idx;
  unsigned linear;
  State state;
  bool started;  // resumed at least once in this block
  Site site;     // where it waits (barrier or warp operation)
  unsigned mask;  // the mask it passed to its warp operation
  int result;     // barrier result (__syncthreads_count/and/or)
  int src;        // shuffle: the lane it reads
  std::uint64_t value;  // warp operation: its operand (bits)
  std::uint64_t out;    // warp operation: its result (bits)
};

// A warp operation some lanes of a warp wait at, until every lane of `mask` has arrived.
struct WarpOp {
  unsigned mask;     // the lanes named (that exist in the block)
  unsigned arrived;  // those that have arrived
  unsigned first;    // the first lane that arrived
};
struct Warp {
  unsigned existing;  // lanes that exist (the last warp of a block may be partial)
  unsigned exited;    // lanes whose thread has returned
  unsigned in_activemask;  // lanes waiting in __activemask()
  std::vector<WarpOp> pending;
};

// A fiber and its stack, reused for the threads of every block and launch on this OS thread.
struct Slot {
  fiber::Stack stack;
  fiber::Context ctx;
  bool runnable = false;  // context initialised, parked at the top of its thread loop
};

// Per OS thread: the scheduler's context and the pooled fibers.
struct Pool {
  fiber::Context main;
  std::vector<std::unique_ptr<Slot>> slots;
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() {
    for (auto& s : slots) fiber::stack_free(s->stack);
  }
  void reserve(std::size_t n) {
    while (slots.size() < n) {
      auto s = std::make_unique<Slot>();
      s->stack = fiber::stack_alloc();
      slots.push_back(std::move(s));
    }
  }
};
inline Pool& pool() {
  static thread_local Pool p;
  return p;
}

struct Run;
inline thread_local Run* tls_run = nullptr;  // the launch this OS thread is running, if any
inline void fiber_main(void* slot);

constexpr unsigned kNone = ~0u;

// One launch: the grid, the block being run, the fibers' states and the ready queue.
struct Run {
  const char* name;
  void (*invoke)(const void*);
  const void* closure;
  dim3 grid, block;
  unsigned n = 0;  // threads per block
  unsigned char* smem = nullptr;
  std::size_t smem_bytes = 0;
  int order = 0;
  std::uint64_t seed = 0, rng = 0;
  std::uint64_t switches = 0;

  std::vector<Thread> threads;
  std::vector<Warp> warps;
  std::vector<unsigned> queue;  // ring buffer of ready threads (a power of two >= n)
  unsigned qhead = 0, qcount = 0, qmask = 0;
  std::vector<unsigned> scratch;
  Pool* pool = nullptr;
  std::vector<Slot*> slots;  // the fiber of each thread of the block
  Thread* cur = nullptr;  // the thread whose fiber runs

  // The barrier being filled.
  unsigned bar_waiting = 0, bar_first = 0, bar_true = 0;
  Site bar_site{nullptr, 0, Op::syncthreads};
  unsigned done = 0;
  unsigned first_exited = kNone;

  std::exception_ptr error;

  // ---- messages
  std::string block_where() const {
    return cat("fastconv emulator: kernel '", name, "' block ", triple(blockIdx));
  }
  std::string where(const Thread& t) const { return cat(block_where(), " thread ", triple(t.idx), ": "); }
  std::string thread_str(unsigned linear) const { return cat("thread ", triple(threads[linear].idx)); }
  std::string lane_str(unsigned linear) const {
    return cat("lane ", linear & 31, " (", thread_str(linear), ")");
  }
  void fail(std::exception_ptr e) {
    if (!error) error = std::move(e);
  }
  void fail(const std::string& msg) { fail(std::make_exception_ptr(Error(msg))); }

  // ---- ready queue
  void push(unsigned i) {
    threads[i].state = State::ready;
    queue[(qhead + qcount++) & qmask] = i;
  }
  // Makes ids[0..k) (ascending) ready, in this launch's order.
  void push_ordered(unsigned* ids, unsigned k) {
    if (order == 0) {
      for (unsigned i = 0; i < k; ++i) push(ids[i]);
    } else if (order == 1) {
      for (unsigned i = k; i-- > 0;) push(ids[i]);
    } else {
      for (unsigned i = k; i > 1; --i) std::swap(ids[i - 1], ids[splitmix64(rng) % i]);
      for (unsigned i = 0; i < k; ++i) push(ids[i]);
    }
  }
  void push_all() {
    for (unsigned i = 0; i < n; ++i) scratch[i] = i;
    push_ordered(scratch.data(), n);
  }

  // ---- switching
  void park() {
    Slot& s = *slots[cur->linear];
    fiber::switch_to(s.ctx, pool->main);
  }
  void resume(unsigned i) {
    Thread& t = threads[i];
    cur = &t;
    threadIdx = t.idx;
    t.state = State::running;
    t.started = true;
    Slot& s = *slots[i];
    if (!s.runnable) {
      fiber::init(s.ctx, s.stack, &fiber_main, &s);
      s.runnable = true;
    }
    switches += 2;
    fiber::switch_to(pool->main, s.ctx);
    cur = nullptr;
  }

  // ---- one block
  void run_block() {
    for (unsigned i = 0; i < n; ++i) {
      threads[i].state = State::ready;
      threads[i].started = false;
    }
    for (std::size_t w = 0; w < warps.size(); ++w) {
      const unsigned lanes = std::min(32u, n - unsigned(w) * 32);
      warps[w].existing = lanes == 32 ? ~0u : (1u << lanes) - 1;
      warps[w].exited = 0;
      warps[w].in_activemask = 0;
      warps[w].pending.clear();
    }
    bar_waiting = 0;
    done = 0;
    first_exited = kNone;
    qhead = qcount = 0;
    if (smem_bytes) std::memset(smem, 0xff, smem_bytes);
    rng =
        seed ^ (0x9e3779b97f4a7c15ull *
                (1 + blockIdx.x + std::uint64_t(grid.x) * (blockIdx.y + std::uint64_t(grid.y) * blockIdx.z)));
    push_all();
    while (qcount) {
      const unsigned i = queue[qhead];
      qhead = (qhead + 1) & qmask;
      --qcount;
      resume(i);
      if (error) return;
    }
    if (done != n) deadlock();
  }

  void deadlock() {
    std::string msg = cat(block_where(), ": deadlock: no thread can continue;");
    unsigned listed = 0, more = 0;
    for (const Thread& t : threads) {
      if (t.state == State::done) continue;
      if (listed == 8) {
        ++more;
        continue;
      }
      msg += cat(listed ? ", " : " ", thread_str(t.linear), " waits at ", site_str(t.site));
      if (t.state == State::warp && t.site.op != Op::activemask) msg += cat(" (mask ", hex32(t.mask), ')');
      ++listed;
    }
    if (more) msg += cat(" and ", more, " more");
    fail(msg);
  }

  // ---- thread exit (runs on the exiting fiber; records errors, never throws)
  void thread_exit(Thread& t) {
    t.state = State::done;
    ++done;
    const unsigned lane = t.linear & 31;
    Warp& w = warps[t.linear >> 5];
    w.exited |= 1u << lane;
    if (first_exited == kNone) first_exited = t.linear;
    if (error) return;
    try {
      settle_activemask(t.linear & ~31u);
      if (bar_waiting) {
        fail(
            cat(where(t), "exited while ", thread_str(bar_first), " waits at ", site_str(bar_site),
                ": every thread of a block must reach each barrier (an early return before __syncthreads?)"));
        return;
      }
      for (const WarpOp& op : w.pending) {
        if ((op.mask >> lane & 1) && !(op.arrived >> lane & 1)) {
          const Thread& f = threads[(t.linear & ~31u) + op.first];
          fail(cat(where(t), "exited while named in the mask ", hex32(f.mask), " of ", site_str(f.site),
                   " where ", lane_str(f.linear),
                   " waits: every lane of a warp operation's mask must reach it (a full mask in a "
                   "divergent branch?)"));
          return;
        }
      }
    } catch (...) {
      fail(std::current_exception());
    }
  }

  // ---- barriers (run on the arriving fiber)
  int barrier(const Site& site, int pred) {
    Thread& t = *cur;
    const unsigned lane = t.linear & 31;
    for (const WarpOp& op : warps[t.linear >> 5].pending) {
      if ((op.mask >> lane & 1) && !(op.arrived >> lane & 1)) {
        const Thread& f = threads[(t.linear & ~31u) + op.first];
        throw Error(cat(where(t), "waits at ", site_str(site), " while named in the mask ", hex32(f.mask),
                        " of ", site_str(f.site), " where ", lane_str(f.linear),
                        " waits: every lane of a warp operation's mask must reach it"));
      }
    }
    if (first_exited != kNone)
      throw Error(cat(where(t), "waits at ", site_str(site), " but ", thread_str(first_exited),
                      " of its block has exited: every thread of a block must reach each barrier (an early "
                      "return before __syncthreads?)"));
    if (bar_waiting) {
      if (!same_site(site, bar_site))
        throw Error(cat(where(t), "waits at ", site_str(site), " while ", thread_str(bar_first), " waits at ",
                        site_str(bar_site),
                        ": divergent barrier (every thread of a block must reach the same __syncthreads)"));
    } else {
      bar_site = site;
      bar_first = t.linear;
      bar_true = 0;
    }
    bar_true += pred != 0;
    t.state = State::barrier;
    t.site = site;
    settle_activemask(t.linear & ~31u);
    if (++bar_waiting == n) {
      const int result = site.op == Op::syncthreads_count ? int(bar_true)
                         : site.op == Op::syncthreads_and ? int(bar_true == n)
                         : site.op == Op::syncthreads_or  ? int(bar_true > 0)
                                                          : 0;
      for (Thread& u : threads) u.result = result;
      bar_waiting = 0;
      push_all();
    }
    park();
    return t.result;
  }

  // ---- warp operations (run on the arriving lane's fiber)
  std::uint64_t warp_op(const Site& site, unsigned mask, std::uint64_t value, int src) {
    Thread& t = *cur;
    const unsigned lane = t.linear & 31, base = t.linear & ~31u;
    Warp& w = warps[t.linear >> 5];
    if (!(mask >> lane & 1))
      throw Error(cat(where(t), site_str(site), " with mask ", hex32(mask),
                      " does not name the calling lane ", lane,
                      " (a thread must be in the mask of its own warp operation)"));
    const unsigned eff = mask & w.existing;
    if (const unsigned gone = eff & w.exited)
      throw Error(cat(where(t), site_str(site), " with mask ", hex32(mask), " names ",
                      lane_str(base + unsigned(__builtin_ctz(gone))),
                      ", which has exited: every lane of a warp operation's mask must reach it"));
    for (unsigned m = bar_waiting ? eff & ~(1u << lane) : 0; m; m &= m - 1) {
      const Thread& u = threads[base + unsigned(__builtin_ctz(m))];
      if (u.state == State::barrier)
        throw Error(cat(where(t), site_str(site), " with mask ", hex32(mask), " names ", lane_str(u.linear),
                        ", which waits at ", site_str(u.site),
                        " instead: every lane of a warp operation's mask must reach it"));
    }
    WarpOp* op = nullptr;
    for (WarpOp& p : w.pending) {
      if (!(p.mask & eff)) continue;
      const Thread& f = threads[base + p.first];
      if (p.mask != eff)
        throw Error(cat(where(t), site_str(site), " with mask ", hex32(mask), " meets ", lane_str(f.linear),
                        " waiting at ", site_str(f.site), " with mask ", hex32(f.mask),
                        ": masks disagree (the lanes of a warp operation must pass the same mask)"));
      if (f.site.op != site.op)
        throw Error(cat(where(t), site_str(site), " with mask ", hex32(mask), " meets ", lane_str(f.linear),
                        " waiting at ", site_str(f.site),
                        ": the lanes of a mask must call the same warp operation"));
      op = &p;
      break;
    }
    if (!op) {
      w.pending.push_back(WarpOp{eff, 0, lane});
      op = &w.pending.back();
    }
    t.value = value;
    t.src = src;
    t.site = site;
    t.mask = mask;
    t.state = State::warp;
    op->arrived |= 1u << lane;
    if (op->arrived == op->mask) {
      complete(base, *op, site.op);
      w.pending.erase(w.pending.begin() + (op - w.pending.data()));
    }
    settle_activemask(base);
    park();
    return t.out;
  }

  // __activemask(): waits until the warp's other live lanes are parked elsewhere or here.
  unsigned activemask(const Site& site) {
    Thread& t = *cur;
    const unsigned base = t.linear & ~31u;
    t.site = site;
    t.state = State::warp;
    t.mask = 0;
    warps[t.linear >> 5].in_activemask |= 1u << (t.linear & 31);
    settle_activemask(base);
    park();
    return unsigned(t.out);
  }
  // Completes the warp's __activemask() calls once none of its live lanes can still arrive (each
  // waits at one of them, at another synchronisation point, or has exited): each caller gets the
  // lanes that called it at the same site.
  void settle_activemask(unsigned base) {
    Warp& w = warps[base >> 5];
    if (!w.in_activemask) return;
    for (unsigned m = w.existing & ~w.exited & ~w.in_activemask; m; m &= m - 1) {
      const State s = threads[base + unsigned(__builtin_ctz(m))].state;
      if (s != State::barrier && s != State::warp) return;
    }
    unsigned k = 0;
    for (unsigned m = w.in_activemask; m; m &= m - 1) {
      const unsigned l = unsigned(__builtin_ctz(m));
      Thread& u = threads[base + l];
      unsigned group = 0;
      for (unsigned r = w.in_activemask; r; r &= r - 1) {
        const unsigned j = unsigned(__builtin_ctz(r));
        if (same_site(threads[base + j].site, u.site)) group |= 1u << j;
      }
      u.out = group;
      scratch[k++] = base + l;
    }
    w.in_activemask = 0;
    push_ordered(scratch.data(), k);
  }

  void complete(unsigned base, const WarpOp& op, Op kind) {
    const unsigned m = op.mask;
    unsigned bits = 0;
    if (kind == Op::ballot || kind == Op::any || kind == Op::all)
      for (unsigned r = m; r; r &= r - 1) {
        const unsigned l = unsigned(__builtin_ctz(r));
        if (threads[base + l].value) bits |= 1u << l;
      }
    unsigned k = 0;
    for (unsigned r = m; r; r &= r - 1) {
      const unsigned l = unsigned(__builtin_ctz(r));
      Thread& u = threads[base + l];
      switch (kind) {
        case Op::ballot: u.out = bits; break;
        case Op::any: u.out = bits != 0; break;
        case Op::all: u.out = bits == m; break;
        case Op::shfl:
        case Op::shfl_up:
        case Op::shfl_down:
        case Op::shfl_xor:
          // A lane outside the mask (or the block) gives undefined data on a GPU: NaN bytes here.
          u.out =
              (u.src >= 0 && u.src < 32 && (m >> u.src & 1)) ? threads[base + unsigned(u.src)].value : ~0ull;
          break;
        default: u.out = 0;
      }
      scratch[k++] = base + l;
    }
    push_ordered(scratch.data(), k);
  }
};

inline Run& current(const char* what) {
  Run* r = tls_run;
  if (!r || !r->cur) throw Error(cat("fastconv emulator: ", what, " called outside a kernel"));
  return *r;
}

// The body of every fiber: runs the thread the scheduler assigned, then parks at the top of the
// loop until it is given the next one (in this block, a later block or a later launch).
inline void fiber_main(void* arg) {
  Slot* slot = static_cast<Slot*>(arg);
  fiber::entered(pool().main);
  for (;;) {
    Run& r = *tls_run;
    Thread& t = *r.cur;
    try {
      r.invoke(r.closure);
    } catch (const Error&) {
      r.fail(std::current_exception());
    } catch (const std::exception& e) {
      r.fail(cat(r.where(t), "exception thrown in the kernel: ", e.what()));
    } catch (...) {
      r.fail(cat(r.where(t), "unknown exception thrown in the kernel"));
    }
    r.thread_exit(t);
    fiber::switch_to(slot->ctx, r.pool->main);
  }
}

// ---- launch ----------------------------------------------------------------------------------

struct FuncAttrs {
  std::mutex m;
  std::map<const void*, int> max_dynamic_smem;
};
inline FuncAttrs& func_attrs() {
  static FuncAttrs a;
  return a;
}
constexpr std::size_t kDefaultDynamicSmem = 48 * 1024;
constexpr int kMaxDynamicSmemOptin = 232448;  // 227 KiB, sm_90

inline void check_launch(const char* name, const void* key, dim3 grid, dim3 block, std::size_t smem) {
  const auto bad = [&](const std::string& what, const char* err) {
    throw Error(cat("fastconv emulator: kernel '", name, "': ", what, " (", err, ")"));
  };
  const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
  const std::string bs = triple(block), gs = triple(grid);
  if (threads == 0) bad(cat("launch with an empty block ", bs), "cudaErrorInvalidConfiguration");
  if (threads > 1024)
    bad(cat("launch with ", threads, " threads per block ", bs, ", more than 1024"),
        "cudaErrorInvalidConfiguration");
  if (block.x > 1024 || block.y > 1024 || block.z > 64)
    bad(cat("launch with block ", bs, " beyond the block dimensions' limits (1024,1024,64)"),
        "cudaErrorInvalidConfiguration");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0)
    bad(cat("launch with an empty grid ", gs), "cudaErrorInvalidConfiguration");
  if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    bad(cat("launch with grid ", gs, " beyond the grid dimensions' limits (2147483647,65535,65535)"),
        "cudaErrorInvalidConfiguration");
  std::size_t limit = kDefaultDynamicSmem;
  {
    FuncAttrs& a = func_attrs();
    std::lock_guard<std::mutex> lock(a.m);
    const auto it = a.max_dynamic_smem.find(key);
    if (it != a.max_dynamic_smem.end()) limit = std::max<std::size_t>(limit, std::size_t(it->second));
  }
  if (smem > limit)
    bad(cat("launch with ", smem, " bytes of dynamic shared memory, more than the ", limit,
            " allowed (above 49152 bytes a kernel needs cudaFuncSetAttribute(kernel, "
            "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), up to 232448)"),
        "cudaErrorInvalidValue");
}

struct SmemBuffer {
  unsigned char* p = nullptr;
  explicit SmemBuffer(std::size_t n)
      : p(static_cast<unsigned char*>(::operator new(n ? n : 16, std::align_val_t(64)))) {}
  ~SmemBuffer() { ::operator delete(p, std::align_val_t(64)); }
  SmemBuffer(const SmemBuffer&) = delete;
  SmemBuffer& operator=(const SmemBuffer&) = delete;
};

// Runs the grid: every block in order (x fastest), each block's threads as fibers.
inline void run_grid(const char* name, const void* key, void (*invoke)(const void*), const void* closure,
                     dim3 grid, dim3 block, std::size_t smem) {
  if (tls_run)
    throw Error(cat("fastconv emulator: kernel '", name,
                    "': launched from inside a kernel (dynamic parallelism is not emulated)"));
  check_launch(name, key, grid, block, smem);
  Settings& st = settings();
  Pool& p = pool();
  Run r;
  r.name = name;
  r.invoke = invoke;
  r.closure = closure;
  r.grid = grid;
  r.block = block;
  r.n = block.x * block.y * block.z;
  r.order = st.order.load(std::memory_order_relaxed);
  r.seed = st.seed.load(std::memory_order_relaxed);
  r.pool = &p;
  p.reserve(r.n);
  SmemBuffer smem_buf(smem);
  r.smem = smem_buf.p;
  r.smem_bytes = smem;
  r.threads.resize(r.n);
  for (unsigned i = 0; i < r.n; ++i) {
    Thread& t = r.threads[i];
    t = Thread{};
    t.linear = i;
    t.idx = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    t.site = Site{"", 0, Op::syncthreads};
  }
  r.warps.resize((r.n + 31) / 32);
  unsigned cap = 1;
  while (cap < r.n) cap *= 2;
  r.queue.resize(cap);
  r.qmask = cap - 1;
  for (unsigned i = 0; i < r.n; ++i) r.slots.push_back(p.slots[i].get());
  r.scratch.resize(r.n);

  struct Guard {
    Run& r;
    Settings& st;
    ~Guard() {
      tls_run = nullptr;
      st.switches.fetch_add(r.switches, std::memory_order_relaxed);
      // Fibers abandoned mid-kernel by an error are re-initialised before their next use.
      for (unsigned i = 0; i < r.n; ++i)
        if (r.threads[i].started && r.threads[i].state != State::done) r.slots[i]->runnable = false;
    }
  } guard{r, st};
  tls_run = &r;
  blockDim = block;
  gridDim = grid;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        r.run_block();
        if (r.error) std::rethrow_exception(r.error);
      }
}

// The Site-recording front ends of the synchronisation built-ins (the macros below pass
// __FILE__ and __LINE__).
struct BarrierAt {
  const char* file;
  int line;
  void sync() const { current("__syncthreads()").barrier(Site{file, line, Op::syncthreads}, 0); }
  int count(int pred) const {
    return current("__syncthreads_count()").barrier(Site{file, line, Op::syncthreads_count}, pred);
  }
  int and_(int pred) const {
    return current("__syncthreads_and()").barrier(Site{file, line, Op::syncthreads_and}, pred);
  }
  int or_(int pred) const {
    return current("__syncthreads_or()").barrier(Site{file, line, Op::syncthreads_or}, pred);
  }
};

template <class T>
std::uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "fastconv emulator: warp shuffles take types of at most 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

struct WarpAt {
  const char* file;
  int line;

  Run& enter(Op op, int width) const {
    Run& r = current(op_name(op));
    if (width < 1 || width > 32 || (width & (width - 1)))
      throw Error(cat(r.where(*r.cur), op_name(op), " at ", file, ':', line, " with width ", width,
                      ": the width must be a power of two from 1 to 32"));
    return r;
  }
  void syncwarp(unsigned mask = 0xffffffffu) const {
    current("__syncwarp()").warp_op(Site{file, line, Op::syncwarp}, mask, 0, -1);
  }
  template <class T>
  T shfl(unsigned mask, T v, int src_lane, int width = 32) const {
    Run& r = enter(Op::shfl, width);
    const int lane = int(r.cur->linear & 31);
    const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
    return from_bits<T>(r.warp_op(Site{file, line, Op::shfl}, mask, to_bits(v), src));
  }
  template <class T>
  T shfl_up(unsigned mask, T v, unsigned delta, int width = 32) const {
    Run& r = enter(Op::shfl_up, width);
    const int lane = int(r.cur->linear & 31);
    const int src = unsigned(lane & (width - 1)) >= delta ? lane - int(delta) : lane;
    return from_bits<T>(r.warp_op(Site{file, line, Op::shfl_up}, mask, to_bits(v), src));
  }
  template <class T>
  T shfl_down(unsigned mask, T v, unsigned delta, int width = 32) const {
    Run& r = enter(Op::shfl_down, width);
    const int lane = int(r.cur->linear & 31);
    const int src = unsigned(lane & (width - 1)) + delta < unsigned(width) ? lane + int(delta) : lane;
    return from_bits<T>(r.warp_op(Site{file, line, Op::shfl_down}, mask, to_bits(v), src));
  }
  template <class T>
  T shfl_xor(unsigned mask, T v, int lane_mask, int width = 32) const {
    Run& r = enter(Op::shfl_xor, width);
    const int lane = int(r.cur->linear & 31);
    int src = lane ^ lane_mask;
    if (src < 0 || src >= (lane & ~(width - 1)) + width) src = lane;  // later groups: own value
    return from_bits<T>(r.warp_op(Site{file, line, Op::shfl_xor}, mask, to_bits(v), src));
  }
  unsigned ballot(unsigned mask, int pred) const {
    return unsigned(current("__ballot_sync()").warp_op(Site{file, line, Op::ballot}, mask, pred != 0, -1));
  }
  int any(unsigned mask, int pred) const {
    return int(current("__any_sync()").warp_op(Site{file, line, Op::any}, mask, pred != 0, -1));
  }
  int all(unsigned mask, int pred) const {
    return int(current("__all_sync()").warp_op(Site{file, line, Op::all}, mask, pred != 0, -1));
  }
  unsigned activemask() const {
    return current("__activemask()").activemask(Site{file, line, Op::activemask});
  }
};

}  // namespace detail

// =============================================================================================
// Public API of the emulator
// =============================================================================================

// The controls below are weak out-of-line definitions, not inline ones: every translation unit
// that includes this header emits them and the linker keeps one, so code that only declares them
// (bindings.cpp, which must not see the CUDA names this header defines) links.
#define FASTCONV_EMU_CONTROL __attribute__((weak))

// The order in which the threads of a block are started and resumed after each barrier:
// "forward" (linear thread index ascending), "reverse", "shuffle" (a fresh random permutation
// per block and barrier, from the seed). Process-wide; read by each launch when it starts.
// Default: $FASTCONV_EMU_ORDER, else forward.
FASTCONV_EMU_CONTROL void set_order(const std::string& name) {
  const int o = detail::parse_order(name);
  if (o < 0)
    throw std::invalid_argument("fastconv emulator: unknown order '" + name +
                                "' (forward, reverse or shuffle)");
  detail::settings().order = o;
}
FASTCONV_EMU_CONTROL std::string order() { return detail::order_name(detail::settings().order.load()); }
// The seed of "shuffle" (default $FASTCONV_EMU_SEED, else a fixed value): a launch with the same
// seed, grid and block runs its threads in the same orders.
FASTCONV_EMU_CONTROL void set_seed(std::uint64_t seed) { detail::settings().seed = seed; }
FASTCONV_EMU_CONTROL std::uint64_t seed() { return detail::settings().seed.load(); }
// Fiber switches made by every finished launch in this process (a resume and a park count 2).
FASTCONV_EMU_CONTROL std::uint64_t fiber_switches() { return detail::settings().switches.load(); }

// The current block's dynamic shared memory (16-byte aligned; 0xFF bytes when each block starts).
inline void* dynamic_shared() { return detail::current("dynamic_shared()").smem; }

// The stream argument of launch(): a cudaStream_t, or a void* / nullptr holding one (as nvcc's
// FC_LAUNCH static_casts it). Streams are no-ops here.
struct StreamArg {
  cudaStream_t stream;
  StreamArg(cudaStream_t s) : stream(s) {}
  StreamArg(void* s) : stream(static_cast<cudaStream_t>(s)) {}
  StreamArg(std::nullptr_t) : stream(nullptr) {}
};

// Runs kernel<<<grid, block, dynamic_smem_bytes, stream>>>(args...) to completion on the calling
// thread (see the top of this file). The arguments are converted to the kernel's parameter types
// once; every thread gets its own copy, as on a GPU. Throws Error.
template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t dynamic_smem_bytes,
            StreamArg stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "fastconv emulator: wrong number of kernel arguments");
  (void)stream;
  using Params = std::tuple<std::decay_t<P>...>;
  struct Closure {
    void (*kernel)(P...);
    Params params;
  };
  const Closure closure{kernel, Params(std::forward<A>(args)...)};
  const auto invoke = [](const void* c) {
    const Closure& cl = *static_cast<const Closure*>(c);
    std::apply(cl.kernel, cl.params);
  };
  detail::run_grid(name, reinterpret_cast<const void*>(kernel), invoke, &closure, grid, block,
                   dynamic_smem_bytes);
}

namespace detail {

// ---- runtime API state ------------------------------------------------------------------------

inline cudaError_t& last_error() {
  static thread_local cudaError_t e = cudaSuccess;
  return e;
}
inline cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) last_error() = e;
  return e;
}
// The live cudaMalloc allocations: base -> bytes.
struct Allocations {
  std::mutex m;
  std::map<std::uintptr_t, std::size_t> live;
};
inline Allocations& allocations() {
  static Allocations a;
  return a;
}
// Whether [p, p + n) lies inside one live allocation.
inline bool is_device_range(const void* p, std::size_t n) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
  Allocations& al = allocations();
  std::lock_guard<std::mutex> lock(al.m);
  auto it = al.live.upper_bound(a);
  if (it == al.live.begin()) return false;
  --it;
  return a >= it->first && a - it->first <= it->second && n <= it->second - (a - it->first);
}
inline bool is_device_ptr(const void* p) { return is_device_range(p, 1); }

}  // namespace detail
}  // namespace fastconv::emu

// =============================================================================================
// Device built-ins (global namespace)
// =============================================================================================

// ---- barriers and warp operations (macros so that each call records its file and line) ------
#define __syncthreads ::fastconv::emu::detail::BarrierAt{__FILE__, __LINE__}.sync
#define __syncthreads_count ::fastconv::emu::detail::BarrierAt{__FILE__, __LINE__}.count
#define __syncthreads_and ::fastconv::emu::detail::BarrierAt{__FILE__, __LINE__}.and_
#define __syncthreads_or ::fastconv::emu::detail::BarrierAt{__FILE__, __LINE__}.or_
#define __syncwarp ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.syncwarp
#define __shfl_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.shfl
#define __shfl_up_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.shfl_up
#define __shfl_down_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.shfl_down
#define __shfl_xor_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.shfl_xor
#define __ballot_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.ballot
#define __any_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.any
#define __all_sync ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.all

// The lanes of the caller's warp that call it together (see the top of this file).
#define __activemask ::fastconv::emu::detail::WarpAt{__FILE__, __LINE__}.activemask

// A device-side trap: an Error naming the thread (on a GPU: cudaErrorLaunchFailure).
inline void __trap() {
  auto& r = ::fastconv::emu::detail::current("__trap()");
  throw ::fastconv::emu::Error(r.where(*r.cur) +
                               "__trap() called (a GPU reports an unspecified launch failure)");
}

// Memory fences order nothing here: fibers switch only at synchronisation points.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

// ---- atomics: a plain read-modify-write is atomic between fibers ----------------------------
namespace fastconv::emu::detail {
// Every atomic is this: *a = f(*a), returning the old value.
template <class T, class F>
inline T rmw(T* a, F f) {
  const T old = *a;
  *a = f(old);
  return old;
}
}  // namespace fastconv::emu::detail
// int wraps as the GPU's does (through unsigned: signed overflow is undefined in C++).
inline int atomicAdd(int* a, int v) {
  return ::fastconv::emu::detail::rmw(a, [v](int o) { return int(unsigned(o) + unsigned(v)); });
}
inline int atomicSub(int* a, int v) {
  return ::fastconv::emu::detail::rmw(a, [v](int o) { return int(unsigned(o) - unsigned(v)); });
}
#define FASTCONV_EMU_ADD(T)                                                             \
  inline T atomicAdd(T* a, T v) {                                                       \
    return ::fastconv::emu::detail::rmw(a, [v](T o) { return static_cast<T>(o + v); }); \
  }
FASTCONV_EMU_ADD(unsigned)
FASTCONV_EMU_ADD(unsigned long long)
FASTCONV_EMU_ADD(float)
FASTCONV_EMU_ADD(double)
#undef FASTCONV_EMU_ADD
inline unsigned atomicSub(unsigned* a, unsigned v) {
  return ::fastconv::emu::detail::rmw(a, [v](unsigned o) { return o - v; });
}
#define FASTCONV_EMU_MINMAX(T)                                                  \
  inline T atomicMax(T* a, T v) {                                               \
    return ::fastconv::emu::detail::rmw(a, [v](T o) { return o < v ? v : o; }); \
  }                                                                             \
  inline T atomicMin(T* a, T v) {                                               \
    return ::fastconv::emu::detail::rmw(a, [v](T o) { return v < o ? v : o; }); \
  }
FASTCONV_EMU_MINMAX(int)
FASTCONV_EMU_MINMAX(unsigned)
FASTCONV_EMU_MINMAX(long long)
FASTCONV_EMU_MINMAX(unsigned long long)
#undef FASTCONV_EMU_MINMAX
#define FASTCONV_EMU_EXCH(T)                                      \
  inline T atomicExch(T* a, T v) {                                \
    return ::fastconv::emu::detail::rmw(a, [v](T) { return v; }); \
  }
FASTCONV_EMU_EXCH(int)
FASTCONV_EMU_EXCH(unsigned)
FASTCONV_EMU_EXCH(unsigned long long)
FASTCONV_EMU_EXCH(float)
#undef FASTCONV_EMU_EXCH
#define FASTCONV_EMU_CAS(T)                                                            \
  inline T atomicCAS(T* a, T compare, T v) {                                           \
    return ::fastconv::emu::detail::rmw(a, [=](T o) { return o == compare ? v : o; }); \
  }
FASTCONV_EMU_CAS(int)
FASTCONV_EMU_CAS(unsigned)
FASTCONV_EMU_CAS(unsigned long long)
#undef FASTCONV_EMU_CAS
#define FASTCONV_EMU_BITWISE(T)                                                         \
  inline T atomicAnd(T* a, T v) {                                                       \
    return ::fastconv::emu::detail::rmw(a, [v](T o) { return static_cast<T>(o & v); }); \
  }                                                                                     \
  inline T atomicOr(T* a, T v) {                                                        \
    return ::fastconv::emu::detail::rmw(a, [v](T o) { return static_cast<T>(o | v); }); \
  }                                                                                     \
  inline T atomicXor(T* a, T v) {                                                       \
    return ::fastconv::emu::detail::rmw(a, [v](T o) { return static_cast<T>(o ^ v); }); \
  }
FASTCONV_EMU_BITWISE(int)
FASTCONV_EMU_BITWISE(unsigned)
FASTCONV_EMU_BITWISE(unsigned long long)
#undef FASTCONV_EMU_BITWISE

// ---- loads -----------------------------------------------------------------------------------
template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// ---- math intrinsics (the <cmath> functions come from the host library) ----------------------
namespace fastconv::emu::detail {
// Keeps the compiler from contracting a rounded operation into an FMA (as __fmul_rn etc. promise).
template <class T>
inline T opaque(T v) {
#if defined(__x86_64__)
  asm("" : "+x"(v));
#else
  volatile T w = v;
  v = w;
#endif
  return v;
}
template <class To, class From>
inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "size mismatch");
  To r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}
}  // namespace fastconv::emu::detail

#if !(defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 42)))
// (glibc 2.42 declares C23's rsqrt and rsqrtf itself)
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
#endif
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return fastconv::emu::detail::opaque(a * b); }
inline float __fadd_rn(float a, float b) { return fastconv::emu::detail::opaque(a + b); }
inline float __fsub_rn(float a, float b) { return fastconv::emu::detail::opaque(a - b); }
inline float __fdiv_rn(float a, float b) { return fastconv::emu::detail::opaque(a / b); }
inline float __frcp_rn(float a) { return fastconv::emu::detail::opaque(1.0f / a); }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dmul_rn(double a, double b) { return fastconv::emu::detail::opaque(a * b); }
inline double __dadd_rn(double a, double b) { return fastconv::emu::detail::opaque(a + b); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0
inline int __float_as_int(float x) { return fastconv::emu::detail::bit_cast<int>(x); }
inline float __int_as_float(int x) { return fastconv::emu::detail::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return fastconv::emu::detail::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return fastconv::emu::detail::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return fastconv::emu::detail::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return fastconv::emu::detail::bit_cast<double>(x); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }  // round half to even
inline int __float2int_rz(float x) { return int(x); }
inline int __float2int_rd(float x) { return int(std::floor(x)); }
inline int __float2int_ru(float x) { return int(std::ceil(x)); }
inline float __int2float_rn(int x) { return float(x); }
inline int __mulhi(int a, int b) { return int((long long)a * b >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((unsigned long long)a * b >> 32); }
inline int __mul24(int a, int b) { return int(unsigned(a << 8 >> 8) * unsigned(b << 8 >> 8)); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}

// =============================================================================================
// Runtime API subset (global namespace). Device 0 is an emulated sm_90 GPU with 132 SMs.
// =============================================================================================

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = fastconv::emu::detail::last_error();
  fastconv::emu::detail::last_error() = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return fastconv::emu::detail::last_error(); }
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
  }
  return "unknown error";
}

inline cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fastconv::emu::detail::record(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  if (!device) return fastconv::emu::detail::record(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fastconv::emu::detail::record(cudaErrorInvalidDevice);
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  using fastconv::emu::detail::record;
  if (!value) return record(cudaErrorInvalidValue);
  if (device != 0) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 49152; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = fastconv::emu::detail::kMaxDynamicSmemOptin; break;
    default: return record(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }  // launches run to completion
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  if (!stream) return fastconv::emu::detail::record(cudaErrorInvalidValue);
  *stream = new CUstream_st{0};
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}

// Device memory: host memory, 256-byte aligned, filled with 0xFF bytes (NaN), tracked so that
// cudaFree of an unknown pointer and copies outside an allocation are errors.
inline cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  using namespace fastconv::emu::detail;
  if (!ptr) return record(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  void* p = ::operator new(bytes, std::align_val_t(256), std::nothrow);
  if (!p) return record(cudaErrorMemoryAllocation);
  std::memset(p, 0xff, bytes);
  {
    Allocations& a = allocations();
    std::lock_guard<std::mutex> lock(a.m);
    a.live[reinterpret_cast<std::uintptr_t>(p)] = bytes;
  }
  *ptr = p;
  return cudaSuccess;
}
template <class T>
inline cudaError_t cudaMalloc(T** ptr, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
inline cudaError_t cudaFree(void* p) {
  using namespace fastconv::emu::detail;
  if (!p) return cudaSuccess;
  {
    Allocations& a = allocations();
    std::lock_guard<std::mutex> lock(a.m);
    const auto it = a.live.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == a.live.end()) return record(cudaErrorInvalidValue);  // not from cudaMalloc, or freed twice
    a.live.erase(it);
  }
  ::operator delete(p, std::align_val_t(256));
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** ptr, std::size_t bytes, cudaStream_t stream) {
  (void)stream;
  return cudaMalloc(ptr, bytes);
}
template <class T>
inline cudaError_t cudaMallocAsync(T** ptr, std::size_t bytes, cudaStream_t stream) {
  return cudaMallocAsync(reinterpret_cast<void**>(ptr), bytes, stream);
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t stream) {
  (void)stream;
  return cudaFree(p);
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  using namespace fastconv::emu::detail;
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return record(cudaErrorInvalidValue);
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return record(cudaErrorInvalidMemcpyDirection);
  if (kind != cudaMemcpyDefault && kind != cudaMemcpyHostToHost) {
    // The device side must lie inside one allocation, the host side outside every one.
    if (dst_dev != is_device_range(dst, bytes) || (!dst_dev && is_device_ptr(dst)))
      return record(cudaErrorInvalidValue);
    if (src_dev != is_device_range(src, bytes) || (!src_dev && is_device_ptr(src)))
      return record(cudaErrorInvalidValue);
  }
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t stream = nullptr) {
  (void)stream;
  return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemset(void* p, int value, std::size_t bytes) {
  using namespace fastconv::emu::detail;
  if (bytes == 0) return cudaSuccess;
  if (!p || !is_device_range(p, bytes)) return record(cudaErrorInvalidValue);
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t stream = nullptr) {
  (void)stream;
  return cudaMemset(p, value, bytes);
}
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  using namespace fastconv::emu::detail;
  if (!entry) return record(cudaErrorInvalidValue);  // nvcc: cudaErrorInvalidDeviceFunction
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > kMaxDynamicSmemOptin) return record(cudaErrorInvalidValue);
    FuncAttrs& a = func_attrs();
    std::lock_guard<std::mutex> lock(a.m);
    a.max_dynamic_smem[reinterpret_cast<const void*>(entry)] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
    return value >= -1 && value <= 100 ? cudaSuccess : record(cudaErrorInvalidValue);
  return record(cudaErrorInvalidValue);
}

// Blocks of `kernel` that fit on one SM of an sm_90 GPU at once, from the block size and dynamic
// shared memory alone (registers are not known here): at most 32 blocks and 2048 threads per SM,
// 228 KiB of shared memory (1 KiB of it reserved per block).
template <class T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, T kernel, int block_size,
                                                                 std::size_t dynamic_smem_bytes) {
  using fastconv::emu::detail::record;
  (void)kernel;
  if (!blocks || block_size <= 0 || block_size > 1024) return record(cudaErrorInvalidValue);
  long long n = std::min(32, 2048 / block_size);
  n = std::min<long long>(n, 233472 / (long long)(dynamic_smem_bytes + 1024));
  *blocks = int(n);
  return cudaSuccess;
}

// =============================================================================================
// Qualifiers (last: the standard headers above are parsed without them; libstdc++ itself
// spells __attribute__((__noinline__)))
// =============================================================================================
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared memory: storage per OS thread, which runs one block at a time, so every fiber
// of the block sees the same array. Not poisoned (keeps the previous block's values).
#define __shared__ static thread_local
