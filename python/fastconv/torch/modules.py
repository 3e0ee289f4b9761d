"""torch.nn layers computed by fastconv: drop-in subclasses of torch.nn.Conv2d, MaxPool2d, ...

Each class subclasses its torch.nn namesake, so the constructor arguments, parameter names
(``weight``, ``bias``), initialisation (torch's own reset_parameters), ``state_dict`` layout
and ``isinstance`` checks are torch's: weights load both ways. Only ``forward`` changes, and
every class takes one more keyword argument, ``algorithm=`` (conv: fastconv's algorithm
names; pooling has a single kernel and accepts it for symmetry, "auto").

Convolutions keep a plan (``fastconv.plan_conv2d``: weights transformed/packed once) for
inference calls, i.e. when torch records nothing (``fastconv.torch.ops.records_nothing``:
``torch.no_grad()``/``inference_mode`` or nothing requires grad, and no torch.compile tracing,
functorch transform or dispatch mode). A plan is
keyed by the input's (C, H, W) and dtype, and every plan is dropped when the weight or bias
changes: a different tensor (identity, data_ptr) or an in-place update (the tensor's
``_version`` counter, bumped by optimizer steps, ``load_state_dict`` and ``copy_``).
Pooling layers keep a ``fastconv.pooling.PoolPlan`` (the call's checks, done once) per input
shape and dtype for inference calls, dropped when the layer's arguments change.
Training calls and compiled graphs run the custom ops (fastconv.torch.ops) instead.

``padding_mode`` other than 'zeros' pads with torch.nn.functional.pad first, as torch does.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as torch_F
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

import fastconv as fc
from fastconv._args import as_tuple, normalize_padding, positive
from fastconv.pooling import plan_pool

from . import functional as F
from . import ops

__all__ = ["Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "LPPool1d", "LPPool2d",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "WeightedAvgPool2d",
           "FoldedBatchNorm2d"]

_TORCH_DTYPES = (torch.float32, torch.float64)  # the dtypes fastconv computes in

# Inference outputs are NumPy arrays (np.empty) shared with torch (torch.from_numpy): ~8 us less a
# call than torch.empty and its NumPy view, and as fast or faster between torch ops (Zen 1, whole
# models interleaved with torch's: LeNet-5 batch 64 2.24 vs 2.34 ms and 1.99 vs 2.37 ms in two runs,
# batch 1 0.69 vs 0.83 ms, ResNet-50 178.4 vs 177.4 ms and 150.6 vs 148.1 ms).
_as_tensor = torch.from_numpy


def _numpy_of(x):
    """The NumPy view of a CPU tensor (of a contiguous copy when x is not contiguous);
    detached only when it requires grad: ~2 us less a call than x.detach().contiguous()."""
    if x.requires_grad:
        x = x.detach()
    if not x.is_contiguous():
        x = x.contiguous()
    return x.numpy()


# At most this many input shapes keep a plan per layer (variable-size inputs would otherwise grow it).
MAX_PLANS = 8


class _FastconvModule:
    """What every fastconv layer adds to its torch.nn base: ``algorithm`` and its repr."""

    def _fastconv_init(self, algorithm):
        if not isinstance(algorithm, str):
            raise TypeError(f"algorithm must be a string, got {algorithm!r}")
        self.algorithm = algorithm

    def extra_repr(self):
        return super().extra_repr() + f", algorithm={self.algorithm!r}"


class _PlannedModule(_FastconvModule):
    """The inference plans of a layer: ``_plans`` maps an input's (shape, dtype) to its plan,
    valid while ``_plans_key`` (the weights', or the pooling arguments') is unchanged."""

    def _fastconv_init(self, algorithm):
        super()._fastconv_init(algorithm)
        self.clear_plans()

    def clear_plans(self):
        """Drop the inference plans (they are re-made on the next inference call)."""
        self._plans, self._plans_key, self._last_plan = {}, None, None

    def __getstate__(self):
        # Plans hold thread-local workspaces (not picklable, not worth copying): deepcopy and
        # pickle get a layer that plans again on first use.
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_plans"], state["_plans_key"], state["_last_plan"] = {}, None, None
        return state

    def _cached_plan(self, valid_key, shape, dtype, make, any_batch=False):
        """The plan for an input of this shape and dtype (``any_batch``: one plan serves every
        batch size), made by ``make()`` on first use; a new ``valid_key`` (changed weights or
        arguments) drops every plan first. The last call's keys are compared first: a model
        calls each layer with one shape, and that costs less than hashing a key (~1 us)."""
        last = self._last_plan
        if last is not None and last[0] == valid_key and last[1] == shape and last[2] is dtype:
            return last[3]
        if valid_key != self._plans_key:
            self._plans, self._plans_key = {}, valid_key
        key = (shape[1:] if any_batch else shape, dtype)
        plan = self._plans.get(key)
        if plan is None:
            plan = make()
            if len(self._plans) >= MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        self._last_plan = (valid_key, shape, dtype, plan)
        return plan


class _ConvMixin(_PlannedModule):
    """Plan cache and forward shared by Conv1d and Conv2d."""

    def _padding_and_input(self, x):
        if self.padding_mode != "zeros":
            return torch_F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return x, self.padding

    def _plan_for(self, x4, w, b, pads, stride, dilation, bn=None):
        """The plan for a (N, C, H, W) input and the layer's weight w and bias b (read once
        by the caller: each parameter lookup through nn.Module costs microseconds); made on
        first use of each (C, H, W, dtype). ``pads()`` gives the explicit padding (only
        needed to make a plan). ``bn``: a BatchNorm folded into the plan's weights, whose
        parameters and running statistics join the key."""
        weights = (id(w), w.data_ptr(), w._version, self.algorithm) if b is None else \
            (id(w), w.data_ptr(), w._version, self.algorithm, id(b), b.data_ptr(), b._version)
        if bn is not None:
            weights += _batchnorm_key(bn)

        def make():
            nonlocal w, b
            if bn is not None:
                with torch.no_grad():
                    w, b = fold_batchnorm(w, b, bn)
            w4 = w if w.dim() == 4 else w.unsqueeze(2)
            return fc.plan_conv2d(w4.detach(), tuple(x4.shape), stride, pads(), dilation, self.groups,
                                  bias=None if b is None else b.detach(), algorithm=self.algorithm)
        return self._cached_plan(weights, x4.shape, x4.dtype, make, any_batch=True)

    def _weight_and_bias(self):
        """(weight, bias) from the parameter dict: nn.Module's attribute fallback costs ~4 us
        a call for the two; a parametrized or hooked attribute (not in the dict) is read as
        an attribute."""
        params = self._parameters
        w = params["weight"] if "weight" in params else self.weight
        b = params["bias"] if "bias" in params else self.bias
        return w, b

    @staticmethod
    def _run_plan(plan, x4):
        """plan(x4) for a torch tensor: a CPU tensor goes through its NumPy view (no copy when
        contiguous) and plan.run_array, skipping plan(x)'s type dispatch (~15 us a call); the
        output is a NumPy array handed to torch (``_as_tensor``); any other tensor takes
        plan(x), which raises the clear error."""
        if not x4.is_cpu or x4.dtype not in _TORCH_DTYPES:
            return plan(x4)
        return _as_tensor(plan.run_array(_numpy_of(x4)))


class Conv2d(_ConvMixin, nn.Conv2d):
    """torch.nn.Conv2d computed by fastconv; ``algorithm=`` as fastconv.conv2d's."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, algorithm="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._fastconv_init(algorithm)

    # The BatchNorm2d that convert() folded into this layer (a FoldedBatchNorm2d), or None.
    _folded_bn = None

    def forward(self, input):
        x, padding = self._padding_and_input(input)
        w, b = self._weight_and_bias()
        bn = self._folded_bn
        if bn is not None and not batchnorm_folds(self, bn):
            bn = None
        if x.dim() == 4 and ops.records_nothing((x, w, b) if bn is None else (x, w, b) + bn.tensors()[:2]):
            def pads():
                return normalize_padding(padding, tuple(x.shape[2:]), tuple(w.shape[2:]), self.stride,
                                         self.dilation)
            return self._run_plan(self._plan_for(x, w, b, pads, self.stride, self.dilation, bn), x)
        if bn is not None:
            w, b = fold_batchnorm(w, b, bn)
        return F.conv2d(x, w, b, self.stride, padding, self.dilation, self.groups, algorithm=self.algorithm)


