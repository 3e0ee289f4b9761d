"""Which algorithm runs a convolution: the names that exist, and ``auto``'s rules.

The rules are a few lines on purpose; benchmarks/RESULTS.md holds the
measurements behind them.
"""
from __future__ import annotations

import functools

import numpy as np

from . import _C

# Algorithms the design names that this build does not provide yet.
_NOT_YET = ("fft",)

# Names that stand for a family of kernel-table rows; resolve() picks the row.
ALIASES = ("winograd",)


@functools.lru_cache(maxsize=None)
def available():
    """Names accepted by ``algorithm=`` for conv2d on the CPU, 'auto' first."""
    rows = [k["algorithm"] for k in _C.kernels() if k["op"] == "conv2d_forward" and k["device"] == "cpu"]
    names = tuple(dict.fromkeys(rows))
    aliases = tuple(a for a in ALIASES if any(r.startswith(a + ":") for r in names))
    return ("auto",) + aliases + names + ("reference",)


def winograd_tile(params):
    """``algorithm="winograd"``'s tile size m of F(m x m, 3 x 3). Larger tiles need fewer
    multiplications per output (2.25x, 4x, 5.06x fewer than direct for m = 2, 4, 6) but
    waste more of the edge tiles, cost more per transform and need a transformed kernel
    of 16, 36, 64 x K x C/groups floats that few tiles cannot amortise. Measured on VGG-16
    and ResNet-50 3x3 layers (2-core Zen 4, interleaved with torch): m = 4 is best or
    within noise of the best from about 400 output pixels per call (batch included);
    m = 6 only ties it on maps of 112 and more, with 4x the error; m = 2 wins below.
    """
    if params.N * params.P * params.Q >= 384:
        return 4
    return 2


def choose(params, dtype, inputs_finite=True):
    """``auto``'s rules, from the tables in benchmarks/RESULTS.md (2-core Zen 4):

    - 3x3 stride 1, float32, >= 16 input channels per group and >= 384 output pixels per
      call (batch included): Winograd F(4x4), 1.3-1.7x torch on VGG-16 and ResNet-50's
      larger maps, where it does 4x fewer multiplications. Not when the inputs hold NaN
      or Inf (``inputs_finite=False``): a Winograd tile would spread them over the tile;
    - depthwise-like (<= 4 input channels per group): direct, 1.3-1.6x torch where
      im2col's unrolled GEMM has a reduction of only 9;
    - spatial kernels with 16-64 input channels per group on maps of >= 56x56 (or up to
      128 channels on >= 112x112): direct, 5-20% ahead of im2col, whose unrolled matrix
      (C*R*S x P*Q) no longer fits in cache;
    - everything else, 1x1 included: im2col (a 1x1 layer is one GEMM, no unroll).
    """
    cg = params.C // params.groups
    if params.groups > 1 and cg <= 4:
        return "direct"
    if (inputs_finite and cg >= 16 and params.N * params.P * params.Q >= 384
            and not _C.supports("winograd:4", params, np.dtype(dtype).name)):
        return "winograd:4"
    pixels = params.P * params.Q
    spatial = params.R * params.S > 1
    if spatial and cg >= 16 and ((cg <= 64 and pixels >= 56 * 56) or (cg <= 128 and pixels >= 112 * 112)):
        return "direct"
    return "im2col"


def resolve(algorithm, params, dtype):
    """Validate an ``algorithm=`` value for this problem; return the kernel name to run."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a string, got {algorithm!r}")
    names = available()
    if algorithm == "auto":
        return choose(params, dtype)
    if algorithm == "winograd":
        why = _C.supports("winograd:2", params, dtype.name)
        if why:
            raise ValueError(f"algorithm 'winograd' cannot run this problem: {why}")
        return f"winograd:{winograd_tile(params)}"
    if algorithm not in names:
        base = algorithm.split(":")[0]
        if base in _NOT_YET:
            raise ValueError(f"algorithm {algorithm!r} is not in this version of fastconv; available: {', '.join(names)}")
        raise ValueError(f"unknown algorithm {algorithm!r}; available: {', '.join(names)}")
    if algorithm != "reference":
        why = _C.supports(algorithm, params, dtype.name)
        if why:
            raise ValueError(f"algorithm {algorithm!r} cannot run this problem: {why}")
    return algorithm
