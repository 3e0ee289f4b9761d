"""Pooling with the signatures of torch.nn.functional: max, average, Lp and adaptive
pooling in 2-D (N, C, H, W) and 1-D (N, C, L), forward and backward, on the CPU.

Every call is validated here with torch's rules (kernel/stride/dilation positive,
padding at most half the kernel, output size >= 1, torch's ceil_mode rule) and raises
``ValueError``/``TypeError`` naming the argument before C++ runs; the C++ checks again.
1-D problems run as 2-D ones with H = 1. Unbatched inputs ((C, H, W), or (C, L) in 1-D)
are accepted as torch does. NumPy in -> NumPy out; CPU torch tensors in -> torch tensors
out (sharing the NumPy result's memory). float32 and float64. Indices (max pooling) are
int64 flat indices into each H*W (or L) plane, as torch's.

Backward: ``<op>_backward(grad_y, x, <the forward's arguments>)`` returns grad_x, the
gradient with respect to x given grad_y (the gradient of the forward's output, which must
have its shape and x's dtype), as torch's autograd computes it. The arguments go through
the forward's own normalisation. Max pooling takes the forward's ``indices`` when the
caller has them, else recomputes them; Lp pooling recomputes the forward's output.

Every forward function takes a keyword-only ``out=``: a C-contiguous NumPy array of the output's
shape and dtype to write into; with ``return_indices=True`` it may be a pair
``(values, indices)``.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from . import _C
from ._args import (adaptive_size, as_bool, as_int, as_tuple, check_element_count, pool_output_size, pool_window,
                    positive)
from ._arrays import backend_for

__all__ = [
    "max_pool2d", "avg_pool2d", "lp_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "max_pool1d", "avg_pool1d", "lp_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
    "max_pool2d_backward", "avg_pool2d_backward", "lp_pool2d_backward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_backward", "max_pool1d_backward", "avg_pool1d_backward", "lp_pool1d_backward",
    "adaptive_avg_pool1d_backward", "adaptive_max_pool1d_backward",
    "pool_output_size", "plan_pool", "PoolPlan",
    "weighted_avg_pool2d", "weighted_avg_pool1d", "weighted_avg_pool2d_backward", "weighted_avg_pool1d_backward",
    "pool_window_weights",
]


# ---- shapes ------------------------------------------------------------------------------

def _input(x, nd, op):
    """(x as a contiguous (N, C, H, W) array, caller, user rank) for an nd-D pooling op;
    caller is (backend, kind) of the caller's array (``_arrays``)."""
    backend, kind = backend_for([("input", x)])
    arr = backend.array(x, "input")
    rank = arr.ndim
    if rank == nd + 1:  # unbatched, as torch: (C, H, W) or (C, L)
        arr = arr.reshape((1,) + tuple(arr.shape))
    elif rank != nd + 2:
        want = "(N, C, H, W) or (C, H, W)" if nd == 2 else "(N, C, L) or (C, L)"
        raise ValueError(f"{op}: input must be {nd + 2}-D or {nd + 1}-D {want}, got shape {tuple(arr.shape)}")
    if nd == 1:
        arr = arr.reshape(tuple(arr.shape[:2]) + (1,) + tuple(arr.shape[2:]))
    if any(d == 0 for d in arr.shape[1:]):
        raise ValueError(f"{op}: input of shape {tuple(x.shape)} has an empty channel or spatial dimension "
                         "(only the batch dimension may be 0)")
    check_element_count(arr.shape, "input")
    return arr, (backend, kind), rank


def _user_shape(n, c, out, rank, nd):
    """The output shape the caller sees: (N, C, *out), without N for an unbatched input."""
    shape = (n, c) + tuple(out)
    return shape[1:] if rank == nd + 1 else shape


def _params(arr, out2, k2=(1, 1), s2=(1, 1), p2=(0, 0), d2=(1, 1), adaptive=False):
    n, c, h, w = arr.shape
    # The kernels count taps as int64 (Lp's kernel area, the work per call): like conv's
    # unrolled input, the taps of all windows must not overflow it.
    check_element_count((n, c) + tuple(out2) + tuple(k2), "pooling windows (N, C, P, Q, kH, kW)")
    prm = _C.PoolParams()
    prm.N, prm.C, prm.H, prm.W = n, c, h, w
    prm.P, prm.Q = out2
    prm.R, prm.S = k2
    prm.stride_h, prm.stride_w = s2
    prm.pad_h, prm.pad_w = p2
    prm.dil_h, prm.dil_w = d2
    prm.adaptive = adaptive
    return prm


