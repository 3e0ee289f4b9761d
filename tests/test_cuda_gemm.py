"""The project's CUDA GEMM (csrc/cuda/gemm.cu) through its test hook, _C.cuda_gemm: C = alpha *
op(A) @ op(B) + beta * C against NumPy in float64, for float32 and float64, every transpose, odd
and prime sizes that leave partial tiles on every edge, each tile shape (FASTCONV_CUDA_GEMM_TILE),
batches, beta != 0, C pre-filled with NaN when beta == 0 (the kernel must not read it), operands
that are not 16-byte aligned or whose rows are not (the scalar fallback of the 128-bit loads), and
NaN/Inf propagation. The convolutions built on the same kernel are the case table's tests
(test_conv.py, test_backward.py, rows cuda-im2col).

Runs on the emulated CUDA device (fastconv built with FASTCONV_CUDA_EMU=ON, no GPU) with host
arrays as device memory, or on a GPU with torch CUDA tensors.
"""
import numpy as np
import pytest

from emulated import emulating
from fastconv import _C

pytestmark = pytest.mark.cuda

TILES = ["auto", "small", "medium", "large"]
# (M, N, K): a single element; primes below one small tile; edges of every tile in M, N and K
# (the large tile is 128 x 64, k-tiles of 8 and 16); sizes whose rows are all 16-byte aligned, one
# of them whole large tiles (the loads' unconditional path on every tile) with a partial k-tile.
SHAPES = [(1, 1, 1), (3, 5, 7), (37, 23, 19), (131, 67, 21), (33, 130, 17), (64, 64, 32), (128, 128, 44)]


def _tol(dtype, k):
    return (2e-6 if dtype == np.float32 else 1e-14) * np.sqrt(k + 1)


class Device:
    """Device arrays for the hook: host arrays on the emulator, torch CUDA tensors on a GPU."""

    def __init__(self):
        if emulating():
            self.torch = None
            return
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available() or not _C.cuda_devices()["devices"]:
            pytest.skip("needs a CUDA GPU or the emulator")
        self.torch = torch

    def put(self, a):
        return a if self.torch is None else self.torch.from_numpy(np.ascontiguousarray(a)).cuda()

    def get(self, a):
        if self.torch is None:
            return a
        self.torch.cuda.synchronize()
        return a.cpu().numpy()

    def tensor(self, a):
        if self.torch is None:
            return _C.Tensor(a.ctypes.data, a.dtype.name, a.shape, None, "cuda", 0)
        return _C.Tensor(a.data_ptr(), str(a.dtype).replace("torch.", ""), tuple(a.shape), None, "cuda",
                         a.device.index)


@pytest.fixture
def dev():
    return Device()


@pytest.fixture(params=TILES)
def tile(request, monkeypatch):
    if request.param != "auto":
        monkeypatch.setenv("FASTCONV_CUDA_GEMM_TILE", request.param)
    return request.param


def _operands(rng, dtype, ta, tb, m, n, k, batch=None):
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(dtype)
    b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(dtype)
    return a, b


def _want(a, b, ta, tb, alpha, beta=0.0, c=None):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    opa = np.swapaxes(a64, -1, -2) if ta else a64
    opb = np.swapaxes(b64, -1, -2) if tb else b64
    out = alpha * (opa @ opb)
    return out if c is None else out + beta * c.astype(np.float64)


def _check(got, want, dtype, k, what):
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    err = np.abs(got - want).max()
    scale = max(1.0, np.abs(want).max())
    assert err <= _tol(dtype, k) * scale, f"{what}: max error {err:.3e} (scale {scale:.3e})"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_gemm_matches_numpy(dev, tile, rng, dtype, ta, tb, m, n, k):
    a, b = _operands(rng, dtype, ta, tb, m, n, k)
    c = dev.put(np.full((m, n), np.nan, dtype))  # beta == 0: C must not be read
    _C.cuda_gemm(ta, tb, 1.25, dev.tensor(dev.put(a)), dev.tensor(dev.put(b)), 0.0, dev.tensor(c))
    _check(dev.get(c), _want(a, b, ta, tb, 1.25), dtype, k, f"{tile} {dtype.__name__} ta={ta} tb={tb}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)], ids=["NN", "TT"])
def test_gemm_batched_with_beta(dev, tile, rng, dtype, ta, tb):
    batch, m, n, k = 3, 29, 41, 23
    a, b = _operands(rng, dtype, ta, tb, m, n, k, batch)
    c0 = rng.standard_normal((batch, m, n)).astype(dtype)
    c = dev.put(c0.copy())
    _C.cuda_gemm(ta, tb, -0.75, dev.tensor(dev.put(a)), dev.tensor(dev.put(b)), 0.5, dev.tensor(c))
    _check(dev.get(c), _want(a, b, ta, tb, -0.75, 0.5, c0), dtype, k, f"{tile} batched")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_gemm_batched_nan_filled_output(dev, tile, rng, dtype):
    batch, m, n, k = 4, 17, 12, 40  # rows of 12 and 40 values: 16-byte aligned in every batch
    a, b = _operands(rng, dtype, False, False, m, n, k, batch)
    c = dev.put(np.full((batch, m, n), np.nan, dtype))
    _C.cuda_gemm(False, False, 1.0, dev.tensor(dev.put(a)), dev.tensor(dev.put(b)), 0.0, dev.tensor(c))
    _check(dev.get(c), _want(a, b, False, False, 1.0), dtype, k, f"{tile} batched NaN-filled")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
def test_gemm_unaligned_operands(dev, tile, rng, dtype, ta, tb):
    """Every row a multiple of 16 bytes, but A, B and C start one element past a 16-byte boundary:
    the 128-bit loads and stores must fall back to scalar ones."""
    if not emulating():
        pytest.skip("offset views of host memory: the emulator only")
    m, n, k = 36, 40, 24

    def shifted(shape, fill=None):
        size = int(np.prod(shape))
        buf = np.empty(size + 4, dtype)
        off = (-(buf.ctypes.data // buf.itemsize) + 1) % (16 // buf.itemsize) or 16 // buf.itemsize
        view = buf[off:off + size].reshape(shape)
        assert view.ctypes.data % 16 != 0
        view[...] = rng.standard_normal(shape) if fill is None else fill
        return view

    a = shifted((k, m) if ta else (m, k))
    b = shifted((n, k) if tb else (k, n))
    c0 = shifted((m, n))
    c = c0.copy()
    c_view = shifted((m, n), c)
    _C.cuda_gemm(ta, tb, 2.0, dev.tensor(a), dev.tensor(b), -1.0, dev.tensor(c_view))
    _check(c_view, _want(a, b, ta, tb, 2.0, -1.0, c0), dtype, k, f"{tile} unaligned")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_gemm_propagates_nan_and_inf(dev, tile, rng, dtype):
    m, n, k = 9, 13, 11
    a, b = _operands(rng, dtype, False, False, m, n, k)
    a[2, 3] = np.nan
    b[4, 7] = np.inf
    c = dev.put(np.zeros((m, n), dtype))
    _C.cuda_gemm(False, False, 1.0, dev.tensor(dev.put(a)), dev.tensor(dev.put(b)), 0.0, dev.tensor(c))
    got = dev.get(c)
    with np.errstate(invalid="ignore"):
        want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert np.abs(got[finite] - want[finite]).max() <= _tol(dtype, k) * np.abs(want[finite]).max()
