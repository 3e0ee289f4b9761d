"""Distance-weighted average pooling (fastconv.weighted_avg_pool2d / 1d and their backward):
every row of the kernel table (CPU: every ISA; CUDA: marked ``cuda``, the emulator without a
GPU) against the NumPy reference (fastconv.reference.weighted_avg_pool2d, its own loops) on
signed random data, odd and prime sizes, outputs pre-filled with NaN; every mode (padding,
stride, ceil_mode, count_include_pad, normalize), Gaussian windows (one sigma, one per axis,
inf) and user windows (separable, not separable, signed with normalize=False), 1-D and 2-D,
float32/float64; the backward against the reference's gradient and float64 finite
differences; a uniform window (sigma=inf, equal weights) equal to avg_pool2d / avg_pool2d_backward
bit for bit in every mode (CUDA rows too: they sum in the CPU's order); unbatched and torch
inputs; the bad-input errors; the torch layer (gradcheck, state_dict).
"""
import math

import numpy as np
import pytest

import fastconv as fc
from cases import DTYPE_IDS, DTYPES, row_param, rows
from compare import assert_close, nan_out, on_device, to_host
from fastconv import reference as ref

TOL = {np.float32: 4e-6, np.float64: 1e-13}  # x max |want|: sums of up to 49 products, reordered
INF = math.inf

# (x shape (N, C, H, W), kernel, stride, padding, ceil_mode, count_include_pad)
CASES = [
    ((2, 3, 7, 11), 3, 2, 1, True, False),
    ((1, 2, 13, 5), (5, 3), (1, 2), (2, 1), False, True),
    ((2, 2, 9, 9), 2, 2, 0, True, True),
    ((1, 3, 10, 7), 4, 3, 2, True, False),
    ((1, 2, 17, 19), 3, 1, 1, False, True),
    ((1, 1, 5, 3), (1, 3), 1, (0, 1), False, False),
    ((3, 2, 11, 13), 7, 2, 3, True, True),
    ((1, 2, 23, 29), 5, (2, 3), 2, True, False),
    ((1, 1, 1, 1), 1, 1, 0, False, True),
    ((0, 2, 5, 5), 3, 2, 1, False, True),
    ((1, 1, 4, 2053), 3, (1, 2), 1, True, False),  # rows wider than the kernel's L1 blocks
]
CASE_IDS = [f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-{'ceil' if c[4] else 'floor'}-{'cip' if c[5] else 'nocip'}"
            for c in CASES]
WINDOWS = ["gauss", "gauss_axes", "outer", "dense", "signed_dense"]
# (window, normalize): a signed window only for the weighted sum (a mean's weights are >= 0).
MODES = [pytest.param(kind, normalize, id=f"{kind}-{'mean' if normalize else 'sum'}")
         for kind in WINDOWS for normalize in (True, False) if normalize is False or kind != "signed_dense"]

FORWARD_ROWS = rows("weighted_avg_pool2d_forward")
BACKWARD_ROWS = rows("weighted_avg_pool2d_backward")


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _window(kind, k, normalize, rng):
    """(fastconv keyword arguments, the reference's (R, S) window) of one window kind."""
    if kind == "gauss":
        w = ref.gaussian_window(k, (0.8, 0.8))
        kw = {"sigma": 0.8}
    elif kind == "gauss_axes":
        w = ref.gaussian_window(k, (1.5, INF))
        kw = {"sigma": (1.5, INF)}
    elif kind == "outer":
        w = np.outer(rng.random(k[0]) + 0.1, rng.random(k[1]) + 0.1)
        kw = {"weight": w}
    elif kind == "dense":
        w = rng.random(k) + 0.05
        w[0, 0] *= 3  # not an outer product (unless 1-wide)
        kw = {"weight": w}
    else:  # signed, any: only a weighted sum (normalize=False) takes it
        w = rng.standard_normal(k)
        kw = {"weight": w}
    if "sigma" in kw and not normalize:  # the Gaussian blur sums to 1
        w = w / w.sum()
    return kw, w


def _args(case):
    shape, k, s, p, ceil_mode, cip = case
    return shape, _pair(k), _pair(s), _pair(p), ceil_mode, cip