def _lift(nd, t, fill):
    """A per-axis tuple of a 1-D problem as its 2-D (H = 1) counterpart."""
    return (fill,) + tuple(t) if nd == 1 else tuple(t)


def _outputs(backend, out, shape4, user_shape, dtype, with_indices):
    """Allocate (or check the caller's) output and indices; return 4-D views and user views."""
    y_out, i_out = out, None
    if with_indices and isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"out must be an array or a pair (values, indices), got {len(out)} items")
        y_out, i_out = out
    y = backend.check_out(y_out, user_shape, dtype) if y_out is not None else backend.empty(user_shape, dtype)
    idx = None
    if with_indices:
        idx = (backend.check_out(i_out, user_shape, np.dtype(np.int64), "out[1] (indices)") if i_out is not None
               else backend.empty(user_shape, np.int64))
    return y, y.reshape(shape4), idx, (idx.reshape(shape4) if idx is not None else None)


def _run(caller, op, prm, **tensors):
    """One pooling op of the kernel table on the caller's device (tensors: slot -> array)."""
    caller[0].run(op, "direct", prm, tensors)


def _wrap(caller, a):
    backend, kind = caller
    return backend.wrap(a, kind)


def _finish(caller, y, idx, return_indices):
    if return_indices:
        return _wrap(caller, y), _wrap(caller, idx)
    return _wrap(caller, y)


# ---- max ---------------------------------------------------------------------------------

def _max_args(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode):
    """(x as (N, C, H, W), caller, user rank, PoolParams, output size) of a max pooling call."""
    arr, caller, rank = _input(x, nd, op)
    ceil_mode = as_bool(ceil_mode, "ceil_mode", op)
    k, s, p, d, o = pool_window(op, nd, arr.shape[4 - nd:], kernel_size, stride, padding, dilation, ceil_mode)
    prm = _params(arr, _lift(nd, o, 1), _lift(nd, k, 1), _lift(nd, s, 1), _lift(nd, p, 0), _lift(nd, d, 1))
    return arr, caller, rank, prm, o


def _max_pool(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out):
    arr, caller, rank, prm, o = _max_args(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = as_bool(return_indices, "return_indices", op)
    n, c = arr.shape[:2]
    y, y4, idx, i4 = _outputs(caller[0], out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype,
                              return_indices)
    _run(caller, "max_pool2d_forward", prm, x=arr, y=y4, indices=i4)
    return _finish(caller, y, idx, return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """2-D max pooling, as torch.nn.functional.max_pool2d. x is (N, C, H, W) or (C, H, W).

    NaN propagates (the index is that of the window's last NaN, as torch's CPU kernel).
    With ``return_indices`` returns (values, int64 indices into each H*W plane).
    """
    return _max_pool("max_pool2d", 2, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, out)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """1-D max pooling, as torch.nn.functional.max_pool1d. x is (N, C, L) or (C, L)."""
    return _max_pool("max_pool1d", 1, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, out)


def max_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        indices=None):
    """grad_x of max_pool2d: grad_y added at each window's max (the forward's ``indices`` if
    given, else recomputed: the first max in row-major order, the last NaN, as torch)."""
    args = _max_args("max_pool2d_backward", 2, x, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_backward("max_pool2d_backward", 2, grad_y, args, indices)


def max_pool1d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        indices=None):
    """grad_x of max_pool1d (see max_pool2d_backward)."""
    args = _max_args("max_pool1d_backward", 1, x, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_backward("max_pool1d_backward", 1, grad_y, args, indices)


# ---- average -----------------------------------------------------------------------------

def _avg_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """(x as (N, C, H, W), caller, user rank, PoolParams, output size) of an average pooling call."""
    arr, caller, rank = _input(x, nd, op)
    ceil_mode = as_bool(ceil_mode, "ceil_mode", op)
    count_include_pad = as_bool(count_include_pad, "count_include_pad", op)
    k, s, p, _, o = pool_window(op, nd, arr.shape[4 - nd:], kernel_size, stride, padding, 1, ceil_mode)
    prm = _params(arr, _lift(nd, o, 1), _lift(nd, k, 1), _lift(nd, s, 1), _lift(nd, p, 0))
    prm.count_include_pad = count_include_pad
    if divisor_override is not None:
        dv = as_int(divisor_override, "divisor_override")
        if dv == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got {divisor_override!r}")
        prm.divisor_override = dv
    return arr, caller, rank, prm, o


def _avg_pool(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, out):
    arr, caller, rank, prm, o = _avg_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override)
    n, c = arr.shape[:2]
    y, y4, _, _ = _outputs(caller[0], out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype, False)
    _run(caller, "avg_pool2d_forward", prm, x=arr, y=y4)
    return _wrap(caller, y)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """2-D average pooling, as torch.nn.functional.avg_pool2d. x is (N, C, H, W) or (C, H, W).

    Divisor: ``divisor_override`` if given, else the window clipped to the padded input
    (``count_include_pad``), else the number of elements inside the input.
    """
    return _avg_pool("avg_pool2d", 2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, out)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, out=None):
    """1-D average pooling, as torch.nn.functional.avg_pool1d. x is (N, C, L) or (C, L)."""
    return _avg_pool("avg_pool1d", 1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     None, out)


def avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None):
    """grad_x of avg_pool2d: each window's grad_y / divisor added to its taps inside the input."""
    args = _avg_args("avg_pool2d_backward", 2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)
    return _avg_backward("avg_pool2d_backward", 2, grad_y, args)


def avg_pool1d_backward(grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """grad_x of avg_pool1d (see avg_pool2d_backward)."""
    args = _avg_args("avg_pool1d_backward", 1, x, kernel_size, stride, padding, ceil_mode, count_include_pad, None)
    return _avg_backward("avg_pool1d_backward", 1, grad_y, args)


# ---- Lp ----------------------------------------------------------------------------------

def _lp_args(op, nd, x, norm_type, kernel_size, stride, ceil_mode):
    """(x as (N, C, H, W), caller, user rank, PoolParams, output size) of an Lp pooling call."""
    arr, caller, rank = _input(x, nd, op)
    if isinstance(norm_type, (bool, np.bool_)) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"{op}: norm_type must be a real number, got {norm_type!r}")
    norm_type = float(norm_type)
    if norm_type == 0 or math.isnan(norm_type):
        raise ValueError(f"{op}: norm_type must be non-zero and not NaN, got {norm_type!r}")
    ceil_mode = as_bool(ceil_mode, "ceil_mode", op)
    k, s, _, _, o = pool_window(op, nd, arr.shape[4 - nd:], kernel_size, stride, 0, 1, ceil_mode)
    prm = _params(arr, _lift(nd, o, 1), _lift(nd, k, 1), _lift(nd, s, 1))
    prm.norm_type = norm_type
    return arr, caller, rank, prm, o


def _lp_pool(op, nd, x, norm_type, kernel_size, stride, ceil_mode, out):
    arr, caller, rank, prm, o = _lp_args(op, nd, x, norm_type, kernel_size, stride, ceil_mode)
    n, c = arr.shape[:2]
    y, y4, _, _ = _outputs(caller[0], out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype, False)
    _run(caller, "lp_pool2d_forward", prm, x=arr, y=y4)
    return _wrap(caller, y)


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False, *, out=None):
    """2-D power-average pooling, as torch.nn.functional.lp_pool2d:
    (sum over the window of x^p)^(1/p), computed as torch does, (avg_pool2d(x^p) * kH*kW)^(1/p)
    (with ceil_mode a clipped window is rescaled to the full kernel area, as in torch).
    norm_type = inf gives the max of |x|, -inf the min of |x|."""
    return _lp_pool("lp_pool2d", 2, x, norm_type, kernel_size, stride, ceil_mode, out)


def lp_pool1d(x, norm_type, kernel_size, stride=None, ceil_mode=False, *, out=None):
    """1-D power-average pooling, as torch.nn.functional.lp_pool1d. x is (N, C, L) or (C, L)."""
    return _lp_pool("lp_pool1d", 1, x, norm_type, kernel_size, stride, ceil_mode, out)


