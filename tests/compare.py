"""The one forward+backward comparison of the op tests: make a case's inputs, run fastconv on a
kernel-table row (device, algorithm) into outputs pre-filled with NaN (an element a kernel
forgets to write fails), run fastconv.reference (float64 accumulation), and compare at the
row's algorithm's tolerance.

    conv_forward(row, case, dtype, rng)      conv2d by the row's algorithm, out= NaN-filled
    conv_backward(row, case, dtype, rng)     the row's data and weight gradient kernels
    pool_forward(row, case, dtype)           fastconv.<op>, out= (and indices) NaN/-1-filled
    pool_backward(row, case, dtype)          fastconv.<op>_backward

Tolerances are relative to max |reference|. Convolution's grow with the reduction length
(random-walk growth of rounding error); pooling's are per op family (max is exact).
"""
import functools

import numpy as np

import emulated

import fastconv
from cases import POOL_CASES, pool_input
from fastconv._arrays import backend_for
from fastconv import reference as ref

# ---- tolerances ----------------------------------------------------------------------------

# Error allowed relative to max |y|, per algorithm and dtype, for a reduction of length 1;
# scaled by sqrt(reduction length) (random-walk growth of rounding error).
CONV_TOLERANCE = {
    "direct": {np.float32: 2e-6, np.float64: 1e-14},
    "im2col": {np.float32: 2e-6, np.float64: 1e-14},
    # Winograd (float32 only): the transforms' rounding grows with the tile (see
    # test_winograd.py for the contract on max error / max |y| at up to 512 channels).
    "winograd:2": {np.float32: 4e-6},
    "winograd:4": {np.float32: 2e-5},
    "winograd:6": {np.float32: 4e-5},
    # FFT (float32 only): rounding of the transforms and of the products of every bin, spread
    # over the whole tile (see test_fft.py for the contract at up to 512 channels).
    "fft:8": {np.float32: 4e-6},
    "fft:16": {np.float32: 4e-6},
}


def tolerance(algorithm, dtype, reduction):
    """Max error / max |y| allowed to ``algorithm`` for sums of ``reduction`` products."""
    return CONV_TOLERANCE[algorithm][np.dtype(dtype).type] * max(1.0, np.sqrt(reduction)) * 4


# Pooling, per algorithm, op family and dtype. Forward: (rtol, atol); max is exact, sums are
# reordered and float32 accumulates in float32, Lp adds a pow and a root.
POOL_TOLERANCE = {
    "direct": {
        "max": {np.float32: (0, 0), np.float64: (0, 0)},
        "avg": {np.float32: (2e-6, 2e-6), np.float64: (1e-13, 1e-13)},
        "lp": {np.float32: (2e-5, 2e-5), np.float64: (1e-12, 1e-12)},
    },
}
# Backward: rtol, and atol relative to max |grad|. Max adds the gradients of windows sharing a
# max in output order, as the reference and torch, but the reference rounds a float64 sum once
# (float32: one rounding per add); avg and Lp sums are reordered, Lp adds pow.
POOL_BACKWARD_TOLERANCE = {
    "direct": {
        "max": {np.float32: 1e-6, np.float64: 0.0},
        "avg": {np.float32: 4e-6, np.float64: 1e-13},
        "lp": {np.float32: 4e-5, np.float64: 1e-12},
    },
}


# ---- arrays --------------------------------------------------------------------------------

def on_device(a, device):
    """NumPy array ``a`` as the array type fastconv runs on ``device``: itself on the CPU; on a
    CUDA device a torch tensor, or an emulated array when the CUDA rows run on the emulator."""
    if a is None or device == "cpu":
        return a
    if emulated.emulating():
        return emulated.EmulatedArray(np.ascontiguousarray(a).copy())
    import torch
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def to_host(a):
    """A NumPy array of fastconv's result, whatever device it lives on."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if isinstance(a, emulated.EmulatedArray):
        return a.get()
    return a.detach().cpu().numpy()


def nan_out(shape, dtype, device="cpu"):
    """An output array full of NaN, so an element a kernel forgets to write shows up."""
    return on_device(np.full(shape, np.nan, dtype), device)


def assert_close(got, want, tol, what=""):
    """Every element finite and within ``tol`` x max |want| of ``want``."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values in output"
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:.1e} x max|y| {scale:.3e}"


