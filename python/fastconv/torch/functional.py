"""Autograd-aware fastconv functions with torch.nn.functional's signatures.

    from fastconv.torch import conv2d, max_pool2d
    y = max_pool2d(conv2d(x, w, b, padding="same", algorithm="auto"), 2)   # y.backward() works

Arguments are normalised here (ints -> pairs, string and per-side padding -> explicit
[top, bottom, left, right], pooling's default stride = kernel) and handed to the custom ops
of fastconv.torch.ops, which run forward and backward and which torch.compile traces
without graph breaks. 1-D functions run the 2-D ops on views with H = 1 (autograd follows
the views). CPU float32 / float64 tensors; anything else raises fastconv's TypeError.
Convolution accepts unbatched input (C, H, W) as torch does; so does pooling.
"""
from __future__ import annotations

import torch

from fastconv._args import as_int, as_tuple, normalize_padding
from fastconv.pooling import pool_window_weights

from . import ops

__all__ = [
    "conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "lp_pool1d", "lp_pool2d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "weighted_avg_pool2d",
]


def _pair(v, name):
    return list(as_tuple(v, 2, name))


def _single(v, name):
    """torch's 1-D argument: an int or a 1-tuple."""
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple, got {v!r}")
        v = v[0]
    return as_int(v, name)


def _stride(stride, kernel):
    """Pooling's default stride (None, or [] as torch also accepts) is the kernel size."""
    return kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else stride


def _dims(op, x, ranks):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ranks:
        raise ValueError(f"{op}: expected a {' or '.join(f'{r}-D' for r in ranks)} input, got shape {tuple(x.shape)}")


# ---- convolution ------------------------------------------------------------------------------

def conv_padding(padding, sizes, kernel, stride, dilation):
    """Any accepted padding (int, pair, per-side pairs, 'valid', 'same', 'full') as the ops'
    flat per-side list [top, bottom, left, right]."""
    pads = normalize_padding(padding, sizes, kernel, stride, dilation)
    return [v for pair in pads for v in pair]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, flip=False, algorithm="auto"):
    """torch.nn.functional.conv2d by fastconv, differentiable. ``padding`` also takes per-side
    ((top, bottom), (left, right)) and 'full'; 'same' works for any stride (output ceil(H /
    stride)). ``flip=True`` is true convolution. ``algorithm``: as fastconv.conv2d's (the backward
    pass uses it when it has one, else 'auto')."""
    _dims("conv2d", input, (3, 4))
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    if weight.dim() != 4:
        raise ValueError(f"conv2d: weight must be 4-D (K, C/groups, R, S), got shape {tuple(weight.shape)}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = conv_padding(padding, tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, dilation)
    y = ops.call(ops.conv2d, x, weight, bias, stride, pads, dilation, as_int(groups, "groups"), bool(flip), algorithm)
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, flip=False, algorithm="auto"):
    """torch.nn.functional.conv1d by fastconv, differentiable; ``padding`` also takes
    (left, right) and 'full'. Runs as conv2d with H = 1."""
    _dims("conv1d", input, (2, 3))
    unbatched = input.dim() == 2
    x = input.unsqueeze(0) if unbatched else input
    if weight.dim() != 3:
        raise ValueError(f"conv1d: weight must be 3-D (K, C/groups, S), got shape {tuple(weight.shape)}")
    s, d = _single(stride, "stride"), _single(dilation, "dilation")
    if isinstance(padding, (tuple, list)) and len(padding) == 1:
        padding = padding[0]
    (left, right), = normalize_padding(padding, (x.shape[2],), (weight.shape[2],), (s,), (d,))
    y = ops.call(ops.conv2d, x.unsqueeze(2), weight.unsqueeze(2), bias, [1, s], [0, 0, left, right], [1, d],
                 as_int(groups, "groups"), bool(flip), algorithm).squeeze(2)
    return y.squeeze(0) if unbatched else y


