"""fastconv's kernels as PyTorch custom operators (``torch.ops.fastconv.*``).

Each op is registered with ``torch.library.custom_op`` together with a fake (meta)
implementation, which gives torch.compile the output shapes without running anything, and
``register_autograd``, which makes it differentiable (torch builds the autograd.Function from
it). These ops are THE implementation: fastconv.torch's functions and modules call them, so
eager mode, autograd and torch.compile all run the same code. Inference calls (no gradient to
record, no tracing: ``records_nothing``) go through ``call``, which runs the op's own function
without the dispatcher's ~20 us.

The ops take arguments already normalised by fastconv.torch.functional: 2-D only (1-D runs as
2-D with H = 1, through views that autograd follows), explicit per-side padding
``[top, bottom, left, right]`` for conv2d, lists of two ints for pooling windows. The backward
ops are custom ops too, so a compiled graph's backward calls them as well, and they are
differentiable in turn (double backward) except Lp pooling's: each is linear in grad_y (and
conv2d's in x and the weight apart), so its adjoints are fastconv's ops again.

fastconv's functions take the tensors as they are: a CPU tensor goes to NumPy with
``.detach().numpy()`` (no copy when contiguous) and comes back with ``torch.from_numpy``; a CUDA
tensor is described to the core by its data pointer (zero-copy), its outputs come from torch's
caching allocator and its kernels run on ``torch.cuda.current_stream()`` (fastconv._arrays).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

import fastconv as fc
from fastconv import algorithms as _algorithms
from fastconv._args import output_size, pool_output_size

Tensor = torch.Tensor


def _pairs(padding):
    """[top, bottom, left, right] -> ((top, bottom), (left, right)), fastconv's per-side form."""
    return ((padding[0], padding[1]), (padding[2], padding[3]))


def _unused(like):
    """Placeholder for a gradient nobody asked for: custom ops cannot return None."""
    return like.new_empty(0)


def backward_algorithm(algorithm):
    """The backward pass's algorithm for a forward ``algorithm=``: forward-only algorithms
    (Winograd, FFT, autotune) differentiate with ``auto``'s choice."""
    return algorithm if algorithm in _algorithms.backward_available() else "auto"


# ---- registration and eager calls --------------------------------------------------------------

_IMPLS = {}  # custom op -> the plain function it was made from


def _custom_op(name):
    """``torch.library.custom_op(name)`` for every device (fastconv's array adapter decides
    where a call runs, and refuses a device it has no kernels for), keeping the plain
    function for ``call``."""
    def register(fn):
        op = torch.library.custom_op(name, mutates_args=())(fn)
        _IMPLS[op] = fn
        return op
    return register


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)  # not subclasses: FakeTensor, tensor-likes
# Looked up once: each layer call asks all of them (attribute lookups were a third of the cost).
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_grad_enabled = torch._C.is_grad_enabled


def records_nothing(args):
    """True when torch would record nothing about a call with these arguments: eager mode
    (no torch.compile tracing, functorch transform, dispatch or function mode), plain CPU
    tensors, and no gradient to track."""
    if _is_compiling() or _functorch_active() or _dispatch_modes() or _function_mode():
        return False
    grad = _grad_enabled()
    for a in args:  # type() first: plain tensors, the common case, skip the slower isinstance
        if a is not None and (type(a) not in _PLAIN_TENSORS or (grad and a.requires_grad)) \
                and isinstance(a, torch.Tensor):
            return False
    return True


def call(op, *args):
    """``op(*args)``. In inference (``records_nothing``) it runs the op's function directly: the
    dispatcher and autograd wrapper cost ~20 us a call, as much as a small layer's kernel."""
    if records_nothing(args):
        return _IMPLS[op](*args)
    return op(*args)


# ---- conv2d ---------------------------------------------------------------------------------

@_custom_op("fastconv::conv2d")
def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
           dilation: List[int], groups: int, flip: bool, algorithm: str) -> Tensor:
    return fc.conv2d(x, weight, bias, tuple(stride), _pairs(padding), tuple(dilation), groups, flip=flip,
                     algorithm=algorithm)


