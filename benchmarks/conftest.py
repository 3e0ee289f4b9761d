# conftest.py: shared pytest fixtures and options of the benchmark suite (benchmarks/bench_*.py).
"""Fixtures and options shared by ``benchmarks/bench_*.py``.

- ``bench_*.py`` files are collected by the project's pytest settings (``testpaths`` has
  ``benchmarks``, ``python_files`` matches ``bench_*.py``), so ``python -m pytest`` runs them in
  smoke mode (``--benchmark-disable`` in addopts: each case once, checked against torch).
- Smoke mode: the quick subset (``fastconv.bench.networks.QUICK``) at batch 1. With
  ``--benchmark-enable``: the quick subset at batch 1 and, where cheap, 8; ``--bench-full`` or
  ``FASTCONV_BENCH_FULL=1``: every layer at batches 1 and 8.
- Threads: fastconv, torch and NumPy's BLAS all get ``FASTCONV_BENCH_THREADS`` (2).
- Timing: pytest-benchmark's table is fed with the samples of ``fastconv.bench.timing.compare``
  (interleaved with the peers in this process, the CLI's method), see ``record_samples``.
"""
from __future__ import annotations

import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

try:   # fastconv.bench.timing imports neither NumPy nor torch; fastconv itself imports NumPy,
    # so load the timing module by path to set OpenBLAS's environment before NumPy loads.
    import importlib.util
    _spec = importlib.util.spec_from_file_location(
        "_fastconv_bench_timing", HERE.parent / "python" / "fastconv" / "bench" / "timing.py")
    timing = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(timing)
except (OSError, ImportError, AttributeError):   # an installed fastconv without the source tree
    from fastconv.bench import timing  # noqa: E402

# NumPy's OpenBLAS reads its environment when it loads: fix it now if NumPy is not loaded
# yet (see timing.py: idle BLAS threads must not spin on the cores of the next contender).
if "numpy" not in sys.modules and not timing.blas_environment_ok(os.environ):
    _env = timing.blas_environment(os.environ)
    for _k in timing.BLAS_UNSET:
        os.environ.pop(_k, None)
    os.environ.update({k: _env[k] for k in timing.BLAS_SET})

from suite import bench_threads, full_mode  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("fastconv benchmarks")
    group.addoption("--bench-full", action="store_true", default=False,
                    help="benchmark every layer and batch (also: FASTCONV_BENCH_FULL=1); "
                         "default is a representative subset")


@pytest.fixture(scope="session", autouse=True)
def threads():
    """Same thread count for fastconv, torch and NumPy's BLAS for the whole session."""
    pytest.importorskip("fastconv")
    return timing.set_threads(bench_threads())


@pytest.fixture(scope="session")
def bench_full(request):
    return full_mode(request.config)


@pytest.fixture(scope="session")
def timing_options(bench_full):
    """Arguments of timing.compare for this mode."""
    from fastconv.bench import timing as t
    return dict(t.FULL if bench_full else t.QUICK)
