"""Tests of fastconv's pooling: every op x its kernel-table rows x float32/float64 x every ISA
this CPU has, over cases.py's table (odd and prime sizes, kernels 1-5, strides 1-3, padding,
dilation, ceil_mode, count_include_pad, divisor_override, adaptive sizes that do and do not
divide the input), against the NumPy reference (compare.pool_forward); the reference and
fastconv against torch; NaN/Inf, N == 0, non-contiguous and unbatched inputs, torch tensors;
every error case.

Outputs are pre-filled with NaN (indices with -1) through out=, so an element a kernel
forgets to write fails the test. Max pooling values and indices are checked exactly.
"""
import numpy as np
import pytest

import fastconv as fc
from cases import DTYPE_IDS, DTYPES, POOL_CASES, pool_case, pool_rows, row_param
from compare import assert_pool_matches, pool_forward, pool_reference, pool_reference_forward, run_pool
from fastconv import _C
from fastconv import reference as ref

# The `isa` fixture (every instruction set this CPU has) comes from conftest.py.


def run_torch(case, t):
    import torch.nn.functional as F
    kw = dict(case.kw)
    if case.family == "max":
        kw["return_indices"] = True
    r = getattr(F, case.op)(t, **kw)
    return (r[0].numpy(), r[1].numpy()) if isinstance(r, tuple) else (r.numpy(), None)


# ---- against the reference, every row of the kernel table, every ISA -----------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("row, case", [row_param(r, c, id_suffix=f"-{c.id}") for c in POOL_CASES
                                       for r in pool_rows(c.op)])
def test_matches_reference(isa, row, case, dtype):
    pool_forward(row, case, dtype, f"isa={isa}")


# ---- the reference and fastconv against torch ------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", POOL_CASES, ids=[c.id for c in POOL_CASES])
def test_matches_torch(case, dtype):
    torch = pytest.importorskip("torch")
    x, want_ref, _ = pool_reference(case, dtype)
    want = run_torch(case, torch.from_numpy(x))
    assert_pool_matches(case, want_ref, want, dtype, "reference vs torch")
    assert_pool_matches(case, run_pool(case, x), want, dtype, "fastconv vs torch")
    if case.family == "max":  # indices: exact, including ties (first maximum) with small-integer input
        assert want[1] is not None


BIG = [  # the benchmark layers, smaller in N*C; torch only (the reference is slow here)
    pool_case("max_pool2d", (1, 8, 112, 112), kernel_size=3, stride=2, padding=1),
    pool_case("max_pool2d", (1, 8, 56, 57), kernel_size=2),
    pool_case("avg_pool2d", (1, 8, 56, 57), kernel_size=2, ceil_mode=True),
    pool_case("avg_pool2d", (1, 4, 35, 35), kernel_size=3, stride=1, padding=1, count_include_pad=False),
    pool_case("adaptive_avg_pool2d", (2, 64, 7, 7), output_size=1),
    pool_case("adaptive_max_pool2d", (2, 16, 7, 9), output_size=1),
    pool_case("lp_pool2d", (1, 4, 40, 41), norm_type=2, kernel_size=3, stride=2),
    pool_case("max_pool1d", (2, 4, 1000), kernel_size=5, stride=1, padding=2),
]


@pytest.mark.parametrize("case", BIG, ids=[c.id for c in BIG])
def test_large_against_torch(isa, case):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal(case.shape).astype(np.float32)
    assert_pool_matches(case, run_pool(case, x), run_torch(case, torch.from_numpy(x)), np.float32, isa)


# ---- NaN and Inf ---------------------------------------------------------------------------

