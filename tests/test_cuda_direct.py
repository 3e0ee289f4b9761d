"""The CUDA direct convolution's own paths (csrc/cuda/conv2d_direct.cu, conv2d_backward_bias.cu),
run on the SIMT emulator (fastconv._cuda_emu) through its run() against fastconv.reference, with
every output pre-filled with NaN: the depthwise tile kernels with channel multipliers, stride 2,
the 3x3 kernel's 4 and 2 rows a thread, and a halo too large for shared memory (the general
kernel instead), the register blocks of 8
and 16 output (and input) channels, which the launcher picks only when the problem has enough
pixels to fill a GPU (so those cases have 2^17 output pixels, 1x1 or 3 input channels to stay
cheap), weights too large to stage in shared memory, staging in several chunks, the weight
gradient's split reduction (its workspace), the bias gradient at N == 0, and that every result
is bitwise the same whatever order the emulator runs a block's threads in (no atomics, fixed
reduction order). The case table's CUDA rows (test_conv.py, test_backward.py) cover the rest.
"""
import numpy as np
import pytest

from compare import assert_close, tolerance
from fastconv import reference as ref
from fastconv.functional import conv_params

E = pytest.importorskip("fastconv._cuda_emu")

pytestmark = pytest.mark.cuda

FIELDS = "N C H W K R S P Q pad_h pad_w stride_h stride_w dil_h dil_w groups".split()


def _dev(a):
    return E.Tensor(a.ctypes.data, a.dtype.name, a.shape, device="cuda")


def _params(x_shape, w_shape, stride, padding, dilation, groups):
    cp, pads = conv_params(tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, "test")
    p = E.ConvParams()
    for f in FIELDS:
        setattr(p, f, getattr(cp, f))
    return p, pads


def _run_all(p, dtype, x, w, b, gy):
    """(y, grad_x, grad_w, grad_b, workspace bytes) of the CUDA direct kernels on the emulator,
    each output NaN-filled before its kernel runs (the workspace 0xFF bytes, as cudaMalloc's)."""
    y = np.full((p.N, p.K, p.P, p.Q), np.nan, dtype)
    E.run("conv2d_forward", "direct", p, {"x": _dev(x), "w": _dev(w), "bias": _dev(b), "y": _dev(y)}, None, "cuda")
    gx = np.full(x.shape, np.nan, dtype)
    E.run("conv2d_backward_data", "direct", p, {"grad_y": _dev(gy), "w": _dev(w), "grad_x": _dev(gx)}, None, "cuda")
    gw = np.full(w.shape, np.nan, dtype)
    gb = np.full((p.K,), np.nan, dtype)
    n = E.workspace_bytes("direct", p, np.dtype(dtype).name, False, "conv2d_backward_weight", "cuda")
    ws = np.full(n, 0xFF, np.uint8)
    E.run("conv2d_backward_weight", "direct", p,
          {"grad_y": _dev(gy), "x": _dev(x), "grad_w": _dev(gw), "grad_bias": _dev(gb)},
          _dev(ws) if n else None, "cuda")
    return y, gx, gw, gb, n


