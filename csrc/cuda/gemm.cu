// gemm.cu: fastconv's tiled GEMM on the GPU, C = alpha * op(A) @ op(B) + beta * C (float and
// double, row-major, batched), and the convolution products that run on the same kernel as
// implicit GEMMs (gemm.h lists the entry points).
//
// The kernel is the classic SIMT GEMM of the CUDA SDK / CUTLASS's SIMT path / "How to optimize
// SGEMM" (Volkov & Demmel 2008; Lai & Seznec 2013), in plain CUDA:
//   - a block computes a BM x BN tile of C, reading op(A) and op(B) in BK-deep k-tiles through
//     shared memory, stored k-major (As[k][m], Bs[k][n]) so that a k step reads rows;
//   - register blocking: each thread accumulates a TM x TN tile of C (8 x 8 on the large float tile),
//     so a k step costs TM/V + TN/V 128-bit shared loads (V = 4 floats / 2 doubles) for TM*TN
//     FMAs. A thread's TM rows are TM/V runs of V rows, the runs BM/(TM/V) apart (its columns
//     likewise): the V-wide runs of consecutive threads are adjacent, so each quarter warp's
//     128-bit loads cover 128 contiguous bytes and no bank is hit twice;
//   - double buffering: the next k-tile is loaded from global memory into registers while the
//     current one is multiplied from shared memory, then stored into the other shared buffer;
//     one __syncthreads per k-tile;
//   - 128-bit global loads (float4 / double2) where the operand allows it (base 16-byte aligned,
//     leading dimension and batch stride multiples of V; checked at run time per operand),
//     scalar loads otherwise and at the edges (zero-filled past M, N and K, so any M, N, K >= 1
//     works); the epilogue stores 128-bit runs where C allows it, and never reads C when beta == 0;
//   - tiles chosen per problem (pick_tile): 128 x 64 for large M and N, 64 x 64, and 32 x 32 for
//     small M or N (conv layers with 7x7..14x14 outputs), the largest that still makes enough
//     blocks; the blocks are ordered in groups of 8 tile rows so that neighbours share A and B in L2.
// The operands and the epilogue are policies of the kernel (the "loaders" below), so the same main
// loop also runs the convolutions' implicit GEMMs: the im2col patch matrix is gathered from x by
// the tile loads (Chetlur et al., "cuDNN", 2014: implicit GEMM), images side by side as columns,
// output written straight into y (N, K, P, Q) with the bias. The weight gradient, with its long
// reduction over every pixel of the batch and few output tiles, splits the reduction into slices
// (split-K) whose partial products are summed in a fixed order: deterministic, no atomics.
// Limits: no tensor cores (TF32/FP64 MMA), no cp.async/TMA pipelines: a SIMT kernel, well below
// cuBLAS on Ampere/Hopper for large float problems. H, W, P, Q, R, S and strides must fit in int
// (conv2d_im2col_supports checks). The split count targets a fixed number of blocks (kTargetBlocks,
// two per SM of an H100), not the device's SM count, so results do not depend on the device.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gemm.h"
#include "portable.cuh"