def lp_pool2d_backward(grad_y, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """grad_x of lp_pool2d as torch's autograd gives it: x^(p-1) * y^(1-p) * grad_y summed over
    the windows (times kh*kw / divisor, which is 1 unless ceil_mode clips a window); 0 from
    a window whose sum of x^p is 0; p = +-inf: grad_y * sign(x) at the max (min) of |x|."""
    args = _lp_args("lp_pool2d_backward", 2, x, norm_type, kernel_size, stride, ceil_mode)
    return _lp_backward("lp_pool2d_backward", 2, grad_y, args)


def lp_pool1d_backward(grad_y, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """grad_x of lp_pool1d (see lp_pool2d_backward)."""
    args = _lp_args("lp_pool1d_backward", 1, x, norm_type, kernel_size, stride, ceil_mode)
    return _lp_backward("lp_pool1d_backward", 1, grad_y, args)


# ---- distance-weighted average -------------------------------------------------------------
# The window reaches the kernel as a small host array in the slot "w": its two factors
# (R + S values, rows then columns) when it is an outer product (every Gaussian; a user window
# checked to be one), else the (R, S) window itself.

def _sigmas(op, nd, sigma):
    """sigma as nd positive reals (inf allowed): a number, or one per axis."""
    values = tuple(sigma) if isinstance(sigma, (tuple, list)) else (sigma,) * nd
    if len(values) != nd:
        raise ValueError(f"{op}: sigma must be a number or {nd} numbers, got {sigma!r}")
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{op}: sigma must be a positive real number (or inf), got {sigma!r}")
        if not float(v) > 0:  # also NaN
            raise ValueError(f"{op}: sigma must be > 0 (inf: a uniform window), got {sigma!r}")
    return tuple(float(v) for v in values)


def _gaussian(k, sigma):
    """exp(-d^2 / (2 sigma^2)) of each tap's distance d from the window's centre, (k-1)/2; ones
    for sigma = inf."""
    d = np.arange(k, dtype=np.float64) - (k - 1) / 2
    return np.ones(k) if math.isinf(sigma) else np.exp(-d * d / (2 * sigma * sigma))


def _user_window(op, nd, k, weight, normalize):
    """The caller's window as a float64 (R, S) array (a 1-D window as (1, S)), checked."""
    if hasattr(weight, "detach"):  # a torch tensor (any device): a small window, read on the host
        weight = weight.detach().cpu().numpy()
    w = np.asarray(weight)
    if w.dtype.kind not in "iuf":
        raise TypeError(f"{op}: weight must be a real array (float or int), got dtype {w.dtype}")
    if w.shape != tuple(k):
        raise ValueError(f"{op}: weight must have the kernel's shape {tuple(k)}, got {w.shape}")
    w = w.astype(np.float64).reshape((1,) * (2 - nd) + w.shape)
    if not np.isfinite(w).all():
        raise ValueError(f"{op}: weight must be finite")
    if normalize and ((w < 0).any() or not w.sum() > 0):
        raise ValueError(f"{op}: with normalize=True weight must be non-negative with a positive sum "
                         "(the output is a weighted mean)")
    return w


def _factors(w, dtype, normalize):
    """(wv, wh) with outer(wv, wh) == w within a few rounding errors of dtype, or None. With
    normalize the factors are scaled so that the largest tap is 1 (a uniform window: ones, so
    it gives avg_pool2d's result exactly; normalising makes the result independent of the scale)."""
    i, j = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    pivot = w[i, j]
    wv, wh = w[:, j] / (pivot if normalize else 1.0), w[i, :] / pivot
    if not np.all(np.abs(np.outer(wv, wh) * (pivot if normalize else 1.0) - w)
                  <= 16 * np.finfo(dtype).eps * np.abs(w)):
        return None
    return wv, wh


def _weighted_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, sigma, weight,
                   normalize):
    """(x as (N, C, H, W), caller, user rank, PoolParams, output size, window) of a weighted
    average pooling call; window is the kernel's w (host NumPy array of x's dtype)."""
    arr, caller, rank, prm, o = _avg_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                          None)
    normalize = as_bool(normalize, "normalize", op)
    k = (prm.R, prm.S)
    prm.normalize = normalize
    if weight is None:
        prm.separable = True
        window = _gaussian_factors(k, _lift(nd, _sigmas(op, nd, sigma), math.inf), normalize, arr.dtype)
    else:
        w = _user_window(op, nd, k[2 - nd:], weight, normalize)
        factors = _factors(w, arr.dtype, normalize)
        prm.separable = factors is not None
        window = np.ascontiguousarray(np.concatenate(factors) if factors is not None else w, dtype=arr.dtype)
    return arr, caller, rank, prm, o, _device_window(caller, window)


