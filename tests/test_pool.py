"""Tests of fastconv's pooling: every op x float32/float64 x every ISA this CPU has, over a
generated table of cases (odd and prime sizes, kernels 1-5, strides 1-3, padding, dilation,
ceil_mode, count_include_pad, divisor_override, adaptive sizes that do and do not divide the
input), against the NumPy reference; the reference and fastconv against torch; NaN/Inf,
N == 0, non-contiguous and unbatched inputs, torch tensors; every error case.

Outputs are pre-filled with NaN (indices with -1) through out=, so an element a kernel
forgets to write fails the test. Max pooling values and indices are checked exactly.
"""
import functools
import math
import random
import zlib

import numpy as np
import pytest

import fastconv as fc
from fastconv import _C
from fastconv import reference as ref

DTYPES = [np.float32, np.float64]
# Tolerance per op family and dtype (rtol, atol): max is exact; sums are reordered and
# float32 accumulates in float32; Lp adds a pow and a root.
TOL = {
    "max": {np.float32: (0, 0), np.float64: (0, 0)},
    "avg": {np.float32: (2e-6, 2e-6), np.float64: (1e-13, 1e-13)},
    "lp": {np.float32: (2e-5, 2e-5), np.float64: (1e-12, 1e-12)},
}


# The `isa` fixture (every instruction set this CPU has) comes from conftest.py.


# ---- the case table ------------------------------------------------------------------------

def _family(op):
    return "max" if "max" in op else "lp" if op.startswith("lp") else "avg"


def _case(op, shape, **kw):
    return {"op": op, "shape": tuple(shape), "kw": kw}