namespace fastconv::cuda {
namespace {

#if FC_EMULATED
#define FC_GEMM_DEV inline
#define FC_GEMM_UNROLL
#define FC_GEMM_BOUNDS(threads, min_blocks)
#else
#define FC_GEMM_DEV __device__ __forceinline__
#define FC_GEMM_UNROLL _Pragma("unroll")
#define FC_GEMM_BOUNDS(threads, min_blocks) __launch_bounds__(threads, min_blocks)
#endif

// ---- helpers -------------------------------------------------------------------------------

// 128-bit loads and stores of V = 16 / sizeof(T) values (the address is 16-byte aligned).
FC_GEMM_DEV void load_vec(const float* p, float* r) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}
FC_GEMM_DEV void load_vec(const double* p, double* r) {
  const double2 v = *reinterpret_cast<const double2*>(p);
  r[0] = v.x, r[1] = v.y;
}
FC_GEMM_DEV void store_vec(float* p, const float* r) {
  *reinterpret_cast<float4*>(p) = make_float4(r[0], r[1], r[2], r[3]);
}
FC_GEMM_DEV void store_vec(double* p, const double* r) {
  *reinterpret_cast<double2*>(p) = make_double2(r[0], r[1]);
}

template <class T>
bool aligned16(const T* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}
inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// A block tile: BM x BN of C, BK deep, each thread TM x TN of it; MIN_BLOCKS blocks per SM
// bound the registers (__launch_bounds__: 65536 / (NT * MIN_BLOCKS) a thread at most).
template <class T, int BM_, int BN_, int BK_, int TM_, int TN_, int MIN_BLOCKS_>
struct TileCfg {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_, MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int V = int(16 / sizeof(T));                // values per 128-bit access
  static constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;  // threads across N, across M; all
  static constexpr int SMEM = 2 * BK * (BM + BN) * int(sizeof(T));  // two buffers of As, Bs
  static_assert(TM % V == 0 && TN % V == 0, "a thread's rows and columns are whole 128-bit runs");
  static_assert(BM % TM == 0 && BN % TN == 0, "");
};

// The tiles of each type. Large: 8x8 per thread (64 FMAs per 4 LDS.128 a k step) on 128 x 64,
// 128 threads: with 8x8 the compiler needs ~140-170 registers (64 accumulators, both k steps'
// fragments, the next k-tile's values, the loaders' pointers), so 256 threads on 128 x 128 would
// run one block (8 warps) per SM; 128-thread blocks run three (12 warps) within 170 registers, and
// each block's barrier stalls only its own 4 warps. Medium and small: 4x4 per thread.
// Double: the same shapes, fewer blocks per SM (a double takes two registers).
enum class TileKind { large, medium, small };
template <class T>
struct Tiles;
template <>
struct Tiles<float> {
  using Large = TileCfg<float, 128, 64, 8, 8, 8, 3>;  // 128 threads
  using Medium = TileCfg<float, 64, 64, 16, 4, 4, 2>; // 256 threads
  using Small = TileCfg<float, 32, 32, 16, 4, 4, 8>;  // 64 threads
};
template <>
struct Tiles<double> {
  using Large = TileCfg<double, 128, 64, 8, 8, 4, 1>;  // 8x4: 8x8 doubles leave too few registers
  using Medium = TileCfg<double, 64, 64, 16, 4, 4, 1>;
  using Small = TileCfg<double, 32, 32, 16, 4, 4, 4>;
};

// At least this many blocks before a larger tile is chosen: about one block per SM of an H100
// (132 SMs); fewer blocks leave SMs idle, which costs more than a smaller tile's extra traffic.
constexpr index_t kMinBlocks = 128;
// The weight gradient splits its reduction until it has about this many blocks (two per SM of
// an H100), slices of at least kMinSliceK reduction steps, partial sums within kMaxSplitBytes.
constexpr index_t kTargetBlocks = 264;
constexpr index_t kMinSliceK = 256;
constexpr index_t kMaxSplitBytes = index_t(64) << 20;
// The kernel counts the reduction of one product (or slice) in an int.
constexpr index_t kMaxReduction = (index_t(1) << 31) - 64;
// Slices are whole multiples of this many reduction steps (a multiple of every tile's BK, so a
// slice starts on a 128-bit boundary of the operands).
constexpr index_t kSliceMultiple = 32;

// The forced tile (FASTCONV_CUDA_GEMM_TILE), or -1.
int forced_tile() {
  const char* env = std::getenv("FASTCONV_CUDA_GEMM_TILE");
  if (!env || !*env) return -1;
  if (!std::strcmp(env, "large")) return int(TileKind::large);
  if (!std::strcmp(env, "medium")) return int(TileKind::medium);
  if (!std::strcmp(env, "small")) return int(TileKind::small);
  throw std::invalid_argument(
      str_cat("fastconv: FASTCONV_CUDA_GEMM_TILE='", env, "'; expected large, medium or small"));
}

// The tile for an M x N product, Z of them in one launch: the largest that still makes
// kMinBlocks blocks (when the reduction can be split, `splittable`, the largest that M and N
// fill, as split-K makes the blocks).
template <class T>
TileKind pick_tile(index_t M, index_t N, index_t Z, bool splittable) {
  if (const int f = forced_tile(); f >= 0) return TileKind(f);
  using L = typename Tiles<T>::Large;
  using Md = typename Tiles<T>::Medium;
  if (splittable) {
    if (M >= L::BM && N >= L::BN) return TileKind::large;
    if (M >= Md::BM && N >= Md::BN) return TileKind::medium;
    return TileKind::small;
  }
  auto blocks = [&](index_t bm, index_t bn) { return ceil_div(M, bm) * ceil_div(N, bn) * Z; };
  if (blocks(L::BM, L::BN) >= kMinBlocks) return TileKind::large;
  if (blocks(Md::BM, Md::BN) >= kMinBlocks) return TileKind::medium;
  return TileKind::small;
}

// What one launch computes: Z = batch * splits products of M x N over a reduction of K, the
// reduction of each in slices of k_slice; z0 the first (batch, slice) index of this launch.
struct Shape {
  index_t M = 0, N = 0, K = 0;
  index_t tiles_m = 0, tiles_n = 0;
  index_t splits = 1, k_slice = 0;
  index_t z0 = 0;
};

// Block pid's tile (tm, tn): tile rows in groups of 8, column by column within a group, so
// consecutive blocks share their B tiles and a group's A tiles stay in L2.
FC_GEMM_DEV void tile_coords(index_t pid, index_t tiles_m, index_t tiles_n, index_t& tm, index_t& tn) {
  constexpr index_t kGroupRows = 8;
  const index_t per_group = kGroupRows * tiles_n, group = pid / per_group, first = group * kGroupRows;
  const index_t rows = fc_min(tiles_m - first, kGroupRows), r = pid - group * per_group;
  tm = first + r % rows;
  tn = r / rows;
}

// ---- operands: how a k-tile (BK x BI, BI = BM for A, BN for B) gets from global to shared ----
// Each loader reads its share of a k-tile into registers (load) and writes it into the shared
// buffer S[k][i] (store). Element (k, i) of the tile is operand element (k0 + k, i0 + i); past
// the extent I or the end of the reduction (slice) it is 0. Threads own "slots" of V values:
//   RowSlots: V consecutive i of one k row, stored as one 128-bit store (consecutive threads on
//     consecutive runs of one row: conflict-free);
//   ColSlots: V consecutive k of one i, stored as V scalar stores (consecutive threads on
//     consecutive i of one row: conflict-free), for operands contiguous along k.
template <class Cfg, int BI>
struct RowSlots {
  static constexpr int V = Cfg::V, PER_ROW = BI / V, N = Cfg::BK * BI / (Cfg::NT * V);
  static_assert(N >= 1 && N * Cfg::NT * V == Cfg::BK * BI, "a k-tile is whole slots of every thread");
  static FC_GEMM_DEV int k(int tid, int s) { return (tid + s * Cfg::NT) / PER_ROW; }
  static FC_GEMM_DEV int i(int tid, int s) { return (tid + s * Cfg::NT) % PER_ROW * V; }
  template <class T>
  static FC_GEMM_DEV void store(T* S, int tid, const T (&r)[N][V]) {
    FC_GEMM_UNROLL
    for (int s = 0; s < N; ++s) store_vec(S + k(tid, s) * BI + i(tid, s), r[s]);
  }
};
template <class Cfg, int BI>
struct ColSlots {
  static constexpr int V = Cfg::V, N = Cfg::BK * BI / (Cfg::NT * V);
  static_assert(N >= 1 && N * Cfg::NT * V == Cfg::BK * BI, "a k-tile is whole slots of every thread");
  static_assert(BI % 32 == 0, "a warp stores 32 consecutive values of one row");
  static FC_GEMM_DEV int k(int tid, int s) { return (tid + s * Cfg::NT) / BI * V; }
  static FC_GEMM_DEV int i(int tid, int s) { return (tid + s * Cfg::NT) % BI; }
  template <class T>
  static FC_GEMM_DEV void store(T* S, int tid, const T (&r)[N][V]) {
    FC_GEMM_UNROLL
    for (int s = 0; s < N; ++s) {
      FC_GEMM_UNROLL
      for (int v = 0; v < V; ++v) S[(k(tid, s) + v) * BI + i(tid, s)] = r[s][v];
    }
  }
};

// A plain matrix: element (k, i) of batch b at p[b*batch_stride + k*ld + i] (PlainRow: A with
// trans_a, B without trans_b) or p[b*batch_stride + i*ld + k] (PlainCol: A without trans_a, B with
// trans_b). vec: p 16-byte aligned and ld, batch_stride multiples of V.
// Every loader starts at the reduction index kbeg and steps one k-tile per load(k_left), k_left
// being the reduction values left from that tile on (rows k >= k_left of the tile are zero).
// They keep little state per slot (a pointer, a few ints), as the large float tile's 64
// accumulators leave 64 of its 128 registers for everything else.
template <class T>
struct PlainOp {
  const T* p;
  index_t ld, batch_stride;
  bool vec;
};

// The number of valid values of a run of V starting at index i of an extent I, in [0, V].
template <int V>
FC_GEMM_DEV int run_limit(index_t i, index_t I) {
  return int(fc_max<index_t>(0, fc_min<index_t>(V, I - i)));
}

template <class T, class Cfg, int BI>
struct PlainRow {
  using Args = PlainOp<T>;
  using Slots = RowSlots<Cfg, BI>;
  static constexpr int V = Cfg::V;
  const Args& a;
  const int tid;
  const T* q[Slots::N];  // the slot's run in the current k-tile
  int lim[Slots::N];     // valid values of the run
  bool full;             // every run whole and 128-bit aligned
  T r[Slots::N][V];
  FC_GEMM_DEV PlainRow(const Args& a_, index_t batch, index_t i0, index_t I, index_t kbeg, int tid_)
      : a(a_), tid(tid_), full(a_.vec) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const index_t i = i0 + Slots::i(tid, s);
      lim[s] = run_limit<V>(i, I);
      full = full && lim[s] == V;
      q[s] = a.p + batch * a.batch_stride + (kbeg + Slots::k(tid, s)) * a.ld + (lim[s] > 0 ? i : 0);
    }
  }
  FC_GEMM_DEV void load(int k_left) {
    if (full && k_left >= Cfg::BK) {  // the common case: one 128-bit load a slot, no tests
      FC_GEMM_UNROLL
      for (int s = 0; s < Slots::N; ++s) load_vec(q[s], r[s]);
    } else {
      FC_GEMM_UNROLL
      for (int s = 0; s < Slots::N; ++s) {
        const bool k_in = Slots::k(tid, s) < k_left;
        if (k_in && a.vec && lim[s] == V) {
          load_vec(q[s], r[s]);
        } else {
          FC_GEMM_UNROLL
          for (int v = 0; v < V; ++v) r[s][v] = k_in && v < lim[s] ? q[s][v] : T(0);
        }
      }
    }
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) q[s] += Cfg::BK * a.ld;
  }
  FC_GEMM_DEV void store(T* S) const { Slots::store(S, tid, r); }
};

