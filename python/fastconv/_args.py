"""Argument normalisation for every op: the one place that turns what a caller may pass
(ints, tuples, padding strings, per-side pads, pooling windows) into checked tuples and
the core's ``ConvParams``, and that holds the output-size formula of a sliding window.

Every check raises ``ValueError``/``TypeError`` naming the argument and its value before
C++ runs (the C++ checks again). Nothing here touches arrays or devices: that is
``_arrays``'s job.
"""
from __future__ import annotations

import functools
import numbers
import operator

import numpy as np

from . import _C

INT64_MAX = 2**63 - 1


# ---- scalars and tuples ------------------------------------------------------------

def as_int(v, name):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer or a tuple of integers, got {v!r}") from None
    if not -INT64_MAX - 1 <= i <= INT64_MAX:  # C++ holds every size and index as int64
        raise ValueError(f"{name} = {i} is out of range: sizes, strides, paddings and dilations must fit in int64")
    return i


def as_tuple(v, n, name):
    """An int, or a sequence of n ints, as a tuple of n ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {v!r}")
        return tuple(as_int(e, name) for e in v)
    return (as_int(v, name),) * n


def as_bool(v, name, op):
    """torch's flags accept bools and ints (0/1)."""
    if not isinstance(v, (bool, np.bool_, numbers.Integral)):
        raise TypeError(f"{op}: {name} must be a bool, got {v!r}")
    return bool(v)


def positive(values, name):
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values if len(values) > 1 else values[0]}")
    return values


def check_element_count(shape, name):
    total = 1
    for d in shape:
        total *= int(d)
    if total > INT64_MAX:
        raise ValueError(f"{name} of shape {tuple(shape)} has {total} elements, more than int64 can index")


def plain(v):
    """True for ints, strings and nested tuples of them: safe and exact as a cache key
    (lists are unhashable; a bool would share 1's entry; NumPy scalars hash like ints)."""
    if type(v) is tuple:
        return all(plain(e) for e in v)
    return type(v) is int or type(v) is str


# ---- the output size of a sliding window -----------------------------------------------

def output_size(size, pad_lo, pad_hi, kernel, stride, dilation=1, ceil_mode=False):
    """Outputs of a window of ``kernel`` taps ``dilation`` apart sliding by ``stride`` over
    ``size`` values padded by ``pad_lo``/``pad_hi``: floor((size + pads - dilation*(kernel-1)
    - 1) / stride) + 1, as csrc/params.h's conv_out_size. With ``ceil_mode`` (pooling, as
    torch) the division rounds up, but the last window must start inside the input or the
    low padding. May be < 1: callers check."""
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


# ---- convolution ---------------------------------------------------------------------