def check(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, dtype=np.float32, seed=7):
    """Forward, data, weight and bias gradients against the reference; returns the workspace
    bytes of the weight gradient."""
    rng = np.random.default_rng(seed)
    p, pads = _params(x_shape, w_shape, stride, padding, dilation, groups)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    gy = rng.standard_normal((p.N, p.K, p.P, p.Q)).astype(dtype)
    y, gx, gw, gb, n = _run_all(p, dtype, x, w, b, gy)
    kw = dict(stride=(p.stride_h, p.stride_w), pads=pads, dilation=(p.dil_h, p.dil_w), groups=groups)
    want_gx, want_gw, want_gb = ref.conv2d_backward(gy, x, w, **kw)
    red_w = max(p.N * p.P * p.Q, 1)
    assert_close(y, ref.conv2d(x, w, b, **kw), tolerance("direct", dtype, p.C // groups * p.R * p.S), "y")
    assert_close(gx, want_gx, tolerance("direct", dtype, p.K // groups * p.R * p.S), "grad_x")
    assert_close(gw, want_gw, tolerance("direct", dtype, red_w), "grad_w")
    assert_close(gb, want_gb, tolerance("direct", dtype, red_w), "grad_b")
    return n


DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])


@DTYPES
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", [
    ((2, 5, 9, 11), (15, 1, 3, 3), 1, 1, 1, 5),      # channel multiplier 3
    ((1, 3, 13, 10), (51, 1, 3, 3), 2, 1, 1, 3),     # multiplier 17, stride 2
    ((2, 7, 17, 33), (7, 1, 3, 3), 2, 1, 1, 7),      # MobileNet stride 2 (two tiles across Q)
    ((1, 4, 37, 19), (4, 1, 3, 3), 1, 1, 1, 4),      # stride 1, several tiles down P
    ((3, 6, 7, 7), (6, 1, 3, 3), 1, 1, 1, 6),        # 7x7 maps: several planes per block
    ((1, 2, 11, 12), (4, 1, 5, 3), (2, 3), ((2, 0), (1, 2)), (1, 2), 2),  # asymmetric everything
    ((1, 1, 3, 600), (2, 1, 1, 600), 1, (0, 1), 1, 1),  # a long 1-D kernel (wide halo)
], ids=["mult3", "mult17-s2", "s2", "s1-tall", "7x7", "asym", "1d-long"])
def test_depthwise(x_shape, w_shape, stride, padding, dilation, groups, dtype):
    check(x_shape, w_shape, stride, padding, dilation, groups, dtype)


@DTYPES
@pytest.mark.parametrize("x_shape, w_shape, stride", [
    ((2, 256, 33, 33), (512, 1, 3, 3), 1),          # 4 rows a thread (last row partial), multiplier 2
    ((2, 117, 130, 66), (117, 1, 3, 3), 2),         # 4 rows a thread, stride 2, 3 x 2 tiles a plane
    ((2, 256, 32, 32), (256, 1, 3, 3), (1, 2)),     # 2 rows a thread (4 would leave too few threads)
], ids=["vp4-s1-mult2", "vp4-s2", "vp2-s1x2"])
def test_depthwise_3x3_rows_per_thread(x_shape, w_shape, stride, dtype):
    """The 3x3 kernel's register blocks of 4 and 2 output rows, which the launcher takes only
    when they leave at least 2^17 threads (so these problems have many planes)."""
    check(x_shape, w_shape, stride, 1, 1, x_shape[1], dtype)


@DTYPES
def test_depthwise_halo_too_large_takes_general_path(dtype):
    """Dilation 60: the tile's halo (128 x 152 values) exceeds 48 KiB; the general kernel runs."""
    check((1, 2, 130, 131), (2, 1, 3, 3), 1, 60, 60, 2, dtype)


@DTYPES
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((2, 3, 20, 20), (20, 3, 7, 7), 2, 3),          # first layer shape: 3 channels, 7x7 / 2
    ((1, 2, 5, 7), (3, 2, 3, 3), 1, 1),             # Kg = 3 in a block of 4
    ((1, 4, 9, 6), (5, 4, 3, 3), 1, 0),
], ids=["3to20-7x7-s2", "2to3", "4to5"])
def test_small_channels(x_shape, w_shape, stride, padding, dtype):
    check(x_shape, w_shape, stride, padding, 1, 1, dtype)


@DTYPES
@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((1, 3, 256, 512), (16, 3, 3, 3), 1),           # forward: 16 output channels a thread
    ((1, 2, 256, 512), (8, 2, 1, 1), 0),            # forward: 8 a thread
    ((1, 16, 256, 512), (2, 16, 1, 1), 0),          # data gradient: 16 input channels a thread
], ids=["kb16", "kb8", "cb16"])
def test_large_channel_blocks(x_shape, w_shape, padding, dtype):
    check(x_shape, w_shape, 1, padding, 1, 1, dtype)