template <class T, class Cfg, int BI>
struct PlainCol {
  using Args = PlainOp<T>;
  using Slots = ColSlots<Cfg, BI>;
  static constexpr int V = Cfg::V;
  const Args& a;
  const int tid;
  const T* q[Slots::N];  // the slot's run in the current k-tile
  bool ok[Slots::N];     // its row is inside the extent
  bool full;             // every row inside and 128-bit aligned
  T r[Slots::N][V];
  FC_GEMM_DEV PlainCol(const Args& a_, index_t batch, index_t i0, index_t I, index_t kbeg, int tid_)
      : a(a_), tid(tid_), full(a_.vec) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const index_t i = i0 + Slots::i(tid, s);
      ok[s] = i < I;
      full = full && ok[s];
      q[s] = a.p + batch * a.batch_stride + (ok[s] ? i : 0) * a.ld + kbeg + Slots::k(tid, s);
    }
  }
  FC_GEMM_DEV void load(int k_left) {
    if (full && k_left >= Cfg::BK) {  // the common case: one 128-bit load a slot, no tests
      FC_GEMM_UNROLL
      for (int s = 0; s < Slots::N; ++s) load_vec(q[s], r[s]);
    } else {
      FC_GEMM_UNROLL
      for (int s = 0; s < Slots::N; ++s) {
        const int k = Slots::k(tid, s);
        if (ok[s] && a.vec && k + V <= k_left) {
          load_vec(q[s], r[s]);
        } else {
          FC_GEMM_UNROLL
          for (int v = 0; v < V; ++v) r[s][v] = ok[s] && k + v < k_left ? q[s][v] : T(0);
        }
      }
    }
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) q[s] += Cfg::BK;
  }
  FC_GEMM_DEV void store(T* S) const { Slots::store(S, tid, r); }
};

// Rows of pixels of several images side by side: element (row, col) of batch b at
// p[b*batch_stride + row*row_stride + (col / per_img)*img_stride + col % per_img]. grad_y's
// (K/g, images*P*Q) rows (img_stride K*P*Q), x's (C/g, images*H*W) for 1x1 stride-1 unpadded
// kernels, and y's / grad_x's output rows. vec: p aligned, every stride and per_img multiples of V
// (a run of V columns starting at a multiple of V is then contiguous and aligned).
// Column indices and per_img are below 2^31 (the convolutions' entry points check it).
template <class T>
struct ColsOp {
  const T* p;
  index_t batch_stride, row_stride;
  int per_img;
  index_t img_stride;
  bool vec;
};
// Offset of column j within a row.
FC_GEMM_DEV index_t col_offset(int j, int per_img, index_t img_stride) {
  const int img = j / per_img;
  return img * img_stride + (j - img * per_img);
}

// ColsOp as the B of a GEMM whose reduction runs along the rows: element (k, i) = (row k, col i).
// A slot's run of V columns: its first column's offset and index in its image; the rest stepped.
template <class T, class Cfg, int BI>
struct ColsRow {
  using Args = ColsOp<T>;
  using Slots = RowSlots<Cfg, BI>;
  static constexpr int V = Cfg::V;
  const Args& a;
  const int tid;
  const T* q[Slots::N];  // the run's first column in the current k-tile
  int at[Slots::N], lim[Slots::N];
  bool full;  // every run whole and 128-bit aligned
  T r[Slots::N][V];
  FC_GEMM_DEV ColsRow(const Args& a_, index_t batch, index_t i0, index_t I, index_t kbeg, int tid_)
      : a(a_), tid(tid_), full(a_.vec) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const index_t j = i0 + Slots::i(tid, s);
      lim[s] = run_limit<V>(j, I);
      full = full && lim[s] == V;
      const int jj = lim[s] > 0 ? int(j) : 0, img = jj / a.per_img;
      at[s] = jj - img * a.per_img;
      q[s] = a.p + batch * a.batch_stride + (kbeg + Slots::k(tid, s)) * a.row_stride + img * a.img_stride +
             at[s];
    }
  }
  FC_GEMM_DEV void load(int k_left) {
    if (full && k_left >= Cfg::BK) {  // the common case: one 128-bit load a slot, no tests
      FC_GEMM_UNROLL
      for (int s = 0; s < Slots::N; ++s) load_vec(q[s], r[s]);
    } else {
      FC_GEMM_UNROLL
      for (int s = 0; s < Slots::N; ++s) {
        const bool k_in = Slots::k(tid, s) < k_left;
        if (k_in && a.vec && lim[s] == V) {
          load_vec(q[s], r[s]);
        } else {
          index_t o = 0;
          int at_v = at[s];
          FC_GEMM_UNROLL
          for (int v = 0; v < V; ++v) {
            r[s][v] = k_in && v < lim[s] ? q[s][o] : T(0);
            ++o;
            if (++at_v == a.per_img) at_v = 0, o += a.img_stride - a.per_img;  // the next image
          }
        }
      }
    }
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) q[s] += Cfg::BK * a.row_stride;
  }
  FC_GEMM_DEV void store(T* S) const { Slots::store(S, tid, r); }
};

