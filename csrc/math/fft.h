// fft.h: the 2-D real FFT of one n x n tile (n = 8, 16) and its inverse, for the tiled
// FFT convolution (overlap-save) of cpu/conv2d_fft.cpp. Shared by the CPU and (later)
// CUDA kernels; the CPU tests check these very functions against numpy.fft.
//
// Approach: FFT convolution on tiles as in NNPACK's FFT convolution and in Vasilache et
// al., "Fast Convolutional Nets With fbfft: A GPU Performance Evaluation" (2015), after
// Mathieu, Henaff & LeCun, "Fast Training of Convolutional Networks through FFTs" (2014).
// The codelets are the project's own: radix-2 decimation in frequency, unrolled at
// compile time, with the trivial twiddles (1, -i, (+-1 - i)/sqrt 2) special-cased, so
// every length-4 sub-block is a multiplication-free radix-4 butterfly. Real transforms
// of length N use the half-length complex FFT of z[k] = x[2k] + i x[2k+1] and one
// post-processing (pre-processing for the inverse) pass.
//
// Conventions (both unnormalised, as numpy.fft without its 1/n^2):
//   forward  X[u][v] = sum_{i,j} x[i][j] e^{-2 pi I (u i + v j) / n}
//   inverse  x[i][j] = sum_{u,v} X[u][v] e^{+2 pi I (u i + v j) / n}   (u, v over all n)
// so inverse(forward(x)) = n^2 x; callers fold the 1/n^2 into the kernel spectrum.
//
// Layout. Tiles are element-major with L lanes innermost (independent tiles or channels
// side by side, so every operation is a vector operation over the lanes):
//   real tile  t[(i * n + j) * L + l]
//   spectrum   re[b * L + l], im[b * L + l], b < kBins = n*n/2 + 2 distinct bins
// The Hermitian half of a real tile's spectrum is n x (n/2+1) complex; of it, the bins
// (u, v) with v in {0, n/2} and u > n/2 are conjugates of (n-u, v), so only
// n*n/2 + 2 bins are distinct (the same count of reals as the tile). Their order:
//   b = 0..3            the four real bins (0,0), (n/2,0), (0,n/2), (n/2,n/2) (im = 0)
//   b = 4..n/2+2        (u, 0),   u = 1..n/2-1
//   b = n/2+3..n+1      (u, n/2), u = 1..n/2-1
//   b = n+2 + (v-1)*n + u   (u, v), v = 1..n/2-1, u = 0..n-1
// bin_u()/bin_v() give (u, v) of a bin. The inverse reads only these bins (and no im of
// the real bins): the spectrum is taken to be Hermitian, as numpy's irfft2 does.
// Limits: n = 8 or 16 (twiddles are tabulated in sixteenths of a turn).
#pragma once
#include <type_traits>

#include "common.h"

// Internal linkage everywhere: this header is compiled into each per-ISA copy of the
// kernels, and a shared (weak) out-of-line instantiation would let the linker pick one
// ISA's code for all of them (the scalar copy's, say, for the AVX-512 kernel, or worse).
// FC_FFT_FN (the butterflies, twiddles and compile-time loops inside one 1-D transform,
// and the transforms themselves) is forced inline, so each transform is one straight-line
// codelet. Forced into the 2-D tile transforms too, a tile transform flattened 10-26
// codelets into one huge function per caller, which cost GCC 4-6 minutes per ISA copy of
// conv2d_fft.cpp. So the 2-D transforms call the 16-point passes through out-of-line
// copies (FC_FFT_OUTLINE, *_out below: one copy of each codelet per ISA) and inline only
// the short 8-point ones, whose call overhead showed (fft:8 layers up to 5-10 % slower
// with every pass out of line); 22-26 s per copy, as fast as before (the passes meet in
// memory either way: a tile's row spectra do not fit in registers). The passes' strides
// are template parameters, so every address in a codelet is a constant offset, and their
// arrays are __restrict (inputs and outputs never overlap): out of line without it, GCC
// could not reorder the unrolled lanes' real and imaginary stores into vectors and the
// codelets ran as scalar code, 2x slower.
#if defined(__CUDACC__)
#define FC_FFT_FN static __forceinline__ __host__ __device__
#define FC_FFT_LAMBDA
#define FC_FFT_OUTLINE static __forceinline__ __host__ __device__
#elif defined(__GNUC__) && !defined(FC_SANITIZE)  // sanitizer builds: see FC_UNROLL (common.h)
#define FC_FFT_FN static inline __attribute__((always_inline))
#define FC_FFT_LAMBDA __attribute__((always_inline))
#define FC_FFT_OUTLINE static __attribute__((noinline))
#else
#define FC_FFT_FN static inline
#define FC_FFT_LAMBDA
#define FC_FFT_OUTLINE static
#endif

