"""Pooling benchmarks: fastconv against torch.nn.functional (NCHW, CPU) on the pooling
layers of ResNet-50 / VGG-style networks, float32, batch 1.

    pytest benchmarks/bench_pool.py                      # pytest-benchmark, grouped per layer
    pytest benchmarks/bench_pool.py --benchmark-disable  # runs each once, checks results
    python benchmarks/bench_pool.py [reps]               # interleaved table: medians, ratio, GB/s

Both libraries run with FASTCONV_BENCH_THREADS threads (default 2). The table mode times
fastconv and torch with fastconv.bench.timing.compare (the CLI's method: interleaved in one
process), so both see the same machine noise; GB/s counts the input read and the output (and
indices) written once.
"""
import os
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.bench import timing

THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))

# (name, input shape, fastconv/torch function name, positional args, keyword args)
LAYERS = [
    ("max3x3s2p1", (1, 64, 112, 112), "max_pool2d", (3, 2, 1), {}),
    ("max3x3s2p1+indices", (1, 64, 112, 112), "max_pool2d", (3, 2, 1), {"return_indices": True}),
    ("avg2x2s2", (1, 256, 56, 56), "avg_pool2d", (2,), {}),
    ("max2x2s2", (1, 256, 56, 56), "max_pool2d", (2,), {}),
    ("global_avg", (1, 2048, 7, 7), "adaptive_avg_pool2d", (1,), {}),
    ("avg3x3s1p1", (1, 256, 28, 28), "avg_pool2d", (3, 1, 1), {}),
    ("lp2_2x2s2", (1, 256, 56, 56), "lp_pool2d", (2, 2), {}),
    ("adaptive_max7", (1, 512, 13, 13), "adaptive_max_pool2d", (7,), {}),
]
IDS = [layer[0] for layer in LAYERS]


def _input(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _nbytes(x, result):
    outs = result if isinstance(result, tuple) else (result,)
    return x.nbytes + sum(np.asarray(o).nbytes for o in outs)


@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
def test_fastconv(benchmark, layer):
    name, shape, fn, args, kw = layer
    benchmark.group = name
    x = _input(shape)
    r = benchmark(getattr(fc, fn), x, *args, **kw)
    benchmark.extra_info["GB"] = _nbytes(x, r) / 1e9


@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
def test_torch(benchmark, layer):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    name, shape, fn, args, kw = layer
    benchmark.group = name
    torch.set_num_threads(THREADS)
    x = _input(shape)
    t = torch.from_numpy(x)
    r = benchmark(getattr(F, fn), t, *args, **kw)
    # The two libraries must agree (values; indices exactly) for the timing to mean anything.
    mine = getattr(fc, fn)(x, *args, **kw)
    for a, b in zip(mine if isinstance(mine, tuple) else (mine,), r if isinstance(r, tuple) else (r,)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


# ---- interleaved table -----------------------------------------------------------------------

def table(reps=50):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(THREADS)
    fc.set_num_threads(THREADS)
    print(f"{THREADS} threads, {reps} interleaved repetitions, medians; fastconv ISA {fc._C.get_isa()}")
    print(f"| {'op':<20} | {'shape':<18} | {'fastconv ms':>11} | {'torch ms':>9} | {'ratio':>6} | {'GB/s':>6} |")
    print(f"|{'-' * 22}|{'-' * 20}|{'-' * 13}|{'-' * 11}|{'-' * 8}|{'-' * 8}|")
    for name, shape, fn, args, kw in LAYERS:
        x = _input(shape)
        t = torch.from_numpy(x)
        f = lambda: getattr(fc, fn)(x, *args, **kw)  # noqa: E731
        g = lambda: getattr(F, fn)(t, *args, **kw)  # noqa: E731
        r = f()
        cmp_ = timing.compare({"fastconv": f, "torch": g}, warmup=1, repeats=reps, min_time=0.0)
        ma, mb = cmp_.ms("fastconv"), cmp_.ms("torch")
        print(f"| {name:<20} | {'x'.join(map(str, shape)):<18} | {ma:11.3f} | {mb:9.3f} | {mb / ma:6.2f} | "
              f"{_nbytes(x, r) / ma / 1e6:6.1f} |")


if __name__ == "__main__":
    table(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
