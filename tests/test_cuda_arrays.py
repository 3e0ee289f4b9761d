"""fastconv's CUDA backend from the caller's side: GPU arrays in, the same type out, the caller's
allocator and stream, the errors of mixing devices. The kernels' numbers are the case table's
tests (test_conv, test_backward, test_pool, test_pool_backward); these check the plumbing.

Two kinds of GPU array run here. On the emulator (no GPU; fastconv built with
FASTCONV_CUDA_EMU=ON) the tests' EmulatedArray stands for a CuPy-like library: every call goes
through _arrays.CudaBackend as on a GPU. On a GPU, torch CUDA tensors and CuPy arrays: round trips,
stream order, gradcheck in float64, and convert() of ResNet-18 against torch.
"""
import numpy as np
import pytest

import fastconv as fc
from emulated import EmulatedArray, emulating
from fastconv import _C
from fastconv import reference as ref

pytestmark = pytest.mark.cuda

needs_emulator = pytest.mark.skipif(not emulating(), reason="runs on the emulated CUDA device (no GPU arrays "
                                                            "to build EmulatedArrays for otherwise)")


def _rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---- the emulated device: fastconv's CUDA backend end to end -----------------------------------

@needs_emulator
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_conv2d_takes_and_returns_gpu_arrays(rng, algorithm):
    x, w, b = _rand(rng, 2, 5, 9, 7), _rand(rng, 6, 5, 3, 3), _rand(rng, 6)
    y = fc.conv2d(EmulatedArray(x), EmulatedArray(w), EmulatedArray(b), padding=1, stride=(2, 1),
                  algorithm=algorithm)
    assert isinstance(y, EmulatedArray)
    want = ref.conv2d(x, w, b, stride=(2, 1), pads=((1, 1), (1, 1)))
    np.testing.assert_allclose(y.get(), want, rtol=1e-4, atol=1e-4)


@needs_emulator
def test_out_is_written_in_place_and_must_be_on_the_device(rng):
    x, w = _rand(rng, 1, 3, 8, 8), _rand(rng, 4, 3, 3, 3)
    out = EmulatedArray(np.full((1, 4, 6, 6), np.nan, np.float32))
    assert fc.conv2d(EmulatedArray(x), EmulatedArray(w), out=out, algorithm="direct") is out
    np.testing.assert_allclose(out.host, ref.conv2d(x, w), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="out must be a emulated array on cuda:0"):
        fc.conv2d(EmulatedArray(x), EmulatedArray(w), out=np.empty((1, 4, 6, 6), np.float32))


@needs_emulator
def test_mixing_cpu_and_gpu_arrays_is_a_value_error(rng):
    x, w = _rand(rng, 1, 3, 8, 8), _rand(rng, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="arrays must be on one device: input is on cuda:0, weight on cpu"):
        fc.conv2d(EmulatedArray(x), w)
    with pytest.raises(ValueError, match="one device"):
        fc.max_pool2d_backward(EmulatedArray(x), x, 2)


@needs_emulator
@pytest.mark.parametrize("algorithm, match", [("reference", "runs on the CPU only"),
                                              ("winograd", "no cuda kernel"), ("fft:8", "no cuda kernel"),
                                              ("bogus", "unknown algorithm")])
def test_cpu_only_algorithms_are_refused_on_the_gpu(rng, algorithm, match):
    x, w = EmulatedArray(_rand(rng, 1, 16, 8, 8)), EmulatedArray(_rand(rng, 16, 16, 3, 3))
    with pytest.raises(ValueError, match=match):
        fc.conv2d(x, w, padding=1, algorithm=algorithm)


@needs_emulator
def test_float64_backward_on_the_gpu(rng):
    x, w = _rand(rng, 2, 4, 7, 6, dtype=np.float64), _rand(rng, 6, 2, 3, 2, dtype=np.float64)
    gy = _rand(rng, 2, 6, 5, 6, dtype=np.float64)
    got = fc.conv2d_backward(EmulatedArray(gy), EmulatedArray(x), EmulatedArray(w), padding=(0, 1),
                             dilation=(1, 2), groups=2)
    want = ref.conv2d_backward(gy, x, w, pads=((0, 0), (1, 1)), dilation=(1, 2), groups=2)
    for g, r in zip(got, want):
        assert isinstance(g, EmulatedArray) and g.dtype == np.float64
        np.testing.assert_allclose(g.get(), r, rtol=1e-10, atol=1e-10)


@needs_emulator
def test_pooling_with_indices_and_its_backward_on_the_gpu(rng):
    x = _rand(rng, 2, 3, 9, 8)
    y, idx = fc.max_pool2d(EmulatedArray(x), 3, 2, 1, return_indices=True, ceil_mode=True)
    assert isinstance(y, EmulatedArray) and isinstance(idx, EmulatedArray) and idx.dtype == np.int64
    y_cpu, idx_cpu = fc.max_pool2d(x, 3, 2, 1, return_indices=True, ceil_mode=True)
    np.testing.assert_array_equal(y.get(), y_cpu)
    np.testing.assert_array_equal(idx.get(), idx_cpu)
    gy = _rand(rng, *y_cpu.shape)
    gx = fc.max_pool2d_backward(EmulatedArray(gy), EmulatedArray(x), 3, 2, 1, ceil_mode=True, indices=idx)
    np.testing.assert_allclose(gx.get(), fc.max_pool2d_backward(gy, x, 3, 2, 1, ceil_mode=True, indices=idx_cpu),
                               rtol=1e-6, atol=1e-6)
    a = fc.adaptive_avg_pool1d(EmulatedArray(x[:, :, 0]), 5)
    np.testing.assert_allclose(a.get(), fc.adaptive_avg_pool1d(x[:, :, 0], 5), rtol=1e-6, atol=1e-6)


