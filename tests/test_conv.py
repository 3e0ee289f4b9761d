"""conv2d/conv1d forward: every (device, algorithm) row of the kernel table x dtype x ISA
against reference.py over cases.py's table of problems, with outputs pre-filled with NaN
(compare.conv_forward); exactness on small integers; 1-D as 2-D with H = 1; larger layers
that cross every blocking boundary; threads; auto and non-finite inputs."""
import numpy as np
import pytest

import fastconv
from cases import (CONV1D_CASES, CONV_ALGORITHMS, CONV_CASES, CONV_LARGER, CONV_ROWS, DTYPES, EXACT_ALGORITHMS,
                   Row, conv1d_as_2d, row_param, serves)
from compare import assert_close, conv_forward, nan_out, on_device, to_host, tolerance

# Only the (row, dtype, case) triples the kernel table says it serves.
MATCH = [row_param(r, d, c, id_suffix=f"-{np.dtype(d).name}-{c.id}")
         for r in CONV_ROWS for d in DTYPES for c in CONV_CASES if serves(r, c, d)]


@pytest.mark.parametrize("row, dtype, case", MATCH)
def test_conv2d_matches_reference(row, dtype, case, isa, rng):
    conv_forward(row, case, dtype, rng, f"{isa} {case.id}")


EXACT_ROWS = [r for r in CONV_ROWS if r.algorithm in EXACT_ALGORITHMS]  # Winograd's fractions are not exact


@pytest.mark.parametrize("case", CONV_CASES[:22], ids=[c.id for c in CONV_CASES[:22]])
@pytest.mark.parametrize("row", [row_param(r) for r in EXACT_ROWS])
def test_conv2d_exact_on_small_integers(row, case, rng):
    """Small integers make every partial sum exact, whatever the summation order."""
    x = rng.integers(-4, 5, case.x).astype(np.float32)
    w = rng.integers(-4, 5, case.w).astype(np.float32)
    want = fastconv.conv2d(x, w, None, algorithm="reference", **case.kwargs)
    got = fastconv.conv2d(on_device(x, row.device), on_device(w, row.device), None, algorithm=row.algorithm,
                          out=nan_out(want.shape, np.float32, row.device), **case.kwargs)
    np.testing.assert_array_equal(to_host(got), want)


DEVICES = sorted({r.device for r in CONV_ROWS})
# auto on each device, and the rows that serve every 1-D case (as 2-D problems with H = R = 1).
CONV1D_ROWS = [row_param(Row(d, "auto"), dt, id_suffix=f"-{np.dtype(dt).name}") for d in DEVICES for dt in DTYPES] + [
    row_param(r, dt, id_suffix=f"-{np.dtype(dt).name}") for r in CONV_ROWS for dt in DTYPES
    if all(serves(r, conv1d_as_2d(c), dt) for c in CONV1D_CASES)]


@pytest.mark.parametrize("row, dtype", CONV1D_ROWS)
def test_conv1d_matches_reference(row, dtype, rng):
    for xs, ws, stride, padding, dilation, groups in CONV1D_CASES:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        want = fastconv.conv1d(x, w, b, algorithm="reference", **kw)
        out = nan_out(want.shape, dtype, row.device)
        got = fastconv.conv1d(*(on_device(a, row.device) for a in (x, w, b)), algorithm=row.algorithm,
                              out=out, **kw)
        assert got is out  # out= itself, not a view of it (found by test_fuzz.py)
        assert got.ndim == 3
        tol_algo = "im2col" if row.algorithm == "auto" else row.algorithm
        assert_close(to_host(got), want, tolerance(tol_algo, dtype, ws[1] * ws[2]), f"conv1d {row} {xs}")


def test_conv1d_is_conv2d_with_unit_height(rng):
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)
    w = rng.standard_normal((5, 3, 4)).astype(np.float32)
    y1 = fastconv.conv1d(x, w, stride=2, padding=(1, 2), dilation=3)
    y2 = fastconv.conv2d(x[:, :, None], w[:, :, None], stride=(1, 2), padding=((0, 0), (1, 2)), dilation=(1, 3))
    np.testing.assert_array_equal(y1, y2[:, :, 0])


LARGER = [row_param(r, c, id_suffix=f"-x{c.x}-w{c.w}".replace(" ", ""))
          for r in CONV_ROWS + [Row(d, "auto") for d in DEVICES] for c in CONV_LARGER
          if r.algorithm == "auto" or serves(r, c, np.float32)]


@pytest.mark.parametrize("row, case", LARGER)
def test_larger_layers(row, case, rng):
    """Shapes big enough to cross every blocking boundary of the kernels (auto: at the
    tolerance of what it picks)."""
    x = rng.standard_normal(case.x).astype(np.float32)
    w = rng.standard_normal(case.w).astype(np.float32)
    b = rng.standard_normal(case.w[0]).astype(np.float32)
    want = fastconv.conv2d(x, w, b, algorithm="reference", **case.kwargs)
    got = fastconv.conv2d(*(on_device(a, row.device) for a in (x, w, b)), algorithm=row.algorithm,
                          out=nan_out(want.shape, np.float32, row.device), **case.kwargs)
    tol_algo = row.algorithm
    if row.algorithm == "auto":
        tol_algo = fastconv.explain(case.x, case.w, case.stride, case.padding, groups=case.groups).auto
    assert_close(to_host(got), want, tolerance(tol_algo, np.float32, case.reduction), f"{row} {case.id}")


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
    auto = fastconv.explain(x.shape, w.shape, padding=1).auto  # F(4x4), F(2x2) on Intel's cores
    assert auto.startswith("winograd:")
    assert not fastconv.explain(x.shape, w.shape, padding=1, dtype="float64").auto.startswith("winograd")
    y = fastconv.conv2d(x, w, padding=1)
    assert_close(y, fastconv.conv2d(x, w, padding=1, algorithm="reference"), tolerance(auto, np.float32, 288))
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
    want = fastconv.conv2d(x, wb, padding=1, algorithm="reference")
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))


@pytest.mark.parametrize("row", [row_param(r) for r in CONV_ROWS + [Row(d, "auto") for d in DEVICES]
                                 if r.algorithm in ("auto", "direct", "im2col")])
@pytest.mark.parametrize("stride", [2**31, 2**40, (1, 2**40), (2**62, 1)])
def test_stride_past_the_input(row, stride, rng):
    """A stride past the padded input gives one output along that axis: it matches the reference
    (the direct kernel aborted the process at stride 2**40, sizing its band by the stride:
    found by test_fuzz.py with x (1, 4, 3, 11), w (3, 4, 2, 2), padding ((2, 2), (0, 3)),
    dilation 3, flip=True, algorithm='autotune')."""
    x = rng.standard_normal((1, 4, 3, 11)).astype(np.float32)
    w = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    kw = dict(stride=stride, padding=((2, 2), (0, 3)), dilation=3, flip=True)
    want = fastconv.conv2d(x, w, algorithm="reference", **kw)
    got = fastconv.conv2d(on_device(x, row.device), on_device(w, row.device), algorithm=row.algorithm, **kw)
    assert_close(to_host(got), want, tolerance("direct", np.float32, 16), f"{row} stride {stride}")
