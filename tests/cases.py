"""The one table of problems the op tests run, and the kernel table's (device, algorithm) rows
they run them on.

Convolution problems (CONV_CASES): odd and prime sizes, strides 1-3, every padding form (int,
pair, per side, 'valid', 'same' at strides 1-3, 'full'), dilation, groups, depthwise, channel
multipliers, 1x1, 1xN/Nx1, kernels covering the image, images smaller than the kernel, batch
0, 1 and odd. Pooling problems (POOL_CASES): every op, kernels 1-5, strides 1-3, padding,
dilation, ceil_mode, count_include_pad, divisor_override, adaptive sizes that do and do not
divide the input, Lp orders incl. +-inf, 1-D ops, plus 40 generated at random (fixed seed).

Rows come from ``fastconv._C.kernels()`` (algorithm, op, device, isas, prepares): a new kernel
is tested by every op's tests without a line of test code. Rows with device 'cuda' carry the
``cuda`` marker (``-m "not cuda"`` leaves them out on a machine without a GPU).
"""
import math
import random
import zlib
from collections import namedtuple

import numpy as np
import pytest

from fastconv import _C
from fastconv import reference as ref
from fastconv.functional import conv_params

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


# ---- the kernel table ------------------------------------------------------------------------

Row = namedtuple("Row", "device algorithm")


def rows(op):
    """The (device, algorithm) rows of the kernel table for ``op`` (e.g. 'conv2d_forward',
    'max_pool2d_backward'), in table order."""
    return [Row(k["device"], k["algorithm"]) for k in _C.kernels() if k["op"] == op]


def row_param(row, *values, id_suffix=""):
    """``pytest.param(row, *values)`` with the row's id and, for a CUDA row, the cuda marker."""
    marks = [pytest.mark.cuda] if row.device == "cuda" else []
    return pytest.param(row, *values, marks=marks, id=f"{row.device}-{row.algorithm}{id_suffix}")


CONV_ROWS = rows("conv2d_forward")
# Rows with both conv2d backward ops (the data and the weight gradient).
CONV_BACKWARD_ROWS = [r for r in rows("conv2d_backward_data") if r in rows("conv2d_backward_weight")]
# The CPU algorithms, for the tests of one CPU path (plans, properties, threads).
CONV_ALGORITHMS = [r.algorithm for r in CONV_ROWS if r.device == "cpu"]
# Algorithms that are exact whenever every partial sum is (small integers): plain sums of
# products. Winograd's and FFT's transforms have fractional entries, so they are not.
EXACT_ALGORITHMS = [a for a in CONV_ALGORITHMS if a in ("direct", "im2col")]


# ---- convolution ---------------------------------------------------------------------------

class ConvCase(namedtuple("ConvCase", "x w stride padding dilation groups flip")):
    """One conv2d problem: x shape (N, C, H, W), w shape (K, C/groups, R, S) and conv2d's
    arguments."""

    __slots__ = ()

    @property
    def id(self):
        return (f"x{self.x}-w{self.w}-s{self.stride}-p{self.padding}-d{self.dilation}-g{self.groups}"
                f"{'-flip' if self.flip else ''}").replace(" ", "")

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    flip=self.flip)

    @property
    def reduction(self):
        """Products summed per forward output: C/groups * R * S."""
        return self.w[1] * self.w[2] * self.w[3]

    def params(self):
        """(ConvParams, pads ((top, bottom), (left, right))) of the problem."""
        return conv_params(tuple(self.x), tuple(self.w), self.stride, self.padding, self.dilation, self.groups,
                           "test")


def conv_case(x, w, stride=1, padding=0, dilation=1, groups=1, flip=False):
    return ConvCase(tuple(x), tuple(w), stride, padding, dilation, groups, flip)