namespace fastconv::fft {

// ---- helpers ---------------------------------------------------------------------------

// f(std::integral_constant<int, I>) for I = Begin .. End-1: compile-time loop indices, so
// twiddle choices and bit reversals resolve while compiling.
template <int Begin, int End, class F>
FC_FFT_FN void static_for(F&& f) {
  if constexpr (Begin < End) {
    f(std::integral_constant<int, Begin>{});
    static_for<Begin + 1, End>(f);
  }
}

// cos and sin of 2 pi j / 16.
constexpr double kCos16[8] = {1.0, 0.92387953251128674,  0.70710678118654752,  0.38268343236508977,
                              0.0, -0.38268343236508977, -0.70710678118654752, -0.92387953251128674};
constexpr double kSin16[8] = {0.0, 0.38268343236508977, 0.70710678118654752, 0.92387953251128674,
                              1.0, 0.92387953251128674, 0.70710678118654752, 0.38268343236508977};

constexpr int bit_reverse(int x, int bits) {
  int r = 0;
  for (int i = 0; i < bits; ++i) r |= ((x >> i) & 1) << (bits - 1 - i);
  return r;
}
constexpr int log2i(int n) { return n <= 1 ? 0 : 1 + log2i(n / 2); }

// (re, im) *= w^J, w = e^{-2 pi I / S} (forward) or e^{+2 pi I / S} (Inv); J < S/2, S | 16.
template <int S, int J, bool Inv, int L, class T>
FC_FFT_FN void twiddle(T* re, T* im) {
  constexpr int j = J * (16 / S);  // sixteenths of a turn, 0..7
  constexpr double c = kCos16[j], s = Inv ? kSin16[j] : -kSin16[j];
  if constexpr (j == 0) {
    return;
  } else if constexpr (j == 4) {  // w = s I: (re, im) -> (-s im, s re), no multiplication
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      const T r = re[l];
      re[l] = s > 0 ? -im[l] : im[l];
      im[l] = s > 0 ? r : -r;
    }
  } else if constexpr (j == 2 || j == 6) {  // |c| = |s| = sqrt(1/2): two multiplications
    constexpr double q = s / c;             // +-1
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      const T r = re[l], i = im[l];
      re[l] = T(c) * (q > 0 ? r - i : r + i);
      im[l] = T(c) * (q > 0 ? i + r : i - r);
    }
  } else {
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      const T r = re[l], i = im[l];
      re[l] = r * T(c) - i * T(s);
      im[l] = r * T(s) + i * T(c);
    }
  }
}

// In-place radix-2 decimation in frequency on a block of S elements (lanes innermost):
// afterwards element p holds the block's DFT at bit_reverse(p).
template <int S, bool Inv, int L, class T>
FC_FFT_FN void dif(T (*re)[L], T (*im)[L]) {
  if constexpr (S > 1) {
    constexpr int H = S / 2;
    static_for<0, H>([&](auto kc) FC_FFT_LAMBDA {
      constexpr int k = decltype(kc)::value;
      FC_UNROLL(16)
      for (int l = 0; l < L; ++l) {
        const T ar = re[k][l], ai = im[k][l], br = re[k + H][l], bi = im[k + H][l];
        re[k][l] = ar + br;
        im[k][l] = ai + bi;
        re[k + H][l] = ar - br;
        im[k + H][l] = ai - bi;
      }
      twiddle<S, k, Inv, L>(re[k + H], im[k + H]);
    });
    dif<H, Inv, L>(re, im);
    dif<H, Inv, L>(re + H, im + H);
  }
}