class Conv1d(_ConvMixin, nn.Conv1d):
    """torch.nn.Conv1d computed by fastconv (as a conv2d with H = 1)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, algorithm="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._fastconv_init(algorithm)

    def forward(self, input):
        x, padding = self._padding_and_input(input)
        w, b = self._weight_and_bias()
        if x.dim() == 3 and ops.records_nothing((x, w, b)):
            def pads():
                pad = padding[0] if isinstance(padding, (tuple, list)) and len(padding) == 1 else padding
                (lr,) = normalize_padding(pad, (x.shape[2],), (w.shape[2],), self.stride, self.dilation)
                return ((0, 0), lr)
            x4 = x.unsqueeze(2)
            plan = self._plan_for(x4, w, b, pads, (1, self.stride[0]), (1, self.dilation[0]))
            return self._run_plan(plan, x4).squeeze(2)
        return F.conv1d(x, w, b, self.stride, padding, self.dilation, self.groups, algorithm=self.algorithm)


# ---- batch normalisation folded into the convolution before it ------------------------------------
# In inference a BatchNorm2d is a per-channel affine map, y = (x - mean) * g / sqrt(var + eps) + beta,
# so the convolution before it can compute it: weight * s and (bias - mean) * s + beta with
# s = g / sqrt(var + eps), one pass over the activations less (ResNet-50 batch 1 on Zen 3: 4 of
# 53 ms). convert() pairs a Conv2d with the BatchNorm2d that alone reads its output (found in the
# model's torch.fx graph) and links them; both check batchnorm_folds on every call, so they agree
# on who computes the normalisation.

# These run on every inference call of a folded pair: they read the modules' dicts, as
# _weight_and_bias does (nn.Module's attribute fallback costs ~1 us a tensor).

def batchnorm_folds(conv, bn):
    """True when conv computes bn's normalisation: both in eval mode, bn normalising with its
    running statistics, and no forward hook that would see the difference (conv's output,
    bn's input or output; torch's global hooks)."""
    return (not conv.training and not bn.training and bn._buffers.get("running_var") is not None
            and not (conv._forward_hooks or bn._forward_hooks or bn._forward_pre_hooks
                     or _global_forward_hooks or _global_forward_pre_hooks))


def _batchnorm_key(bn):
    """What a plan folded from bn depends on: its tensors (identity, storage, version) and eps."""
    key = (bn.eps,)
    for t in bn.tensors():
        key += (None,) if t is None else (id(t), t.data_ptr(), t._version)
    return key


def fold_batchnorm(weight, bias, bn):
    """(weight, bias) of a convolution followed by bn in eval mode, as one convolution;
    differentiable in weight, bias, bn.weight and bn.bias."""
    gamma, beta, mean, var = bn.tensors()
    scale = torch.rsqrt(var + bn.eps)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale if bias is None else (bias - mean) * scale
    if beta is not None:
        shift = shift + beta
    return weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1)).to(weight.dtype), shift.to(weight.dtype)


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """A torch.nn.BatchNorm2d whose normalisation its convolution (``folded_into``) computes
    while batchnorm_folds holds: forward then passes its input on. Otherwise (training,
    hooks) it is torch's BatchNorm2d. Made by convert(); shares the original's state."""

    folded_into = None

    def tensors(self):
        """(weight, bias, running_mean, running_var); weight and bias None without affine."""
        params, buffers = self._parameters, self._buffers
        return (params["weight"] if "weight" in params else self.weight,
                params["bias"] if "bias" in params else self.bias,
                buffers.get("running_mean"), buffers.get("running_var"))

    def forward(self, input):
        conv = self.folded_into
        if conv is not None and batchnorm_folds(conv, self):
            return input
        return super().forward(input)

    def extra_repr(self):
        return super().extra_repr() + ", folded into the convolution before it"


# ---- pooling --------------------------------------------------------------------------------------
# Each __init__ forwards torch's arguments untouched. forward passes the attributes torch's own
# forward reads (``_pool_args``, in the functional's order) to fastconv.torch.functional, or, for
# inference calls, to a PoolPlan (fastconv.pooling.plan_pool: the call's checks done once per
# input shape and arguments; ~50 us less a call than the functional path).

class _PoolMixin(_PlannedModule):
    """Forward shared by the pooling layers; a class names its op (``_op``, a function of both
    fastconv.pooling and fastconv.torch.functional) and its arguments (``_pool_args``)."""
    _op = ""

    def forward(self, input):
        args = self._pool_args()
        if input.is_cpu and input.dtype in _TORCH_DTYPES and ops.records_nothing((input,)):
            plan = self._plan_for(input, args)
            if plan is not None:
                x = _numpy_of(input)
                y = np.empty(plan.output_shape, x.dtype)
                if not plan.with_indices:
                    plan.run_array(x, y)
                    return _as_tensor(y)
                idx = np.empty(plan.output_shape, np.int64)
                plan.run_array(x, y, idx)
                return _as_tensor(y), _as_tensor(idx)
        return getattr(F, self._op)(input, *args)

    def _plan_for(self, x, args):
        """The plan for x's shape and dtype and these arguments, made on first use; None when
        the arguments or x are invalid (the functional path then raises its clear error)."""
        try:
            return self._cached_plan(args, x.shape, x.dtype, lambda: plan_pool(self._op, x.detach(), *args))
        except (TypeError, ValueError):
            return None


class MaxPool2d(_PoolMixin, nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by fastconv."""
    _op = "max_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False, *,
                 algorithm="auto"):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)