CONV_CASES = [ConvCase(*c) for c in [
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1, 1, False),
    ((2, 3, 7, 11), (5, 3, 3, 3), 1, 1, 1, 1, False),
    ((1, 3, 13, 17), (7, 3, 5, 5), 2, 2, 1, 1, False),
    ((3, 5, 11, 7), (4, 5, 3, 2), (3, 2), (1, 0), 1, 1, False),
    ((1, 4, 17, 19), (6, 4, 3, 3), 1, 2, 2, 1, False),                 # dilation 2
    ((2, 6, 13, 13), (9, 2, 3, 3), 1, 1, 1, 3, False),                 # groups 3
    ((1, 8, 15, 15), (8, 1, 3, 3), 1, 1, 1, 8, False),                 # depthwise
    ((2, 7, 16, 13), (7, 1, 3, 3), 2, 1, 1, 7, False),                 # depthwise stride 2
    ((1, 5, 9, 9), (10, 1, 3, 3), 1, 1, 1, 5, False),                  # channel multiplier 2
    ((1, 16, 10, 10), (8, 16, 1, 1), 1, 0, 1, 1, False),               # 1x1
    ((2, 13, 11, 9), (17, 13, 1, 1), 2, 0, 1, 1, False),               # 1x1 stride 2
    ((1, 3, 8, 23), (4, 3, 1, 7), 1, (0, 3), 1, 1, False),             # 1xN
    ((1, 3, 23, 8), (4, 3, 7, 1), 1, (3, 0), 1, 1, False),             # Nx1
    ((1, 2, 10, 12), (3, 2, 3, 4), 1, ((0, 2), (3, 1)), 1, 1, False),  # asymmetric pads
    ((2, 3, 9, 10), (4, 3, 3, 3), 1, "valid", 1, 1, False),
    ((2, 3, 9, 10), (4, 3, 3, 4), 1, "same", 1, 1, False),
    ((1, 3, 11, 10), (4, 3, 3, 3), 2, "same", 1, 1, False),            # same, stride 2
    ((1, 3, 13, 10), (4, 3, 5, 4), 3, "same", (2, 1), 1, False),       # same, stride 3, dilated
    ((1, 2, 6, 7), (3, 2, 3, 2), 1, "full", 1, 1, False),
    ((1, 2, 6, 7), (3, 2, 3, 3), 1, "full", 2, 1, False),
    ((2, 3, 8, 9), (4, 3, 3, 2), 1, 1, 1, 1, True),                    # true convolution
    ((1, 4, 9, 9), (4, 1, 3, 3), 2, "same", 1, 4, True),
    ((0, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1, False),                   # empty batch
    ((1, 3, 3, 3), (2, 3, 3, 3), 1, 0, 1, 1, False),                   # kernel covers the image
    ((5, 4, 5, 3), (6, 2, 5, 3), 1, 0, 1, 2, False),                   # covers it, batched, groups 2
    ((4, 2, 3, 3), (3, 2, 3, 3), 2, ((0, 1), (0, 1)), 1, 1, False),    # covers it, unread bottom pad
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1, False),
    ((1, 1, 2, 2), (2, 1, 3, 3), 1, 1, 1, 1, False),                   # image smaller than kernel
    ((1, 3, 31, 37), (11, 3, 7, 7), 2, 3, 1, 1, False),                # ResNet stem-like, primes
    ((1, 2, 7, 103), (5, 2, 5, 3), (1, 2), 1, 1, 1, False),            # a stem on a 51-wide row
    ((1, 29, 7, 7), (31, 29, 3, 3), 1, 1, 1, 1, False),                # prime channels
    ((1, 64, 9, 9), (33, 64, 3, 3), 1, 1, 1, 1, False),                # deeper reduction
    ((2, 12, 10, 11), (12, 3, 3, 3), (1, 2), (2, 1), (2, 1), 4, False),
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, ((0, 0), (0, 1)), 1, 1, False),    # a column of pure padding
    ((1, 2, 3, 4), (3, 2, 2, 2), 1, 4, 1, 1, False),                   # pad > kernel: bias-only border
    ((1, 4, 5, 6), (4, 1, 2, 3), 2, 3, 1, 4, False),                   # same, depthwise strided
    # narrow outputs, many channels: direct's channel-vector tiles (several vectors, partial ones)
    ((2, 5, 11, 13), (20, 5, 3, 3), 2, 1, 2, 1, False),                # stride 2, dilation 2
    ((2, 8, 9, 9), (34, 4, 3, 3), 1, 1, 1, 2, False),                  # groups 2, 17 per group
    ((3, 7, 6, 15), (48, 7, 2, 5), (1, 3), ((1, 0), (2, 2)), 1, 1, False),
    ((1, 3, 13, 13), (64, 3, 3, 3), 1, 1, 1, 1, False),                # a row of more than one tile
]]

