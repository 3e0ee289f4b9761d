"""Argument normalisation, validation, allocation and dispatch for convolution.

Every public convolution call goes through here: arrays are checked and made
contiguous, arguments are normalised to a ``_C.ConvParams``, the output (and
workspace) is allocated with NumPy, and one kernel of the registry runs. Bad
input raises ``ValueError``/``TypeError`` naming the argument before C++ runs.
"""
from __future__ import annotations

import functools
import operator
import sys
import threading

import numpy as np

from . import _C, algorithms, reference

INT64_MAX = 2**63 - 1
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}
_DTYPE_NAMES = "float32, float64"


# ---- arrays ---------------------------------------------------------------------

def _array_kind(a):
    """'numpy' or 'torch' for CPU arrays; raises TypeError for anything else."""
    if isinstance(a, np.ndarray):
        return "numpy"
    module = type(a).__module__
    if module.startswith("torch"):
        if getattr(a, "device", None) is not None and a.device.type != "cpu":
            raise TypeError(
                f"torch tensor on device '{a.device}': this build of fastconv runs on the CPU only "
                "(no CUDA kernels yet); move it with .cpu()")
        return "torch"
    if module.startswith("cupy"):
        raise TypeError("CuPy arrays need fastconv's CUDA kernels, which this build does not have yet")
    raise TypeError(f"expected a numpy.ndarray or a torch.Tensor, got {type(a).__name__}")


def host_array(a, name):
    """(contiguous ndarray view or copy of a, kind) for a NumPy array or CPU torch tensor."""
    kind = _array_kind(a)
    arr = a.detach().numpy() if kind == "torch" else a
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {arr.dtype}; supported dtypes: {_DTYPE_NAMES}")
    return np.ascontiguousarray(arr), kind


def wrap_like(kind, arr):
    """Return arr as the caller's array type (torch tensors share the NumPy memory)."""
    if kind == "torch":
        return sys.modules["torch"].from_numpy(arr)
    return arr


def check_out(out, shape, dtype, name="out"):
    """Validate a caller-provided output array (NumPy, C-contiguous, right shape/dtype)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} has shape {out.shape} and dtype {out.dtype}; "
                         f"expected shape {tuple(shape)} and dtype {dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writable")
    return out


def same_dtype(named_arrays):
    """Raise TypeError unless all the (name, array) pairs share one dtype."""
    dtypes = {name: a.dtype for name, a in named_arrays if a is not None}
    if len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"arrays must share one dtype, got {desc}")


def check_element_count(shape, name):
    total = 1
    for d in shape:
        total *= int(d)
    if total > INT64_MAX:
        raise ValueError(f"{name} of shape {tuple(shape)} has {total} elements, more than int64 can index")


# ---- argument normalisation ----------------------------------------------------

def as_int(v, name):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer or a tuple of integers, got {v!r}") from None


def as_tuple(v, n, name):
    """An int, or a sequence of n ints, as a tuple of n ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {v!r}")
        return tuple(as_int(e, name) for e in v)
    return (as_int(v, name),) * n


