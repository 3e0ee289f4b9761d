# suite.py: helpers of the pytest-benchmark suite shared by conftest.py and bench_*.py
# (mode selection, thread count, handing timing.compare samples to pytest-benchmark).
"""Helpers for ``benchmarks/bench_*.py``; imported as a plain module (benchmarks/ is on
sys.path), never as ``conftest`` (the name is ambiguous with ``tests/conftest.py``)."""
from __future__ import annotations

import os

from fastconv.bench import timing


def full_mode(config=None):
    """True for a full run (every layer, batches 1 and 8)."""
    env = os.environ.get("FASTCONV_BENCH_FULL", "").strip().lower() not in ("", "0", "false", "no")
    return env or bool(config is not None and config.getoption("--bench-full", default=False))


def bench_threads():
    return int(os.environ.get("FASTCONV_BENCH_THREADS", timing.DEFAULT_THREADS))


def record_samples(benchmark, samples, extra=None):
    """Hand samples measured by timing.compare to pytest-benchmark's statistics.

    Uses the fixture's internal ``_make_stats`` (pytest-benchmark 4-5); returns False
    when that is unavailable, so the caller can fall back to ``benchmark.pedantic``.
    """
    if extra:
        benchmark.extra_info.update(extra)
    make_stats = getattr(benchmark, "_make_stats", None)
    if make_stats is None or getattr(benchmark, "_mode", None):
        return False
    stats = make_stats(1)
    for s in samples:
        stats.update(s)
    benchmark._mode = "timing.compare (interleaved)"
    return True