def _problem(case, dtype, seed):
    shape, k, s, p, ceil_mode, cip = _args(case)
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal(shape).astype(dtype), k, s, p, ceil_mode, cip


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind, normalize", MODES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("row", [row_param(r) for r in FORWARD_ROWS])
def test_forward_matches_reference(isa, row, case, kind, normalize, dtype):
    rng, x, k, s, p, ceil_mode, cip = _problem(case, dtype, 1)
    kw, w = _window(kind, k, normalize, rng)
    want = ref.weighted_avg_pool2d(x, w, s, p, ceil_mode, cip, normalize)
    out = nan_out(want.shape, dtype, row.device)
    got = fc.weighted_avg_pool2d(on_device(x, row.device), case[1], case[2], case[3], ceil_mode, cip,
                                 normalize=normalize, out=out, **kw)
    assert got is out
    assert_close(to_host(got), want, TOL[dtype], f"{row} isa={isa}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind, normalize", MODES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("row", [row_param(r) for r in BACKWARD_ROWS])
def test_backward_matches_reference(isa, row, case, kind, normalize, dtype):
    rng, x, k, s, p, ceil_mode, cip = _problem(case, dtype, 2)
    kw, w = _window(kind, k, normalize, rng)
    y_shape = ref.weighted_avg_pool2d(x, w, s, p, ceil_mode, cip, normalize).shape
    gy = rng.standard_normal(y_shape).astype(dtype)
    want = ref.weighted_avg_pool2d_backward(gy, x, w, s, p, ceil_mode, cip, normalize)
    got = fc.weighted_avg_pool2d_backward(on_device(gy, row.device), on_device(x, row.device), case[1], case[2],
                                          case[3], ceil_mode, cip, normalize=normalize, **kw)
    assert_close(to_host(got), want, TOL[dtype], f"{row} isa={isa}")


CASES_1D = [((2, 3, 13), 3, 2, 1, True, False), ((1, 2, 17), 5, 1, 2, False, True),
            ((3, 1, 11), 4, 3, 2, True, True), ((1, 2, 7), 2, 2, 0, False, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("normalize", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("case", CASES_1D, ids=[str(c) for c in CASES_1D])
@pytest.mark.parametrize("row", [row_param(r) for r in FORWARD_ROWS])
def test_1d_forward_and_backward(row, case, normalize, dtype):
    shape, k, s, p, ceil_mode, cip = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    for kw, w in [({"sigma": 1.1}, ref.gaussian_window((1, k), (INF, 1.1))[0]),
                  ({"weight": rng.random(k) + 0.1}, None)]:
        w = kw["weight"] if w is None else (w if normalize or "weight" in kw else w / w.sum())
        w2 = np.asarray(w)[None, :]
        want = ref.weighted_avg_pool2d(x[:, :, None, :], w2, (1, s), (0, p), ceil_mode, cip, normalize)[:, :, 0]
        out = nan_out(want.shape, dtype, row.device)
        got = fc.weighted_avg_pool1d(on_device(x, row.device), k, s, p, ceil_mode, cip, normalize=normalize,
                                     out=out, **kw)
        assert_close(to_host(got), want, TOL[dtype], f"{row} 1-D forward {kw}")
        gy = rng.standard_normal(want.shape).astype(dtype)
        want_g = ref.weighted_avg_pool2d_backward(gy[:, :, None, :], x[:, :, None, :], w2, (1, s), (0, p),
                                                  ceil_mode, cip, normalize)[:, :, 0]
        got_g = fc.weighted_avg_pool1d_backward(on_device(gy, row.device), on_device(x, row.device), k, s, p,
                                                ceil_mode, cip, normalize=normalize, **kw)
        assert_close(to_host(got_g), want_g, TOL[dtype], f"{row} 1-D backward {kw}")


# ---- a uniform window is avg_pool2d, bit for bit ------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("uniform", ["sigma_inf", "equal_weights"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("row", [row_param(r) for r in FORWARD_ROWS])
def test_uniform_window_is_avg_pool2d_exactly(isa, row, case, uniform, dtype):
    rng, x, k, s, p, ceil_mode, cip = _problem(case, dtype, 4)
    kw = {"sigma": INF} if uniform == "sigma_inf" else {"weight": np.full(k, 0.37)}
    args = (case[1], case[2], case[3], ceil_mode, cip)
    # Against the CPU's avg_pool2d, whose summation order every row follows (CUDA's own
    # avg_pool2d reorders the sums of windows of 32 taps or more).
    xd = on_device(x, row.device)
    want = fc.avg_pool2d(x, *args)
    got = to_host(fc.weighted_avg_pool2d(xd, *args, **kw))
    np.testing.assert_array_equal(got, want)
    gy = rng.standard_normal(want.shape).astype(dtype)
    np.testing.assert_array_equal(to_host(fc.weighted_avg_pool2d_backward(on_device(gy, row.device), xd, *args,
                                                                          **kw)),
                                  fc.avg_pool2d_backward(gy, x, *args))


@pytest.mark.parametrize("case", CASES_1D, ids=[str(c) for c in CASES_1D])
def test_uniform_window_is_avg_pool1d_exactly(case):
    shape, k, s, p, ceil_mode, cip = case
    x = np.random.default_rng(5).standard_normal(shape)
    args = (k, s, p, ceil_mode, cip)
    want = fc.avg_pool1d(x, *args)
    for kw in ({"sigma": INF}, {"weight": np.full(k, 2.5)}):
        np.testing.assert_array_equal(fc.weighted_avg_pool1d(x, *args, **kw), want)
        gy = np.random.default_rng(6).standard_normal(want.shape)
        np.testing.assert_array_equal(fc.weighted_avg_pool1d_backward(gy, x, *args, **kw),
                                      fc.avg_pool1d_backward(gy, x, *args))


# ---- the gradient is the derivative --------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("kind", ["gauss", "dense"])
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[6]], ids=[CASE_IDS[0], CASE_IDS[3], CASE_IDS[6]])
def test_backward_is_finite_difference_of_forward(case, kind, normalize):
    rng, x, k, s, p, ceil_mode, cip = _problem(case, np.float64, 7)
    kw, _ = _window(kind, k, normalize, rng)
    args = (case[1], case[2], case[3], ceil_mode, cip)
    gy = rng.standard_normal(fc.weighted_avg_pool2d(x, *args, normalize=normalize, **kw).shape)
    gx = fc.weighted_avg_pool2d_backward(gy, x, *args, normalize=normalize, **kw)
    eps = 1e-6
    for idx in map(tuple, rng.integers(0, x.shape, size=(12, 4))):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (np.sum(gy * fc.weighted_avg_pool2d(xp, *args, normalize=normalize, **kw))
              - np.sum(gy * fc.weighted_avg_pool2d(xm, *args, normalize=normalize, **kw))) / (2 * eps)
        assert abs(fd - gx[idx]) <= 1e-7 * max(1.0, abs(gx[idx])), (idx, fd, gx[idx])


# ---- windows, inputs -----------------------------------------------------------------------------

def test_window_weights():
    g = fc.pool_window_weights((3, 5), sigma=0.9)
    np.testing.assert_allclose(g, ref.gaussian_window((3, 5), (0.9, 0.9)), rtol=1e-15)
    assert g[1, 2] == 1.0
    blur = fc.pool_window_weights((3, 5), sigma=0.9, normalize=False)
    assert math.isclose(blur.sum(), 1.0, rel_tol=1e-15)
    np.testing.assert_array_equal(fc.pool_window_weights(4, sigma=INF), np.ones((4, 4)))
    np.testing.assert_allclose(fc.pool_window_weights(5, sigma=2.0, nd=1),
                               ref.gaussian_window((1, 5), (INF, 2.0))[0], rtol=1e-15)


def test_window_scale_does_not_matter_with_normalize():
    x = np.random.default_rng(8).standard_normal((2, 3, 9, 10))
    w = np.random.default_rng(9).random((3, 3)) + 0.1
    a = fc.weighted_avg_pool2d(x, 3, 2, 1, weight=w)
    b = fc.weighted_avg_pool2d(x, 3, 2, 1, weight=w * 1e3)
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)


def test_unbatched_and_torch_inputs():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(10).standard_normal((3, 9, 8)).astype(np.float32)
    want = fc.weighted_avg_pool2d(x[None], 3, 2, 1, sigma=0.7)[0]
    np.testing.assert_array_equal(fc.weighted_avg_pool2d(x, 3, 2, 1, sigma=0.7), want)
    got = fc.weighted_avg_pool2d(torch.from_numpy(x), 3, 2, 1, sigma=0.7)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), want)
    gy = np.ones_like(want)
    gx = fc.weighted_avg_pool2d_backward(torch.from_numpy(gy), torch.from_numpy(x), 3, 2, 1, sigma=0.7)
    assert isinstance(gx, torch.Tensor) and tuple(gx.shape) == x.shape
    # a torch tensor as the window
    w = torch.rand(3, 3, dtype=torch.float64) + 0.1
    np.testing.assert_array_equal(fc.weighted_avg_pool2d(x, 3, 2, 1, weight=w),
                                  fc.weighted_avg_pool2d(x, 3, 2, 1, weight=w.numpy()))
    x1 = np.random.default_rng(11).standard_normal((2, 13))
    np.testing.assert_array_equal(fc.weighted_avg_pool1d(x1, 3, 2, 1), fc.weighted_avg_pool1d(x1[None], 3, 2, 1)[0])