// ColsOp with the reduction along the columns: element (k, i) = (row i, col k). The weight
// gradient's grad_y (its A) and, for 1x1 stride-1 unpadded kernels, its x (B).
template <class T, class Cfg, int BI>
struct ColsCol {
  using Args = ColsOp<T>;
  using Slots = ColSlots<Cfg, BI>;
  static constexpr int V = Cfg::V;
  const Args& a;
  const int tid;
  int k0;                  // the current k-tile's first reduction index
  const T* row[Slots::N];  // the slot's row
  bool ok[Slots::N];       // inside the extent
  T r[Slots::N][V];
  FC_GEMM_DEV ColsCol(const Args& a_, index_t batch, index_t i0, index_t I, index_t kbeg, int tid_)
      : a(a_), tid(tid_), k0(int(kbeg)) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const index_t i = i0 + Slots::i(tid, s);
      ok[s] = i < I;
      row[s] = a.p + batch * a.batch_stride + (ok[s] ? i : 0) * a.row_stride;
    }
  }
  FC_GEMM_DEV void load(int k_left) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const int kt = Slots::k(tid, s);
      const int k = k0 + kt, img = k / a.per_img;
      int at = k - img * a.per_img;
      const T* q = row[s] + img * a.img_stride + at;
      if (ok[s] && a.vec && kt + V <= k_left) {
        load_vec(q, r[s]);
      } else {
        index_t o = 0;
        FC_GEMM_UNROLL
        for (int v = 0; v < V; ++v) {
          r[s][v] = ok[s] && kt + v < k_left ? q[o] : T(0);
          ++o;
          if (++at == a.per_img) at = 0, o += a.img_stride - a.per_img;
        }
      }
    }
    k0 += Cfg::BK;
  }
  FC_GEMM_DEV void store(T* S) const { Slots::store(S, tid, r); }
};

// The unrolled patch matrix of x, never written: row kk = (c, r, s) (c of the group), column
// j = (image, p, q), value x[image, g*C/g + c, p*stride_h - pad_h + r*dil_h, q*stride_w - pad_w +
// s*dil_w] (0 outside the image); batch g starts at x + g*batch_stride.
template <class T>
struct PatchOp {
  const T* x;
  index_t batch_stride, img_stride, HW;
  int PQ, RS, H, W, P, Q, S;  // the columns (N*P*Q) and rows (C/g*R*S) are below 2^31 too
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};
// A row index past every image (bounds tests then fail whatever the kernel offset adds).
constexpr int kFar = -(1 << 30);

// The forward's B: element (k, i) = patch row k, column i. A slot's run of V columns: the first
// one's (image, p, q) decoded once, the rest stepped; each k-tile decodes its row (c, r, s)
// once per slot.
template <class T, class Cfg, int BI>
struct PatchRow {
  using Args = PatchOp<T>;
  using Slots = RowSlots<Cfg, BI>;
  static constexpr int V = Cfg::V;
  const Args& a;
  const T* x;
  const int tid;
  int k0;  // the current k-tile's first reduction index
  int img[Slots::N], op[Slots::N], oq[Slots::N], lim[Slots::N];
  T r[Slots::N][V];
  FC_GEMM_DEV PatchRow(const Args& a_, index_t batch, index_t i0, index_t I, index_t kbeg, int tid_)
      : a(a_), x(a_.x + batch * a_.batch_stride), tid(tid_), k0(int(kbeg)) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const int j = int(i0) + Slots::i(tid, s), n = j / a.PQ, pq = j - n * a.PQ;
      img[s] = n;
      op[s] = pq / a.Q;
      oq[s] = pq - op[s] * a.Q;
      lim[s] = run_limit<V>(j, I);
    }
  }
  FC_GEMM_DEV void load(int k_left) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const bool k_in = Slots::k(tid, s) < k_left;
      const int k = k_in ? k0 + Slots::k(tid, s) : 0, c = k / a.RS;
      const int rs = k - c * a.RS, rr = rs / a.S, ss = rs - rr * a.S;
      const int dh = rr * a.dil_h - a.pad_h, dw = ss * a.dil_w - a.pad_w;
      const T* xk = x + c * a.HW;
      int n = img[s], p = op[s], q = oq[s];
      FC_GEMM_UNROLL
      for (int v = 0; v < V; ++v) {
        const int ih = p * a.stride_h + dh, iw = q * a.stride_w + dw;
        const bool in = k_in && v < lim[s] && unsigned(ih) < unsigned(a.H) && unsigned(iw) < unsigned(a.W);
        r[s][v] = in ? xk[n * a.img_stride + index_t(ih) * a.W + iw] : T(0);
        if (++q == a.Q) {
          q = 0;
          if (++p == a.P) p = 0, ++n;
        }
      }
    }
    k0 += Cfg::BK;
  }
  FC_GEMM_DEV void store(T* S) const { Slots::store(S, tid, r); }
};

