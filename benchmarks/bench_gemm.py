# bench_gemm.py: pytest-benchmark suite of the project's packed GEMM (fastconv._C.gemm)
# against NumPy's np.matmul (OpenBLAS in the wheels), float32 and float64, on a square
# 1024^3 product and the M x N x K products that im2col convolution runs (ResNet-50 /
# VGG layers: M = output channels, N = output pixels, K = C*R*S), plus small ones.
"""GEMM benchmarks: fastconv's packed GEMM vs np.matmul.

    python -m pytest benchmarks/bench_gemm.py --benchmark-disable -q     # smoke: run once, check vs NumPy
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m pytest benchmarks/bench_gemm.py --benchmark-enable      # measure

Each test is one (shape, dtype, contender). With benchmarks enabled, the first
contender of a (shape, dtype) group also times both contenders with
fastconv.bench.timing.compare (warm-up, then interleaved rounds, medians: the CLI's
method) and every test reports ``gflops`` and ``ratio_to_numpy`` (> 1: fastconv is faster)
in ``extra_info``. Threads: ``FASTCONV_BENCH_THREADS`` (default: fastconv's
current count), applied to both fastconv and, through threadpoolctl when installed,
NumPy's BLAS.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

fc = pytest.importorskip("fastconv")
from fastconv.bench import timing  # noqa: E402
_C = fc._C

# (M, N, K); the conv products are (output channels, output pixels, C*R*S).
SHAPES = [
    (1024, 1024, 1024),
    (256, 3136, 64), (64, 3136, 256), (128, 784, 512), (512, 784, 128),
    (256, 196, 1024), (1024, 196, 256), (2048, 49, 512), (512, 49, 2048),
    (64, 3136, 576),             # 3x3 conv, 64 channels, 56x56, as im2col
    (32, 100, 27), (16, 49, 16),  # small: first layers, tiny problems
]
DTYPES = ["float32", "float64"]
CONTENDERS = ["fastconv", "numpy"]
_compare_cache: dict = {}


def _threads() -> int:
    return int(os.environ.get("FASTCONV_BENCH_THREADS", "0")) or _C.get_num_threads()


def _blas_limit(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # NumPy then uses its own default
        return None
    return threadpool_limits(limits=n, user_api="blas")


def _operands(shape, dtype):
    M, N, K = shape
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    return A, B, np.empty((M, N), dtype)


def _runner(name, A, B, C):
    if name == "fastconv":
        return lambda: _C.gemm(False, False, 1.0, A, B, 0.0, C)
    return lambda: np.matmul(A, B, out=C)


def _interleaved(fns):
    """Median seconds per call of each function: fastconv.bench.timing.compare (the CLI's method)."""
    return timing.compare(fns, **timing.QUICK).medians


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm(benchmark, shape, dtype, contender):
    M, N, K = shape
    threads = _threads()
    _C.set_num_threads(threads)
    limit = _blas_limit(threads)
    try:
        A, B, C = _operands(shape, dtype)
        fn = _runner(contender, A, B, C)
        enabled = not getattr(benchmark, "disabled", False)
        key = (shape, dtype)
        if enabled and key not in _compare_cache:
            ops = {c: _runner(c, *_operands(shape, dtype)) for c in CONTENDERS}
            _compare_cache[key] = _interleaved(ops)
        benchmark.group = f"gemm {M}x{N}x{K} {dtype}"
        benchmark(fn)
        # Smoke mode runs each contender once: check the result against float64.
        ref = A.astype(np.float64) @ B.astype(np.float64)
        tol = (1e-5 * np.sqrt(K) if dtype == "float32" else 1e-12) * max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(C - ref).max()) <= tol
        if key in _compare_cache:
            med = _compare_cache[key]
            benchmark.extra_info["gflops"] = 2.0 * M * N * K / med[contender] / 1e9
            benchmark.extra_info["ratio_to_numpy"] = med["numpy"] / med["fastconv"]
            benchmark.extra_info["threads"] = threads
    finally:
        if limit is not None:
            limit.restore_original_limits()
