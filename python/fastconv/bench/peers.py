# peers.py: the libraries fastconv is compared with: torch's F.conv2d (NCHW), torch prepacked
# (oneDNN with weights reordered once, channels_last), NNPACK and cuDNN. Each says whether it
# is available (or why not) and which layers it cannot run. torch is imported here, lazily.
"""Peers of the benchmark.

A peer is asked ``why_unavailable(device)`` ('' when it can run at all) and then, per layer,
``prepare(layer, batch, x, w, device)``, which returns a zero-argument callable doing one
forward convolution (its result convertible with ``to_numpy``) or raises :class:`Unsupported`
with a reason. Nothing here raises for a missing library: it is reported and skipped.

- ``torch``: ``torch.nn.functional.conv2d`` on NCHW tensors sharing the NumPy memory: the
  default path a PyTorch user gets (oneDNN or torch's own kernels, chosen by torch).
- ``torch-prepacked``: oneDNN's fastest inference path, ``torch.ops.mkldnn_prepacked``:
  ``conv2d_prepack`` reorders the weights into oneDNN's blocked layout once (as
  ``torch.jit.freeze`` + ``optimize_for_inference`` and IPEX do), ``conv2d_run`` runs on a
  channels_last (NHWC) input. The input is converted to channels_last once, outside the
  timed call: in a channels_last network activations stay NHWC from layer to layer, so no
  per-call reorder happens there (the output also comes back channels_last). Compared on
  this machine (1 thread, interleaved, medians, 2026-11-25; the 2-thread runs were swamped
  by a parallel build) with F.conv2d on channels_last tensors (oneDNN, but the weights are
  reordered on every call), ``torch.utils.mkldnn.to_mkldnn`` modules on ``to_mkldnn()``
  tensors (and, in a first noisy 2-thread probe, frozen TorchScript with
  ``optimize_for_inference``, 100x slower on depthwise layers): prepack was within 5 % of
  the fastest on 1x1 and dense 3x3 layers and the fastest on 512-channel 3x3 7x7 (2.9 vs
  3.8 ms for channels_last F.conv2d), which was ahead on depthwise (0.13 vs 0.15 ms) and
  the 7x7 stem (2.2 vs 2.3 ms); to_mkldnn modules were 5-50 % slower than both. Outputs
  equal F.conv2d's.
- ``nnpack``: ``torch._nnpack_spatial_convolution(x, w, bias, padding, stride)``, when
  ``torch.backends.nnpack.is_available()``; no groups, no dilation, symmetric padding only.
- ``cudnn``: ``F.conv2d`` on CUDA tensors with ``torch.backends.cudnn.benchmark = True`` and
  TF32 off (timing.cuda_setup, NVIDIA_TF32_OVERRIDE=0), timed with CUDA events; ``--device
  cuda`` only. fastconv runs on the same tensors.

Backward (``--sections backward``): ``prepare_backward``, torch's autograd of F.conv2d: torch's
CPU kernels on the CPU, cuDNN's on the GPU.
"""
from __future__ import annotations

import numpy as np

PEERS = ("torch", "torch-prepacked", "nnpack", "cudnn")
# torch-prepacked is opt-in: after its call torch's OpenMP team keeps spinning on the
# cores, and in interleaved rounds the contender that runs next (im2col forks two teams
# per column chunk) measured up to 2.3x slower than it runs on its own.
CPU_DEFAULT = ("torch", "nnpack")
CUDA_DEFAULT = ("cudnn",)


class Unsupported(Exception):
    """This peer cannot run this layer (the message says why)."""


def _torch():
    try:
        import torch
        import torch.nn.functional  # noqa: F401
        return torch
    except ImportError:
        return None


def why_unavailable(name, device="cpu"):
    """'' when the peer can run on `device`, else a short reason (for the skipped note)."""
    if name not in PEERS:
        return f"unknown peer {name!r}; known: {', '.join(PEERS)}"
    if name == "cudnn" and device != "cuda":
        return "cuDNN runs on the GPU only (use --device cuda)"
    torch = _torch()
    if torch is None:
        return "torch is not installed (pip install torch)"
    if name == "cudnn":
        if not torch.cuda.is_available():
            return "no CUDA device"
        if not torch.backends.cudnn.is_available():
            return "this torch build has no cuDNN"
        return ""
    if device == "cuda":
        return f"{name} is a CPU peer (on --device cuda the peer is cudnn)"
    if name == "torch":
        return ""
    if name == "torch-prepacked":
        if not torch.backends.mkldnn.is_available():
            return "this torch build has no oneDNN (mkldnn)"
        try:
            _ = torch.ops.mkldnn_prepacked.conv2d_prepack  # the lookup raises when the op is absent
        except (AttributeError, RuntimeError):
            return "this torch build has no torch.ops.mkldnn_prepacked"
        return ""
    if name == "nnpack":
        if not torch.backends.nnpack.is_available():
            return "torch.backends.nnpack.is_available() is False on this machine/build"
    return ""


