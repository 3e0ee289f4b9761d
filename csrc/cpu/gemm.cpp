// gemm.cpp: the project's packed GEMM, C = alpha * op(A) op(B) + beta * C + bias_m[m]
// (row-major; interface in gemm.h), float and double.
// Idea: Goto & van de Geijn, "Anatomy of high-performance matrix multiplication" (2008),
// in the five-loop form of BLIS (Van Zee & van de Geijn 2015), with ic outside pc:
//   jc: N in nc columns   -> pack op(B)[:, jc:jc+nc] into kc x nr micro-panels (L3)
//   ic: M in mc rows      (work items shared out among threads)
//   pc: K in kc depths    -> pack op(A)[ic:ic+mc, pc:pc+kc] into mr x kc micro-panels (L2)
//   jr: nc in nr columns  (the B micro-panel, from L2/L1)
//   ir: mc in mr rows     -> micro-kernel: an mr x nr tile of C in registers
// Transposes are absorbed by the packing, and so is a gathered B (gemm.h: an implicit
// im2col, packed straight from its rows); alpha, beta and the per-row bias are fused
// into the micro-kernel's store (beta == 0 never reads C). Operands packed ahead of time
// (gemm_pack_a / gemm_pack_b, a plan's weights, Winograd's transforms) skip their packing;
// a pre-packed A marked streamed gets the micro-kernel that prefetches it.
// This file holds the driver, the pre-packing entry points, the scalar micro-kernel
// (compiled without ISA flags, so it runs on any CPU) and the run-time choice of ISA;
// gemm_avx2.cpp / gemm_avx512.cpp hold the vector kernels, gemm_kernels.h the packing and
// micro-kernel templates they share.
// Threads: one OpenMP team packs each B panel together, then shares out (row block,
// column run) tiles of C dynamically (see the driver section). Products whose A block
// fits L2 but whose B does not run in column mode instead: the team packs A (a lone
// thread one K block at a time), and each work item packs its own B micro-panels as it
// goes (see "driver, column mode"). Results do not depend on the thread count.
// Limits: no complex types, no strided (non-unit) element access.
#include "cpu/gemm.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "cpu/gemm_kernels.h"
#include "cpu_features.h"

