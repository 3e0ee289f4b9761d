# The one boundary from Python to the kernels (csrc/registry.h: run, prepare, workspace_bytes;
# csrc/tensor.h's descriptors) and the one place in Python that decides the device
# (fastconv._arrays): every tensor is checked in C++ (presence, slot, dtype, shape, contiguity,
# device, alignment, writability) before a kernel runs, and bad calls raise, never crash.
import numpy as np
import pytest

import fastconv as fc
from fastconv import _arrays, _C, algorithms
from fastconv._args import conv_params

X = np.random.default_rng(3).standard_normal((2, 4, 9, 7)).astype(np.float32)
W = np.random.default_rng(4).standard_normal((6, 4, 3, 3)).astype(np.float32)
PARAMS, PADS = conv_params(X.shape, W.shape, 1, 1, 1, 1)
Y_SHAPE = (PARAMS.N, PARAMS.K, PARAMS.P, PARAMS.Q)


def _y():
    return np.full(Y_SHAPE, np.nan, np.float32)


def _run(tensors, algorithm="direct", **kw):
    _C.run("conv2d_forward", algorithm, PARAMS, tensors, **kw)


def test_run_matches_the_public_call():
    y = _y()
    _run({"x": X, "w": W, "y": y})
    np.testing.assert_array_equal(y, fc.conv2d(X, W, padding=1, algorithm="direct"))