class MaxPool1d(_PoolMixin, nn.MaxPool1d):
    """torch.nn.MaxPool1d computed by fastconv."""
    _op = "max_pool1d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False, *,
                 algorithm="auto"):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)


class AvgPool2d(_PoolMixin, nn.AvgPool2d):
    """torch.nn.AvgPool2d computed by fastconv."""
    _op = "avg_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, algorithm="auto"):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)


class AvgPool1d(_PoolMixin, nn.AvgPool1d):
    """torch.nn.AvgPool1d computed by fastconv."""
    _op = "avg_pool1d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
                 algorithm="auto"):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


class LPPool2d(_PoolMixin, nn.LPPool2d):
    """torch.nn.LPPool2d computed by fastconv."""
    _op = "lp_pool2d"

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False, *, algorithm="auto"):
        super().__init__(norm_type, kernel_size, stride, ceil_mode)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)


class LPPool1d(_PoolMixin, nn.LPPool1d):
    """torch.nn.LPPool1d computed by fastconv."""
    _op = "lp_pool1d"

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False, *, algorithm="auto"):
        super().__init__(norm_type, kernel_size, stride, ceil_mode)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)


class AdaptiveAvgPool2d(_PoolMixin, nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d computed by fastconv."""
    _op = "adaptive_avg_pool2d"

    def __init__(self, output_size, *, algorithm="auto"):
        super().__init__(output_size)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.output_size,)


class AdaptiveAvgPool1d(_PoolMixin, nn.AdaptiveAvgPool1d):
    """torch.nn.AdaptiveAvgPool1d computed by fastconv."""
    _op = "adaptive_avg_pool1d"

    def __init__(self, output_size, *, algorithm="auto"):
        super().__init__(output_size)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.output_size,)


class AdaptiveMaxPool2d(_PoolMixin, nn.AdaptiveMaxPool2d):
    """torch.nn.AdaptiveMaxPool2d computed by fastconv."""
    _op = "adaptive_max_pool2d"

    def __init__(self, output_size, return_indices=False, *, algorithm="auto"):
        super().__init__(output_size, return_indices)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_PoolMixin, nn.AdaptiveMaxPool1d):
    """torch.nn.AdaptiveMaxPool1d computed by fastconv."""
    _op = "adaptive_max_pool1d"

    def __init__(self, output_size, return_indices=False, *, algorithm="auto"):
        super().__init__(output_size, return_indices)
        self._fastconv_init(algorithm)

    def _pool_args(self):
        return (self.output_size, self.return_indices)


# torch.nn class -> its fastconv subclass (convert() swaps exactly these types).
FASTCONV_CLASSES = {
    nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.MaxPool1d: MaxPool1d, nn.MaxPool2d: MaxPool2d,
    nn.AvgPool1d: AvgPool1d, nn.AvgPool2d: AvgPool2d, nn.LPPool1d: LPPool1d, nn.LPPool2d: LPPool2d,
    nn.AdaptiveAvgPool1d: AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d: AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d,
}


class WeightedAvgPool2d(nn.Module):
    """Distance-weighted average pooling (fastconv.weighted_avg_pool2d) as a layer: the window
    (``weight``, or the Gaussian of ``sigma``; float64, (R, S)) is the buffer ``weight``, part of
    the state_dict and not trained. Differentiable in the input; any device fastconv runs on."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, sigma=1.0,
                 weight=None, normalize=True):
        super().__init__()
        k = tuple(positive(as_tuple(kernel_size, 2, "kernel_size"), "kernel_size"))
        self.kernel_size = k
        self.stride = k if stride is None else tuple(as_tuple(stride, 2, "stride"))
        self.padding = tuple(as_tuple(padding, 2, "padding"))
        self.ceil_mode, self.count_include_pad, self.normalize = bool(ceil_mode), bool(count_include_pad), \
            bool(normalize)
        self.sigma = None if weight is not None else sigma
        if isinstance(weight, torch.Tensor):
            weight = weight.detach().cpu().numpy()
        window = fc.pool_window_weights(k, sigma=sigma, weight=weight, normalize=self.normalize)
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(window, np.float64)))

    def forward(self, input):
        return F.weighted_avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                     self.count_include_pad, weight=self.weight, normalize=self.normalize)

    def extra_repr(self):
        window = "weight" if self.sigma is None else f"sigma={self.sigma}"
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}, {window}, "
                f"normalize={self.normalize}")