// ---- 1-D transforms over L lanes; element k at k * IS (input) or k * OS (output), in T ------

// Complex DFT of length N (unnormalised; Inv: the conjugate twiddles).
template <int N, bool Inv, int L, int IS, int OS, class T>
FC_FFT_FN void cfft(const T* __restrict ire, const T* __restrict iim, T* __restrict ore, T* __restrict oim) {
  constexpr index_t is = IS, os = OS;
  T re[N][L], im[N][L];
  FC_UNROLL(16)
  for (int k = 0; k < N; ++k) {
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      re[k][l] = ire[k * is + l];
      im[k][l] = iim[k * is + l];
    }
  }
  dif<N, Inv, L>(re, im);
  static_for<0, N>([&](auto pc) FC_FFT_LAMBDA {
    constexpr int p = decltype(pc)::value, k = bit_reverse(p, log2i(N));
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      ore[k * os + l] = re[p][l];
      oim[k * os + l] = im[p][l];
    }
  });
}

// Real-to-complex DFT of length N: bins 0..N/2 (im of bins 0 and N/2 written as 0).
// Z = DFT_{N/2}(x[2k] + I x[2k+1]); E[k] = (Z[k] + conj Z[M-k]) / 2 (even samples),
// O[k] = (Z[k] - conj Z[M-k]) / 2I (odd samples); X[k] = E[k] + w^k O[k].
template <int N, int L, int IS, int OS, class T>
FC_FFT_FN void rfft(const T* __restrict x, T* __restrict ore, T* __restrict oim) {
  constexpr index_t is = IS, os = OS;
  constexpr int M = N / 2, B = log2i(M);
  T zr[M][L], zi[M][L];
  FC_UNROLL(16)
  for (int k = 0; k < M; ++k) {
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      zr[k][l] = x[(2 * k) * is + l];
      zi[k][l] = x[(2 * k + 1) * is + l];
    }
  }
  dif<M, false, L>(zr, zi);
  FC_UNROLL(16)
  for (int l = 0; l < L; ++l) {  // Z[0] sits at position 0
    ore[0 * os + l] = zr[0][l] + zi[0][l];
    oim[0 * os + l] = T(0);
    ore[M * os + l] = zr[0][l] - zi[0][l];
    oim[M * os + l] = T(0);
  }
  static_for<1, M>([&](auto kc) FC_FFT_LAMBDA {
    constexpr int k = decltype(kc)::value, pa = bit_reverse(k, B), pb = bit_reverse(M - k, B);
    T er[L], ei[L], orr[L], oi[L];
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      const T ar = zr[pa][l], ai = zi[pa][l], br = zr[pb][l], bi = -zi[pb][l];  // b = conj Z[M-k]
      er[l] = T(0.5) * (ar + br);
      ei[l] = T(0.5) * (ai + bi);
      orr[l] = T(0.5) * (ai - bi);  // (a - b) / 2I
      oi[l] = T(0.5) * (br - ar);
    }
    twiddle<N, k, false, L>(orr, oi);
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      ore[k * os + l] = er[l] + orr[l];
      oim[k * os + l] = ei[l] + oi[l];
    }
  });
}

// Complex-to-real inverse DFT of length N from bins 0..N/2 (im of bins 0 and N/2 not
// read), unnormalised: N times numpy's irfft. Reverses rfft: Z'[k] = (X[k] + conj X[M-k])
// + I w^{-k} (X[k] - conj X[M-k]) = 2 (E[k] + I O[k]); z = IDFT_{N/2}(Z') = N (x[2k] + I x[2k+1]).
template <int N, int L, int IS, int OS, class T>
FC_FFT_FN void irfft(const T* __restrict ire, const T* __restrict iim, T* __restrict x) {
  constexpr index_t is = IS, os = OS;
  constexpr int M = N / 2, B = log2i(M);
  T zr[M][L], zi[M][L];
  FC_UNROLL(16)
  for (int l = 0; l < L; ++l) {
    const T a = ire[0 * is + l], b = ire[M * is + l];
    zr[0][l] = a + b;
    zi[0][l] = a - b;
  }
  static_for<1, M>([&](auto kc) FC_FFT_LAMBDA {
    constexpr int k = decltype(kc)::value;
    T dr[L], di[L];
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      const T ar = ire[k * is + l], ai = iim[k * is + l];
      const T br = ire[(M - k) * is + l], bi = -iim[(M - k) * is + l];
      zr[k][l] = ar + br;
      zi[k][l] = ai + bi;
      dr[l] = ar - br;
      di[l] = ai - bi;
    }
    twiddle<N, k, true, L>(dr, di);
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {  // + I d
      zr[k][l] -= di[l];
      zi[k][l] += dr[l];
    }
  });
  dif<M, true, L>(zr, zi);
  static_for<0, M>([&](auto pc) FC_FFT_LAMBDA {
    constexpr int p = decltype(pc)::value, k = bit_reverse(p, B);
    FC_UNROLL(16)
    for (int l = 0; l < L; ++l) {
      x[(2 * k) * os + l] = zr[p][l];
      x[(2 * k + 1) * os + l] = zi[p][l];
    }
  });
}

