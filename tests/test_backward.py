"""conv2d/conv1d backward: every (device, algorithm) row of the kernel table with both backward
ops x float32/float64 x every ISA against reference.conv2d_backward over cases.py's table of
problems (odd and prime sizes, strides 1-3, dilation, asymmetric pads, every padding string,
groups, depthwise, 1x1, N = 0), with the kernels' outputs pre-filled with NaN
(compare.conv_backward); the reference against torch's autograd; the public API (flip, needs,
1-D, auto, torch tensors); errors.
"""
import numpy as np
import pytest

import fastconv as fc
from cases import CONV_BACKWARD_ROWS, CONV_CASES, DTYPE_IDS, DTYPES, Row, conv_case, row_param
from compare import (assert_close, backward_tolerances, conv_backward, conv_backward_reference, conv_problem,
                     nan_out, on_device, run_conv_backward_kernels, to_host, tolerance)
from conftest import AVAILABLE_ISAS
from fastconv import _C, algorithms
from fastconv import reference as ref
from fastconv.functional import conv_params

# The CPU algorithms with both backward ops, for the tests of one CPU path.
BACKWARD_ALGORITHMS = [r.algorithm for r in CONV_BACKWARD_ROWS if r.device == "cpu"]


# ---- kernels against the reference ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("row", [row_param(r) for r in CONV_BACKWARD_ROWS])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_backward_kernels_match_reference(case, row, dtype, isa, rng):
    conv_backward(row, case, dtype, rng, isa)


EXACT_CASES = [c for c in CONV_CASES if c.x[0] > 0][:12]


@pytest.mark.parametrize("row", [row_param(r) for r in CONV_BACKWARD_ROWS])
@pytest.mark.parametrize("case", EXACT_CASES, ids=[c.id for c in EXACT_CASES])
def test_backward_exact_on_small_integers(case, row, rng):
    """Small integers make every partial sum exact, whatever the order of summation."""
    x = rng.integers(-3, 4, case.x).astype(np.float64)
    w = rng.integers(-3, 4, case.w).astype(np.float64)
    y_shape = fc.conv2d(x, w, stride=case.stride, padding=case.padding, dilation=case.dilation,
                        groups=case.groups).shape
    gy = rng.integers(-3, 4, y_shape).astype(np.float64)
    want = fc.conv2d_backward(gy, x, w, algorithm="reference", **case.kwargs)
    got = fc.conv2d_backward(*(on_device(a, row.device) for a in (gy, x, w)), algorithm=row.algorithm,
                             **case.kwargs)
    for g, r, name in zip(got, want, ("grad_x", "grad_w", "grad_b")):
        np.testing.assert_array_equal(to_host(g), r, err_msg=f"{row} {name}")


