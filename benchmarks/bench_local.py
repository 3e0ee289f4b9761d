"""Locally connected and tiled convolution: fastconv against the torch formulations a user
would write (float32, CPU), forward and forward + backward.

    pytest benchmarks/bench_local.py                      # pytest-benchmark, grouped per shape
    pytest benchmarks/bench_local.py --benchmark-disable  # runs each once, checks results
    python benchmarks/bench_local.py [reps]               # interleaved table: medians, ratios

torch has no locally connected layer; the usual formulation unfolds the input and contracts
it with the position-major weight: ``cols = F.unfold(x, (R, S), ...)`` (N, C*R*S, P*Q), then
``einsum('ncl,lkc->nkl', cols, w.view(P*Q, K, C*R*S))`` or ``bmm`` over the positions. Both
are timed; the ratio is against the faster one per row. Threads: FASTCONV_BENCH_THREADS
(default 2) for both libraries. The floor of a batch-1 forward is reading the weights once:
P*Q*K*C*R*S*4 bytes over the memory bandwidth (measured at the start by _C.measure_peak's copy).
"""
import os
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.bench import timing
from fastconv.bench.formulations import (LOCAL_SHAPES, local_fastconv_backward_fn, local_fastconv_fn,
                                           local_problem, local_torch_backward_fns, local_torch_fns)

THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))

SHAPES = LOCAL_SHAPES
IDS = [s[0] for s in SHAPES]


def _backward_fns(x, wt, pq, tiles, gy):
    """fastconv's backward (grad_x and grad_w) and torch autograd through both formulations."""
    return (local_fastconv_backward_fn(x, wt, tiles, gy),) + local_torch_backward_fns(x, wt, pq, tiles, gy)


@pytest.fixture(scope="module", autouse=True)
def threads():
    before = fc.get_num_threads()
    fc.set_num_threads(THREADS)
    yield
    fc.set_num_threads(before)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fastconv(benchmark, shape):
    name, xs, k, r, tiles = shape
    benchmark.group = name
    x, wt, _ = local_problem(xs, k, r, tiles)
    benchmark(local_fastconv_fn(x, wt, tiles))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_torch_unfold_einsum(benchmark, shape):
    torch = pytest.importorskip("torch")
    name, xs, k, r, tiles = shape
    benchmark.group = name
    torch.set_num_threads(THREADS)
    x, wt, pq = local_problem(xs, k, r, tiles)
    einsum, bmm = local_torch_fns(x, wt, pq, tiles)
    got = benchmark(einsum)
    mine = local_fastconv_fn(x, wt, tiles)()  # the timings mean something only if the results agree
    np.testing.assert_allclose(mine, got.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mine, bmm().numpy(), rtol=1e-4, atol=1e-4)


# ---- interleaved table -----------------------------------------------------------------------

def table(reps=30):
    import torch
    torch.set_num_threads(THREADS)
    fc.set_num_threads(THREADS)
    peak = fc._C.measure_peak(0.2, 64 << 20)
    load = os.getloadavg()
    print(f"{THREADS} threads, {reps}+ interleaved repetitions, medians; fastconv ISA {fc._C.get_isa()}; "
          f"copy bandwidth {peak['copy_gbs']:.1f} GB/s; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"| {'problem':<22} | {'pass':<7} | {'weights MB':>10} | {'floor ms':>8} | {'fastconv ms':>11} | "
          f"{'einsum ms':>9} | {'bmm ms':>8} | {'ratio':>6} |")
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 12}|{'-' * 10}|{'-' * 13}|{'-' * 11}|{'-' * 10}|{'-' * 8}|")
    rng = np.random.default_rng(1)
    for name, xs, k, r, tiles in SHAPES:
        x, wt, pq = local_problem(xs, k, r, tiles)
        einsum, bmm = local_torch_fns(x, wt, pq, tiles)
        mine = local_fastconv_fn(x, wt, tiles)
        np.testing.assert_allclose(mine(), einsum().numpy(), rtol=1e-4, atol=1e-4)
        # A local forward reads every weight once: its bytes at the copy's rate (read + write
        # bytes a second, about what reading alone sustains). Tiled weights stay in cache.
        floor_ms = wt.nbytes / (peak["copy_gbs"] * 1e9) * 1e3 if tiles is None else float("nan")
        gy = rng.standard_normal((xs[0], k) + pq, dtype=np.float32)
        bwd_mine, bwd_einsum, bwd_bmm = _backward_fns(x, wt, pq, tiles, gy)
        for label, fns in (("forward", {"fastconv": mine, "einsum": einsum, "bmm": bmm}),
                           ("grad x,w", {"fastconv": bwd_mine, "einsum": bwd_einsum, "bmm": bwd_bmm})):
            cmp_ = timing.compare(fns, warmup=2, repeats=reps, min_time=0.5)
            ms = {n: cmp_.ms(n) for n in fns}
            best = min(ms["einsum"], ms["bmm"])
            print(f"| {name:<22} | {label:<7} | {wt.nbytes / 1e6:10.2f} | {floor_ms:8.3f} | {ms['fastconv']:11.3f} | "
                  f"{ms['einsum']:9.3f} | {ms['bmm']:8.3f} | {best / ms['fastconv']:6.2f} |")


if __name__ == "__main__":
    table(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
