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
from .functional import (_array_kind, _plain, as_int, as_tuple, check_element_count, check_out, host_array, positive,
                         wrap_like)

__all__ = [
    "max_pool2d", "avg_pool2d", "lp_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "max_pool1d", "avg_pool1d", "lp_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
    "max_pool2d_backward", "avg_pool2d_backward", "lp_pool2d_backward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_backward", "max_pool1d_backward", "avg_pool1d_backward", "lp_pool1d_backward",
    "adaptive_avg_pool1d_backward", "adaptive_max_pool1d_backward",
    "pool_output_size", "plan_pool", "PoolPlan",
]


# ---- shapes ------------------------------------------------------------------------------

def pool_output_size(size, kernel, stride, pad, dilation=1, ceil_mode=False):
    """torch's pooling output size along one axis (before the >= 1 check).

    floor((size + 2*pad - dilation*(kernel-1) - 1 [+ stride-1 with ceil_mode]) / stride) + 1;
    with ceil_mode the last window must start inside the input or the left padding.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _input(x, nd, op):
    """(x as a contiguous (N, C, H, W) array, kind, user rank) for an nd-D pooling op."""
    arr, kind = host_array(x, "input")
    rank = arr.ndim
    if rank == nd + 1:  # unbatched, as torch: (C, H, W) or (C, L)
        arr = arr[None]
    elif rank != nd + 2:
        want = "(N, C, H, W) or (C, H, W)" if nd == 2 else "(N, C, L) or (C, L)"
        raise ValueError(f"{op}: input must be {nd + 2}-D or {nd + 1}-D {want}, got shape {tuple(arr.shape)}")
    if nd == 1:
        arr = arr[:, :, None, :]
    if any(d == 0 for d in arr.shape[1:]):
        raise ValueError(f"{op}: input of shape {tuple(x.shape)} has an empty channel or spatial dimension "
                         "(only the batch dimension may be 0)")
    check_element_count(arr.shape, "input")
    return arr, kind, rank


def _user_shape(n, c, out, rank, nd):
    """The output shape the caller sees: (N, C, *out), without N for an unbatched input."""
    shape = (n, c) + tuple(out)
    return shape[1:] if rank == nd + 1 else shape


def _as_bool(v, name, op):
    if not isinstance(v, (bool, np.bool_, numbers.Integral)):
        raise TypeError(f"{op}: {name} must be a bool, got {v!r}")
    return bool(v)


def _window(op, nd, sizes, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate window arguments with torch's rules; per-axis tuples (k, s, p, d, out).
    Memoised for plain arguments (a model's layer repeats the same call)."""
    key = (op, nd, tuple(sizes), kernel_size, "default" if stride is None else stride, padding, dilation,
           int(ceil_mode))  # ceil_mode is a checked bool here; a bool elsewhere is not _plain (not cached)
    if _plain(key):
        return _cached_window(*key)
    return _check_window(op, nd, sizes, kernel_size, stride, padding, dilation, ceil_mode)


@functools.lru_cache(maxsize=512)
def _cached_window(op, nd, sizes, kernel_size, stride, padding, dilation, ceil_mode):
    return _check_window(op, nd, sizes, kernel_size, None if stride == "default" else stride, padding, dilation,
                         bool(ceil_mode))