NAN_CASES = [
    pool_case("max_pool2d", (1, 2, 13, 21), kernel_size=3, stride=2, padding=1),
    pool_case("max_pool2d", (1, 2, 12, 20), kernel_size=2),
    pool_case("max_pool2d", (1, 2, 11, 19), kernel_size=3, stride=1, padding=1),
    pool_case("max_pool2d", (1, 2, 11, 19), kernel_size=(2, 3), stride=(1, 3), dilation=(2, 1), ceil_mode=True),
    pool_case("avg_pool2d", (1, 2, 12, 20), kernel_size=2),
    pool_case("avg_pool2d", (1, 2, 13, 21), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    pool_case("lp_pool2d", (1, 2, 12, 20), norm_type=2, kernel_size=2),
    pool_case("adaptive_avg_pool2d", (1, 2, 7, 7), output_size=1),
    pool_case("adaptive_avg_pool2d", (1, 2, 13, 11), output_size=(4, 3)),
    pool_case("adaptive_max_pool2d", (1, 2, 13, 11), output_size=(4, 3)),
    pool_case("adaptive_max_pool2d", (1, 2, 7, 7), output_size=1),
    pool_case("max_pool1d", (1, 2, 41), kernel_size=3, stride=2),
]


@pytest.mark.parametrize("case", NAN_CASES, ids=[c.id for c in NAN_CASES])
def test_nan_inf_like_torch(isa, case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(case.shape).astype(np.float32)
    flat = x.reshape(-1)
    for v, n in ((np.nan, 9), (np.inf, 5), (-np.inf, 5)):
        flat[rng.choice(flat.size, n, replace=False)] = v
    flat[:2] = np.nan  # two NaNs in one window: torch's index is the last one's
    got = run_pool(case, x)
    want = run_torch(case, torch.from_numpy(x))
    y = got[0]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want[0]))
    assert_pool_matches(case, got, want, np.float32, "nan/inf")


def test_all_minus_inf_window_index_like_torch(isa):
    torch = pytest.importorskip("torch")
    x = np.full((1, 1, 6, 7), -np.inf, np.float32)
    case = pool_case("max_pool2d", x.shape, kernel_size=3, stride=2, padding=1)
    assert_pool_matches(case, run_pool(case, x), run_torch(case, torch.from_numpy(x)), np.float32)


# ---- shapes and array types ----------------------------------------------------------------

EMPTY = [c for c in POOL_CASES if c.op in ("max_pool2d", "avg_pool2d", "lp_pool2d", "max_pool1d", "avg_pool1d",
                                            "lp_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d")][:12]


@pytest.mark.parametrize("case", EMPTY, ids=[c.id for c in EMPTY])
def test_empty_batch(case):
    x = np.zeros((0,) + case.shape[1:], np.float32)
    y, i = run_pool(case, x)
    want = pool_reference_forward(case, np.zeros((1,) + case.shape[1:], np.float32))[0]
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
    # the kernel area past int64 (found by test_fuzz.py: lp_pool2d(ones (1, 1, 3, 3), 2, 2**40,
    # ceil_mode=True) returned 0, its area 2**80 wrapped around in int64, where torch's rule gives 2**40)
    (lambda m: m.lp_pool2d(X, 2, 2**40, ceil_mode=True), ValueError, "int64", False),
    (lambda m: m.lp_pool2d(X, 2, 2**32, ceil_mode=True), ValueError, "int64", False),
    (lambda m: m.max_pool2d(X, 2**32, ceil_mode=True), ValueError, "int64", False),
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
        # torch's checks raise RuntimeError or TypeError (lp_pool2d's norm_type=0: ZeroDivisionError)
        with pytest.raises((RuntimeError, TypeError, ValueError, ZeroDivisionError)):
            call(TorchArgs())


def test_kernel_area_within_int64_is_exact():
    """The largest kernel area int64 holds: Lp pooling rescales a clipped window to it as torch."""
    y = fc.lp_pool2d(np.ones((1, 1, 3, 3), np.float32), 2, 2**31, ceil_mode=True)
    np.testing.assert_allclose(y.ravel(), [2.0**31], rtol=1e-6)


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