def _same_pads(size, k, stride, dil):
    """TensorFlow's 'same': output ceil(size / stride); the odd pad goes to the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dil * (k - 1) + 1 - size, 0)
    return (total // 2, total - total // 2)


def normalize_padding(padding, sizes, kernel, stride, dilation):
    """Padding in any accepted form -> ((lo, hi), ...) one pair per spatial dimension."""
    nd = len(sizes)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * nd
        if mode == "same":
            return tuple(_same_pads(sizes[i], kernel[i], stride[i], dilation[i]) for i in range(nd))
        if mode == "full":
            return tuple((dilation[i] * (kernel[i] - 1),) * 2 for i in range(nd))
        raise ValueError(f"padding must be an int, a tuple, or one of 'valid', 'same', 'full'; got {padding!r}")
    if isinstance(padding, (tuple, list)) and any(isinstance(e, (tuple, list)) for e in padding):
        if len(padding) != nd or not all(isinstance(e, (tuple, list)) and len(e) == 2 for e in padding):
            raise ValueError(f"per-side padding must be {nd} pairs (lo, hi), got {padding!r}")
        pads = tuple((as_int(lo, "padding"), as_int(hi, "padding")) for lo, hi in padding)
    elif nd == 1 and isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = ((as_int(padding[0], "padding"), as_int(padding[1], "padding")),)  # 1-D: (left, right)
    else:
        pads = tuple((p, p) for p in as_tuple(padding, nd, "padding"))
    if any(v < 0 for pair in pads for v in pair):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads


def conv_params(x_shape, w_shape, stride, padding, dilation, groups, op="conv2d"):
    """Validate shapes and arguments; return (ConvParams, pads) for a 2-D problem."""
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (K, C/groups, R, S), got shape {tuple(w_shape)}")
    n, c, h, w = (int(v) for v in x_shape)
    k, cg, r, s = (int(v) for v in w_shape)
    groups = as_int(groups, "groups")
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    if c <= 0 or h <= 0 or w <= 0:
        raise ValueError(f"{op}: input shape {tuple(x_shape)} has an empty channel or spatial dimension")
    if k <= 0 or cg <= 0 or r <= 0 or s <= 0:
        raise ValueError(f"{op}: weight shape {tuple(w_shape)} has an empty dimension")
    if c % groups != 0:
        raise ValueError(f"{op}: input channels C={c} must be divisible by groups={groups}")
    if c != cg * groups:
        raise ValueError(f"{op}: input has C={c} channels but weight expects "
                         f"C/groups={cg} x groups={groups} = {cg * groups}")
    if k % groups != 0:
        raise ValueError(f"{op}: output channels K={k} must be divisible by groups={groups}")
    stride = positive(as_tuple(stride, 2, "stride"), "stride")
    dilation = positive(as_tuple(dilation, 2, "dilation"), "dilation")
    pads = normalize_padding(padding, (h, w), (r, s), stride, dilation)
    for axis, size, kk, d, (lo, hi) in (("height", h, r, dilation[0], pads[0]), ("width", w, s, dilation[1], pads[1])):
        span = d * (kk - 1) + 1
        if span > size + lo + hi:
            raise ValueError(f"{op}: kernel {axis} {kk} (dilated to {span}) is larger than the padded input "
                             f"{axis} {size} + {lo} + {hi} = {size + lo + hi}")
    check_element_count(x_shape, "input")
    check_element_count(w_shape, "weight")
    p = _C.ConvParams()
    p.N, p.C, p.H, p.W, p.K, p.R, p.S = n, c, h, w, k, r, s
    p.stride_h, p.stride_w = stride
    p.dil_h, p.dil_w = dilation
    p.pad_h, p.pad_w = pads[0][0], pads[1][0]
    p.P = output_size(h, pads[0][0], pads[0][1], r, stride[0], dilation[0])
    p.Q = output_size(w, pads[1][0], pads[1][1], s, stride[1], dilation[1])
    # A stride past the padded input gives one output whatever its value: it is cut to the
    # smallest that does, so no kernel sizes a buffer by it (direct's band, de-interleaved by
    # the stride, asked for terabytes at stride 2**40, and its OpenMP region aborted the process).
    p.stride_h = min(p.stride_h, h + pads[0][0] + pads[0][1] - (dilation[0] * (r - 1) + 1) + 1)
    p.stride_w = min(p.stride_w, w + pads[1][0] + pads[1][1] - (dilation[1] * (s - 1) + 1) + 1)
    p.groups = groups
    check_element_count((n, k, p.P, p.Q), "output")
    check_element_count((n, c, r, s, p.P, p.Q), "unrolled input")
    return p, pads


@functools.lru_cache(maxsize=512)
def _cached_conv_params(x_shape, w_shape, stride, padding, dilation, groups, op):
    return conv_params(x_shape, w_shape, stride, padding, dilation, groups, op)


def conv_problem(x_shape, w_shape, stride, padding, dilation, groups, op="conv2d"):
    """conv_params, memoised for hashable arguments: layers repeat the same problem."""
    key = (tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, op)
    if not plain(key):
        return conv_params(*key)
    return _cached_conv_params(*key)


def check_flip(op, flip):
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"{op}: flip must be a bool, got {flip!r}")
    return bool(flip)


def check_needs(op, needs):
    if not isinstance(needs, (tuple, list)) or len(needs) != 3:
        raise ValueError(f"{op}: needs must be a triple of bools (grad_input, grad_weight, grad_bias), got {needs!r}")
    if not all(isinstance(v, (bool, np.bool_)) for v in needs):
        raise TypeError(f"{op}: needs must hold bools, got {needs!r}")
    return tuple(bool(v) for v in needs)


# ---- pooling windows ------------------------------------------------------------------

def pool_output_size(size, kernel, stride, pad, dilation=1, ceil_mode=False):
    """torch's pooling output size along one axis (symmetric padding; before the >= 1 check)."""
    return output_size(size, pad, pad, kernel, stride, dilation, ceil_mode)


def pool_window(op, nd, sizes, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate window arguments with torch's rules; per-axis tuples (k, s, p, d, out).
    Memoised for plain arguments (a model's layer repeats the same call)."""
    key = (op, nd, tuple(sizes), kernel_size, "default" if stride is None else stride, padding, dilation,
           int(ceil_mode))  # ceil_mode is a checked bool here; a bool elsewhere is not plain (not cached)
    if plain(key):
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


def adaptive_size(op, nd, output_size, sizes):
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
