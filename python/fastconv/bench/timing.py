# timing.py: the one timing method of `python -m fastconv bench` and of the pytest-benchmark
# suite in benchmarks/: warm up, then interleave the contenders round-robin in one process and
# quote medians (plus ratio / GFLOP/s helpers). CPU: perf_counter; CUDA: CUDA events.
"""Interleaved timing.

The machine is small and noisy (2 cores, shared). Timing contender A for a while and
then contender B lets drift (frequency, neighbours, page cache) land on one of them.
``compare`` instead

1. warms every callable up (``warmup`` calls each, at least one; the first call
   also pays for lazy allocation, thread-pool start-up, page faults);
2. runs *rounds*: each round calls every callable once, in an order that changes from
   round to round (``round_order``: a permutation seeded by the round), so no contender
   always runs right after the same neighbour. A rotation would not do: it keeps every
   contender's predecessor, and in ``bench`` the column after fft:16 (a 400 MB workspace
   that empties the caches) always ran on cold weights (512->512 3x3 on 7x7 at batch 1:
   auto 2.19 ms where the same kernel, winograd:2, took 1.65 in its own column);
3. stops once at least ``repeats`` rounds are done and ``min_time`` seconds have
   passed, or when ``max_time`` seconds have passed (after at least ``min_rounds``);
4. returns every sample and the per-name medians.

On the GPU (``compare(..., cuda=True)``) each sample is the time between two CUDA events
recorded on the current stream around the call (``end.synchronize()`` before reading it),
so it is GPU time, not launch time (but a call whose host side is slower than its kernels
shows that too: the GPU idles between the events); the callers set
``torch.backends.cudnn.benchmark = True`` and disable TF32 (``cuda_setup``, and
``NVIDIA_TF32_OVERRIDE=0`` by ``cuda_environment`` before CUDA starts) for a like-for-like
fp32 comparison. fastconv's kernels take the same torch CUDA tensors zero-copy and queue on
torch's current stream, the one the events are recorded on.

Ratios are ``peer / ours`` of medians: > 1 means ours is faster.

Thread pools. fastconv and torch run OpenMP pools, NumPy runs OpenBLAS's. After a call,
OpenBLAS's idle workers busy-wait for 2^28 cycles (~0.1 s) by default; on 2 cores that
starves whichever OpenMP pool runs next in the round (measured here: a 0.4 ms fastconv
call took 6.5 ms right after np.matmul). ``blas_environment`` therefore sets
``OPENBLAS_THREAD_TIMEOUT=4`` (idle BLAS threads sleep at once; BLAS kernels unchanged,
np.matmul alone is as fast) and removes ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` so
OpenBLAS picks its own kernels. OpenBLAS reads these when it loads, so they must be in
place before NumPy is imported: ``python -m fastconv bench --sections gemm`` re-executes
itself with them; benchmarks/conftest.py sets them before NumPy loads.

This module imports neither NumPy nor torch at import time.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import random
import statistics
import time

DEFAULT_THREADS = 2
BLAS_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BLAS_SET = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def blas_environment(environ):
    """A copy of `environ` as the benchmarks want it for NumPy's OpenBLAS (see above)."""
    env = {k: v for k, v in environ.items() if k not in BLAS_UNSET}
    for k, v in BLAS_SET.items():
        env.setdefault(k, v)
    return env


def blas_environment_ok(environ):
    return all(k not in environ for k in BLAS_UNSET) and all(k in environ for k in BLAS_SET)


@dataclasses.dataclass
class Comparison:
    samples: dict     # name -> list of seconds, one per round
    medians: dict     # name -> median seconds
    rounds: int
    elapsed: float    # seconds spent in the timed rounds

    def ratio(self, peer, ours):
        """median[peer] / median[ours]: > 1 means `ours` is faster."""
        return ratio(self.medians[peer], self.medians[ours])

    def ms(self, name):
        return self.medians[name] * 1e3

    def spread(self, name):
        """(q1, q3) / median - 1 of a name's samples: a rough noise band."""
        xs = sorted(self.samples[name])
        med = self.medians[name]
        if len(xs) < 4 or med <= 0:
            return (0.0, 0.0)
        q = statistics.quantiles(xs, n=4)
        return (q[0] / med - 1.0, q[2] / med - 1.0)