# ---- errors --------------------------------------------------------------------------------------

X = np.zeros((1, 2, 8, 8), np.float32)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"kernel_size": 0}, ValueError, "kernel_size"),
    ({"kernel_size": 3, "padding": 2}, ValueError, "padding"),
    ({"kernel_size": 3, "padding": -1}, ValueError, "padding"),
    ({"kernel_size": 3, "stride": 0}, ValueError, "stride"),
    ({"kernel_size": 9}, ValueError, "output size"),
    ({"kernel_size": 3, "sigma": 0}, ValueError, "sigma"),
    ({"kernel_size": 3, "sigma": -1.0}, ValueError, "sigma"),
    ({"kernel_size": 3, "sigma": math.nan}, ValueError, "sigma"),
    ({"kernel_size": 3, "sigma": (1.0, 2.0, 3.0)}, ValueError, "sigma"),
    ({"kernel_size": 3, "sigma": "wide"}, TypeError, "sigma"),
    ({"kernel_size": 3, "sigma": True}, TypeError, "sigma"),
    ({"kernel_size": 3, "weight": np.ones((3, 2))}, ValueError, "shape"),
    ({"kernel_size": 3, "weight": np.ones(9)}, ValueError, "shape"),
    ({"kernel_size": 3, "weight": np.ones((3, 3), complex)}, TypeError, "real"),
    ({"kernel_size": 3, "weight": np.ones((3, 3), bool)}, TypeError, "real"),
    ({"kernel_size": 3, "weight": np.array([["a"] * 3] * 3)}, TypeError, "real"),
    ({"kernel_size": 3, "weight": np.full((3, 3), np.nan)}, ValueError, "finite"),
    ({"kernel_size": 3, "weight": np.full((3, 3), np.inf), "normalize": False}, ValueError, "finite"),
    ({"kernel_size": 3, "weight": -np.ones((3, 3))}, ValueError, "non-negative"),
    ({"kernel_size": 3, "weight": np.zeros((3, 3))}, ValueError, "positive sum"),
    ({"kernel_size": 3, "normalize": "yes"}, TypeError, "normalize"),
    ({"kernel_size": 3, "ceil_mode": "no"}, TypeError, "ceil_mode"),
])
def test_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fc.weighted_avg_pool2d(X, **kwargs)
    with pytest.raises(exc, match=match):
        fc.weighted_avg_pool2d_backward(np.zeros((1, 2, 2, 2), np.float32), X, **kwargs)


