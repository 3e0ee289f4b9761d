"""Pooling backward: every op's *_backward x float32/float64 x every ISA against the NumPy
reference over test_pool's table of cases (kernels 1-5, strides 1-3, padding, dilation,
ceil_mode, count_include_pad, divisor_override, adaptive sizes, Lp orders incl. +-inf,
1-D ops); fastconv and the reference against torch's autograd (max with ties: the first
max takes the gradient); NaN-filled outputs at the _C level; N == 0, unbatched inputs,
torch tensors, caller-provided indices; errors.
"""
import functools

import numpy as np
import pytest

import fastconv as fc
from fastconv import _C
from fastconv import reference as ref
from test_pool import CASES, CASE_IDS, DTYPES, _family, _input, _pair, run_reference

# rtol (and atol relative to max |grad|): max adds the gradients of windows sharing a max in
# output order, as the reference and torch, but the reference rounds a float64 sum once
# (float32: one rounding per add); avg and Lp sums are reordered, Lp adds pow.
TOL = {
    "max": {np.float32: 1e-6, np.float64: 0.0},
    "avg": {np.float32: 4e-6, np.float64: 1e-13},
    "lp": {np.float32: 4e-5, np.float64: 1e-12},
}


def _grad_y(case, dtype):
    y = run_reference(case, _input(case, dtype))[0]
    rng = np.random.default_rng(len(CASE_IDS) + y.size)
    return rng.standard_normal(y.shape).astype(dtype)


def reference_backward(case, x, gy):
    """The reference's grad_x (1-D ops run as 2-D ones with H = 1)."""
    op, kw = case["op"], dict(case["kw"])
    one_d = op.endswith("1d")
    x4, gy4 = (x[:, :, None, :], gy[:, :, None, :]) if one_d else (x, gy)
    lift = (lambda v, fill: (fill, v[0] if isinstance(v, (tuple, list)) else v)) if one_d else (lambda v, fill: _pair(v))
    if op.startswith("adaptive"):
        o = kw["output_size"]
        o2 = (1, o) if one_d else tuple(x.shape[2 + i] if v is None else v for i, v in enumerate(_pair(o)))
        if "max" in op:
            gx = ref.max_pool2d_backward(gy4, x4.shape, ref.adaptive_max_pool2d(x4, o2)[1])
        else:
            gx = ref.adaptive_avg_pool2d_backward(gy4, x4, o2)
    else:
        k = lift(kw["kernel_size"], 1)
        s = lift(kw.get("stride") or kw["kernel_size"], 1)
        ceil = kw.get("ceil_mode", False)
        if op.startswith("max"):
            _, idx = ref.max_pool2d(x4, k, s, lift(kw.get("padding", 0), 0), lift(kw.get("dilation", 1), 1), ceil)
            gx = ref.max_pool2d_backward(gy4, x4.shape, idx)
        elif op.startswith("avg"):
            gx = ref.avg_pool2d_backward(gy4, x4, k, s, lift(kw.get("padding", 0), 0), ceil,
                                         kw.get("count_include_pad", True), kw.get("divisor_override"))
        else:
            gx = ref.lp_pool2d_backward(gy4, x4, kw["norm_type"], k, s, ceil)
    return gx[:, :, 0, :] if one_d else gx


@functools.lru_cache(maxsize=None)
def _reference(index, dtype):
    case = CASES[index]
    x, gy = _input(case, dtype), _grad_y(case, dtype)
    return x, gy, reference_backward(case, x, gy)


def run_backward(case, x, gy, **extra):
    return getattr(fc, case["op"] + "_backward")(gy, x, **case["kw"], **extra)


