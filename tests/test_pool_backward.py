"""Pooling backward: every op's *_backward x its kernel-table rows x float32/float64 x every
ISA against the NumPy reference over cases.py's table (kernels 1-5, strides 1-3, padding,
dilation, ceil_mode, count_include_pad, divisor_override, adaptive sizes, Lp orders incl.
+-inf, 1-D ops; compare.pool_backward); fastconv and the reference against torch's autograd
(max with ties: the first max takes the gradient); NaN-filled outputs at the _C level; N == 0,
unbatched inputs, torch tensors, caller-provided indices; errors.
"""
import numpy as np
import pytest

import fastconv as fc
from cases import DTYPE_IDS, DTYPES, POOL_CASES, pool_case, pool_rows, row_param
from compare import (POOL_BACKWARD_TOLERANCE, assert_grad_matches, on_device, pool_backward, pool_backward_reference,
                     pool_reference, run_pool_backward, to_host)
from fastconv import _C
from fastconv import reference as ref

TOL = POOL_BACKWARD_TOLERANCE["direct"]


# ---- against the reference, every row of the kernel table, every ISA -----------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("row, case", [row_param(r, c, id_suffix=f"-{c.id}") for c in POOL_CASES
                                       for r in pool_rows(c.op, "backward")])
def test_backward_matches_reference(isa, row, case, dtype):
    pool_backward(row, case, dtype, f"isa={isa}")


# ---- against torch's autograd ----------------------------------------------------------------

# Not the cases with a max window entirely in the padding: torch's backward writes out of
# bounds there (its forward index lies past the plane) and can crash the process.
TORCH_CASES = [c for c in POOL_CASES
               if not (c.family == "max" and np.isneginf(pool_reference(c, np.float64)[1][0]).any())]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
def test_backward_matches_torch_autograd(case):
    torch = pytest.importorskip("torch")
    dtype = np.float64
    x, _, gy = pool_reference(case, dtype)
    want_ref = pool_backward_reference(case, dtype)
    xt = torch.tensor(x, requires_grad=True)
    y = getattr(torch.nn.functional, case.op)(xt, **case.kw)
    y.backward(torch.tensor(gy))
    want = xt.grad.numpy()
    assert_grad_matches(case, run_pool_backward(case, x, gy), want, dtype, "fastconv vs torch")
    assert_grad_matches(case, want_ref, want, dtype, "reference vs torch")


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


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
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


# A dilated window in the padding whose index (first row past the top padding) * W + (first
# column past the left padding) wraps past the row's end onto an element it never read: x
# (1, 1, 2, 1), kernel (1, 2), padding (0, 1), dilation 2 gives y = -inf with indices [1, 2].
# fastconv passes no gradient from such a window, the reference too; torch adds window 0's
# gradient at x[1] (found by test_fuzz.py, where the reference still added it).
WRAPPED_EMPTY = pool_case("max_pool2d", (1, 1, 2, 1), kernel_size=(1, 2), padding=(0, 1), dilation=2)


@pytest.mark.parametrize("row", [row_param(r) for r in pool_rows("max_pool2d", "backward")])
def test_empty_window_with_an_index_inside_the_plane_passes_no_gradient(row):
    x = np.array([1.0, 2.0], np.float32).reshape(WRAPPED_EMPTY.shape)
    gy = np.array([5.0, 7.0], np.float32).reshape(1, 1, 2, 1)
    y, idx = fc.max_pool2d(x, **WRAPPED_EMPTY.kw, return_indices=True)
    np.testing.assert_array_equal(idx.ravel(), [1, 2])
    assert np.all(y == -np.inf)
    want = ref.max_pool2d_backward(gy, x.shape, idx, ref.max_pool2d_empty_windows(2, 1, (1, 2), (1, 2), (0, 1), (2, 2)))
    np.testing.assert_array_equal(want, np.zeros_like(x))
    for indices in (None, idx):
        extra = {} if indices is None else {"indices": on_device(indices, row.device)}
        got = to_host(fc.max_pool2d_backward(on_device(gy, row.device), on_device(x, row.device), **WRAPPED_EMPTY.kw,
                                             **extra))
        np.testing.assert_array_equal(got, want)
