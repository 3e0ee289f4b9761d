"""Numerics (issue 19 item 5): NaN and +-Inf land exactly where the reference puts them for
direct, im2col and auto, forward and backward; results are bit-identical run to run at a fixed
thread count, for every algorithm."""
import numpy as np
import pytest

import fastconv as fc
from cases import CONV_ALGORITHMS
from compare import on_device, to_host, tolerance

EXACT = ["direct", "im2col", "auto"]
# The CUDA kernels (on a GPU, else on the SIMT emulator) follow the same contract.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# (x shape, w shape, conv kwargs): padding (where an Inf weight meets the zero padding: Inf * 0
# is NaN in the reference), stride, dilation, groups, a 1x1 (the GEMM path) and a 3x3 that auto
# would give to Winograd if the data were finite.
PROBLEMS = [
    ((2, 6, 11, 9), (4, 3, 3, 3), dict(padding=1, groups=2)),
    ((1, 5, 13, 12), (6, 5, 3, 2), dict(stride=(2, 1), padding=((2, 0), (1, 1)), dilation=(1, 2))),
    ((2, 8, 7, 7), (16, 8, 1, 1), dict()),
    ((1, 32, 30, 30), (32, 32, 3, 3), dict(padding=1)),
    ((1, 4, 9, 9), (4, 1, 3, 3), dict(padding=2, groups=4, dilation=2)),
]


