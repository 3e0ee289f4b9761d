# test_torch.py: fastconv.torch: gradcheck in float64 of every op and module (stride, padding
# forms, dilation, groups, flip), gradgradcheck of conv and every pooling op but Lp, a gradient
# penalty against torch's; float32 outputs and gradients against torch's own on random
# shapes; modules' constructor, init, state_dict both ways, padding modes and inference plans
# (made once, dropped when the weights change); convert() on a small CNN (torch's outputs and
# gradients, same Parameter objects, the report of what it left alone; BatchNorm2d folded into
# the conv before it in eval mode, not in training or under hooks); the custom ops pass
# torch.library.opcheck; no fastconv module but fastconv.torch imports torch.
import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402
from torch import nn  # noqa: E402

import fastconv.torch as ft  # noqa: E402

D64 = torch.float64


def rand(*shape, dtype=D64, grad=True, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=dtype) + 0.1 if positive else torch.randn(shape, generator=g, dtype=dtype)
    return t.requires_grad_(grad)


# ---- gradcheck and gradgradcheck, float64 ---------------------------------------------------

CONV2D_CASES = [  # x shape, w shape, stride, padding, dilation, groups, flip
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0, 1, 1, False),
    ((2, 3, 8, 7), (4, 3, 3, 2), 2, 1, 1, 1, False),
    ((1, 4, 7, 7), (4, 2, 3, 3), (2, 1), "same", 1, 2, False),
    ((1, 3, 9, 8), (3, 1, 3, 3), 1, "same", 2, 3, False),
    ((2, 2, 6, 5), (3, 2, 2, 3), 1, ((1, 0), (2, 1)), 1, 1, True),
    ((1, 2, 5, 5), (2, 2, 3, 3), 1, "full", (1, 2), 1, True),
    ((1, 3, 6, 6), (2, 3, 1, 1), 3, "valid", 1, 1, False),
]


# Every conv case is checked to first order (gradcheck) and to second (gradgradcheck: double backward).
CHECKS = [torch.autograd.gradcheck, torch.autograd.gradgradcheck]


@pytest.mark.slow  # numerical Jacobians of every input: 5-80 s a case on 2 cores
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CONV2D_CASES, ids=str)
def test_conv2d_gradcheck(case, check):
    xs, ws, stride, padding, dilation, groups, flip = case
    x, w, b = rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)
    assert check(lambda x, w, b: ft.conv2d(x, w, b, stride, padding, dilation, groups, flip=flip), (x, w, b))


CONV1D_CASES = [
    ((2, 3, 11), (4, 3, 3), 1, 0, 1, 1, False),
    ((2, 4, 12), (6, 2, 3), 2, 1, 2, 2, False),
    ((1, 3, 10), (3, 1, 4), 1, "same", 1, 3, True),
    ((1, 2, 9), (2, 2, 3), 3, (2, 1), 1, 1, False),
]


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
def test_conv1d_gradcheck(case, check):
    xs, ws, stride, padding, dilation, groups, flip = case
    x, w, b = rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)
    assert check(lambda x, w, b: ft.conv1d(x, w, b, stride, padding, dilation, groups, flip=flip), (x, w, b))


def test_conv_gradcheck_without_bias_and_unbatched():
    x, w = rand(3, 6, 6), rand(2, 3, 3, 3, seed=1)
    assert torch.autograd.gradcheck(lambda x, w: ft.conv2d(x, w, None, 1, 1), (x, w))
    x1, w1 = rand(3, 8), rand(2, 3, 3, seed=1)
    assert torch.autograd.gradcheck(lambda x, w: ft.conv1d(x, w, None, 1, 1), (x1, w1))


