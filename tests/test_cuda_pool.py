"""The CUDA pooling kernels (csrc/cuda/pool2d.cu) against the CPU kernels, whose semantics they
copy, on what the case table (test_pool.py, test_pool_backward.py: integer data, the reference
at a tolerance) does not reach:

- NaN and -inf in max pooling's windows (the last NaN's index, -inf-only windows giving the
  first tap's index), ties, with the per-thread kernels (2x2, 3x3, any) and the lane-group one
  (windows of 32 taps or more: large kernels, adaptive and global pooling, 1-D windows), forward
  and backward;
- bit-for-bit agreement with the CPU where the CUDA kernel sums in the CPU's order (max, the
  per-thread average, every backward but Lp's pow);
- Lp with zeros in the windows (0-sum windows pass no gradient; x^(p-1) of a zero), negative and
  infinite orders, ties of |x|.

Run on the emulator (FASTCONV_CUDA_EMU build, no GPU) or a GPU; keep the problems small.
"""
import math

import numpy as np
import pytest

import fastconv as fc
from compare import on_device, to_host

pytestmark = pytest.mark.cuda

DTYPES = [np.float32, np.float64]


def _run(op, device, *arrays, **kw):
    """fastconv.<op>(*arrays on device, **kw) as host arrays (a tuple for a tuple result); an
    ``indices`` argument goes to the device too."""
    if kw.get("indices") is not None:
        kw = dict(kw, indices=on_device(kw["indices"], device))
    r = getattr(fc, op)(*(on_device(a, device) for a in arrays), **kw)
    return tuple(to_host(a) for a in r) if isinstance(r, tuple) else to_host(r)


def _data(kind, shape, dtype, rng):
    """ties: small integers; nan: with NaN and -inf among them; neginf: mostly -inf (whole
    windows of it) with a few NaN and numbers; positive: normals away from 0; zeros: signed
    normals with a quarter exact zeros."""
    if kind == "ties":
        return rng.integers(-2, 3, shape).astype(dtype)
    if kind == "nan":
        a = rng.integers(-2, 3, shape).astype(dtype)
        u = rng.random(shape)
        a[u < 0.15] = np.nan
        a[(u >= 0.15) & (u < 0.25)] = -np.inf
        return a
    if kind == "neginf":
        a = np.full(shape, -np.inf, dtype)
        u = rng.random(shape)
        a[u < 0.02] = np.nan
        a[(u >= 0.02) & (u < 0.06)] = 1
        return a
    if kind == "positive":
        return (np.abs(rng.standard_normal(shape)) + 0.25).astype(dtype)
    a = rng.standard_normal(shape).astype(dtype)
    a[rng.random(shape) < 0.25] = 0
    return a


# (op, input shape, arguments): per-thread and lane-group windows, dilated, adaptive, 1-D.
MAX_CASES = [
    ("max_pool2d", (2, 3, 13, 17), dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", (1, 2, 11, 12), dict(kernel_size=3, stride=1, padding=1, dilation=2, ceil_mode=True)),
    ("max_pool2d", (1, 2, 20, 21), dict(kernel_size=7, stride=3, padding=3)),            # 49 taps: lanes each
    ("max_pool2d", (1, 2, 13, 14), dict(kernel_size=6, stride=2, padding=3, dilation=2)),  # 36 taps, dilated
    ("max_pool2d", (1, 1, 3, 4), dict(kernel_size=2, stride=1, padding=1, dilation=3)),   # empty windows
    ("adaptive_max_pool2d", (2, 3, 23, 19), dict(output_size=(2, 3))),                    # uneven, lanes each
    ("adaptive_max_pool2d", (2, 3, 23, 19), dict(output_size=1)),                         # global
    ("adaptive_max_pool2d", (1, 3, 23, 19), dict(output_size=(5, 4))),
    ("max_pool1d", (2, 3, 70), dict(kernel_size=40, stride=7, padding=20)),               # 1-D, 40 taps
    ("adaptive_max_pool1d", (2, 2, 101), dict(output_size=3)),
]


def _id(case):
    op, shape, kw = case
    return f"{op}{list(shape)}" + ",".join(f"{k}={v}" for k, v in kw.items()).replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["ties", "nan", "neginf"])
@pytest.mark.parametrize("case", MAX_CASES, ids=_id)
def test_max_pool_matches_the_cpu_bit_for_bit(case, kind, dtype, rng):
    op, shape, kw = case
    x = _data(kind, shape, dtype, rng)
    y, idx = _run(op, "cuda", x, return_indices=True, **kw)
    want_y, want_idx = _run(op, "cpu", x, return_indices=True, **kw)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(_run(op, "cuda", x, **kw), want_y)  # without indices
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = _run(op + "_backward", "cuda", gy, x, indices=want_idx, **kw)
    np.testing.assert_array_equal(gx, _run(op + "_backward", "cpu", gy, x, indices=want_idx, **kw))