def positive(values, name):
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values if len(values) > 1 else values[0]}")
    return values


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
    if c != cg * groups:
        raise ValueError(f"{op}: input has C={c} channels but weight expects C/groups={cg} x groups={groups} = {cg * groups}")
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
    p.P = (h + pads[0][0] + pads[0][1] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    p.Q = (w + pads[1][0] + pads[1][1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
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
    if not _plain(key):  # lists, bools (True == 1 would share 1's entry), NumPy scalars
        return conv_params(*key)
    return _cached_conv_params(*key)


def _plain(v):
    """True for ints, strings and nested tuples of them: safe and exact as a cache key."""
    if type(v) is tuple:
        return all(_plain(e) for e in v)
    return type(v) is int or type(v) is str


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=None):
    """(N, K, P, Q) of conv2d: P = (H + pad_top + pad_bottom - dilation*(R-1) - 1) // stride + 1.

    With dilation 1 and symmetric padding this is the familiar (N - F + 2P)/S + 1.
    """
    if groups is None:
        groups = max(1, int(input_shape[1]) // max(1, int(weight_shape[1]))) if len(input_shape) == 4 and len(weight_shape) == 4 else 1
    p, _ = conv_params(input_shape, weight_shape, stride, padding, dilation, groups)
    return (p.N, p.K, p.P, p.Q)


# ---- convolution -----------------------------------------------------------------

_workspaces = threading.local()


def _workspace(nbytes, slot="buf"):
    """A workspace of at least ``nbytes``, kept per Python thread and reused: a fresh
    buffer of tens of MiB (Winograd's transformed kernel) costs more in page faults
    than the kernel takes to fill it. Holds the largest workspace seen, per thread and
    ``slot`` (buffers used at the same time need different slots)."""
    buf = getattr(_workspaces, slot, None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes, np.uint8)
        setattr(_workspaces, slot, buf)
    return buf


def _run_conv(x_arr, w_arr, b_arr, params, pads, algorithm, out):
    """Run one algorithm (already validated) on normalised host arrays; returns y."""
    dtype = x_arr.dtype
    shape = (params.N, params.K, params.P, params.Q)
    y = check_out(out, shape, dtype) if out is not None else np.empty(shape, dtype)
    if algorithm == "reference":
        y[...] = reference.conv2d(x_arr, w_arr, b_arr, stride=(params.stride_h, params.stride_w),
                                  pads=pads, dilation=(params.dil_h, params.dil_w), groups=params.groups)
        return y
    ws_bytes = _C.workspace_bytes(algorithm, params, DTYPE_NAMES[dtype])
    ws = _workspace(ws_bytes) if ws_bytes else None
    _C.conv2d_forward(algorithm, params, x_arr, w_arr, b_arr, y, ws)
    return y


def _all_finite(a):
    """False when a holds NaN or Inf (one vectorised sum; a finite sum that overflows
    also says False, which only costs auto its fastest choice)."""
    return bool(np.isfinite(np.add.reduce(a, axis=None)))


def _choose(policy, x_arr, w_arr, b_arr, params, pads, out):
    """'auto' or 'autotune' -> a kernel. Both give the reference's NaN/Inf pattern: when
    x or w is not all finite, an algorithm that could spread it over a tile is replaced."""
    dtype = x_arr.dtype
    if policy == "autotune" or algorithms.get_autotune():
        if params.N == 0:
            return algorithms.choose(params, dtype)
        scratch = out if out is not None else np.empty((params.N, params.K, params.P, params.Q), dtype)
        algo = algorithms.tuned(params, dtype, lambda name: _run_conv(x_arr, w_arr, b_arr, params, pads, name, scratch))
    else:
        algo = algorithms.choose(params, dtype)
    if not algorithms.is_exact_on_nonfinite(algo) and not (_all_finite(x_arr) and _all_finite(w_arr)):
        algo = algorithms.choose(params, dtype, inputs_finite=False)
    return algo


def _as_2d(op, x_arr, w_arr, stride, padding, dilation):
    """A 1-D problem (x (N, C, L), w (K, C/groups, S)) as its 2-D counterpart with H = R = 1."""
    if x_arr.ndim != 3:
        raise ValueError(f"{op}: input must be 3-D (N, C, L), got shape {x_arr.shape}")
    if w_arr.ndim != 3:
        raise ValueError(f"{op}: weight must be 3-D (K, C/groups, S), got shape {w_arr.shape}")
    x_arr, w_arr = x_arr[:, :, None, :], w_arr[:, :, None, :]
    stride = (1, as_tuple(stride, 1, "stride")[0])
    dilation = (1, as_tuple(dilation, 1, "dilation")[0])
    if not isinstance(padding, str):
        padding = ((0, 0),) + normalize_padding(padding, (x_arr.shape[3],), (w_arr.shape[3],), (1,), (1,))
    return x_arr, w_arr, stride, padding, dilation


def _check_flip(op, flip):
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"{op}: flip must be a bool, got {flip!r}")
    return bool(flip)


def _conv_nd(op, x, weight, bias, stride, padding, dilation, groups, flip, algorithm, out, one_d):
    x_arr, kind = host_array(x, "input")
    w_arr, _ = host_array(weight, "weight")
    b_arr = host_array(bias, "bias")[0] if bias is not None else None
    same_dtype([("input", x_arr), ("weight", w_arr), ("bias", b_arr)])
    if one_d:
        x_arr, w_arr, stride, padding, dilation = _as_2d(op, x_arr, w_arr, stride, padding, dilation)
    params, pads = conv_problem(x_arr.shape, w_arr.shape, stride, padding, dilation, groups, op)
    if b_arr is not None and b_arr.shape != (params.K,):
        raise ValueError(f"{op}: bias must have shape ({params.K},), got {b_arr.shape}")
    if _check_flip(op, flip):
        w_arr = np.ascontiguousarray(w_arr[:, :, ::-1, ::-1])
    algo = algorithms.resolve(algorithm, params, x_arr.dtype)
    y_shape = (params.N, params.K, params.Q) if one_d else None
    if out is not None and one_d:
        out = check_out(out, y_shape, x_arr.dtype).reshape(params.N, params.K, 1, params.Q)
    if algo in algorithms.POLICIES:
        algo = _choose(algo, x_arr, w_arr, b_arr, params, pads, out)
    y = _run_conv(x_arr, w_arr, b_arr, params, pads, algo, out)
    if one_d:
        y = y.reshape(y_shape)
    return wrap_like(kind, y)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           flip=False, algorithm="auto", out=None):
    """2-D cross-correlation (or convolution with ``flip=True``), as torch.nn.functional.conv2d.

    x is (N, C, H, W), weight (K, C/groups, R, S), bias (K,) or None; returns (N, K, P, Q).
    ``padding``: int, (ph, pw), ((top, bottom), (left, right)), 'valid', 'same' (any stride;
    output ceil(H/stride)) or 'full'. ``algorithm``: 'auto', 'direct', 'im2col', 'winograd'
    (3x3 stride 1, float32; 'winograd:2|4|6' force the tile), 'fft' (stride 1, dilation 1,
    float32, kernels up to 15x15; 'fft:8' (up to 7x7) and 'fft:16' force the tile),
    'reference', 'autotune'. Winograd and FFT spread a NaN/Inf input over the outputs
    of its tile (FFT: every output of the tiles whose window covers it; a NaN/Inf weight,
    its whole output channel), where the reference may be finite; ``auto`` avoids them
    on such inputs.
    Repeated calls with the same weights: ``plan_conv2d`` prepares them once.
    ``out``: optional NumPy array to write the result into.
    """
    return _conv_nd("conv2d", x, weight, bias, stride, padding, dilation, groups, flip, algorithm, out, False)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           flip=False, algorithm="auto", out=None):
    """1-D cross-correlation over time series, as torch.nn.functional.conv1d.

    x is (N, C, L), weight (K, C/groups, S); returns (N, K, L_out). ``padding``: int,
    (left, right), 'valid', 'same' or 'full'.
    """
    return _conv_nd("conv1d", x, weight, bias, stride, padding, dilation, groups, flip, algorithm, out, True)


