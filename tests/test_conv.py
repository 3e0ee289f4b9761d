"""Every conv2d algorithm of the kernel table x dtype x ISA against reference.py,
over a generated table of problems, with outputs pre-filled with NaN."""
import numpy as np
import pytest

import fastconv
from conftest import CONV_ALGORITHMS, EXACT_ALGORITHMS, assert_close, conv_supported, nan_out, tolerance

# (x shape, w shape, stride, padding, dilation, groups, flip)
CASES = [
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1, 1, False),
    ((2, 3, 7, 11), (5, 3, 3, 3), 1, 1, 1, 1, False),
    ((1, 3, 13, 17), (7, 3, 5, 5), 2, 2, 1, 1, False),
    ((3, 5, 11, 7), (4, 5, 3, 2), (3, 2), (1, 0), 1, 1, False),
    ((1, 4, 17, 19), (6, 4, 3, 3), 1, 2, 2, 1, False),                 # dilation 2
    ((2, 6, 13, 13), (9, 2, 3, 3), 1, 1, 1, 3, False),                 # groups 3
    ((1, 8, 15, 15), (8, 1, 3, 3), 1, 1, 1, 8, False),                 # depthwise
    ((2, 7, 16, 13), (7, 1, 3, 3), 2, 1, 1, 7, False),                 # depthwise stride 2
    ((1, 5, 9, 9), (10, 1, 3, 3), 1, 1, 1, 5, False),                  # channel multiplier 2
    ((1, 16, 10, 10), (8, 16, 1, 1), 1, 0, 1, 1, False),               # 1x1
    ((2, 13, 11, 9), (17, 13, 1, 1), 2, 0, 1, 1, False),               # 1x1 stride 2
    ((1, 3, 8, 23), (4, 3, 1, 7), 1, (0, 3), 1, 1, False),             # 1xN
    ((1, 3, 23, 8), (4, 3, 7, 1), 1, (3, 0), 1, 1, False),             # Nx1
    ((1, 2, 10, 12), (3, 2, 3, 4), 1, ((0, 2), (3, 1)), 1, 1, False),  # asymmetric pads
    ((2, 3, 9, 10), (4, 3, 3, 3), 1, "valid", 1, 1, False),
    ((2, 3, 9, 10), (4, 3, 3, 4), 1, "same", 1, 1, False),
    ((1, 3, 11, 10), (4, 3, 3, 3), 2, "same", 1, 1, False),            # same, stride 2
    ((1, 3, 13, 10), (4, 3, 5, 4), 3, "same", (2, 1), 1, False),       # same, stride 3, dilated
    ((1, 2, 6, 7), (3, 2, 3, 2), 1, "full", 1, 1, False),
    ((1, 2, 6, 7), (3, 2, 3, 3), 1, "full", 2, 1, False),
    ((2, 3, 8, 9), (4, 3, 3, 2), 1, 1, 1, 1, True),                    # true convolution
    ((1, 4, 9, 9), (4, 1, 3, 3), 2, "same", 1, 4, True),
    ((0, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1, False),                   # empty batch
    ((1, 3, 3, 3), (2, 3, 3, 3), 1, 0, 1, 1, False),                   # kernel covers the image
    ((5, 4, 5, 3), (6, 2, 5, 3), 1, 0, 1, 2, False),                   # covers it, batched, groups 2
    ((4, 2, 3, 3), (3, 2, 3, 3), 2, ((0, 1), (0, 1)), 1, 1, False),    # covers it, unread bottom pad
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1, False),
    ((1, 1, 2, 2), (2, 1, 3, 3), 1, 1, 1, 1, False),                   # image smaller than kernel
    ((1, 3, 31, 37), (11, 3, 7, 7), 2, 3, 1, 1, False),                # ResNet stem-like, primes
    ((1, 29, 7, 7), (31, 29, 3, 3), 1, 1, 1, 1, False),                # prime channels
    ((1, 64, 9, 9), (33, 64, 3, 3), 1, 1, 1, 1, False),                # deeper reduction
    ((2, 12, 10, 11), (12, 3, 3, 3), (1, 2), (2, 1), (2, 1), 4, False),
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, ((0, 0), (0, 1)), 1, 1, False),    # a column of pure padding
    ((1, 2, 3, 4), (3, 2, 2, 2), 1, 4, 1, 1, False),                   # pad > kernel: bias-only border
    ((1, 4, 5, 6), (4, 1, 2, 3), 2, 3, 1, 4, False),                   # same, depthwise strided
    # narrow outputs, many channels: direct's channel-vector tiles (several vectors, partial ones)
    ((2, 5, 11, 13), (20, 5, 3, 3), 2, 1, 2, 1, False),                # stride 2, dilation 2
    ((2, 8, 9, 9), (34, 4, 3, 3), 1, 1, 1, 2, False),                  # groups 2, 17 per group
    ((3, 7, 6, 15), (48, 7, 2, 5), (1, 3), ((1, 0), (2, 2)), 1, 1, False),
    ((1, 3, 13, 13), (64, 3, 3, 3), 1, 1, 1, 1, False),                # a row of more than one tile
]