# ---- convolution ---------------------------------------------------------------------------

def conv_forward(row, case, dtype, rng, what=""):
    """conv2d of ``case`` by the row's algorithm on its device, into a NaN-filled out=,
    against the reference at the algorithm's tolerance."""
    x = rng.standard_normal(case.x).astype(dtype)
    w = rng.standard_normal(case.w).astype(dtype)
    b = rng.standard_normal(case.w[0]).astype(dtype)
    want = fastconv.conv2d(x, w, b, algorithm="reference", **case.kwargs)
    out = nan_out(want.shape, dtype, row.device)
    got = fastconv.conv2d(on_device(x, row.device), on_device(w, row.device), on_device(b, row.device),
                          algorithm=row.algorithm, out=out, **case.kwargs)
    assert got is out
    assert_close(to_host(got), want, tolerance(row.algorithm, dtype, case.reduction),
                 f"{row.device}/{row.algorithm} {what}")


def conv_problem(case, dtype, rng):
    """(params, pads, x, w, grad_y) of a backward problem, random normal data."""
    params, pads = case.params()
    x = rng.standard_normal(case.x).astype(dtype)
    w = rng.standard_normal(case.w).astype(dtype)
    gy = rng.standard_normal((params.N, params.K, params.P, params.Q)).astype(dtype)
    return params, pads, x, w, gy


def conv_backward_reference(params, pads, x, w, gy):
    """(grad_x, grad_w, grad_b) by fastconv.reference."""
    return ref.conv2d_backward(gy, x, w, stride=(params.stride_h, params.stride_w), pads=pads,
                               dilation=(params.dil_h, params.dil_w), groups=params.groups)


def backward_tolerances(algorithm, dtype, params):
    """(grad_x's, grad_w's and grad_b's) tolerances: grad_x sums about K/g*R*S products,
    grad_w and grad_b N*P*Q."""
    red_x = params.K // params.groups * params.R * params.S
    red_w = max(params.N * params.P * params.Q, 1)
    return tolerance(algorithm, dtype, red_x), tolerance(algorithm, dtype, red_w)


def run_conv_backward_kernels(row, params, gy, x, w, gx, gw, gb):
    """The row's data gradient (into gx) and weight and bias gradients (into gw, gb) kernels on
    the row's device, each with the workspace it asks for (NumPy arrays in and out)."""
    dev = [on_device(a, row.device) for a in (gy, x, w, gx, gw, gb)]
    backend, _ = backend_for([("grad_y", dev[0])])
    d_gy, d_x, d_w, d_gx, d_gw, d_gb = (None if a is None else backend.view(a) for a in dev)

    def workspace(op):
        return backend.workspace(backend.workspace_bytes(row.algorithm, params, gy.dtype, False, op))

    backend.run("conv2d_backward_data", row.algorithm, params, {"grad_y": d_gy, "w": d_w, "grad_x": d_gx},
                workspace("conv2d_backward_data"))
    backend.run("conv2d_backward_weight", row.algorithm, params,
                {"grad_y": d_gy, "x": d_x, "grad_w": d_gw, "grad_bias": d_gb}, workspace("conv2d_backward_weight"))
    for host, result in ((gx, dev[3]), (gw, dev[4]), (gb, dev[5])):
        if host is not None and result is not host:
            host[...] = to_host(result)


def conv_backward(row, case, dtype, rng, what=""):
    """The row's backward kernels on ``case`` into NaN-filled gradients, against the
    reference's (grad_x, grad_w, grad_b)."""
    params, pads, x, w, gy = conv_problem(case, dtype, rng)
    want_x, want_w, want_b = conv_backward_reference(params, pads, x, w, gy)
    gx, gw, gb = nan_out(x.shape, dtype), nan_out(w.shape, dtype), nan_out((params.K,), dtype)
    run_conv_backward_kernels(row, params, gy, x, w, gx, gw, gb)
    tol_x, tol_w = backward_tolerances(row.algorithm, dtype, params)
    what = f"{row.device}/{row.algorithm}/{np.dtype(dtype).name} {what}"
    assert_close(gx, want_x, tol_x, what + " grad_x")
    assert_close(gw, want_w, tol_w, what + " grad_w")
    assert_close(gb, want_b, tol_w, what + " grad_b")


