"""Which algorithm runs a convolution: the names that exist, and ``auto``'s rules.

The rules are a few lines on purpose; benchmarks/RESULTS.md holds the
measurements behind them.
"""
from __future__ import annotations

import functools

from . import _C

# Algorithms the design names that this build does not provide yet.
_NOT_YET = ("winograd", "fft")


@functools.lru_cache(maxsize=None)
def available():
    """Names accepted by ``algorithm=`` for conv2d on the CPU, 'auto' first."""
    rows = [k["algorithm"] for k in _C.kernels() if k["op"] == "conv2d_forward" and k["device"] == "cpu"]
    return ("auto",) + tuple(dict.fromkeys(rows)) + ("reference",)


def choose(params, dtype):
    """``auto``: direct for depthwise and small-channel work, im2col+GEMM otherwise."""
    depthwise_like = params.groups > 1 and params.C // params.groups <= 4
    if depthwise_like:
        return "direct"
    return "im2col"


def resolve(algorithm, params, dtype):
    """Validate an ``algorithm=`` value for this problem; return the kernel name to run."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a string, got {algorithm!r}")
    names = available()
    if algorithm == "auto":
        return choose(params, dtype)
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
