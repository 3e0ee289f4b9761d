"""Convolution with unshared weights: tiled convolution and locally connected layers
(Goodfellow et al., *Deep Learning*, 9.5), forward and backward.

Tiled convolution cycles TP x TQ kernel sets over the output positions: output (p, q)
uses set (p % TP, q % TQ). TP x TQ = 1 x 1 is conv2d; TP x TQ = P x Q (the output size)
is a locally connected layer, a kernel per position. One kernel family serves both
(``tiled_conv2d_*`` rows of the kernel table: csrc/cpu/tiled_conv2d.cpp on CPU arrays,
csrc/cuda/tiled_conv2d.cu on CUDA arrays; algorithm='reference' is NumPy, CPU arrays only).

Weight layout, position-major: (TP, TQ, K, C/groups, R, S) (local: (P, Q, K, C/groups,
R, S)). Each set's (K, C/groups*R*S) block is contiguous and row-major, the operand of
that position's GEMM (a matrix-vector product at batch 1): the kernel streams each block
once, each row a contiguous run along which it vectorises. A channel-major layout
(K, C/groups, R, S, P, Q) would make every row a strided gather.

Bias: per output channel, shape (K,), or per set, shape (TP, TQ, K) (local: per
position (P, Q, K)); 1-D forms drop the height axis ((K,), (T, K), (L_out, K)). The
backward returns the bias gradient in the shape asked for by ``per_position_bias``. A (K,)
bias goes to the kernels as it is, with ConvParams.channel_bias: the forward adds it to every
set and the weight gradient sums its gradient over all positions (float64), on either device,
so no broadcast or reduction runs around the kernels.
"""
from __future__ import annotations

import numpy as np

from . import _C, reference
from ._args import as_tuple, check_needs, conv_problem, normalize_padding
from ._arrays import backend_for, same_dtype
from .algorithms import _reference_on_host

__all__ = ["tiled_conv2d", "tiled_conv1d", "local_conv2d", "local_conv1d", "tiled_conv2d_backward",
           "tiled_conv1d_backward", "local_conv2d_backward", "local_conv1d_backward", "local_conv2d_output_size"]

_ALGORITHMS = ("direct", "reference")


def _arrays(op, named, algorithm):
    """(backend, kind, arrays): the call's arrays on their one device (CPU or CUDA), checked."""
    backend, kind = backend_for(named)
    if backend.device != "cpu":
        _reference_on_host(algorithm, f"cuda:{backend.index}")
    arrays = [backend.array(a, name) if a is not None else None for name, a in named]
    same_dtype([(name, a) for (name, _), a in zip(named, arrays)])
    return backend, kind, arrays


def _with_tiles(params, tiles):
    """A fresh ConvParams with the tiles set (conv_problem's are memoised and shared)."""
    p = _C.ConvParams()
    for f in ("N", "C", "H", "W", "K", "R", "S", "P", "Q", "pad_h", "pad_w", "stride_h", "stride_w", "dil_h",
              "dil_w", "groups"):
        setattr(p, f, getattr(params, f))
    p.tiles_h, p.tiles_w = tiles
    return p


def _problem(op, x_arr, w_arr, stride, padding, dilation, groups, local, one_d):
    """(ConvParams with tiles, pads, x 4-D, w 6-D) after checking the shapes."""
    wdesc = ("(L_out, K, C/groups, S)" if local else "(T, K, C/groups, S)") if one_d else \
        ("(P, Q, K, C/groups, R, S)" if local else "(TP, TQ, K, C/groups, R, S)")
    xdesc = "(N, C, L)" if one_d else "(N, C, H, W)"
    if x_arr.ndim != (3 if one_d else 4):
        raise ValueError(f"{op}: input must be {3 if one_d else 4}-D {xdesc}, got shape {x_arr.shape}")
    if w_arr.ndim != (4 if one_d else 6):
        raise ValueError(f"{op}: weight must be {4 if one_d else 6}-D {wdesc}, got shape {w_arr.shape}")
    if one_d:
        x_arr = x_arr.reshape(x_arr.shape[0], x_arr.shape[1], 1, x_arr.shape[2])
        w_arr = w_arr.reshape(1, w_arr.shape[0], w_arr.shape[1], w_arr.shape[2], 1, w_arr.shape[3])
        stride = (1, as_tuple(stride, 1, "stride")[0])
        dilation = (1, as_tuple(dilation, 1, "dilation")[0])
        if not isinstance(padding, str):
            padding = ((0, 0),) + normalize_padding(padding, (x_arr.shape[3],), (w_arr.shape[5],), (1,), (1,))
    tiles = tuple(int(v) for v in w_arr.shape[:2])
    params, pads = conv_problem(x_arr.shape, w_arr.shape[2:], stride, padding, dilation, groups, op)
    out = (params.Q,) if one_d else (params.P, params.Q)
    got = tiles[1:] if one_d else tiles
    shown_got, shown_out = (got[0], out[0]) if one_d else (got, out)
    if local and got != out:
        raise ValueError(f"{op}: weight has {shown_got} positions ({wdesc[1:wdesc.index(', K')]}) but the output "
                         f"is {shown_out}: a locally connected weight has one kernel per output position")
    if not local and any(t < 1 or t > o for t, o in zip(got, out)):
        raise ValueError(f"{op}: tiles {shown_got} must be between 1 and the output size {shown_out}")
    return _with_tiles(params, tiles), pads, x_arr, w_arr