// The weight gradient's B: element (k, i) = patch row i, column k (the reduction runs over the
// pixels). A thread's row (c, r, s) is fixed; each k-tile decodes its first column once per slot
// and steps through the next V.
template <class T, class Cfg, int BI>
struct PatchCol {
  using Args = PatchOp<T>;
  using Slots = ColSlots<Cfg, BI>;
  static constexpr int V = Cfg::V;
  const Args& a;
  const int tid;
  int k0;                              // the current k-tile's first reduction index
  const T* xc[Slots::N];               // x's channel c of the group
  int hoff[Slots::N], woff[Slots::N];  // r*dil_h - pad_h, s*dil_w - pad_w (kFar past the extent)
  T r[Slots::N][V];
  FC_GEMM_DEV PatchCol(const Args& a_, index_t batch, index_t i0, index_t I, index_t kbeg, int tid_)
      : a(a_), tid(tid_), k0(int(kbeg)) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const int i = int(i0) + Slots::i(tid, s), c = i / a.RS;
      const int rs = i - c * a.RS, rr = rs / a.S, ss = rs - rr * a.S;
      xc[s] = a.x + batch * a.batch_stride + (i < I ? c : 0) * a.HW;
      hoff[s] = i < I ? rr * a.dil_h - a.pad_h : kFar;
      woff[s] = ss * a.dil_w - a.pad_w;
    }
  }
  FC_GEMM_DEV void load(int k_left) {
    FC_GEMM_UNROLL
    for (int s = 0; s < Slots::N; ++s) {
      const int kt = Slots::k(tid, s);
      const int k = k0 + kt, n0 = k / a.PQ, pq = k - n0 * a.PQ;
      int n = n0, p = pq / a.Q, q = pq - p * a.Q;
      FC_GEMM_UNROLL
      for (int v = 0; v < V; ++v) {
        const int ih = p * a.stride_h + hoff[s], iw = q * a.stride_w + woff[s];
        const bool in = kt + v < k_left && unsigned(ih) < unsigned(a.H) && unsigned(iw) < unsigned(a.W);
        r[s][v] = in ? xc[s][n * a.img_stride + index_t(ih) * a.W + iw] : T(0);
        if (++q == a.Q) {
          q = 0;
          if (++p == a.P) p = 0, ++n;
        }
      }
    }
    k0 += Cfg::BK;
  }
  FC_GEMM_DEV void store(T* S) const { Slots::store(S, tid, r); }
};

// ---- epilogues: a thread's TM x TN results to memory -----------------------------------------
// Thread (tx, ty)'s row t = g*V + u (g < TM/V, u < V) is tile row g*TY*V + ty*V + u; its column
// t = h*V + l is tile column h*TX*V + tx*V + l.
template <class Cfg>
FC_GEMM_DEV int tile_row(int t, int ty) {
  return t / Cfg::V * Cfg::TY * Cfg::V + ty * Cfg::V + t % Cfg::V;
}
template <class Cfg>
FC_GEMM_DEV int tile_col(int t, int tx) {
  return t / Cfg::V * Cfg::TX * Cfg::V + tx * Cfg::V + t % Cfg::V;
}

// C = alpha * acc + beta * C (C not read when beta == 0); batch b and slice s at
// c + b*stride_c + s*split_stride. vec: c aligned, ldc and the strides multiples of V.
template <class T>
struct PlainOut {
  T* c;
  index_t ldc, stride_c, split_stride;
  T alpha, beta;
  bool vec;
};
template <class T, class Cfg>
struct PlainEpi {
  using Args = PlainOut<T>;
  static constexpr int V = Cfg::V;
  static FC_GEMM_DEV void store(const Args& e, index_t batch, index_t split, index_t m0, index_t n0,
                                index_t M, index_t N, int tx, int ty, const T (&acc)[Cfg::TM][Cfg::TN]) {
    T* c = e.c + batch * e.stride_c + split * e.split_stride;
    FC_GEMM_UNROLL
    for (int t = 0; t < Cfg::TM; ++t) {
      const index_t m = m0 + tile_row<Cfg>(t, ty);
      if (m >= M) continue;
      T* row = c + m * e.ldc;
      FC_GEMM_UNROLL
      for (int h = 0; h < Cfg::TN; h += V) {
        const index_t n = n0 + tile_col<Cfg>(h, tx);
        T v[V];
        FC_GEMM_UNROLL
        for (int l = 0; l < V; ++l) v[l] = e.alpha * acc[t][h + l];
        if (e.vec && n + V <= N) {
          if (e.beta != T(0)) {
            T old[V];
            load_vec(row + n, old);
            FC_GEMM_UNROLL
            for (int l = 0; l < V; ++l) v[l] += e.beta * old[l];
          }
          store_vec(row + n, v);
        } else {
          FC_GEMM_UNROLL
          for (int l = 0; l < V; ++l)
            if (n + l < N) row[n + l] = e.beta != T(0) ? v[l] + e.beta * row[n + l] : v[l];
        }
      }
    }
  }
};

// acc + bias[row] into rows of pixels (the ColsOp layout: y's (K/g, N*P*Q) rows, grad_x's
// (C/g, N*H*W)); bias may be null; batch b's bias at bias + b*bias_stride.
template <class T>
struct ColsOut {
  T* p;
  index_t batch_stride, row_stride;
  int per_img;
  index_t img_stride;
  const T* bias;
  index_t bias_stride;
  bool vec;
};
template <class T, class Cfg>
struct ColsEpi {
  using Args = ColsOut<T>;
  static constexpr int V = Cfg::V;
  static FC_GEMM_DEV void store(const Args& e, index_t batch, index_t, index_t m0, index_t n0, index_t M,
                                index_t N, int tx, int ty, const T (&acc)[Cfg::TM][Cfg::TN]) {
    T* out = e.p + batch * e.batch_stride;
    index_t off[Cfg::TN];  // the columns' offsets, -1 past N
    FC_GEMM_UNROLL
    for (int t = 0; t < Cfg::TN; ++t) {
      const index_t n = n0 + tile_col<Cfg>(t, tx);
      off[t] = n < N ? col_offset(int(n), e.per_img, e.img_stride) : -1;
    }
    FC_GEMM_UNROLL
    for (int t = 0; t < Cfg::TM; ++t) {
      const index_t m = m0 + tile_row<Cfg>(t, ty);
      if (m >= M) continue;
      const T b = e.bias ? e.bias[batch * e.bias_stride + m] : T(0);
      T* row = out + m * e.row_stride;
      FC_GEMM_UNROLL
      for (int h = 0; h < Cfg::TN; h += V) {
        T v[V];
        FC_GEMM_UNROLL
        for (int l = 0; l < V; ++l) v[l] = acc[t][h + l] + b;
        if (e.vec && off[h + V - 1] >= 0) {
          store_vec(row + off[h], v);
        } else {
          FC_GEMM_UNROLL
          for (int l = 0; l < V; ++l)
            if (off[h + l] >= 0) row[off[h + l]] = v[l];
        }
      }
    }
  }
};

