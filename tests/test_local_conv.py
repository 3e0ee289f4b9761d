# test_local_conv.py: tiled convolution and locally connected layers (issue 21 items 2-3).
# The C++ rows (tiled_conv2d_forward / backward_data / backward_weight) against the NumPy
# reference (one position at a time) into NaN-filled outputs, on every ISA, float32 and
# float64, over strides, per-side padding, dilation, groups, both bias kinds and odd sizes;
# a float64 finite-difference check of the reference's gradients; tiles 1x1 = conv2d and
# tiles PxQ = local_conv2d (forward and backward); an unfold + einsum torch formulation; the
# 1-D forms; bad input.
import numpy as np
import pytest

import fastconv as fc
from compare import on_device, to_host
from fastconv import _C
from fastconv import reference as ref
from fastconv.local import _problem

# (N, C, H, W, K, R, S, stride, padding, dilation, groups, tiles or None for local)
CASES = [
    (2, 3, 7, 9, 5, 3, 3, 1, 0, 1, 1, (2, 3)),
    (1, 4, 11, 7, 6, 3, 2, (2, 1), ((1, 2), (0, 1)), 1, 2, None),
    (3, 6, 9, 8, 9, 2, 3, 1, 1, (2, 1), 3, (3, 2)),
    (1, 5, 13, 13, 7, 5, 5, 2, 2, 1, 1, None),
    (2, 2, 5, 11, 3, 1, 1, 1, 0, 1, 1, (5, 4)),  # 1x1 kernel, sets that do not divide the output
    (1, 16, 8, 8, 16, 3, 3, 1, "same", 1, 16, None),  # depthwise
    (17, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, (1, 1)),  # more images than one block (16)
    (0, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, (2, 2)),  # empty batch
]
IDS = [f"case{i}" for i in range(len(CASES))]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 3e-5, np.float64: 1e-12}  # max error / max |reference|


def _make(case, dtype, rng, per_position_bias=True):
    n, c, h, w, k, r, s, stride, padding, dilation, groups, tiles = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    p, q = fc.local_conv2d_output_size((h, w), (r, s), stride, padding, dilation)
    t = tiles or (p, q)
    wt = rng.standard_normal(t + (k, c // groups, r, s)).astype(dtype)
    b = rng.standard_normal(t + (k,) if per_position_bias else (k,)).astype(dtype)
    gy = rng.standard_normal((n, k, p, q)).astype(dtype)
    return x, wt, b, gy, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _close(got, want, dtype, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    assert not np.isnan(got).any(), f"{what}: unwritten (NaN) elements"
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: error {err} > {TOL[dtype] * scale}"


def _params(x, wt, kw, op="tiled_conv2d"):
    params, pads, _, _ = _problem(op, x, wt, kw["stride"], kw["padding"], kw["dilation"], kw["groups"],
                                  False, False)
    return params, pads


def _kernel_problem(case, dtype, seed, **make_kw):
    """(x, w, bias, grad_y, ConvParams, the reference's keyword arguments) of one case."""
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 2**32 + seed)
    x, wt, b, gy, kw = _make(case, dtype, rng, **make_kw)
    params, pads = _params(x, wt, kw)
    rkw = dict(stride=(params.stride_h, params.stride_w), pads=pads, dilation=(params.dil_h, params.dil_w),
               groups=params.groups)
    return x, wt, b, gy, params, rkw


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_rows_match_reference_into_nan(case, dtype, isa):
    x, wt, b, gy, params, rkw = _kernel_problem(case, dtype, 0)
    y = np.full(gy.shape, np.nan, dtype)
    _C.run("tiled_conv2d_forward", "direct", params, {"x": x, "w": wt, "bias": b, "y": y})
    _close(y, ref.tiled_conv2d(x, wt, b, **rkw), dtype, "forward")
    want_gx, want_gw, want_gb = ref.tiled_conv2d_backward(gy, x, wt, **rkw)
    gx = np.full(x.shape, np.nan, dtype)
    nbytes = _C.workspace_bytes("direct", params, np.dtype(dtype).name, False, "tiled_conv2d_backward_data")
    ws = np.full(max(nbytes, 1), 255, np.uint8)  # garbage: the kernel must not read before writing
    _C.run("tiled_conv2d_backward_data", "direct", params, {"grad_y": gy, "w": wt, "grad_x": gx}, ws)
    _close(gx, want_gx, dtype, "grad_x")
    gw = np.full(wt.shape, np.nan, dtype)
    gb = np.full(b.shape, np.nan, dtype)
    _C.run("tiled_conv2d_backward_weight", "direct", params, {"grad_y": gy, "x": x, "grad_w": gw, "grad_bias": gb})
    _close(gw, want_gw, dtype, "grad_w")
    _close(gb, want_gb, dtype, "grad_bias")
    gb_only = np.full(b.shape, np.nan, dtype)  # the bias gradient alone
    _C.run("tiled_conv2d_backward_weight", "direct", params, {"grad_y": gy, "x": x, "grad_bias": gb_only})
    np.testing.assert_array_equal(gb_only, gb)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_rows_channel_bias_into_nan(case, dtype, isa):
    """channel_bias: the forward adds a (K,) bias to every set's outputs and the weight gradient
    sums the bias gradient of every set into (K,), in the kernel (no broadcast or reduction in
    Python); grad_w is the same as without it."""
    x, wt, b, gy, params, rkw = _kernel_problem(case, dtype, 1, per_position_bias=False)
    params.channel_bias = True
    y = np.full(gy.shape, np.nan, dtype)
    _C.run("tiled_conv2d_forward", "direct", params, {"x": x, "w": wt, "bias": b, "y": y})
    _close(y, ref.tiled_conv2d(x, wt, b, **rkw), dtype, "forward")
    _, want_gw, _ = ref.tiled_conv2d_backward(gy, x, wt, **rkw)
    gw = np.full(wt.shape, np.nan, dtype)
    gb = np.full(b.shape, np.nan, dtype)
    _C.run("tiled_conv2d_backward_weight", "direct", params, {"grad_y": gy, "x": x, "grad_w": gw, "grad_bias": gb})
    _close(gw, want_gw, dtype, "grad_w")
    _close(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)), dtype, "grad_bias")
    gb_only = np.full(b.shape, np.nan, dtype)
    _C.run("tiled_conv2d_backward_weight", "direct", params, {"grad_y": gy, "x": x, "grad_bias": gb_only})
    np.testing.assert_array_equal(gb_only, gb)