def _ids(case):
    x, w, stride, padding, dilation, groups, flip = case
    return f"x{x}-w{w}-s{stride}-p{padding}-d{dilation}-g{groups}{'-flip' if flip else ''}".replace(" ", "")


def _supported(algorithm, case, dtype):
    xs, ws, stride, padding, dilation, groups, _ = case
    return conv_supported(algorithm, xs, ws, stride, padding, dilation, groups, dtype)


# Only the (algorithm, dtype, case) triples the kernel table says it serves.
MATCH = [(a, d, c) for a in CONV_ALGORITHMS for d in (np.float32, np.float64) for c in CASES
         if _supported(a, c, d)]


@pytest.mark.parametrize("algorithm, dtype, case", MATCH,
                         ids=[f"{a}-{np.dtype(d).name}-{_ids(c)}" for a, d, c in MATCH])
def test_conv2d_matches_reference(algorithm, dtype, case, isa, rng):
    xs, ws, stride, padding, dilation, groups, flip = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip)
    want = fastconv.conv2d(x, w, b, algorithm="reference", **kw)
    out = nan_out(want.shape, dtype)
    got = fastconv.conv2d(x, w, b, algorithm=algorithm, out=out, **kw)
    assert got is out
    assert_close(got, want, tolerance(algorithm, dtype, ws[1] * ws[2] * ws[3]), f"{algorithm}/{isa}")


@pytest.mark.parametrize("case", CASES[:22], ids=[_ids(c) for c in CASES[:22]])
@pytest.mark.parametrize("algorithm", EXACT_ALGORITHMS)  # Winograd's fractions are not exact
def test_conv2d_exact_on_small_integers(algorithm, case, rng):
    """Small integers make every partial sum exact, whatever the summation order."""
    xs, ws, stride, padding, dilation, groups, flip = case
    x = rng.integers(-4, 5, xs).astype(np.float32)
    w = rng.integers(-4, 5, ws).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip)
    want = fastconv.conv2d(x, w, None, algorithm="reference", **kw)
    got = fastconv.conv2d(x, w, None, algorithm=algorithm, out=nan_out(want.shape, np.float32), **kw)
    np.testing.assert_array_equal(got, want)


CASES_1D = [
    ((2, 3, 50), (4, 3, 5), 1, 2, 1, 1),
    ((1, 4, 37), (8, 2, 3), 2, (0, 3), 2, 2),
    ((3, 6, 29), (6, 1, 7), 1, "same", 1, 6),
    ((1, 2, 17), (3, 2, 4), 3, "same", 1, 1),
    ((1, 2, 11), (3, 2, 4), 1, "full", 2, 1),
]


def _supported_1d(algorithm, dtype):
    """Whether the algorithm serves every 1-D case (as the 2-D problem with H = R = 1)."""
    def pad2(p):
        return p if isinstance(p, str) else ((0, 0), (p, p) if isinstance(p, int) else tuple(p))
    return all(conv_supported(algorithm, (n, c, 1, l), (k, cg, 1, s), (1, st), pad2(p), (1, d), g, dtype)
               for (n, c, l), (k, cg, s), st, p, d, g in CASES_1D)


@pytest.mark.parametrize("algorithm, dtype", [(a, d) for a in CONV_ALGORITHMS + ["auto"]
                                              for d in (np.float32, np.float64) if _supported_1d(a, d)])
def test_conv1d_matches_reference(algorithm, dtype, rng):
    for xs, ws, stride, padding, dilation, groups in CASES_1D:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        want = fastconv.conv1d(x, w, b, algorithm="reference", **kw)
        got = fastconv.conv1d(x, w, b, algorithm=algorithm, out=nan_out(want.shape, dtype), **kw)
        assert got.ndim == 3
        tol_algo = "im2col" if algorithm == "auto" else algorithm
        assert_close(got, want, tolerance(tol_algo, dtype, ws[1] * ws[2]), f"conv1d {algorithm} {xs}")


