"""Locally connected and tiled convolution in PyTorch: custom ops with fake implementations
and autograd formulas (``torch.ops.fastconv.tiled_conv2d`` and its backward, as ops.py does
for conv2d), the functions ``tiled_conv2d`` / ``local_conv2d`` and the layers
``LocallyConnected2d`` / ``TiledConv2d``.

Weights are position-major, (TP, TQ, K, C/groups, R, S) (fastconv.local explains why); bias
is (K,) per channel or per set / position (TP, TQ, K). The backward op is differentiable in
turn (double backward: it is linear in grad_y, and in x and the weight apart).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

import fastconv as fc
from fastconv._args import as_tuple, normalize_padding, output_size

from .ops import _custom_op, _unused, call

Tensor = torch.Tensor

__all__ = ["tiled_conv2d", "local_conv2d", "LocallyConnected2d", "TiledConv2d"]


def _pairs(padding):
    return ((padding[0], padding[1]), (padding[2], padding[3]))


@_custom_op("fastconv::tiled_conv2d")
def tiled_conv2d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                    dilation: List[int], groups: int) -> Tensor:
    return fc.tiled_conv2d(x, weight, bias, tuple(stride), _pairs(padding), tuple(dilation), groups)


@tiled_conv2d_op.register_fake
def _tiled_conv2d_fake(x, weight, bias, stride, padding, dilation, groups):
    n, _, h, w = x.shape
    r, s = weight.shape[-2:]
    p = output_size(h, padding[0], padding[1], r, stride[0], dilation[0])
    q = output_size(w, padding[2], padding[3], s, stride[1], dilation[1])
    return x.new_empty((n, weight.shape[2], p, q))


@_custom_op("fastconv::tiled_conv2d_backward")
def tiled_conv2d_backward_op(grad_y: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int],
                             dilation: List[int], groups: int, needs: List[bool],
                             per_position_bias: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight, grad_bias per set (TP, TQ, K), or per channel (K,) with
    per_position_bias=False: summed over the sets by the kernel, in float64); empty tensors
    where not needed."""
    gx, gw, gb = fc.tiled_conv2d_backward(grad_y, x, weight, tuple(stride), _pairs(padding), tuple(dilation),
                                          groups, needs=tuple(needs), per_position_bias=per_position_bias)
    return (gx if gx is not None else _unused(x), gw if gw is not None else _unused(x),
            gb if gb is not None else _unused(x))


@tiled_conv2d_backward_op.register_fake
def _tiled_conv2d_backward_fake(grad_y, x, weight, stride, padding, dilation, groups, needs, per_position_bias=True):
    bias_shape = tuple(weight.shape[:3]) if per_position_bias else (weight.shape[2],)
    return (x.new_empty(x.shape) if needs[0] else _unused(x), x.new_empty(weight.shape) if needs[1] else _unused(x),
            x.new_empty(bias_shape) if needs[2] else _unused(x))


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.args = (stride, padding, dilation, groups)
    ctx.bias_dim = None if bias is None else bias.dim()


def _grad(ctx, grad_y):
    x, weight = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.bias_dim is not None and ctx.needs_input_grad[2]]
    if not any(needs):
        return (None,) * 7
    # a per-channel bias (dim 1): the kernel sums its gradient over every set
    gx, gw, gb = tiled_conv2d_backward_op(grad_y.contiguous(), x, weight, *ctx.args, needs, ctx.bias_dim != 1)
    return (gx if needs[0] else None, gw if needs[1] else None, gb if needs[2] else None) + (None,) * 4


tiled_conv2d_op.register_autograd(_grad, setup_context=_setup)


def _backward_setup(ctx, inputs, output):
    grad_y, x, weight, stride, padding, dilation, groups, needs, *_ = inputs  # per_position_bias: gg_b's shape
    ctx.save_for_backward(grad_y, x, weight)
    ctx.args = (stride, padding, dilation, groups)
    ctx.needs = needs
    ctx.extra = len(inputs) - 3  # non-tensor inputs, whose gradients are None


def _backward_grad(ctx, gg_x, gg_w, gg_b):
    """Double backward. The backward's outputs are linear in grad_y, grad_x also in the weight
    and grad_weight in x, so each adjoint is the op again (gg_*: the gradients arriving for
    grad_x, grad_weight, grad_bias per set or per channel: tiled_conv2d takes either):
      grad_y <- tiled_conv2d(gg_x, weight, bias=gg_b) + tiled_conv2d(x, gg_w)
      x      <- the grad_x of the backward with gg_w as the weight
      weight <- the grad_weight of the backward with gg_x as the input"""
    grad_y, x, weight = ctx.saved_tensors
    gg_x, gg_w, gg_b = (g if need and g is not None and g.numel() else None
                        for need, g in zip(ctx.needs, (gg_x, gg_w, gg_b)))
    d_grad_y = d_x = d_weight = None
    if ctx.needs_input_grad[0]:
        if gg_x is not None or gg_b is not None:
            d_grad_y = tiled_conv2d_op(gg_x if gg_x is not None else torch.zeros_like(x), weight, gg_b, *ctx.args)
        if gg_w is not None:
            term = tiled_conv2d_op(x, gg_w, None, *ctx.args)
            d_grad_y = term if d_grad_y is None else d_grad_y + term
    if ctx.needs_input_grad[1] and gg_w is not None:
        d_x = tiled_conv2d_backward_op(grad_y, x, gg_w, *ctx.args, [True, False, False])[0]
    if ctx.needs_input_grad[2] and gg_x is not None:
        d_weight = tiled_conv2d_backward_op(grad_y, gg_x, weight, *ctx.args, [False, True, False])[1]
    return (d_grad_y, d_x, d_weight) + (None,) * ctx.extra