POOL_CASES = [  # name, function of x, input shape, positive inputs
    ("max2d", lambda x: ft.max_pool2d(x, 3, 2, 1, ceil_mode=True), (2, 2, 7, 8), False),
    ("max2d_dil", lambda x: ft.max_pool2d(x, (2, 3), 1, 0, dilation=2), (1, 2, 7, 9), False),
    ("max2d_unbatched", lambda x: ft.max_pool2d(x, 2), (2, 6, 6), False),
    ("max1d", lambda x: ft.max_pool1d(x, 3, 2, 1, dilation=2, ceil_mode=True), (2, 3, 12), False),
    ("avg2d", lambda x: ft.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 2, 7, 8), False),
    ("avg2d_divisor", lambda x: ft.avg_pool2d(x, (2, 3), (1, 2), (1, 1), divisor_override=5), (1, 2, 6, 7), False),
    ("avg1d", lambda x: ft.avg_pool1d(x, 4, 3, 2, count_include_pad=True), (2, 3, 13), False),
    ("lp2d_p2", lambda x: ft.lp_pool2d(x, 2, 3, 2), (2, 2, 7, 7), True),
    ("lp2d_p3_ceil", lambda x: ft.lp_pool2d(x, 3.0, (2, 3), 2, ceil_mode=True), (1, 2, 7, 8), True),
    ("lp1d", lambda x: ft.lp_pool1d(x, 2, 3), (2, 3, 9), True),
    ("adaptive_avg2d", lambda x: ft.adaptive_avg_pool2d(x, (3, None)), (2, 2, 7, 5), False),
    ("adaptive_avg1d", lambda x: ft.adaptive_avg_pool1d(x, 4), (2, 3, 9), False),
    ("adaptive_max2d", lambda x: ft.adaptive_max_pool2d(x, (4, 3)), (2, 2, 7, 8), False),
    ("adaptive_max1d", lambda x: ft.adaptive_max_pool1d(x, 5), (2, 3, 11), False),
]


# Pooling to second order too, but Lp (its backward has no autograd formula: tested below).
POOL_CHECKS = [(case, check) for case in POOL_CASES for check in CHECKS
               if check is torch.autograd.gradcheck or not case[0].startswith("lp")]


@pytest.mark.parametrize("case,check", POOL_CHECKS, ids=[f"{c[0]}-{k.__name__}" for c, k in POOL_CHECKS])
def test_pool_gradcheck(case, check):
    _, fn, shape, positive = case
    assert check(fn, (rand(*shape, positive=positive),))


# ---- double backward: partial inputs, Lp pooling, a gradient penalty --------------------------

@pytest.mark.slow
def test_conv2d_gradgradcheck_of_one_input_at_a_time():
    """Second derivatives where only some of x, weight, bias require grad (each backward op
    then returns placeholders for the others)."""
    x, w, b = rand(2, 3, 6, 5), rand(4, 3, 3, 3, seed=1), rand(4, seed=2)
    for grads in ((True, False, False), (False, True, False), (False, False, True), (True, False, True)):
        args = [t.detach().requires_grad_(g) for t, g in zip((x, w, b), grads)]
        assert torch.autograd.gradgradcheck(lambda x, w, b: ft.conv2d(x, w, b, 2, 1), args)


def test_lp_pool_double_backward_is_a_clear_error():
    x = rand(1, 2, 6, 6, positive=True)
    (gx,) = torch.autograd.grad(ft.lp_pool2d(x, 2, 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="lp_pool2d_backward"):
        gx.sum().backward()


def test_gradient_penalty_matches_torch():
    """A WGAN-GP style loss (the input gradient's norm, differentiated again) on a small CNN
    of fastconv layers gives torch's parameter gradients."""
    torch.manual_seed(0)
    theirs = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 3, stride=2),
                           nn.Tanh(), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1)).double()
    ours = ft.convert(copy.deepcopy(theirs))
    x = torch.randn(3, 2, 12, 12, dtype=D64)
    for model in (theirs, ours):
        xi = x.clone().requires_grad_()
        out = model(xi).sum()
        (gx,) = torch.autograd.grad(out, xi, create_graph=True)
        (out + gx.square().sum()).backward()
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, tp.grad, rtol=1e-10, atol=1e-12)


MODULES = [  # fastconv layer (float64), input shape, positive inputs
    (lambda: ft.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=D64), (2, 4, 7, 7), False),
    (lambda: ft.Conv2d(3, 4, (3, 2), padding="same", dilation=2, dtype=D64), (1, 3, 8, 8), False),
    (lambda: ft.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=False, dtype=D64), (1, 2, 6, 6), False),
    (lambda: ft.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="circular", dtype=D64), (1, 2, 6, 6), False),
    (lambda: ft.Conv1d(3, 6, 3, stride=2, padding=2, dilation=2, groups=3, dtype=D64), (2, 3, 12), False),
    (lambda: ft.Conv1d(2, 2, 4, padding="same", padding_mode="replicate", dtype=D64), (1, 2, 9), False),
    (lambda: ft.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 2, 7, 7), False),
    (lambda: ft.MaxPool1d(2), (2, 2, 9), False),
    (lambda: ft.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 2, 7, 7), False),
    (lambda: ft.AvgPool1d(3, 1, 1), (2, 2, 7), False),
    (lambda: ft.LPPool2d(2, 2), (2, 2, 6, 6), True),
    (lambda: ft.LPPool1d(3, 3, 2), (2, 2, 9), True),
    (lambda: ft.AdaptiveAvgPool2d((2, 3)), (2, 2, 7, 7), False),
    (lambda: ft.AdaptiveAvgPool1d(3), (2, 2, 7), False),
    (lambda: ft.AdaptiveMaxPool2d(3), (2, 2, 7, 7), False),
    (lambda: ft.AdaptiveMaxPool1d(2), (2, 2, 7), False),
]