// ---- the passes as the 2-D transforms call them ------------------------------------------
// 16-point passes out of line (FC_FFT_OUTLINE: one copy of each codelet), 8-point ones
// inline (see the header's note on inlining).
constexpr int kInlinePassMax = 8;

template <int N, bool Inv, int L, int IS, int OS, class T>
FC_FFT_OUTLINE void cfft_out(const T* __restrict ire, const T* __restrict iim, T* __restrict ore,
                             T* __restrict oim) {
  cfft<N, Inv, L, IS, OS>(ire, iim, ore, oim);
}
template <int N, int L, int IS, int OS, class T>
FC_FFT_OUTLINE void rfft_out(const T* __restrict x, T* __restrict ore, T* __restrict oim) {
  rfft<N, L, IS, OS>(x, ore, oim);
}
template <int N, int L, int IS, int OS, class T>
FC_FFT_OUTLINE void irfft_out(const T* __restrict ire, const T* __restrict iim, T* __restrict x) {
  irfft<N, L, IS, OS>(ire, iim, x);
}
template <int N, bool Inv, int L, int IS, int OS, class T>
FC_FFT_FN void cfft_pass(const T* ire, const T* iim, T* ore, T* oim) {
  if constexpr (N <= kInlinePassMax)
    cfft<N, Inv, L, IS, OS>(ire, iim, ore, oim);
  else
    cfft_out<N, Inv, L, IS, OS>(ire, iim, ore, oim);
}
template <int N, int L, int IS, int OS, class T>
FC_FFT_FN void rfft_pass(const T* x, T* ore, T* oim) {
  if constexpr (N <= kInlinePassMax)
    rfft<N, L, IS, OS>(x, ore, oim);
  else
    rfft_out<N, L, IS, OS>(x, ore, oim);
}
template <int N, int L, int IS, int OS, class T>
FC_FFT_FN void irfft_pass(const T* ire, const T* iim, T* x) {
  if constexpr (N <= kInlinePassMax)
    irfft<N, L, IS, OS>(ire, iim, x);
  else
    irfft_out<N, L, IS, OS>(ire, iim, x);
}

// ---- the distinct bins of an n x n real tile's spectrum -------------------------------------

template <int N>
struct Spectrum {
  static constexpr int n = N, half = N / 2, cols = N / 2 + 1;  // Hermitian half: n x cols
  static constexpr int bins = N * N / 2 + 2;                   // distinct bins
  static constexpr int real_bins = 4;                          // b < 4: im = 0
  static constexpr int col0 = 4, colh = 4 + (half - 1), inner = N + 2;
  // (u, v) of bin b (see the header comment)
  static constexpr int bin_u(int b) {
    return b == 0 || b == 2   ? 0
           : b == 1 || b == 3 ? half
           : b < colh         ? b - col0 + 1
           : b < inner        ? b - colh + 1
                              : (b - inner) % N;
  }
  static constexpr int bin_v(int b) {
    return b == 0 || b == 1   ? 0
           : b == 2 || b == 3 ? half
           : b < colh         ? 0
           : b < inner        ? half
                              : (b - inner) / N + 1;
  }
};