def _set_bias(op, b_arr, params, one_d, local):
    """bias as the kernel takes it: (K,) as it is, with ``params.channel_bias`` set (the kernel
    adds it to every set's outputs), or per set reshaped to (TP, TQ, K)."""
    if b_arr is None:
        return None
    tiles, k = (params.tiles_h, params.tiles_w), params.K
    per_set = (tiles[1], k) if one_d else (tiles[0], tiles[1], k)
    if b_arr.shape == (k,):
        params.channel_bias = True
        return b_arr
    if b_arr.shape == per_set:
        return b_arr.reshape(tiles + (k,))
    what = "position" if local else "set"
    raise ValueError(f"{op}: bias must have shape ({k},) (per channel) or {per_set} (per {what}), got {b_arr.shape}")


def _check_algorithm(op, algorithm):
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"{op}: algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")


def _forward(op, x, weight, bias, stride, padding, dilation, groups, algorithm, local, one_d):
    _check_algorithm(op, algorithm)
    backend, kind, (x_arr, w_arr, b_arr) = _arrays(op, [("input", x), ("weight", weight), ("bias", bias)], algorithm)
    params, pads, x4, w6 = _problem(op, x_arr, w_arr, stride, padding, dilation, groups, local, one_d)
    b_set = _set_bias(op, b_arr, params, one_d, local)
    if algorithm == "reference":
        y = reference.tiled_conv2d(x4, w6, b_set, (params.stride_h, params.stride_w), pads,
                                   (params.dil_h, params.dil_w), params.groups)
    else:
        y = backend.empty((params.N, params.K, params.P, params.Q), x_arr.dtype)
        backend.run("tiled_conv2d_forward", "direct", params, {"x": x4, "w": w6, "bias": b_set, "y": y})
    if one_d:
        y = y.reshape(params.N, params.K, params.Q)
    return backend.wrap(y, kind)


def _backward(op, grad_y, x, weight, stride, padding, dilation, groups, needs, per_position_bias, algorithm, local,
              one_d):
    _check_algorithm(op, algorithm)
    needs = check_needs(op, needs)
    if not isinstance(per_position_bias, (bool, np.bool_)):
        raise TypeError(f"{op}: per_position_bias must be a bool, got {per_position_bias!r}")
    backend, kind, (gy_arr, x_arr, w_arr) = _arrays(op, [("grad_y", grad_y), ("input", x), ("weight", weight)],
                                                    algorithm)
    params, pads, x4, w6 = _problem(op, x_arr, w_arr, stride, padding, dilation, groups, local, one_d)
    y_shape = (params.N, params.K, params.Q) if one_d else (params.N, params.K, params.P, params.Q)
    if gy_arr.shape != y_shape:
        raise ValueError(f"{op}: grad_y must have the output's shape {y_shape}, got {gy_arr.shape}")
    gy = gy_arr.reshape(params.N, params.K, params.P, params.Q)
    need_x, need_w, need_b = needs
    gx = gw = gb = None
    if algorithm == "reference":
        gx, gw, gb = reference.tiled_conv2d_backward(gy, x4, w6, (params.stride_h, params.stride_w), pads,
                                                     (params.dil_h, params.dil_w), params.groups)
        gx, gw, gb = (gx if need_x else None), (gw if need_w else None), (gb if need_b else None)
        if gb is not None and not per_position_bias:
            gb = gb.sum(axis=(0, 1), dtype=np.float64).astype(x_arr.dtype)
    else:
        if need_x:
            gx = backend.empty(x4.shape, x_arr.dtype)
            ws = backend.workspace(backend.workspace_bytes("direct", params, x_arr.dtype, False,
                                                           "tiled_conv2d_backward_data"))
            backend.run("tiled_conv2d_backward_data", "direct", params, {"grad_y": gy, "w": w6, "grad_x": gx}, ws)
        if need_w or need_b:
            # a per-channel grad_bias is summed over the sets by the kernel (channel_bias)
            params.channel_bias = not per_position_bias
            gw = backend.empty(w6.shape, x_arr.dtype) if need_w else None
            gb_shape = (params.tiles_h, params.tiles_w, params.K) if per_position_bias else (params.K,)
            gb = backend.empty(gb_shape, x_arr.dtype) if need_b else None
            backend.run("tiled_conv2d_backward_weight", "direct", params,
                        {"grad_y": gy, "x": x4, "grad_w": gw, "grad_bias": gb})
    if one_d:
        gx = gx.reshape(x_arr.shape) if gx is not None else None
        gw = gw.reshape(w_arr.shape) if gw is not None else None
        gb = gb.reshape(gb.shape[1:]) if gb is not None and per_position_bias else gb
    return tuple(backend.wrap(g, kind) if g is not None else None for g in (gx, gw, gb))