def _check_window(op, nd, sizes, kernel_size, stride, padding, dilation, ceil_mode):
    k = positive(as_tuple(kernel_size, nd, "kernel_size"), "kernel_size")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        s = k  # torch: the default stride is the kernel size
    else:
        s = positive(as_tuple(stride, nd, "stride"), "stride")
    p = as_tuple(padding, nd, "padding")
    d = positive(as_tuple(dilation, nd, "dilation"), "dilation")
    if any(v < 0 for v in p):
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f"{op}: padding {p if nd > 1 else p[0]} must be at most half of "
                         f"kernel_size {k if nd > 1 else k[0]}")
    out = tuple(pool_output_size(sizes[i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(nd))
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: output size {out} is too small (must be >= 1) for input size {tuple(sizes)} "
                         f"with kernel_size={k}, stride={s}, padding={p}, dilation={d}, ceil_mode={ceil_mode}")
    return k, s, p, d, out


def _params(arr, out2, k2=(1, 1), s2=(1, 1), p2=(0, 0), d2=(1, 1), adaptive=False):
    n, c, h, w = arr.shape
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


def _outputs(out, shape4, user_shape, dtype, with_indices):
    """Allocate (or check the caller's) output and indices; return 4-D views and user views."""
    y_out, i_out = out, None
    if with_indices and isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"out must be an array or a pair (values, indices), got {len(out)} items")
        y_out, i_out = out
    y = check_out(y_out, user_shape, dtype) if y_out is not None else np.empty(user_shape, dtype)
    idx = None
    if with_indices:
        idx = (check_out(i_out, user_shape, np.dtype(np.int64), "out[1] (indices)") if i_out is not None
               else np.empty(user_shape, np.int64))
    return y, y.reshape(shape4), idx, (idx.reshape(shape4) if idx is not None else None)


def _finish(kind, y, idx, return_indices):
    if return_indices:
        return wrap_like(kind, y), wrap_like(kind, idx)
    return wrap_like(kind, y)


# ---- max ---------------------------------------------------------------------------------

def _max_args(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode):
    """(x as (N, C, H, W), kind, user rank, PoolParams, output size) of a max pooling call."""
    arr, kind, rank = _input(x, nd, op)
    ceil_mode = _as_bool(ceil_mode, "ceil_mode", op)
    k, s, p, d, o = _window(op, nd, arr.shape[4 - nd:], kernel_size, stride, padding, dilation, ceil_mode)
    prm = _params(arr, _lift(nd, o, 1), _lift(nd, k, 1), _lift(nd, s, 1), _lift(nd, p, 0), _lift(nd, d, 1))
    return arr, kind, rank, prm, o


def _max_pool(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out):
    arr, kind, rank, prm, o = _max_args(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = _as_bool(return_indices, "return_indices", op)
    n, c = arr.shape[:2]
    y, y4, idx, i4 = _outputs(out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype,
                              return_indices)
    _C.max_pool2d_forward(prm, arr, y4, i4)
    return _finish(kind, y, idx, return_indices)


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
    """(x as (N, C, H, W), kind, user rank, PoolParams, output size) of an average pooling call."""
    arr, kind, rank = _input(x, nd, op)
    ceil_mode = _as_bool(ceil_mode, "ceil_mode", op)
    count_include_pad = _as_bool(count_include_pad, "count_include_pad", op)
    k, s, p, _, o = _window(op, nd, arr.shape[4 - nd:], kernel_size, stride, padding, 1, ceil_mode)
    prm = _params(arr, _lift(nd, o, 1), _lift(nd, k, 1), _lift(nd, s, 1), _lift(nd, p, 0))
    prm.count_include_pad = count_include_pad
    if divisor_override is not None:
        dv = as_int(divisor_override, "divisor_override")
        if dv == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got {divisor_override!r}")
        prm.divisor_override = dv
    return arr, kind, rank, prm, o


def _avg_pool(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, out):
    arr, kind, rank, prm, o = _avg_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override)
    n, c = arr.shape[:2]
    y, y4, _, _ = _outputs(out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype, False)
    _C.avg_pool2d_forward(prm, arr, y4)
    return wrap_like(kind, y)


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
    """(x as (N, C, H, W), kind, user rank, PoolParams, output size) of an Lp pooling call."""
    arr, kind, rank = _input(x, nd, op)
    if isinstance(norm_type, (bool, np.bool_)) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"{op}: norm_type must be a real number, got {norm_type!r}")
    norm_type = float(norm_type)
    if norm_type == 0 or math.isnan(norm_type):
        raise ValueError(f"{op}: norm_type must be non-zero and not NaN, got {norm_type!r}")
    ceil_mode = _as_bool(ceil_mode, "ceil_mode", op)
    k, s, _, _, o = _window(op, nd, arr.shape[4 - nd:], kernel_size, stride, 0, 1, ceil_mode)
    prm = _params(arr, _lift(nd, o, 1), _lift(nd, k, 1), _lift(nd, s, 1))
    prm.norm_type = norm_type
    return arr, kind, rank, prm, o