AVG_CASES = [
    ("avg_pool2d", (2, 3, 13, 17), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                                        ceil_mode=True)),
    ("avg_pool2d", (1, 2, 12, 15), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), divisor_override=7)),
    ("avg_pool2d", (1, 2, 19, 17), dict(kernel_size=(8, 7), stride=(3, 2), padding=(4, 3), ceil_mode=True)),
    ("avg_pool2d", (1, 2, 19, 17), dict(kernel_size=(8, 7), stride=(3, 2), padding=(4, 3), ceil_mode=True,
                                        count_include_pad=False)),
    ("adaptive_avg_pool2d", (2, 3, 23, 19), dict(output_size=(3, 2))),
    ("adaptive_avg_pool2d", (2, 3, 23, 19), dict(output_size=1)),
    ("adaptive_avg_pool2d", (1, 3, 23, 19), dict(output_size=(7, 5))),
    ("adaptive_avg_pool2d", (1, 2, 5, 6), dict(output_size=(11, 13))),                    # output > input
    ("avg_pool1d", (2, 3, 70), dict(kernel_size=33, stride=5, padding=16, ceil_mode=True)),
]


def _taps(op, shape, kw):
    """Taps of the largest window, as pool2d.cu's max_taps (32 or more: lanes per output)."""
    if op.startswith("adaptive"):
        out = kw["output_size"]
        out = (1, out) if op.endswith("1d") else (out, out) if isinstance(out, int) else out
        h, w = (1, shape[-1]) if op.endswith("1d") else shape[-2:]
        return (-(-h // out[0]) + 1) * (-(-w // out[1]) + 1)
    k = kw["kernel_size"]
    return k if op.endswith("1d") else math.prod(k) if isinstance(k, tuple) else k * k


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", AVG_CASES, ids=_id)
def test_avg_pool_matches_the_cpu(case, dtype, rng):
    """Bit for bit where the CUDA kernel sums in the CPU's order (one thread per output, every
    backward); the lane-group forward and the CPU's global average reorder the sum."""
    op, shape, kw = case
    x = rng.standard_normal(shape).astype(dtype)
    y, want_y = _run(op, "cuda", x, **kw), _run(op, "cpu", x, **kw)
    global_avg = op.startswith("adaptive") and kw["output_size"] == 1
    if _taps(op, shape, kw) >= 32 or global_avg:
        tol = 2e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(y, want_y, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(y, want_y)
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(_run(op + "_backward", "cuda", gy, x, **kw),
                                  _run(op + "_backward", "cpu", gy, x, **kw))


LP_CASES = [
    ((2, 3, 13, 17), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((1, 2, 12, 13), dict(kernel_size=(2, 3), stride=1)),
    ((1, 2, 19, 17), dict(kernel_size=6, stride=4, ceil_mode=True)),  # 36 taps: lanes each
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("p", [1, 2, 3, 0.5, -1.5, math.inf, -math.inf])
@pytest.mark.parametrize("case", LP_CASES, ids=lambda c: f"{list(c[0])}" + ",".join(f"{k}={v}" for k, v in
                                                                                   c[1].items()))
def test_lp_pool_matches_the_cpu(case, p, dtype, rng):
    """Zeros in the data: all-zero windows (y = 0 passes no gradient for p > 0; for p < 0 a
    zero makes y 0 and x^(p-1) infinite), ties of |x| for +-inf. +-inf is bit for bit; finite
    orders differ by pow's rounding and the order of the lane-group kernel's sum."""
    shape, kw = case
    kind = "positive" if p not in (1, 2) and not math.isinf(p) else "zeros"
    x = _data(kind, shape, dtype, rng)
    if p in (3, 0.5, -1.5):
        x[rng.random(shape) < 0.2] = 0  # zeros, still no negative base for a fractional power
    if math.isinf(p):
        x = _data("ties", shape, dtype, rng)
    y, want_y = _run("lp_pool2d", "cuda", x, norm_type=p, **kw), _run("lp_pool2d", "cpu", x, norm_type=p, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = _run("lp_pool2d_backward", "cuda", gy, x, norm_type=p, **kw)
    want_gx = _run("lp_pool2d_backward", "cpu", gy, x, norm_type=p, **kw)
    if math.isinf(p):
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(gx, want_gx)
        return
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for got, want in ((y, want_y), (gx, want_gx)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = want[np.isfinite(want)]
        scale = float(np.max(np.abs(finite))) if finite.size else 1.0
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