// ---- kernels -------------------------------------------------------------------------------

// One BM x BN tile of C per block, for (batch, slice) z = z0 + blockIdx.z; the tiles in
// blockIdx.x (tile_coords). A (op(A), M x K) and B (op(B), K x N) come through the loaders AL,
// BL; the results go out through Epi. Dynamic shared memory: Cfg::SMEM bytes.
template <class T, class Cfg, class AL, class BL, class Epi>
__global__ void FC_GEMM_BOUNDS(Cfg::NT, Cfg::MIN_BLOCKS)
    tiled_gemm(const Shape sh, const typename AL::Args a, const typename BL::Args b,
               const typename Epi::Args e) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN, V = Cfg::V;
  FC_DYNAMIC_SHARED(T, smem);
  T* const As = smem;                // [2][BK][BM]
  T* const Bs = smem + 2 * BK * BM;  // [2][BK][BN]
  const int tid = int(threadIdx.x), tx = tid % Cfg::TX, ty = tid / Cfg::TX;
  index_t tm, tn;
  tile_coords(index_t(blockIdx.x), sh.tiles_m, sh.tiles_n, tm, tn);
  const index_t z = sh.z0 + index_t(blockIdx.z), batch = z / sh.splits, split = z - batch * sh.splits;
  const index_t m0 = tm * BM, n0 = tn * BN;
  const index_t kbeg = split * sh.k_slice, kend = fc_min(sh.K, kbeg + sh.k_slice);

  T acc[TM][TN];
  FC_GEMM_UNROLL
  for (int i = 0; i < TM; ++i) {
    FC_GEMM_UNROLL
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  }
  const int k_total = int(kend - kbeg);  // < 2^31: the entry points check the reduction length
  if (k_total > 0) {
    AL al(a, batch, m0, sh.M, kbeg, tid);
    BL bl(b, batch, n0, sh.N, kbeg, tid);
    al.load(k_total);
    bl.load(k_total);
    al.store(As);
    bl.store(Bs);
    __syncthreads();
    // The buffers being multiplied and filled: swapped after each k-tile.
    T *a_cur = As, *a_next = As + BK * BM, *b_cur = Bs, *b_next = Bs + BK * BN;
    for (int k_left = k_total - BK;; k_left -= BK) {  // the values left after the current k-tile
      const bool more = k_left > 0;
      if (more) {  // the next k-tile into registers while this one is multiplied
        al.load(k_left);
        bl.load(k_left);
      }
      const T* A = a_cur + ty * V;
      const T* B = b_cur + tx * V;
      FC_GEMM_UNROLL
      for (int k = 0; k < BK; ++k) {
        T fa[TM], fb[TN];
        FC_GEMM_UNROLL
        for (int g = 0; g < TM; g += V) load_vec(A + k * BM + g * Cfg::TY, fa + g);
        FC_GEMM_UNROLL
        for (int h = 0; h < TN; h += V) load_vec(B + k * BN + h * Cfg::TX, fb + h);
        FC_GEMM_UNROLL
        for (int i = 0; i < TM; ++i) {
          FC_GEMM_UNROLL
          for (int j = 0; j < TN; ++j) acc[i][j] += fa[i] * fb[j];
        }
      }
      if (!more) break;
      al.store(a_next);
      bl.store(b_next);
      __syncthreads();
      T* t = a_cur;
      a_cur = a_next, a_next = t;
      t = b_cur;
      b_cur = b_next, b_next = t;
    }
  }
  Epi::store(e, batch, split, m0, n0, sh.M, sh.N, tx, ty, acc);
}

// out[e] = sum over s < splits of part[s*total + e], in order of s. out (total), part (splits, total).
template <class T>
__global__ void sum_slices(const T* part, index_t splits, index_t total, T* out) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    T s = part[e];
    for (index_t sp = 1; sp < splits; ++sp) s += part[sp * total + e];
    out[e] = s;
  }
}

// ---- launchers ----------------------------------------------------------------------------

// Launches tiled_gemm for Z (batch, slice) products, in grids of at most 65535 along z.
template <class T, class Cfg, class AL, class BL, class Epi>
void launch_tiled(Shape s, index_t Z, const typename AL::Args& a, const typename BL::Args& b,
                  const typename Epi::Args& e, void* stream) {
  s.tiles_m = ceil_div(s.M, Cfg::BM);
  s.tiles_n = ceil_div(s.N, Cfg::BN);
  const unsigned tiles = blocks_for(s.tiles_m * s.tiles_n, 1);
  const auto tiled_gemm_kernel = tiled_gemm<T, Cfg, AL, BL, Epi>;
  constexpr index_t kMaxGridZ = 65535;
  for (index_t z0 = 0; z0 < Z; z0 += kMaxGridZ) {
    s.z0 = z0;
    const dim3 grid(tiles, 1, unsigned(fc_min(kMaxGridZ, Z - z0)));
    FC_LAUNCH(tiled_gemm_kernel, grid, dim3(Cfg::NT), Cfg::SMEM, stream, s, a, b, e);
  }
}

// launch_tiled with the tile `kind`, the loaders and epilogue given as templates of the tile.
template <class T, template <class, class, int> class AL, template <class, class, int> class BL,
          template <class, class> class Epi, class AArgs, class BArgs, class EArgs>
void run_tiled(TileKind kind, const Shape& s, index_t Z, const AArgs& a, const BArgs& b, const EArgs& e,
               void* stream) {
  switch (kind) {
    case TileKind::large: {
      using C = typename Tiles<T>::Large;
      return launch_tiled<T, C, AL<T, C, C::BM>, BL<T, C, C::BN>, Epi<T, C>>(s, Z, a, b, e, stream);
    }
    case TileKind::medium: {
      using C = typename Tiles<T>::Medium;
      return launch_tiled<T, C, AL<T, C, C::BM>, BL<T, C, C::BN>, Epi<T, C>>(s, Z, a, b, e, stream);
    }
    default: {
      using C = typename Tiles<T>::Small;
      return launch_tiled<T, C, AL<T, C, C::BM>, BL<T, C, C::BN>, Epi<T, C>>(s, Z, a, b, e, stream);
    }
  }
}