@functools.lru_cache(maxsize=64)
def _gaussian_factors(k, sig, normalize, dtype):
    """The Gaussian window's factors (rows then columns) as the kernel takes them, read-only
    (made once per layer: a model calls the same pooling again and again)."""
    wv, wh = _gaussian(k[0], sig[0]), _gaussian(k[1], sig[1])
    if not normalize:  # a Gaussian blur: the whole window sums to 1
        wv, wh = wv / wv.sum(), wh / wh.sum()
    window = np.concatenate([wv, wh]).astype(dtype)
    window.flags.writeable = False
    return window


def _device_window(caller, window):
    """The window on the caller's device."""
    backend = caller[0]
    return window if backend.device == "cpu" else backend.from_host(window)


def pool_window_weights(kernel_size, sigma=1.0, weight=None, normalize=True, nd=2):
    """The (R, S) window (or (S,) with nd=1) that weighted_avg_pool2d / 1d weigh the taps by:
    the Gaussian of ``sigma`` (times a constant that normalize=True divides out; summing to 1
    with normalize=False), or ``weight`` itself (float64)."""
    op = "pool_window_weights"
    if nd not in (1, 2):
        raise ValueError(f"{op}: nd must be 1 or 2, got {nd!r}")
    k = positive(as_tuple(kernel_size, nd, "kernel_size"), "kernel_size")
    normalize = as_bool(normalize, "normalize", op)
    if weight is not None:
        w = _user_window(op, nd, k, weight, normalize)
    else:
        sig = _sigmas(op, nd, sigma)
        gs = [_gaussian(ki, si) for ki, si in zip(k, sig)]
        if not normalize:
            gs = [g / g.sum() for g in gs]
        w = np.outer(gs[0], gs[1]) if nd == 2 else gs[0][None, :]
    return w if nd == 2 else w[0]


def _weighted_pool(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, sigma, weight, normalize,
                   out):
    arr, caller, rank, prm, o, window = _weighted_args(op, nd, x, kernel_size, stride, padding, ceil_mode,
                                                       count_include_pad, sigma, weight, normalize)
    n, c = arr.shape[:2]
    y, y4, _, _ = _outputs(caller[0], out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype, False)
    _run(caller, "weighted_avg_pool2d_forward", prm, x=arr, w=window, y=y4)
    return _wrap(caller, y)


def weighted_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
                        sigma=1.0, weight=None, normalize=True, out=None):
    """2-D distance-weighted average pooling (Goodfellow et al., ch. 9: "a weighted average
    based on the distance from the central pixel"). x is (N, C, H, W) or (C, H, W); windows,
    stride (default: kernel_size), padding, ceil_mode and count_include_pad as avg_pool2d.

    Window weights: ``weight``, an (R, S) array (real, finite), or by default the Gaussian
    exp(-d^2 / (2 sigma^2)) of each tap's distance d from the window's centre ((R-1)/2, (S-1)/2);
    ``sigma`` a positive number or one per axis, inf for a uniform window (``sigma`` is unused
    when ``weight`` is given).

    normalize=True: the weighted mean over the taps avg_pool2d counts, sum(w * x) / sum(w) over
    the window clipped to the padded input (count_include_pad; padding taps add 0 to the sum and
    their weight to the divisor), else over the taps inside the input. ``weight`` must then be
    non-negative with a positive sum, and its scale does not matter; a uniform window (sigma=inf,
    or equal weights) gives avg_pool2d's result exactly, in every mode. A window whose counted
    taps all weigh 0 gives NaN (0/0).
    normalize=False: the weighted sum of the taps inside the input (zero padding), no division
    (a depthwise convolution with the window); the Gaussian is then scaled to sum to 1.

    Computed in C++: an outer-product window (every Gaussian; a ``weight`` that is one within
    16 rounding errors of x's dtype) takes a separable vertical + horizontal pass (R + S multiply-adds per
    output), any other window the direct R*S one.
    """
    return _weighted_pool("weighted_avg_pool2d", 2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          sigma, weight, normalize, out)


def weighted_avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
                        sigma=1.0, weight=None, normalize=True, out=None):
    """1-D distance-weighted average pooling (see weighted_avg_pool2d). x is (N, C, L) or (C, L);
    ``weight`` is a (kernel_size,) window."""
    return _weighted_pool("weighted_avg_pool1d", 1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          sigma, weight, normalize, out)