// Bin of (u, v) for u in 0..n/2 of the real columns v = 0 or n/2.
template <int N>
constexpr int real_column_bin(int u, int v) {
  using S = Spectrum<N>;
  return u == 0 ? (v == 0 ? 0 : 2) : u == S::half ? (v == 0 ? 1 : 3) : (v == 0 ? S::col0 : S::colh) + u - 1;
}

// ---- 2-D transforms of one tile per lane ---------------------------------------------------

// Forward: real tile t (N x N, zero rows from `rows` on need not be stored: only rows
// 0..rows-1 are read) -> the distinct bins (re, im). Rows first (real FFTs), then the
// columns: v = 0 and N/2 hold real values (real FFTs), the others complex FFTs.
template <int N, int L, class T>
FC_FFT_FN void forward(const T* t, int rows, T* re, T* im) {
  using S = Spectrum<N>;
  constexpr int C = S::cols;
  T rr[N][C][L], ri[N][C][L];  // row spectra R[i][v]
  for (int i = 0; i < N; ++i) {
    if (i < rows) {
      rfft_pass<N, L, L, L>(t + i * N * L, rr[i][0], ri[i][0]);
    } else {
      FC_UNROLL(16)
      for (int v = 0; v < C; ++v) {
        FC_UNROLL(16)
        for (int l = 0; l < L; ++l) rr[i][v][l] = ri[i][v][l] = T(0);
      }
    }
  }
  static_for<0, 2>([&](auto vc) FC_FFT_LAMBDA {  // the real columns v = 0, N/2
    constexpr int v = decltype(vc)::value * S::half;
    T cr[C][L], ci[C][L];
    rfft_pass<N, L, C * L, L>(rr[0][v], cr[0], ci[0]);
    static_for<0, C>([&](auto uc) FC_FFT_LAMBDA {
      constexpr int u = decltype(uc)::value, b = real_column_bin<N>(u, v);
      FC_UNROLL(16)
      for (int l = 0; l < L; ++l) {
        re[b * L + l] = cr[u][l];
        im[b * L + l] = ci[u][l];
      }
    });
  });
  FC_UNROLL(8)
  for (int v = 1; v < S::half; ++v) {
    const int b0 = S::inner + (v - 1) * N;
    cfft_pass<N, false, L, C * L, L>(rr[0][v], ri[0][v], re + b0 * L, im + b0 * L);
  }
}

// Inverse: the distinct bins (re, im; im of the real bins not read) -> rows 0..rows-1 of
// the real N x N tile t (unnormalised: N^2 times numpy's irfft2). Columns first (the
// real columns v = 0, N/2 by real inverse FFTs), then one real inverse FFT per kept row.
template <int N, int L, class T>
FC_FFT_FN void inverse(const T* re, const T* im, int rows, T* t) {
  using S = Spectrum<N>;
  constexpr int C = S::cols;
  T rr[N][C][L], ri[N][C][L];
  static_for<0, 2>([&](auto vc) FC_FFT_LAMBDA {
    constexpr int v = decltype(vc)::value * S::half;
    T cr[C][L], ci[C][L], col[N][L];
    static_for<0, C>([&](auto uc) FC_FFT_LAMBDA {
      constexpr int u = decltype(uc)::value, b = real_column_bin<N>(u, v);
      FC_UNROLL(16)
      for (int l = 0; l < L; ++l) {
        cr[u][l] = re[b * L + l];
        ci[u][l] = b < S::real_bins ? T(0) : im[b * L + l];
      }
    });
    irfft_pass<N, L, L, L>(cr[0], ci[0], col[0]);
    FC_UNROLL(16)
    for (int i = 0; i < N; ++i) {
      FC_UNROLL(16)
      for (int l = 0; l < L; ++l) {
        rr[i][v][l] = col[i][l];
        ri[i][v][l] = T(0);
      }
    }
  });
  FC_UNROLL(8)
  for (int v = 1; v < S::half; ++v) {
    const int b0 = S::inner + (v - 1) * N;
    cfft_pass<N, true, L, L, C * L>(re + b0 * L, im + b0 * L, rr[0][v], ri[0][v]);
  }
  for (int i = 0; i < rows; ++i) irfft_pass<N, L, L, L>(rr[i][0], ri[i][0], t + i * N * L);
}

}  // namespace fastconv::fft