# ---- backward --------------------------------------------------------------------

def _needs(op, needs):
    if not isinstance(needs, (tuple, list)) or len(needs) != 3:
        raise ValueError(f"{op}: needs must be a triple of bools (grad_input, grad_weight, grad_bias), got {needs!r}")
    if not all(isinstance(v, (bool, np.bool_)) for v in needs):
        raise TypeError(f"{op}: needs must hold bools, got {needs!r}")
    return tuple(bool(v) for v in needs)


def _transposed_problem(params, pads):
    """For a stride-1 convolution, grad_x = conv2d(grad_y, w') with w'[c, k] = w[k, c]
    rotated 180 degrees (per group) and pads (d*(R-1) - lo, d*(R-1) - hi): every input
    pixel gathers the outputs its window reached. Returns (ConvParams, pads) of that
    forward problem, or None when it does not exist (a stride, or a pad larger than the
    dilated kernel, whose rows never reach the output: negative pads)."""
    if params.stride_h != 1 or params.stride_w != 1:
        return None
    span_h, span_w = params.dil_h * (params.R - 1), params.dil_w * (params.S - 1)
    t_pads = ((span_h - pads[0][0], span_h - pads[0][1]), (span_w - pads[1][0], span_w - pads[1][1]))
    if any(v < 0 for pair in t_pads for v in pair):
        return None
    t_params, _ = conv_problem((params.N, params.K, params.P, params.Q),
                               (params.C, params.K // params.groups, params.R, params.S),
                               1, t_pads, (params.dil_h, params.dil_w), params.groups, "conv2d_backward")
    return t_params, t_pads


def _transposed_weight(w_arr, groups):
    """w (K, C/g, R, S) -> w' (C, K/g, R, S): per group, channels swapped and the kernel
    rotated 180 degrees, by ``_C.transpose_rotate_weight`` (NumPy's strided copy, runs of
    R*S reversed values, took 2.1 ms for ResNet's 512x512x3x3 on Zen 5). Written into a
    reused per-thread buffer (a fresh one of 9 MiB costs about as much in page faults as
    the copy); valid until the next call on this thread."""
    k, cg, r, s = w_arr.shape
    out = _workspace(w_arr.nbytes, "transposed_weight")[:w_arr.nbytes].view(w_arr.dtype)
    out = out.reshape(groups * cg, k // groups, r, s)
    _C.transpose_rotate_weight(np.ascontiguousarray(w_arr), out, groups)
    return out


def _grad_input_as_forward(gy, w_arr, params, pads):
    """grad_x of a stride-1 convolution by the forward kernel ``auto`` picks for the
    transposed problem (Winograd for 3x3 float32: 4x fewer multiplications than the
    backward GEMM + col2im), or None when there is no such problem. Like the forward's
    auto, it takes an exact algorithm when grad_y or w holds NaN/Inf."""
    transposed = _transposed_problem(params, pads)
    if transposed is None:
        return None
    t_params, t_pads = transposed
    w_t = _transposed_weight(w_arr, params.groups)
    algo = _choose("auto", gy, w_t, None, t_params, t_pads, None)
    return _run_conv(gy, w_t, None, t_params, t_pads, algo, None)


def _run_conv_backward(gy, x_arr, w_arr, params, pads, algorithm, needs, data_as_forward=False):
    """(grad_x or None, grad_w or None, grad_b or None) for normalised 4-D host arrays;
    ``data_as_forward``: grad_x by a forward kernel where the problem allows it."""
    dtype = x_arr.dtype
    need_x, need_w, need_b = needs
    if algorithm == "reference":
        gx, gw, gb = reference.conv2d_backward(gy, x_arr, w_arr, stride=(params.stride_h, params.stride_w),
                                               pads=pads, dilation=(params.dil_h, params.dil_w),
                                               groups=params.groups)
        return (gx if need_x else None, gw if need_w else None, gb if need_b else None)
    gx = gw = gb = None
    name = DTYPE_NAMES[dtype]
    if need_x and data_as_forward:
        gx = _grad_input_as_forward(gy, w_arr, params, pads)
    if need_x and gx is None:
        gx = np.empty(x_arr.shape, dtype)
        nbytes = _C.workspace_bytes(algorithm, params, name, False, "conv2d_backward_data")
        _C.conv2d_backward_data(algorithm, params, gy, w_arr, gx, _workspace(nbytes) if nbytes else None)
    if need_w or need_b:
        gw = np.empty(w_arr.shape, dtype) if need_w else None
        gb = np.empty((params.K,), dtype) if need_b else None
        nbytes = _C.workspace_bytes(algorithm, params, name, False, "conv2d_backward_weight") if need_w else 0
        _C.conv2d_backward_weight(algorithm, params, gy, x_arr, gw, gb, _workspace(nbytes) if nbytes else None)
    return gx, gw, gb


def _conv_backward_nd(op, grad_y, x, weight, stride, padding, dilation, groups, flip, algorithm, needs, one_d):
    gy_arr, _ = host_array(grad_y, "grad_y")
    x_arr, kind = host_array(x, "input")
    w_arr, _ = host_array(weight, "weight")
    same_dtype([("grad_y", gy_arr), ("input", x_arr), ("weight", w_arr)])
    needs = _needs(op, needs)
    flip = _check_flip(op, flip)
    if one_d:
        x_arr, w_arr, stride, padding, dilation = _as_2d(op, x_arr, w_arr, stride, padding, dilation)
    params, pads = conv_problem(x_arr.shape, w_arr.shape, stride, padding, dilation, groups, op)
    y_shape = (params.N, params.K, params.Q) if one_d else (params.N, params.K, params.P, params.Q)
    if gy_arr.shape != y_shape:
        raise ValueError(f"{op}: grad_y must have the output's shape {y_shape}, got {gy_arr.shape}")
    gy_arr = gy_arr.reshape(params.N, params.K, params.P, params.Q)
    algo = algorithms.resolve_backward(algorithm, params)
    if flip:  # y = conv(x, flipped w): grad_w is the flipped gradient of the flipped weight
        w_arr = np.ascontiguousarray(w_arr[:, :, ::-1, ::-1])
    gx, gw, gb = _run_conv_backward(gy_arr, x_arr, w_arr, params, pads, algo, needs,
                                    data_as_forward=algorithm == "auto")
    if gw is not None and flip:
        gw = np.ascontiguousarray(gw[:, :, ::-1, ::-1])
    if one_d:
        gx = gx.reshape(gx.shape[0], gx.shape[1], gx.shape[3]) if gx is not None else None
        gw = gw.reshape(gw.shape[0], gw.shape[1], gw.shape[3]) if gw is not None else None
    return tuple(wrap_like(kind, g) if g is not None else None for g in (gx, gw, gb))


def conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    flip=False, algorithm="auto", needs=(True, True, True)):
    """Gradients of ``conv2d(x, weight, bias, ...)`` given ``grad_y`` (N, K, P, Q), the
    gradient of its output: returns (grad_x (N, C, H, W), grad_weight (K, C/groups, R, S),
    grad_bias (K,) = grad_y summed over N, P, Q), with None for what ``needs``
    (grad_x, grad_weight, grad_bias) does not ask for. Arguments as conv2d's; ``algorithm``:
    'auto', 'direct', 'im2col', 'reference'. With 'auto', grad_x of a stride-1 convolution
    is the forward convolution of grad_y with the transposed, rotated kernel, run by the
    forward kernel auto picks for it (Winograd for 3x3 float32, which spreads NaN/Inf over
    its tiles, so non-finite grad_y or weights take an exact kernel); the rest runs the
    backward kernel of ``algorithms.choose_backward``.
    """
    return _conv_backward_nd("conv2d_backward", grad_y, x, weight, stride, padding, dilation, groups, flip,
                             algorithm, needs, False)


def conv1d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    flip=False, algorithm="auto", needs=(True, True, True)):
    """Gradients of ``conv1d`` given ``grad_y`` (N, K, L_out): (grad_x (N, C, L),
    grad_weight (K, C/groups, S), grad_bias (K,)), None where ``needs`` says so."""
    return _conv_backward_nd("conv1d_backward", grad_y, x, weight, stride, padding, dilation, groups, flip,
                             algorithm, needs, True)


