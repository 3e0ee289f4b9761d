"""The receptive field of a torch.nn.Module: fastconv.arithmetic's table, following the module's
graph (torch.fx) so that residual sums and concatenations take the widest of their inputs.

    from fastconv.torch import receptive_field
    print(receptive_field(torchvision.models.resnet50(), 224))

Convolution and pooling modules (torch.nn's and fastconv.torch's, 1-D and 2-D) are the layers;
BatchNorm, activations, dropout and other one-input modules pass the field on; sums, products
and concatenations of feature maps merge it; flatten, view and linear layers end it (the table
stops at the last spatial layer). Adaptive pooling windows vary in size: the row gives the
widest window's field and the mean jump. A convolution called as a function (F.conv2d) has no
module to read its kernel from and is refused.
"""
from __future__ import annotations

import torch
import torch.fx
from torch import nn

from .. import arithmetic

__all__ = ["receptive_field"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.LPPool1d, nn.LPPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_ENDS = (nn.Linear, nn.Flatten, nn.Unflatten)
_ENDING_CALLS = {torch.flatten, torch.nn.functional.linear, torch.mean, torch.sum}
_ENDING_METHODS = {"view", "reshape", "flatten", "mean", "sum", "size", "squeeze", "unsqueeze", "permute"}
_REFUSED_CALLS = {torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.conv2d, torch.conv1d,
                  torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d}


class _Tracer(torch.fx.Tracer):
    """Keeps every convolution, pooling and end module whole (fastconv.torch's layers are
    subclasses of torch.nn's but live outside torch.nn, which fx would otherwise trace into)."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, _CONVS + _POOLS + _ADAPTIVE + _ENDS) or super().is_leaf_module(m, qualname)


def _pair(v, one_d, fill):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return (fill,) + v if one_d else (v * 2 if len(v) == 1 else v)


def _layer(m, name):
    """fastconv.arithmetic.Layer of a conv or pooling module."""
    one_d = isinstance(m, (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.LPPool1d))
    if isinstance(m, _CONVS):
        padding = m.padding if isinstance(m.padding, str) else _pair(m.padding, one_d, 0)
        return arithmetic.Layer.conv(_pair(m.kernel_size, one_d, 1), _pair(m.stride, one_d, 1), padding,
                                     _pair(m.dilation, one_d, 1), name=name)
    kernel = _pair(m.kernel_size, one_d, 1)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size, one_d, 1)
    padding = _pair(getattr(m, "padding", 0), one_d, 0)
    dilation = _pair(getattr(m, "dilation", 1), one_d, 1)
    return arithmetic.Layer.pool(kernel, stride, padding, dilation, bool(getattr(m, "ceil_mode", False)), name=name)


def _adaptive(row, m, name):
    """Row after adaptive pooling to m.output_size: window i of n inputs over `out` outputs is
    [floor(i n / out), ceil((i + 1) n / out))."""
    one_d = isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d))
    out = _pair(m.output_size, one_d, 1)
    size, rf, jump, start = [], [], [], []
    for a in range(2):
        n, o = row.size[a], out[a] if out[a] is not None else row.size[a]
        widest = max(-(-(i + 1) * n // o) - i * n // o for i in range(o))
        first_centre = (-(-n // o) - 1) / 2
        size.append(o)
        rf.append(row.rf[a] + (widest - 1) * row.jump[a])
        jump.append(row.jump[a] * n / o)
        start.append(row.start[a] + first_centre * row.jump[a])
    return arithmetic.FieldRow(name, f"adaptive to {out[0]}x{out[1]}", tuple(size), tuple(rf), tuple(jump),
                               tuple(start), (0, 0))


def receptive_field(module, input_size):
    """The receptive-field table (fastconv.arithmetic.ReceptiveField) of ``module`` on inputs of
    ``input_size`` (H, W; or an int: square, or the length of a 1-D network's input), one row
    per convolution and pooling layer in the order the forward runs them."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}; for a list of layers "
                        "use fastconv.receptive_field")
    graph = _Tracer().trace(module)
    modules = dict(module.named_modules())
    one_d = any(isinstance(m, (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.LPPool1d, nn.AdaptiveAvgPool1d,
                               nn.AdaptiveMaxPool1d)) for m in modules.values())
    first = arithmetic.input_row((1, input_size) if one_d and isinstance(input_size, int) else input_size)
    state, rows, placeholders = {}, [first], 0
    for node in graph.nodes:
        if node.op == "placeholder":  # the first argument is the image; others carry no field
            state[node] = first if placeholders == 0 else None
            placeholders += 1
            continue
        inputs = [state[a] for a in node.all_input_nodes if state.get(a) is not None]
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, _CONVS + _POOLS + _ADAPTIVE) and inputs:
                row = (_adaptive(inputs[0], m, node.target) if isinstance(m, _ADAPTIVE)
                       else arithmetic.step(inputs[0], _layer(m, node.target), node.target))
                rows.append(row)
                state[node] = row
                continue
            if isinstance(m, _ENDS):
                state[node] = None
                continue
        elif node.op == "call_function" and node.target in _REFUSED_CALLS:
            raise ValueError(f"{node.name}: {getattr(node.target, '__name__', node.target)} is called as a "
                             "function; receptive_field reads kernels from modules (nn.Conv2d, nn.MaxPool2d, ...)")
        elif (node.op == "call_function" and node.target in _ENDING_CALLS) or \
                (node.op == "call_method" and node.target in _ENDING_METHODS) or node.op == "output":
            state[node] = None
            continue
        # One input passes the field on; several merge (sum, product, concatenation).
        state[node] = (inputs[0] if len(inputs) == 1 else
                       arithmetic.merge(inputs, node.name) if inputs else None)
    return arithmetic.ReceptiveField(rows)

