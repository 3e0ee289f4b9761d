"""Distance-weighted average pooling (issue 21): fastconv.weighted_avg_pool2d against the best
torch formulation a user would write, a depthwise F.conv2d (groups=C) with the fixed normalised
window (with count_include_pad=False also divided by the window's weight inside the input, a
map computed once per shape, outside the timing), NCHW, CPU, batch 1.

    python benchmarks/bench_weighted_pool.py [reps]   # interleaved table: medians, ratio, GB/s
    FASTCONV_BENCH_THREADS=1 FASTCONV_BENCH_CPU_TIME=1 python benchmarks/bench_weighted_pool.py
        # one thread, timed in the thread's CPU time (time.thread_time): on a loaded machine the
        # time the process waits for a core stays out of the samples
    pytest benchmarks/bench_weighted_pool.py          # checks both formulations agree

Both libraries run with FASTCONV_BENCH_THREADS threads (default 2), timed with
fastconv.bench.timing.compare (interleaved in one process, so both see the same machine
noise). GB/s counts the input read and the output written once (the floor's traffic); "copy ms"
times a copy that moves as many bytes (read + write), interleaved with the two: the floor.
"""
import os
import sys
import time

import numpy as np
import pytest

import fastconv as fc
from fastconv.bench import timing
from fastconv.bench.formulations import WEIGHTED_LAYERS, weighted_input, weighted_torch_formulation

THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))
CPU_TIME = os.environ.get("FASTCONV_BENCH_CPU_TIME") == "1"

LAYERS = WEIGHTED_LAYERS
IDS = [layer[0] for layer in LAYERS]


@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
def test_formulations_agree(layer):
    torch = pytest.importorskip("torch")
    name, shape, k, s, p, cip, kw = layer
    x = weighted_input(shape)
    want = weighted_torch_formulation(shape, k, s, p, cip, kw)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fc.weighted_avg_pool2d(x, k, s, p, False, cip, **kw), want, rtol=1e-5, atol=2e-6)


def table(reps=50):
    import torch
    torch.set_num_threads(THREADS)
    fc.set_num_threads(THREADS)
    if CPU_TIME and THREADS != 1:
        raise SystemExit("FASTCONV_BENCH_CPU_TIME=1 needs FASTCONV_BENCH_THREADS=1 (the thread's own CPU time)")
    clock = time.thread_time if CPU_TIME else time.perf_counter
    print(f"{THREADS} threads, {reps} interleaved repetitions, medians of {'thread CPU' if CPU_TIME else 'wall'} "
          f"time; fastconv ISA {fc._C.get_isa()}")
    print(f"| {'op':<20} | {'shape':<16} | {'fastconv ms':>11} | {'torch ms':>9} | {'ratio':>6} | {'GB/s':>6} | "
          f"{'copy ms':>7} |")
    print(f"|{'-' * 22}|{'-' * 18}|{'-' * 13}|{'-' * 11}|{'-' * 8}|{'-' * 8}|{'-' * 9}|")
    for name, shape, k, s, p, cip, kw in LAYERS:
        x = weighted_input(shape)
        t = torch.from_numpy(x)
        g0 = weighted_torch_formulation(shape, k, s, p, cip, kw)
        y = fc.weighted_avg_pool2d(x, k, s, p, False, cip, **kw)
        out = np.empty_like(y)
        src = np.ones((x.nbytes + y.nbytes) // 2, np.uint8)
        dst = np.empty_like(src)
        f = lambda: fc.weighted_avg_pool2d(x, k, s, p, False, cip, out=out, **kw)  # noqa: E731
        g = lambda: g0(t)  # noqa: E731
        cmp_ = timing.compare({"fastconv": f, "torch": g, "copy": lambda: np.copyto(dst, src)}, warmup=2,
                              repeats=reps, min_time=0.0, timer=clock)
        ma, mb = cmp_.ms("fastconv"), cmp_.ms("torch")
        print(f"| {name:<20} | {'x'.join(map(str, shape)):<16} | {ma:11.3f} | {mb:9.3f} | {mb / ma:6.2f} | "
              f"{(x.nbytes + y.nbytes) / ma / 1e6:6.1f} | {cmp_.ms('copy'):7.3f} |")


if __name__ == "__main__":
    table(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