@pytest.mark.parametrize("per_position_bias", [False, True], ids=["channel_bias", "position_bias"])
@pytest.mark.parametrize("case", CASES[:6], ids=IDS[:6])
def test_public_api_forward_backward(case, per_position_bias):
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        x, wt, b, gy, kw = _make(case, dtype, rng, per_position_bias)
        local = case[-1] is None
        fwd, bwd = (fc.local_conv2d, fc.local_conv2d_backward) if local else (fc.tiled_conv2d, fc.tiled_conv2d_backward)
        y = fwd(x, wt, b, **kw)
        assert y.dtype == dtype
        _close(y, fwd(x, wt, b, algorithm="reference", **kw), dtype, "forward")
        got = bwd(gy, x, wt, per_position_bias=per_position_bias, **kw)
        want = bwd(gy, x, wt, per_position_bias=per_position_bias, algorithm="reference", **kw)
        for g, wnt, name in zip(got, want, ("grad_x", "grad_w", "grad_bias")):
            assert g.dtype == dtype
            _close(g, wnt, dtype, name)
        assert got[2].shape == b.shape
        # needs: only what was asked for
        only_w = bwd(gy, x, wt, needs=(False, True, False), **kw)
        assert only_w[0] is None and only_w[2] is None
        np.testing.assert_array_equal(only_w[1], got[1])