def assert_grad(case, got, want, dtype, what=""):
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype)
    tol = TOL[_family(case["op"])][dtype]
    finite = want[np.isfinite(want)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    if tol == 0:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


# ---- against the reference, every ISA ------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_backward_matches_reference(isa, index, dtype):
    case = CASES[index]
    x, gy, want = _reference(index, dtype)
    assert_grad(case, run_backward(case, x, gy), want, dtype, f"{CASE_IDS[index]}/{isa}")


# ---- against torch's autograd ----------------------------------------------------------------

# Not the cases with a max window entirely in the padding: torch's backward writes out of
# bounds there (its forward index lies past the plane) and can crash the process.
TORCH_INDICES = [i for i, c in enumerate(CASES)
                 if not ("max" in c["op"] and np.isneginf(run_reference(c, _input(c, np.float64))[0]).any())]


@pytest.mark.parametrize("index", TORCH_INDICES, ids=[CASE_IDS[i] for i in TORCH_INDICES])
def test_backward_matches_torch_autograd(index):
    torch = pytest.importorskip("torch")
    case, dtype = CASES[index], np.float64
    x, gy, want_ref = _reference(index, dtype)
    xt = torch.tensor(x, requires_grad=True)
    y = getattr(torch.nn.functional, case["op"])(xt, **case["kw"])
    y.backward(torch.tensor(gy))
    want = xt.grad.numpy()
    assert_grad(case, run_backward(case, x, gy), want, dtype, "fastconv vs torch")
    assert_grad(case, want_ref, want, dtype, "reference vs torch")


def test_max_ties_and_indices_from_the_forward():
    """Ties: torch gives the whole gradient to the first max in row-major order."""
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 2, 7, 9), np.float32)
    x[0, 1, ::2, ::3] = 1.0
    gy = np.arange(2 * 4 * 5, dtype=np.float32).reshape(1, 2, 4, 5) + 1
    xt = torch.tensor(x, requires_grad=True)
    y, idx = torch.nn.functional.max_pool2d(xt, 3, 2, 1, return_indices=True)
    y.backward(torch.tensor(gy))
    np.testing.assert_array_equal(fc.max_pool2d_backward(gy, x, 3, 2, 1), xt.grad.numpy())
    _, fidx = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(fc.max_pool2d_backward(gy, x, 3, 2, 1, indices=fidx), xt.grad.numpy())
    got = fc.max_pool2d_backward(torch.tensor(gy), torch.tensor(x), 3, 2, 1, indices=idx)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), xt.grad.numpy())


def test_max_window_in_the_padding_passes_no_gradient():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    y, idx = fc.max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    assert np.isneginf(y).all() and (idx >= 4).all()
    g = fc.max_pool2d_backward(np.ones_like(y), x, 2, 1, 1, 3, indices=idx)
    assert g.shape == x.shape and not g.any()


def test_lp_zero_window_passes_no_gradient_as_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 1, 4, 6))
    x[0, 0, :2, :2] = [[1.0, -2.0], [0.5, 3.0]]
    gy = np.ones((1, 1, 2, 3))
    for p in (2, 1, 3):
        xt = torch.tensor(x, requires_grad=True)
        torch.nn.functional.lp_pool2d(xt, p, 2).backward(torch.tensor(gy))
        got = fc.lp_pool2d_backward(gy, x, p, 2)
        np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-13, atol=1e-13, err_msg=str(p))
        assert not got[0, 0, 2:].any()


# ---- kernels overwrite every element (outputs pre-filled with NaN), at the _C level -----------

def _params(x, out, k=(1, 1), s=(1, 1), p=(0, 0), adaptive=False):
    prm = _C.PoolParams()
    prm.N, prm.C, prm.H, prm.W = x.shape
    prm.P, prm.Q = out
    prm.R, prm.S = k
    prm.stride_h, prm.stride_w = s
    prm.pad_h, prm.pad_w = p
    prm.adaptive = adaptive
    return prm


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cpp_backward_overwrites_nan(isa, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 11, 13)).astype(dtype)
    for prm in (_params(x, (6, 7), (3, 3), (2, 2), (1, 1)), _params(x, (4, 5), adaptive=True)):
        gy = rng.standard_normal((2, 3, prm.P, prm.Q)).astype(dtype)
        y, idx = np.empty(gy.shape, dtype), np.empty(gy.shape, np.int64)
        _C.run("max_pool2d_forward", "direct", prm, {"x": x, "y": y, "indices": idx})
        for name, run in [("max", lambda g: _C.run("max_pool2d_backward", "direct", prm,
                                                   {"grad_y": gy, "indices": idx, "grad_x": g})),
                          ("avg", lambda g: _C.run("avg_pool2d_backward", "direct", prm, {"grad_y": gy, "grad_x": g}))]:
            gx = np.full(x.shape, np.nan, dtype)
            run(gx)
            assert np.isfinite(gx).all(), name
    prm = _params(x, (5, 6), (3, 3), (2, 2))
    prm.norm_type = 2.0
    gy = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    y = np.empty(gy.shape, dtype)
    _C.run("lp_pool2d_forward", "direct", prm, {"x": x, "y": y})
    gx = np.full(x.shape, np.nan, dtype)
    _C.run("lp_pool2d_backward", "direct", prm, {"grad_y": gy, "x": x, "y": y, "grad_x": gx})
    assert np.isfinite(gx).all()
    want = ref.lp_pool2d_backward(gy, x, 2.0, (3, 3), (2, 2))
    np.testing.assert_allclose(gx, want, rtol=TOL["lp"][dtype], atol=TOL["lp"][dtype] * np.abs(want).max())