def _tensor(torch, a, cuda=False):
    """a as a torch tensor: a tensor as it is; a NumPy array shared (on the CPU) or copied to the
    current CUDA device (`cuda`)."""
    if not isinstance(a, np.ndarray):
        return a
    t = torch.from_numpy(a)
    return t.cuda() if cuda else t


def prepare(name, layer, batch, x, w, device="cpu"):
    """A zero-argument callable running one convolution of `layer` with peer `name`.

    x (N, C, H, W) and w (K, C/groups, R, S) are float32 NumPy arrays (or, for cudnn, torch CUDA
    tensors, used as they are: the benchmark gives fastconv the same ones).
    """
    import torch
    import torch.nn.functional as F
    sym = layer.symmetric_pad
    if name in ("torch", "cudnn"):
        xt, wt = _tensor(torch, x, name == "cudnn"), _tensor(torch, w, name == "cudnn")
        if sym is not None:
            return lambda: F.conv2d(xt, wt, None, layer.stride, sym, layer.dilation, layer.groups)
        (t, b), (l, r) = layer.pad
        return lambda: F.conv2d(F.pad(xt, (l, r, t, b)), wt, None, layer.stride, 0, layer.dilation, layer.groups)
    if sym is None:
        raise Unsupported("asymmetric padding")
    if name == "torch-prepacked":
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        ctx = torch.ops.mkldnn_prepacked.conv2d_prepack(
            torch.from_numpy(w), None, list(layer.stride), list(sym), list(layer.dilation), layer.groups,
            list(x.shape), "none")
        run = torch.ops.mkldnn_prepacked.conv2d_run
        return lambda: run(xt, ctx)
    if name == "nnpack":
        if layer.groups != 1:
            raise Unsupported("NNPACK has no grouped/depthwise convolution")
        if layer.dilation != (1, 1):
            raise Unsupported("NNPACK has no dilation")
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        conv = torch._nnpack_spatial_convolution
        return lambda: conv(xt, wt, None, list(sym), list(layer.stride))
    raise Unsupported(f"unknown peer {name!r}")


def prepare_backward(layer, x, w, grad_y):
    """The backward of F.conv2d by torch's autograd (cuDNN's kernels for CUDA tensors): a
    zero-argument callable returning (grad_x, grad_w) for `grad_y`. The forward runs once here,
    its graph kept (retain_graph), so each call times the backward alone (plus F.pad's backward,
    a copy, for asymmetric padding)."""
    import torch
    import torch.nn.functional as F
    xr = _tensor(torch, x).detach().clone().requires_grad_(True)
    wr = _tensor(torch, w).detach().clone().requires_grad_(True)
    gy = _tensor(torch, grad_y)
    sym = layer.symmetric_pad
    if sym is not None:
        y = F.conv2d(xr, wr, None, layer.stride, sym, layer.dilation, layer.groups)
    else:
        (t, b), (l, r) = layer.pad
        y = F.conv2d(F.pad(xr, (l, r, t, b)), wr, None, layer.stride, 0, layer.dilation, layer.groups)
    grad = torch.autograd.grad
    return lambda: grad(y, (xr, wr), gy, retain_graph=True)


def to_numpy(y):
    """A peer's (or fastconv's) output as a NumPy array (dense, on the host)."""
    if isinstance(y, np.ndarray):
        return y
    return y.detach().cpu().contiguous().numpy()


def versions():
    """Versions of the peer libraries, for the machine header and JSON."""
    torch = _torch()
    if torch is None:
        return {"torch": None, "mkldnn": False, "nnpack": False, "cuda": None, "cudnn": None, "gpu": None}
    v = {"torch": torch.__version__, "mkldnn": bool(torch.backends.mkldnn.is_available()),
         "nnpack": bool(torch.backends.nnpack.is_available()), "cuda": torch.version.cuda,
         "cudnn": None, "gpu": None}
    if torch.cuda.is_available():
        v["cudnn"] = torch.backends.cudnn.version()
        v["gpu"] = torch.cuda.get_device_name()
    return v