# ---- pooling -------------------------------------------------------------------------------

def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _as_2d(case, x):
    """(x as 4-D, a lift of the case's window arguments to 2-D pairs): 1-D ops run as 2-D ones
    with H = 1."""
    one_d = case.op.endswith("1d")
    if not one_d:
        return x, lambda v, fill: _pair(v)
    return x[:, :, None, :], lambda v, fill: (fill, v[0] if isinstance(v, (tuple, list)) else v)


def _adaptive_size(case, x):
    o = case.kw["output_size"]
    if case.op.endswith("1d"):
        return (1, o)
    return tuple(x.shape[2 + i] if v is None else v for i, v in enumerate(_pair(o)))


def pool_reference_forward(case, x):
    """(y, indices or None) of the NumPy oracle on the case."""
    kw = case.kw
    x4, lift = _as_2d(case, x)
    if case.op.startswith("adaptive"):
        o2 = _adaptive_size(case, x)
        res = ref.adaptive_max_pool2d(x4, o2) if case.family == "max" else ref.adaptive_avg_pool2d(x4, o2)
    else:
        k = lift(kw["kernel_size"], 1)
        s = lift(kw.get("stride") or kw["kernel_size"], 1)
        if case.family == "max":
            res = ref.max_pool2d(x4, k, s, lift(kw.get("padding", 0), 0), lift(kw.get("dilation", 1), 1),
                                 kw.get("ceil_mode", False))
        elif case.family == "avg":
            res = ref.avg_pool2d(x4, k, s, lift(kw.get("padding", 0), 0), kw.get("ceil_mode", False),
                                 kw.get("count_include_pad", True), kw.get("divisor_override"))
        else:
            res = ref.lp_pool2d(x4, kw["norm_type"], k, s, kw.get("ceil_mode", False))
    if not isinstance(res, tuple):
        res = (res, None)
    if case.op.endswith("1d"):
        res = tuple(None if r is None else r[:, :, 0, :] for r in res)
    return res


def pool_reference_backward(case, x, gy):
    """grad_x of the NumPy oracle on the case."""
    kw = case.kw
    x4, lift = _as_2d(case, x)
    gy4 = gy[:, :, None, :] if case.op.endswith("1d") else gy
    if case.op.startswith("adaptive"):
        o2 = _adaptive_size(case, x)
        if case.family == "max":
            gx = ref.max_pool2d_backward(gy4, x4.shape, ref.adaptive_max_pool2d(x4, o2)[1])
        else:
            gx = ref.adaptive_avg_pool2d_backward(gy4, x4, o2)
    else:
        k = lift(kw["kernel_size"], 1)
        s = lift(kw.get("stride") or kw["kernel_size"], 1)
        ceil = kw.get("ceil_mode", False)
        if case.family == "max":
            pads, dil = lift(kw.get("padding", 0), 0), lift(kw.get("dilation", 1), 1)
            _, idx = ref.max_pool2d(x4, k, s, pads, dil, ceil)
            empty = ref.max_pool2d_empty_windows(*x4.shape[2:], k, s, pads, dil, ceil)
            gx = ref.max_pool2d_backward(gy4, x4.shape, idx, empty)
        elif case.family == "avg":
            gx = ref.avg_pool2d_backward(gy4, x4, k, s, lift(kw.get("padding", 0), 0), ceil,
                                         kw.get("count_include_pad", True), kw.get("divisor_override"))
        else:
            gx = ref.lp_pool2d_backward(gy4, x4, kw["norm_type"], k, s, ceil)
    return gx[:, :, 0, :] if case.op.endswith("1d") else gx


# The reference is slow; each table case's result is computed once per dtype.
_POOL_CASE_BY_ID = {c.id: c for c in POOL_CASES}


@functools.lru_cache(maxsize=None)
def _pool_reference_of_table_case(case_id, dtype):
    case = _POOL_CASE_BY_ID[case_id]
    x = pool_input(case, dtype)
    y = pool_reference_forward(case, x)
    gy = np.random.default_rng(len(POOL_CASES) + y[0].size).standard_normal(y[0].shape).astype(dtype)
    return x, y, gy