def test_errors_inputs():
    with pytest.raises(TypeError, match="dtype"):
        fc.weighted_avg_pool2d(X.astype(np.int32), 3)
    with pytest.raises(ValueError, match="4-D or 3-D"):
        fc.weighted_avg_pool2d(X[0, 0], 3)
    with pytest.raises(ValueError, match="shape"):
        fc.weighted_avg_pool1d(X[0], 3, weight=np.ones((3, 3)))
    with pytest.raises(ValueError, match="shape"):  # the output's shape
        fc.weighted_avg_pool2d(X, 3, out=np.empty((1, 2, 3, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        fc.weighted_avg_pool2d_backward(np.zeros((1, 2, 2, 2)), X, 3)
    with pytest.raises(ValueError, match="shape"):
        fc.weighted_avg_pool2d_backward(np.zeros((1, 2, 3, 2), np.float32), X, 3)
    # a signed window is fine for a weighted sum
    fc.weighted_avg_pool2d(X, 3, weight=-np.ones((3, 3)), normalize=False)


def test_core_checks_the_window():
    """The C++ boundary checks the window's shape (Python's checks bypassed)."""
    from fastconv import _C
    prm = _C.PoolParams()
    prm.N, prm.C, prm.H, prm.W, prm.P, prm.Q, prm.R, prm.S = 1, 1, 4, 4, 2, 2, 2, 2
    prm.stride_h = prm.stride_w = 2
    x, y = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match="window"):
        _C.run("weighted_avg_pool2d_forward", "direct", prm, {"x": x, "w": np.ones(3), "y": y})
    prm.separable = True
    with pytest.raises(ValueError, match="window"):
        _C.run("weighted_avg_pool2d_forward", "direct", prm, {"x": x, "w": np.ones((2, 2)), "y": y})
    with pytest.raises(ValueError, match="w"):
        _C.run("weighted_avg_pool2d_forward", "direct", prm, {"x": x, "y": y})
    _C.run("weighted_avg_pool2d_forward", "direct", prm, {"x": x, "w": np.ones(4), "y": y})
    # The CPU kernels read zero padding, which adds nothing only for finite weights.
    for bad in (np.inf, np.nan):
        w = np.array([1.0, bad, 1.0, 1.0])
        with pytest.raises(ValueError, match="weights must be finite"):
            _C.run("weighted_avg_pool2d_forward", "direct", prm, {"x": x, "w": w, "y": y})
        with pytest.raises(ValueError, match="weights must be finite"):
            _C.run("weighted_avg_pool2d_backward", "direct", prm, {"grad_y": y, "w": w, "grad_x": x})


# ---- fastconv.torch ------------------------------------------------------------------------------

def test_torch_layer_forward_gradcheck_state_dict():
    torch = pytest.importorskip("torch")
    import fastconv.torch as ft
    assert "WeightedAvgPool2d" in ft.__all__ and "weighted_avg_pool2d" in ft.__all__
    layer = ft.WeightedAvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False, sigma=0.8)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    np.testing.assert_array_equal(y.detach().numpy(), fc.weighted_avg_pool2d(x.detach().numpy(), 3, 2, 1, True,
                                                                             False, sigma=0.8))
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
    # float32 through autograd: the backward op's result
    x32 = x.detach().float().requires_grad_()
    layer(x32).sum().backward()
    np.testing.assert_array_equal(x32.grad.numpy(), fc.weighted_avg_pool2d_backward(
        np.ones(y.shape, np.float32), x32.detach().numpy(), 3, 2, 1, True, False, sigma=0.8))
    # state_dict: the window is a buffer; loading it into a layer made with another window
    state = layer.state_dict()
    assert list(state) == ["weight"] and state["weight"].shape == (3, 3)
    np.testing.assert_allclose(state["weight"].numpy(), fc.pool_window_weights(3, sigma=0.8))
    other = ft.WeightedAvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False, sigma=5.0)
    assert not torch.equal(other(x), y)
    other.load_state_dict(state)
    torch.testing.assert_close(other(x), y, rtol=0, atol=0)
    assert not any(True for _ in layer.parameters())