# Timing presets: the quick default of the CLI / the smoke-to-measure pytest mode, and the
# longer one RESULTS.md is made with.
QUICK = dict(warmup=1, repeats=11, min_time=2.0, max_time=6.0)
FULL = dict(warmup=2, repeats=11, min_time=1.0, max_time=20.0)


CUDA_ENV = {"NVIDIA_TF32_OVERRIDE": "0"}


def cuda_environment(environ):
    """Set what cuBLAS and cuDNN read when they load (before torch initialises CUDA): TF32 off for
    every library call, also those torch's flags do not reach. Returns the previous values."""
    before = {k: environ.get(k) for k in CUDA_ENV}
    environ.update(CUDA_ENV)
    return before


def cuda_setup():
    """Like-for-like fp32 on the GPU: cuDNN autotuning on, TF32 off (matmul and cuDNN)."""
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def cuda_settings():
    """The fp32 settings in force, for the JSON: torch's flags and the environment."""
    import os

    import torch
    return {"cudnn.benchmark": torch.backends.cudnn.benchmark, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            **{k: os.environ.get(k) for k in CUDA_ENV}}


def _cuda_timed(fn):
    """fn wrapped to return its GPU time in seconds, measured with CUDA events."""
    import torch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed():
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    return timed


def round_order(names, round_index):
    """The order of round ``round_index``: a permutation of names seeded by the round (the
    same every run), so each name's predecessor varies over the rounds."""
    order = list(names)
    random.Random(round_index).shuffle(order)
    return order


def compare(fns, warmup=2, repeats=10, min_time=0.5, max_time=30.0, min_rounds=3, timer=time.perf_counter,
            cuda=False):
    """Time zero-argument callables interleaved round-robin; see the module docstring.

    fns: dict name -> callable. Returns a Comparison. The garbage collector is off
    during the timed rounds (and back on between rounds). ``cuda=True``: samples are
    CUDA-event times of the calls (the round-robin, warm-up and stopping rules are the same).
    """
    if not fns:
        raise ValueError("compare() needs at least one callable")
    names = list(fns)
    if cuda:
        import torch
        torch.cuda.synchronize()
        events = {name: _cuda_timed(fns[name]) for name in names}
    for name in names:                      # warm-up, each in turn
        for _ in range(max(1, warmup)):
            fns[name]()
    samples = {name: [] for name in names}
    start = timer()
    rounds = 0
    gc_was_enabled = gc.isenabled()
    try:
        while True:
            elapsed = timer() - start
            if rounds >= max(repeats, 1) and elapsed >= min_time:
                break
            if rounds >= min(min_rounds, max(repeats, 1)) and elapsed >= max_time:
                break
            order = round_order(names, rounds)
            gc.disable()
            for name in order:
                fn = fns[name]
                if cuda:
                    samples[name].append(events[name]())
                    continue
                t0 = timer()
                fn()
                samples[name].append(timer() - t0)
            if gc_was_enabled:
                gc.enable()
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    medians = {name: statistics.median(xs) for name, xs in samples.items()}
    return Comparison(samples=samples, medians=medians, rounds=rounds, elapsed=timer() - start)


def ratio(peer_seconds, our_seconds):
    """peer / ours; > 1 means ours is faster. NaN when either is missing or zero."""
    if not peer_seconds or not our_seconds:
        return math.nan
    return peer_seconds / our_seconds


def gflops(flops, seconds):
    """GFLOP/s of `flops` floating-point operations done in `seconds`."""
    return flops / seconds / 1e9 if seconds else math.nan


def gbytes(nbytes, seconds):
    """GB/s (1e9 bytes) of `nbytes` moved in `seconds`."""
    return nbytes / seconds / 1e9 if seconds else math.nan


def geomean(values):
    """Geometric mean of the finite positive values (NaN if there are none)."""
    xs = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else math.nan


def set_threads(n=DEFAULT_THREADS, torch_too=True):
    """Give fastconv, torch (if importable and `torch_too`) and NumPy's BLAS (if
    threadpoolctl is installed) the same thread count. Returns what was applied."""
    import fastconv
    applied = {"fastconv": n}
    fastconv.set_num_threads(n)
    if torch_too:
        try:
            import torch
            torch.set_num_threads(n)
            applied["torch"] = torch.get_num_threads()
        except ImportError:
            pass
    try:
        import threadpoolctl
        global _BLAS_LIMITS
        _BLAS_LIMITS = threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        applied["blas"] = n
    except ImportError:
        pass
    return applied


_BLAS_LIMITS = None  # keeps threadpoolctl's limit object alive
