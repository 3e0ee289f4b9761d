"""The table of bad inputs (issue 19, item 7): each row is a call, as Python source run against
the arrays named below, the exception it raises and its exact message. tests/test_errors.py
runs every row; README.md's "Errors" section is this table rendered by tools/errors_table.py,
and a test checks README holds exactly that rendering, so the three cannot drift apart.

A row whose exception is None is an edge case the contract accepts (it returns what the
message column says), listed so the table answers "is this an error?" for it too.

The arrays the calls use (NumPy, float32 unless said):
    X (2, 4, 8, 8)   W (6, 4, 3, 3)   B (6,)      a conv2d's input, weight and bias
    X1 (2, 4, 10)    W1 (6, 4, 3)                 a conv1d's input and weight
    GY (2, 6, 6, 6)                               the gradient of conv2d(X, W)'s output
    P (1, 2, 5, 5)   GP (1, 2, 2, 2)              a pooling input, max_pool2d(P, 2)'s output gradient
    E(a)                                          a as an array on the (emulated) CUDA device 0
"""
from collections import namedtuple

import numpy as np

import emulated
import fastconv

BadInput = namedtuple("BadInput", "what call exception message cuda")


def namespace():
    """The names a row's call may use: fastconv's functions and the arrays above."""
    ns = {name: getattr(fastconv, name) for name in fastconv.__all__ if not name.startswith("_")}
    ns.update(np=np, E=lambda a: emulated.EmulatedArray(np.ascontiguousarray(a)),
              X=np.zeros((2, 4, 8, 8), np.float32), W=np.zeros((6, 4, 3, 3), np.float32),
              B=np.zeros(6, np.float32), X1=np.zeros((2, 4, 10), np.float32), W1=np.zeros((6, 4, 3), np.float32),
              GY=np.zeros((2, 6, 6, 6), np.float32), P=np.zeros((1, 2, 5, 5), np.float32),
              GP=np.zeros((1, 2, 2, 2), np.float32))
    return ns


def row(what, call, exception, message, cuda=False):
    return BadInput(what, call, exception, message, cuda)