def _explicit_cases():
    c = []
    # Fast paths: 3x3/2 (stem), 2x2/2, stride-1 kxk, with interiors and borders.
    c.append(_case("max_pool2d", (2, 3, 17, 23), kernel_size=3, stride=2, padding=1))
    c.append(_case("max_pool2d", (1, 2, 16, 34), kernel_size=3, stride=2, padding=1, ceil_mode=True))
    c.append(_case("max_pool2d", (1, 2, 15, 21), kernel_size=3, stride=2, padding=0, ceil_mode=True))
    c.append(_case("max_pool2d", (1, 2, 16, 22), kernel_size=2))
    c.append(_case("max_pool2d", (1, 2, 13, 19), kernel_size=2, stride=2, padding=1, ceil_mode=True))
    c.append(_case("max_pool2d", (1, 2, 13, 29), kernel_size=3, stride=1, padding=1))
    c.append(_case("max_pool2d", (1, 1, 9, 31), kernel_size=5, stride=1, padding=2))
    c.append(_case("max_pool2d", (1, 2, 11, 26), kernel_size=(3, 2), stride=(2, 3), padding=(1, 1)))
    c.append(_case("max_pool2d", (1, 2, 9, 14), kernel_size=3, stride=1, padding=1, dilation=2))
    c.append(_case("max_pool2d", (1, 1, 2, 2), kernel_size=2, stride=1, padding=1, dilation=3))  # empty window
    c.append(_case("max_pool2d", (1, 1, 1, 1), kernel_size=1))
    c.append(_case("max_pool2d", (1, 2, 6, 7), kernel_size=8, ceil_mode=True))  # kernel > input: torch allows
    c.append(_case("avg_pool2d", (2, 3, 16, 22), kernel_size=2))
    c.append(_case("avg_pool2d", (1, 2, 15, 17), kernel_size=2, ceil_mode=True))
    c.append(_case("avg_pool2d", (3, 5, 15, 17), kernel_size=2))  # 2x2/2 fast path, odd edges dropped
    c.append(_case("avg_pool2d", (4, 8, 30, 34), kernel_size=2, divisor_override=3))  # fast path, threads
    c.append(_case("avg_pool2d", (2, 3, 12, 14), kernel_size=2, divisor_override=2))  # fast path, times 1/2
    c.append(_case("avg_pool2d", (2, 3, 12, 14), kernel_size=2, divisor_override=-4))  # fast path, divides
    c.append(_case("adaptive_avg_pool2d", (2, 3, 14, 10), output_size=(7, 5)))  # regular 2x2/2 windows
    c.append(_case("avg_pool2d", (1, 2, 17, 23), kernel_size=3, stride=2, padding=1))
    c.append(_case("avg_pool2d", (1, 2, 17, 23), kernel_size=3, stride=2, padding=1, count_include_pad=False,
                   ceil_mode=True))
    c.append(_case("avg_pool2d", (1, 2, 13, 29), kernel_size=3, stride=1, padding=1))
    c.append(_case("avg_pool2d", (1, 2, 11, 13), kernel_size=(5, 3), stride=(3, 2), padding=(2, 1), ceil_mode=True))
    c.append(_case("avg_pool2d", (1, 2, 11, 13), kernel_size=3, stride=2, padding=1, divisor_override=3))
    c.append(_case("avg_pool2d", (1, 1, 7, 9), kernel_size=2, stride=1, padding=1, divisor_override=-2))
    c.append(_case("avg_pool2d", (1, 2, 6, 7), kernel_size=8, stride=3, ceil_mode=True))
    for p in (1, 2, 3, 0.5, -1.5, math.inf, -math.inf):
        c.append(_case("lp_pool2d", (1, 2, 11, 17), norm_type=p, kernel_size=3, stride=2, ceil_mode=True))
    c.append(_case("lp_pool2d", (2, 2, 12, 18), norm_type=2, kernel_size=2))
    c.append(_case("lp_pool2d", (1, 2, 9, 13), norm_type=2, kernel_size=(3, 2), stride=1))
    for op in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        for shape, o in [((1, 3, 12, 15), (4, 5)), ((1, 2, 13, 17), (5, 3)), ((2, 4, 7, 7), 1), ((1, 2, 5, 6), (7, 9)),
                         ((1, 2, 9, 10), (None, 4)), ((1, 2, 11, 11), 11), ((1, 2, 3, 29), (1, 1)),
                         ((1, 2, 16, 20), (8, 10))]:
            c.append(_case(op, shape, output_size=o))
    c.append(_case("max_pool1d", (2, 3, 29), kernel_size=3, stride=2, padding=1))
    c.append(_case("max_pool1d", (1, 2, 30), kernel_size=2))
    c.append(_case("max_pool1d", (1, 2, 31), kernel_size=4, stride=3, padding=2, dilation=2, ceil_mode=True))
    c.append(_case("avg_pool1d", (2, 3, 29), kernel_size=3, stride=2, padding=1, count_include_pad=False))
    c.append(_case("avg_pool1d", (1, 2, 31), kernel_size=5, stride=3, padding=2, ceil_mode=True))
    c.append(_case("lp_pool1d", (1, 2, 23), norm_type=2, kernel_size=3, stride=2, ceil_mode=True))
    c.append(_case("lp_pool1d", (1, 2, 23), norm_type=3, kernel_size=4))
    c.append(_case("adaptive_avg_pool1d", (2, 3, 29), output_size=6))
    c.append(_case("adaptive_avg_pool1d", (1, 2, 30), output_size=1))
    c.append(_case("adaptive_max_pool1d", (2, 3, 29), output_size=7))
    c.append(_case("adaptive_max_pool1d", (1, 2, 30), output_size=10))
    return c