def test_conv1d_is_conv2d_with_unit_height(rng):
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)
    w = rng.standard_normal((5, 3, 4)).astype(np.float32)
    y1 = fastconv.conv1d(x, w, stride=2, padding=(1, 2), dilation=3)
    y2 = fastconv.conv2d(x[:, :, None], w[:, :, None], stride=(1, 2), padding=((0, 0), (1, 2)), dilation=(1, 3))
    np.testing.assert_array_equal(y1, y2[:, :, 0])


LARGER = [
    ((1, 64, 28, 28), (96, 64, 3, 3), 1, 1, 1),
    ((2, 48, 23, 29), (40, 48, 1, 1), 1, 0, 1),
    ((1, 3, 57, 61), (24, 3, 7, 7), 2, 3, 1),
    ((1, 96, 30, 31), (96, 1, 3, 3), 2, 1, 96),
    ((2, 40, 61, 53), (24, 40, 3, 3), 1, 1, 1),  # many tile blocks (winograd), odd edges
    ((40, 64, 7, 7), (32, 64, 3, 3), 1, 1, 1),   # many small images: several per GEMM, in chunks
    ((19, 200, 5, 5), (24, 200, 1, 1), 1, 0, 1),
    ((64, 16, 5, 5), (120, 16, 5, 5), 1, 0, 1),  # LeNet-5's C5: the window is the image
    ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),    # LeNet-5's C3: batched small images
]
LARGER_PAIRS = [(a, c) for a in CONV_ALGORITHMS + ["auto"] for c in LARGER
                if conv_supported(a, c[0], c[1], c[2], c[3], 1, c[4])]


@pytest.mark.parametrize("algorithm, case", LARGER_PAIRS, ids=[f"{a}-x{c[0]}-w{c[1]}".replace(" ", "") for a, c in LARGER_PAIRS])
def test_larger_layers(algorithm, case, rng):
    """Shapes big enough to cross every blocking boundary of the kernels."""
    for xs, ws, stride, padding, groups in [case]:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32)
        want = fastconv.conv2d(x, w, b, stride, padding, groups=groups, algorithm="reference")
        got = fastconv.conv2d(x, w, b, stride, padding, groups=groups, algorithm=algorithm,
                              out=nan_out(want.shape, np.float32))
        tol_algo = fastconv.explain(xs, ws, stride, padding, groups=groups).auto if algorithm == "auto" else algorithm
        assert_close(got, want, tolerance(tol_algo, np.float32, ws[1] * ws[2] * ws[3]), f"{algorithm} {xs} {ws}")


def test_threads_give_same_answer(rng):
    x = rng.standard_normal((3, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    before = fastconv.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3):
            fastconv.set_num_threads(n)
            assert fastconv.get_num_threads() == n
            for algorithm in CONV_ALGORITHMS:
                results.setdefault(algorithm, []).append(fastconv.conv2d(x, w, padding=1, algorithm=algorithm))
    finally:
        fastconv.set_num_threads(before)
    want = fastconv.conv2d(x, w, padding=1, algorithm="reference")
    for algorithm, ys in results.items():
        for y in ys:
            assert_close(y, want, tolerance(algorithm, np.float32, 144), algorithm)


def test_auto_uses_winograd_only_on_finite_inputs(rng):
    """auto picks Winograd where it wins, but NaN/Inf must stay where the reference puts
    them: a Winograd tile would spread one over its whole tile, so auto falls back."""
    x = rng.standard_normal((1, 32, 30, 30)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    assert fastconv.explain(x.shape, w.shape, padding=1).auto == "winograd:4"
    assert fastconv.explain(x.shape, w.shape, padding=1, dtype="float64").auto != "winograd:4"
    y = fastconv.conv2d(x, w, padding=1)
    assert_close(y, fastconv.conv2d(x, w, padding=1, algorithm="reference"), tolerance("winograd:4", np.float32, 288))
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[0, 3, 10, 10] = bad
        want = fastconv.conv2d(xb, w, padding=1, algorithm="reference")
        got = fastconv.conv2d(xb, w, padding=1)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)
    wb = w.copy()
    wb[1, 2, 0, 0] = np.nan
    got = fastconv.conv2d(x, wb, padding=1)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(fastconv.conv2d(x, wb, padding=1, algorithm="reference")))
