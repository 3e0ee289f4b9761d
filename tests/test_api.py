"""The Python API's contract: array types, helpers, introspection, ISA selection."""
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _C


def test_public_names():
    for name in ["conv2d", "conv1d", "conv2d_output_shape", "explain", "info", "set_num_threads", "get_num_threads"]:
        assert callable(getattr(fastconv, name)), name


def test_output_shape_formula():
    # The lecture's (N - F + 2P)/S + 1, and with dilation.
    assert fastconv.conv2d_output_shape((1, 3, 32, 32), (16, 3, 5, 5), stride=1, padding=0) == (1, 16, 28, 28)
    assert fastconv.conv2d_output_shape((1, 3, 7, 7), (4, 3, 3, 3), stride=2, padding=1) == (1, 4, 4, 4)
    assert fastconv.conv2d_output_shape((2, 3, 227, 227), (96, 3, 11, 11), stride=4) == (2, 96, 55, 55)
    assert fastconv.conv2d_output_shape((1, 1, 10, 10), (1, 1, 3, 3), dilation=2) == (1, 1, 6, 6)
    assert fastconv.conv2d_output_shape((1, 1, 10, 9), (1, 1, 3, 3), stride=3, padding="same") == (1, 1, 4, 3)
    assert fastconv.conv2d_output_shape((1, 1, 10, 9), (1, 1, 3, 3), padding="full") == (1, 1, 12, 11)
    assert fastconv.conv2d_output_shape((1, 8, 10, 9), (8, 1, 3, 3)) == (1, 8, 8, 7)  # depthwise inferred


def test_edge_detector_of_the_lecture():
    """A 2-element kernel over a 320x280 image: 319x280 output, each pixel minus its left neighbour."""
    img = np.random.default_rng(0).random((280, 320)).astype(np.float32)
    k = np.array([[-1.0, 1.0]], np.float32)
    y = fastconv.conv2d(img[None, None], k[None, None])[0, 0]
    assert y.shape == (280, 319)
    np.testing.assert_allclose(y, img[:, 1:] - img[:, :-1], atol=1e-6)
    # 319*280 outputs x (2 multiplies + 1 add) = 267,960 FLOPs (vs ~16e9 for the dense matrix form).
    assert y.size * 3 == 267_960


def test_flip_is_true_convolution(rng):
    x = rng.standard_normal((1, 1, 9, 8))
    w = rng.standard_normal((1, 1, 3, 4))
    y = fastconv.conv2d(x, w, padding="full", flip=True)[0, 0]
    # y[i, j] = sum_{r,s} x[i - r, j - s] w[r, s] (the textbook definition), with zero outside.
    want = np.zeros((9 + 2, 8 + 3))
    for r in range(3):
        for s in range(4):
            want[r:r + 9, s:s + 8] += x[0, 0] * w[0, 0, r, s]
    np.testing.assert_allclose(y, want, atol=1e-12)


def test_numpy_in_numpy_out_and_float64(rng):
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    y = fastconv.conv2d(x, w)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64


def test_non_contiguous_inputs(rng):
    base = rng.standard_normal((2, 6, 12, 14)).astype(np.float32)
    x = base[:, ::2, ::-1, 1::2]  # strided, reversed
    w = np.asfortranarray(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    for algorithm in ("direct", "im2col", "auto"):
        y = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
        want = fastconv.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), padding=1, algorithm="reference")
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_empty_batch_returns_empty():
    y = fastconv.conv2d(np.zeros((0, 3, 8, 8), np.float32), np.zeros((5, 3, 3, 3), np.float32), padding=1)
    assert y.shape == (0, 5, 8, 8)


def test_torch_tensors_in_torch_tensors_out(rng):
    torch = pytest.importorskip("torch")
    x = torch.randn(2, 3, 10, 9, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(4)
    y = fastconv.conv2d(x, w, b, stride=2, padding=1)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    want = torch.nn.functional.conv2d(x.detach(), w, b, stride=2, padding=1)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    xt = torch.randn(1, 3, 12, 12).transpose(2, 3)  # non-contiguous tensor
    y2 = fastconv.conv1d(xt[:, :, 0], w[:, :, 0], padding="same")
    torch.testing.assert_close(y2, torch.nn.functional.conv1d(xt[:, :, 0], w[:, :, 0], padding="same"))


def test_cpu_identity_is_cpuids():
    """The vendor, family and model that auto's per-vendor rules key on are the ones Linux reads
    from CPUID (/proc/cpuinfo), on x86 hosts."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not cpuinfo.exists():
        pytest.skip("CPUID is read on x86 Linux hosts only")
    fields = dict(line.split(":", 1) for line in cpuinfo.read_text().split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    ident = _C.cpu_identity()
    assert ident["vendor_id"] == fields["vendor_id"]
    assert (ident["family"], ident["model"]) == (int(fields["cpu family"]), int(fields["model"]))
    assert ident["vendor"] == {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(fields["vendor_id"], "other")


def test_info_and_threads():
    info = fastconv.info()
    assert info["version"] == fastconv.__version__
    assert info["isa"] in ("scalar", "avx2", "avx512") and info["isa_detected"] == _C.detected_isa()
    assert info["threads"] == fastconv.get_num_threads() >= 1
    assert info["cpu"] == _C.cpu_identity() and info["cpu"]["vendor"] in ("intel", "amd", "other")
    build, status = _C.build_info(), _C.cuda_devices()
    if not build["cuda_kernels"]:
        assert info["cuda"].startswith("none (this build has no CUDA kernels")
    elif not status["devices"]:
        assert f"{build['cuda_kernels']} CUDA kernels compiled, no GPU ({status['why_none']})" in info["cuda"]
    else:
        assert all(d["name"] in info["cuda"] for d in status["devices"]) and info["cuda_devices"] == status["devices"]
    assert {"auto", "direct", "im2col", "reference"} <= set(info["algorithms"])


def test_explain_lists_every_algorithm():
    e = fastconv.explain((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    names = [r["algorithm"] for r in e.algorithms]
    assert set(names) >= {"direct", "im2col", "reference"}
    for r in e.algorithms:
        assert r["supported"] and r["flops"] == 2 * 64 * 56 * 56 * 64 * 9
        assert r["workspace_bytes"] >= 0
    assert e.auto in names
    text = str(e)
    assert "<- auto" in text and "(1, 64, 56, 56)" in text
    dw = fastconv.explain((1, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32)
    assert dw.auto == "direct"


@pytest.mark.slow
@pytest.mark.parametrize("level", ["scalar", "avx2"])
def test_fastconv_isa_environment_variable(level):
    order = ["scalar", "avx2", "avx512"]
    if order.index(level) > order.index(_C.detected_isa()):
        pytest.skip(f"this CPU has no {level}")
    env = dict(os.environ, FASTCONV_ISA=level)
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.info()['isa'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == level


@pytest.mark.slow
def test_fastconv_isa_environment_variable_rejects_unknown():
    env = dict(os.environ, FASTCONV_ISA="mmx")
    out = subprocess.run([sys.executable, "-c", "import fastconv"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown ISA 'mmx'" in out.stderr