@conv2d.register_fake
def _conv2d_fake(x, weight, bias, stride, padding, dilation, groups, flip, algorithm):
    n, _, h, w = x.shape
    k, _, r, s = weight.shape
    p = output_size(h, padding[0], padding[1], r, stride[0], dilation[0])
    q = output_size(w, padding[2], padding[3], s, stride[1], dilation[1])
    return x.new_empty((n, k, p, q))


@_custom_op("fastconv::conv2d_backward")
def conv2d_backward(grad_y: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int],
                    dilation: List[int], groups: int, flip: bool, algorithm: str,
                    needs: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    gx, gw, gb = fc.conv2d_backward(grad_y, x, weight, tuple(stride), _pairs(padding), tuple(dilation), groups,
                                    flip=flip, algorithm=algorithm, needs=tuple(needs))
    return (gx if gx is not None else _unused(x), gw if gw is not None else _unused(x),
            gb if gb is not None else _unused(x))


@conv2d_backward.register_fake
def _conv2d_backward_fake(grad_y, x, weight, stride, padding, dilation, groups, flip, algorithm, needs):
    return (x.new_empty(x.shape) if needs[0] else _unused(x), x.new_empty(weight.shape) if needs[1] else _unused(x),
            x.new_empty((weight.shape[0],)) if needs[2] else _unused(x))


def _conv2d_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, flip, algorithm = inputs
    ctx.save_for_backward(x, weight)
    ctx.args = (stride, padding, dilation, groups, flip, backward_algorithm(algorithm))
    ctx.has_bias = bias is not None


def _conv2d_grad(ctx, grad_y):
    x, weight = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    if not any(needs):
        return (None,) * 9
    gx, gw, gb = conv2d_backward(grad_y, x, weight, *ctx.args, needs)
    return (gx if needs[0] else None, gw if needs[1] else None, gb if needs[2] else None) + (None,) * 6


conv2d.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)


def _conv2d_backward_setup(ctx, inputs, output):
    grad_y, x, weight, stride, padding, dilation, groups, flip, algorithm, needs = inputs
    ctx.save_for_backward(grad_y, x, weight)
    ctx.args = (stride, padding, dilation, groups, flip, algorithm)
    ctx.needs = needs


def _conv2d_backward_grad(ctx, gg_x, gg_w, gg_b):
    """Double backward. conv2d_backward's outputs are linear in grad_y, grad_x also in the weight
    and grad_weight in x, so each adjoint is a convolution again (gg_*: the gradients arriving
    for grad_x, grad_weight, grad_bias):
      grad_y <- conv2d(gg_x, weight, bias=gg_b) + conv2d(x, gg_w)
      x      <- the grad_x of conv2d_backward(grad_y, x, gg_w)       (grad_weight's dependence)
      weight <- the grad_weight of conv2d_backward(grad_y, gg_x, w)  (grad_x's dependence)
    These are the ops themselves, so higher derivatives follow."""
    grad_y, x, weight = ctx.saved_tensors
    gg_x, gg_w, gg_b = (g if need and g is not None else None for need, g in zip(ctx.needs, (gg_x, gg_w, gg_b)))
    args = ctx.args  # stride, padding, dilation, groups, flip, algorithm
    d_grad_y = d_x = d_weight = None
    if ctx.needs_input_grad[0]:
        if gg_x is not None:
            d_grad_y = conv2d(gg_x, weight, gg_b, *args)
        elif gg_b is not None:
            d_grad_y = gg_b.view(1, -1, 1, 1).expand(grad_y.shape)
        if gg_w is not None:
            term = conv2d(x, gg_w, None, *args)
            d_grad_y = term if d_grad_y is None else d_grad_y + term
    if ctx.needs_input_grad[1] and gg_w is not None:
        d_x = conv2d_backward(grad_y, x, gg_w, *args, [True, False, False])[0]
    if ctx.needs_input_grad[2] and gg_x is not None:
        d_weight = conv2d_backward(grad_y, gg_x, weight, *args, [False, True, False])[1]
    return (d_grad_y, d_x, d_weight) + (None,) * 7