# ---- shapes, types, edge cases -------------------------------------------------------------

def test_unbatched_empty_batch_and_empty_output():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((3, 8, 9))
    gy = np.ones((3, 4, 5))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.avg_pool2d(xt, 3, 2, 1).backward(torch.tensor(gy))
    np.testing.assert_allclose(fc.avg_pool2d_backward(gy, x, 3, 2, 1), xt.grad.numpy(), rtol=1e-13, atol=1e-15)
    g1 = fc.max_pool1d_backward(np.ones((8, 4)), x[0], 2)  # unbatched 1-D: (C, L)
    assert g1.shape == (8, 9) and g1.sum() == 32
    for fn, args in [(fc.max_pool2d_backward, (3,)), (fc.avg_pool2d_backward, (3,)), (fc.lp_pool2d_backward, (2, 3)),
                     (fc.adaptive_avg_pool2d_backward, ((2, 2),)), (fc.adaptive_max_pool2d_backward, ((2, 2),))]:
        x0 = np.zeros((0, 3, 8, 9), np.float32)
        out_hw = (2, 3) if fn in (fc.max_pool2d_backward, fc.avg_pool2d_backward, fc.lp_pool2d_backward) else (2, 2)
        assert fn(np.zeros((0, 3) + out_hw, np.float32), x0, *args).shape == x0.shape
    g = fc.adaptive_avg_pool2d_backward(np.zeros((1, 3, 0, 2)), x[None], (0, 2))
    assert g.shape == (1, 3, 8, 9) and not g.any()


X = np.zeros((1, 2, 6, 7), np.float32)
GY = np.zeros((1, 2, 3, 3), np.float32)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: fc.max_pool2d_backward(GY[:, :, :2], X, 2), ValueError, "grad_y must have the forward output's shape"),
    (lambda: fc.avg_pool2d_backward(GY.astype(np.float64), X, 2), TypeError, "grad_y has dtype float64"),
    (lambda: fc.avg_pool2d_backward(GY.astype(np.int64), X, 2), TypeError, "supported dtypes"),
    (lambda: fc.max_pool2d_backward(GY, X, 2, indices=np.zeros((1, 2, 3, 3), np.int32)), TypeError, "int64"),
    (lambda: fc.max_pool2d_backward(GY, X, 2, indices=np.zeros((1, 2, 3), np.int64)), ValueError, "indices must"),
    (lambda: fc.max_pool2d_backward(GY, X, 2, indices=np.full((1, 2, 3, 3), 42, np.int64)), ValueError,
     "indices lie outside [0, H*W) = [0, 42)"),
    (lambda: fc.max_pool2d_backward(GY, X, 0), ValueError, "kernel_size must be positive"),
    (lambda: fc.avg_pool2d_backward(GY, X, 2, padding=2), ValueError, "at most half"),
    (lambda: fc.lp_pool2d_backward(GY, X, 0, 2), ValueError, "norm_type must be non-zero"),
    (lambda: fc.adaptive_max_pool1d_backward(GY, X, 3), ValueError, "input must be 3-D"),
])
def test_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)