def test_torch_layer_user_window_and_sum():
    torch = pytest.importorskip("torch")
    import fastconv.torch as ft
    w = torch.rand(3, 5, dtype=torch.float64) + 0.1
    layer = ft.WeightedAvgPool2d((3, 5), 1, (1, 2), weight=w, normalize=False)
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    want = ref.weighted_avg_pool2d(x.detach().numpy(), w.numpy(), (1, 1), (1, 2), False, True, False)
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(layer, (x,))
    assert "weight" in repr(layer)
    with pytest.raises(ValueError, match="shape"):
        ft.WeightedAvgPool2d(3, weight=torch.ones(3, 4))
    with pytest.raises(ValueError, match="sigma"):
        ft.WeightedAvgPool2d(3, sigma=0)
    y = ft.weighted_avg_pool2d(x, 3, 2, 1, sigma=1.5)
    np.testing.assert_array_equal(y.detach().numpy(), fc.weighted_avg_pool2d(x.detach().numpy(), 3, 2, 1,
                                                                             sigma=1.5))


def test_torch_ops_opcheck():
    torch = pytest.importorskip("torch")
    import fastconv.torch as ft
    layer = ft.WeightedAvgPool2d(3, 2, 1, sigma=0.8)
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64, requires_grad=True)
    args = ([3, 3], [2, 2], [1, 1], False, True, True)
    torch.library.opcheck(torch.ops.fastconv.weighted_avg_pool2d, (x, layer.weight) + args)
    gy = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.fastconv.weighted_avg_pool2d_backward, (gy, x.detach(), layer.weight) + args)


@pytest.mark.slow
def test_torch_compile_fullgraph():
    torch = pytest.importorskip("torch")
    import fastconv.torch as ft
    layer = ft.WeightedAvgPool2d(3, 2, 1, sigma=0.8)
    f = torch.compile(lambda x: layer(x).sum(), fullgraph=True)
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    f(x).backward()
    got = x.grad.clone()
    x.grad = None
    layer(x).sum().backward()
    torch.testing.assert_close(got, x.grad, rtol=0, atol=0)
