// winograd.h: the transform matrices of Winograd's minimal filtering algorithm
// F(m x m, 3 x 3) for m = 2, 4, 6 (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2015), and the 1-D/2-D transforms built from them. Shared by the
// CPU and (later) CUDA kernels; the CPU tests check these very functions.
//
// One output tile Y (m x m) of a cross-correlation with a 3x3 kernel g, from an input
// tile d of n x n = (m+2) x (m+2):
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A          ((.) = elementwise product)
// The matrices come from Cook-Toom (Toom-Cook) with n-1 finite interpolation points
// a_j and the point at infinity (tests/test_winograd.py rebuilds them in rationals):
//   A^T[i][j] = a_j^i,            A^T[i][n-1] = [i == m-1]
//   G[j][k]   = s_j a_j^k / f_j,  G[n-1][k]   = [k == 2],   f_j = prod_{l != j} (a_j - a_l)
//   B^T row j = s_j * coefficients (ascending) of prod_{l != j} (x - a_l); row n-1: of prod_l (x - a_l)
// with s_j = sign(f_j), so that G's scale factors are positive.
// Interpolation points, chosen for float32 accuracy (measured on random data with C = 256,
// max error / max |y|, same construction): the smallest magnitudes possible, since the
// error grows with the spread of |a_j| (the entries of A^T, G and B^T grow as powers of them):
//   F(2x2): 0, 1, -1                      (Lavin & Gray's matrices)                 ~1.4e-7
//   F(4x4): 0, 1, -1, 1/2, -1/2           (better than 0, +-1, +-2: 8.4e-6, and than
//                                          oneDNN's 0, +-5/8, +-3/2: 3.0e-6)        ~1.4e-6
//   F(6x6): 0, 1, -1, 2, -2, 1/2, -1/2    (as NNPACK; +-3/2 instead of +-1/2: 2.4e-4) ~7.4e-6
// Limits: 3x3 kernels, stride 1, dilation 1 (the algorithm's own limits).
#pragma once
#include "common.h"