@pytest.mark.slow
@pytest.mark.parametrize("make,shape,positive", MODULES, ids=[f"m{i}" for i in range(len(MODULES))])
def test_module_gradcheck(make, shape, positive):
    """d(output)/d(input) and d(output)/d(each parameter), through the module's own forward."""
    m = make()
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (rand(*shape, positive=positive),) + params)


def test_max_pool_return_indices_match_torch():
    x = rand(2, 3, 9, 8, grad=False)
    y, idx = ft.max_pool2d(x, 3, 2, 1, return_indices=True)
    ty, tidx = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(y, ty) and torch.equal(idx, tidx)
    y, idx = ft.AdaptiveMaxPool1d(4, return_indices=True)(x[:, :, 0])
    ty, tidx = TF.adaptive_max_pool1d(x[:, :, 0], 4, return_indices=True)
    assert torch.equal(y, ty) and torch.equal(idx, tidx)


# ---- float32 against torch ---------------------------------------------------------------------

def _close(got, want, rtol=2e-5):
    got, want = got.detach(), want.detach()
    scale = max(float(want.abs().max()), 1e-6)
    err = float((got - want).abs().max())
    assert err <= rtol * scale, f"max error {err:.3e} > {rtol:.0e} x {scale:.3e}"


@pytest.mark.parametrize("seed", range(8))
def test_conv2d_float32_matches_torch(seed):
    """Random problems: forward and every gradient against torch.nn.functional.conv2d."""
    r = np.random.default_rng(seed)
    groups = int(r.choice([1, 1, 2, 4]))
    c, k = groups * int(r.integers(1, 5)), groups * int(r.integers(1, 5))
    kh, kw = int(r.integers(1, 6)), int(r.integers(1, 6))
    stride, dilation = (int(r.integers(1, 3)), int(r.integers(1, 3))), (int(r.integers(1, 3)), int(r.integers(1, 3)))
    padding = (int(r.integers(0, kh)), int(r.integers(0, kw)))
    h = dilation[0] * (kh - 1) + 1 + int(r.integers(0, 12))
    w = dilation[1] * (kw - 1) + 1 + int(r.integers(0, 12))
    n = int(r.integers(1, 4))
    algorithm = str(r.choice(["auto", "direct", "im2col"]))
    x, wt, b = (rand(n, c, h, w, dtype=torch.float32, seed=seed), rand(k, c // groups, kh, kw, dtype=torch.float32,
                seed=seed + 100), rand(k, dtype=torch.float32, seed=seed + 200))
    y = ft.conv2d(x, wt, b, stride, padding, dilation, groups, algorithm=algorithm)
    tx, tw, tb = (t.detach().clone().requires_grad_() for t in (x, wt, b))
    ty = TF.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    _close(y, ty)
    gy = torch.randn(ty.shape, generator=torch.Generator().manual_seed(seed))
    y.backward(gy)
    ty.backward(gy)
    for got, want in ((x.grad, tx.grad), (wt.grad, tw.grad), (b.grad, tb.grad)):
        _close(got, want, rtol=5e-5)