def test_reference_gradients_by_finite_differences():
    """The reference's backward is the derivative of its forward (float64, central differences)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((2, 3, 4, 2, 3, 2))
    b = rng.standard_normal((2, 3, 4))
    kw = dict(stride=(1, 2), pads=((1, 0), (2, 1)), dilation=(2, 1), groups=2)
    y = ref.tiled_conv2d(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = ref.tiled_conv2d_backward(gy, x, w, **kw)
    _check_by_central_differences(lambda *a: ref.tiled_conv2d(*a, **kw), (x, w, b), (gx, gw, gb), gy, rng, 12)


def _check_by_central_differences(forward, arrays, grads, gy, rng, samples):
    """grads[i] at `samples` random elements against d(sum(forward(*arrays) * gy)) / d arrays[i]
    by central differences (float64)."""
    eps = 1e-6
    for which, grad in enumerate(grads):
        for _ in range(samples):
            idx = tuple(rng.integers(0, d) for d in arrays[which].shape)
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            fd = float(((forward(*plus) - forward(*minus)) * gy).sum()) / (2 * eps)
            assert abs(fd - grad[idx]) <= 1e-6 * max(1.0, abs(fd)), (which, idx, fd, grad[idx])


def test_fastconv_gradients_by_finite_differences():
    """The C++ backward rows against central differences of the C++ forward (float64)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((3, 2, 4, 3, 3, 2))
    b = rng.standard_normal((3, 2, 4))
    kw = dict(stride=(2, 1), padding=1, dilation=1, groups=1)
    y = fc.tiled_conv2d(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = fc.tiled_conv2d_backward(gy, x, w, per_position_bias=True, **kw)
    _check_by_central_differences(lambda *a: fc.tiled_conv2d(*a, **kw), (x, w, b), (gx, gw, gb), gy, rng, 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_tiles_1x1_is_conv2d(dtype):
    rng = np.random.default_rng(5)
    for kw in (dict(stride=1, padding=1, dilation=1, groups=1), dict(stride=(2, 1), padding=((0, 2), (1, 1)),
                                                                       dilation=(1, 2), groups=3)):
        x = rng.standard_normal((3, 6, 10, 9)).astype(dtype)
        w = rng.standard_normal((9, 6 // kw["groups"], 3, 3)).astype(dtype)
        b = rng.standard_normal(9).astype(dtype)
        y = fc.tiled_conv2d(x, w[None, None], b, **kw)
        want = fc.conv2d(x, w, b, algorithm="direct", **kw)
        _close(y, want, dtype, "forward")
        gy = rng.standard_normal(y.shape).astype(dtype)
        got = fc.tiled_conv2d_backward(gy, x, w[None, None], **kw)
        want = fc.conv2d_backward(gy, x, w, algorithm="direct", **kw)
        _close(got[0], want[0], dtype, "grad_x")
        _close(got[1][0, 0], want[1], dtype, "grad_w")
        _close(got[2], want[2], dtype, "grad_bias")


def test_tiles_pxq_is_local_conv2d():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 9, 8))
    p, q = fc.local_conv2d_output_size((9, 8), 3, 2, 1)
    w = rng.standard_normal((p, q, 5, 4, 3, 3))
    b = rng.standard_normal((p, q, 5))
    np.testing.assert_array_equal(fc.tiled_conv2d(x, w, b, 2, 1), fc.local_conv2d(x, w, b, 2, 1))
    gy = rng.standard_normal((2, 5, p, q))
    for a, b_ in zip(fc.tiled_conv2d_backward(gy, x, w, 2, 1, per_position_bias=True),
                     fc.local_conv2d_backward(gy, x, w, 2, 1, per_position_bias=True)):
        np.testing.assert_array_equal(a, b_)
    # Every position has its own kernel: changing one position's weights changes that output only.
    w2 = w.copy()
    w2[1, 2] += 1.0
    diff = np.abs(fc.local_conv2d(x, w2, b, 2, 1) - fc.local_conv2d(x, w, b, 2, 1)).sum(axis=(0, 1))
    assert set(zip(*np.nonzero(diff))) == {(1, 2)}


def test_tiled_sets_cycle_over_positions():
    """Output (p, q) uses set (p % TP, q % TQ): equal to conv2d with that set's kernel there."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 8, 9))
    w = rng.standard_normal((2, 3, 4, 3, 3, 3))
    y = fc.tiled_conv2d(x, w, padding=1)
    for i in range(2):
        for j in range(3):
            full = fc.conv2d(x, w[i, j], padding=1)
            np.testing.assert_allclose(y[:, :, i::2, j::3], full[:, :, i::2, j::3], rtol=1e-12, atol=1e-12)


def test_against_torch_unfold_einsum():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 5, 10, 9))
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    p, q = fc.local_conv2d_output_size((10, 9), (3, 2), **kw)
    w = rng.standard_normal((p, q, 6, 5, 3, 2))
    b = rng.standard_normal((p, q, 6))
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    cols = F.unfold(tx, (3, 2), **kw)  # (N, C*R*S, P*Q)
    ty = torch.einsum("ncl,lkc->nkl", cols, tw.reshape(p * q, 6, 5 * 3 * 2)).reshape(3, 6, p, q)
    ty = ty + tb.permute(2, 0, 1)
    y = fc.local_conv2d(x, w, b, **kw)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(gy))
    gx, gw, gb = fc.local_conv2d_backward(gy, x, w, per_position_bias=True, **kw)
    for got, want in ((gx, tx.grad), (gw, tw.grad), (gb, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_1d_forms(dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 17)).astype(dtype)
    lout = (17 + 2 * 1 - 2 * (3 - 1) - 1) // 2 + 1
    for local in (True, False):
        t = lout if local else 3
        w = rng.standard_normal((t, 6, 2, 3)).astype(dtype)
        b = rng.standard_normal((t, 6)).astype(dtype)
        fwd, bwd = (fc.local_conv1d, fc.local_conv1d_backward) if local else (fc.tiled_conv1d, fc.tiled_conv1d_backward)
        y = fwd(x, w, b, stride=2, padding=1, dilation=2, groups=2)
        assert y.shape == (2, 6, lout)
        w2 = w.reshape(1, t, 6, 2, 1, 3)
        y2 = fc.tiled_conv2d(x[:, :, None], w2, b[None], stride=(1, 2), padding=((0, 0), (1, 1)), dilation=(1, 2),
                             groups=2)
        np.testing.assert_array_equal(y, y2[:, :, 0])
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = bwd(gy, x, w, stride=2, padding=1, dilation=2, groups=2, per_position_bias=True)
        assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
        want = fc.tiled_conv2d_backward(gy[:, :, None], x[:, :, None], w2, stride=(1, 2), padding=((0, 0), (1, 1)),
                                        dilation=(1, 2), groups=2, per_position_bias=True)
        np.testing.assert_array_equal(gx, want[0][:, :, 0])
        np.testing.assert_array_equal(gw, want[1].reshape(w.shape))
        np.testing.assert_array_equal(gb, want[2][0])
        _, _, gb_channel = bwd(gy, x, w, stride=2, padding=1, dilation=2, groups=2, needs=(False, False, True))
        assert gb_channel.shape == (6,)
        _close(gb_channel, gy.astype(np.float64).sum(axis=(0, 2)), dtype, "per-channel grad_bias")


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 3, 4, 2, 3, 3, dtype=torch.float64)
    y = fc.local_conv2d(x, w)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 4, 3, 3)


def test_deterministic_across_thread_counts():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((2, 2, 16, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((3, 16, 12, 12)).astype(np.float32)
    before = fc.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            fc.set_num_threads(t)
            results.append((fc.tiled_conv2d(x, w, padding=1),) + fc.tiled_conv2d_backward(gy, x, w, padding=1))
    finally:
        fc.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


X = np.zeros((1, 3, 6, 6), np.float32)
W_LOCAL = np.zeros((4, 4, 2, 3, 3, 3), np.float32)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fc.local_conv2d(X, np.zeros((5, 4, 2, 3, 3, 3), np.float32)), ValueError,
     r"weight has \(5, 4\) positions .* but the output is \(4, 4\)"),
    (lambda: fc.local_conv2d(X, np.zeros((2, 3, 3, 3), np.float32)), ValueError, "weight must be 6-D"),
    (lambda: fc.local_conv2d(X[0], W_LOCAL), ValueError, "input must be 4-D"),
    (lambda: fc.local_conv2d(X, np.zeros((4, 4, 2, 2, 3, 3), np.float32)), ValueError, "C/groups"),
    (lambda: fc.tiled_conv2d(X, np.zeros((5, 1, 2, 3, 3, 3), np.float32)), ValueError,
     r"tiles \(5, 1\) must be between 1 and the output size \(4, 4\)"),
    (lambda: fc.local_conv2d(X, W_LOCAL, np.zeros(3, np.float32)), ValueError, r"bias must have shape \(2,\)"),
    (lambda: fc.local_conv2d(X, W_LOCAL, np.zeros((4, 4, 3), np.float32)), ValueError, "per position"),
    (lambda: fc.local_conv2d(X, W_LOCAL.astype(np.float64)), TypeError, "dtype"),
    (lambda: fc.local_conv2d(X.astype(np.int32), W_LOCAL), TypeError, "dtype"),
    (lambda: fc.local_conv2d(X, W_LOCAL, stride=0), ValueError, "stride must be positive"),
    (lambda: fc.local_conv2d(X, W_LOCAL, algorithm="im2col"), ValueError, "algorithm must be one of"),
    (lambda: fc.local_conv2d(X, np.zeros((1, 1, 2, 3, 9, 3), np.float32)), ValueError, "larger than the padded"),
    (lambda: fc.local_conv2d_backward(np.zeros((1, 2, 3, 3), np.float32), X, W_LOCAL), ValueError,
     "grad_y must have the output's shape"),
    (lambda: fc.local_conv2d_backward(np.zeros((1, 2, 4, 4), np.float32), X, W_LOCAL, needs=(1, 1, 1)), TypeError,
     "needs must hold bools"),
    (lambda: fc.local_conv2d_backward(np.zeros((1, 2, 4, 4), np.float32), X, W_LOCAL, per_position_bias=1),
     TypeError, "per_position_bias must be a bool"),
    (lambda: fc.local_conv1d(X, W_LOCAL), ValueError, "input must be 3-D"),
    (lambda: fc.tiled_conv1d(X[:, :, 0], np.zeros((9, 2, 3, 3), np.float32)), ValueError, "tiles 9 must be between"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_core_rejects_tiles_on_other_ops_and_bad_tiles():
    x, wt, b, gy, kw = _make(CASES[0], np.float64, np.random.default_rng(0))
    params, _ = _params(x, wt, kw)
    with pytest.raises(ValueError, match="takes tiles 1 x 1"):
        _C.run("conv2d_forward", "direct", params, {"x": x, "w": wt[0, 0], "y": np.empty(gy.shape)})
    params.tiles_h = params.P + 1
    with pytest.raises(ValueError, match="at most the output size"):
        _C.run("tiled_conv2d_forward", "direct", params, {"x": x, "w": wt, "y": np.empty(gy.shape)})
    params.tiles_h = 2
    with pytest.raises(ValueError, match="weight dimension 1 is 3, expected 4"):
        params.tiles_w = 4
        _C.run("tiled_conv2d_forward", "direct", params, {"x": x, "w": wt, "y": np.empty(gy.shape)})
    params.tiles_w = 3
    with pytest.raises(ValueError, match="bias must have 3 dimensions"):
        _C.run("tiled_conv2d_forward", "direct", params, {"x": x, "w": wt, "bias": b[0, 0], "y": np.empty(gy.shape)})
    with pytest.raises(ValueError, match="no cpu kernel 'im2col' for tiled_conv2d_forward"):
        _C.run("tiled_conv2d_forward", "im2col", params, {"x": x, "w": wt, "y": np.empty(gy.shape)})
    params.channel_bias = True  # the bias is then (K,)
    with pytest.raises(ValueError, match="bias must have 1 dimensions"):
        _C.run("tiled_conv2d_forward", "direct", params, {"x": x, "w": wt, "bias": b, "y": np.empty(gy.shape)})
    with pytest.raises(ValueError, match="grad_bias must have 1 dimensions"):
        _C.run("tiled_conv2d_backward_weight", "direct", params, {"grad_y": gy, "x": x, "grad_bias": np.empty(b.shape)})
    conv_params, _ = _params(x, wt[:1, :1], kw)
    conv_params.channel_bias = True
    with pytest.raises(ValueError, match="conv2d_forward takes no channel_bias"):
        _C.run("conv2d_forward", "direct", conv_params, {"x": x, "w": wt[0, 0], "y": np.empty(gy.shape)})


# ---- fastconv.torch: ops, autograd, layers ------------------------------------------------------

def test_torch_gradcheck_float64():
    torch = pytest.importorskip("torch")
    from fastconv.torch import local_conv2d, tiled_conv2d
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 3, 6, 2, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    for b in (torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True),
              torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)):
        assert torch.autograd.gradcheck(lambda x, w, b: tiled_conv2d(x, w, b, (2, 1), 1, (1, 2), 2), (x, w, b))
    p, q = fc.local_conv2d_output_size((6, 5), (3, 2), 1, ((1, 0), (0, 1)))
    wl = torch.randn(p, q, 3, 4, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    bl = torch.randn(p, q, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: local_conv2d(x, w, b, 1, ((1, 0), (0, 1))), (x, wl, bl))
    # second derivatives, through the backward op's own formula; both bias kinds (a channel
    # bias's gradient is the backward op's per_position_bias=False, summed in the kernel)
    for b in (torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True),
              torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)):
        assert torch.autograd.gradgradcheck(lambda x, w, b: tiled_conv2d(x, w, b, (2, 1), 1, (1, 2), 2), (x, w, b))


def test_torch_ops_have_fake_shapes():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fastconv.torch")  # registers torch.ops.fastconv.* (not only when another test did)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 4, 9, 8)
        w = torch.empty(2, 3, 5, 4, 3, 3)
        y = torch.ops.fastconv.tiled_conv2d(x, w, None, [2, 1], [1, 1, 0, 0], [1, 1], 1)
        gx, gw, gb = torch.ops.fastconv.tiled_conv2d_backward(y, x, w, [2, 1], [1, 1, 0, 0], [1, 1], 1,
                                                                [True, True, True])
    assert tuple(y.shape) == (2, 5, 5, 6) and tuple(gw.shape) == tuple(w.shape) and tuple(gb.shape) == (2, 3, 5)
    assert tuple(gx.shape) == (2, 4, 9, 8)
    with FakeTensorMode():
        _, _, gb = torch.ops.fastconv.tiled_conv2d_backward(torch.empty(2, 5, 5, 6), torch.empty(2, 4, 9, 8),
                                                             torch.empty(2, 3, 5, 4, 3, 3), [2, 1], [1, 1, 0, 0],
                                                             [1, 1], 1, [False, False, True], False)
    assert tuple(gb.shape) == (5,)


def test_torch_layers_state_dict_and_training_step():
    torch = pytest.importorskip("torch")
    from fastconv.torch import LocallyConnected2d, TiledConv2d
    torch.manual_seed(0)
    lc = LocallyConnected2d(3, 5, 3, input_size=(8, 7), stride=1, padding=1)
    assert tuple(lc.weight.shape) == (8, 7, 5, 3, 3, 3) and tuple(lc.bias.shape) == (8, 7, 5)
    tc = TiledConv2d(3, 5, (3, 2), tiles=2, groups=1, bias="channel")
    assert tuple(tc.weight.shape) == (2, 2, 5, 3, 3, 2) and tuple(tc.bias.shape) == (5,)
    x = torch.randn(4, 3, 8, 7)
    for layer in (lc, tc):
        y = layer(x)
        want = torch.from_numpy(fc.tiled_conv2d(x.numpy(), layer.weight.detach().numpy(),
                                                layer.bias.detach().numpy(), layer.stride, layer.padding))
        torch.testing.assert_close(y.detach(), want)
        y.square().mean().backward()
        assert layer.weight.grad is not None and layer.bias.grad.shape == layer.bias.shape
        fresh = (LocallyConnected2d(3, 5, 3, input_size=(8, 7), padding=1) if layer is lc
                 else TiledConv2d(3, 5, (3, 2), tiles=2, bias="channel"))
        fresh.load_state_dict(layer.state_dict())
        torch.testing.assert_close(fresh(x), layer(x))
    with pytest.raises(ValueError, match="positions"):
        lc(torch.randn(1, 3, 9, 7))  # a locally connected layer is tied to its input size
    assert "LocallyConnected2d" in repr(lc) and "sets=(8, 7)" in repr(lc)


def test_tiled_layer_with_tiles_1_equals_conv2d():
    torch = pytest.importorskip("torch")
    from fastconv.torch import TiledConv2d
    layer = TiledConv2d(4, 6, 3, tiles=1, padding=1, groups=2, bias="channel").double()
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2).double()
    with torch.no_grad():
        conv.weight.copy_(layer.weight[0, 0])
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    y1 = layer(x)
    y2 = conv(x)
    torch.testing.assert_close(y1, y2)
    g1 = torch.autograd.grad(y1.sum(), (x, layer.weight, layer.bias))
    g2 = torch.autograd.grad(y2.sum(), (x, conv.weight, conv.bias))
    torch.testing.assert_close(g1[0], g2[0])
    torch.testing.assert_close(g1[1][0, 0], g2[1])
    torch.testing.assert_close(g1[2], g2[2])


# ---- CUDA rows on the SIMT emulator (csrc/cuda/tiled_conv2d.cu) --------------------------------

CUDA_CASES = [c for c in CASES if c[0] <= 3 and c[1] * c[2] * c[3] <= 1100]


def _emulator():
    return pytest.importorskip("fastconv._cuda_emu")


def _cuda_rows(E, params, x, wt, b, gy):
    """(y, grad_x, grad_w, grad_b) of the CUDA rows, every output NaN-filled first."""
    def dev(a):
        return E.Tensor(a.ctypes.data, a.dtype.name, a.shape, device="cuda")
    p = E.ConvParams()
    for f in "N C H W K R S P Q pad_h pad_w stride_h stride_w dil_h dil_w groups tiles_h tiles_w channel_bias".split():
        setattr(p, f, getattr(params, f))
    y = np.full(gy.shape, np.nan, x.dtype)
    E.run("tiled_conv2d_forward", "direct", p, {"x": dev(x), "w": dev(wt), "bias": dev(b), "y": dev(y)}, None,
          "cuda")
    gx = np.full(x.shape, np.nan, x.dtype)
    E.run("tiled_conv2d_backward_data", "direct", p, {"grad_y": dev(gy), "w": dev(wt), "grad_x": dev(gx)}, None,
          "cuda")
    gw = np.full(wt.shape, np.nan, x.dtype)
    gb = np.full(b.shape, np.nan, x.dtype)
    E.run("tiled_conv2d_backward_weight", "direct", p,
          {"grad_y": dev(gy), "x": dev(x), "grad_w": dev(gw), "grad_bias": dev(gb)}, None, "cuda")
    return y, gx, gw, gb


@pytest.mark.cuda
@pytest.mark.parametrize("per_position_bias", [False, True], ids=["channel_bias", "position_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CUDA_CASES, ids=[f"cuda{i}" for i in range(len(CUDA_CASES))])
def test_cuda_rows_match_reference_in_every_thread_order(case, dtype, per_position_bias):
    E = _emulator()
    rng = np.random.default_rng(12)
    x, wt, b, gy, kw = _make(case, dtype, rng, per_position_bias)
    params, pads = _params(x, wt, kw)
    params.channel_bias = not per_position_bias  # bias and grad_bias (K,): broadcast and summed in the kernels
    rkw = dict(stride=(params.stride_h, params.stride_w), pads=pads, dilation=(params.dil_h, params.dil_w),
               groups=params.groups)
    want = (ref.tiled_conv2d(x, wt, b, **rkw),) + ref.tiled_conv2d_backward(gy, x, wt, **rkw)
    if not per_position_bias:
        want = want[:3] + (gy.astype(np.float64).sum(axis=(0, 2, 3)),)
    before = E.get_order()
    try:
        results = {}
        for order in ("forward", "reverse", "shuffle"):
            E.set_order(order)
            results[order] = _cuda_rows(E, params, x, wt, b, gy)
    finally:
        E.set_order(before)
    for got, wnt, name in zip(results["forward"], want, ("forward", "grad_x", "grad_w", "grad_bias")):
        if params.N == 0 and name in ("forward", "grad_x"):
            continue  # nothing to compute: the boundary returns before the kernel
        _close(got, wnt, dtype, name)
    for order in ("reverse", "shuffle"):  # no atomics, fixed reduction orders
        for a, b_ in zip(results["forward"], results[order]):
            np.testing.assert_array_equal(a, b_)


@pytest.mark.cuda
def test_cuda_kernel_rows_listed():
    E = _emulator()
    rows = {(k["algorithm"], k["op"], k["device"]) for k in E.kernels()}
    for op in ("tiled_conv2d_forward", "tiled_conv2d_backward_data", "tiled_conv2d_backward_weight"):
        assert ("direct", op, "cuda") in rows and ("direct", op, "cpu") in rows


def test_torch_custom_ops_pass_opcheck():
    """Schema, autograd registration, fake tensor shapes and AOT dispatch, as torch checks them."""
    torch = pytest.importorskip("torch")
    import fastconv.torch  # noqa: F401  (registers the ops)
    g = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
    x, w = rand(2, 4, 7, 6), rand(2, 3, 6, 2, 3, 2)
    for bias in (None, rand(6), rand(2, 3, 6)):
        result = torch.library.opcheck(torch.ops.fastconv.tiled_conv2d, (x, w, bias, [2, 1], [1, 0, 0, 1], [1, 2], 2))
        assert all(v == "SUCCESS" for v in result.values()), result
    gy = rand(2, 6, 3, 5)
    for per_position_bias in (True, False):
        result = torch.library.opcheck(torch.ops.fastconv.tiled_conv2d_backward,
                                       (gy, x, w, [2, 1], [1, 0, 0, 1], [1, 2], 2, [True, True, True],
                                        per_position_bias))
        assert all(v == "SUCCESS" for v in result.values()), result


# ---- the public API on CUDA arrays (the emulator's here; torch CUDA tensors on a GPU) ------------

def _on_cuda(*arrays):
    return tuple(on_device(a, "cuda:0") for a in arrays)


@pytest.mark.cuda
@pytest.mark.parametrize("per_position_bias", [False, True], ids=["channel_bias", "position_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CUDA_CASES, ids=[f"cuda{i}" for i in range(len(CUDA_CASES))])
def test_cuda_arrays_match_the_cpu(case, dtype, per_position_bias):
    """tiled_conv2d / local_conv2d and their backward on CUDA arrays: the CPU's results (and the
    reference's) at the file's tolerance, every output on the device, both bias forms (the
    per-channel bias broadcast and its gradient summed over the sets inside the kernels)."""
    rng = np.random.default_rng(21)
    x, wt, b, gy, kw = _make(case, dtype, rng, per_position_bias)
    local = case[-1] is None
    fwd, bwd = (fc.local_conv2d, fc.local_conv2d_backward) if local else (fc.tiled_conv2d, fc.tiled_conv2d_backward)
    dx, dw, db, dgy = _on_cuda(x, wt, b, gy)
    y = fwd(dx, dw, db, **kw)
    assert type(y) is type(dx)
    y = to_host(y)
    assert y.dtype == dtype
    _close(y, fwd(x, wt, b, **kw), dtype, "forward vs cpu")
    _close(y, fwd(x, wt, b, algorithm="reference", **kw), dtype, "forward vs reference")
    _close(to_host(fwd(dx, dw, None, **kw)), fwd(x, wt, None, **kw), dtype, "forward without bias")
    got = bwd(dgy, dx, dw, per_position_bias=per_position_bias, **kw)
    want = bwd(gy, x, wt, per_position_bias=per_position_bias, **kw)
    want_ref = bwd(gy, x, wt, per_position_bias=per_position_bias, algorithm="reference", **kw)
    for g, wnt, wref, name in zip(got, want, want_ref, ("grad_x", "grad_w", "grad_bias")):
        assert type(g) is type(dx), name
        g = to_host(g)
        assert g.dtype == dtype and g.shape == wnt.shape, name
        _close(g, wnt, dtype, name + " vs cpu")
        _close(g, wref, dtype, name + " vs reference")
    assert to_host(got[2]).shape == b.shape
    for needs in ((True, False, False), (False, True, False), (False, False, True)):  # only what is asked for
        part = bwd(dgy, dx, dw, needs=needs, per_position_bias=per_position_bias, **kw)
        for need, g, full in zip(needs, part, got):
            if need:
                np.testing.assert_array_equal(to_host(g), to_host(full))
            else:
                assert g is None


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cuda_1d_forms_match_the_cpu(dtype):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 4, 17)).astype(dtype)
    kw = dict(stride=2, padding=1, dilation=2, groups=2)
    lout = (17 + 2 * 1 - 2 * (3 - 1) - 1) // 2 + 1
    for local in (True, False):
        t = lout if local else 3
        w = rng.standard_normal((t, 6, 2, 3)).astype(dtype)
        gy = rng.standard_normal((2, 6, lout)).astype(dtype)
        fwd, bwd = (fc.local_conv1d, fc.local_conv1d_backward) if local else (fc.tiled_conv1d, fc.tiled_conv1d_backward)
        for b, per_position_bias in ((rng.standard_normal((t, 6)).astype(dtype), True),
                                     (rng.standard_normal(6).astype(dtype), False)):
            dx, dw, db, dgy = _on_cuda(x, w, b, gy)
            y = to_host(fwd(dx, dw, db, **kw))
            assert y.shape == (2, 6, lout)
            _close(y, fwd(x, w, b, **kw), dtype, "forward")
            got = bwd(dgy, dx, dw, per_position_bias=per_position_bias, **kw)
            want = bwd(gy, x, w, per_position_bias=per_position_bias, **kw)
            for g, wnt, name in zip(got, want, ("grad_x", "grad_w", "grad_bias")):
                _close(to_host(g), wnt, dtype, name)
            assert to_host(got[2]).shape == b.shape


@pytest.mark.cuda
def test_cuda_bad_input():
    rng = np.random.default_rng(23)
    x, wt, b, gy, kw = _make(CASES[0], np.float32, rng, per_position_bias=False)
    dx, dw, db, dgy = _on_cuda(x, wt, b, gy)
    with pytest.raises(ValueError, match="arrays must be on one device: input is on cuda:0, weight on cpu"):
        fc.tiled_conv2d(dx, wt, **kw)
    with pytest.raises(ValueError, match="arrays must be on one device: input is on cuda:0, bias on cpu"):
        fc.tiled_conv2d(dx, dw, b, **kw)
    with pytest.raises(ValueError, match="arrays must be on one device: grad_y is on cpu, input on cuda:0"):
        fc.tiled_conv2d_backward(gy, dx, dw, **kw)
    with pytest.raises(ValueError, match="'reference' runs on the CPU only"):
        fc.tiled_conv2d(dx, dw, db, algorithm="reference", **kw)
    with pytest.raises(ValueError, match="'reference' runs on the CPU only"):
        fc.local_conv1d_backward(*_on_cuda(np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 6), np.float32),
                                           np.zeros((4, 2, 2, 3), np.float32)), algorithm="reference")
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        fc.tiled_conv2d(dx, dw, *_on_cuda(np.zeros(4, np.float32)), **kw)
    with pytest.raises(TypeError, match="dtype"):
        fc.tiled_conv2d(dx, *_on_cuda(wt.astype(np.float64)), **kw)
    with pytest.raises(ValueError, match="grad_y must have the output's shape"):
        fc.tiled_conv2d_backward(*_on_cuda(gy[:, :, 1:]), dx, dw, **kw)
