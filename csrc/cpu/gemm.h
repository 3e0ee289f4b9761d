// gemm.h: the project's own packed GEMM (BLIS-style), float and double, row-major:
// C = alpha * op(A) op(B) + beta * C + a per-row bias. The driver is gemm.cpp, the vector
// micro-kernels gemm_avx2.cpp / gemm_avx512.cpp; the active ISA's kernel is chosen at run
// time (cpu_features.h). Every product of the CPU kernels goes through it: im2col's forward
// and data gradient (with a plan's weights pre-packed), the im2col weight gradient (a
// gathered B: an implicit im2col, see GemmOperand), direct's 1x1 path, Winograd's batched
// products (its transforms write the packed layouts directly, see PackedLayout) and FFT's
// per-frequency products.
// Entry points: gemm (plain operands), gemm_ex (each operand plain, pre-packed or, for B,
// gathered), gemm_pack_a / gemm_pack_b (pack an operand once for many products).
// Limits: unit element stride (rows may have any ld); no complex types; packed operands
// are valid only for the ISA, sizes and dtype they were packed with.
#pragma once
#include <algorithm>

#include "common.h"

namespace fastconv::cpu {

// C (M x N) = alpha * op(A) * op(B) + beta * C + bias_m[m]   (row-major)
//   op(A) is M x K: A[m*lda + k], or A[k*lda + m] when trans_a
//   op(B) is K x N: B[k*ldb + n], or B[n*ldb + k] when trans_b
//   bias_m: M values added to each row of the result, or nullptr.
// beta == 0 overwrites C without reading it (C may hold NaN on entry).
// Threads: the OpenMP team of the caller; called inside a parallel region it runs
// on the calling thread alone (so batched callers can parallelise outside).
template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, const T* bias_m = nullptr);

// ---- operands packed once, used by many products --------------------------------------
// A product whose A (weights: Winograd's transformed kernel, a plan's GEMM panels) or B
// (Winograd's transformed tiles, shared by every block of output channels) is reused
// can pack it once into the micro-panel layout the driver works from, and skip that
// packing in every later call. The layout belongs to the active ISA's kernel (panel
// height/width, K blocking), so a packed operand is valid only for the ISA, sizes and
// dtype it was packed with; callers re-pack after set_isa.
//   packed A of op(A) (M x K): gemm_pack_a_elems(M, K) elements
//   packed B of op(B) (K x N): gemm_pack_b_elems(K, N) elements
template <class T>
index_t gemm_pack_a_elems(index_t M, index_t K);
template <class T>
void gemm_pack_a(bool trans_a, index_t M, index_t K, const T* A, index_t lda, T* packed);
template <class T>
index_t gemm_pack_b_elems(index_t K, index_t N);
template <class T>
void gemm_pack_b(bool trans_b, index_t K, index_t N, const T* B, index_t ldb, T* packed);
// Row granularity of packed A: a product may use rows [row0, row0 + M) of a packed
// operand when row0 is a multiple of this.
int gemm_pack_a_rows_multiple(DType dtype);

// Where element (i, k) of a packed operand lives, for producers that write the packed
// form directly (Winograd's transforms): i is the row of op(A) or the column of op(B)
// (the "outer" index, in panels of `panel`), k the depth. Within one panel and K block,
// consecutive i are consecutive in memory.
struct PackedLayout {
  int panel = 1;      // mr (A) or nr (B)
  index_t kc = 1;     // K block
  index_t K = 0, outer_padded = 0;
  index_t offset(index_t i, index_t k) const {
    const index_t pc = k / kc * kc, depth = std::min(kc, K - pc);
    return pc * outer_padded + (i / panel) * panel * depth + (k - pc) * panel + i % panel;
  }
  index_t elems() const { return outer_padded * K; }
};
template <class T>
PackedLayout gemm_pack_a_layout(index_t M, index_t K);
template <class T>
PackedLayout gemm_pack_b_layout(index_t K, index_t N);

// A packed operand, a plain one (packed == nullptr: the driver packs it as gemm does), or,
// for B only, a gathered one: an implicit im2col that is never written (Chetlur et al.,
// "cuDNN", 2014; XNNPACK's indirection buffer, Dukhan 2019). Its K rows are at offsets
// k_offsets[k] of data, and each row's N columns lie in runs of `segment` contiguous values
// at segment_offsets[n / segment] from the row's start:
//   op(B)(k, n) = data[k_offsets[k] + segment_offsets[n / segment] + n % segment]
// (a conv's patches of a padded channels-last image: k a pixel, a segment one kernel row's
// S x C values). The driver packs it straight into its micro-panels.
template <class T>
struct GemmOperand {
  const T* data = nullptr;  // plain: op() of it is read with ld and trans
  index_t ld = 0;
  bool trans = false;
  const index_t* k_offsets = nullptr;        // gathered B (see above)
  const index_t* segment_offsets = nullptr;
  index_t segment = 0;
  const T* packed = nullptr;  // from gemm_pack_a / gemm_pack_b
  index_t packed_outer = 0;   // the M (A) or N (B) it was packed with (B: the product may
                              // use its first N <= packed_outer columns)
  index_t offset = 0;         // A: first packed row used (a multiple of the row multiple)
  bool streamed = false;      // A: packed long before the product (a plan's weights), so
                          // likely out of the caches: the micro-kernel prefetches it
  static GemmOperand plain(const T* d, index_t ld, bool trans = false) {
    GemmOperand o;
    o.data = d;
    o.ld = ld;
    o.trans = trans;
    return o;
  }
  static GemmOperand gathered(const T* d, const index_t* k_offsets, const index_t* segment_offsets,
                              index_t segment) {
    GemmOperand o;
    o.data = d;
    o.k_offsets = k_offsets;
    o.segment_offsets = segment_offsets;
    o.segment = segment;
    return o;
  }
  static GemmOperand prepacked(const T* p, index_t outer, index_t offset = 0, bool streamed = false) {
    GemmOperand o;
    o.packed = p;
    o.packed_outer = outer;
    o.offset = offset;
    o.streamed = streamed;
    return o;
  }
};

// A packed just before its products (a call's weights, packed once for many images) but bigger
// than this is read by them from beyond L2 (half of Zen 3's), so they mark it streamed, as a
// plan's weights are.
constexpr index_t kStreamedPackedABytes = index_t(256) << 10;

// gemm with either operand possibly pre-packed: C = alpha * A B + beta * C + bias_m.
template <class T>
void gemm_ex(index_t M, index_t N, index_t K, T alpha, const GemmOperand<T>& A, const GemmOperand<T>& B,
             T beta, T* C, index_t ldc, const T* bias_m = nullptr);

}  // namespace fastconv::cpu