@pytest.mark.parametrize("seed", range(4))
def test_pools_float32_match_torch(seed):
    r = np.random.default_rng(seed)
    n, c, h, w = 2, int(r.integers(1, 4)), int(r.integers(6, 15)), int(r.integers(6, 15))
    k, s = int(r.integers(2, 4)), int(r.integers(1, 3))
    p = int(r.integers(0, k // 2 + 1))
    calls = [
        (lambda m, x: m.max_pool2d(x, k, s, p, ceil_mode=bool(seed % 2)), False),
        (lambda m, x: m.avg_pool2d(x, k, s, p, ceil_mode=bool(seed % 2), count_include_pad=bool(seed // 2)), False),
        (lambda m, x: m.lp_pool2d(x, 2, k, s), True),
        (lambda m, x: m.adaptive_avg_pool2d(x, (3, 4)), False),
        (lambda m, x: m.adaptive_max_pool2d(x, 3), False),
        (lambda m, x: m.max_pool1d(x[:, :, 0], k, s, p), False),
        (lambda m, x: m.avg_pool1d(x[:, :, 0], k, s, p), False),
        (lambda m, x: m.adaptive_avg_pool1d(x[:, :, 0], 4), False),
    ]
    for call, positive in calls:
        x = rand(n, c, h, w, dtype=torch.float32, seed=seed, positive=positive)
        tx = x.detach().clone().requires_grad_()
        y, ty = call(ft, x), call(TF, tx)
        _close(y, ty)
        y.sum().backward()
        ty.sum().backward()
        _close(x.grad, tx.grad)


# ---- modules ------------------------------------------------------------------------------------

def test_modules_are_torch_layers_with_torch_state():
    torch.manual_seed(3)
    ours = ft.Conv2d(3, 8, 3, stride=2, padding=1, groups=1, bias=True, algorithm="im2col")
    torch.manual_seed(3)
    theirs = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    assert isinstance(ours, nn.Conv2d) and ours.algorithm == "im2col" and "algorithm='im2col'" in repr(ours)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    other = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    ours.load_state_dict(other.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 9, 9)
    _close(ours(x), other(x))
    _close(theirs(x), other(x))


def test_conv_plan_is_made_once_and_dropped_when_weights_change():
    m = ft.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 10, 10)
    with torch.no_grad():
        y = m(x)
        plan = m._plans[((4, 10, 10), torch.float32)]
        m(torch.randn(5, 4, 10, 10))          # any batch size: same plan
        assert m._plans[((4, 10, 10), torch.float32)] is plan
        xs = torch.randn(2, 4, 10, 10).transpose(-1, -2)     # strided: read through a copy
        _close(m(xs), TF.conv2d(xs, m.weight, m.bias, padding=1))
        xg = torch.randn(2, 4, 10, 10, requires_grad=True)   # requires grad, under no_grad
        _close(m(xg), TF.conv2d(xg, m.weight, m.bias, padding=1))
        assert m._plans[((4, 10, 10), torch.float32)] is plan
        _close(y, TF.conv2d(x, m.weight, m.bias, padding=1))
        m.weight.mul_(2)                      # in place: the version counter moves
        _close(m(x), TF.conv2d(x, m.weight, m.bias, padding=1))
        assert m._plans[((4, 10, 10), torch.float32)] is not plan
        m.bias.add_(1)
        _close(m(x), TF.conv2d(x, m.weight, m.bias, padding=1))
        m.weight = nn.Parameter(torch.randn_like(m.weight))  # a new tensor
        _close(m(x), TF.conv2d(x, m.weight, m.bias, padding=1))
    # An optimizer step between inference calls is seen too.
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(x).square().sum().backward()
    opt.step()
    with torch.inference_mode():
        _close(m(x), TF.conv2d(x, m.weight, m.bias, padding=1))
    m1 = ft.Conv1d(2, 3, 3, padding="same")
    z = torch.randn(2, 2, 9)
    with torch.no_grad():
        _close(m1(z), TF.conv1d(z, m1.weight, m1.bias, padding="same"))
        assert len(m1._plans) == 1
    m2 = copy.deepcopy(m)                     # plans are not copied, re-made on use
    assert m2._plans == {}
    with torch.no_grad():
        _close(m2(x), m(x))


def test_layer_plans_follow_shape_weight_and_argument_changes_between_calls():
    """The last call's plan is reused only for the same shape, dtype, weights and arguments:
    alternating inputs, a new algorithm, weights replaced through .data and changed pooling
    arguments each give torch's answer."""
    conv, pool = ft.Conv2d(3, 5, 3, padding=1), ft.MaxPool2d(3, 2, 1)
    xa, xb = torch.randn(2, 3, 9, 9), torch.randn(1, 3, 7, 11)
    with torch.no_grad():
        for x in (xa, xb, xa, xb.double(), xa):
            if x.dtype == D64:
                with pytest.raises(TypeError):
                    conv(x)
            else:
                _close(conv(x), TF.conv2d(x, conv.weight, conv.bias, padding=1))
            _close(pool(x), TF.max_pool2d(x, 3, 2, 1))
        assert len(conv._plans) == len(pool._plans) == 3  # one per (shape, dtype)
        conv.algorithm = "direct"
        _close(conv(xa), TF.conv2d(xa, conv.weight, conv.bias, padding=1))
        assert next(iter(conv._plans.values())).algorithm == "direct"
        conv.weight.data = torch.randn_like(conv.weight)
        _close(conv(xa), TF.conv2d(xa, conv.weight, conv.bias, padding=1))
        pool.kernel_size, pool.padding = 2, 0
        _close(pool(xa), TF.max_pool2d(xa, 2, 2, 0))


POOL_MODULES = [  # (fastconv/torch class name, constructor args, input shape)
    ("MaxPool2d", (3, 2, 1), (2, 3, 11, 9)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True,
                       return_indices=True), (2, 3, 13, 10)),
    ("MaxPool2d", (2,), (3, 7, 7)),                     # unbatched
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1, return_indices=True), (2, 3, 17)),
    ("AvgPool2d", (3, 2, 1, True, False), (2, 3, 11, 9)),
    ("AvgPool2d", dict(kernel_size=2, divisor_override=3), (1, 2, 9, 8)),
    ("AvgPool1d", (3, 2, 1, False, True), (2, 3, 13)),
    ("LPPool2d", (2.0, 3, 2), (2, 3, 11, 9)),
    ("LPPool1d", (3.0, 2), (2, 3, 9)),
    ("AdaptiveAvgPool2d", ((3, None),), (2, 3, 10, 7)),
    ("AdaptiveAvgPool1d", (4,), (2, 3, 11)),
    ("AdaptiveMaxPool2d", (3, True), (2, 3, 10, 7)),
    ("AdaptiveMaxPool1d", (5,), (3, 11)),                # unbatched
]


@pytest.mark.parametrize("name, args, shape", POOL_MODULES)
@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_pool_module_inference_plan_matches_torch(name, args, shape, dtype):
    """Inference calls run a PoolPlan made once per input shape and dtype, dropped when the
    layer's arguments change; outputs and indices are torch's, whatever was in memory."""
    kwargs, args = (args, ()) if isinstance(args, dict) else ({}, args)
    ours, theirs = getattr(ft, name)(*args, **kwargs), getattr(nn, name)(*args, **kwargs)
    positive = name.startswith("LP")
    x = rand(*shape, dtype=dtype, grad=False, positive=positive)
    with torch.no_grad():
        got, want = ours(x), theirs(x)
        assert len(ours._plans) == 1
        plan = next(iter(ours._plans.values()))
        for _ in range(3):  # freshly allocated outputs each call: every element is written
            got, want = ours(x), theirs(x)
        assert next(iter(ours._plans.values())) is plan
        for a, b in zip(*((got, want) if isinstance(got, tuple) else ((got,), (want,)))):
            assert a.shape == b.shape and a.dtype == b.dtype
            _close(a, b)
        y = ours(x.transpose(-1, -2).contiguous().transpose(-1, -2))  # a strided input
        _close(y[0] if isinstance(y, tuple) else y, want[0] if isinstance(want, tuple) else want)
    # a training call takes the autograd path and gives the same values
    xg = x.detach().clone().requires_grad_()
    yg = ours(xg)
    _close(yg[0] if isinstance(yg, tuple) else yg, want[0] if isinstance(want, tuple) else want)


def test_pool_module_plan_follows_attribute_changes_and_errors_stay_clear():
    m, t = ft.MaxPool2d(2), nn.MaxPool2d(2)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        _close(m(x), t(x))
        m.kernel_size = t.kernel_size = 3
        m.stride = t.stride = 1
        _close(m(x), t(x))
        m.return_indices = t.return_indices = True
        for a, b in zip(m(x), t(x)):
            assert torch.equal(a, b)
        with pytest.raises(ValueError, match="padding"):
            ft.MaxPool2d(2, padding=2)(x)
        with pytest.raises(ValueError, match="4-D|3-D"):
            m(torch.randn(1, 2, 3, 4, 5))
        with pytest.raises(TypeError, match="dtype"):
            ft.AvgPool2d(2)(x.half())
    m2 = copy.deepcopy(m)
    assert m2._plans == {}


def test_conv_layer_with_parametrized_weight_and_bias_matches_torch():
    """Parametrized parameters leave the module's parameter dict; the layer reads them as
    attributes (recomputed on every access), so inference follows every change."""
    from torch.nn.utils import parametrize

    class Scale(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.s = s

        def forward(self, t):
            return t * self.s

    torch.manual_seed(4)
    m = ft.Conv2d(3, 4, 3, padding=1)
    parametrize.register_parametrization(m, "weight", Scale(2.0))
    parametrize.register_parametrization(m, "bias", Scale(-3.0))
    x = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        _close(m(x), TF.conv2d(x, m.weight, m.bias, padding=1))
        m.parametrizations.bias[0].s = 5.0
        _close(m(x), TF.conv2d(x, m.weight, m.bias, padding=1))
    m1 = torch.nn.utils.parametrizations.weight_norm(ft.Conv1d(2, 3, 3))
    z = torch.randn(2, 2, 9)
    with torch.no_grad():
        _close(m1(z), TF.conv1d(z, m1.weight, m1.bias))


def test_training_call_does_not_use_a_plan():
    m = ft.Conv2d(2, 2, 3)
    m(torch.randn(1, 2, 5, 5)).sum().backward()
    assert m._plans == {} and m.weight.grad is not None


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_match_torch(mode):
    torch.manual_seed(0)
    theirs = nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode=mode)
    ours = ft.Conv2d(3, 4, 3, padding=(1, 2), padding_mode=mode)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 7, 8)
    _close(ours(x), theirs(x))
    with torch.no_grad():
        _close(ours(x), theirs(x))