namespace fastconv::winograd {

template <int M>
struct WinogradMatrices;  // AT (m x n), G (n x 3), BT (n x n), as double constants

// F(2x2, 3x3): points 0, 1, -1, inf
template <>
struct WinogradMatrices<2> {
  static constexpr int m = 2, r = 3, n = 4;
  static constexpr double AT[2][4] = {
      {1.0, 1.0, 1.0, 0.0},
      {0.0, 1.0, -1.0, 1.0},
  };
  static constexpr double G[4][3] = {
      {1.0, 0.0, 0.0},
      {1.0 / 2, 1.0 / 2, 1.0 / 2},
      {1.0 / 2, -1.0 / 2, 1.0 / 2},
      {0.0, 0.0, 1.0},
  };
  static constexpr double BT[4][4] = {
      {1.0, 0.0, -1.0, 0.0},
      {0.0, 1.0, 1.0, 0.0},
      {0.0, -1.0, 1.0, 0.0},
      {0.0, -1.0, 0.0, 1.0},
  };
};

// F(4x4, 3x3): points 0, 1, -1, 1/2, -1/2, inf
template <>
struct WinogradMatrices<4> {
  static constexpr int m = 4, r = 3, n = 6;
  static constexpr double AT[4][6] = {
      {1.0, 1.0, 1.0, 1.0, 1.0, 0.0},
      {0.0, 1.0, -1.0, 1.0 / 2, -1.0 / 2, 0.0},
      {0.0, 1.0, 1.0, 1.0 / 4, 1.0 / 4, 0.0},
      {0.0, 1.0, -1.0, 1.0 / 8, -1.0 / 8, 1.0},
  };
  static constexpr double G[6][3] = {
      {4.0, 0.0, 0.0},
      {2.0 / 3, 2.0 / 3, 2.0 / 3},
      {2.0 / 3, -2.0 / 3, 2.0 / 3},
      {8.0 / 3, 4.0 / 3, 2.0 / 3},
      {8.0 / 3, -4.0 / 3, 2.0 / 3},
      {0.0, 0.0, 1.0},
  };
  static constexpr double BT[6][6] = {
      {1.0 / 4, 0.0, -5.0 / 4, 0.0, 1.0, 0.0},  {0.0, -1.0 / 4, -1.0 / 4, 1.0, 1.0, 0.0},
      {0.0, 1.0 / 4, -1.0 / 4, -1.0, 1.0, 0.0}, {0.0, 1.0 / 2, 1.0, -1.0 / 2, -1.0, 0.0},
      {0.0, -1.0 / 2, 1.0, 1.0 / 2, -1.0, 0.0}, {0.0, 1.0 / 4, 0.0, -5.0 / 4, 0.0, 1.0},
  };
};

// F(6x6, 3x3): points 0, 1, -1, 2, -2, 1/2, -1/2, inf
template <>
struct WinogradMatrices<6> {
  static constexpr int m = 6, r = 3, n = 8;
  static constexpr double AT[6][8] = {
      {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0},
      {0.0, 1.0, -1.0, 2.0, -2.0, 1.0 / 2, -1.0 / 2, 0.0},
      {0.0, 1.0, 1.0, 4.0, 4.0, 1.0 / 4, 1.0 / 4, 0.0},
      {0.0, 1.0, -1.0, 8.0, -8.0, 1.0 / 8, -1.0 / 8, 0.0},
      {0.0, 1.0, 1.0, 16.0, 16.0, 1.0 / 16, 1.0 / 16, 0.0},
      {0.0, 1.0, -1.0, 32.0, -32.0, 1.0 / 32, -1.0 / 32, 1.0},
  };
  static constexpr double G[8][3] = {
      {1.0, 0.0, 0.0},
      {2.0 / 9, 2.0 / 9, 2.0 / 9},
      {2.0 / 9, -2.0 / 9, 2.0 / 9},
      {1.0 / 90, 1.0 / 45, 2.0 / 45},
      {1.0 / 90, -1.0 / 45, 2.0 / 45},
      {32.0 / 45, 16.0 / 45, 8.0 / 45},
      {32.0 / 45, -16.0 / 45, 8.0 / 45},
      {0.0, 0.0, 1.0},
  };
  static constexpr double BT[8][8] = {
      {1.0, 0.0, -21.0 / 4, 0.0, 21.0 / 4, 0.0, -1.0, 0.0},
      {0.0, -1.0, -1.0, 17.0 / 4, 17.0 / 4, -1.0, -1.0, 0.0},
      {0.0, 1.0, -1.0, -17.0 / 4, 17.0 / 4, 1.0, -1.0, 0.0},
      {0.0, 1.0 / 2, 1.0 / 4, -5.0 / 2, -5.0 / 4, 2.0, 1.0, 0.0},
      {0.0, -1.0 / 2, 1.0 / 4, 5.0 / 2, -5.0 / 4, -2.0, 1.0, 0.0},
      {0.0, 2.0, 4.0, -5.0 / 2, -5.0, 1.0 / 2, 1.0, 0.0},
      {0.0, -2.0, 4.0, 5.0 / 2, -5.0, -1.0 / 2, 1.0, 0.0},
      {0.0, -1.0, 0.0, 21.0 / 4, 0.0, -21.0 / 4, 0.0, 1.0},
  };
};

// ---- 1-D transforms over L lanes ---------------------------------------------------
// The functions are static: this header is compiled into each per-ISA copy of the
// Winograd kernel (scalar, AVX2, AVX-512 flags), and with external linkage the linker
// would keep one ISA's copy of any call that did not inline, for all three.
// out[i*os + l] = sum_j Mat[i][j] * in[j*is + l] for i < Rows, l < L. Row-vectors of L
// lanes (independent tiles or channels side by side), so the inner loop is a vector
// operation; the constant zeros and ones fold away once the loops are unrolled.
template <int Rows, int Cols, int L, class T>
static FC_HD inline void apply_1d(const double (&mat)[Rows][Cols], const T* in, index_t is, T* out,
                                  index_t os) {
  FC_UNROLL(8)
  for (int i = 0; i < Rows; ++i) {
    T acc[L];
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) acc[l] = T(0);
    FC_UNROLL(8)
    for (int j = 0; j < Cols; ++j) {
      const T c = T(mat[i][j]);
      if (mat[i][j] == 0.0) continue;
      FC_UNROLL(16)
      for (int l = 0; l < L; ++l) acc[l] += c * in[j * is + l];
    }
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) out[i * os + l] = acc[l];
  }
}

// ---- 2-D transforms of one tile per lane ----------------------------------------------
// Tiles are stored element-major, lanes innermost: t[(row * cols + col) * L + lane].
// out = Mat t Mat^T with Mat (Rows x Cols): t is Cols x Cols, out is Rows x Rows.
template <int Rows, int Cols, int L, class T>
static FC_HD inline void apply_2d(const double (&mat)[Rows][Cols], const T* t, T* out) {
  T tmp[Rows * Cols * L];  // Mat t: Rows x Cols
  FC_UNROLL(8)
  for (int col = 0; col < Cols; ++col)
    apply_1d<Rows, Cols, L>(mat, t + col * L, Cols * L, tmp + col * L, Cols * L);
  FC_UNROLL(8)
  for (int row = 0; row < Rows; ++row)  // (Mat t) Mat^T, row by row
    apply_1d<Rows, Cols, L>(mat, tmp + row * Cols * L, L, out + row * Rows * L, L);
}

// V = B^T d B: d is n x n, V is n x n.
template <int M, int L, class T>
static FC_HD inline void input_transform(const T* d, T* v) {
  apply_2d<M + 2, M + 2, L>(WinogradMatrices<M>::BT, d, v);
}
// U = G g G^T: g is 3 x 3, U is n x n.
template <int M, int L, class T>
static FC_HD inline void kernel_transform(const T* g, T* u) {
  apply_2d<M + 2, 3, L>(WinogradMatrices<M>::G, g, u);
}
// Y = A^T M A: M is n x n, Y is m x m.
template <int M, int L, class T>
static FC_HD inline void output_transform(const T* mm, T* y) {
  apply_2d<M, M + 2, L>(WinogradMatrices<M>::AT, mm, y);
}

}  // namespace fastconv::winograd
