"""Denormal (subnormal) inputs: fastconv keeps IEEE arithmetic (no flush-to-zero), so this
measures what subnormals cost each algorithm: the same layer with normal inputs and with
inputs scaled into the subnormal range (|x| < 1.2e-38 for float32; their products with the
weights are subnormal too), float32, batch 1.

    pytest benchmarks/bench_denormals.py                      # pytest-benchmark, grouped per algorithm
    pytest benchmarks/bench_denormals.py --benchmark-disable  # runs each once, checks results
    python benchmarks/bench_denormals.py [reps]               # interleaved table: medians and ratios

The table times normal and subnormal inputs interleaved in one process
(fastconv.bench.timing.compare), so both see the same machine noise; the ratio is
subnormal time / normal time (1.0: no penalty). Threads: FASTCONV_BENCH_THREADS (default 2).
"""
import os
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.bench import timing

THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))
SHAPE_X, SHAPE_W = (1, 64, 56, 56), (64, 64, 3, 3)  # ResNet-50's res2 3x3 layer
# (name, call taking x, w): every convolution algorithm, a backward and the summing pools.
CALLS = [
    ("direct", lambda x, w: fc.conv2d(x, w, padding=1, algorithm="direct")),
    ("im2col", lambda x, w: fc.conv2d(x, w, padding=1, algorithm="im2col")),
    ("winograd:4", lambda x, w: fc.conv2d(x, w, padding=1, algorithm="winograd:4")),
    ("fft:8", lambda x, w: fc.conv2d(x, w, padding=1, algorithm="fft:8")),
    ("backward im2col", lambda x, w: fc.conv2d_backward(x, x, w, padding=1, algorithm="im2col")),
    ("avg_pool2d 3x3", lambda x, w: fc.avg_pool2d(x, 3, 1)),
    ("lp_pool2d 3x3", lambda x, w: fc.lp_pool2d(x, 2.0, 3, 1)),
]
IDS = [c[0] for c in CALLS]
SUBNORMAL_SCALE = np.float32(1e-39)


def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE_X).astype(np.float32)
    w = rng.standard_normal(SHAPE_W).astype(np.float32)
    xs = x * SUBNORMAL_SCALE
    nonzero = np.abs(xs[xs != 0])
    assert nonzero.max() < np.finfo(np.float32).smallest_normal, "the scaled inputs must be subnormal"
    return x, xs, w


@pytest.mark.parametrize("kind", ["normal", "subnormal"])
@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_denormals(benchmark, call, kind):
    name, fn = call
    benchmark.group = f"denormals {name}"
    x, xs, w = inputs()
    data = x if kind == "normal" else xs
    r = benchmark(fn, data, w)
    # Subnormal inputs are computed, not flushed: scaled back, they give the normal inputs'
    # results (up to the subnormals' coarser absolute precision).
    if kind == "subnormal" and name in ("direct", "im2col", "avg_pool2d 3x3"):
        want = fn(x, w)
        got = r[0] if isinstance(r, tuple) else r
        assert np.abs(got).max() > 0, "subnormal inputs were flushed to zero"
        np.testing.assert_allclose(got / SUBNORMAL_SCALE, want, rtol=0, atol=1e-4 * np.abs(want).max())


def table(reps=20):
    fc.set_num_threads(THREADS)
    x, xs, w = inputs()
    print(f"{THREADS} threads, {reps} interleaved repetitions, medians; fastconv ISA {fc._C.get_isa()}")
    print(f"| {'call':<16} | {'normal ms':>9} | {'subnormal ms':>12} | {'ratio':>6} |")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 14}|{'-' * 8}|")
    for name, fn in CALLS:
        cmp_ = timing.compare({"normal": lambda: fn(x, w), "subnormal": lambda: fn(xs, w)},
                              warmup=1, repeats=reps, min_time=0.0)
        a, b = cmp_.ms("normal"), cmp_.ms("subnormal")
        print(f"| {name:<16} | {a:9.3f} | {b:12.3f} | {b / a:6.2f} |")


if __name__ == "__main__":
    table(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