@needs_emulator
def test_plans_run_on_the_gpu(rng):
    x, w, b = _rand(rng, 3, 8, 7, 7), _rand(rng, 5, 8, 3, 3), _rand(rng, 5)
    plan = fc.plan_conv2d(EmulatedArray(w), x.shape, padding=1, bias=EmulatedArray(b))
    y = plan(EmulatedArray(x))
    assert isinstance(y, EmulatedArray)
    np.testing.assert_allclose(y.get(), ref.conv2d(x, w, b, pads=((1, 1), (1, 1))), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="plan was made for cuda arrays"):
        plan(x)


@needs_emulator
def test_info_and_explain_describe_the_device():
    assert "emulator" in fc.info()["cuda"]
    e = fc.explain((1, 16, 8, 8), (16, 16, 3, 3), padding=1, device="cuda")
    rows = {r["algorithm"]: r for r in e.algorithms}
    assert rows["direct"]["supported"] and rows["im2col"]["supported"]
    assert rows["reference"]["reason"] == "the NumPy reference runs on the CPU only"
    assert e.auto in ("direct", "im2col")


@needs_emulator
def test_cuda_gemm_hook(rng):
    a, bm = _rand(rng, 2, 37, 19), _rand(rng, 2, 23, 19)  # batched, B transposed
    c = EmulatedArray(np.full((2, 37, 23), np.nan, np.float32))

    def d(arr):
        return _C.Tensor(arr.host.ctypes.data, arr.host.dtype.name, arr.host.shape, None, "cuda", 0)
    _C.cuda_gemm(False, True, 1.5, d(EmulatedArray(a)), d(EmulatedArray(bm)), 0.0, d(c))
    np.testing.assert_allclose(c.host, 1.5 * a @ bm.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)


# ---- a real GPU: torch CUDA tensors and CuPy arrays ---------------------------------------------

def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or not _C.cuda_devices()["devices"] or emulating():
        pytest.skip("needs a CUDA GPU")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_cuda_round_trip(dtype):
    torch = _torch_cuda()
    dt = getattr(torch, dtype)
    x = torch.randn(2, 8, 15, 13, device="cuda", dtype=dt)
    w = torch.randn(12, 4, 3, 3, device="cuda", dtype=dt)
    for algorithm in ("auto", "direct", "im2col"):
        y = fc.conv2d(x, w, padding=1, groups=2, algorithm=algorithm)
        assert isinstance(y, torch.Tensor) and y.device == x.device and y.dtype == dt
        want = torch.nn.functional.conv2d(x, w, padding=1, groups=2)
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


def test_cupy_round_trip():
    cupy = pytest.importorskip("cupy")
    if not _C.cuda_devices()["devices"] or emulating():
        pytest.skip("needs a CUDA GPU")
    x = cupy.random.standard_normal((1, 3, 11, 11)).astype(cupy.float32)
    w = cupy.random.standard_normal((5, 3, 3, 3)).astype(cupy.float32)
    y = fc.conv2d(x, w, stride=2)
    assert isinstance(y, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(y), ref.conv2d(cupy.asnumpy(x), cupy.asnumpy(w), stride=(2, 2)),
                               rtol=1e-4, atol=1e-4)
    p = fc.max_pool2d(x, 2)
    np.testing.assert_array_equal(cupy.asnumpy(p), fc.max_pool2d(cupy.asnumpy(x), 2))


def test_work_is_queued_on_the_callers_stream():
    torch = _torch_cuda()
    s = torch.cuda.Stream()
    w = torch.randn(64, 64, 3, 3, device="cuda")
    with torch.cuda.stream(s):
        # x is written on s and read by fastconv on s without a synchronisation in between:
        # only stream order makes this right.
        x = torch.randn(8, 64, 56, 56, device="cuda") * 3.0
        y = fc.conv2d(x, w, padding=1, algorithm="im2col")
        z = y * 2.0
    s.synchronize()
    torch.testing.assert_close(z, 2.0 * torch.nn.functional.conv2d(x, w, padding=1), rtol=1e-3, atol=1e-3)


def test_gradcheck_float64_on_the_gpu():
    torch = _torch_cuda()
    from fastconv.torch import conv2d, max_pool2d
    x = torch.randn(2, 4, 7, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, device="cuda", dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, padding=1, groups=2), (x, w, b))
    assert torch.autograd.gradcheck(lambda x: max_pool2d(x, 2, 1), (x,))


def test_convert_resnet18_on_the_gpu():
    torch = _torch_cuda()
    from fastconv.torch import convert
    from fastconv.torch.models import resnet18
    torch.manual_seed(0)
    model = resnet18(num_classes=10).cuda().eval()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        want = model(x)
        got = convert(model)(x)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