def weighted_avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                                 count_include_pad=True, *, sigma=1.0, weight=None, normalize=True):
    """grad_x of weighted_avg_pool2d: each window's grad_y (divided by its weight sum with
    normalize) times the tap's weight, added to its taps inside the input. The window is a
    constant (no gradient with respect to it)."""
    args = _weighted_args("weighted_avg_pool2d_backward", 2, x, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, sigma, weight, normalize)
    return _weighted_backward("weighted_avg_pool2d_backward", 2, grad_y, args)


def weighted_avg_pool1d_backward(grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                                 count_include_pad=True, *, sigma=1.0, weight=None, normalize=True):
    """grad_x of weighted_avg_pool1d (see weighted_avg_pool2d_backward)."""
    args = _weighted_args("weighted_avg_pool1d_backward", 1, x, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, sigma, weight, normalize)
    return _weighted_backward("weighted_avg_pool1d_backward", 1, grad_y, args)


# ---- adaptive ----------------------------------------------------------------------------

def _adaptive_args(op, nd, x, output_size):
    """(x as (N, C, H, W), caller, user rank, PoolParams, output size) of an adaptive pooling call."""
    arr, caller, rank = _input(x, nd, op)
    o = adaptive_size(op, nd, output_size, arr.shape[4 - nd:])
    prm = _params(arr, _lift(nd, o, 1), adaptive=True)
    return arr, caller, rank, prm, o


def _adaptive(op, nd, x, output_size, is_max, return_indices, out):
    arr, caller, rank, prm, o = _adaptive_args(op, nd, x, output_size)
    return_indices = as_bool(return_indices, "return_indices", op)
    n, c = arr.shape[:2]
    y, y4, idx, i4 = _outputs(caller[0], out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype,
                              return_indices)
    if prm.P > 0 and prm.Q > 0:  # torch allows output size 0: an empty result
        if is_max:
            _run(caller, "max_pool2d_forward", prm, x=arr, y=y4, indices=i4)
        else:
            _run(caller, "avg_pool2d_forward", prm, x=arr, y=y4)
    return _finish(caller, y, idx, return_indices)


def adaptive_avg_pool2d(x, output_size, *, out=None):
    """2-D adaptive average pooling, as torch: output (P, Q), window i along an axis of size n
    is [floor(i*n/P), ceil((i+1)*n/P)). ``output_size``: int or pair; None keeps that size."""
    return _adaptive("adaptive_avg_pool2d", 2, x, output_size, False, False, out)


def adaptive_max_pool2d(x, output_size, return_indices=False, *, out=None):
    """2-D adaptive max pooling, as torch.nn.functional.adaptive_max_pool2d."""
    return _adaptive("adaptive_max_pool2d", 2, x, output_size, True, return_indices, out)


def adaptive_avg_pool1d(x, output_size, *, out=None):
    """1-D adaptive average pooling, as torch.nn.functional.adaptive_avg_pool1d."""
    return _adaptive("adaptive_avg_pool1d", 1, x, output_size, False, False, out)


def adaptive_max_pool1d(x, output_size, return_indices=False, *, out=None):
    """1-D adaptive max pooling, as torch.nn.functional.adaptive_max_pool1d."""
    return _adaptive("adaptive_max_pool1d", 1, x, output_size, True, return_indices, out)


def adaptive_avg_pool2d_backward(grad_y, x, output_size):
    """grad_x of adaptive_avg_pool2d: each window's grad_y / its size added to its taps."""
    args = _adaptive_args("adaptive_avg_pool2d_backward", 2, x, output_size)
    return _avg_backward("adaptive_avg_pool2d_backward", 2, grad_y, args)


def adaptive_max_pool2d_backward(grad_y, x, output_size, indices=None):
    """grad_x of adaptive_max_pool2d (the forward's ``indices`` if given, else recomputed)."""
    args = _adaptive_args("adaptive_max_pool2d_backward", 2, x, output_size)
    return _max_backward("adaptive_max_pool2d_backward", 2, grad_y, args, indices)


def adaptive_avg_pool1d_backward(grad_y, x, output_size):
    """grad_x of adaptive_avg_pool1d."""
    args = _adaptive_args("adaptive_avg_pool1d_backward", 1, x, output_size)
    return _avg_backward("adaptive_avg_pool1d_backward", 1, grad_y, args)