// A Shape with the whole reduction in one slice.
Shape one_slice(index_t M, index_t N, index_t K) {
  Shape s;
  s.M = M, s.N = N, s.K = K;
  s.splits = 1;
  s.k_slice = fc_max<index_t>(K, 1);
  return s;
}

template <class T>
ColsOp<T> cols_op(const T* p, index_t batch_stride, index_t row_stride, index_t per_img, index_t img_stride) {
  constexpr index_t V = 16 / sizeof(T);
  const bool vec =
      aligned16(p) && batch_stride % V == 0 && row_stride % V == 0 && per_img % V == 0 && img_stride % V == 0;
  return {p, batch_stride, row_stride, int(per_img), img_stride, vec};
}

template <class T>
PatchOp<T> make_patch_op(const ConvParams& p, const T* x) {
  PatchOp<T> a;
  a.x = x;
  a.batch_stride = p.C_per_group() * p.H * p.W;
  a.img_stride = p.C * p.H * p.W;
  a.HW = p.H * p.W;
  a.PQ = int(p.P * p.Q);
  a.RS = int(p.R * p.S);
  a.H = int(p.H), a.W = int(p.W), a.P = int(p.P), a.Q = int(p.Q), a.S = int(p.S);
  a.stride_h = int(p.stride_h), a.stride_w = int(p.stride_w);
  a.pad_h = int(p.pad_h), a.pad_w = int(p.pad_w);
  a.dil_h = int(p.dil_h), a.dil_w = int(p.dil_w);
  return a;
}

// The convolutions' kernels index images, columns (N*P*Q) and GEMM reductions with ints.
void check_conv_fits(const ConvParams& p) {
  FC_CHECK(conv_gemm_fits(p),
           "the CUDA im2col kernels take image sizes, padding, strides and dilations below 2^30 "
           "and GEMM sizes (C/groups*R*S, K/groups, N*P*Q) below 2^31");
}

// The weight gradient's tile and reduction slices.
struct WeightPlan {
  TileKind tile;
  index_t splits, k_slice;
};
template <class T>
WeightPlan weight_plan(const ConvParams& p) {
  const index_t M = p.K_per_group(), N = p.C_per_group() * p.R * p.S, J = p.N * p.P * p.Q;
  WeightPlan plan{pick_tile<T>(M, N, p.groups, true), 1, fc_max<index_t>(J, 1)};
  index_t bm = Tiles<T>::Small::BM, bn = Tiles<T>::Small::BN;
  if (plan.tile == TileKind::large) bm = Tiles<T>::Large::BM, bn = Tiles<T>::Large::BN;
  if (plan.tile == TileKind::medium) bm = Tiles<T>::Medium::BM, bn = Tiles<T>::Medium::BN;
  const index_t blocks = ceil_div(M, bm) * ceil_div(N, bn) * p.groups;
  index_t splits = fc_min(ceil_div(kTargetBlocks, blocks), J / kMinSliceK);
  splits = fc_min(splits, kMaxSplitBytes / (p.K * N * index_t(sizeof(T))));
  if (splits <= 1) return plan;
  plan.k_slice = ceil_div(ceil_div(J, splits), kSliceMultiple) * kSliceMultiple;
  plan.splits = ceil_div(J, plan.k_slice);
  if (plan.splits <= 1) plan.splits = 1, plan.k_slice = fc_max<index_t>(J, 1);
  return plan;
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------

template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, void* stream, index_t batch, index_t stride_a,
          index_t stride_b, index_t stride_c) {
  FC_CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 0, "gemm: negative size (M ", M, ", N ", N, ", K ", K,
           ", batch ", batch, ")");
  FC_CHECK(lda >= fc_max<index_t>(trans_a ? M : K, 1) && ldb >= fc_max<index_t>(trans_b ? K : N, 1) &&
               ldc >= fc_max<index_t>(N, 1),
           "gemm: leading dimension too small (lda ", lda, ", ldb ", ldb, ", ldc ", ldc, ")");
  FC_CHECK(K <= kMaxReduction, "gemm: K = ", K, " is past the kernel's 32-bit reduction counter");
  if (M == 0 || N == 0 || batch == 0) return;
  constexpr index_t V = 16 / sizeof(T);
  const PlainOp<T> a{A, lda, stride_a, aligned16(A) && lda % V == 0 && stride_a % V == 0};
  const PlainOp<T> b{B, ldb, stride_b, aligned16(B) && ldb % V == 0 && stride_b % V == 0};
  const PlainOut<T> e{C, ldc, stride_c, 0, alpha, beta, aligned16(C) && ldc % V == 0 && stride_c % V == 0};
  const Shape s = one_slice(M, N, K);
  const TileKind kind = pick_tile<T>(M, N, batch, false);
  if (trans_a && trans_b)
    run_tiled<T, PlainRow, PlainCol, PlainEpi>(kind, s, batch, a, b, e, stream);
  else if (trans_a)
    run_tiled<T, PlainRow, PlainRow, PlainEpi>(kind, s, batch, a, b, e, stream);
  else if (trans_b)
    run_tiled<T, PlainCol, PlainCol, PlainEpi>(kind, s, batch, a, b, e, stream);
  else
    run_tiled<T, PlainCol, PlainRow, PlainEpi>(kind, s, batch, a, b, e, stream);
}

template <class T>
void conv_forward_gemm(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, void* stream) {
  check_conv_fits(p);
  const index_t Kg = p.K_per_group(), Cg = p.C_per_group(), CRS = Cg * p.R * p.S, PQ = p.P * p.Q;
  const index_t cols = p.N * PQ, HW = p.H * p.W;
  if (Kg == 0 || cols == 0) return;
  constexpr index_t V = 16 / sizeof(T);
  // A = w_g (K/g, CRS): element (k = crs, i = kg) at w[g*Kg*CRS + kg*CRS + crs].
  const PlainOp<T> a{w, CRS, Kg * CRS, aligned16(w) && CRS % V == 0};
  ColsOut<T> e{y, Kg * PQ, PQ, int(PQ), p.K * PQ, bias, Kg, false};
  e.vec = cols_op<T>(y, e.batch_stride, e.row_stride, e.per_img, e.img_stride).vec;
  const Shape s = one_slice(Kg, cols, CRS);
  const TileKind kind = pick_tile<T>(Kg, cols, p.groups, false);
  if (conv_data_gemm_is_grad_x(p))  // 1x1, stride 1, unpadded: B is x's (C/g, N*H*W) rows
    run_tiled<T, PlainCol, ColsRow, ColsEpi>(kind, s, p.groups, a, cols_op<T>(x, Cg * HW, HW, HW, p.C * HW),
                                             e, stream);
  else
    run_tiled<T, PlainCol, PatchRow, ColsEpi>(kind, s, p.groups, a, make_patch_op(p, x), e, stream);
}

