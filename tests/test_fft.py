"""FFT convolution (overlap-save), n x n tiles, n = 8, 16: the tile transforms of
csrc/math/fft.h against numpy.fft, whole convolutions against the reference (odd sizes,
asymmetric pads, groups, non-square kernels up to n-1, empty batch, NaN-filled outputs),
the accuracy contract at up to 512 channels, plans (prepared kernel spectra), NaN/Inf
behaviour and the errors for problems FFT does not serve."""
import numpy as np
import pytest

import fastconv
from fastconv import _C
from fastconv.functional import conv_params
from compare import assert_close, nan_out

TILES = (8, 16)
# The accuracy contract: max |error| / max |y| on signed random float32 data.
CONTRACT = 2e-5


# ---- tile transforms -----------------------------------------------------------------

@pytest.mark.parametrize("n", TILES)
def test_tile_forward_is_rfft2(n, isa, rng):
    for _ in range(3):
        t = rng.standard_normal((n, n)).astype(np.float32)
        got = _C.fft_tile_forward(n, t)
        want = np.fft.rfft2(t.astype(np.float64))
        assert got.dtype == np.complex64 and got.shape == (n, n // 2 + 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * n * n)


@pytest.mark.parametrize("n", TILES)
def test_tile_inverse_is_irfft2(n, isa, rng):
    """Unnormalised: n*n times numpy's irfft2, for a Hermitian spectrum (the rfft2 of a
    real tile); and inverse(forward(t)) = n*n t."""
    spec = np.fft.rfft2(rng.standard_normal((n, n)))
    got = _C.fft_tile_inverse(n, spec.astype(np.complex64))
    assert got.dtype == np.float32 and got.shape == (n, n)
    np.testing.assert_allclose(got, np.fft.irfft2(spec, s=(n, n)) * n * n, rtol=0, atol=2e-6 * n * n * n)
    t = rng.standard_normal((n, n)).astype(np.float32)
    np.testing.assert_allclose(_C.fft_tile_inverse(n, _C.fft_tile_forward(n, t)) / (n * n), t, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", TILES)
def test_tile_transforms_of_impulses(n):
    """Every basis tile: e_(i,j) has spectrum e^{-2 pi I (u i + v j) / n}, exactly the
    twiddles, so each codelet's index and sign conventions are checked one by one."""
    for i in range(n):
        for j in range(n):
            t = np.zeros((n, n), np.float32)
            t[i, j] = 1
            np.testing.assert_allclose(_C.fft_tile_forward(n, t), np.fft.rfft2(t), rtol=0, atol=1e-6)
            np.testing.assert_allclose(_C.fft_tile_inverse(n, np.fft.rfft2(t).astype(np.complex64)),
                                       t * n * n, rtol=0, atol=1e-4)


def test_tile_transform_errors():
    with pytest.raises(ValueError, match="8 or 16"):
        _C.fft_tile_forward(4, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="tile must be 8x8"):
        _C.fft_tile_forward(8, np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="spectrum must be 16x9"):
        _C.fft_tile_inverse(16, np.zeros((16, 16), np.complex64))


# ---- whole convolutions ----------------------------------------------------------------

# (x shape, w shape, padding, groups)
SHAPES = [
    ((2, 7, 13, 11), (5, 7, 3, 3), 1, 1),                   # batch, odd/prime sizes
    ((1, 6, 17, 19), (9, 2, 5, 3), ((0, 2), (1, 3)), 3),     # asymmetric pads, groups, non-square
    ((1, 8, 23, 9), (8, 1, 7, 7), 3, 8),                     # depthwise, the largest kernel of fft:8
    ((3, 5, 2, 3), (4, 5, 1, 1), 0, 1),                      # H, W smaller than any tile; 1x1
    ((1, 4, 5, 5), (3, 4, 3, 3), "full", 1),                 # output larger than the input
    ((1, 3, 29, 31), (4, 3, 2, 7), "valid", 1),
    ((2, 3, 37, 41), (6, 3, 1, 5), ((3, 0), (2, 1)), 1),
    ((0, 4, 8, 8), (4, 4, 3, 3), 1, 1),                      # empty batch
]
SHAPES_16 = [                                                # kernels only fft:16 serves
    ((1, 5, 31, 29), (4, 5, 15, 15), 7, 1),
    ((2, 4, 20, 37), (6, 2, 9, 13), ((4, 4), (0, 6)), 2),
]


def _cases():
    for n in TILES:
        for s in SHAPES + (SHAPES_16 if n == 16 else []):
            yield n, s


CASES = list(_cases())


@pytest.mark.parametrize("n, case", CASES,
                         ids=[f"fft{n}-x{s[0]}-w{s[1]}-p{s[2]}-g{s[3]}".replace(" ", "") for n, s in CASES])
def test_conv_matches_reference(n, case, isa, rng):
    xs, ws, padding, groups = case
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    want = fastconv.conv2d(x, w, b, padding=padding, groups=groups, algorithm="reference")
    out = nan_out(want.shape, np.float32)
    got = fastconv.conv2d(x, w, b, padding=padding, groups=groups, algorithm=f"fft:{n}", out=out)
    assert got is out
    assert_close(got, want, CONTRACT, f"fft:{n}/{isa}")


ACCURACY = [(c, r) for c in (64, 512) for r in (3, 5, 7)]


@pytest.mark.parametrize("n", TILES)
@pytest.mark.parametrize("channels, r", ACCURACY, ids=[f"C{c}-{r}x{r}" for c, r in ACCURACY])
def test_accuracy_contract(n, channels, r, rng):
    """max |y - ref| / max |ref| <= 2e-5 for signed random data, up to 512 input channels."""
    x = rng.standard_normal((1, channels, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, channels, r, r)).astype(np.float32)
    want = fastconv.conv2d(x, w, padding=r // 2, algorithm="reference")
    got = fastconv.conv2d(x, w, padding=r // 2, algorithm=f"fft:{n}")
    assert_close(got, want, CONTRACT, f"fft:{n} C={channels} {r}x{r}")


@pytest.mark.parametrize("n", TILES)
def test_many_tile_blocks_and_threads(n, rng):
    """Enough tiles for several blocks (one per thread), and every thread count."""
    x = rng.standard_normal((3, 24, 61, 53)).astype(np.float32)
    w = rng.standard_normal((16, 24, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    want = fastconv.conv2d(x, w, b, padding=2, algorithm="reference")
    before = fastconv.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastconv.set_num_threads(threads)
            got = fastconv.conv2d(x, w, b, padding=2, algorithm=f"fft:{n}", out=nan_out(want.shape, np.float32))
            assert_close(got, want, CONTRACT, f"fft:{n} threads={threads}")
    finally:
        fastconv.set_num_threads(before)


@pytest.mark.parametrize("n", TILES)
@pytest.mark.parametrize("case", [((2, 6, 19, 23), (8, 3, 5, 4), 2, 2), ((1, 32, 30, 30), (16, 32, 3, 3), 1, 1)])
def test_prepared_equals_unprepared(n, case, rng):
    """A plan's kernel spectra (prepare_weights) give the very same result as run()
    computing them itself, with a smaller workspace."""
    xs, ws, padding, groups = case
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    algo = f"fft:{n}"
    params, _ = conv_params(xs, ws, 1, padding, 1, groups, "test")
    shape = (params.N, params.K, params.P, params.Q)
    nbytes = _C.prepared_bytes(algo, params, "float32")
    assert nbytes > 0 and nbytes % 4 == 0
    prepared = np.full(nbytes // 4, np.nan, np.float32)
    _C.prepare_weights(algo, params, w, prepared)
    assert np.all(np.isfinite(prepared))
    ws_plain = _C.workspace_bytes(algo, params, "float32")
    ws_prep = _C.workspace_bytes(algo, params, "float32", True)
    assert ws_prep + nbytes <= ws_plain + 64
    y1 = nan_out(shape, np.float32)
    _C.run("conv2d_forward", algo, params, {"x": x, "w": w, "bias": b, "y": y1}, np.empty(ws_plain, np.uint8))
    y2 = nan_out(shape, np.float32)
    _C.run("conv2d_forward", algo, params, {"x": x, "w": prepared, "bias": b, "y": y2},
           np.empty(max(ws_prep, 1), np.uint8), prepared=True)
    np.testing.assert_array_equal(y1, y2)
    want = fastconv.conv2d(x, w, b, padding=padding, groups=groups, algorithm="reference")
    assert_close(y2, want, CONTRACT, algo)
    with pytest.raises(ValueError, match="prepared weight"):
        _C.run("conv2d_forward", algo, params, {"x": x, "w": prepared[:-1], "bias": b, "y": y2},
               np.empty(max(ws_prep, 1), np.uint8), prepared=True)


def test_fft_alias_picks_a_tile(rng):
    x = rng.standard_normal((1, 8, 30, 30)).astype(np.float32)
    for r, tile in [(3, None), (5, None), (9, 16), (15, 16)]:
        w = rng.standard_normal((4, 8, r, r)).astype(np.float32)
        want = fastconv.conv2d(x, w, padding=r // 2, algorithm="reference")
        got = fastconv.conv2d(x, w, padding=r // 2, algorithm="fft")
        assert_close(got, want, CONTRACT, f"fft {r}x{r}")
        params, _ = conv_params(x.shape, w.shape, 1, r // 2, 1, 1, "test")
        chosen = fastconv.algorithms.fft_tile(params)
        assert chosen in TILES and (tile is None or chosen == tile)
    assert "fft" in fastconv.info()["algorithms"]
    assert not fastconv.algorithms.is_exact_on_nonfinite("fft:8")
    assert not fastconv.algorithms.is_exact_on_nonfinite("fft:16")


# ---- NaN and Inf ------------------------------------------------------------------

@pytest.mark.parametrize("n", TILES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_explicit_fft_nan_spreads_over_the_tile(n, bad, rng):
    """Documented behaviour of explicit fft: every output the reference gives as
    non-finite is non-finite; beyond those, a NaN or Inf input turns into NaN the outputs
    of the tiles whose n x n input window covers it, never an output of any other tile."""
    r = 5
    m = n - r + 1
    x = rng.standard_normal((1, 3, 40, 40)).astype(np.float32)
    w = rng.standard_normal((4, 3, r, r)).astype(np.float32)
    x[0, 1, 19, 22] = bad
    want = fastconv.conv2d(x, w, padding=2, algorithm="reference")
    got = fastconv.conv2d(x, w, padding=2, algorithm=f"fft:{n}")
    assert np.all(~np.isfinite(got[~np.isfinite(want)]))
    # tiles whose window (rows t*m - 2 .. t*m - 2 + n - 1) covers row 19 / column 22
    tiles = -(-40 // m)
    hit_r = [t for t in range(tiles) if t * m - 2 <= 19 <= t * m - 2 + n - 1]
    hit_c = [t for t in range(tiles) if t * m - 2 <= 22 <= t * m - 2 + n - 1]
    spoiled = np.zeros((40, 40), bool)
    for tr in hit_r:
        for tc in hit_c:
            spoiled[tr * m:(tr + 1) * m, tc * m:(tc + 1) * m] = True
    clean = got[:, :, ~spoiled]
    assert np.all(np.isfinite(clean))
    np.testing.assert_allclose(clean, want[:, :, ~spoiled], rtol=0, atol=1e-4 * np.abs(want[np.isfinite(want)]).max())


def test_auto_gives_the_reference_nonfinite_pattern_on_an_fft_problem(rng):
    """auto picks FFT here, finds NaN in its result and reruns the problem exactly
    (functional._run_policy). 56x56: FFT on every CPU's rules (Intel's start there)."""
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 5, 5)).astype(np.float32)
    assert fastconv.explain(x.shape, w.shape, padding=2).auto.startswith("fft")
    x[0, 2, 7, 7] = np.nan
    want = fastconv.conv2d(x, w, padding=2, algorithm="reference")
    spread = fastconv.conv2d(x, w, padding=2, algorithm="fft")
    assert (~np.isfinite(spread)).sum() > (~np.isfinite(want)).sum()  # FFT alone spreads it
    got = fastconv.conv2d(x, w, padding=2)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=1e-4 * np.abs(want[finite]).max())


# ---- what FFT does not serve ---------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["fft", "fft:8", "fft:16"])
@pytest.mark.parametrize("kwargs, words", [
    (dict(stride=2), ["stride 1", "stride (2, 2)"]),
    (dict(dilation=2), ["dilation 1", "dilation (2, 2)"]),
    (dict(x=np.zeros((1, 3, 8, 8)), w=np.zeros((4, 3, 3, 3))), ["float32", "float64"]),
])
def test_unsupported_problems_raise(algorithm, kwargs, words):
    args = dict(x=np.zeros((1, 3, 8, 8), np.float32), w=np.zeros((4, 3, 3, 3), np.float32), padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(args.pop("x"), args.pop("w"), **args, algorithm=algorithm)
    for word in [algorithm] + words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("algorithm, ksize, words", [
    ("fft:8", (8, 3), ["fft:8", "up to 7x7", "kernel 8x3", "fft:16"]),
    ("fft:8", (3, 9), ["fft:8", "up to 7x7", "kernel 3x9"]),
    ("fft:16", (16, 16), ["fft:16", "up to 15x15", "kernel 16x16"]),
    ("fft", (17, 3), ["fft", "up to 15x15", "kernel 17x3"]),
])
def test_kernel_too_large_for_the_tile(algorithm, ksize, words):
    x = np.zeros((1, 2, 20, 20), np.float32)
    w = np.zeros((3, 2) + ksize, np.float32)
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(x, w, algorithm=algorithm)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_auto_picks_fft_for_large_kernels_on_large_maps(rng):
    # auto's rules (algorithms.py, fitted to benchmarks/auto_grid_zen4.json and, for Intel's
    # AVX-512 cores, auto_grid_spr.json): FFT for 5x5+ stride-1 float32 layers with >= 64
    # channels and enough output pixels (7x7: below 128 channels), never on NaN/Inf inputs,
    # never for float64.
    from fastconv import algorithms
    from fastconv.functional import conv_params

    def pick(x_shape, w_shape, pad, dtype=np.float32, finite=True, vendor="amd"):
        params, _ = conv_params(x_shape, w_shape, 1, pad, 1, 1)
        return algorithms.choose(params, np.dtype(dtype), inputs_finite=finite, isa="avx512", vendor=vendor)

    assert pick((1, 64, 56, 56), (64, 64, 5, 5), 2) == "fft:8"
    assert pick((1, 128, 28, 28), (128, 128, 5, 5), 2) == "fft:8"
    assert pick((8, 64, 7, 7), (64, 64, 7, 7), 3) == "fft:16"
    assert pick((1, 64, 56, 56), (64, 64, 7, 7), 3) == "fft:16"
    assert pick((1, 128, 28, 28), (128, 128, 7, 7), 3) == "direct"
    # Intel: direct below 56x56 maps (3136 output pixels a call), 16x16 tiles from there
    assert pick((1, 64, 56, 56), (64, 64, 5, 5), 2, vendor="intel") == "fft:16"
    assert pick((1, 128, 28, 28), (128, 128, 5, 5), 2, vendor="intel") == "direct"
    assert pick((8, 64, 7, 7), (64, 64, 7, 7), 3, vendor="intel") == "direct"
    for vendor in ("amd", "intel"):
        assert pick((1, 64, 56, 56), (64, 64, 5, 5), 2, finite=False, vendor=vendor) not in ("fft:8", "fft:16")
        assert pick((1, 64, 56, 56), (64, 64, 5, 5), 2, dtype=np.float64, vendor=vendor) not in ("fft:8", "fft:16")
    # And conv2d with auto gives the reference's NaN pattern on such a layer.
    x = rng.standard_normal((1, 16, 60, 60)).astype(np.float32)
    w = rng.standard_normal((16, 16, 5, 5)).astype(np.float32)
    x[0, 2, 30, 30] = np.nan
    y = fastconv.conv2d(x, w, padding=2)
    ref = fastconv.conv2d(x, w, padding=2, algorithm="reference")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