conv2d_backward.register_autograd(_conv2d_backward_grad, setup_context=_conv2d_backward_setup)


# ---- max pooling ----------------------------------------------------------------------------

def _pool_shape(x, kernel, stride, padding, dilation, ceil_mode):
    """The pooled shape of x (N, C, H, W) or (C, H, W), by torch's rule."""
    p = pool_output_size(x.shape[-2], kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    q = pool_output_size(x.shape[-1], kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    return tuple(x.shape[:-2]) + (p, q)


@_custom_op("fastconv::max_pool2d")
def max_pool2d(x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
               ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    return fc.max_pool2d(x, tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), ceil_mode,
                         return_indices=True)


@max_pool2d.register_fake
def _max_pool2d_fake(x, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool_shape(x, kernel_size, stride, padding, dilation, ceil_mode)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


@_custom_op("fastconv::max_pool2d_backward")
def max_pool2d_backward(grad_y: Tensor, x: Tensor, indices: Tensor, kernel_size: List[int], stride: List[int],
                        padding: List[int], dilation: List[int], ceil_mode: bool) -> Tensor:
    return fc.max_pool2d_backward(grad_y, x, tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation),
                                  ceil_mode, indices=indices)


@max_pool2d_backward.register_fake
def _max_pool2d_backward_fake(grad_y, x, indices, kernel_size, stride, padding, dilation, ceil_mode):
    return x.new_empty(x.shape)


def _max_pool2d_setup(ctx, inputs, output):
    x, *args = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1])
    ctx.args = args


def _max_pool2d_grad(ctx, grad_y, _grad_indices):
    x, indices = ctx.saved_tensors
    return (max_pool2d_backward(grad_y, x, indices, *ctx.args),) + (None,) * 5


max_pool2d.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)


def _gather_at(grad, indices):
    """grad (.., H, W) read at max pooling's flat per-plane indices (.., P, Q): the adjoint of
    scattering through them, i.e. the double backward of a max pool's backward."""
    return grad.flatten(-2).gather(-1, indices.flatten(-2)).view(indices.shape)


def _indices_setup(ctx, inputs, output):
    """Max pooling backward ops (grad_y, x, indices, ...): linear in grad_y alone."""
    ctx.save_for_backward(inputs[2])
    ctx.nargs = len(inputs)


def _max_pool_backward_grad(ctx, gg_x):
    (indices,) = ctx.saved_tensors
    return (_gather_at(gg_x, indices),) + (None,) * (ctx.nargs - 1)


max_pool2d_backward.register_autograd(_max_pool_backward_grad, setup_context=_indices_setup)


# ---- average pooling --------------------------------------------------------------------------