# ---- introspection -----------------------------------------------------------------

class Explanation:
    """What each algorithm would do with one convolution; ``str()`` gives a table."""

    def __init__(self, problem, rows, auto):
        self.problem = problem  # dict of the normalised problem
        self.algorithms = rows  # list of dicts: algorithm, supported, reason, flops, workspace_bytes
        self.auto = auto        # the algorithm algorithm="auto" runs

    def __repr__(self):
        return f"Explanation(auto={self.auto!r}, algorithms={self.algorithms!r})"

    def __str__(self):
        p = self.problem
        lines = [f"conv2d x{p['input_shape']} * w{p['weight_shape']} -> y{p['output_shape']}  "
                 f"stride={p['stride']} pads={p['pads']} dilation={p['dilation']} groups={p['groups']} "
                 f"dtype={p['dtype']}",
                 f"{'algorithm':<10} {'ok':<3} {'GFLOP':>9} {'workspace':>12} {'plan weights':>12} "
                 f"{'plan wksp':>12}  note"]
        for r in self.algorithms:
            note = ("<- auto" if r["algorithm"] == self.auto else "") if r["supported"] else r["reason"]
            lines.append(f"{r['algorithm']:<10} {'yes' if r['supported'] else 'no':<3} "
                         f"{r['flops'] / 1e9:>9.4f} {r['workspace_bytes']:>12,} {r['prepared_bytes']:>12,} "
                         f"{r['plan_workspace_bytes']:>12,}  {note}")
        if self.problem.get("workspace_limit") is not None:
            lines.append(f"auto chose within a workspace limit of {self.problem['workspace_limit']:,} bytes")
        return "\n".join(lines)