# Shapes big enough to cross every blocking boundary of the kernels (float32).
CONV_LARGER = [conv_case(*c[:4], groups=c[4]) for c in [
    ((1, 64, 28, 28), (96, 64, 3, 3), 1, 1, 1),
    ((2, 48, 23, 29), (40, 48, 1, 1), 1, 0, 1),
    ((1, 3, 57, 61), (24, 3, 7, 7), 2, 3, 1),
    # stems on rows of >= 48 outputs (direct's 3-vector tile on AVX2): 13 = 3 x 4 + 1 output
    # channels, a grouped 5x5 with 2 input channels a group, one input channel
    ((1, 3, 41, 109), (13, 3, 7, 7), 2, 3, 1),
    ((2, 8, 13, 59), (12, 2, 5, 5), 1, 2, 4),
    ((1, 1, 9, 67), (7, 1, 5, 5), 1, 0, 1),
    ((1, 96, 30, 31), (96, 1, 3, 3), 2, 1, 96),
    ((2, 40, 61, 53), (24, 40, 3, 3), 1, 1, 1),  # many tile blocks (winograd), odd edges
    ((40, 64, 7, 7), (32, 64, 3, 3), 1, 1, 1),   # many small images: several per GEMM, in chunks
    ((19, 200, 5, 5), (24, 200, 1, 1), 1, 0, 1),
    ((12, 2100, 7, 7), (10, 1050, 1, 1), 1, 0, 2),  # 1x1 grouped small images: gathered, 10 + 2 a GEMM
    ((64, 16, 5, 5), (120, 16, 5, 5), 1, 0, 1),  # LeNet-5's C5: the window is the image
    ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),   # LeNet-5's C3: batched small images
    # weight-bound Winograd with fewer tiles than a B panel (flipped products): 53 output
    # channels a group = 48 + 5, 150 input channels = several input blocks + a short one
    ((1, 300, 11, 13), (106, 150, 3, 3), 1, 1, 2),
]]

# 1-D problems: (x shape (N, C, L), w shape (K, C/groups, S), stride, padding, dilation, groups).
CONV1D_CASES = [
    ((2, 3, 50), (4, 3, 5), 1, 2, 1, 1),
    ((1, 4, 37), (8, 2, 3), 2, (0, 3), 2, 2),
    ((3, 6, 29), (6, 1, 7), 1, "same", 1, 6),
    ((1, 2, 17), (3, 2, 4), 3, "same", 1, 1),
    ((1, 2, 11), (3, 2, 4), 1, "full", 2, 1),
]


def conv1d_as_2d(case):
    """A 1-D case as the 2-D ConvCase with H = R = 1 (what the kernels run)."""
    (n, c, length), (k, cg, s), stride, padding, dilation, groups = case
    if not isinstance(padding, str):
        padding = ((0, 0), (padding, padding) if isinstance(padding, int) else tuple(padding))
    return conv_case((n, c, 1, length), (k, cg, 1, s), (1, stride), padding, (1, dilation), groups)


def serves(row, case, dtype, op="conv2d_forward"):
    """Whether the kernel of ``row`` serves this conv problem (asked of the kernel table), so
    the parameter lists hold only the (row, problem) pairs that run, never skips."""
    params, _ = case.params()
    return _C.supports(row.algorithm, params, np.dtype(dtype).name, op, row.device) == ""


def conv_supported(algorithm, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, dtype=np.float32,
                   device="cpu"):
    """``serves`` for a problem given by its shapes and arguments; 'auto' and 'reference'
    serve every valid problem."""
    if algorithm in ("auto", "reference"):
        return True
    return serves(Row(device, algorithm), conv_case(x_shape, w_shape, stride, padding, dilation, groups), dtype)


# ---- pooling -------------------------------------------------------------------------------

# The kernel table's op for each public pooling function (1-D ops and adaptive pooling run
# the 2-D kernels with H = 1 / the adaptive flag).
POOL_KERNEL_OPS = {
    "max": "max_pool2d", "avg": "avg_pool2d", "lp": "lp_pool2d",
}


def pool_family(op):
    return "max" if "max" in op else "lp" if op.startswith("lp") else "avg"


def pool_rows(op, direction="forward"):
    """The (device, algorithm) rows that run the public pooling function ``op``."""
    return rows(f"{POOL_KERNEL_OPS[pool_family(op)]}_{direction}")