# ---- pooling ----------------------------------------------------------------------------------

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d by fastconv, differentiable; (values, indices) with
    ``return_indices``."""
    _dims("max_pool2d", input, (3, 4))
    k = _pair(kernel_size, "kernel_size")
    y, idx = ops.call(ops.max_pool2d, input, k, _pair(_stride(stride, k), "stride"), _pair(padding, "padding"),
                      _pair(dilation, "dilation"), bool(ceil_mode))
    return (y, idx) if return_indices else y


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool1d by fastconv, differentiable."""
    _dims("max_pool1d", input, (2, 3))
    k = _single(kernel_size, "kernel_size")
    y, idx = ops.call(ops.max_pool2d, input.unsqueeze(-2), [1, k], [1, _single(_stride(stride, k), "stride")],
                      [0, _single(padding, "padding")], [1, _single(dilation, "dilation")], bool(ceil_mode))
    y = y.squeeze(-2)
    return (y, idx.squeeze(-2)) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d by fastconv, differentiable."""
    _dims("avg_pool2d", input, (3, 4))
    k = _pair(kernel_size, "kernel_size")
    return ops.call(ops.avg_pool2d, input, k, _pair(_stride(stride, k), "stride"), _pair(padding, "padding"),
                    bool(ceil_mode), bool(count_include_pad), divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """torch.nn.functional.avg_pool1d by fastconv, differentiable."""
    _dims("avg_pool1d", input, (2, 3))
    k = _single(kernel_size, "kernel_size")
    return ops.call(ops.avg_pool2d, input.unsqueeze(-2), [1, k], [1, _single(_stride(stride, k), "stride")],
                    [0, _single(padding, "padding")], bool(ceil_mode), bool(count_include_pad),
                    None).squeeze(-2)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """torch.nn.functional.lp_pool2d by fastconv, differentiable."""
    _dims("lp_pool2d", input, (3, 4))
    k = _pair(kernel_size, "kernel_size")
    return ops.call(ops.lp_pool2d, input, float(norm_type), k, _pair(_stride(stride, k), "stride"), bool(ceil_mode))


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """torch.nn.functional.lp_pool1d by fastconv, differentiable."""
    _dims("lp_pool1d", input, (2, 3))
    k = _single(kernel_size, "kernel_size")
    return ops.call(ops.lp_pool2d, input.unsqueeze(-2), float(norm_type), [1, k],
                    [1, _single(_stride(stride, k), "stride")], bool(ceil_mode)).squeeze(-2)


def _adaptive_size(output_size, sizes, nd):
    """torch's output_size: an int, or nd entries each an int or None (keep the input's size)."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != nd:
            raise ValueError(f"output_size must be an int or {nd} ints (or None), got {output_size!r}")
        return [int(sizes[i]) if v is None else as_int(v, "output_size") for i, v in enumerate(output_size)]
    return [as_int(output_size, "output_size")] * nd


def adaptive_avg_pool2d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool2d by fastconv, differentiable."""
    _dims("adaptive_avg_pool2d", input, (3, 4))
    return ops.call(ops.adaptive_avg_pool2d, input, _adaptive_size(output_size, input.shape[-2:], 2))


def adaptive_avg_pool1d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool1d by fastconv, differentiable."""
    _dims("adaptive_avg_pool1d", input, (2, 3))
    return ops.call(ops.adaptive_avg_pool2d, input.unsqueeze(-2), [1] + _adaptive_size(output_size, input.shape[-1:], 1)
                    ).squeeze(-2)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """torch.nn.functional.adaptive_max_pool2d by fastconv, differentiable."""
    _dims("adaptive_max_pool2d", input, (3, 4))
    y, idx = ops.call(ops.adaptive_max_pool2d, input, _adaptive_size(output_size, input.shape[-2:], 2))
    return (y, idx) if return_indices else y


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """torch.nn.functional.adaptive_max_pool1d by fastconv, differentiable."""
    _dims("adaptive_max_pool1d", input, (2, 3))
    y, idx = ops.call(ops.adaptive_max_pool2d, input.unsqueeze(-2),
                      [1] + _adaptive_size(output_size, input.shape[-1:], 1))
    y = y.squeeze(-2)
    return (y, idx.squeeze(-2)) if return_indices else y


def _window_tensor(kernel, sigma, weight, normalize):
    """The window the op takes: ``weight`` as given (checked by fastconv), else the Gaussian's."""
    if weight is not None:
        return weight if isinstance(weight, torch.Tensor) else torch.as_tensor(weight)
    return torch.from_numpy(pool_window_weights(tuple(kernel), sigma=sigma, normalize=bool(normalize)))


def weighted_avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
                        sigma=1.0, weight=None, normalize=True):
    """fastconv.weighted_avg_pool2d (distance-weighted average pooling), differentiable in
    input; the window (``weight``, or the Gaussian of ``sigma``) is a constant."""
    _dims("weighted_avg_pool2d", input, (3, 4))
    k = _pair(kernel_size, "kernel_size")
    return ops.call(ops.weighted_avg_pool2d, input, _window_tensor(k, sigma, weight, normalize), k,
                    _pair(_stride(stride, k), "stride"), _pair(padding, "padding"), bool(ceil_mode),
                    bool(count_include_pad), bool(normalize))