@DTYPES
@pytest.mark.parametrize("x_shape, w_shape, groups", [
    ((1, 130, 5, 4), (4, 130, 3, 3), 1),            # forward: the weights staged in 2 chunks
    ((1, 4, 5, 4), (130, 4, 3, 3), 1),              # data gradient: 2 chunks of output channels
    ((1, 2, 2, 1105), (2, 2, 1, 1100), 1),          # 1x1100: too large to stage, read from memory
], ids=["fwd-chunks", "data-chunks", "unstaged"])
def test_weight_staging(x_shape, w_shape, groups, dtype):
    check(x_shape, w_shape, 1, 0 if w_shape[2] == 1 else 1, 1, groups, dtype)


@DTYPES
@pytest.mark.parametrize("x_shape, w_shape, groups", [
    ((3, 4, 64, 64), (4, 1, 3, 3), 4),              # split over images and pixels
    ((1, 2, 100, 100), (2, 2, 3, 3), 1),            # split over pixels only
    ((5, 3, 41, 40), (3, 3, 2, 2), 1),              # 2x2 taps, split over images
], ids=["n-and-pq", "pq", "n"])
def test_weight_gradient_split(x_shape, w_shape, groups, dtype):
    assert check(x_shape, w_shape, 1, 1, 1, groups, dtype) > 0  # the split ran (workspace)


@DTYPES
def test_zero_batch_writes_zero_weight_and_bias_gradients(dtype):
    p, _ = _params((0, 4, 6, 6), (6, 2, 3, 3), 1, 1, 1, 2)
    x = np.zeros((0, 4, 6, 6), dtype)
    gy = np.zeros((0, 6, 6, 6), dtype)
    gw = np.full((6, 2, 3, 3), np.nan, dtype)
    gb = np.full((6,), np.nan, dtype)
    E.run("conv2d_backward_weight", "direct", p, {"grad_y": _dev(gy), "x": _dev(x), "grad_w": _dev(gw),
                                                  "grad_bias": _dev(gb)}, None, "cuda")
    assert np.all(gw == 0) and np.all(gb == 0)


@DTYPES
def test_bias_gradient_alone(dtype):
    """grad_bias without grad_w (the weight op with grad_w absent), small planes crossed image to
    image (P*Q = 6 < the block's threads)."""
    rng = np.random.default_rng(3)
    p, _ = _params((37, 3, 4, 5), (5, 3, 3, 3), 1, 0, 1, 1)
    x = rng.standard_normal((37, 3, 4, 5)).astype(dtype)
    gy = rng.standard_normal((37, 5, 2, 3)).astype(dtype)
    gb = np.full((5,), np.nan, dtype)
    E.run("conv2d_backward_weight", "direct", p, {"grad_y": _dev(gy), "x": _dev(x), "grad_bias": _dev(gb)}, None,
          "cuda")
    assert_close(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)), tolerance("direct", dtype, 37 * 6), "grad_b")


def test_results_do_not_depend_on_thread_order():
    """Every output bitwise equal with the block's threads run forward, reversed and shuffled."""
    rng = np.random.default_rng(11)
    cases = [((3, 4, 64, 64), (4, 1, 3, 3), 1, 1, 1, 4), ((2, 6, 13, 13), (9, 2, 3, 3), 2, 1, 1, 3)]
    before = E.get_order()
    try:
        for x_shape, w_shape, stride, padding, dilation, groups in cases:
            p, _ = _params(x_shape, w_shape, stride, padding, dilation, groups)
            args = [rng.standard_normal(s).astype(np.float32)
                    for s in (x_shape, w_shape, (w_shape[0],), (p.N, p.K, p.P, p.Q))]
            results = []
            for order in ("forward", "reverse", "shuffle"):
                E.set_order(order)
                results.append(_run_all(p, np.float32, *args)[:4])
            for other in results[1:]:
                for a, b in zip(results[0], other):
                    np.testing.assert_array_equal(a, b)
    finally:
        E.set_order(before)