def tiled_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="direct"):
    """Tiled convolution: x (N, C, H, W), weight (TP, TQ, K, C/groups, R, S), TP x TQ kernel
    sets cycled over the outputs (output (p, q) uses weight[p % TP, q % TQ]); bias None,
    (K,) or (TP, TQ, K). Returns (N, K, P, Q). stride, padding (as conv2d's: ints, pairs,
    per-side pairs, 'valid', 'same', 'full'), dilation and groups as conv2d. 1 <= TP <= P
    and 1 <= TQ <= Q; (1, 1) is conv2d, (P, Q) is local_conv2d. ``algorithm``: 'direct'
    (the C++ kernel) or 'reference' (NumPy)."""
    return _forward("tiled_conv2d", x, weight, bias, stride, padding, dilation, groups, algorithm, False, False)


def local_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="direct"):
    """Locally connected layer (unshared convolution): x (N, C, H, W), weight
    (P, Q, K, C/groups, R, S), a kernel per output position (P, Q must be the output size
    ``local_conv2d_output_size`` gives); bias None, (K,) or (P, Q, K). Returns (N, K, P, Q)."""
    return _forward("local_conv2d", x, weight, bias, stride, padding, dilation, groups, algorithm, True, False)


def tiled_conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="direct"):
    """1-D tiled convolution: x (N, C, L), weight (T, K, C/groups, S), output l using
    weight[l % T]; bias None, (K,) or (T, K). Returns (N, K, L_out)."""
    return _forward("tiled_conv1d", x, weight, bias, stride, padding, dilation, groups, algorithm, False, True)


def local_conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="direct"):
    """1-D locally connected layer: x (N, C, L), weight (L_out, K, C/groups, S); bias None,
    (K,) or (L_out, K). Returns (N, K, L_out)."""
    return _forward("local_conv1d", x, weight, bias, stride, padding, dilation, groups, algorithm, True, True)


def tiled_conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                          needs=(True, True, True), per_position_bias=False, algorithm="direct"):
    """Gradients of ``tiled_conv2d`` given grad_y (N, K, P, Q): (grad_x (N, C, H, W),
    grad_weight (TP, TQ, K, C/groups, R, S), grad_bias), None where ``needs`` says so.
    grad_bias is (K,) (grad_y summed over N, P, Q), or per set (TP, TQ, K) with
    ``per_position_bias=True`` (each set's positions summed)."""
    return _backward("tiled_conv2d_backward", grad_y, x, weight, stride, padding, dilation, groups, needs,
                     per_position_bias, algorithm, False, False)


def local_conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                          needs=(True, True, True), per_position_bias=False, algorithm="direct"):
    """Gradients of ``local_conv2d``: (grad_x, grad_weight (P, Q, K, C/groups, R, S),
    grad_bias (K,) or, with ``per_position_bias=True``, (P, Q, K))."""
    return _backward("local_conv2d_backward", grad_y, x, weight, stride, padding, dilation, groups, needs,
                     per_position_bias, algorithm, True, False)


def tiled_conv1d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                          needs=(True, True, True), per_position_bias=False, algorithm="direct"):
    """Gradients of ``tiled_conv1d``: (grad_x (N, C, L), grad_weight (T, K, C/groups, S),
    grad_bias (K,) or (T, K))."""
    return _backward("tiled_conv1d_backward", grad_y, x, weight, stride, padding, dilation, groups, needs,
                     per_position_bias, algorithm, False, True)


def local_conv1d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                          needs=(True, True, True), per_position_bias=False, algorithm="direct"):
    """Gradients of ``local_conv1d``: (grad_x (N, C, L), grad_weight (L_out, K, C/groups, S),
    grad_bias (K,) or (L_out, K))."""
    return _backward("local_conv1d_backward", grad_y, x, weight, stride, padding, dilation, groups, needs,
                     per_position_bias, algorithm, True, True)


def local_conv2d_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """(P, Q) of a locally connected layer on an (H, W) input: the (P, Q) its weight needs."""
    h, w = as_tuple(input_size, 2, "input_size")
    r, s = as_tuple(kernel_size, 2, "kernel_size")
    params, _ = conv_problem((1, 1, h, w), (1, 1, r, s), stride, padding, dilation, 1, "local_conv2d")
    return (params.P, params.Q)