namespace fastconv::cpu {
namespace gemm_detail {
namespace {

// ---- helpers ----------------------------------------------------------------------------

index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// Buffers carved out of one scratch block (the B panel, the threads' A blocks and B
// micro-panels) are rounded to this many elements, so each starts on a cache line (and
// on 256 bytes for float). From the first version (da4e6c9).
constexpr index_t kBufferAlignElems = 64;

// A 64-byte aligned scratch buffer that only grows; one per calling thread, so repeated
// calls (and the small products of batched callers) never reach malloc. It grows to a
// quarter more than asked, in whole pages, so slowly growing requests reallocate rarely.
constexpr std::size_t kScratchAlignBytes = 64;
constexpr index_t kPageBytes = 4096;
class Scratch {
 public:
  ~Scratch() { std::free(p_); }
  void* get(std::size_t bytes) {
    if (bytes > cap_) {
      std::free(p_);
      p_ = nullptr;
      cap_ = 0;
      const std::size_t want = std::size_t(round_up(index_t(bytes + bytes / 4), kPageBytes));
      p_ = std::aligned_alloc(kScratchAlignBytes, want);
      if (!p_) throw std::bad_alloc();
      cap_ = want;
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  std::size_t cap_ = 0;
};

thread_local Scratch tl_scratch;

// Scalar "vector" traits: one lane. The scalar kernel is the same template as the
// vector ones, so all three paths share the packing and epilogue logic.
template <class Tp>
struct VecScalar {
  using T = Tp;
  using reg = Tp;
  static constexpr int L = 1;
  static reg zero() { return T(0); }
  static reg load(const T* p) { return *p; }
  static reg loadu(const T* p) { return *p; }
  static reg bcast(const T* p) { return *p; }
  static reg set1(T x) { return x; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg add(reg a, reg b) { return a + b; }
  static reg load_n(const T* p, int) { return *p; }
  static void store(T* p, reg r) { *p = r; }
  static void store_n(T* p, reg r, int) { *p = r; }
};

// C = beta * C + bias (the K == 0 product).
template <class T>
void scale_rows(index_t M, index_t N, T beta, T* C, index_t ldc, const T* bias) {
  for (index_t m = 0; m < M; ++m) {
    T* c = C + m * ldc;
    const T b = bias ? bias[m] : T(0);
    if (beta == T(0))
      for (index_t n = 0; n < N; ++n) c[n] = b;
    else
      for (index_t n = 0; n < N; ++n) c[n] = beta * c[n] + b;
  }
}

// ---- kernel choice ------------------------------------------------------------------------
// Only the active ISA's accessor is called, so no code of a higher ISA ever runs.

const GemmKernel<float>& kernel_for(Isa isa, float /*tag*/) {
  switch (isa) {
#if defined(FC_X86)
    case Isa::avx512: return kernel_avx512_f32();
    case Isa::avx2: return kernel_avx2_f32();
#endif
    default: return kernel_scalar_f32();
  }
}

const GemmKernel<double>& kernel_for(Isa isa, double /*tag*/) {
  switch (isa) {
#if defined(FC_X86)
    case Isa::avx512: return kernel_avx512_f64();
    case Isa::avx2: return kernel_avx2_f64();
#endif
    default: return kernel_scalar_f64();
  }
}

// ---- driver ----------------------------------------------------------------------------------
//
// Loop order: jc (nc columns) -> pack op(B)[:, jc:jc+nc] for ALL K blocks (kc x nr
// micro-panels, the whole K x nc panel in L3) -> work items (mc-row block, run of nr
// panels) -> pc (kc) -> pack the A block (L2) -> jr -> ir -> micro-kernel. Packing the
// B panel for the whole depth at once (up to ~8 MiB; deeper products take it in
// several rounds of whole kc blocks) costs no more B traffic than kc-deep panels, and
// lets each item run its own K loop, so the team meets at a barrier only once per
// panel (once per call for N <= nc and K x nc small enough: all the conv shapes).
//
// Threads. All threads of the team pack their share of the B panel, meet at a
// barrier, then take work items from a shared counter. Dynamic rather than a fixed
// split, and few barriers, because this machine is shared: when one core is also busy
// with something else, the other thread takes more items instead of waiting at
// barriers that each cost a scheduler time slice. Items are sized so there are >= 4
// per thread: rows are cut first (M = 2048, N = 49: 12 row blocks), columns as well
// when M is short (M = 64, N = 3136: 2 row blocks x 4 column runs). Deep products whose
// B panel outgrows L2 (kPcOuterMinBPanelBytes) share their row blocks statically instead
// and run the K blocks outermost, each thread over its own row blocks. Every C element
// sees the same K blocks in the same order whoever computes it, so results do not
// depend on the thread count.

// Below this many multiply-adds per thread a second thread costs more (fork/join and
// barriers, a few microseconds) than it saves.
constexpr double kMinFmaPerThread = 1 << 18;
constexpr int kItemsPerThread = 4;
// A row block cut for the team keeps at least this many mr panels, so that each item's
// packed A block still feeds several micro-kernel calls per B micro-panel.
constexpr index_t kMinPanelsPerRowBlock = 4;
constexpr index_t kBPanelBytes = index_t(8) << 20;  // packed B panel: a share of the L3

// Deep products with a B panel too big for L2 (N = 196-392 columns, K = 2048-4608: im2col's
// late 3x3 layers, batched 1x1 layers on 7x7 maps) run K blocks outside the row blocks, so each
// thread's row blocks reuse one K block of B (<= 512 KiB) from L2 instead of cycling the whole
// panel through L3 once per row block. Measured on a Sapphire Rapids-class Xeon, 2 threads,
// interleaved: 512 x 392 x 2048 1.08x, 256 x 196 x 2304 1.07-1.12x, 512 x 196 x 4608 1.09x;
// 128 x 784 x 1152 (an 800 KiB K block) 0.95-0.99x and N = 49 (the panel fits L2) 0.9-1.0x,
// hence the two bounds.
constexpr index_t kPcOuterMinBPanelBytes = index_t(1) << 20;
constexpr index_t kPcOuterMaxBBlockBytes = index_t(512) << 10;

// The micro-kernel prefetches its C tile (micro_kernel's prefetch_c) only for products whose
// C is this big, a convolution's output written once (64->256 1x1 on 56x56: 1.13x with it),
// and whose B is not pre-packed: Winograd's per-frequency products (B its transformed tiles)
// ran 0.94-0.97x with it, their C being read back by the output transform soon after.
constexpr index_t kPrefetchCMinBytes = index_t(512) << 10;

struct Plan {
  int nt = 1;                  // threads
  index_t kc = 0, nc = 0;      // K and N blocks actually used
  index_t kb = 0;              // depth of one packed B panel: a multiple of kc (usually K)
  index_t mp = 0, mblocks = 0; // mr panels of M, and the row blocks they are cut into
  index_t mc_max = 0;          // most rows in a row block
  index_t a_stride = 0;        // elements between the threads' A buffers
  bool pc_outer = false;       // K blocks outside the row blocks (see run_thread)
  bool prefetch_c = false;     // the micro-kernel prefetches C (kPrefetchCMinBytes)
  std::atomic<index_t>* counters = nullptr;  // two, used alternately (see run_thread)
};

// The micro-kernel for products with this A: the prefetching one for a streamed operand.
template <class T>
auto micro_for(const GemmKernel<T>& kr, const GemmOperand<T>& A) {
  return A.packed && A.streamed ? kr.micro_streamed_a : kr.micro;
}

// Column runs per row block for a B panel of npb nr-panels: enough items for the
// team, but each run at least 2 panels wide.
index_t column_runs(const Plan& pl, index_t npb) {
  if (pl.nt == 1) return 1;
  const index_t want = ceil_div(index_t(kItemsPerThread) * pl.nt, pl.mblocks);
  return std::max<index_t>(1, std::min(want, npb / 2));
}

// A pre-packed operand holds, for each kc block starting at depth pc, all its micro-panels
// back to back: block pc starts at pc * round_up(outer, panel) (the blocks before it hold
// pc depth levels in total), and panel j of the block at j * panel * kc.
template <class T>
const T* packed_block(const GemmOperand<T>& o, int panel, index_t pc, index_t kc, index_t first) {
  return o.packed + pc * round_up(o.packed_outer, panel) + first * kc;
}

// Packs op(B)[pc:pc+kc, c0:c0+cols] (plain or gathered) into micro-panels at dst.
template <class T>
void pack_b_block(const GemmKernel<T>& kr, const GemmOperand<T>& B, index_t pc, index_t kc, index_t c0,
                  index_t cols, T* dst) {
  if (B.k_offsets)
    kr.pack_b_gathered(kc, cols, B.data, B.k_offsets + pc, B.segment_offsets, B.segment, c0, dst);
  else
    kr.pack_b(B.trans, kc, cols, B.trans ? B.data + c0 * B.ld + pc : B.data + pc * B.ld + c0, B.ld, dst);
}

template <class T>
void run_thread(const GemmKernel<T>& kr, const Plan& pl, int tid, index_t M, index_t N, index_t K, T alpha,
                const GemmOperand<T>& A, const GemmOperand<T>& B, T beta, T* C, index_t ldc, const T* bias,
                T* bbuf, T* abuf) {
  const int nt = pl.nt, mr = kr.mr, nr = kr.nr;
  const auto micro = micro_for(kr, A);
  const bool ta = A.trans;
  const index_t lda = A.ld;
  index_t iter = 0;
  for (index_t jc = 0; jc < N; jc += pl.nc) {
    const index_t nc = std::min(pl.nc, N - jc), npb = ceil_div(nc, nr);
    const index_t runs = column_runs(pl, npb), items = pl.mblocks * runs;
    for (index_t p0 = 0; p0 < K; p0 += pl.kb, ++iter) {
      const index_t p1 = std::min(K, p0 + pl.kb);
      // The shared work counter exists only for a team (pl.counters is null for one thread).
      std::atomic<index_t>* counter = nt > 1 ? &pl.counters[iter % 2] : nullptr;
      if (nt > 1 && iter > 0) {
#pragma omp barrier  // everyone is done with the previous B panel (and counter)
      }
      // Pack this thread's share of the B panel, every kc block of [p0, p1): the block
      // starting at depth pc holds kc x (npb*nr) values at bbuf + (pc-p0)*npb*nr.
      const index_t q0 = npb * tid / nt, q1 = npb * (tid + 1) / nt;
      if (q1 > q0 && !B.packed) {
        const index_t c0 = jc + q0 * nr, cols = std::min(nc, q1 * nr) - q0 * nr;
        for (index_t pc = p0; pc < p1; pc += pl.kc) {
          const index_t kc = std::min(pl.kc, p1 - pc);
          pack_b_block(kr, B, pc, kc, c0, cols, bbuf + (pc - p0) * npb * nr + q0 * nr * kc);
        }
      }
      // The other counter was last used two panels ago and nobody touches it before
      // the next panel's second barrier, so it can be rearmed now.
      if (tid == 0 && nt > 1) pl.counters[(iter + 1) % 2].store(0, std::memory_order_relaxed);
      if (nt > 1) {
#pragma omp barrier  // the whole B panel is packed
      }
      // One (row block, column run) item over the K blocks [pc0, pc1).
      auto item_blocks = [&](index_t blk, index_t run, index_t pc0, index_t pc1) {
        const index_t ic = std::min(M, pl.mp * blk / pl.mblocks * mr);
        const index_t mcur = std::min(M, pl.mp * (blk + 1) / pl.mblocks * mr) - ic;
        const index_t j0 = npb * run / runs, j1 = npb * (run + 1) / runs;
        for (index_t pc = pc0; pc < pc1; pc += pl.kc) {
          const index_t kc = std::min(pl.kc, pc1 - pc);
          const T* ap = abuf;
          if (A.packed)
            ap = packed_block(A, mr, pc, kc, A.offset + ic);
          else
            kr.pack_a(ta, mcur, kc, ta ? A.data + pc * lda + ic : A.data + ic * lda + pc, lda, abuf);
          // The first K block applies the caller's beta and the bias; later ones add.
          const T beta_k = pc == 0 ? beta : T(1);
          const T* bias_k = pc == 0 ? bias : nullptr;
          const T* bpc = B.packed ? packed_block(B, nr, pc, kc, jc) : bbuf + (pc - p0) * npb * nr;
          for (index_t jr = j0; jr < j1; ++jr) {
            const int n = int(std::min<index_t>(nr, nc - jr * nr));
            const T* bp = bpc + jr * nr * kc;
            T* cj = C + jc + jr * nr;
            for (index_t ir = 0; ir < mcur; ir += mr) {
              const int m = int(std::min<index_t>(mr, mcur - ir));
              micro(kc, ap + ir * kc, bp, cj + (ic + ir) * ldc, ldc, m, n, alpha, beta_k,
                    bias_k ? bias_k + ic + ir : nullptr, pl.prefetch_c);
            }
          }
        }
      };
      if (pl.pc_outer) {  // this thread's row blocks (a static share: no counter), K blocks outermost
        for (index_t pc = p0; pc < p1; pc += pl.kc)
          for (index_t blk = tid; blk < pl.mblocks; blk += nt)
            item_blocks(blk, 0, pc, std::min(p1, pc + pl.kc));
        continue;
      }
      for (index_t serial = 0;; ++serial) {
        const index_t item = nt > 1 ? counter->fetch_add(1, std::memory_order_relaxed) : serial;
        if (item >= items) break;
        item_blocks(item / runs, item % runs, p0, p1);
      }
    }
  }
}

// ---- driver, column mode ------------------------------------------------------------------
//
// When one K block of all of A (M x kc) fits in L2 (kColumnModeABytes) and B does not
// (kColumnModeMinBBytes), one A block serves every column and no B micro-panel is needed
// by more than one work item. Each item (a run of nr-column panels) then packs its own B
// micro-panels just before it uses them, into a kc x nr buffer that stays in L1, and runs
// every mr-row tile of M over it:
//   pc (kc) -> jr (the item's panels) -> pack B[pc:pc+kc, jr*nr : +nr] -> ir (all of M)
// The panel mode above packs all of B into a shared buffer first; for the wide, shallow
// products of 1x1 convolutions on large maps (K = 256, N = 3136: 3 MiB) that buffer spills
// to L3 and memory, is read back by every row block, and its scattered writes made packing
// a fifth of the product's time. Measured on Zen 1, 2 threads, against the panel mode:
// 1.25-1.5x on ResNet-50's 1x1 layers on 56x56 maps, 1.1-1.25x on 28x28, 1.1-1.4x on
// im2col's 3x3 stride-2 products (M = 128), equal or within noise where M x kc is 512 KiB
// or B fits L2 (512 x 784 x 128 was 0.92x, hence kColumnModeMinBBytes). A, when not
// pre-packed, is packed by the team into a shared buffer in gemm_pack_a's layout (the
// mirror image of the panel mode's B), or by a lone thread one K block at a time. Items
// come from the shared counter; every C element still sees the same K blocks in the same
// order, so results do not depend on the mode's thread count either.
constexpr index_t kColumnModeABytes = index_t(256) << 10;  // half of Zen 1's L2
constexpr index_t kColumnModeMinBBytes = index_t(512) << 10;  // a shared B panel this big spills L2
constexpr int kColumnModeMinPanelsPerThread = 8;
constexpr index_t kColumnModeGatheredBBytes = index_t(4) << 20;

// Column mode needs enough panels to share out (kColumnModeMinPanelsPerThread each), but
// for a gathered B too big for L2 as a shared panel any share will do: ResNet-18's weight
// gradients of 64->64 3x3 on 56x56 (N = 576: 12 panels) and of the 7x7 stem (N = 147: 4)
// took 0.5x and 0.4x the time of the panel mode (Zen 4, 2 threads), while 64->128 3x3
// stride 2 (B 3.6 MiB) was 1.25x slower.
template <class T>
index_t column_mode_min_panels(const GemmOperand<T>& B, index_t K, index_t N) {
  if (B.k_offsets && K * N * index_t(sizeof(T)) >= kColumnModeGatheredBBytes) return 1;
  return kColumnModeMinPanelsPerThread;
}

// Column mode reads B in micro-panels, kc rows x nr columns: for a plain B (a 1x1
// convolution's input, rows ld apart) that is kc short pieces of rows in 2-3 lines each,
// which neither the hardware prefetcher nor pack_copy's few rows of look-ahead kept
// flowing from memory: packing was a fifth of 512->128 1x1 on 28x28 (Zen 3, perf), at
// about 6 GB/s a thread. So while a panel's tiles run, their micro-kernel calls take turns
// to fetch the next panel's rows into L2, a share each (kc / calls rows).
struct NextPanelPrefetch {
  const char* base = nullptr;  // the next panel's first row, or null: nothing to fetch
  index_t ld_bytes = 0, rows = 0, row_bytes = 0, per_call = 0, done = 0;

  template <class T>
  NextPanelPrefetch(const GemmOperand<T>& B, index_t pc, index_t kc, index_t c0, index_t n, index_t calls) {
    if (B.packed || B.k_offsets || B.trans || n <= 0) return;
    base = reinterpret_cast<const char*>(B.data + pc * B.ld + c0);
    ld_bytes = B.ld * index_t(sizeof(T));
    rows = kc;
    row_bytes = n * index_t(sizeof(T));
    per_call = ceil_div(kc, std::max<index_t>(1, calls));
  }
  void step() {  // after one micro-kernel call
    if (!base) return;
    const index_t end = std::min(rows, done + per_call);
    for (; done < end; ++done) {
      const char* r = base + done * ld_bytes;
      for (index_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(r + b, 0, 2);
      __builtin_prefetch(r + row_bytes - 1, 0, 2);  // a row's last line when it is not 64-aligned
    }
  }
};

template <class T>
void run_thread_columns(const GemmKernel<T>& kr, const Plan& pl, index_t runs, int tid, index_t M, index_t N,
                        index_t K, T alpha, const GemmOperand<T>& A, const GemmOperand<T>& B, T beta, T* C,
                        index_t ldc, const T* bias, T* apack, bool a_by_block, T* bbuf) {
  const int nt = pl.nt, mr = kr.mr, nr = kr.nr;
  const auto micro = micro_for(kr, A);
  const index_t mp = round_up(M, mr), npanels = ceil_div(N, nr);
  if (!A.packed && !a_by_block) {  // the team packs A: thread tid takes a share of its mr-row panels
    const index_t q0 = mp / mr * tid / nt, q1 = mp / mr * (tid + 1) / nt;
    const index_t r0 = q0 * mr, rows = std::min(M, q1 * mr) - r0;
    if (rows > 0)
      for (index_t pc = 0; pc < K; pc += pl.kc) {
        const index_t kc = std::min(pl.kc, K - pc);
        kr.pack_a(A.trans, rows, kc, A.trans ? A.data + pc * A.ld + r0 : A.data + r0 * A.ld + pc, A.ld,
                  apack + pc * mp + r0 * kc);
      }
    if (nt > 1) {
#pragma omp barrier  // all of A is packed
    }
  }
  for (index_t serial = 0;; ++serial) {
    const index_t item = nt > 1 ? pl.counters[0].fetch_add(1, std::memory_order_relaxed) : serial;
    if (item >= runs) break;
    const index_t j0 = npanels * item / runs, j1 = npanels * (item + 1) / runs;
    for (index_t pc = 0; pc < K; pc += pl.kc) {
      const index_t kc = std::min(pl.kc, K - pc);
      // One thread, one item (a_by_block): each K block of A is packed just before its use.
      const T* ablk = A.packed ? packed_block(A, mr, pc, kc, A.offset) : a_by_block ? apack : apack + pc * mp;
      if (a_by_block) kr.pack_a(A.trans, M, kc, A.trans ? A.data + pc * A.ld : A.data + pc, A.ld, apack);
      const T beta_k = pc == 0 ? beta : T(1);  // the first K block applies beta and the bias
      const T* bias_k = pc == 0 ? bias : nullptr;
      for (index_t jr = j0; jr < j1; ++jr) {
        const index_t c0 = jr * nr;
        const int n = int(std::min<index_t>(nr, N - c0));
        pack_b_block(kr, B, pc, kc, c0, n, bbuf);
        // The panel after this one: the next of the item's, else the item's first at the next depth.
        const bool last = jr + 1 == j1;
        const index_t next_pc = last ? pc + pl.kc : pc, next_c0 = last ? j0 * nr : c0 + nr;
        NextPanelPrefetch next(B, next_pc, next_pc < K ? std::min(pl.kc, K - next_pc) : 0, next_c0,
                               std::min<index_t>(nr, N - next_c0), ceil_div(M, mr));
        for (index_t ir = 0; ir < M; ir += mr) {
          const int m = int(std::min<index_t>(mr, M - ir));
          micro(kc, ablk + ir * kc, bbuf, C + ir * ldc + c0, ldc, m, n, alpha, beta_k,
                bias_k ? bias_k + ir : nullptr, pl.prefetch_c);
          next.step();
        }
      }
    }
  }
}

// Balanced K blocks: K = 576 with kc 256 runs as 3 x 192, not 256 + 256 + 64. Depends on
// K and the kernel only, so operands packed ahead of time share it.
template <class T>
index_t k_block(const GemmKernel<T>& kr, index_t K) {
  return ceil_div(K, ceil_div(K, kr.kc));
}

// body(plan, tid) on every thread of a team of pl.nt (the caller alone for one), with two
// fresh work counters. The runtime may give fewer threads than asked (OMP_THREAD_LIMIT,
// OMP_DYNAMIC): each thread's copy of the plan says how many came, so the shared packing
// is split among those.
template <class Body>
void run_team(Plan pl, Body&& body) {
  if (pl.nt == 1) {
    body(pl, 0);
    return;
  }
  std::atomic<index_t> counters[2];
  counters[0].store(0);
  counters[1].store(0);
  pl.counters = counters;
#pragma omp parallel num_threads(pl.nt)
  {
    Plan mine = pl;
    mine.nt = omp_get_num_threads();
    body(static_cast<const Plan&>(mine), omp_get_thread_num());
  }
}

template <class T>
void gemm_packed(const GemmKernel<T>& kr, index_t M, index_t N, index_t K, T alpha, const GemmOperand<T>& A,
                 const GemmOperand<T>& B, T beta, T* C, index_t ldc, const T* bias) {
  const int mr = kr.mr, nr = kr.nr;
  Plan pl;
  pl.kc = k_block(kr, K);
  pl.nc = round_up(ceil_div(N, ceil_div(N, kr.nc)), nr);
  // The packed B panel spans the whole depth unless that exceeds kBPanelBytes (then
  // whole kc blocks of it, at least one).
  const index_t panel_kcs = kBPanelBytes / (index_t(sizeof(T)) * pl.nc * pl.kc);
  pl.kb = std::min(K, std::max<index_t>(1, panel_kcs) * pl.kc);

  // Threads: the caller's team, unless nested in a parallel region or the product is small.
  int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double fmas = double(M) * double(N) * double(K);
  nt = int(std::max<double>(1, std::min<double>(nt, fmas / kMinFmaPerThread)));
  pl.nt = nt;
  pl.prefetch_c = !B.packed && M * N * index_t(sizeof(T)) >= kPrefetchCMinBytes;

  // Column mode (see run_thread_columns): A's K block in L2, enough column panels to share.
  const index_t npanels = ceil_div(N, nr);
  if (!B.packed && round_up(M, mr) * pl.kc * index_t(sizeof(T)) <= kColumnModeABytes &&
      K * N * index_t(sizeof(T)) >= kColumnModeMinBBytes &&
      (nt == 1 || npanels >= column_mode_min_panels(B, K, N) * nt)) {
    const index_t runs = nt == 1 ? 1 : std::min(npanels, index_t(kItemsPerThread) * nt);
    // A single thread packs A one K block at a time into an L2-sized buffer, not all of A
    // ahead (for the 7x7 stem's weight gradient, 3 MiB through L3 per image).
    const bool a_by_block = !A.packed && nt == 1;
    const index_t a_elems =
        A.packed ? 0 : round_up(round_up(M, mr) * (a_by_block ? pl.kc : K), kBufferAlignElems);
    const index_t b_stride = round_up(pl.kc * nr, kBufferAlignElems);
    T* base = static_cast<T*>(tl_scratch.get(sizeof(T) * std::size_t(a_elems + nt * b_stride)));
    T* apack = A.packed ? nullptr : base;
    T* bbase = base + a_elems;
    run_team(pl, [&](const Plan& mine, int tid) {
      run_thread_columns<T>(kr, mine, runs, tid, M, N, K, alpha, A, B, beta, C, ldc, bias, apack, a_by_block,
                            bbase + tid * b_stride);
    });
    return;
  }

  // Row blocks: at most mc rows; with threads, enough of them (a multiple of the team,
  // at least kItemsPerThread each while blocks keep kMinPanelsPerRowBlock mr panels) to
  // share out.
  pl.mp = ceil_div(M, mr);
  index_t mblocks = ceil_div(M, kr.mc);
  if (nt > 1) {
    mblocks =
        std::max(mblocks, std::min(ceil_div(pl.mp, kMinPanelsPerRowBlock), index_t(kItemsPerThread) * nt));
    if (mblocks > nt) mblocks = std::min(pl.mp, round_up(mblocks, nt));
  }
  pl.mblocks = std::max<index_t>(1, std::min(mblocks, pl.mp));
  pl.mc_max = ceil_div(pl.mp, pl.mblocks) * mr;
  // K blocks outside the row blocks (see run_thread) when the whole-depth B panel outgrows
  // L2 but one K block of it does not: a static split of the row blocks over the team.
  const index_t b_block_bytes = pl.kc * pl.nc * index_t(sizeof(T));
  pl.pc_outer = N <= pl.nc && pl.mblocks % nt == 0 && column_runs(pl, npanels) == 1 &&
                pl.kb * pl.nc * index_t(sizeof(T)) > kPcOuterMinBPanelBytes &&
                b_block_bytes <= kPcOuterMaxBBlockBytes;

  // One allocation from the caller's scratch: the shared B panel, then nt A blocks.
  const index_t b_elems = B.packed ? 0 : round_up(pl.kb * pl.nc, kBufferAlignElems);
  pl.a_stride = A.packed ? 0 : round_up(pl.mc_max * pl.kc, kBufferAlignElems);
  const std::size_t scratch = sizeof(T) * std::size_t(b_elems + nt * pl.a_stride);
  T* bbuf = scratch ? static_cast<T*>(tl_scratch.get(scratch)) : nullptr;
  T* abase = bbuf ? bbuf + b_elems : nullptr;

  run_team(pl, [&](const Plan& mine, int tid) {
    run_thread<T>(kr, mine, tid, M, N, K, alpha, A, B, beta, C, ldc, bias, bbuf,
                  abase ? abase + tid * pl.a_stride : nullptr);
  });
}

// ---- scalar micro-kernel: 4 x 4, portable -------------------------------------------------
// The fallback for CPUs without AVX2. Its cache blocks are the first version's (da4e6c9),
// never tuned: the vector kernels' are in gemm_avx2.cpp / gemm_avx512.cpp.
constexpr int kMrS = 4, kNrS = 4;
constexpr index_t kMcS = 128, kKcS = 256, kNcS = 2048;

}  // namespace

const GemmKernel<float>& kernel_scalar_f32() {
  // One lane: no prefetch (the streamed entry is the plain one).
  static const GemmKernel<float> k =
      make_kernel<TransposeScalar<float>, VecScalar<float>, float, kMrS, kNrS, false>("scalar", kMcS, kKcS,
                                                                                      kNcS);
  return k;
}

const GemmKernel<double>& kernel_scalar_f64() {
  static const GemmKernel<double> k =
      make_kernel<TransposeScalar<double>, VecScalar<double>, double, kMrS, kNrS, false>("scalar", kMcS, kKcS,
                                                                                         kNcS);
  return k;
}

}  // namespace gemm_detail

// ---- entry point ------------------------------------------------------------------------------

template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, const T* bias_m) {
  FC_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size (M=", M, ", N=", N, ", K=", K, ")");
  if (M == 0 || N == 0) return;
  FC_CHECK(ldc >= N, "gemm: ldc=", ldc, " < N=", N);
  FC_CHECK(C != nullptr, "gemm: C is null");
  if (K == 0) {
    gemm_detail::scale_rows(M, N, beta, C, ldc, bias_m);
    return;
  }
  FC_CHECK(lda >= (trans_a ? M : K), "gemm: lda=", lda, " too small (trans_a=", trans_a, ", M=", M, ", K=", K,
           ")");
  FC_CHECK(ldb >= (trans_b ? K : N), "gemm: ldb=", ldb, " too small (trans_b=", trans_b, ", K=", K, ", N=", N,
           ")");
  FC_CHECK(A != nullptr && B != nullptr, "gemm: A or B is null");
  const auto& kernel = gemm_detail::kernel_for(active_isa(), T(0));
  gemm_detail::gemm_packed<T>(kernel, M, N, K, alpha, GemmOperand<T>::plain(A, lda, trans_a),
                              GemmOperand<T>::plain(B, ldb, trans_b), beta, C, ldc, bias_m);
}

// ---- pre-packed operands ------------------------------------------------------------------
// Layout: for each K block (depth pc, kc deep), round_up(outer, panel) x kc values, panel
// after panel, exactly as the driver's own pack_a / pack_b write them (see packed_block).

template <class T>
index_t gemm_pack_a_elems(index_t M, index_t K) {
  const auto& kr = gemm_detail::kernel_for(active_isa(), T(0));
  return gemm_detail::round_up(M, kr.mr) * K;
}

template <class T>
index_t gemm_pack_b_elems(index_t K, index_t N) {
  const auto& kr = gemm_detail::kernel_for(active_isa(), T(0));
  return gemm_detail::round_up(N, kr.nr) * K;
}

template <class T>
PackedLayout gemm_pack_a_layout(index_t M, index_t K) {
  const auto& kr = gemm_detail::kernel_for(active_isa(), T(0));
  return PackedLayout{kr.mr, gemm_detail::k_block(kr, K), K, gemm_detail::round_up(M, kr.mr)};
}

template <class T>
PackedLayout gemm_pack_b_layout(index_t K, index_t N) {
  const auto& kr = gemm_detail::kernel_for(active_isa(), T(0));
  return PackedLayout{kr.nr, gemm_detail::k_block(kr, K), K, gemm_detail::round_up(N, kr.nr)};
}

int gemm_pack_a_rows_multiple(DType dtype) {
  return dtype == DType::f32 ? gemm_detail::kernel_for(active_isa(), float(0)).mr
                             : gemm_detail::kernel_for(active_isa(), double(0)).mr;
}

template <class T>
void gemm_pack_a(bool trans_a, index_t M, index_t K, const T* A, index_t lda, T* packed) {
  const auto& kr = gemm_detail::kernel_for(active_isa(), T(0));
  const index_t kc = gemm_detail::k_block(kr, K), mp = gemm_detail::round_up(M, kr.mr);
  // K blocks are independent: outside any team, they are shared out (packing is memory-bound).
  // Not inside a team of one either: a nested team's threads stay behind, spinning.
#pragma omp parallel for schedule(static) if (K > kc && omp_get_level() == 0)
  for (index_t pc = 0; pc < K; pc += kc) {
    const index_t k = std::min(kc, K - pc);
    kr.pack_a(trans_a, M, k, trans_a ? A + pc * lda : A + pc, lda, packed + pc * mp);
  }
}

template <class T>
void gemm_pack_b(bool trans_b, index_t K, index_t N, const T* B, index_t ldb, T* packed) {
  const auto& kr = gemm_detail::kernel_for(active_isa(), T(0));
  const index_t kc = gemm_detail::k_block(kr, K), np = gemm_detail::round_up(N, kr.nr);
  for (index_t pc = 0; pc < K; pc += kc) {
    const index_t k = std::min(kc, K - pc);
    kr.pack_b(trans_b, k, N, trans_b ? B + pc : B + pc * ldb, ldb, packed + pc * np);
  }
}

template <class T>
void gemm_ex(index_t M, index_t N, index_t K, T alpha, const GemmOperand<T>& A, const GemmOperand<T>& B,
             T beta, T* C, index_t ldc, const T* bias_m) {
  FC_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size (M=", M, ", N=", N, ", K=", K, ")");
  if (M == 0 || N == 0) return;
  FC_CHECK(ldc >= N && C != nullptr, "gemm: bad C (ldc=", ldc, ", N=", N, ")");
  if (K == 0) {
    gemm_detail::scale_rows(M, N, beta, C, ldc, bias_m);
    return;
  }
  const auto& kernel = gemm_detail::kernel_for(active_isa(), T(0));
  if (A.packed)
    FC_CHECK(A.offset % kernel.mr == 0 && A.offset + M <= A.packed_outer, "gemm: packed A rows [", A.offset,
             ", ", A.offset + M, ") do not fit its ", A.packed_outer, " rows in panels of ", kernel.mr);
  else
    FC_CHECK(A.data && A.ld >= (A.trans ? M : K), "gemm: bad A (lda=", A.ld, ")");
  if (B.packed)
    FC_CHECK(B.offset == 0 && B.packed_outer >= N, "gemm: packed B has ", B.packed_outer,
             " columns, the product ", N);  // its first N columns: the same panels
  else if (B.k_offsets)
    FC_CHECK(B.data && B.segment_offsets && B.segment > 0, "gemm: bad gathered B");
  else
    FC_CHECK(B.data && B.ld >= (B.trans ? K : N), "gemm: bad B (ldb=", B.ld, ")");
  gemm_detail::gemm_packed<T>(kernel, M, N, K, alpha, A, B, beta, C, ldc, bias_m);
}

#define FC_GEMM_PACKED_INSTANCES(T)                                                                       \
  template index_t gemm_pack_a_elems<T>(index_t, index_t);                                                \
  template index_t gemm_pack_b_elems<T>(index_t, index_t);                                                \
  template PackedLayout gemm_pack_a_layout<T>(index_t, index_t);                                          \
  template PackedLayout gemm_pack_b_layout<T>(index_t, index_t);                                          \
  template void gemm_pack_a<T>(bool, index_t, index_t, const T*, index_t, T*);                            \
  template void gemm_pack_b<T>(bool, index_t, index_t, const T*, index_t, T*);                            \
  template void gemm_ex<T>(index_t, index_t, index_t, T, const GemmOperand<T>&, const GemmOperand<T>&, T, \
                           T*, index_t, const T*);
FC_GEMM_PACKED_INSTANCES(float)
FC_GEMM_PACKED_INSTANCES(double)
#undef FC_GEMM_PACKED_INSTANCES

template void gemm<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t, const float*,
                          index_t, float, float*, index_t, const float*);
template void gemm<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t,
                           const double*, index_t, double, double*, index_t, const double*);

}  // namespace fastconv::cpu
