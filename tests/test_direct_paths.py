"""Every code path of the direct convolution (csrc/cpu/conv2d_direct.cpp), on every ISA.

The kernel has three paths: depthwise (C/groups == 1, any channel multiplier), pointwise
(1x1 with no top/left pad: gemm, contiguous or subsampled) and general (everything else),
all but pointwise built on a band buffer of padded, phase-split rows and tiles of vectors
along the output row. The cases below hit each path's boundaries: output widths just
below/at/above the vector width (4, 8, 16 lanes), 1-pixel images, odd sizes with stride
2 and 3, dilation, one-sided and asymmetric padding, channel chunking (many channels),
register-block remainders (K/groups not a multiple of the block), batch > 1, rows whose
last vector is computed in half vectors (AVX2: Q = 28, 12, 10, 6).
Outputs are pre-filled with NaN, so an unwritten element fails.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastconv

DTYPES = [np.float32, np.float64]


def _run(x, w, b, dtype, **kw):
    ref = fastconv.conv2d(x, w, b, algorithm="reference", **kw)
    out = np.full(ref.shape, np.nan, dtype)
    got = fastconv.conv2d(x, w, b, algorithm="direct", out=out, **kw)
    assert got is out or np.shares_memory(got, out)
    return got, ref


def _check(x, w, b, dtype, **kw):
    got, ref = _run(x, w, b, dtype, **kw)
    assert got.shape == ref.shape
    assert not np.isnan(got).any(), "output elements left unwritten (NaN)"
    red = w.shape[1] * w.shape[2] * w.shape[3]  # reduction length per output
    scale = max(1.0, float(np.abs(ref).max()))
    tol = (1e-5 if dtype == np.float32 else 1e-12) * np.sqrt(red) * scale
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= tol, f"max error {err:.3g} > {tol:.3g}"


def _data(rng, dtype, n, c, h, wd, k, cg, r, s, bias=True):
    x = rng.uniform(-1, 1, (n, c, h, wd)).astype(dtype)
    w = rng.uniform(-1, 1, (k, cg, r, s)).astype(dtype)
    b = rng.uniform(-1, 1, k).astype(dtype) if bias else None
    return x, w, b


# ---- depthwise: groups == C, K = m*C -------------------------------------------------
# (N, C, H, W, mult, R, S, stride, padding, dilation)
DEPTHWISE = [
    (1, 3, 9, 9, 1, 3, 3, 1, 1, 1),            # 3x3 unrolled path, s1
    (1, 3, 9, 9, 1, 3, 3, 2, 1, 1),            # s2, odd size
    (2, 5, 16, 16, 1, 3, 3, 1, 1, 1),          # Q = 16: exactly one AVX-512 float vector
    (1, 2, 5, 15, 1, 3, 3, 1, 1, 1),           # Q = 15: just below
    (1, 2, 5, 17, 1, 3, 3, 1, 1, 1),           # Q = 17: just above
    (1, 2, 6, 7, 1, 3, 3, 1, 1, 1),            # Q = 7, 9: around 8 lanes (AVX2 float, AVX-512 double)
    (1, 2, 6, 9, 1, 3, 3, 1, 1, 1),
    (1, 2, 6, 33, 1, 3, 3, 2, 1, 1),           # s2, odd W: last odd column
    (1, 2, 7, 34, 1, 3, 3, 2, 1, 1),           # s2, even W
    (1, 3, 1, 1, 1, 3, 3, 1, 1, 1),            # 1-pixel image, kernel covers it
    (1, 3, 1, 1, 1, 3, 3, 2, 1, 1),
    (1, 4, 2, 2, 1, 3, 3, 2, 1, 1),            # tiny: every tap partly padding
    (1, 4, 11, 13, 2, 3, 3, 1, 1, 1),          # channel multiplier 2 (K = 2C)
    (1, 3, 11, 13, 3, 3, 3, 2, 1, 1),          # multiplier 3: block of 2 + remainder
    (1, 2, 12, 20, 1, 3, 3, 1, 2, 2),          # dilated depthwise
    (1, 2, 12, 21, 1, 3, 3, 2, 2, 2),          # dilated, stride 2
    (1, 2, 13, 19, 1, 5, 5, 1, 2, 1),          # 5x5: runtime-tap path
    (1, 2, 13, 19, 1, 1, 7, 1, (0, 3), 1),     # 1x7
    (1, 2, 19, 13, 1, 7, 1, 1, (3, 0), 1),     # 7x1
    (1, 2, 14, 29, 1, 3, 3, 3, 1, 1),          # stride 3: three column phases
    (1, 2, 14, 29, 1, 3, 3, (2, 1), 1, 1),     # different strides per axis
    (1, 3, 10, 11, 1, 3, 3, 1, ((0, 2), (2, 0)), 1),  # pads on one side only
    (1, 3, 10, 11, 1, 3, 3, 2, ((1, 0), (0, 1)), 1),
    (1, 3, 10, 11, 1, 3, 3, 1, "same", 1),
    (1, 3, 10, 11, 1, 3, 3, 2, "same", 1),     # TF 'same' with stride: odd pad at the end
    (1, 2, 8, 8, 1, 3, 3, 1, 0, 1),            # no padding
    (3, 70, 7, 7, 1, 3, 3, 1, 1, 1),           # many tiny planes, batch 3 (scheduling chunks)
    (1, 2, 40, 70, 1, 3, 3, 1, 1, 1),          # several vectors per row + tiles across rows
    (3, 1, 32, 32, 6, 5, 5, 1, 0, 1),          # one input channel, multiplier 6 (LeNet-5's first layer)
    (2, 1, 13, 29, 13, 5, 5, 1, 2, 1),         # multiplier 13: 6- or 8-channel tiles + halving remainders
    (1, 2, 11, 9, 7, 3, 5, 2, (1, 2), (1, 2)),  # multiplier 7, strided, dilated, 3x5
    (1, 1, 6, 7, 16, 5, 5, 1, 2, 1),           # multiplier 16, Q = 7
    (2, 1, 9, 10, 6, 5, 5, 1, 0, 1),           # Q = 6: a full and a half vector (AVX2 double)
    (1, 1, 7, 14, 7, 5, 5, 1, 2, 1),           # Q = 14 (8 + 6: no half vector) and Q = 10 (double: 4+4+2)
    (2, 19, 14, 14, 1, 3, 3, 2, 1, 1),         # MobileNet conv5_6-like, 19 channels, batch 2
    (3, 17, 9, 11, 1, 5, 5, 1, 2, 2),          # dilated 5x5, batch 3
    (1, 18, 13, 10, 1, 3, 5, (2, 1), ((0, 3), (2, 1)), 1),  # asymmetric strides and pads, 3x5
    (1, 3, 34, 33, 1, 3, 3, 2, 1, 1),          # stride 2, 17 x 17 outputs
    (1, 2, 24, 22, 1, 5, 5, 1, 2, 2),          # dilated 5x5, larger plane
    # AVX-512 float's small-plane path: rows of <= 32 input and <= 16 output pixels, <= 32 rows
    (8, 37, 14, 14, 1, 3, 3, 2, 1, 1),         # MobileNet conv5_6/dw-like at batch 8
    (2, 5, 28, 28, 1, 3, 3, 2, 1, 1),          # conv4_2/dw-like: a row in two vectors
    (1, 3, 32, 32, 1, 3, 3, 2, 1, 1),          # the largest plane it takes
    (1, 3, 32, 31, 1, 3, 3, 2, ((2, 0), (0, 2)), 1),  # one-sided pads, 16 outputs a row
    (1, 4, 16, 16, 1, 3, 3, 1, 2, 1),          # stride 1, pad 2: 18 outputs (too wide: band path)
    (1, 4, 16, 16, 1, 3, 3, 1, ((0, 0), (2, 0)), 1),  # 16 outputs, taps left of the row
    (3, 6, 5, 1, 1, 3, 3, 1, 1, 1),            # one column
    (1, 5, 17, 15, 1, 3, 3, 1, ((1, 2), (1, 1)), 1),  # 17 rows, a bottom pad of 2
    # AVX2 float's small-plane path: rows of <= 64 inputs and <= 32 outputs at stride 2 (16 at stride
    # 1), <= 64 rows, a left pad <= 2; one, two or four output vectors a row
    (8, 19, 7, 7, 1, 3, 3, 1, 1, 1),           # conv6/dw-like at batch 8: Q = 7
    (1, 3, 8, 8, 1, 3, 3, 1, 1, 1),            # Q = 8: exactly one vector
    (2, 3, 17, 17, 1, 3, 3, 2, 0, 1),          # stride 2, no pad: Q = 8 from 17 columns
    (1, 3, 15, 13, 1, 3, 3, 2, ((1, 1), (3, 0)), 1),  # left pad 3: band path
    (2, 5, 56, 56, 1, 3, 3, 2, 1, 1),          # conv3_2/dw-like at stride 2: four output vectors a row
    (1, 3, 64, 63, 1, 3, 3, 2, ((2, 0), (0, 2)), 1),  # the largest stride-2 plane: 64 rows, 32 outputs
    (1, 3, 65, 20, 1, 3, 3, 2, 1, 1),          # 65 rows: band path
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
def test_depthwise(isa, dtype, case):
    n, c, h, wd, m, r, s, stride, padding, dil = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, w, b = _data(rng, dtype, n, c, h, wd, m * c, 1, r, s)
    _check(x, w, b, dtype, stride=stride, padding=padding, dilation=dil, groups=c)


def test_depthwise_no_bias(isa):
    rng = np.random.default_rng(1)
    x, w, _ = _data(rng, np.float32, 1, 4, 9, 18, 4, 1, 3, 3, bias=False)
    _check(x, w, None, np.float32, stride=1, padding=1, groups=4)


# ---- pointwise: 1x1, no top/left pad ---------------------------------------------------
# (N, C, H, W, K, groups, stride, padding)
POINTWISE = [
    (1, 8, 7, 9, 12, 1, 1, 0),                 # contiguous: one gemm per image
    (2, 6, 5, 5, 4, 1, 1, 0),                  # batch 2 (one gemm per thread)
    (5, 6, 3, 4, 7, 1, 1, 0),                  # batch 5: odd split over threads
    (1, 8, 9, 11, 6, 1, 2, 0),                 # stride 2, odd sizes: subsample then gemm
    (3, 8, 9, 11, 6, 1, 2, 0),
    (1, 6, 10, 13, 5, 1, 3, 0),                # stride 3
    (1, 6, 10, 13, 5, 1, (2, 1), 0),           # stride only along H
    (1, 6, 10, 13, 5, 1, (1, 2), 0),           # stride only along W
    (1, 8, 6, 6, 10, 2, 1, 0),                 # grouped 1x1
    (2, 9, 7, 5, 6, 3, 2, 0),                  # grouped strided 1x1
    (1, 4, 1, 1, 3, 1, 1, 0),                  # 1-pixel image
    (1, 4, 7, 8, 3, 1, 2, "same"),             # stride 2, 'same' needs no pad for 1x1
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POINTWISE, ids=str)
def test_pointwise(isa, dtype, case):
    n, c, h, wd, k, g, stride, padding = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, w, b = _data(rng, dtype, n, c, h, wd, k, c // g, 1, 1)
    _check(x, w, b, dtype, stride=stride, padding=padding, groups=g)


# ---- general ---------------------------------------------------------------------------
# (N, C, H, W, K, groups, R, S, stride, padding, dilation)
GENERAL = [
    (1, 3, 9, 9, 4, 1, 3, 3, 1, 1, 1),         # 3x3 unrolled taps
    (2, 5, 8, 17, 19, 1, 3, 3, 1, 1, 1),       # K = 19: blocks 8/4/2/1 of output channels
    (1, 4, 11, 11, 6, 1, 3, 3, 2, 1, 1),
    (1, 3, 23, 21, 5, 1, 7, 7, 2, 3, 1),       # 7x7 stride 2 with C = 3 (ResNet stem)
    (1, 4, 12, 13, 3, 1, 5, 5, 1, 2, 1),       # 5x5
    (1, 4, 13, 12, 3, 1, 3, 3, 1, 2, 2),       # dilated
    (1, 4, 9, 10, 5, 1, 1, 4, 1, (0, 2), 1),   # 1xN
    (1, 4, 10, 9, 5, 1, 4, 1, 1, (2, 0), 1),   # Nx1
    (1, 8, 9, 9, 6, 2, 3, 3, 1, 1, 1),         # grouped
    (1, 6, 9, 9, 12, 3, 3, 3, 2, 1, 1),        # grouped, stride 2
    (1, 4, 1, 1, 5, 1, 3, 3, 1, 1, 1),         # 1-pixel image
    (1, 4, 2, 3, 5, 1, 3, 3, 3, 1, 1),         # stride 3 on a tiny image
    (1, 4, 8, 9, 3, 1, 3, 3, 1, ((0, 2), (2, 0)), 1),  # one-sided pads
    (1, 4, 8, 9, 3, 1, 1, 1, 1, ((1, 0), (2, 0)), 1),  # 1x1 with top/left pad: not the gemm path
    (1, 4, 8, 9, 3, 1, 2, 2, 2, "same", 1),
    (1, 5, 15, 17, 3, 1, 3, 3, 1, "full", 1),
    (1, 200, 5, 40, 3, 1, 3, 3, 1, 1, 1),      # band of one row does not fit: channels chunked
    (1, 200, 5, 12, 5, 1, 3, 3, 1, 1, 1),      # chunked (later chunks add to y), Q = 12: 8 + a half vector
    (1, 250, 4, 10, 3, 1, 3, 3, 1, 1, 1),      # chunked, Q = 10 (double: 4 + 4 + a half vector)
    (2, 3, 9, 28, 7, 1, 3, 3, 1, 1, 1),        # Q = 28 (8 + 8 + 8 + 4), K = 7: blocks of 4, 2, 1
    (1, 24, 6, 7, 128, 1, 3, 3, 1, 1, 1),      # channel-vector tiles (Q = 7), weight rows padded to 9 lines
    (2, 20, 5, 5, 37, 1, 3, 3, 1, 1, 1),       # channel-vector tiles, K = 37: a one-vector tile at the end
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GENERAL, ids=str)
def test_general(isa, dtype, case):
    n, c, h, wd, k, g, r, s, stride, padding, dil = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, w, b = _data(rng, dtype, n, c, h, wd, k, c // g, r, s)
    _check(x, w, b, dtype, stride=stride, padding=padding, dilation=dil, groups=g)


def test_general_large(isa):
    """A larger layer: several bands per image, many tiles; float32."""
    rng = np.random.default_rng(7)
    x, w, b = _data(rng, np.float32, 2, 32, 30, 30, 40, 32, 3, 3)
    _check(x, w, b, np.float32, stride=1, padding=1)


def test_conv1d(isa):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 4, 37)).astype(np.float32)
    w = rng.uniform(-1, 1, (6, 2, 5)).astype(np.float32)
    ref = fastconv.conv1d(x, w, stride=2, padding=2, groups=2, algorithm="reference")
    got = fastconv.conv1d(x, w, stride=2, padding=2, groups=2, algorithm="direct")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# ---- exactness: small integers sum exactly in floating point -------------------------
EXACT = [
    # (N, C, H, W, K, groups, R, S, stride, padding, dilation)
    (1, 6, 13, 19, 6, 6, 3, 3, 1, 1, 1),       # depthwise s1
    (1, 6, 13, 19, 12, 6, 3, 3, 2, 1, 1),      # depthwise multiplier 2, s2
    (2, 7, 9, 10, 5, 1, 1, 1, 1, 0, 1),        # pointwise, gemm
    (1, 7, 9, 10, 5, 1, 1, 1, 2, 0, 1),        # pointwise, subsampled
    (1, 6, 10, 11, 9, 3, 3, 3, 1, 1, 2),       # general grouped dilated
    (1, 3, 17, 17, 4, 1, 7, 7, 2, 3, 1),       # general 7x7 s2
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", EXACT, ids=str)
def test_exact_small_integers(isa, dtype, case):
    n, c, h, wd, k, g, r, s, stride, padding, dil = case
    rng = np.random.default_rng(11)
    x = rng.integers(-4, 5, (n, c, h, wd)).astype(dtype)
    w = rng.integers(-4, 5, (k, c // g, r, s)).astype(dtype)
    b = rng.integers(-4, 5, k).astype(dtype)
    got, ref = _run(x, w, b, dtype, stride=stride, padding=padding, dilation=dil, groups=g)
    np.testing.assert_array_equal(got, ref)


def test_nan_propagates(isa):
    x = np.ones((1, 2, 5, 5), np.float32)
    x[0, 1, 2, 2] = np.nan
    w = np.ones((2, 1, 3, 3), np.float32)
    y = fastconv.conv2d(x, w, padding=1, groups=2, algorithm="direct")
    assert not np.isnan(y[0, 0]).any()
    assert np.isnan(y[0, 1, 1:4, 1:4]).all() and np.isnan(y[0, 1]).sum() == 9


def test_threads_and_isa_restored():
    """The ISA fixture leaves the process as it found it; thread counts 1 and 3 agree."""
    rng = np.random.default_rng(5)
    x, w, b = _data(rng, np.float32, 2, 6, 15, 15, 6, 1, 3, 3)
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        y1 = fastconv.conv2d(x, w, b, padding=1, groups=6, algorithm="direct")
        fastconv.set_num_threads(3)
        y3 = fastconv.conv2d(x, w, b, padding=1, groups=6, algorithm="direct")
    finally:
        fastconv.set_num_threads(before)
    np.testing.assert_array_equal(y1, y3)
