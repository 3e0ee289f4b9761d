# conftest.py: shared pytest fixtures and options of the benchmark suite (benchmarks/bench_*.py).
"""Fixtures and options shared by ``benchmarks/bench_*.py``.

- ``bench_*.py`` files are collected when pytest is pointed at ``benchmarks/``
  (the project's ``python_files`` only matches ``test_*.py``).
- Smoke mode vs full mode: ``--bench-full`` or ``FASTCONV_BENCH_FULL=1`` selects every
  layer and batch; otherwise a representative subset runs (``shapes.QUICK``).
- Threads: fastconv, torch and NumPy's BLAS all get ``FASTCONV_BENCH_THREADS`` (2).
- Timing: pytest-benchmark's table is fed with the samples of ``timing.compare``
  (interleaved with the peer in this process), see ``record_samples``.
"""
from __future__ import annotations

import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import timing  # noqa: E402

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


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and file_path.parent == HERE and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


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
    if bench_full:
        return dict(warmup=2, repeats=15, min_time=1.0, max_time=30.0)
    return dict(warmup=1, repeats=5, min_time=0.2, max_time=5.0)