def adaptive_max_pool1d_backward(grad_y, x, output_size, indices=None):
    """grad_x of adaptive_max_pool1d (the forward's ``indices`` if given, else recomputed)."""
    args = _adaptive_args("adaptive_max_pool1d_backward", 1, x, output_size)
    return _max_backward("adaptive_max_pool1d_backward", 1, grad_y, args, indices)


# ---- plans: one call's checks done once -----------------------------------------------------

class PoolPlan:
    """A pooling call checked once for inputs of one shape and dtype, to run again on such
    inputs without re-checking (``plan_pool``). fastconv.torch's pooling layers keep one
    per input shape for inference calls: a call's checks cost ~40 us in Python, as much as
    pooling a LeNet-5 activation.

    ``input_shape``/``output_shape`` are the caller's shapes (unbatched and 1-D included),
    ``with_indices`` whether ``run_array`` also writes max pooling's int64 indices.
    """
    __slots__ = ("input_shape", "output_shape", "dtype", "with_indices", "_shape4", "_out4", "_prm",
                 "_op", "_backend")

    def __init__(self, args, nd, op, with_indices):
        arr, caller, rank, prm, o = args
        n, c = arr.shape[:2]
        self.input_shape = _user_shape(n, c, arr.shape[4 - nd:], rank, nd)
        self.output_shape = _user_shape(n, c, o, rank, nd)
        self.dtype = arr.dtype
        self.with_indices = with_indices
        self._shape4, self._out4 = arr.shape, (n, c, prm.P, prm.Q)
        self._prm = prm
        self._backend = caller[0]
        self._op = None if prm.P == 0 or prm.Q == 0 else op  # output size 0: nothing to do

    def run_array(self, x, y, indices=None):
        """Pool x into y (and ``indices`` when ``with_indices``): C-contiguous NumPy arrays of
        ``input_shape`` / ``output_shape`` and the plan's dtype (int64 indices), on the plan's
        device. The caller owns these checks; the C++ core still checks shapes, dtypes,
        contiguity and device."""
        if self._op is None:
            return
        tensors = {"x": x.reshape(self._shape4), "y": y.reshape(self._out4)}
        if self.with_indices:
            tensors["indices"] = indices.reshape(self._out4)
        self._backend.run(self._op, "direct", self._prm, tensors)


