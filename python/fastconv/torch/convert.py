"""convert(model): swap a model's torch.nn conv and pooling layers for fastconv's, in place.

    model = convert(model)                                  # returns the same model
    model, skipped = convert(model, report=True)            # plus what was left alone

Every module whose type is exactly one of torch.nn.Conv1d, Conv2d, MaxPool1d/2d, AvgPool1d/2d,
LPPool1d/2d, AdaptiveAvgPool1d/2d or AdaptiveMaxPool1d/2d is replaced by the fastconv
subclass of the same name (fastconv.torch.modules) that shares its state: the very same
Parameter and buffer objects (so an optimizer built before the conversion keeps working),
hooks and training flag. Left alone, and reported:

- other conv/pooling layers of torch.nn (Conv3d, ConvTranspose2d, MaxPool3d, FractionalMaxPool2d, ...):
  fastconv has no equivalent;
- subclasses of the supported types (their forward may do more than torch's);
- layers whose parameters are not CPU float32/float64 tensors (e.g. CUDA, float16).

The report is a list of ``Skipped(name, type, reason)``; it is also logged at INFO level on
the "fastconv.torch" logger. Layers that are not conv/pooling (Linear, BatchNorm, ReLU, ...)
are neither converted nor reported.

``fold_batchnorm=True`` (the default) also folds each torch.nn.BatchNorm2d into the Conv2d
whose output it alone reads, found in the model's torch.fx graph: the BatchNorm2d becomes a
fastconv.torch.modules.FoldedBatchNorm2d (same state), and in eval mode the convolution
computes the normalisation with its weights scaled and its bias shifted (plans fold them once),
so the model makes one pass over each activation less. Training mode, and a forward hook on
either layer, run the two layers as before. A model that torch.fx cannot trace keeps its
BatchNorm layers as they are (logged at INFO level).
"""
from __future__ import annotations

import collections
import logging

import torch
import torch.fx
from torch import nn

import fastconv as fc

from .modules import FASTCONV_CLASSES, Conv2d, FoldedBatchNorm2d, _FastconvModule

__all__ = ["convert", "Skipped"]

log = logging.getLogger("fastconv.torch")

Skipped = collections.namedtuple("Skipped", "name type reason")

_FAMILY_MODULES = ("torch.nn.modules.conv", "torch.nn.modules.pooling")
_DTYPES = (torch.float32, torch.float64)


def _cuda_ready():
    """True when this build has CUDA kernels and the CUDA runtime sees a GPU."""
    return fc._C.build_info()["cuda_kernels"] > 0 and bool(fc._C.cuda_devices()["devices"])


def _why_not(module):
    """'' if fastconv can take this layer over, else the reason it cannot (None: not a conv/pool layer)."""
    if isinstance(module, _FastconvModule):
        return None  # already fastconv's
    cls = type(module)
    if cls not in FASTCONV_CLASSES:
        if any(isinstance(module, base) for base in FASTCONV_CLASSES):
            return f"a subclass of torch.nn.{next(b for b in FASTCONV_CLASSES if isinstance(module, b)).__name__} " \
                   "(its forward may differ from torch's)"
        if cls.__module__ in _FAMILY_MODULES:
            return "fastconv has no equivalent of this layer"
        return None
    for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if tensor.device.type == "cuda" and not _cuda_ready():
            return f"{name} is on {tensor.device}; {fc.info()['cuda']}"
        if tensor.device.type not in ("cpu", "cuda"):
            return f"{name} is on {tensor.device}; fastconv runs on the CPU and on CUDA devices"
        if tensor.dtype not in _DTYPES:
            return f"{name} has dtype {tensor.dtype}; fastconv supports float32 and float64"
    return ""


def _retyped(module, cls):
    """A cls instance sharing module's state (parameters, buffers, hooks, flags)."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    # Own containers, same tensors: the old module (if anyone keeps it) stays independent.
    for attr in ("_parameters", "_buffers", "_modules"):
        new.__dict__[attr] = collections.OrderedDict(module.__dict__[attr])
    return new


def _swap(module, algorithm):
    """The fastconv layer sharing module's state."""
    new = _retyped(module, FASTCONV_CLASSES[type(module)])
    new._fastconv_init(algorithm)
    return new


class _Tracer(torch.fx.Tracer):
    """Keeps fastconv's layers whole (they live outside torch.nn, which fx would trace into)."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (_FastconvModule, FoldedBatchNorm2d)) or super().is_leaf_module(m, qualname)


def _conv_batchnorm_pairs(model, modules):
    """[(conv name, batchnorm name)]: each fastconv Conv2d called once whose output only a
    torch.nn.BatchNorm2d with running statistics reads, that BatchNorm2d called once, on as
    many channels. ``modules``: model's named_modules() as a dict."""
    graph = _Tracer().trace(model)
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        conv, (user,) = modules[node.target], node.users
        if type(conv) is not Conv2d or conv._folded_bn is not None or user.op != "call_module":
            continue
        bn = modules[user.target]
        if (type(bn) is nn.BatchNorm2d and bn.num_features == conv.out_channels and bn.running_var is not None
                and user.args[:1] == (node,)
                and calls[node.target] == 1 and calls[user.target] == 1):
            pairs.append((node.target, user.target))
    return pairs


def _fold_batchnorms(model):
    """Link every foldable (Conv2d, BatchNorm2d) pair of model (see the module docstring)."""
    modules = dict(model.named_modules())
    try:
        pairs = _conv_batchnorm_pairs(model, modules)
    except Exception as e:  # noqa: BLE001  fx refuses data-dependent control flow, and more
        log.info("fastconv.torch.convert folds no BatchNorm2d: torch.fx cannot trace %s (%s: %s)",
                 type(model).__name__, type(e).__name__, e)
        return
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        folded = _retyped(bn, FoldedBatchNorm2d)
        # Plain attributes, not submodules: state_dict and modules() are unchanged.
        folded.__dict__["folded_into"] = conv
        conv.__dict__["_folded_bn"] = folded
        parent_name, _, child = bn_name.rpartition(".")
        modules[parent_name]._modules[child] = folded


def convert(model, algorithm="auto", *, fold_batchnorm=True, report=False):
    """Replace every supported torch.nn conv/pooling layer of ``model`` (recursively, in
    place) by fastconv's, keeping its parameters; returns ``model`` (a new module if
    ``model`` itself is such a layer), or ``(model, skipped)`` with ``report=True``:
    ``skipped`` lists ``Skipped(name, type, reason)`` for each conv/pooling layer left alone.
    ``algorithm`` is given to every converted layer (fastconv.conv2d's names).
    ``fold_batchnorm``: fold BatchNorm2d layers into the convolutions before them in eval
    mode (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(algorithm, str):
        raise TypeError(f"convert: algorithm must be a string, got {algorithm!r}")
    skipped = []

    def visit(module, prefix):
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            path = f"{prefix}.{name}" if prefix else name
            why = _why_not(child)
            if why == "":
                module._modules[name] = _swap(child, algorithm)
                continue
            if why:
                skipped.append(Skipped(path, type(child).__name__, why))
            visit(child, path)

    why = _why_not(model)
    if why == "":
        model = _swap(model, algorithm)
    else:
        if why:
            skipped.append(Skipped("", type(model).__name__, why))
        visit(model, "")
    if fold_batchnorm and not isinstance(model, _FastconvModule):
        _fold_batchnorms(model)
    for s in skipped:
        log.info("fastconv.torch.convert left %s (%s) alone: %s", s.name or "the model", s.type, s.reason)
    return (model, skipped) if report else model