@pytest.mark.parametrize("stride, padding, dilation", [(2, 1, 1), (1, 2, 2), ((1, 3), ((0, 2), (1, 0)), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_backward_in_column_chunks(stride, padding, dilation, dtype, isa, rng):
    """A large image goes through im2col's unroll and col2im in several column chunks that
    start and end inside output rows (64*9 col rows: 896 float / 448 double columns a chunk);
    small integers make every sum exact."""
    x = rng.integers(-3, 4, (1, 64, 79, 83)).astype(dtype)
    w = rng.integers(-3, 4, (5, 64, 3, 3)).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    y = fc.conv2d(x, w, algorithm="im2col", **kw)
    assert y.shape[2] * y.shape[3] > 896  # at least two chunks
    np.testing.assert_array_equal(y, fc.conv2d(x, w, algorithm="reference", **kw))
    gy = rng.integers(-3, 4, y.shape).astype(dtype)
    got = fc.conv2d_backward(gy, x, w, algorithm="im2col", **kw)
    want = fc.conv2d_backward(gy, x, w, algorithm="reference", **kw)
    for g, r, name in zip(got, want, ("grad_x", "grad_w", "grad_b")):
        np.testing.assert_array_equal(g, np.asarray(r, dtype), err_msg=name)


def test_weight_gradient_is_deterministic(rng):
    """Same inputs, same bits: many small images (per-thread partial sums), a large one
    (threaded GEMMs), two large ones (per-thread partial sums of a small gradient), many groups
    (one group per thread)."""
    for xs, ws, groups in [((16, 8, 6, 6), (8, 8, 3, 3), 1), ((1, 16, 40, 40), (16, 16, 3, 3), 1),
                           ((2, 16, 40, 40), (16, 16, 3, 3), 1), ((8, 32, 9, 9), (32, 4, 3, 3), 8)]:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        gy = rng.standard_normal(fc.conv2d(x, w, padding=1, groups=groups).shape).astype(np.float32)
        for algorithm in BACKWARD_ALGORITHMS:
            first = fc.conv2d_backward(gy, x, w, padding=1, groups=groups, algorithm=algorithm)
            again = fc.conv2d_backward(gy, x, w, padding=1, groups=groups, algorithm=algorithm)
            for a, b in zip(first, again):
                np.testing.assert_array_equal(a, b)


BATCHED_SMALL_IMAGES = [conv_case(*c) for c in [
    ((11, 6, 23, 27), (8, 3, 3, 3), 2, 1, 1, 2),   # 2 batches of 6 + 5 images, groups
    ((9, 5, 11, 13), (7, 5, 3, 3), 1, 1, 1, 1),    # 143 pixels: 8 + 1 -> 5 + 4
    ((6, 16, 5, 5), (12, 16, 1, 1), 1, 0, 1, 1),   # 1x1: grad_x batched, grad_w image by image
    ((4, 5, 17, 19), (6, 5, 3, 3), 1, 1, 1, 1),    # 323 pixels, small gradient: per-thread sums
    ((6, 7, 40, 37), (5, 7, 1, 1), 2, 0, 1, 1),    # 1x1 stride 2: only the strided pixels padded
    ((4, 3, 41, 43), (8, 3, 7, 7), 2, 3, 1, 1),    # a 7x7 stride-2 stem: segments of 21
]]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", BATCHED_SMALL_IMAGES, ids=[c.id for c in BATCHED_SMALL_IMAGES])
def test_backward_of_batched_small_images(case, threads, rng):
    """The threaded GEMMs put several small images into one GEMM (one thread always takes
    that plan); with two threads, images of many pixels whose weight gradient is small go one
    per GEMM into per-thread partial sums instead; uneven batches, groups and strides against
    the reference."""
    params, pads, x, w, gy = conv_problem(case, np.float32, rng)
    want = conv_backward_reference(params, pads, x, w, gy)
    before = fc.get_num_threads()
    fc.set_num_threads(threads)
    try:
        gx = nan_out(x.shape, np.float32)
        gw, gb = nan_out(w.shape, np.float32), nan_out((params.K,), np.float32)
        run_conv_backward_kernels(Row("cpu", "im2col"), params, gy, x, w, gx, gw, gb)
    finally:
        fc.set_num_threads(before)
    tol_x, tol_w = backward_tolerances("im2col", np.float32, params)
    assert_close(gx, want[0], tol_x, "grad_x")
    assert_close(gw, want[1], tol_w, "grad_w")
    assert_close(gb, want[2], tol_w, "grad_b")


# ---- the reference against torch's autograd -----------------------------------------------

TORCH_CASES = [  # (x shape, w shape, stride, padding as ((top, bottom), (left, right)), dilation, groups)
    ((2, 3, 7, 11), (5, 3, 3, 3), 1, ((1, 1), (1, 1)), 1, 1),
    ((1, 4, 13, 10), (6, 2, 5, 4), (3, 2), ((2, 1), (0, 3)), (2, 1), 2),
    ((2, 6, 9, 9), (6, 1, 3, 3), 2, ((1, 1), (1, 1)), 1, 6),
    ((1, 5, 8, 7), (7, 5, 1, 1), 2, ((0, 0), (0, 0)), 1, 1),
]


@pytest.mark.parametrize("case", TORCH_CASES)
def test_reference_matches_torch_autograd(case, rng):
    torch = pytest.importorskip("torch")
    xs, ws, stride, pads, dilation, groups = case
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    (pt, pb), (pl, pr) = pads
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=stride,
                                   dilation=dilation, groups=groups)
    gy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(gy))
    got = ref.conv2d_backward(gy, x, w, stride=fc.functional.as_tuple(stride, 2, "stride"), pads=pads,
                              dilation=fc.functional.as_tuple(dilation, 2, "dilation"), groups=groups)
    for g, t in zip(got, (xt, wt, bt)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---- the public API ------------------------------------------------------------------------

def test_api_flip_needs_and_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=2, padding="same", groups=2)
    gy = rng.standard_normal(fc.conv2d(x, w, **kw).shape)
    # flip=True is conv2d with the flipped weight: its weight gradient is the flipped one
    gx, gw, gb = fc.conv2d_backward(gy, x, w, flip=True, **kw)
    fx, fw, fb = fc.conv2d_backward(gy, x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), **kw)
    np.testing.assert_allclose(gx, fx, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gw, fw[:, :, ::-1, ::-1], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gb, fb, rtol=1e-13, atol=1e-13)
    only = fc.conv2d_backward(gy, x, w, needs=(False, True, False), **kw)
    assert only[0] is None and only[2] is None and only[1].shape == w.shape
    assert fc.conv2d_backward(gy, x, w, needs=(False, False, True), **kw)[:2] == (None, None)
    tx, tw, tb = fc.conv2d_backward(torch.tensor(gy), torch.tensor(x), torch.tensor(w), **kw)
    assert all(isinstance(t, torch.Tensor) for t in (tx, tw, tb))
    np.testing.assert_allclose(tw.numpy(), fc.conv2d_backward(gy, x, w, **kw)[1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n, kernel", [(0, (1, 1)), (2, (1, 1)), (2, (1, 3)), (1, (3, 1))])
def test_flip_with_unit_kernel_axes_gives_torch_tensors(n, kernel, rng):
    """flip=True with a kernel axis of size 1 on torch tensors: the flipped weight gradient is a
    tensor (it was a NumPy view with a negative stride on that axis, which NumPy calls contiguous
    and torch.from_numpy refuses: found by test_fuzz.py with x (0, 1, 1, 1), w (1, 1, 1, 1),
    flip=True, algorithm='direct', torch tensors)."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((n, 2) + (4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2) + kernel).astype(np.float32)
    gy = rng.standard_normal(fc.conv2d(x, w).shape).astype(np.float32)
    for algorithm in ("direct", "im2col", "auto"):
        tx, tw, tb = fc.conv2d_backward(*(torch.from_numpy(a) for a in (gy, x, w)), flip=True, algorithm=algorithm)
        gx, gw, gb = fc.conv2d_backward(gy, x, w, flip=True, algorithm=algorithm)
        assert all(isinstance(t, torch.Tensor) for t in (tx, tw, tb))
        np.testing.assert_array_equal(tw.numpy(), gw)
        np.testing.assert_array_equal(tx.numpy(), gx)


@pytest.mark.parametrize("padding", [0, 2, (1, 3), "valid", "same", "full"])
def test_conv1d_backward_matches_torch(padding, rng):
    torch = pytest.importorskip("torch")
    x, w, b = rng.standard_normal((2, 4, 19)), rng.standard_normal((6, 2, 4)), rng.standard_normal(6)
    kw = dict(stride=2 if padding != "same" else 1, padding=padding, dilation=2, groups=2)
    gy = rng.standard_normal(fc.conv1d(x, w, **kw).shape)
    pads = {"valid": (0, 0), "full": (6, 6)}.get(padding, padding)
    if padding == "same":
        pads = (3, 3)
    elif isinstance(pads, int):
        pads = (pads, pads)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = torch.nn.functional.conv1d(torch.nn.functional.pad(xt, pads), wt, bt, stride=kw["stride"], dilation=2,
                                   groups=2)
    y.backward(torch.tensor(gy))
    for algorithm in ("auto", "direct", "im2col", "reference"):
        got = fc.conv1d_backward(gy, x, w, algorithm=algorithm, **kw)
        for g, t in zip(got, (xt, wt, bt)):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=algorithm)


# ---- grad_x of stride-1 convolutions as a forward convolution ----------------------------

# Stride-1 problems of CASES plus every padding form the identity has to get right: 'same'
# with even kernels (the odd pad at the end), asymmetric pads, dilation 2, groups, pads of
# exactly the dilated span (no transposed pad left), and sizes where auto picks Winograd.
def _has_transposed(case):
    params, pads = case.params()
    return fc.functional._transposed_problem(params, pads) is not None


TRANSPOSED_CASES = [c._replace(flip=False) for c in CONV_CASES if c.x[0] > 0 and _has_transposed(c)] + [
    conv_case(*c) for c in [
    ((2, 3, 9, 10), (4, 3, 2, 2), 1, "same", 1, 1),
    ((1, 4, 11, 12), (5, 4, 4, 4), 1, "same", 2, 1),
    ((2, 5, 10, 9), (3, 5, 3, 3), 1, ((2, 0), (0, 1)), 1, 1),
    ((1, 3, 12, 13), (4, 3, 3, 3), 1, ((4, 1), (0, 3)), 2, 1),
    ((2, 6, 11, 10), (8, 3, 3, 3), 1, ((1, 2), (2, 1)), (2, 1), 2),
    ((4, 16, 12, 12), (40, 16, 3, 3), 1, 1, 1, 1),       # auto: Winograd F(4x4) (>= 32 channels)
    ((4, 64, 13, 11), (64, 32, 3, 3), 1, "same", 1, 2),  # groups, Winograd
    ((5, 17, 9, 10), (35, 17, 3, 3), 1, 0, 1, 1),        # unpadded: transposed pads 2
]]


def _transposed_forward_kernels(params, pads, dtype):
    t = fc.functional._transposed_problem(params, pads)
    assert t is not None, "a stride-1 problem with pads within the span has a transposed one"
    return t, [a for a in algorithms.kernel_names() if not _C.supports(a, t[0], np.dtype(dtype).name)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=[c.id for c in TRANSPOSED_CASES])
def test_grad_input_by_every_forward_kernel(case, dtype, isa, rng):
    """grad_x = conv2d(grad_y, w'), run by each forward kernel that serves the transposed
    problem (Winograd, FFT, direct, im2col), into NaN-filled outputs."""
    params, pads, x, w, gy = conv_problem(case, dtype, rng)
    want_x = conv_backward_reference(params, pads, x, w, gy)[0]
    (t_params, t_pads), kernels = _transposed_forward_kernels(params, pads, dtype)
    assert {"direct", "im2col"} <= set(kernels)
    w_t = fc.functional._transposed_weight(w, params.groups)
    red_x = params.K // params.groups * params.R * params.S
    for algorithm in kernels:
        gx = nan_out(x.shape, dtype)
        fc.functional._run_conv(gy, w_t, None, t_params, t_pads, algorithm, gx)
        assert_close(gx, want_x, tolerance(algorithm, dtype, red_x), f"{algorithm}/{isa} grad_x")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, groups", [((33, 17, 3, 3), 1), ((16, 16, 1, 1), 1), ((7, 5, 2, 5), 1),
                                           ((24, 6, 3, 3), 4), ((34, 3, 1, 1), 2), ((1, 1, 3, 3), 1)])
def test_transpose_rotate_weight_matches_numpy(shape, groups, dtype, rng):
    """_C.transpose_rotate_weight: per group, channels swapped and the kernel rotated 180
    degrees, every element written (NaN-filled output); sizes off the 16 x 16 blocks."""
    k, cg, r, s = shape
    w = rng.standard_normal(shape).astype(dtype)
    want = w.reshape(groups, k // groups, cg, r, s)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    got = nan_out((groups * cg, k // groups, r, s), dtype)
    _C.transpose_rotate_weight(w, got, groups)
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    np.testing.assert_array_equal(fc.functional._transposed_weight(w, groups), want.reshape(got.shape))


def test_transpose_rotate_weight_rejects_bad_arguments():
    w = np.zeros((6, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="divide"):
        _C.transpose_rotate_weight(w, np.zeros((16, 1, 3, 3), np.float32), 4)
    with pytest.raises(ValueError, match="dimension"):
        _C.transpose_rotate_weight(w, np.zeros((6, 4, 3, 3), np.float32), 1)
    with pytest.raises(ValueError, match="dtype"):
        _C.transpose_rotate_weight(w, np.zeros((4, 6, 3, 3), np.float64), 1)
    with pytest.raises(ValueError, match="overlap"):
        _C.transpose_rotate_weight(w, w.reshape(4, 6, 3, 3), 1)


@pytest.mark.parametrize("case", TRANSPOSED_CASES[-3:], ids=[c.id for c in TRANSPOSED_CASES[-3:]])
def test_auto_grad_input_uses_winograd_and_matches(case, rng):
    params, pads, x, w, gy = conv_problem(case, np.float32, rng)
    (t_params, _), _ = _transposed_forward_kernels(params, pads, np.float32)
    chosen = algorithms.choose(t_params, np.float32)
    assert chosen.startswith("winograd")
    want = conv_backward_reference(params, pads, x, w, gy)
    got = fc.conv2d_backward(gy, x, w, stride=case.stride, padding=case.padding, dilation=case.dilation,
                             groups=case.groups)
    tol_x, tol_w = backward_tolerances("im2col", np.float32, params)
    assert_close(got[0], want[0], tolerance(chosen, np.float32, params.K // params.groups * 9), "auto grad_x")
    assert_close(got[1], want[1], tol_w, "auto grad_w")
    assert_close(got[2], want[2], tol_w, "auto grad_b")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_auto_matches_reference(case, dtype, rng):
    """auto end to end on every case: the forward route where it exists, else the backward
    kernels (strides; pads beyond the dilated kernel)."""
    params, pads, x, w, gy = conv_problem(case, dtype, rng)
    want = conv_backward_reference(params, pads, x, w, gy)
    # flip: test_api_flip_needs_and_torch_tensors
    got = fc.conv2d_backward(gy, x, w, stride=case.stride, padding=case.padding, dilation=case.dilation,
                             groups=case.groups)
    algorithm = "winograd:4" if dtype == np.float32 else "im2col"  # the loosest auto may run
    tol_x, tol_w = backward_tolerances(algorithm, dtype, params)
    for g, r, tol, name in zip(got, want, (tol_x, tol_w, tol_w), ("grad_x", "grad_w", "grad_b")):
        assert_close(g, r, tol, f"auto {name}")


def test_no_transposed_problem_for_strides_or_pads_beyond_the_kernel():
    strided, pads = conv_params((1, 3, 9, 9), (4, 3, 3, 3), 2, 1, 1, 1)
    assert fc.functional._transposed_problem(strided, pads) is None
    wide, pads = conv_params((1, 2, 3, 4), (3, 2, 2, 2), 1, 4, 1, 1)  # pad 4 > span 1
    assert fc.functional._transposed_problem(wide, pads) is None
    fits, pads = conv_params((1, 2, 9, 9), (3, 2, 3, 3), 1, 2, 2, 1)  # pad 2 = dilated span 4 - 2
    assert fc.functional._transposed_problem(fits, pads)[1] == ((2, 2), (2, 2))


@pytest.mark.parametrize("where", ["grad_y", "weight"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_auto_grad_input_keeps_the_reference_nonfinite_pattern(where, value, rng):
    """Winograd would spread a NaN/Inf over its tile; auto must give the reference's pattern."""
    case = conv_case((4, 16, 12, 12), (24, 16, 3, 3), 1, 1)
    params, pads, x, w, gy = conv_problem(case, np.float32, rng)
    if where == "grad_y":
        gy[1, 2, 5, 6] = value
    else:
        w[3, 2, 1, 1] = value
    want = conv_backward_reference(params, pads, x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64))[0]
    got = fc.conv2d_backward(gy, x, w, padding=1, needs=(True, False, False))[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert finite.any() and not finite.all()
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4 * np.abs(want[finite]).max())


def test_explicit_algorithms_keep_their_backward_kernels(rng, monkeypatch):
    """Only auto takes the forward route: 'im2col' and 'direct' name the backward kernels."""
    params, pads, x, w, gy = conv_problem(conv_case((4, 16, 12, 12), (24, 16, 3, 3), 1, 1), np.float32, rng)
    taken = []
    real = fc.functional._grad_input_as_forward
    monkeypatch.setattr(fc.functional, "_grad_input_as_forward", lambda *a: taken.append(1) or real(*a))
    for algorithm in ("im2col", "direct", "reference"):
        fc.conv2d_backward(gy, x, w, padding=1, algorithm=algorithm)
    assert not taken
    fc.conv2d_backward(gy, x, w, padding=1)
    assert taken


def test_auto_choice():
    depthwise, _ = conv_params((1, 8, 9, 9), (8, 1, 3, 3), 1, 1, 1, 8)
    dense, _ = conv_params((1, 8, 9, 9), (8, 8, 3, 3), 1, 1, 1, 1)
    assert algorithms.choose_backward(depthwise) == "direct"
    assert algorithms.choose_backward(dense) == "im2col"


def test_empty_batch_gives_zero_weight_gradient():
    x, w = np.zeros((0, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32)
    gy = np.zeros((0, 4, 8, 8), np.float32)
    for algorithm in ("direct", "im2col", "reference"):
        gx, gw, gb = fc.conv2d_backward(gy, x, w, padding=1, algorithm=algorithm)
        assert gx.shape == x.shape and not gw.any() and not gb.any() and gw.shape == w.shape


# ---- errors --------------------------------------------------------------------------------

X = np.zeros((1, 2, 6, 7), np.float32)
W = np.zeros((3, 2, 3, 3), np.float32)
GY = np.zeros((1, 3, 4, 5), np.float32)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: fc.conv2d_backward(GY[:, :2], X, W), ValueError, "grad_y must have the output's shape (1, 3, 4, 5)"),
    (lambda: fc.conv2d_backward(GY.astype(np.float64), X, W), TypeError, "grad_y=float64"),
    (lambda: fc.conv2d_backward(GY.astype(np.int32), X, W), TypeError, "supported dtypes"),
    (lambda: fc.conv2d_backward(GY, X, W, algorithm="winograd"), ValueError, "has no backward pass"),
    (lambda: fc.conv2d_backward(GY, X, W, algorithm="nope"), ValueError, "available: auto, direct, im2col"),
    (lambda: fc.conv2d_backward(GY, X, W, algorithm=3), TypeError, "algorithm must be a string"),
    (lambda: fc.conv2d_backward(GY, X, W, needs=(True, True)), ValueError, "needs must be a triple"),
    (lambda: fc.conv2d_backward(GY, X, W, needs=(1, 1, 1)), TypeError, "needs must hold bools"),
    (lambda: fc.conv2d_backward(GY, X, W, flip=1), TypeError, "flip must be a bool"),
    (lambda: fc.conv2d_backward(GY, X, W[:, :1], groups=2), ValueError, "output channels K=3"),
    (lambda: fc.conv1d_backward(GY, X, W), ValueError, "input must be 3-D"),
])
def test_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_cpp_checks_again():
    params, _ = conv_params(X.shape, W.shape, 1, 0, 1, 1)
    gx = np.empty(X.shape, np.float32)
    with pytest.raises(ValueError, match="grad_y dimension 1 is 2"):
        _C.run("conv2d_backward_data", "im2col", params, {"grad_y": GY[:, :2].copy(), "w": W, "grad_x": gx})
    with pytest.raises(ValueError, match="grad_x must be writable"):
        ro = np.empty(X.shape, np.float32)
        ro.flags.writeable = False
        _C.run("conv2d_backward_data", "direct", params, {"grad_y": GY, "w": W, "grad_x": ro})
    with pytest.raises(ValueError, match="needs grad_w, grad_bias or both"):
        _C.run("conv2d_backward_weight", "direct", params, {"grad_y": GY, "x": X})
    with pytest.raises(ValueError, match="no cpu kernel 'winograd:4' for conv2d_backward_data"):
        _C.run("conv2d_backward_data", "winograd:4", params, {"grad_y": GY, "w": W, "grad_x": gx})
    with pytest.raises(ValueError, match="unknown op 'conv3d'"):
        _C.workspace_bytes("im2col", params, "float32", False, "conv3d")


def test_kernel_table_lists_backward_ops():
    ops = set(_C.build_info()["ops"])
    assert {"conv2d_backward_data", "conv2d_backward_weight", "max_pool2d_backward", "avg_pool2d_backward",
            "lp_pool2d_backward"} <= ops
    rows = {(k["algorithm"], k["op"]) for k in _C.kernels()}
    for a in ("direct", "im2col"):
        assert (a, "conv2d_backward_data") in rows and (a, "conv2d_backward_weight") in rows
    assert set(BACKWARD_ALGORITHMS) == {"direct", "im2col"} and len(AVAILABLE_ISAS) >= 1
