"""Shared fixtures: the instruction sets to test, the conv kernels of the registry,
NaN-filled outputs and per-algorithm tolerances."""
import numpy as np
import pytest

import fastconv
from fastconv import _C
from fastconv.functional import conv_params

ISA_ORDER = ["scalar", "avx2", "avx512"]
AVAILABLE_ISAS = ISA_ORDER[: ISA_ORDER.index(_C.detected_isa()) + 1]

# Every conv2d CPU algorithm in the kernel table (tests pick up new rows by themselves).
CONV_ALGORITHMS = sorted(fastconv.algorithms.kernel_names())

# Error allowed relative to max |y|, per algorithm and dtype, for a reduction of length 1;
# scaled by sqrt(reduction length) (random-walk growth of rounding error).
TOLERANCE = {
    "direct": {np.float32: 2e-6, np.float64: 1e-14},
    "im2col": {np.float32: 2e-6, np.float64: 1e-14},
    # Winograd (float32 only): the transforms' rounding grows with the tile (see
    # test_winograd.py for the contract on max error / max |y| at up to 512 channels).
    "winograd:2": {np.float32: 4e-6},
    "winograd:4": {np.float32: 2e-5},
    "winograd:6": {np.float32: 4e-5},
    # FFT (float32 only): rounding of the transforms and of the products of every bin, spread
    # over the whole tile (see test_fft.py for the contract at up to 512 channels).
    "fft:8": {np.float32: 4e-6},
    "fft:16": {np.float32: 4e-6},
}

# Algorithms that are exact whenever every partial sum is (small integers): plain sums
# of products. Winograd's transforms have fractional entries, so it is not.
EXACT_ALGORITHMS = [a for a in CONV_ALGORITHMS if a in ("direct", "im2col")]


def conv_supported(algorithm, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
                   dtype=np.float32):
    """Whether ``algorithm`` serves this conv2d problem (asked of the kernel table), so the
    test lists hold only the (algorithm, problem) pairs that run, never skips."""
    if algorithm in ("auto", "reference"):
        return True
    params, _ = conv_params(tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, "test")
    return _C.supports(algorithm, params, np.dtype(dtype).name) == ""


def tolerance(algorithm, dtype, reduction):
    return TOLERANCE[algorithm][np.dtype(dtype).type] * max(1.0, np.sqrt(reduction)) * 4


@pytest.fixture(params=AVAILABLE_ISAS)
def isa(request):
    """Run the test once per instruction set this CPU has, restoring the best afterwards."""
    before = _C.get_isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


def nan_out(shape, dtype):
    """An output array full of NaN, so an element a kernel forgets to write shows up."""
    return np.full(shape, np.nan, dtype)


def assert_close(got, want, tol, what=""):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values in output"
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:.1e} x max|y| {scale:.3e}"