def test_kernel_table_has_a_device_column():
    rows = _C.kernels()
    assert rows and all(set(r) == {"algorithm", "op", "device", "prepares"} for r in rows)
    cuda_rows = [r for r in rows if r["device"] == "cuda"]
    assert {r["device"] for r in rows} <= {"cpu", "cuda"}
    assert _C.build_info()["cuda_kernels"] == len(cuda_rows)
    if cuda_rows:  # every op has its CUDA rows: direct everywhere, im2col for convolution
        assert {(r["op"], r["algorithm"]) for r in cuda_rows} == (
            {(op, "direct") for op in _C.build_info()["ops"]}
            | {(op, "im2col") for op in ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight")})
    else:
        assert "no CUDA kernels" in fc.info()["cuda"]


def test_descriptor_of_an_array():
    d = _C.Tensor.of(X)
    assert (d.data, d.dtype, d.shape, d.device, d.device_index, d.writable) == (
        X.ctypes.data, "float32", list(X.shape), "cpu", 0, True)
    assert d.strides == [s // 4 for s in X.strides]
    # A descriptor made by hand for the same memory runs like the array itself.
    y1, y2 = _y(), _y()
    _run({"x": X, "w": W, "y": y1})
    _run({"x": _C.Tensor(X.ctypes.data, "float32", X.shape), "w": W,
          "y": _C.Tensor(y2.ctypes.data, "float32", y2.shape)})
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("tensors, exc, words", [
    ({"w": W, "y": None}, ValueError, "needs x"),
    ({"x": X, "y": None}, ValueError, "weight is required"),
    ({"x": X, "w": W}, ValueError, "y is required"),
    ({"x": X, "w": W, "y": np.empty((2, 6, 9, 6), np.float32)}, ValueError, "y dimension 3 is 6, expected 7"),
    ({"x": X, "w": W[:, :3].copy(), "y": None}, ValueError, "weight dimension 1 is 3"),
    ({"x": X, "w": W, "y": np.empty(Y_SHAPE, np.float64)}, TypeError, "y has dtype float64, expected float32"),
    ({"x": X.astype(np.int32), "w": W, "y": None}, TypeError, "int32"),
    ({"x": X.astype(np.float16), "w": W, "y": None}, TypeError, "float16"),
    ({"x": np.asfortranarray(X), "w": W, "y": None}, ValueError, "x must be C-contiguous"),
    ({"x": X, "w": W, "y": None, "grad_x": X}, ValueError, "conv2d_forward takes no tensor 'grad_x'"),
    ({"x": X, "w": W, "y": None, "z": X}, ValueError, "unknown tensor 'z'"),
    ({"x": [1.0], "w": W, "y": None}, TypeError, "numpy.ndarray or a fastconv._C.Tensor, got list"),
])
def test_bad_tensors_are_refused(tensors, exc, words):
    tensors = {k: (_y() if k == "y" and v is None else v) for k, v in tensors.items()}
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        _run(tensors)


def test_readonly_output_is_refused():
    y = _y()
    y.flags.writeable = False
    with pytest.raises(ValueError, match="y must be writable"):
        _run({"x": X, "w": W, "y": y})


def test_device_and_alignment_are_checked_in_cpp():
    y = _y()
    on_gpu = _C.Tensor(X.ctypes.data, "float32", X.shape, device="cuda")
    with pytest.raises(ValueError, match="x is on cuda:0 but the call runs on cpu:0"):
        _run({"x": on_gpu, "w": W, "y": y})
    with pytest.raises(ValueError, match="no cuda kernel 'winograd:2'"):
        _run({"x": on_gpu, "w": W, "y": y}, device="cuda", algorithm="winograd:2")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        _run({"x": X, "w": W, "y": y}, device="tpu")
    misaligned = _C.Tensor(X.ctypes.data + 2, "float32", X.shape)
    with pytest.raises(ValueError, match="x is not aligned to its 4-byte elements"):
        _run({"x": misaligned, "w": W, "y": y})
    strided = _C.Tensor(X.ctypes.data, "float32", X.shape, strides=[252, 63, 7, 2])
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _run({"x": strided, "w": W, "y": y})
    assert np.isnan(y).all()  # nothing ran


def test_workspace_is_checked():
    need = _C.workspace_bytes("im2col", PARAMS, "float32")
    assert need > 0
    y = _y()
    with pytest.raises(ValueError, match=f"needs a workspace of {need} bytes"):
        _run({"x": X, "w": W, "y": y}, "im2col")
    with pytest.raises(ValueError, match="workspace has"):
        _run({"x": X, "w": W, "y": y}, "im2col", workspace=np.empty(need - 1, np.uint8))
    buf = np.empty(need + 64, np.uint8)
    off = (16 - buf.ctypes.data % 16) % 16 + 1  # one byte past a 16-byte boundary
    with pytest.raises(ValueError, match="16-byte boundary"):
        _run({"x": X, "w": W, "y": y}, "im2col", workspace=buf[off:off + need])
    _run({"x": X, "w": W, "y": y}, "im2col", workspace=np.empty(need, np.uint8))
    assert np.isfinite(y).all()


def test_params_must_fit_the_op():
    with pytest.raises(ValueError, match="max_pool2d_forward takes PoolParams"):
        _C.run("max_pool2d_forward", "direct", PARAMS, {"x": X, "y": _y()})
    with pytest.raises(TypeError, match="ConvParams or a PoolParams"):
        _C.run("conv2d_forward", "direct", object(), {"x": X, "w": W, "y": _y()})
    with pytest.raises(ValueError, match="unknown op 'conv3d_forward'"):
        _C.run("conv3d_forward", "direct", PARAMS, {"x": X})


def test_prepare_checks_its_tensors():
    nbytes = _C.prepared_bytes("im2col", PARAMS, "float32")
    out = np.empty(nbytes // 4, np.float32)
    with pytest.raises(ValueError, match="out dimension 0"):
        _C.prepare_weights("im2col", PARAMS, W, out[:-1])
    with pytest.raises(TypeError, match="weight has dtype int64"):
        _C.prepare_weights("im2col", PARAMS, W.astype(np.int64), out)
    _C.prepare_weights("im2col", PARAMS, W, out)
    y1, y2 = _y(), _y()
    ws = np.empty(_C.workspace_bytes("im2col", PARAMS, "float32", True), np.uint8)
    _C.run("conv2d_forward", "im2col", PARAMS, {"x": X, "w": out, "y": y1}, ws, prepared=True)
    _run({"x": X, "w": W, "y": y2}, "im2col", workspace=np.empty(_C.workspace_bytes("im2col", PARAMS, "float32"),
                                                                   np.uint8))
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)


def test_empty_batch_runs_nothing():
    x0 = X[:0].copy()
    p, _ = conv_params(x0.shape, W.shape, 1, 1, 1, 1)
    y = np.empty((0, 6, 9, 7), np.float32)
    _C.run("conv2d_forward", "direct", p, {"x": x0, "w": W, "y": y})
    gw, gb = np.full(W.shape, np.nan, np.float32), np.full(6, np.nan, np.float32)
    _C.run("conv2d_backward_weight", "direct", p, {"grad_y": y, "x": x0, "grad_w": gw, "grad_bias": gb})
    assert not gw.any() and not gb.any()  # the gradients of an empty batch are zero


# ---- the Python adapter ------------------------------------------------------------------------

def test_adapter_decides_the_device():
    backend, kind = _arrays.backend_for([("input", X), ("weight", W), ("bias", None)])
    assert backend is _arrays.HOST and kind == "numpy" and backend.device == "cpu"
    with pytest.raises(TypeError, match="expected a numpy.ndarray or a torch.Tensor, got list"):
        _arrays.backend_for([("input", [1, 2])])


def test_mixed_devices_are_refused():
    torch = pytest.importorskip("torch")
    meta = torch.zeros(W.shape, device="meta")
    for error in (TypeError, ValueError):  # the ValueError; fastconv's TypeError before it
        with pytest.raises(error, match="arrays must be on one device: input is on cpu, weight on meta"):
            fc.conv2d(X, meta)
    with pytest.raises(ValueError, match="CPU and on CUDA devices"):
        fc.conv2d(torch.zeros(X.shape, device="meta"), meta)


def test_torch_cpu_tensors_round_trip():
    torch = pytest.importorskip("torch")
    y = fc.conv2d(torch.from_numpy(X), torch.from_numpy(W), padding=1)
    assert isinstance(y, torch.Tensor)
    np.testing.assert_allclose(y.numpy(), fc.conv2d(X, W, padding=1), rtol=1e-6, atol=1e-6)


def test_rules_and_autotune_key_are_per_device():
    assert algorithms.choose(PARAMS, np.float32, device="cpu") == algorithms.choose(PARAMS, np.float32)
    with pytest.raises(ValueError, match="no rules for device 'tpu'"):
        algorithms.choose(PARAMS, np.float32, device="tpu")
    assert algorithms.choose(PARAMS, np.float32, device="cuda") in ("direct", "im2col")
    assert "|cpu|" in algorithms.autotune_key(PARAMS, np.float32)
    gpus = "+".join(d["name"] for d in fc._C.cuda_devices()["devices"])
    assert f"|cuda|{gpus}|" in algorithms.autotune_key(PARAMS, np.float32, device="cuda")
    cuda_rows = [k["algorithm"] for k in fc._C.kernels() if k["op"] == "conv2d_forward" and k["device"] == "cuda"]
    assert list(algorithms.kernel_names("cuda")) == cuda_rows