def explain(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, dtype="float32",
            workspace_limit=None):
    """Per algorithm: supported or why not, FLOPs, workspace bytes of a call, and of a plan
    (``plan_conv2d``) its prepared weights and workspace; and which one ``auto`` picks
    (within ``workspace_limit`` bytes, default the global ``set_workspace_limit``)."""
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype {dtype} is not supported; supported dtypes: {_DTYPE_NAMES}")
    params, pads = conv_params(tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups, "explain")
    rows = []
    for name in algorithms.available()[len(algorithms.POLICIES):]:
        if name in algorithms.ALIASES:  # 'winograd': its rows 'winograd:m' are listed
            continue
        why = "" if name == "reference" else _C.supports(name, params, dtype.name)
        ws = prep = plan_ws = 0
        if not why and name != "reference":
            ws = algorithms.workspace_bytes(name, params, dtype)
            plan_ws = algorithms.workspace_bytes(name, params, dtype, prepared=True)
            prep = _C.prepared_bytes(name, params, dtype.name)
        rows.append({"algorithm": name, "supported": not why, "reason": why,
                     "flops": params.flops(), "workspace_bytes": ws, "prepared_bytes": prep,
                     "plan_workspace_bytes": plan_ws})
    problem = {"input_shape": tuple(int(v) for v in input_shape), "weight_shape": tuple(int(v) for v in weight_shape),
               "output_shape": (params.N, params.K, params.P, params.Q),
               "stride": (params.stride_h, params.stride_w), "pads": pads,
               "dilation": (params.dil_h, params.dil_w), "groups": params.groups, "dtype": dtype.name,
               "workspace_limit": workspace_limit if workspace_limit is not None else algorithms.get_workspace_limit()}
    return Explanation(problem, rows, algorithms.choose(params, dtype, workspace_limit=workspace_limit))


def set_num_threads(n):
    """Threads the CPU kernels use (default: OpenMP's, i.e. OMP_NUM_THREADS or all cores)."""
    _C.set_num_threads(as_int(n, "n"))


def get_num_threads():
    return _C.get_num_threads()


def info():
    """Version, instruction set in use, threads, CUDA status, build details."""
    b = _C.build_info()
    return {
        "version": b["version"],
        "isa": _C.get_isa(),
        "isa_detected": _C.detected_isa(),
        "threads": _C.get_num_threads(),
        "cuda": "none (CUDA toolkit found at build time; no CUDA kernels in this version)"
        if b["cuda_compiled"] else "none (built without CUDA)",
        "openmp": b["openmp"],
        "compiler": b.get("compiler", "unknown"),
        "numpy": np.__version__,
        "algorithms": algorithms.available(),
    }