def pool_reference(case, dtype):
    """(x, (y, indices), grad_y) of a case: the table's deterministic input, the oracle's
    forward, and a random grad_y of the output's shape (cached for the table's cases)."""
    if _POOL_CASE_BY_ID.get(case.id) == case:
        return _pool_reference_of_table_case(case.id, dtype)
    x = pool_input(case, dtype)
    y = pool_reference_forward(case, x)
    gy = np.random.default_rng(len(POOL_CASES) + y[0].size).standard_normal(y[0].shape).astype(dtype)
    return x, y, gy


@functools.lru_cache(maxsize=None)
def _pool_backward_reference_of_table_case(case_id, dtype):
    x, _, gy = _pool_reference_of_table_case(case_id, dtype)
    return pool_reference_backward(_POOL_CASE_BY_ID[case_id], x, gy)


def pool_backward_reference(case, dtype):
    """The oracle's grad_x for pool_reference's x and grad_y (cached for the table's cases)."""
    if _POOL_CASE_BY_ID.get(case.id) == case:
        return _pool_backward_reference_of_table_case(case.id, dtype)
    x, _, gy = pool_reference(case, dtype)
    return pool_reference_backward(case, x, gy)


def run_pool(case, x, out_shape=None, device="cpu"):
    """fastconv.<op> on the case: (y, indices or None). With ``out_shape``, into out= arrays
    pre-filled with NaN (indices with -1), which must be what it returns."""
    kw = dict(case.kw)
    fn = getattr(fastconv, case.op)
    with_idx = case.family == "max"
    if with_idx:
        kw["return_indices"] = True
    x = on_device(x, device)
    if out_shape is None:
        r = fn(x, **kw)
        return tuple(to_host(a) for a in r) if with_idx else (to_host(r), None)
    y = nan_out(out_shape, x.dtype, device)
    if with_idx:
        idx = on_device(np.full(out_shape, -1, np.int64), device)
        r = fn(x, **kw, out=(y, idx))
        assert r[0] is y and r[1] is idx
        return to_host(y), to_host(idx)
    r = fn(x, **kw, out=y)
    assert r is y
    return to_host(y), None


def run_pool_backward(case, x, gy, device="cpu", **extra):
    """fastconv.<op>_backward on the case."""
    fn = getattr(fastconv, case.op + "_backward")
    return to_host(fn(on_device(gy, device), on_device(x, device), **case.kw, **extra))


def assert_pool_matches(case, got, want, dtype, what="", algorithm="direct"):
    """(y, indices) against (y, indices) at the algorithm's forward tolerance; indices exactly."""
    (y, i), (ry, ri) = got, want
    assert y.shape == ry.shape and y.dtype == ry.dtype, (what, y.shape, ry.shape, y.dtype, ry.dtype)
    rtol, atol = POOL_TOLERANCE[algorithm][case.family][dtype]
    if rtol == 0 and atol == 0:
        np.testing.assert_array_equal(y, ry, err_msg=what)
    else:
        np.testing.assert_allclose(y, ry, rtol=rtol, atol=atol, err_msg=what)
    if ri is not None:
        np.testing.assert_array_equal(i, ri, err_msg=what + " (indices)")


def assert_grad_matches(case, got, want, dtype, what="", algorithm="direct"):
    """grad_x against grad_x at the algorithm's backward tolerance (exact where it is 0)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype)
    tol = POOL_BACKWARD_TOLERANCE[algorithm][case.family][dtype]
    finite = want[np.isfinite(want)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    if tol == 0:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def pool_forward(row, case, dtype, what=""):
    """fastconv.<op> of ``case`` on the row's device into NaN/-1-filled outputs, against the
    reference: values at the row's tolerance, indices exactly."""
    x, want, _ = pool_reference(case, dtype)
    got = run_pool(case, x, out_shape=want[0].shape, device=row.device)
    assert_pool_matches(case, got, want, dtype, f"{case.id} {row.device}/{row.algorithm} {what}", row.algorithm)


def pool_backward(row, case, dtype, what=""):
    """fastconv.<op>_backward of ``case`` on the row's device against the reference's grad_x."""
    x, _, gy = pool_reference(case, dtype)
    want = pool_backward_reference(case, dtype)
    got = run_pool_backward(case, x, gy, row.device)
    assert_grad_matches(case, got, want, dtype, f"{case.id} {row.device}/{row.algorithm} {what}", row.algorithm)