def test_errors_are_clear():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(TypeError, match="dtype"):
        ft.conv2d(x.half(), torch.randn(2, 3, 3, 3).half())
    with pytest.raises(ValueError, match="4-D"):
        ft.conv2d(torch.randn(5, 5), torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        ft.conv2d(x, torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="algorithm"):
        ft.conv2d(x, torch.randn(2, 3, 3, 3), algorithm="nope")
    with pytest.raises(TypeError, match="algorithm"):
        ft.Conv2d(3, 3, 3, algorithm=3)
    with pytest.raises(ValueError, match="padding"):
        ft.max_pool2d(x, 2, padding=2)


def test_forward_only_algorithm_trains_with_backward_auto():
    """Winograd has no backward kernel: its gradients come from auto's backward algorithm."""
    x, w = rand(1, 4, 8, 8, dtype=torch.float32), rand(4, 4, 3, 3, dtype=torch.float32, seed=1)
    ft.conv2d(x, w, padding=1, algorithm="winograd").sum().backward()
    tx, tw = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    TF.conv2d(tx, tw, padding=1).sum().backward()
    _close(x.grad, tx.grad)
    _close(w.grad, tw.grad)


# ---- convert -------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect"), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding="same", bias=False), nn.ReLU(), nn.LPPool2d(2, 2))
        self.seq = nn.Sequential(nn.Conv1d(16, 4, 1), nn.AdaptiveMaxPool1d(2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16 + 8, 5)

    def forward(self, x):
        f = self.features(x)
        a = self.pool(f).flatten(1)
        b = self.seq(f.flatten(2)).flatten(1)
        return self.head(torch.cat([a, b], 1))


def test_convert_matches_torch_outputs_and_gradients():
    torch.manual_seed(0)
    theirs = SmallCNN()
    ours = copy.deepcopy(theirs)
    params_before = list(ours.parameters())
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    assert ft.convert(ours) is ours
    assert list(ours.parameters()) == params_before and all(
        a is b for a, b in zip(ours.parameters(), params_before))
    kinds = {type(m) for m in ours.modules()}
    assert {ft.Conv2d, ft.Conv1d, ft.MaxPool2d, ft.AvgPool2d, ft.LPPool2d, ft.AdaptiveAvgPool2d,
            ft.AdaptiveMaxPool1d} <= kinds and nn.Conv2d not in kinds
    x = torch.randn(4, 3, 16, 16)
    y, ty = ours(x), theirs(x)
    _close(y, ty)
    y.square().sum().backward()
    ty.square().sum().backward()
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        _close(p.grad, tp.grad, rtol=1e-4)
    opt.step()                                 # the optimizer built before convert() still updates
    assert not torch.equal(ours.head.weight, theirs.head.weight)
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        _close(ours(x), theirs(x))


def test_convert_reports_what_it_leaves_alone():
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv3d(1, 1, 1), nn.ConvTranspose2d(2, 2, 2),
                          nn.Conv2d(2, 2, 1).half(), MyConv(2, 2, 1), nn.Sequential(nn.MaxPool3d(2), nn.MaxPool2d(2)),
                          nn.ReLU(), nn.Linear(2, 2))
    model, skipped = ft.convert(model, algorithm="direct", report=True)
    assert type(model[0]) is ft.Conv2d and model[0].algorithm == "direct"
    assert type(model[5][1]) is ft.MaxPool2d
    by_name = {s.name: s for s in skipped}
    assert set(by_name) == {"1", "2", "3", "4", "5.0"}
    assert by_name["1"].type == "Conv3d" and "no equivalent" in by_name["1"].reason
    assert "float16" in by_name["3"].reason and "subclass" in by_name["4"].reason
    assert ft.convert(model, report=True)[1] == skipped       # converting again changes nothing
    layer = ft.convert(nn.Conv2d(1, 1, 1))                   # a bare layer comes back converted
    assert type(layer) is ft.Conv2d
    with pytest.raises(TypeError):
        ft.convert(object())


class ConvBN(nn.Module):
    """Conv -> BN pairs of every kind convert() meets: a plain block with a bias-free conv,
    a grouped conv with a biased conv and BN without affine, a conv whose output feeds a
    residual sum as well (not foldable), and a BN without running statistics (never folded)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8, affine=False)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.conv4, self.bn4 = nn.Conv2d(8, 5, 3, stride=2), nn.BatchNorm2d(5, track_running_stats=False)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        y = self.conv3(x)
        x = torch.relu(self.bn3(y) + y)
        return self.bn4(self.conv4(x))


def _conv_bn_pair(seed=0):
    """(torch model with random BN statistics, its converted copy)."""
    torch.manual_seed(seed)
    theirs = ConvBN()
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            if m.affine:
                m.weight.data.normal_(1, 0.5)
                m.bias.data.normal_(0, 0.5)
    return theirs, ft.convert(copy.deepcopy(theirs))


def test_convert_folds_batchnorm_into_the_conv_before_it():
    theirs, ours = _conv_bn_pair()
    folded = {name for name, m in ours.named_modules() if type(m) is ft.FoldedBatchNorm2d}
    assert folded == {"bn1", "bn2"}            # bn3 shares conv3's output; bn4 has no running stats
    assert ours.conv1._folded_bn is ours.bn1 and ours.bn1.folded_into is ours.conv1
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert len(list(ours.modules())) == len(list(theirs.modules()))
    x = torch.randn(3, 3, 13, 11)
    theirs.eval(), ours.eval()
    with torch.no_grad():                      # the plans' path, weights folded once
        y = torch.full((3, 5, 6, 5), float("nan"))
        y.copy_(ours(x))
        _close(y, theirs(x))
        assert ours.conv1._plans and ours.bn1.folded_into is ours.conv1
    ours, theirs = copy.deepcopy(ours).double(), theirs.double()
    assert ours.conv2._folded_bn is ours.bn2
    xg = x.double().requires_grad_()           # eval with gradients: folded by differentiable torch ops
    tx = x.double().requires_grad_()
    y, ty = ours(xg), theirs(tx)
    _close(y, ty, rtol=1e-10)
    y.square().sum().backward()
    ty.square().sum().backward()
    _close(xg.grad, tx.grad, rtol=1e-10)
    _close(torch.cat([p.grad.flatten() for p in ours.parameters()]),   # conv4's bias gets ~0: bn4
           torch.cat([p.grad.flatten() for p in theirs.parameters()]), rtol=1e-10)  # removes the mean


def test_folded_batchnorm_follows_training_statistics_and_hooks():
    theirs, ours = _conv_bn_pair(1)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        ours.eval(), theirs.eval()
        ours(x)                                # plans made with the current statistics
        ours.train(), theirs.train()           # training: BN normalises by batch and updates its stats
        _close(ours(x), theirs(x))
        _close(ours.bn1.running_mean, theirs.bn1.running_mean)
        ours.eval(), theirs.eval()             # the plans see the new statistics
        _close(ours(x), theirs(x))
        theirs.bn2.running_var.mul_(2.0)       # an in-place change drops the plan
        ours.bn2.running_var.mul_(2.0)
        _close(ours(x), theirs(x))
        seen = {}
        handle = ours.bn1.register_forward_hook(lambda m, i, o: seen.update(ours=i[0]))
        theirs.bn1.register_forward_hook(lambda m, i, o: seen.update(theirs=i[0]))
        _close(ours(x), theirs(x))             # a hook sees the unfolded BN input
        _close(seen["ours"], seen["theirs"])
        handle.remove()
        _close(ours(x), theirs(x))


def test_convert_without_folding_and_untraceable_models():
    theirs, ours = _conv_bn_pair()
    kept = ft.convert(copy.deepcopy(theirs), fold_batchnorm=False)
    assert not any(type(m) is ft.FoldedBatchNorm2d for m in kept.modules())

    class Branchy(nn.Module):             # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else self.bn(self.conv(-x))

    model = ft.convert(Branchy().eval())
    assert type(model.bn) is nn.BatchNorm2d and type(model.conv) is ft.Conv2d
    x = torch.randn(1, 2, 7, 7)
    with torch.no_grad():
        ref = TF.batch_norm(TF.conv2d(x if x.sum() > 0 else -x, model.conv.weight, model.conv.bias),
                            model.bn.running_mean, model.bn.running_var, model.bn.weight, model.bn.bias)
        _close(model(x), ref)
    again = ft.convert(ours)                    # converting again keeps the folds as they are
    assert again.bn1.folded_into is again.conv1 and type(again.bn3) is nn.BatchNorm2d


# ---- custom ops ------------------------------------------------------------------------------------

OPCHECK = [
    (torch.ops.fastconv.conv2d, lambda: (rand(2, 4, 6, 6), rand(4, 2, 3, 3, seed=1), rand(4, seed=2), [2, 1],
                                         [1, 0, 2, 1], [1, 2], 2, True, "auto")),
    (torch.ops.fastconv.max_pool2d, lambda: (rand(2, 2, 7, 7), [3, 2], [2, 2], [1, 1], [1, 1], True)),
    (torch.ops.fastconv.avg_pool2d, lambda: (rand(2, 2, 7, 7), [3, 3], [2, 1], [1, 0], False, False, None)),
    (torch.ops.fastconv.lp_pool2d, lambda: (rand(2, 2, 7, 7, positive=True), 2.0, [2, 2], [2, 2], False)),
    (torch.ops.fastconv.adaptive_avg_pool2d, lambda: (rand(2, 2, 7, 7), [3, 2])),
    (torch.ops.fastconv.adaptive_max_pool2d, lambda: (rand(2, 2, 7, 7), [3, 2])),
    # the backward ops, which have autograd formulas of their own (double backward)
    (torch.ops.fastconv.conv2d_backward, lambda: (rand(2, 4, 3, 5, seed=3), rand(2, 4, 6, 6), rand(4, 2, 3, 3, seed=1),
                                                  [2, 1], [1, 0, 2, 1], [1, 2], 2, True, "auto", [True, True, True])),
    (torch.ops.fastconv.max_pool2d_backward, lambda: _with_indices(torch.ops.fastconv.max_pool2d, rand(2, 2, 7, 7),
                                                                   [3, 2], [2, 2], [1, 1], [1, 1], True)),
    (torch.ops.fastconv.avg_pool2d_backward, lambda: (rand(2, 2, 4, 5, seed=3), rand(2, 2, 7, 7), [3, 3], [2, 1],
                                                      [1, 0], False, False, None)),
    (torch.ops.fastconv.adaptive_avg_pool2d_backward, lambda: (rand(2, 2, 3, 2, seed=3), rand(2, 2, 7, 7), [3, 2])),
    (torch.ops.fastconv.adaptive_max_pool2d_backward, lambda: _with_indices(torch.ops.fastconv.adaptive_max_pool2d,
                                                                            rand(2, 2, 7, 7), [3, 2])),
]


def _with_indices(pool, x, *args):
    """(grad_y, x, indices, *args) for a max pooling backward op, the indices from its forward."""
    y, indices = pool(x.detach(), *args)
    return (rand(*y.shape, seed=3), x, indices) + args


@pytest.mark.parametrize("op,args", OPCHECK, ids=[str(o) for o, _ in OPCHECK])
def test_custom_ops_pass_opcheck(op, args):
    """Schema, autograd registration, fake tensor shapes and AOT dispatch, as torch checks them."""
    result = torch.library.opcheck(op, args())
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.slow
def test_only_fastconv_torch_imports_torch():
    code = ("import sys, fastconv, fastconv.bench.cli, fastconv.__main__\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "import fastconv.torch\nassert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