def _plan_max(op, nd, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    args = _max_args(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode)
    return PoolPlan(args, nd, "max_pool2d_forward", as_bool(return_indices, "return_indices", op))


def _plan_avg(op, nd, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    args = _avg_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return PoolPlan(args, nd, "avg_pool2d_forward", False)


def _plan_lp(op, nd, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return PoolPlan(_lp_args(op, nd, x, norm_type, kernel_size, stride, ceil_mode), nd, "lp_pool2d_forward", False)


def _plan_adaptive_avg(op, nd, x, output_size):
    return PoolPlan(_adaptive_args(op, nd, x, output_size), nd, "avg_pool2d_forward", False)


def _plan_adaptive_max(op, nd, x, output_size, return_indices=False):
    return PoolPlan(_adaptive_args(op, nd, x, output_size), nd, "max_pool2d_forward",
                    as_bool(return_indices, "return_indices", op))


_PLANNERS = {
    "max_pool2d": (_plan_max, 2), "max_pool1d": (_plan_max, 1),
    "avg_pool2d": (_plan_avg, 2), "avg_pool1d": (_plan_avg, 1),
    "lp_pool2d": (_plan_lp, 2), "lp_pool1d": (_plan_lp, 1),
    "adaptive_avg_pool2d": (_plan_adaptive_avg, 2), "adaptive_avg_pool1d": (_plan_adaptive_avg, 1),
    "adaptive_max_pool2d": (_plan_adaptive_max, 2), "adaptive_max_pool1d": (_plan_adaptive_max, 1),
}


def plan_pool(op, x, *args):
    """A PoolPlan for ``<op>(x, *args)``: op names one of this module's forward functions
    ("max_pool2d", "avg_pool1d", ...) and args are its arguments after x, in its order. x (a
    NumPy array or CPU tensor) gives the shape and dtype; the checks and errors are op's."""
    if op not in _PLANNERS:
        raise ValueError(f"plan_pool: unknown pooling op {op!r}; expected one of {', '.join(_PLANNERS)}")
    planner, nd = _PLANNERS[op]
    return planner(op, nd, x, *args)


# ---- backward plumbing ---------------------------------------------------------------------
# args is the forward's normalised (x as (N, C, H, W), caller, user rank, PoolParams, output size).

def _check_same_device(arr, name, a):
    """TypeError (backend_for's, naming both) unless a is on the device of the input arr."""
    backend_for([("input", arr), (name, a)])


def _grad_output(op, nd, grad_y, args):
    """grad_y checked against the forward's output (shape, device, and x's dtype) as (N, C, P, Q)."""
    arr, caller, rank, prm, o = args
    backend = caller[0]
    _check_same_device(arr, "grad_y", grad_y)
    g = backend.array(grad_y, "grad_y")
    if g.dtype != arr.dtype:
        raise TypeError(f"{op}: grad_y has dtype {g.dtype} but the input has {arr.dtype}; they must match")
    want = _user_shape(arr.shape[0], arr.shape[1], o, rank, nd)
    if g.shape != want:
        raise ValueError(f"{op}: grad_y must have the forward output's shape {want}, got {tuple(g.shape)}")
    return g.reshape(arr.shape[0], arr.shape[1], prm.P, prm.Q)


def _grad_input(nd, args):
    """(grad_x as (N, C, H, W), grad_x in the caller's type and x's shape)."""
    arr, caller, rank, _, _ = args
    gx = caller[0].empty(arr.shape, arr.dtype)
    shape = arr.shape if nd == 2 else arr.shape[:2] + arr.shape[3:]
    return gx, _wrap(caller, gx.reshape(shape[1:] if rank == nd + 1 else shape))


def _empty_output(prm):
    """No windows (adaptive output size 0): the gradient is zero."""
    return prm.P == 0 or prm.Q == 0


def _max_backward(op, nd, grad_y, args, indices):
    arr, caller, rank, prm, o = args
    backend = caller[0]
    gy = _grad_output(op, nd, grad_y, args)
    gx, result = _grad_input(nd, args)
    if _empty_output(prm):
        gx.fill(0)
        return result
    n, c = arr.shape[:2]
    if indices is None:  # the forward's indices, recomputed
        idx = backend.empty((n, c, prm.P, prm.Q), np.int64)
        _run(caller, "max_pool2d_forward", prm, x=arr, y=backend.empty(idx.shape, arr.dtype), indices=idx)
    else:
        _check_same_device(arr, "indices", indices)
        idx = backend.view(indices)
        if idx.dtype != np.int64:
            raise TypeError(f"{op}: indices must be int64 (as the forward returns them), got {idx.dtype}")
        want = _user_shape(n, c, o, rank, nd)
        if idx.shape != want:
            raise ValueError(f"{op}: indices must have the forward output's shape {want}, got {tuple(idx.shape)}")
        idx = backend.contiguous(idx).reshape(n, c, prm.P, prm.Q)
    _run(caller, "max_pool2d_backward", prm, grad_y=gy, indices=idx, grad_x=gx)
    return result


def _avg_backward(op, nd, grad_y, args):
    _, caller, _, prm, _ = args
    gy = _grad_output(op, nd, grad_y, args)
    gx, result = _grad_input(nd, args)
    if _empty_output(prm):
        gx.fill(0)
        return result
    _run(caller, "avg_pool2d_backward", prm, grad_y=gy, grad_x=gx)
    return result


def _weighted_backward(op, nd, grad_y, args):
    caller, window = args[1], args[5]
    gy = _grad_output(op, nd, grad_y, args[:5])
    gx, result = _grad_input(nd, args[:5])
    _run(caller, "weighted_avg_pool2d_backward", args[3], grad_y=gy, w=window, grad_x=gx)
    return result


def _lp_backward(op, nd, grad_y, args):
    arr, caller, _, prm, _ = args
    gy = _grad_output(op, nd, grad_y, args)
    gx, result = _grad_input(nd, args)
    y = caller[0].empty(gy.shape, arr.dtype)  # the forward's output, recomputed
    _run(caller, "lp_pool2d_forward", prm, x=arr, y=y)
    _run(caller, "lp_pool2d_backward", prm, grad_y=gy, x=arr, y=y, grad_x=gx)
    return result