@_custom_op("fastconv::avg_pool2d")
def avg_pool2d(x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    return fc.avg_pool2d(x, tuple(kernel_size), tuple(stride), tuple(padding), ceil_mode, count_include_pad,
                         divisor_override)


@avg_pool2d.register_fake
def _avg_pool2d_fake(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return x.new_empty(_pool_shape(x, kernel_size, stride, padding, (1, 1), ceil_mode))


@_custom_op("fastconv::avg_pool2d_backward")
def avg_pool2d_backward(grad_y: Tensor, x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                        ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    return fc.avg_pool2d_backward(grad_y, x, tuple(kernel_size), tuple(stride), tuple(padding), ceil_mode,
                                  count_include_pad, divisor_override)


@avg_pool2d_backward.register_fake
def _avg_pool2d_backward_fake(grad_y, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override):
    return x.new_empty(x.shape)


def _x_setup(ctx, inputs, output):
    """Pooling ops whose backward needs only x and the forward's arguments."""
    x, *args = inputs
    ctx.save_for_backward(x)
    ctx.args = args


def _avg_pool2d_grad(ctx, grad_y):
    (x,) = ctx.saved_tensors
    return (avg_pool2d_backward(grad_y, x, *ctx.args),) + (None,) * 6


avg_pool2d.register_autograd(_avg_pool2d_grad, setup_context=_x_setup)


def _args_setup(ctx, inputs, output):
    """Average pooling backward ops (grad_y, x, *args): linear in grad_y alone, the adjoint of
    the forward op with the same args."""
    ctx.args = inputs[2:]


def _forward_as_adjoint(forward):
    """The double backward of an average pooling backward op: its forward op on gg_x, and
    nothing for x and the args."""
    def grad(ctx, gg_x):
        return (forward(gg_x, *ctx.args), None) + (None,) * len(ctx.args)
    return grad


avg_pool2d_backward.register_autograd(_forward_as_adjoint(avg_pool2d), setup_context=_args_setup)


# ---- Lp pooling --------------------------------------------------------------------------------

@_custom_op("fastconv::lp_pool2d")
def lp_pool2d(x: Tensor, norm_type: float, kernel_size: List[int], stride: List[int], ceil_mode: bool) -> Tensor:
    return fc.lp_pool2d(x, norm_type, tuple(kernel_size), tuple(stride), ceil_mode)


@lp_pool2d.register_fake
def _lp_pool2d_fake(x, norm_type, kernel_size, stride, ceil_mode):
    return x.new_empty(_pool_shape(x, kernel_size, stride, (0, 0), (1, 1), ceil_mode))


@_custom_op("fastconv::lp_pool2d_backward")
def lp_pool2d_backward(grad_y: Tensor, x: Tensor, norm_type: float, kernel_size: List[int], stride: List[int],
                       ceil_mode: bool) -> Tensor:
    return fc.lp_pool2d_backward(grad_y, x, norm_type, tuple(kernel_size), tuple(stride), ceil_mode)


@lp_pool2d_backward.register_fake
def _lp_pool2d_backward_fake(grad_y, x, norm_type, kernel_size, stride, ceil_mode):
    return x.new_empty(x.shape)


def _lp_pool2d_grad(ctx, grad_y):
    (x,) = ctx.saved_tensors
    return (lp_pool2d_backward(grad_y, x, *ctx.args),) + (None,) * 4


lp_pool2d.register_autograd(_lp_pool2d_grad, setup_context=_x_setup)


# ---- adaptive pooling ----------------------------------------------------------------------------

@_custom_op("fastconv::adaptive_avg_pool2d")
def adaptive_avg_pool2d(x: Tensor, output_size: List[int]) -> Tensor:
    return fc.adaptive_avg_pool2d(x, tuple(output_size))


@adaptive_avg_pool2d.register_fake
def _adaptive_avg_pool2d_fake(x, output_size):
    return x.new_empty(tuple(x.shape[:-2]) + tuple(output_size))


@_custom_op("fastconv::adaptive_avg_pool2d_backward")
def adaptive_avg_pool2d_backward(grad_y: Tensor, x: Tensor, output_size: List[int]) -> Tensor:
    return fc.adaptive_avg_pool2d_backward(grad_y, x, tuple(output_size))


@adaptive_avg_pool2d_backward.register_fake
def _adaptive_avg_pool2d_backward_fake(grad_y, x, output_size):
    return x.new_empty(x.shape)


def _adaptive_avg_pool2d_grad(ctx, grad_y):
    (x,) = ctx.saved_tensors
    return adaptive_avg_pool2d_backward(grad_y, x, *ctx.args), None


adaptive_avg_pool2d.register_autograd(_adaptive_avg_pool2d_grad, setup_context=_x_setup)


adaptive_avg_pool2d_backward.register_autograd(_forward_as_adjoint(adaptive_avg_pool2d), setup_context=_args_setup)


@_custom_op("fastconv::adaptive_max_pool2d")
def adaptive_max_pool2d(x: Tensor, output_size: List[int]) -> Tuple[Tensor, Tensor]:
    return fc.adaptive_max_pool2d(x, tuple(output_size), return_indices=True)


@adaptive_max_pool2d.register_fake
def _adaptive_max_pool2d_fake(x, output_size):
    shape = tuple(x.shape[:-2]) + tuple(output_size)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


@_custom_op("fastconv::adaptive_max_pool2d_backward")
def adaptive_max_pool2d_backward(grad_y: Tensor, x: Tensor, indices: Tensor, output_size: List[int]) -> Tensor:
    return fc.adaptive_max_pool2d_backward(grad_y, x, tuple(output_size), indices=indices)


@adaptive_max_pool2d_backward.register_fake
def _adaptive_max_pool2d_backward_fake(grad_y, x, indices, output_size):
    return x.new_empty(x.shape)


def _adaptive_max_pool2d_grad(ctx, grad_y, _grad_indices):
    x, indices = ctx.saved_tensors
    return adaptive_max_pool2d_backward(grad_y, x, indices, *ctx.args), None


adaptive_max_pool2d.register_autograd(_adaptive_max_pool2d_grad, setup_context=_max_pool2d_setup)
adaptive_max_pool2d_backward.register_autograd(_max_pool_backward_grad, setup_context=_indices_setup)


# ---- distance-weighted average pooling ----------------------------------------------------------
# The window is a tensor argument (a constant: it gets no gradient), so a module keeps it as a
# buffer and torch.compile sees it as an input.

@_custom_op("fastconv::weighted_avg_pool2d")
def weighted_avg_pool2d(x: Tensor, window: Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                        ceil_mode: bool, count_include_pad: bool, normalize: bool) -> Tensor:
    return fc.weighted_avg_pool2d(x, tuple(kernel_size), tuple(stride), tuple(padding), ceil_mode, count_include_pad,
                                  weight=window, normalize=normalize)


@weighted_avg_pool2d.register_fake
def _weighted_avg_pool2d_fake(x, window, kernel_size, stride, padding, ceil_mode, count_include_pad, normalize):
    return x.new_empty(_pool_shape(x, kernel_size, stride, padding, (1, 1), ceil_mode))


@_custom_op("fastconv::weighted_avg_pool2d_backward")
def weighted_avg_pool2d_backward(grad_y: Tensor, x: Tensor, window: Tensor, kernel_size: List[int],
                                 stride: List[int], padding: List[int], ceil_mode: bool, count_include_pad: bool,
                                 normalize: bool) -> Tensor:
    return fc.weighted_avg_pool2d_backward(grad_y, x, tuple(kernel_size), tuple(stride), tuple(padding), ceil_mode,
                                           count_include_pad, weight=window, normalize=normalize)


@weighted_avg_pool2d_backward.register_fake
def _weighted_avg_pool2d_backward_fake(grad_y, x, window, kernel_size, stride, padding, ceil_mode,
                                       count_include_pad, normalize):
    return x.new_empty(x.shape)


def _weighted_setup(ctx, inputs, output):
    x, window, *args = inputs
    ctx.save_for_backward(x, window)
    ctx.args = args


def _weighted_grad(ctx, grad_y):
    x, window = ctx.saved_tensors
    return (weighted_avg_pool2d_backward(grad_y, x, window, *ctx.args), None) + (None,) * 6


weighted_avg_pool2d.register_autograd(_weighted_grad, setup_context=_weighted_setup)


def _weighted_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])
    ctx.args = inputs[3:]


def _weighted_backward_grad(ctx, gg_x):
    """Linear in grad_y: the double backward is the forward on gg_x (nothing for x, the window)."""
    (window,) = ctx.saved_tensors
    return (weighted_avg_pool2d(gg_x, window, *ctx.args), None, None) + (None,) * 6


weighted_avg_pool2d_backward.register_autograd(_weighted_backward_grad, setup_context=_weighted_backward_setup)