def _generated_cases(count=40, seed=0):
    """Random valid windowed problems: sizes odd/prime, kernel 1-5, stride 1-3, padding up to
    half the kernel, dilation 1-3 (max), ceil_mode, count_include_pad, non-square."""
    rnd = random.Random(seed)
    sizes = [1, 2, 3, 5, 7, 8, 11, 13, 17, 19]
    out = []
    while len(out) < count:
        op = rnd.choice(["max_pool2d", "avg_pool2d", "lp_pool2d"])
        h, w = rnd.choice(sizes), rnd.choice(sizes)
        k = (rnd.randint(1, 5), rnd.randint(1, 5))
        s = (rnd.randint(1, 3), rnd.randint(1, 3))
        p = (rnd.randint(0, k[0] // 2), rnd.randint(0, k[1] // 2)) if op != "lp_pool2d" else (0, 0)
        d = (rnd.randint(1, 3), rnd.randint(1, 3)) if op == "max_pool2d" else (1, 1)
        ceil = rnd.random() < 0.5
        if any(ref.pool_output_size(n, k[i], s[i], p[i], d[i], ceil) < 1 for i, n in enumerate((h, w))):
            continue
        shape = (rnd.randint(1, 2), rnd.randint(1, 3), h, w)
        if op == "max_pool2d":
            out.append(_case(op, shape, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil))
        elif op == "avg_pool2d":
            out.append(_case(op, shape, kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
                             count_include_pad=rnd.random() < 0.5,
                             divisor_override=rnd.choice([None, None, None, 1, 5])))
        else:
            out.append(_case(op, shape, norm_type=rnd.choice([1, 2, 3]), kernel_size=k, stride=s, ceil_mode=ceil))
    return out


CASES = _explicit_cases() + _generated_cases()


def _case_id(c):
    kw = ",".join(f"{k}={v}" for k, v in c["kw"].items())
    return f"{c['op']}{list(c['shape'])}[{kw}]"


CASE_IDS = [_case_id(c) for c in CASES]


# ---- running a case ------------------------------------------------------------------------

def _input(case, dtype):
    """Deterministic input: small integers for max (many ties exercise the index rule),
    positive values for Lp with non-even p (no NaN from negative bases), normals otherwise."""
    rng = np.random.default_rng(zlib.crc32(_case_id(case).encode()))
    shape, fam = case["shape"], _family(case["op"])
    if fam == "max":
        return rng.integers(-3, 4, shape).astype(dtype)
    if fam == "lp" and case["kw"]["norm_type"] not in (1, 2, math.inf, -math.inf):
        return (np.abs(rng.standard_normal(shape)) + 0.25).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def run_reference(case, x):
    """The NumPy oracle on the case (1-D ops run as 2-D ones with H = 1)."""
    op, kw = case["op"], dict(case["kw"])
    one_d = op.endswith("1d")
    x4 = x[:, :, None, :] if one_d else x
    lift = (lambda v, fill: (fill, v[0] if isinstance(v, (tuple, list)) else v)) if one_d else (lambda v, fill: _pair(v))
    if op.startswith("adaptive"):
        o = kw["output_size"]
        o2 = (1, o) if one_d else tuple(x.shape[2 + i] if v is None else v for i, v in enumerate(_pair(o)))
        res = ref.adaptive_max_pool2d(x4, o2) if "max" in op else ref.adaptive_avg_pool2d(x4, o2)
    else:
        k = lift(kw["kernel_size"], 1)
        s = lift(kw.get("stride") or kw["kernel_size"], 1)
        if op.startswith("max"):
            res = ref.max_pool2d(x4, k, s, lift(kw.get("padding", 0), 0), lift(kw.get("dilation", 1), 1),
                                 kw.get("ceil_mode", False))
        elif op.startswith("avg"):
            res = ref.avg_pool2d(x4, k, s, lift(kw.get("padding", 0), 0), kw.get("ceil_mode", False),
                                 kw.get("count_include_pad", True), kw.get("divisor_override"))
        else:
            res = ref.lp_pool2d(x4, kw["norm_type"], k, s, kw.get("ceil_mode", False))
    if not isinstance(res, tuple):
        res = (res, None)
    if one_d:
        res = tuple(None if r is None else r[:, :, 0, :] for r in res)
    return res


@functools.lru_cache(maxsize=None)
def reference_result(index, dtype):
    case = CASES[index]
    return run_reference(case, _input(case, dtype))


def run_fastconv(case, x, out_shape=None):
    """fastconv on the case with NaN-filled outputs (and -1-filled indices for max)."""
    op, kw = case["op"], dict(case["kw"])
    fn = getattr(fc, op)
    with_idx = "max" in op
    if with_idx:
        kw["return_indices"] = True
    if out_shape is None:
        r = fn(x, **kw)
        return r if with_idx else (r, None)
    y = np.full(out_shape, np.nan, x.dtype)
    if with_idx:
        idx = np.full(out_shape, -1, np.int64)
        r = fn(x, **kw, out=(y, idx))
        assert r[0] is y and r[1] is idx
        return r
    r = fn(x, **kw, out=y)
    assert r is y
    return r, None


def run_torch(case, t):
    import torch.nn.functional as F
    op, kw = case["op"], dict(case["kw"])
    if "max" in op:
        kw["return_indices"] = True
    r = getattr(F, op)(t, **kw)
    return (r[0].numpy(), r[1].numpy()) if isinstance(r, tuple) else (r.numpy(), None)


def assert_matches(case, got, want, dtype, what=""):
    (y, i), (ry, ri) = got, want
    assert y.shape == ry.shape and y.dtype == ry.dtype, (what, y.shape, ry.shape, y.dtype, ry.dtype)
    rtol, atol = TOL[_family(case["op"])][dtype]
    if rtol == 0 and atol == 0:
        np.testing.assert_array_equal(y, ry, err_msg=what)
    else:
        np.testing.assert_allclose(y, ry, rtol=rtol, atol=atol, err_msg=what)
    if ri is not None:
        np.testing.assert_array_equal(i, ri, err_msg=what + " (indices)")


# ---- against the reference, every ISA ------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_matches_reference(isa, index, dtype):
    case = CASES[index]
    want = reference_result(index, dtype)
    got = run_fastconv(case, _input(case, dtype), out_shape=want[0].shape)
    assert_matches(case, got, want, dtype, f"{_case_id(case)} isa={isa}")


# ---- the reference and fastconv against torch ------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_matches_torch(index, dtype):
    torch = pytest.importorskip("torch")
    case = CASES[index]
    x = _input(case, dtype)
    want = run_torch(case, torch.from_numpy(x))
    fam = _family(case["op"])
    assert_matches(case, reference_result(index, dtype), want, dtype, "reference vs torch")
    assert_matches(case, run_fastconv(case, x), want, dtype, "fastconv vs torch")
    if fam == "max":  # indices: exact, including ties (first maximum) with small-integer input
        assert want[1] is not None


BIG = [  # the benchmark layers, smaller in N*C; torch only (the reference is slow here)
    _case("max_pool2d", (1, 8, 112, 112), kernel_size=3, stride=2, padding=1),
    _case("max_pool2d", (1, 8, 56, 57), kernel_size=2),
    _case("avg_pool2d", (1, 8, 56, 57), kernel_size=2, ceil_mode=True),
    _case("avg_pool2d", (1, 4, 35, 35), kernel_size=3, stride=1, padding=1, count_include_pad=False),
    _case("adaptive_avg_pool2d", (2, 64, 7, 7), output_size=1),
    _case("adaptive_max_pool2d", (2, 16, 7, 9), output_size=1),
    _case("lp_pool2d", (1, 4, 40, 41), norm_type=2, kernel_size=3, stride=2),
    _case("max_pool1d", (2, 4, 1000), kernel_size=5, stride=1, padding=2),
]


@pytest.mark.parametrize("case", BIG, ids=[_case_id(c) for c in BIG])
def test_large_against_torch(isa, case):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal(case["shape"]).astype(np.float32)
    assert_matches(case, run_fastconv(case, x), run_torch(case, torch.from_numpy(x)), np.float32, isa)


# ---- NaN and Inf ---------------------------------------------------------------------------

NAN_CASES = [
    _case("max_pool2d", (1, 2, 13, 21), kernel_size=3, stride=2, padding=1),
    _case("max_pool2d", (1, 2, 12, 20), kernel_size=2),
    _case("max_pool2d", (1, 2, 11, 19), kernel_size=3, stride=1, padding=1),
    _case("max_pool2d", (1, 2, 11, 19), kernel_size=(2, 3), stride=(1, 3), dilation=(2, 1), ceil_mode=True),
    _case("avg_pool2d", (1, 2, 12, 20), kernel_size=2),
    _case("avg_pool2d", (1, 2, 13, 21), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    _case("lp_pool2d", (1, 2, 12, 20), norm_type=2, kernel_size=2),
    _case("adaptive_avg_pool2d", (1, 2, 7, 7), output_size=1),
    _case("adaptive_avg_pool2d", (1, 2, 13, 11), output_size=(4, 3)),
    _case("adaptive_max_pool2d", (1, 2, 13, 11), output_size=(4, 3)),
    _case("adaptive_max_pool2d", (1, 2, 7, 7), output_size=1),
    _case("max_pool1d", (1, 2, 41), kernel_size=3, stride=2),
]


@pytest.mark.parametrize("case", NAN_CASES, ids=[_case_id(c) for c in NAN_CASES])
def test_nan_inf_like_torch(isa, case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    flat = x.reshape(-1)
    for v, n in ((np.nan, 9), (np.inf, 5), (-np.inf, 5)):
        flat[rng.choice(flat.size, n, replace=False)] = v
    flat[:2] = np.nan  # two NaNs in one window: torch's index is the last one's
    got = run_fastconv(case, x)
    want = run_torch(case, torch.from_numpy(x))
    y = got[0]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want[0]))
    assert_matches(case, got, want, np.float32, "nan/inf")


def test_all_minus_inf_window_index_like_torch(isa):
    torch = pytest.importorskip("torch")
    x = np.full((1, 1, 6, 7), -np.inf, np.float32)
    case = _case("max_pool2d", x.shape, kernel_size=3, stride=2, padding=1)
    assert_matches(case, run_fastconv(case, x), run_torch(case, torch.from_numpy(x)), np.float32)


# ---- shapes and array types ----------------------------------------------------------------

EMPTY = [c for c in CASES if c["op"] in ("max_pool2d", "avg_pool2d", "lp_pool2d", "max_pool1d", "avg_pool1d",
                                         "lp_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d")][:12]


@pytest.mark.parametrize("case", EMPTY, ids=[_case_id(c) for c in EMPTY])
def test_empty_batch(case):
    x = np.zeros((0,) + case["shape"][1:], np.float32)
    y, i = run_fastconv(case, x)
    want = run_reference(case, np.zeros((1,) + case["shape"][1:], np.float32))[0]
    assert y.shape == (0,) + want.shape[1:]
    if i is not None:
        assert i.shape == y.shape and i.dtype == np.int64


@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_adaptive_output_size_zero_is_empty_as_torch(op):
    x = np.ones((1, 2, 5, 6), np.float32)
    assert getattr(fc, op)(x, (0, 3)).shape == (1, 2, 0, 3)


def test_non_contiguous_input():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 6, 30, 27))
    for x in (base[:, ::2, ::2, ::-1], base.transpose(0, 1, 3, 2), base[:, :, 1:, 2:]):
        assert not x.flags.c_contiguous
        xc = np.ascontiguousarray(x)
        np.testing.assert_array_equal(fc.max_pool2d(x, 3, 2, 1), fc.max_pool2d(xc, 3, 2, 1))
        np.testing.assert_allclose(fc.avg_pool2d(x, 2), ref.avg_pool2d(xc, (2, 2), (2, 2)), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(fc.adaptive_avg_pool2d(x, 1), xc.mean(axis=(2, 3), keepdims=True), rtol=1e-13,
                                   atol=1e-15)


def test_torch_tensor_in_torch_tensor_out():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    t = torch.randn(2, 3, 15, 16, dtype=torch.float64)[:, :, :, ::2]  # non-contiguous too
    y = fc.max_pool2d(t, 3, 2, 1)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    torch.testing.assert_close(y, F.max_pool2d(t, 3, 2, 1), rtol=0, atol=0)
    y, i = fc.adaptive_max_pool2d(t, 3, return_indices=True)
    assert isinstance(i, torch.Tensor) and i.dtype == torch.int64
    torch.testing.assert_close(i, F.adaptive_max_pool2d(t, 3, return_indices=True)[1])
    t1 = torch.randn(2, 3, 20, requires_grad=True)
    y = fc.avg_pool1d(t1, 3, 2)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    torch.testing.assert_close(y, F.avg_pool1d(t1, 3, 2).detach())


UNBATCHED = [
    ("max_pool2d", (3, 9, 11), dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", (3, 9, 11), dict(kernel_size=2, ceil_mode=True)),
    ("lp_pool2d", (3, 9, 11), dict(norm_type=2, kernel_size=2)),
    ("adaptive_avg_pool2d", (3, 9, 11), dict(output_size=(2, 3))),
    ("adaptive_max_pool2d", (3, 9, 11), dict(output_size=4)),
    ("max_pool1d", (3, 17), dict(kernel_size=3, stride=2)),
    ("avg_pool1d", (3, 17), dict(kernel_size=3)),
    ("lp_pool1d", (3, 17), dict(norm_type=1, kernel_size=3)),
    ("adaptive_avg_pool1d", (3, 17), dict(output_size=5)),
    ("adaptive_max_pool1d", (3, 17), dict(output_size=5)),
]


@pytest.mark.parametrize("op,shape,kw", UNBATCHED, ids=[u[0] for u in UNBATCHED])
def test_unbatched_like_torch(op, shape, kw):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    x = np.random.default_rng(5).standard_normal(shape)
    y = getattr(fc, op)(x, **kw)
    want = getattr(F, op)(torch.from_numpy(x), **kw)
    assert y.shape == tuple(want.shape)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)


# ---- errors --------------------------------------------------------------------------------

X = np.zeros((1, 2, 6, 7), np.float32)
X1 = np.zeros((1, 2, 9), np.float32)
ERRORS = [  # (call, exception, words the message must contain, torch raises too)
    (lambda m: m.max_pool2d(X, 0), ValueError, "kernel_size", True),
    (lambda m: m.max_pool2d(X, (2, 2, 2)), ValueError, "kernel_size", True),
    (lambda m: m.max_pool2d(X, 2.5), TypeError, "kernel_size", True),
    (lambda m: m.max_pool2d(X, 3, stride=0), ValueError, "stride", True),
    (lambda m: m.max_pool2d(X, 3, stride=-1), ValueError, "stride", True),
    (lambda m: m.max_pool2d(X, 3, padding=2), ValueError, "padding", True),
    (lambda m: m.max_pool2d(X, 3, padding=-1), ValueError, "padding", True),
    (lambda m: m.max_pool2d(X, 2, dilation=(2, 2), padding=2), ValueError, "padding", True),
    (lambda m: m.max_pool2d(X, 3, dilation=0), ValueError, "dilation", True),
    (lambda m: m.max_pool2d(X, 7), ValueError, "output size", True),
    (lambda m: m.max_pool2d(X, 3, dilation=4), ValueError, "output size", True),
    (lambda m: m.max_pool2d(X[0, 0], 2), ValueError, "input", True),
    (lambda m: m.max_pool2d(np.zeros((1, 0, 4, 4), np.float32), 2), ValueError, "input", True),
    (lambda m: m.max_pool2d(X.astype(np.int32), 2), TypeError, "dtype", False),  # torch pools ints
    (lambda m: m.max_pool2d(X.astype(np.float16), 2), TypeError, "dtype", False),
    (lambda m: m.max_pool2d(X.tolist(), 2), TypeError, "numpy", True),
    (lambda m: m.avg_pool2d(X, 3, padding=2), ValueError, "padding", True),
    (lambda m: m.avg_pool2d(X, 2, divisor_override=0), ValueError, "divisor_override", True),
    (lambda m: m.avg_pool2d(X, 2, divisor_override=1.5), TypeError, "divisor_override", True),
    (lambda m: m.avg_pool2d(X, 9, stride=1), ValueError, "output size", True),
    (lambda m: m.lp_pool2d(X, 0, 2), ValueError, "norm_type", True),
    (lambda m: m.lp_pool2d(X, "2", 2), TypeError, "norm_type", True),
    (lambda m: m.lp_pool2d(X, 2, 0), ValueError, "kernel_size", True),
    (lambda m: m.adaptive_avg_pool2d(X, -1), ValueError, "output_size", True),
    (lambda m: m.adaptive_avg_pool2d(X, (1, 2, 3)), ValueError, "output_size", True),
    (lambda m: m.adaptive_max_pool2d(X, 2.0), TypeError, "output_size", True),
    (lambda m: m.max_pool1d(X, 2), ValueError, "input", True),
    (lambda m: m.max_pool1d(X1, 2, padding=2), ValueError, "padding", True),
    (lambda m: m.avg_pool1d(X1, 10), ValueError, "output size", True),
    (lambda m: m.adaptive_max_pool1d(X1, -2), ValueError, "output_size", True),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_errors(i):
    call, exc, words, torch_raises = ERRORS[i]
    with pytest.raises(exc, match=words):
        call(fc)
    if torch_raises:  # fastconv is not stricter than torch on these
        torch = pytest.importorskip("torch")
        import torch.nn.functional as F

        class TorchArgs:  # the same call on torch tensors
            def __getattr__(self, name):
                fn = getattr(F, name)
                return lambda x, *a, **k: fn(torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x,
                                             *a, **k)
        with pytest.raises(Exception):
            call(TorchArgs())


def test_out_is_checked():
    with pytest.raises(ValueError, match="out"):
        fc.max_pool2d(X, 2, out=np.empty((1, 2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="out"):
        fc.avg_pool2d(X, 2, out=np.empty((1, 2, 3, 3), np.float64))
    with pytest.raises(ValueError, match="indices"):
        fc.max_pool2d(X, 2, return_indices=True, out=(np.empty((1, 2, 3, 3), np.float32), np.empty((1, 2, 3, 3))))


def test_cpp_checks_again():
    """The C++ layer re-validates (second line of defence) and is not stricter than torch."""
    p = _C.PoolParams()
    p.N, p.C, p.H, p.W, p.P, p.Q, p.R, p.S = 1, 2, 6, 7, 3, 3, 2, 2
    p.stride_h = p.stride_w = 2
    y = np.empty((1, 2, 3, 3), np.float32)
    _C.run("max_pool2d_forward", "direct", p, {"x": X, "y": y})
    p.stride_h = 0
    with pytest.raises(ValueError, match="stride"):
        _C.run("max_pool2d_forward", "direct", p, {"x": X, "y": y})
    p.stride_h = 2
    p.P = 4  # a window starting past the input
    with pytest.raises(ValueError, match="output size"):
        _C.run("max_pool2d_forward", "direct", p, {"x": X, "y": np.empty((1, 2, 4, 3), np.float32)})
    p.P, p.norm_type = 3, -1.5  # torch accepts negative norm_type
    _C.run("lp_pool2d_forward", "direct", p, {"x": X + 1, "y": y})
    p.norm_type = 0
    with pytest.raises(ValueError, match="norm_type"):
        _C.run("lp_pool2d_forward", "direct", p, {"x": X, "y": y})