tiled_conv2d_backward_op.register_autograd(_backward_grad, setup_context=_backward_setup)


def _args(x, weight, stride, padding, dilation):
    stride = list(as_tuple(stride, 2, "stride"))
    dilation = list(as_tuple(dilation, 2, "dilation"))
    if x.dim() != 4 or weight.dim() != 6:  # fastconv.local raises the full message
        return stride, padding, dilation
    pads = normalize_padding(padding, tuple(x.shape[2:]), tuple(weight.shape[-2:]), stride, dilation)
    return stride, [pads[0][0], pads[0][1], pads[1][0], pads[1][1]], dilation


def tiled_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """fastconv.tiled_conv2d, differentiable: x (N, C, H, W), weight (TP, TQ, K, C/groups, R, S),
    bias (K,) or (TP, TQ, K) or None."""
    if x.dim() != 4 or weight.dim() != 6:
        return fc.tiled_conv2d(x, weight, bias, stride, padding, dilation, groups)  # raises ValueError
    stride, pads, dilation = _args(x, weight, stride, padding, dilation)
    return call(tiled_conv2d_op, x, weight, bias, stride, pads, dilation, groups)


def local_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """fastconv.local_conv2d, differentiable: weight (P, Q, K, C/groups, R, S), bias (K,),
    (P, Q, K) or None; P, Q must be the output size."""
    if x.dim() != 4 or weight.dim() != 6:
        return fc.local_conv2d(x, weight, bias, stride, padding, dilation, groups)  # raises ValueError
    stride, pads, dilation = _args(x, weight, stride, padding, dilation)
    p = output_size(x.shape[2], pads[0], pads[1], weight.shape[-2], stride[0], dilation[0])
    q = output_size(x.shape[3], pads[2], pads[3], weight.shape[-1], stride[1], dilation[1])
    if tuple(weight.shape[:2]) != (p, q):
        return fc.local_conv2d(x.detach(), weight.detach(), None, stride, ((pads[0], pads[1]), (pads[2], pads[3])),
                               dilation, groups)  # raises the positions' ValueError
    return call(tiled_conv2d_op, x, weight, bias, stride, pads, dilation, groups)


class _Unshared(nn.Module):
    """Parameters and initialisation shared by the two layers (nn.Conv2d's: uniform in
    +-1/sqrt(fan_in), fan_in = C/groups * R * S, for the weight and the bias)."""

    def __init__(self, in_channels, out_channels, kernel_size, sets, stride, padding, dilation, groups, bias,
                 device, dtype):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        groups = int(groups)
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must be positive and divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if bias not in (True, False, "channel"):
            raise ValueError(f"bias must be True, False or 'channel', got {bias!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        self.stride = as_tuple(stride, 2, "stride")
        self.padding = padding
        self.dilation = as_tuple(dilation, 2, "dilation")
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(tuple(sets) + (out_channels, in_channels // groups)
                                               + self.kernel_size, **kw))
        if bias is False:
            self.register_parameter("bias", None)
        else:
            shape = (out_channels,) if bias == "channel" else tuple(sets) + (out_channels,)
            self.bias = nn.Parameter(torch.empty(shape, **kw))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.weight[0, 0, 0].numel())
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"sets={tuple(self.weight.shape[:2])}, bias={None if self.bias is None else tuple(self.bias.shape)}")


class LocallyConnected2d(_Unshared):
    """A locally connected layer (unshared convolution): a kernel per output position, for
    inputs of one size ``input_size`` (H, W) where position matters (aligned faces, digits in
    a fixed crop). weight (P, Q, out, in/groups, R, S), (P, Q) = the output size; ``bias``:
    True (per position, (P, Q, out), as Keras' LocallyConnected2D), 'channel' ((out,)) or False."""

    def __init__(self, in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, device=None, dtype=None):
        self.input_size = as_tuple(input_size, 2, "input_size")
        sets = fc.local_conv2d_output_size(self.input_size, kernel_size, stride, padding, dilation)
        super().__init__(in_channels, out_channels, kernel_size, sets, stride, padding, dilation, groups, bias,
                         device, dtype)

    def forward(self, input):
        return local_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class TiledConv2d(_Unshared):
    """Tiled convolution: ``tiles`` (TP, TQ) kernel sets cycled over the output positions
    (output (p, q) uses set (p % TP, q % TQ)); tiles 1 is Conv2d, tiles = the output size a
    LocallyConnected2d. weight (TP, TQ, out, in/groups, R, S); ``bias``: True (per set,
    (TP, TQ, out)), 'channel' ((out,)) or False."""

    def __init__(self, in_channels, out_channels, kernel_size, tiles, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, device=None, dtype=None):
        tiles = as_tuple(tiles, 2, "tiles")
        if any(t <= 0 for t in tiles):
            raise ValueError(f"tiles must be positive, got {tiles}")
        super().__init__(in_channels, out_channels, kernel_size, tiles, stride, padding, dilation, groups, bias,
                         device, dtype)

    def forward(self, input):
        return tiled_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