ROWS = [
    row('wrong rank (input)', 'conv2d(X[0], W)', 'ValueError',
        'conv2d: input must be 4-D (N, C, H, W), got shape (4, 8, 8)'),
    row('wrong rank (weight)', 'conv2d(X, W[0])', 'ValueError',
        'conv2d: weight must be 4-D (K, C/groups, R, S), got shape (4, 3, 3)'),
    row('wrong rank (conv1d)', 'conv1d(X, W)', 'ValueError',
        'conv1d: input must be 3-D (N, C, L), got shape (2, 4, 8, 8)'),
    row('wrong rank (pooling)', 'max_pool2d(P[0, 0, 0], 2)', 'ValueError',
        'max_pool2d: input must be 4-D or 3-D (N, C, H, W) or (C, H, W), got shape (5,)'),
    row('channel mismatch', 'conv2d(X, W[:, :3])', 'ValueError',
        'conv2d: input has C=4 channels but weight expects C/groups=3 x groups=1 = 3'),
    row('groups do not divide the input channels', 'conv2d(X, W[:, :1], groups=3)', 'ValueError',
        'conv2d: input channels C=4 must be divisible by groups=3'),
    row('groups do not divide the output channels', 'conv2d(X, W[:, :1], groups=4)', 'ValueError',
        'conv2d: output channels K=6 must be divisible by groups=4'),
    row('groups 0', 'conv2d(X, W, groups=0)', 'ValueError', 'conv2d: groups must be positive, got 0'),
    row('groups negative', 'conv2d(X, W, groups=-2)', 'ValueError', 'conv2d: groups must be positive, got -2'),
    row('conv1d stride of two values', 'conv1d(X1, W1, stride=(1, 1))', 'ValueError',
        'stride must be an int or a sequence of 1 ints, got (1, 1)'),
    row('conv1d negative padding (left, right)', 'conv1d(X1, W1, padding=(1, -1))', 'ValueError',
        'padding must be non-negative, got (1, -1)'),
    row('stride 0', 'conv2d(X, W, stride=0)', 'ValueError', 'stride must be positive, got (0, 0)'),
    row('stride negative', 'conv2d(X, W, stride=(1, -2))', 'ValueError', 'stride must be positive, got (1, -2)'),
    row('dilation 0', 'conv2d(X, W, dilation=0)', 'ValueError', 'dilation must be positive, got (0, 0)'),
    row('negative padding', 'conv2d(X, W, padding=-1)', 'ValueError', 'padding must be non-negative, got -1'),
    row('negative padding (per side)', 'conv2d(X, W, padding=((0, -1), (0, 0)))', 'ValueError',
        'padding must be non-negative, got ((0, -1), (0, 0))'),
    row('padding of no accepted form', 'conv2d(X, W, padding=(1, 2, 3))', 'ValueError',
        'padding must be an int or a sequence of 2 ints, got (1, 2, 3)'),
    row('unknown padding string', "conv2d(X, W, padding='middle')", 'ValueError',
        "padding must be an int, a tuple, or one of 'valid', 'same', 'full'; got 'middle'"),
    row('kernel larger than the padded input', 'conv2d(X, np.zeros((6, 4, 9, 3), np.float32))', 'ValueError',
        'conv2d: kernel height 9 (dilated to 9) is larger than the padded input height 8 + 0 + 0 = 8'),
    row('dilated kernel larger than the padded input', 'conv2d(X, W, dilation=5)', 'ValueError',
        'conv2d: kernel height 3 (dilated to 11) is larger than the padded input height 8 + 0 + 0 = 8'),
    row('output size < 1 (pooling)', 'max_pool2d(P, 7)', 'ValueError',
        'max_pool2d: output size (0, 0) is too small (must be >= 1) for input size (5, 5) with '
        'kernel_size=(7, 7), stride=(7, 7), padding=(0, 0), dilation=(1, 1), ceil_mode=False'),
    row('empty channel dimension', 'conv2d(X[:, :0], W[:, :0])', 'ValueError',
        'conv2d: input shape (2, 0, 8, 8) has an empty channel or spatial dimension'),
    row('unsupported dtype', 'conv2d(X.astype(np.int32), W.astype(np.int32))', 'TypeError',
        'input has dtype int32; supported dtypes: float32, float64'),
    row('unsupported dtype (float16)', 'max_pool2d(P.astype(np.float16), 2)', 'TypeError',
        'input has dtype float16; supported dtypes: float32, float64'),
    row('mixed dtypes', 'conv2d(X, W.astype(np.float64))', 'TypeError',
        'arrays must share one dtype, got input=float32, weight=float64'),
    row('mixed dtypes (bias)', 'conv2d(X, W, B.astype(np.float64))', 'TypeError',
        'arrays must share one dtype, got input=float32, weight=float32, bias=float64'),
    row('mixed devices', 'conv2d(X, E(W))', 'DeviceMismatchError',
        'arrays must be on one device: input is on cpu, weight on cuda:0', cuda=True),
    row('mixed devices (pooling backward)', 'max_pool2d_backward(GP, E(P), 2)', 'DeviceMismatchError',
        'arrays must be on one device: input is on cuda:0, grad_y on cpu', cuda=True),
    row('algorithm that does not run on GPU arrays', "conv2d(E(X), E(W), algorithm='winograd')", 'ValueError',
        "algorithm 'winograd' has no cuda kernel (it runs on the CPU); on cuda: auto, autotune, "
        'direct, im2col', cuda=True),
    row('unknown algorithm', "conv2d(X, W, algorithm='bogus')", 'ValueError',
        "unknown algorithm 'bogus'; available: auto, autotune, winograd, fft, direct, im2col, "
        'winograd:2, winograd:4, winograd:6, fft:8, fft:16, reference'),
    row('algorithm not a string', 'conv2d(X, W, algorithm=3)', 'TypeError', 'algorithm must be a string, got 3'),
    row('algorithm that cannot serve the problem', "conv2d(X, W, stride=2, algorithm='winograd')", 'ValueError',
        "algorithm 'winograd' cannot run this problem: winograd supports only 3x3 kernels with stride "
        '1 and dilation 1 (got kernel 3x3, stride (2, 2), dilation (1, 1))'),
    row('algorithm without a backward', "conv2d_backward(GY, X, W, algorithm='fft')", 'ValueError',
        "conv2d_backward: algorithm 'fft' has no backward pass; available: auto, direct, im2col, "
        'reference'),
    row('non-integer stride', 'conv2d(X, W, stride=1.5)', 'TypeError',
        'stride must be an integer or a tuple of integers, got 1.5'),
    row('bool stride', 'conv2d(X, W, stride=True)', 'TypeError', 'stride must be an integer, got True'),
    row('object array', 'conv2d(X.astype(object), W)', 'TypeError',
        'input has dtype object; supported dtypes: float32, float64'),
    row('plain list', 'conv2d(X.tolist(), W)', 'TypeError', 'expected a numpy.ndarray or a torch.Tensor, got list'),
    row('plain list (pooling)', 'max_pool2d(P.tolist(), 2)', 'TypeError',
        'expected a numpy.ndarray or a torch.Tensor, got list'),
    row('bias of the wrong shape', 'conv2d(X, W, B[:5])', 'ValueError', 'conv2d: bias must have shape (6,), got (5,)'),
    row('out= of the wrong shape', 'conv2d(X, W, out=np.zeros((2, 6, 6, 5), np.float32))', 'ValueError',
        'out has shape (2, 6, 6, 5) and dtype float32; expected shape (2, 6, 6, 6) and dtype float32'),
    row('pooling kernel 0', 'max_pool2d(P, 0)', 'ValueError', 'kernel_size must be positive, got (0, 0)'),
    row('pooling stride 0', 'avg_pool2d(P, 2, stride=0)', 'ValueError', 'stride must be positive, got (0, 0)'),
    row('pooling padding more than half the kernel', 'max_pool2d(P, 3, padding=2)', 'ValueError',
        'max_pool2d: padding (2, 2) must be at most half of kernel_size (3, 3)'),
    row('avg pooling divisor_override 0', 'avg_pool2d(P, 2, divisor_override=0)', 'ValueError',
        'avg_pool2d: divisor_override must be non-zero, got 0'),
    row('adaptive output size negative', 'adaptive_avg_pool2d(P, -1)', 'ValueError',
        'adaptive_avg_pool2d: output_size must be non-negative, got -1'),
    row('adaptive output size 0 (accepted, as torch)', 'adaptive_avg_pool2d(P, 0).shape', None, 'returns (1, 2, 0, 0)'),
    row('Lp norm 0', 'lp_pool2d(P, 0, 2)', 'ValueError', 'lp_pool2d: norm_type must be non-zero and not NaN, got 0.0'),
    row('Lp norm NaN', "lp_pool2d(P, float('nan'), 2)", 'ValueError',
        'lp_pool2d: norm_type must be non-zero and not NaN, got nan'),
    row('Lp norm not a number', "lp_pool2d(P, '2', 2)", 'TypeError',
        "lp_pool2d: norm_type must be a real number, got '2'"),
    row('backward grad of the wrong shape (conv)', 'conv2d_backward(GY[:, :5], X, W)', 'ValueError',
        "conv2d_backward: grad_y must have the output's shape (2, 6, 6, 6), got (2, 5, 6, 6)"),
    row('backward grad of the wrong shape (pooling)', 'max_pool2d_backward(GP[..., :1], P, 2)', 'ValueError',
        "max_pool2d_backward: grad_y must have the forward output's shape (1, 2, 2, 2), got (1, 2, 2, "
        '1)'),
    row('backward grad of another dtype', 'avg_pool2d_backward(GP.astype(np.float64), P, 2)', 'TypeError',
        'avg_pool2d_backward: grad_y has dtype float64 but the input has float32; they must match'),
    row('backward needs= not three bools', 'conv2d_backward(GY, X, W, needs=(True, False))', 'ValueError',
        'conv2d_backward: needs must be a triple of bools (grad_input, grad_weight, grad_bias), got '
        '(True, False)'),
    row('sizes overflowing int64', 'explain((2**40, 2**20, 2**10, 2**10), (1, 2**20, 1, 1))', 'ValueError',
        'input of shape (1099511627776, 1048576, 1024, 1024) has 1208925819614629174706176 elements, '
        'more than int64 can index'),
]


def run(r, ns=None):
    """(exception type name or None, message or repr of the result) of a row's call."""
    ns = namespace() if ns is None else ns
    try:
        result = eval(r.call, ns)  # noqa: S307 (the table's own source)
    except Exception as e:  # the row says which exception it expects; the test compares
        return type(e).__name__, str(e)
    return None, f"returns {result!r}"


def render(rows=ROWS):
    """The README table: input / exception / message."""
    lines = ["| input | call | exception | message |", "|---|---|---|---|"]
    for r in rows:
        exc = f"`{r.exception}`" if r.exception else "none"
        if r.exception == "DeviceMismatchError":
            exc += " (a `ValueError` and a `TypeError`)"
        msg = (r.message or "").replace("|", "\\|")
        lines.append(f"| {r.what} | `{r.call}` | {exc} | {msg} |")
    return "\n".join(lines) + "\n"