class PoolCase(namedtuple("PoolCase", "op shape kw")):
    """One call of a public pooling function: fastconv.<op>(x of ``shape``, **kw)."""

    __slots__ = ()

    @property
    def id(self):
        kw = ",".join(f"{k}={v}" for k, v in self.kw.items())
        return f"{self.op}{list(self.shape)}[{kw}]"

    @property
    def family(self):
        return pool_family(self.op)


def pool_case(op, shape, **kw):
    return PoolCase(op, tuple(shape), kw)


def _explicit_pool_cases():
    c = []
    # Fast paths: 3x3/2 (stem), 2x2/2, stride-1 kxk, with interiors and borders.
    c.append(pool_case("max_pool2d", (2, 3, 17, 23), kernel_size=3, stride=2, padding=1))
    c.append(pool_case("max_pool2d", (1, 2, 16, 34), kernel_size=3, stride=2, padding=1, ceil_mode=True))
    c.append(pool_case("max_pool2d", (1, 2, 15, 21), kernel_size=3, stride=2, padding=0, ceil_mode=True))
    c.append(pool_case("max_pool2d", (1, 2, 16, 22), kernel_size=2))
    c.append(pool_case("max_pool2d", (1, 2, 13, 19), kernel_size=2, stride=2, padding=1, ceil_mode=True))
    c.append(pool_case("max_pool2d", (1, 2, 13, 29), kernel_size=3, stride=1, padding=1))
    c.append(pool_case("max_pool2d", (1, 1, 9, 31), kernel_size=5, stride=1, padding=2))
    c.append(pool_case("max_pool2d", (1, 2, 11, 26), kernel_size=(3, 2), stride=(2, 3), padding=(1, 1)))
    c.append(pool_case("max_pool2d", (1, 2, 9, 14), kernel_size=3, stride=1, padding=1, dilation=2))
    c.append(pool_case("max_pool2d", (1, 1, 2, 2), kernel_size=2, stride=1, padding=1, dilation=3))  # empty window
    c.append(pool_case("max_pool2d", (1, 1, 1, 1), kernel_size=1))
    c.append(pool_case("max_pool2d", (1, 2, 6, 7), kernel_size=8, ceil_mode=True))  # kernel > input: torch allows
    c.append(pool_case("avg_pool2d", (2, 3, 16, 22), kernel_size=2))
    c.append(pool_case("avg_pool2d", (1, 2, 15, 17), kernel_size=2, ceil_mode=True))
    c.append(pool_case("avg_pool2d", (3, 5, 15, 17), kernel_size=2))  # 2x2/2 fast path, odd edges dropped
    c.append(pool_case("avg_pool2d", (4, 8, 30, 34), kernel_size=2, divisor_override=3))  # fast path, threads
    c.append(pool_case("avg_pool2d", (2, 3, 12, 14), kernel_size=2, divisor_override=2))  # fast path, times 1/2
    c.append(pool_case("avg_pool2d", (2, 3, 12, 14), kernel_size=2, divisor_override=-4))  # fast path, divides
    c.append(pool_case("adaptive_avg_pool2d", (2, 3, 14, 10), output_size=(7, 5)))  # regular 2x2/2 windows
    c.append(pool_case("avg_pool2d", (1, 2, 17, 23), kernel_size=3, stride=2, padding=1))
    c.append(pool_case("avg_pool2d", (1, 2, 17, 23), kernel_size=3, stride=2, padding=1, count_include_pad=False,
                       ceil_mode=True))
    c.append(pool_case("avg_pool2d", (1, 2, 13, 29), kernel_size=3, stride=1, padding=1))
    c.append(pool_case("avg_pool2d", (1, 2, 11, 13), kernel_size=(5, 3), stride=(3, 2), padding=(2, 1),
                       ceil_mode=True))
    c.append(pool_case("avg_pool2d", (1, 2, 11, 13), kernel_size=3, stride=2, padding=1, divisor_override=3))
    c.append(pool_case("avg_pool2d", (1, 1, 7, 9), kernel_size=2, stride=1, padding=1, divisor_override=-2))
    c.append(pool_case("avg_pool2d", (1, 2, 6, 7), kernel_size=8, stride=3, ceil_mode=True))
    for p in (1, 2, 3, 0.5, -1.5, math.inf, -math.inf):
        c.append(pool_case("lp_pool2d", (1, 2, 11, 17), norm_type=p, kernel_size=3, stride=2, ceil_mode=True))
    c.append(pool_case("lp_pool2d", (2, 2, 12, 18), norm_type=2, kernel_size=2))
    c.append(pool_case("lp_pool2d", (1, 2, 9, 13), norm_type=2, kernel_size=(3, 2), stride=1))
    for op in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        for shape, o in [((1, 3, 12, 15), (4, 5)), ((1, 2, 13, 17), (5, 3)), ((2, 4, 7, 7), 1), ((1, 2, 5, 6), (7, 9)),
                         ((1, 2, 9, 10), (None, 4)), ((1, 2, 11, 11), 11), ((1, 2, 3, 29), (1, 1)),
                         ((1, 2, 16, 20), (8, 10))]:
            c.append(pool_case(op, shape, output_size=o))
    c.append(pool_case("max_pool1d", (2, 3, 29), kernel_size=3, stride=2, padding=1))
    c.append(pool_case("max_pool1d", (1, 2, 30), kernel_size=2))
    c.append(pool_case("max_pool1d", (1, 2, 31), kernel_size=4, stride=3, padding=2, dilation=2, ceil_mode=True))
    c.append(pool_case("avg_pool1d", (2, 3, 29), kernel_size=3, stride=2, padding=1, count_include_pad=False))
    c.append(pool_case("avg_pool1d", (1, 2, 31), kernel_size=5, stride=3, padding=2, ceil_mode=True))
    c.append(pool_case("lp_pool1d", (1, 2, 23), norm_type=2, kernel_size=3, stride=2, ceil_mode=True))
    c.append(pool_case("lp_pool1d", (1, 2, 23), norm_type=3, kernel_size=4))
    c.append(pool_case("adaptive_avg_pool1d", (2, 3, 29), output_size=6))
    c.append(pool_case("adaptive_avg_pool1d", (1, 2, 30), output_size=1))
    c.append(pool_case("adaptive_max_pool1d", (2, 3, 29), output_size=7))
    c.append(pool_case("adaptive_max_pool1d", (1, 2, 30), output_size=10))
    return c