def _poisoned(rng, shape, dtype, where):
    """Signed random data with a few NaN, +Inf and -Inf at random positions (`where` picks
    which of the three)."""
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    for value in where:
        flat[rng.integers(0, flat.size, size=max(1, flat.size // 97))] = value
    return a


def assert_same_nonfinite(got, want, tol, what):
    """NaN, +Inf and -Inf in the same places; the finite values within tol (compare.py's: error
    relative to the largest finite |value| of the reference)."""
    for mask, name in ((np.isnan, "NaN"), (np.isposinf, "+Inf"), (np.isneginf, "-Inf")):
        g, w = mask(got), mask(want)
        if not np.array_equal(g, w):
            bad = np.argwhere(g != w)[:5].tolist()
            raise AssertionError(f"{what}: {name} at {int(g.sum())} places, reference {int(w.sum())}; "
                                 f"first differences at {bad}")
    finite = np.isfinite(want)
    if finite.any():
        scale = max(float(np.abs(want[finite]).max()), np.finfo(want.dtype).tiny)
        np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=tol * scale, err_msg=what)


POISONS = [("nan", [np.nan]), ("inf", [np.inf, -np.inf]), ("all", [np.nan, np.inf, -np.inf])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("poison, values", POISONS, ids=[p[0] for p in POISONS])
@pytest.mark.parametrize("in_x, in_w", [(True, False), (False, True), (True, True)], ids=["x", "w", "xw"])
@pytest.mark.parametrize("problem", range(len(PROBLEMS)))
def test_forward_propagates_nonfinite_as_the_reference(problem, in_x, in_w, poison, values, dtype, algorithm,
                                                       device):
    xs, ws, kw = PROBLEMS[problem]
    rng = np.random.default_rng(problem * 31 + len(values))
    x = _poisoned(rng, xs, dtype, values if in_x else [])
    w = _poisoned(rng, ws, dtype, values if in_w else [])
    b = rng.standard_normal(ws[0]).astype(dtype)
    want = fc.conv2d(x, w, b, algorithm="reference", **kw)
    got = to_host(fc.conv2d(*(on_device(a, device) for a in (x, w, b)), algorithm=algorithm, **kw))
    tol = tolerance("im2col", dtype, ws[1] * ws[2] * ws[3])
    assert_same_nonfinite(got, want, tol, f"{algorithm} forward")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("poison, values", POISONS, ids=[p[0] for p in POISONS])
@pytest.mark.parametrize("where", ["x", "w", "gy"])
@pytest.mark.parametrize("problem", range(len(PROBLEMS)))
def test_backward_propagates_nonfinite_as_the_reference(problem, where, poison, values, algorithm, device):
    xs, ws, kw = PROBLEMS[problem]
    rng = np.random.default_rng(problem * 17 + len(values))
    x = _poisoned(rng, xs, np.float32, values if where == "x" else [])
    w = _poisoned(rng, ws, np.float32, values if where == "w" else [])
    ys = fc.conv2d_output_shape(xs, ws, **kw)
    gy = _poisoned(rng, ys, np.float32, values if where == "gy" else [])
    want = fc.conv2d_backward(gy, x, w, algorithm="reference", **kw)
    got = [to_host(g) for g in fc.conv2d_backward(*(on_device(a, device) for a in (gy, x, w)), algorithm=algorithm,
                                                  **kw)]
    reductions = (ws[0] // kw.get("groups", 1) * ws[2] * ws[3], ys[0] * ys[2] * ys[3], ys[0] * ys[2] * ys[3])
    for g, r, n, red in zip(got, want, ("grad_x", "grad_w", "grad_bias"), reductions):
        assert_same_nonfinite(g, r, tolerance("im2col", np.float32, red), f"{algorithm} {n}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS + ["auto"])
def test_results_are_bit_identical_run_to_run(algorithm, threads):
    before = fc.get_num_threads()
    fc.set_num_threads(threads)
    try:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((2, 24, 29, 27)).astype(np.float32)
        w = rng.standard_normal((32, 24, 3, 3)).astype(np.float32)
        gy = rng.standard_normal((2, 32, 29, 27)).astype(np.float32)
        runs = []
        for _ in range(4):
            y = fc.conv2d(x, w, padding=1, algorithm=algorithm)
            grads = ()
            if algorithm in ("direct", "im2col", "auto"):
                grads = fc.conv2d_backward(gy, x, w, padding=1, algorithm=algorithm)
            pools = fc.max_pool2d(x, 3, stride=2, return_indices=True) + (fc.lp_pool2d(x, 2.0, 3),)
            runs.append((y, *grads, *pools))
        for run in runs[1:]:
            for a, b in zip(runs[0], run):
                np.testing.assert_array_equal(a, b, err_msg=f"{algorithm} at {threads} threads differs run to run")
    finally:
        fc.set_num_threads(before)


@pytest.mark.parametrize("algorithm", EXACT)
def test_subnormal_inputs_are_computed_not_flushed(algorithm):
    """fastconv keeps IEEE subnormals (no flush-to-zero; benchmarks/bench_denormals.py measures
    their cost): inputs scaled into the subnormal range give the reference's results."""
    rng = np.random.default_rng(3)
    tiny = np.float32(2.0**-130)  # |x| * tiny < 2^-126: every input value subnormal
    x = (rng.standard_normal((2, 6, 13, 11)) * tiny).astype(np.float32)
    assert np.abs(x).max() < np.finfo(np.float32).smallest_normal and np.count_nonzero(x) > x.size // 2
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 13, 11)).astype(np.float32)
    kw = dict(padding=1, groups=2)
    for got, want, what in ((fc.conv2d(x, w, algorithm=algorithm, **kw), fc.conv2d(x, w, algorithm="reference", **kw),
                             "forward"),
                            (fc.conv2d_backward(gy, x, w, algorithm=algorithm, **kw)[1],
                             fc.conv2d_backward(gy, x, w, algorithm="reference", **kw)[1], "grad_w")):
        assert np.count_nonzero(got) > got.size // 2, f"{what}: subnormal inputs were flushed to zero"
        # Subnormals carry fewer significant bits: a few ulps of 2^-149 on each product.
        np.testing.assert_allclose(got, want, rtol=0, atol=float(np.abs(want).max()) * 1e-4, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 17, 40_001])  # 40,001 values: over 64 KiB, read by the team
def test_all_finite_finds_every_nonfinite_value(dtype, n):
    """auto's and plans' finiteness check (fastconv._C.all_finite: exponent bits, the CPU
    threads reading it) at the first, a middle and the last element, for NaN, +Inf, -Inf;
    finite extremes whose sum overflows and subnormals are finite; a non-contiguous view takes
    NumPy's path."""
    from fastconv._arrays import HOST
    rng = np.random.default_rng(n)
    info = np.finfo(dtype)
    a = rng.standard_normal(n).astype(dtype)
    if n:
        a[:: max(1, n // 7)] = info.max  # their sum overflows; every value is finite
        a[n // 2] = info.smallest_subnormal
    before = fc._C.get_num_threads()
    try:
        for t in (1, 2):
            fc._C.set_num_threads(t)
            assert fc._C.all_finite(a) and HOST.all_finite(a)
            for i in sorted({0, n // 2, n - 1}) if n else []:
                for bad in (np.nan, np.inf, -np.inf):
                    b = a.copy()
                    b[i] = bad
                    assert not fc._C.all_finite(b) and not HOST.all_finite(b), (t, i, bad)
    finally:
        fc._C.set_num_threads(before)
    if n > 2:
        view = a.copy()[::2]
        assert not view.flags.c_contiguous
        with pytest.raises(ValueError, match="C-contiguous"):
            fc._C.all_finite(view)
        view[1] = np.nan
        assert not HOST.all_finite(view)
    with pytest.raises(TypeError, match="float32, float64"):
        fc._C.all_finite(np.zeros(3, np.int32))