template <class T>
void conv_backward_data_gemm(const ConvParams& p, const T* grad_y, const T* w, index_t n0, index_t m, T* out,
                             void* stream) {
  check_conv_fits(p);
  const index_t Kg = p.K_per_group(), Cg = p.C_per_group(), CRS = Cg * p.R * p.S, PQ = p.P * p.Q;
  const index_t cols = m * PQ, HW = p.H * p.W;
  if (CRS == 0 || cols == 0) return;
  constexpr index_t V = 16 / sizeof(T);
  // A = w_g^T (CRS, K/g): element (k = kg, i = crs) at w[g*Kg*CRS + kg*CRS + crs].
  const PlainOp<T> a{w, CRS, Kg * CRS, aligned16(w) && CRS % V == 0};
  // B = grad_y[n0 : n0+m, g] as (K/g, m*PQ).
  const ColsOp<T> b = cols_op<T>(grad_y + n0 * p.K * PQ, Kg * PQ, PQ, PQ, p.K * PQ);
  const Shape s = one_slice(CRS, cols, Kg);
  const TileKind kind = pick_tile<T>(CRS, cols, p.groups, false);
  if (conv_data_gemm_is_grad_x(p)) {  // col is grad_x's (C/g, m*H*W) rows
    T* gx = out + n0 * p.C * HW;
    ColsOut<T> e{gx, Cg * HW, HW, int(HW), p.C * HW, nullptr, 0, false};
    e.vec = cols_op<T>(gx, e.batch_stride, e.row_stride, e.per_img, e.img_stride).vec;
    run_tiled<T, PlainRow, ColsRow, ColsEpi>(kind, s, p.groups, a, b, e, stream);
  } else {
    const PlainOut<T> e{out, cols, CRS * cols, 0, T(1), T(0), aligned16(out) && cols % V == 0};
    run_tiled<T, PlainRow, ColsRow, PlainEpi>(kind, s, p.groups, a, b, e, stream);
  }
}

bool conv_gemm_fits(const ConvParams& p) {
  constexpr index_t kMaxDim = index_t(1) << 30;
  for (const index_t v : {p.H, p.W, p.P, p.Q, p.R, p.S, p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dil_h,
                          p.dil_w, p.N, p.H + p.pad_h + p.dil_h * p.R, p.W + p.pad_w + p.dil_w * p.S})
    if (v >= kMaxDim) return false;
  return p.C_per_group() * p.R * p.S <= kMaxReduction && p.K_per_group() <= kMaxReduction &&
         p.N * p.P * p.Q <= kMaxReduction && p.P * p.Q <= kMaxReduction;
}

index_t conv_backward_weight_gemm_workspace(const ConvParams& p, int elem_bytes) {
  const WeightPlan plan = elem_bytes == 4 ? weight_plan<float>(p) : weight_plan<double>(p);
  return plan.splits > 1 ? plan.splits * p.K * p.C_per_group() * p.R * p.S * elem_bytes : 0;
}

template <class T>
void conv_backward_weight_gemm(const ConvParams& p, const T* x, const T* grad_y, T* grad_w, void* workspace,
                               void* stream) {
  check_conv_fits(p);
  const index_t Kg = p.K_per_group(), Cg = p.C_per_group(), CRS = Cg * p.R * p.S, PQ = p.P * p.Q;
  const index_t J = p.N * PQ, HW = p.H * p.W;
  if (Kg == 0 || CRS == 0) return;
  constexpr index_t V = 16 / sizeof(T);
  const WeightPlan plan = weight_plan<T>(p);
  Shape s = one_slice(Kg, CRS, J);
  s.splits = plan.splits;
  s.k_slice = plan.k_slice;
  // A = grad_y_g (K/g, N*PQ); B^T = the patches (CRS, N*PQ): element (k = pixel, i = crs).
  const ColsOp<T> a = cols_op<T>(grad_y, Kg * PQ, PQ, PQ, p.K * PQ);
  T* out = plan.splits > 1 ? static_cast<T*>(workspace) : grad_w;
  FC_CHECK(out, "conv_backward_weight_gemm: no workspace for ", plan.splits, " slices");
  const PlainOut<T> e{out, CRS, Kg * CRS, p.K * CRS, T(1), T(0), aligned16(out) && CRS % V == 0};
  const index_t Z = p.groups * plan.splits;
  if (conv_data_gemm_is_grad_x(p))  // 1x1, stride 1, unpadded: B^T is x's (C/g, N*H*W) rows
    run_tiled<T, ColsCol, ColsCol, PlainEpi>(plan.tile, s, Z, a, cols_op<T>(x, Cg * HW, HW, HW, p.C * HW), e,
                                             stream);
  else
    run_tiled<T, ColsCol, PatchCol, PlainEpi>(plan.tile, s, Z, a, make_patch_op(p, x), e, stream);
  if (plan.splits > 1) {
    const index_t total = p.K * CRS;
    constexpr int kThreads = 256;
    const auto sum_slices_kernel = sum_slices<T>;
    FC_LAUNCH(sum_slices_kernel, blocks_for(total, kThreads), kThreads, 0, stream, out, plan.splits, total,
              grad_w);
  }
}

#define FC_GEMM_INSTANCES(T)                                                                               \
  template void gemm<T>(bool, bool, index_t, index_t, index_t, T, const T*, index_t, const T*, index_t, T, \
                        T*, index_t, void*, index_t, index_t, index_t, index_t);                           \
  template void conv_forward_gemm<T>(const ConvParams&, const T*, const T*, const T*, T*, void*);          \
  template void conv_backward_data_gemm<T>(const ConvParams&, const T*, const T*, index_t, index_t, T*,    \
                                           void*);                                                         \
  template void conv_backward_weight_gemm<T>(const ConvParams&, const T*, const T*, T*, void*, void*);
FC_GEMM_INSTANCES(float)
FC_GEMM_INSTANCES(double)
#undef FC_GEMM_INSTANCES

}  // namespace fastconv::cuda