def _generated_pool_cases(count=40, seed=0):
    """Random valid windowed problems: sizes odd/prime, kernel 1-5, stride 1-3, padding up to
    half the kernel, dilation 1-3 (max), ceil_mode, count_include_pad, non-square."""
    rnd = random.Random(seed)
    sizes = [1, 2, 3, 5, 7, 8, 11, 13, 17, 19]
    out = []
    while len(out) < count:
        op = rnd.choice(["max_pool2d", "avg_pool2d", "lp_pool2d"])
        h, w = rnd.choice(sizes), rnd.choice(sizes)
        k = (rnd.randint(1, 5), rnd.randint(1, 5))
        s = (rnd.randint(1, 3), rnd.randint(1, 3))
        p = (rnd.randint(0, k[0] // 2), rnd.randint(0, k[1] // 2)) if op != "lp_pool2d" else (0, 0)
        d = (rnd.randint(1, 3), rnd.randint(1, 3)) if op == "max_pool2d" else (1, 1)
        ceil = rnd.random() < 0.5
        if any(ref.pool_output_size(n, k[i], s[i], p[i], d[i], ceil) < 1 for i, n in enumerate((h, w))):
            continue
        shape = (rnd.randint(1, 2), rnd.randint(1, 3), h, w)
        if op == "max_pool2d":
            out.append(pool_case(op, shape, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil))
        elif op == "avg_pool2d":
            out.append(pool_case(op, shape, kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
                                 count_include_pad=rnd.random() < 0.5,
                                 divisor_override=rnd.choice([None, None, None, 1, 5])))
        else:
            out.append(pool_case(op, shape, norm_type=rnd.choice([1, 2, 3]), kernel_size=k, stride=s,
                                 ceil_mode=ceil))
    return out


POOL_CASES = _explicit_pool_cases() + _generated_pool_cases()


def pool_input(case, dtype):
    """Deterministic input: small integers for max (many ties exercise the index rule),
    positive values for Lp with non-even p (no NaN from negative bases), normals otherwise."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    if case.family == "max":
        return rng.integers(-3, 4, case.shape).astype(dtype)
    if case.family == "lp" and case.kw["norm_type"] not in (1, 2, math.inf, -math.inf):
        return (np.abs(rng.standard_normal(case.shape)) + 0.25).astype(dtype)
    return rng.standard_normal(case.shape).astype(dtype)