def _lp_pool(op, nd, x, norm_type, kernel_size, stride, ceil_mode, out):
    arr, kind, rank, prm, o = _lp_args(op, nd, x, norm_type, kernel_size, stride, ceil_mode)
    n, c = arr.shape[:2]
    y, y4, _, _ = _outputs(out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype, False)
    _C.lp_pool2d_forward(prm, arr, y4)
    return wrap_like(kind, y)


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


# ---- adaptive ----------------------------------------------------------------------------

def _adaptive_size(op, nd, output_size, sizes):
    """torch's output_size: an int, or nd entries each an int or None (= the input's size)."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != nd:
            raise ValueError(f"{op}: output_size must be an int or {nd} ints (or None), got {output_size!r}")
        out = tuple(sizes[i] if v is None else as_int(v, "output_size") for i, v in enumerate(output_size))
    elif output_size is None:
        if nd != 2:
            raise TypeError(f"{op}: output_size must be an int, got None")
        out = tuple(sizes)
    else:
        out = (as_int(output_size, "output_size"),) * nd
    if any(v < 0 for v in out):
        raise ValueError(f"{op}: output_size must be non-negative, got {output_size!r}")
    return out


def _adaptive_args(op, nd, x, output_size):
    """(x as (N, C, H, W), kind, user rank, PoolParams, output size) of an adaptive pooling call."""
    arr, kind, rank = _input(x, nd, op)
    o = _adaptive_size(op, nd, output_size, arr.shape[4 - nd:])
    prm = _params(arr, _lift(nd, o, 1), adaptive=True)
    return arr, kind, rank, prm, o


def _adaptive(op, nd, x, output_size, is_max, return_indices, out):
    arr, kind, rank, prm, o = _adaptive_args(op, nd, x, output_size)
    return_indices = _as_bool(return_indices, "return_indices", op)
    n, c = arr.shape[:2]
    y, y4, idx, i4 = _outputs(out, (n, c, prm.P, prm.Q), _user_shape(n, c, o, rank, nd), arr.dtype,
                              return_indices)
    if prm.P > 0 and prm.Q > 0:  # torch allows output size 0: an empty result
        if is_max:
            _C.max_pool2d_forward(prm, arr, y4, i4)
        else:
            _C.avg_pool2d_forward(prm, arr, y4)
    return _finish(kind, y, idx, return_indices)


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
                 "_kernel")

    def __init__(self, args, nd, kernel, with_indices):
        arr, _, rank, prm, o = args
        n, c = arr.shape[:2]
        self.input_shape = _user_shape(n, c, arr.shape[4 - nd:], rank, nd)
        self.output_shape = _user_shape(n, c, o, rank, nd)
        self.dtype = arr.dtype
        self.with_indices = with_indices
        self._shape4, self._out4 = arr.shape, (n, c, prm.P, prm.Q)
        self._prm = prm
        self._kernel = None if prm.P == 0 or prm.Q == 0 else kernel  # output size 0: nothing to do

    def run_array(self, x, y, indices=None):
        """Pool x into y (and ``indices`` when ``with_indices``): C-contiguous NumPy arrays of
        ``input_shape`` / ``output_shape`` and the plan's dtype (int64 indices). The caller
        owns these checks; the C++ kernel still checks shapes, dtypes and contiguity."""
        if self._kernel is None:
            return
        x4, y4 = x.reshape(self._shape4), y.reshape(self._out4)
        if self.with_indices:
            self._kernel(self._prm, x4, y4, indices.reshape(self._out4))
        else:
            self._kernel(self._prm, x4, y4)


def _plan_max(op, nd, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    args = _max_args(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode)
    return PoolPlan(args, nd, _C.max_pool2d_forward, _as_bool(return_indices, "return_indices", op))


def _plan_avg(op, nd, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    args = _avg_args(op, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return PoolPlan(args, nd, _C.avg_pool2d_forward, False)


def _plan_lp(op, nd, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return PoolPlan(_lp_args(op, nd, x, norm_type, kernel_size, stride, ceil_mode), nd, _C.lp_pool2d_forward, False)


def _plan_adaptive_avg(op, nd, x, output_size):
    return PoolPlan(_adaptive_args(op, nd, x, output_size), nd, _C.avg_pool2d_forward, False)


def _plan_adaptive_max(op, nd, x, output_size, return_indices=False):
    return PoolPlan(_adaptive_args(op, nd, x, output_size), nd, _C.max_pool2d_forward,
                    _as_bool(return_indices, "return_indices", op))


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
# args is the forward's normalised (x as (N, C, H, W), kind, user rank, PoolParams, output size).

def _grad_output(op, nd, grad_y, args):
    """grad_y checked against the forward's output (shape, and x's dtype) as (N, C, P, Q)."""
    arr, _, rank, prm, o = args
    g, _ = host_array(grad_y, "grad_y")
    if g.dtype != arr.dtype:
        raise TypeError(f"{op}: grad_y has dtype {g.dtype} but the input has {arr.dtype}; they must match")
    want = _user_shape(arr.shape[0], arr.shape[1], o, rank, nd)
    if g.shape != want:
        raise ValueError(f"{op}: grad_y must have the forward output's shape {want}, got {tuple(g.shape)}")
    return g.reshape(arr.shape[0], arr.shape[1], prm.P, prm.Q)


def _grad_input(nd, args):
    """(grad_x as (N, C, H, W), grad_x in the caller's type and x's shape)."""
    arr, kind, rank, _, _ = args
    gx = np.empty(arr.shape, arr.dtype)
    shape = arr.shape if nd == 2 else arr.shape[:2] + arr.shape[3:]
    return gx, wrap_like(kind, gx.reshape(shape[1:] if rank == nd + 1 else shape))


def _empty_output(prm):
    """No windows (adaptive output size 0): the gradient is zero."""
    return prm.P == 0 or prm.Q == 0


def _max_backward(op, nd, grad_y, args, indices):
    arr, _, rank, prm, o = args
    gy = _grad_output(op, nd, grad_y, args)
    gx, result = _grad_input(nd, args)
    if _empty_output(prm):
        gx.fill(0)
        return result
    n, c = arr.shape[:2]
    if indices is None:  # the forward's indices, recomputed
        idx = np.empty((n, c, prm.P, prm.Q), np.int64)
        _C.max_pool2d_forward(prm, arr, np.empty(idx.shape, arr.dtype), idx)
    else:
        kind = _array_kind(indices)
        idx = indices.detach().numpy() if kind == "torch" else indices
        if idx.dtype != np.int64:
            raise TypeError(f"{op}: indices must be int64 (as the forward returns them), got {idx.dtype}")
        want = _user_shape(n, c, o, rank, nd)
        if idx.shape != want:
            raise ValueError(f"{op}: indices must have the forward output's shape {want}, got {tuple(idx.shape)}")
        idx = np.ascontiguousarray(idx).reshape(n, c, prm.P, prm.Q)
    _C.max_pool2d_backward(prm, gy, idx, gx)
    return result


def _avg_backward(op, nd, grad_y, args):
    _, _, _, prm, _ = args
    gy = _grad_output(op, nd, grad_y, args)
    gx, result = _grad_input(nd, args)
    if _empty_output(prm):
        gx.fill(0)
        return result
    _C.avg_pool2d_backward(prm, gy, gx)
    return result


def _lp_backward(op, nd, grad_y, args):
    arr, _, _, prm, _ = args
    gy = _grad_output(op, nd, grad_y, args)
    gx, result = _grad_input(nd, args)
    y = np.empty(gy.shape, arr.dtype)  # the forward's output, recomputed
    _C.lp_pool2d_forward(prm, arr, y)
    _C.lp_pool2d_backward(prm, gy, arr, y, gx)
    return result
