# runner.py: measures what `python -m fastconv bench` reports: per layer and batch every
# fastconv algorithm and every peer, timed together with timing.compare (interleaved, medians),
# outputs checked against torch (cuDNN on the GPU); the same for conv2d_backward against torch's
# autograd; plus GEMM vs NumPy (cuBLAS on the GPU), pooling forward and backward vs torch,
# locally connected / tiled convolution and weighted pooling vs the torch formulations of
# formulations.py, and on the GPU its nominal fp32 peak and a measured device-to-device copy. Returns plain dicts
# (JSON-ready); report.py turns them into tables, Markdown and plots.
"""Measurement of convolution layers (forward and backward), GEMM, pooling and issue 21's layers, on the CPU
(NumPy arrays) or on a CUDA device (torch CUDA tensors, which fastconv takes zero-copy and
runs on torch's current stream; timed with CUDA events)."""
from __future__ import annotations

import math
import os
import platform
import sys

import numpy as np

from .. import _C, _cache, algorithms, functional
from ..plan import plan_conv2d
from . import formulations, peers, timing

GEMM_SIZES = ((1024, 1024, 1024), (256, 3136, 64), (64, 3136, 256), (128, 784, 512), (512, 784, 128),
              (1024, 196, 256), (2048, 49, 512), (64, 3136, 576))   # M x N x K
CUDA_GEMM_SIZES = ((4096, 4096, 4096),)
CUDA_POOL_BATCH = 32     # the GPU's pooling, weighted and local cases: the CPU's shapes at this batch
                         # (at batch 1 they are launch-bound)
CUDA_COPY_BYTES = 256 << 20   # each buffer of the device-to-device copy: far larger than any L2
BACKWARD_PEERS = {"cpu": "torch", "cuda": "cudnn"}   # the autograd peer of conv2d_backward per device


def conv_algorithms(device="cpu"):
    """conv2d algorithms of the kernel table on ``device``, in table order (new rows appear by themselves)."""
    return list(algorithms.kernel_names(device))


def backward_algorithms(device="cpu"):
    """The kernels with both conv2d backward ops on ``device``, in table order."""
    return list(algorithms.backward_kernel_names(device))


def supports(kernel, params, device, op="conv2d_forward"):
    """'' when the kernel table's `kernel` on `device` runs this float32 problem, else why not."""
    return _C.supports(kernel, params, "float32", op, device)


def current_stream(dev):
    """torch's current stream on CUDA device `dev`, as the integer handle fastconv's core takes."""
    return peers._torch().cuda.current_stream(dev).cuda_stream


def default_algorithms(device="cpu"):
    """What the benchmark times when --algorithms is not given: every kernel of the device, auto,
    and on the CPU also plan (auto's plan_conv2d)."""
    return conv_algorithms(device) + (["auto", "plan"] if device == "cpu" else ["auto"])


def cuda_kernels_missing():
    """'' when this build of fastconv has CUDA kernels and sees a device, else why not."""
    status = _C.cuda_devices()
    if not conv_algorithms("cuda"):
        return f"this build of fastconv has no CUDA kernels ({status['why_none']})"
    if not status["devices"]:
        return f"fastconv sees no CUDA device ({status['why_none']})"
    return ""


def _torch_cuda():
    """(torch, the current CUDA device)."""
    torch = peers._torch()
    return torch, torch.device("cuda", torch.cuda.current_device())


def close(y, ref, reduction=1):
    """Same shape and max |y - ref| <= max(1e-3, 2e-4 * sqrt(reduction)) * max |ref|.

    A check for wrong outputs, not an accuracy test (tests/ does that per algorithm): loose
    enough for Winograd F(6x6, 3x3) in float32 over 512 channels, far below the O(max |ref|)
    error of a wrong index. `reduction` is the length of each output's dot product (C/g*R*S).
    """
    if y is None or ref is None:
        return False
    if _on_cuda(y) or _on_cuda(ref):
        return _close_cuda(y, ref, reduction)
    y, ref = np.asarray(peers.to_numpy(y)), np.asarray(peers.to_numpy(ref))
    if y.shape != ref.shape:
        return False
    if not ref.size:
        return True
    scale = float(np.abs(ref).max()) or 1.0
    tol = max(1e-3, 2e-4 * math.sqrt(reduction)) * scale
    return bool(np.all(np.abs(y.astype(np.float64) - ref) <= tol))


def _on_cuda(a):
    return type(a).__module__.startswith("torch") and a.is_cuda


def _close_cuda(y, ref, reduction):
    """close() computed on the GPU (no copy of large outputs to the host)."""
    torch = peers._torch()
    dev = y.device if _on_cuda(y) else ref.device
    y, ref = (torch.as_tensor(a).to(dev) for a in (y, ref))
    if tuple(y.shape) != tuple(ref.shape):
        return False
    if not ref.numel():
        return True
    ref = ref.double()
    scale = float(ref.abs().max()) or 1.0
    tol = max(1e-3, 2e-4 * math.sqrt(reduction)) * scale
    return bool(((y.double() - ref).abs() <= tol).all())   # NaN compares False


def make_arrays(layer, batch, seed=0, device="cpu"):
    """x (N, C, H, W) and weight (K, C/groups, R, S), float32, unit-variance outputs: NumPy
    arrays, or on device 'cuda' torch tensors on the current CUDA device (drawn there)."""
    fan_in = (layer.C // layer.groups) * layer.R * layer.S
    if device == "cuda":
        torch, dev = _torch_cuda()
        g = torch.Generator(device=dev).manual_seed(seed)
        x = torch.randn(layer.input_shape(batch), device=dev, generator=g)
        w = torch.randn(layer.weight_shape(), device=dev, generator=g) / math.sqrt(fan_in)
        return x, w
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(layer.input_shape(batch), dtype=np.float32)
    w = rng.standard_normal(layer.weight_shape(), dtype=np.float32) / np.float32(np.sqrt(fan_in))
    return x, w


def empty_like_device(shape, like):
    """An uninitialised float32 array of ``shape`` where ``like`` lives: a torch tensor on its CUDA
    device, else a NumPy array (what fastconv's out= takes on the CPU)."""
    if not isinstance(like, np.ndarray) and like.is_cuda:
        return peers._torch().empty(shape, dtype=like.dtype, device=like.device)
    return np.empty(shape, np.float32)


def params_of(layer, batch):
    params, _ = functional.conv_params(layer.input_shape(batch), layer.weight_shape(), layer.stride,
                                       layer.pad, layer.dilation, layer.groups)
    return params


def fastconv_fn(layer, x, w, algorithm):
    """One fastconv.conv2d call; the output array is allocated once, as a network would reuse it
    (on the GPU a torch CUDA tensor: fastconv writes it in place on torch's current stream)."""
    kw = layer.conv_kwargs()
    out = empty_like_device(layer.output_shape(x.shape[0]), x)
    conv2d = functional.conv2d
    return lambda: conv2d(x, w, None, algorithm=algorithm, out=out, **kw)


def plan_fn(layer, x, w, name):
    """A plan made once (weights prepared) and called per round: 'plan' is auto's,
    'plan:ALGO' forces the kernel."""
    algorithm = name.split(":", 1)[1] if ":" in name else "auto"
    out = empty_like_device(layer.output_shape(x.shape[0]), x)
    plan = plan_conv2d(w, tuple(x.shape), algorithm=algorithm, **layer.conv_kwargs())
    return lambda: plan(x, out=out)


def why_not(kernel, params, device, op="conv2d_forward"):
    """'' when fastconv's `kernel` (a kernel name, 'auto', 'plan' or 'reference') can run this
    problem on `device`, else why not."""
    if kernel == "reference":
        return "" if device == "cpu" else "the reference runs on the CPU only"
    if device == "cuda":
        missing = cuda_kernels_missing()
        if missing:
            return missing
    if kernel in ("auto", "plan"):
        return ""
    names = conv_algorithms(device) if op == "conv2d_forward" else backward_algorithms(device)
    if kernel not in names:
        what = "conv2d kernel" if op == "conv2d_forward" else "conv2d backward kernels"
        return f"no {device} {what} named {kernel!r} in this build"
    return supports(kernel, params, device, op)


def contenders(layer, batch, algos, peer_names, device="cpu"):
    """(fns, skipped, x, w): name -> zero-argument callable, name -> reason for the rest, and the
    arrays (NumPy, or torch CUDA tensors on device 'cuda', shared by fastconv and cuDNN)."""
    x, w = make_arrays(layer, batch, device=device)
    fns, skipped = {}, {}
    params = params_of(layer, batch)
    for a in algos:
        kernel = a.split(":", 1)[1] if a.startswith("plan:") else a
        why = why_not(kernel, params, device)
        if why:
            skipped[a] = why
        elif a.startswith("plan"):
            fns[a] = plan_fn(layer, x, w, a)
        else:
            fns[a] = fastconv_fn(layer, x, w, a)
    for p in peer_names:
        why = peers.why_unavailable(p, device)
        if not why:
            try:
                fns[p] = peers.prepare(p, layer, batch, x, w, device)
            except peers.Unsupported as e:
                why = str(e)
        if why:
            skipped[p] = why
    return fns, skipped, x, w


def measure_conv(layer, batch, algos, peer_names, options, device="cpu"):
    """Time one layer at one batch: a JSON-ready record (times in seconds)."""
    fns, skipped, x, w = contenders(layer, batch, algos, peer_names, device)
    ref_name = next((n for n in ("torch", "cudnn", "torch-prepacked") if n in fns), None)
    wrong = []
    if ref_name is not None:
        ref = fns[ref_name]()
        if device == "cpu":
            ref = peers.to_numpy(ref)
        reduction = (layer.C // layer.groups) * layer.R * layer.S
        wrong = [n for n, fn in fns.items() if n != ref_name and not close(fn(), ref, reduction)]
        del ref
    return _record(layer, batch, fns, skipped, wrong, ref_name, options, device, algos, layer.flops(batch),
                   algorithms.choose(params_of(layer, batch), np.dtype(np.float32), device=device)
                   if not (device == "cuda" and cuda_kernels_missing()) else None)


def _record(layer, batch, fns, skipped, wrong, ref_name, options, device, algos, flops, auto_picks):
    """Time `fns` together and make the layer's JSON-ready record."""
    cmp_ = timing.compare(fns, cuda=(device == "cuda"), **options) if fns else None
    rec = {
        "network": layer.network, "layer": layer.name, "shape": layer.describe(), "batch": batch,
        "count": layer.count, "flops": flops, "params": layer.to_dict(), "device": device,
        "samples": cmp_.samples if cmp_ else {}, "times": cmp_.medians if cmp_ else {},
        "rounds": cmp_.rounds if cmp_ else 0, "skipped": skipped, "wrong": wrong, "checked_against": ref_name,
        "auto_picks": auto_picks,
    }
    annotate(rec, algos)
    return rec


# ---- conv2d_backward ------------------------------------------------------------------------------

def backward_contenders(layer, batch, algos, peer_names, device="cpu"):
    """(fns, skipped): each fastconv algorithm's conv2d_backward (grad_x and grad_w, no bias, as
    the peer) and torch autograd's backward of F.conv2d (cuDNN's on the GPU) on the same arrays.
    Every callable returns (grad_x, grad_w)."""
    x, w = make_arrays(layer, batch, device=device)
    if device == "cuda":
        torch, dev = _torch_cuda()
        gy = torch.randn(layer.output_shape(batch), device=dev, generator=torch.Generator(device=dev).manual_seed(1))
    else:
        gy = np.random.default_rng(1).standard_normal(layer.output_shape(batch), dtype=np.float32)
    params = params_of(layer, batch)
    kw = layer.conv_kwargs()
    fns, skipped = {}, {}
    for a in algos:
        why = "plans are forward only" if a.startswith("plan") else why_not(a, params, device, "conv2d_backward_data")
        if not why and a not in ("auto", "reference"):
            why = supports(a, params, device, "conv2d_backward_weight")
        if why:
            skipped[a] = why
        else:
            fns[a] = (lambda a=a: functional.conv2d_backward(gy, x, w, algorithm=a, needs=(True, True, False),
                                                             **kw)[:2])
    peer = BACKWARD_PEERS[device]
    for p in peer_names:
        why = peers.why_unavailable(p, device) or ("" if p == peer else f"{p} has no backward in this benchmark")
        if why:
            skipped[p] = why
        else:
            fns[p] = peers.prepare_backward(layer, x, w, gy)
    return fns, skipped


def measure_backward(layer, batch, algos, peer_names, options, device="cpu"):
    """Time conv2d_backward of one layer at one batch (grad_x + grad_w: twice the forward's FLOPs)."""
    fns, skipped = backward_contenders(layer, batch, algos, peer_names, device)
    ref_name = BACKWARD_PEERS[device] if BACKWARD_PEERS[device] in fns else None
    wrong = []
    if ref_name is not None:
        ref = fns[ref_name]()
        if device == "cpu":
            ref = tuple(peers.to_numpy(r) for r in ref)
        p = params_of(layer, batch)
        reductions = ((layer.K // layer.groups) * layer.R * layer.S, batch * p.P * p.Q)
        for n, fn in fns.items():
            if n != ref_name and not all(close(g, r, k) for g, r, k in zip(fn(), ref, reductions)):
                wrong.append(n)
        del ref
    picks = (None if device == "cuda" and cuda_kernels_missing()
             else algorithms.choose_backward(params_of(layer, batch), device=device))
    return _record(layer, batch, fns, skipped, wrong, ref_name, options, device, algos, 2 * layer.flops(batch),
                   picks)


def annotate(rec, algos):
    """Add best (fastest fastconv algorithm), winner (fastest of all) and ratios to torch."""
    t = rec["times"]
    # best: the fastest kernel called plainly (policies and prepared plans apart).
    ours = [a for a in algos if a in t and a != "auto" and not a.startswith("plan") and a not in rec["wrong"]]
    rec["best"] = min(ours, key=t.get) if ours else None
    ok = [n for n in t if n not in rec["wrong"]]
    rec["winner"] = min(ok, key=t.get) if ok else None
    base = "torch" if "torch" in t else ("cudnn" if "cudnn" in t else None)
    rec["baseline"] = base
    rec["ratios"] = {n: timing.ratio(t[base], t[n]) for n in t} if base else {}
    return rec


# ---- GEMM and pooling --------------------------------------------------------------------------

def measure_gemm(options, sizes=GEMM_SIZES, progress=None):
    """fastconv._C.gemm vs numpy.matmul, float32, per (M, N, K)."""
    rng = np.random.default_rng(0)
    out = []
    for m, n, k in sizes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c1, c2 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        fns = {"fastconv": lambda: _C.gemm(False, False, 1.0, a, b, 0.0, c1),
               "numpy": lambda: np.matmul(a, b, out=c2)}
        fns["fastconv"](), fns["numpy"]()
        ok = close(c1, c2)
        cmp_ = timing.compare(fns, **options)
        out.append({"M": m, "N": n, "K": k, "flops": 2.0 * m * n * k, "times": cmp_.medians,
                    "samples": cmp_.samples, "rounds": cmp_.rounds, "wrong": [] if ok else ["fastconv"],
                    "peer": "numpy", "ratio": timing.ratio(cmp_.medians["numpy"], cmp_.medians["fastconv"])})
        if progress:
            progress(f"gemm {m}x{n}x{k}")
    return out


def cuda_descriptor(t):
    """A torch CUDA tensor (contiguous float32/float64) as the core's Tensor descriptor."""
    return _C.Tensor(t.data_ptr(), str(t.dtype).replace("torch.", ""), tuple(t.shape), None, "cuda", t.device.index)


def measure_gemm_cuda(options, sizes=CUDA_GEMM_SIZES, progress=None):
    """fastconv._C.cuda_gemm (the tiled GEMM of the im2col kernels) vs torch.matmul (cuBLAS; TF32
    off, timing.cuda_setup), float32 on torch CUDA tensors, per (M, N, K). Each record carries both
    results' relative error ||C - C64|| / ||C64|| against a float64 product on the GPU: ~1e-7 in
    fp32, ~1e-4 would say TF32 ran."""
    torch, dev = _torch_cuda()
    if cuda_kernels_missing():
        return []
    g = torch.Generator(device=dev).manual_seed(0)
    out = []
    for m, n, k in sizes:
        a = torch.randn((m, k), device=dev, generator=g)
        b = torch.randn((k, n), device=dev, generator=g)
        c1, c2 = torch.full((m, n), math.nan, device=dev), torch.full((m, n), math.nan, device=dev)
        da, db, dc = cuda_descriptor(a), cuda_descriptor(b), cuda_descriptor(c1)
        idx = dev.index
        stream = current_stream(dev)
        fns = {"fastconv": lambda: _C.cuda_gemm(False, False, 1.0, da, db, 0.0, dc, idx, stream),
               "cublas": lambda: torch.matmul(a, b, out=c2)}
        fns["fastconv"](), fns["cublas"]()
        ref = a.double() @ b.double()
        norm = float(torch.linalg.vector_norm(ref))
        rel = {name: float(torch.linalg.vector_norm(c.double() - ref)) / norm for name, c in
               (("fastconv", c1), ("cublas", c2))}
        del ref
        ok = math.isfinite(rel["fastconv"]) and rel["fastconv"] <= 1e-4
        cmp_ = timing.compare(fns, cuda=True, **options)
        out.append({"M": m, "N": n, "K": k, "flops": 2.0 * m * n * k, "times": cmp_.medians,
                    "samples": cmp_.samples, "rounds": cmp_.rounds, "wrong": [] if ok else ["fastconv"],
                    "peer": "cublas", "rel_err": rel, "device": "cuda",
                    "ratio": timing.ratio(cmp_.medians["cublas"], cmp_.medians["fastconv"])})
        if progress:
            progress(f"gemm {m}x{n}x{k}")
    return out


def pool_cases(device="cpu"):
    """(label, input shape, fastconv function name, args) of the pooling section: ResNet-50's
    pools at batch 1 on the CPU, at batch CUDA_POOL_BATCH on the GPU."""
    n = CUDA_POOL_BATCH if device == "cuda" else 1
    return [("max 3×3 s2 p1", (n, 64, 112, 112), "max_pool2d", (3, 2, 1)),
            ("max 2×2 s2", (n, 64, 112, 112), "max_pool2d", (2, 2)),
            ("avg 2×2 s2", (n, 256, 56, 56), "avg_pool2d", (2,)),
            ("global avg", (n, 2048, 7, 7), "adaptive_avg_pool2d", (1,))]


def pool_steps(device="cpu"):
    """Progress steps of the pooling section: each case forward and backward."""
    return 2 * len(pool_cases(device))


def _pool_record(label, pass_, shape, out_shape, nbytes, fns, ok, options, device):
    cmp_ = timing.compare(fns, cuda=(device == "cuda"), **options)
    t = cmp_.medians
    return {"op": label, "pass": pass_, "input": list(shape), "output": list(out_shape), "bytes": nbytes,
            "times": t, "samples": cmp_.samples, "rounds": cmp_.rounds, "device": device,
            "wrong": [] if ok else ["fastconv"], "ratio": timing.ratio(t.get("torch"), t["fastconv"])}


def measure_pool(options, progress=None, device="cpu"):
    """fastconv pooling, forward and backward, vs torch.nn.functional and its autograd backward
    (when torch is installed; on device 'cuda' on torch CUDA tensors). Bytes: the fewest a pass
    moves: forward x + y; backward grad_y + grad_x, plus the int64 indices max pooling's backward
    reads (both fastconv's, given its forward's indices, and torch's read them)."""
    import fastconv as fc
    torch = peers._torch()
    if device == "cuda" and cuda_kernels_missing():
        return []
    rng = np.random.default_rng(0)
    out = []
    for label, shape, fn_name, args in pool_cases(device):
        if device == "cuda":
            _, dev = _torch_cuda()
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(shape, device=dev, generator=g)
        else:
            x = rng.standard_normal(shape, dtype=np.float32)
        f_fc = getattr(fc, fn_name)
        is_max = fn_name == "max_pool2d"
        y = f_fc(x, *args)
        fns = {"fastconv": lambda: f_fc(x, *args)}
        ok = True
        f_t = xt = None
        if torch is not None:
            f_t = getattr(torch.nn.functional, fn_name)
            xt = x if device == "cuda" else torch.from_numpy(x)
            fns["torch"] = lambda: f_t(xt, *args)
            ok = close(y, f_t(xt, *args))
        y_shape = tuple(y.shape)
        itemsize = 4
        n_x, n_y = math.prod(shape), math.prod(y_shape)
        out.append(_pool_record(label, "forward", shape, y_shape, itemsize * (n_x + n_y), fns, ok, options, device))
        if progress:
            progress(f"pool {label}")
        # backward: grad_y of the output's shape; max pooling with its forward's indices
        if device == "cuda":
            gy = torch.randn(y_shape, device=x.device, generator=g)
        else:
            gy = rng.standard_normal(y_shape, dtype=np.float32)
        f_fc_b = getattr(fc, fn_name + "_backward")
        if is_max:
            _, idx = f_fc(x, *args, return_indices=True)
            fns = {"fastconv": lambda: f_fc_b(gy, x, *args, indices=idx)}
        else:
            fns = {"fastconv": lambda: f_fc_b(gy, x, *args)}
        ok = True
        if torch is not None:
            xr = xt.detach().clone().requires_grad_(True)
            yr = f_t(xr, *args)
            gyt = gy if device == "cuda" else torch.from_numpy(gy)
            fns["torch"] = lambda: torch.autograd.grad(yr, xr, gyt, retain_graph=True)[0]
            ok = close(fns["fastconv"](), fns["torch"]())
        nbytes = itemsize * (n_y + n_x) + (8 * n_y if is_max else 0)
        out.append(_pool_record(label + " backward", "backward", y_shape, shape, nbytes, fns, ok, options, device))
        if progress:
            progress(f"pool {label} backward")
    return out


# ---- issue 21's layers: locally connected / tiled convolution, distance-weighted pooling ----------

LOCAL_PEERS = ("einsum", "bmm")   # formulations.local_torch_fns' two torch formulations


def local_cases(device="cpu"):
    """formulations.LOCAL_SHAPES (name, (N, C, H, W), K, kernel, tiles): as listed on the CPU; on the
    GPU each at batch CUDA_POOL_BATCH (at batch 1 a call is a few microseconds of launches), the
    name's shape showing that batch."""
    if device != "cuda":
        return list(formulations.LOCAL_SHAPES)
    out = []
    for name, shape, k, r, tiles in formulations.LOCAL_SHAPES:
        gpu_shape = (CUDA_POOL_BATCH,) + tuple(shape[1:])
        old, new = "x".join(map(str, shape)), "x".join(map(str, gpu_shape))
        out.append((name.replace(old, new) if old in name else f"{name} b{CUDA_POOL_BATCH}", gpu_shape, k, r, tiles))
    return out


def local_steps(device="cpu"):
    """Progress steps of the local section: each shape forward and backward."""
    return 2 * len(local_cases(device))


def _local_record(name, pass_, tiles, shape, weight_shape, weight_bytes, flops, fns, wrong, checked_against, options,
                  device):
    """Time `fns` together; the ratio is the faster (right) torch formulation's time over fastconv's."""
    cmp_ = timing.compare(fns, cuda=(device == "cuda"), **options)
    t = cmp_.medians
    peer = min((n for n in LOCAL_PEERS if n in t and n not in wrong), key=t.get, default=None)
    return {"op": name, "kind": "local" if tiles is None else "tiled", "pass": pass_, "input": list(shape),
            "weight": list(weight_shape), "weight_bytes": weight_bytes, "flops": flops,
            # a locally connected forward reads every weight once: that many bytes at the copy
            # bandwidth (the memory copy's on the CPU, the device-to-device copy's on the GPU) is its
            # floor (the bound a batch-1 forward sits near); tiled weights stay in cache
            "floor_bytes": weight_bytes if tiles is None and pass_ == "forward" else None,
            "times": t, "samples": cmp_.samples, "rounds": cmp_.rounds, "device": device, "wrong": wrong,
            "checked_against": checked_against, "peer": peer,
            "ratio": timing.ratio(t.get(peer), t["fastconv"]) if peer else math.nan}


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _wrong(fns, ref_name, ref, reductions, device="cpu"):
    """The contenders whose results (one array, or a tuple of them) differ from `ref` (see close();
    on the GPU compared there, without copies to the host)."""
    ref = tuple(peers.to_numpy(r) if device == "cpu" else r for r in _as_tuple(ref))
    return [n for n, fn in fns.items() if n != ref_name
            and not all(close(g, r, k) for g, r, k in zip(_as_tuple(fn()), ref, reductions))]


def measure_local(options, progress=None, device="cpu"):
    """fastconv.local_conv2d / tiled_conv2d (local_cases: formulations.LOCAL_SHAPES, float32),
    forward and backward (grad_x and grad_w, no bias), against torch's unfold + einsum and unfold +
    bmm formulations and torch autograd through them (formulations.py); the ratio is against the
    faster of the two. On device 'cuda' all of them run on the same torch CUDA tensors (the CPU's
    draws, copied there), timed with CUDA events. Every result is checked against einsum's (without
    torch, on the CPU only: against fastconv's NumPy reference algorithm, and only fastconv is timed)."""
    torch = peers._torch()
    if device == "cuda" and cuda_kernels_missing():
        return []
    rng = np.random.default_rng(1)
    out = []
    for name, shape, k, r, tiles in local_cases(device):
        x, wt, pq = formulations.local_problem(shape, k, r, tiles)
        n, c = shape[:2]
        gy = rng.standard_normal((n, k) + pq, dtype=np.float32)
        weight_shape, weight_bytes = wt.shape, wt.nbytes
        if device == "cuda":
            _, dev = _torch_cuda()
            x, wt, gy = (torch.from_numpy(a).to(dev) for a in (x, wt, gy))
        flops = 2.0 * n * k * pq[0] * pq[1] * c * r * r
        fwd = {"fastconv": formulations.local_fastconv_fn(x, wt, tiles)}
        bwd = {"fastconv": formulations.local_fastconv_backward_fn(x, wt, tiles, gy)}
        if torch is not None:
            fwd.update(zip(LOCAL_PEERS, formulations.local_torch_fns(x, wt, pq, tiles)))
            bwd.update(zip(LOCAL_PEERS, formulations.local_torch_backward_fns(x, wt, pq, tiles, gy)))
            ref_name, ref_fwd, ref_bwd = "einsum", fwd["einsum"], bwd["einsum"]
        else:
            ref_name = "reference"
            ref_fwd = formulations.local_fastconv_fn(x, wt, tiles, "reference")
            ref_bwd = formulations.local_fastconv_backward_fn(x, wt, tiles, gy, "reference")
        # grad_x sums K*R*S products per element, grad_w N times the positions that share a weight
        uses = n * -(-pq[0] // weight_shape[0]) * -(-pq[1] // weight_shape[1])
        for pass_, fns, ref, reductions, f in (("forward", fwd, ref_fwd, (c * r * r,), flops),
                                               ("backward", bwd, ref_bwd, (k * r * r, uses), 2 * flops)):
            wrong = _wrong(fns, ref_name, ref(), reductions, device)
            out.append(_local_record(name, pass_, tiles, shape, weight_shape, weight_bytes, f, fns, wrong, ref_name,
                                     options, device))
            if progress:
                progress(f"local {name} {pass_}")
    return out


def weighted_cases(device="cpu"):
    """formulations.WEIGHTED_LAYERS at batch 1 on the CPU, at batch CUDA_POOL_BATCH on the GPU."""
    n = CUDA_POOL_BATCH if device == "cuda" else 1
    return [(name, (n,) + tuple(shape[1:]), k, s, p, cip, kw)
            for name, shape, k, s, p, cip, kw in formulations.WEIGHTED_LAYERS]


def weighted_steps(device="cpu"):
    """Progress steps of the weighted section: each case forward and backward."""
    return 2 * len(weighted_cases(device))


def window_label(k, s, p, cip, kw):
    """How a weighted case's window and modes read in the tables."""
    w = kw.get("weight")
    text = ("given" if w is not None else f"gauss σ={kw.get('sigma', 1.0):g}") + f" {k}×{k} s{s} p{p}"
    if not cip:
        text += ", count_include_pad=False"
    if not kw.get("normalize", True):
        text += ", normalize=False"
    return text


def measure_weighted(options, progress=None, device="cpu"):
    """fastconv.weighted_avg_pool2d and its backward vs the torch formulation
    (formulations.weighted_torch_formulation: a depthwise F.conv2d with the fixed window) and
    torch autograd through it, when torch is installed; on device 'cuda' on torch CUDA tensors.
    Bytes as measure_pool's: forward x + y, backward grad_y + grad_x."""
    import fastconv as fc
    torch = peers._torch()
    if device == "cuda" and cuda_kernels_missing():
        return []
    rng = np.random.default_rng(0)
    out = []
    for name, shape, k, s, p, cip, kw in weighted_cases(device):
        args = (k, s, p, False, cip)
        dev = None
        if device == "cuda":
            _, dev = _torch_cuda()
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(shape, device=dev, generator=g)
        else:
            x = formulations.weighted_input(shape)
        y = fc.weighted_avg_pool2d(x, *args, **kw)
        buf = np.empty_like(y) if device == "cpu" else None   # on the CPU written in place, as a layer reuses it
        fns = {"fastconv": lambda: fc.weighted_avg_pool2d(x, *args, out=buf, **kw)}
        ok, form, xt = True, None, None
        if torch is not None:
            form = formulations.weighted_torch_formulation(shape, k, s, p, cip, kw, dev)
            xt = x if device == "cuda" else torch.from_numpy(x)
            fns["torch"] = lambda: form(xt)
            ok = close(y, form(xt))
        y_shape = tuple(y.shape)
        n_x, n_y = math.prod(shape), math.prod(y_shape)
        label = dict(window=window_label(k, s, p, cip, kw), checked_against="torch" if form else None)
        out.append(dict(_pool_record(name, "forward", shape, y_shape, 4 * (n_x + n_y), fns, ok, options, device),
                        **label))
        if progress:
            progress(f"weighted {name}")
        gy = (torch.randn(y_shape, device=dev, generator=g) if device == "cuda"
              else rng.standard_normal(y_shape, dtype=np.float32))
        fns = {"fastconv": lambda: fc.weighted_avg_pool2d_backward(gy, x, *args, **kw)}
        ok = True
        if form is not None:
            xr = xt.detach().clone().requires_grad_(True)
            yr = form(xr)
            gyt = gy if device == "cuda" else torch.from_numpy(gy)
            fns["torch"] = lambda: torch.autograd.grad(yr, xr, gyt, retain_graph=True)[0]
            ok = close(fns["fastconv"](), fns["torch"]())
        out.append(dict(_pool_record(name + " backward", "backward", y_shape, shape, 4 * (n_y + n_x), fns, ok,
                                     options, device), **label))
        if progress:
            progress(f"weighted {name} backward")
    return out


def measure_cuda_copy(nbytes=None, repeats=20):
    """GB/s of a device-to-device copy on the current CUDA device, ``y.copy_(x)`` of two float32
    buffers of ``nbytes`` each, counting bytes read plus bytes written (median of CUDA-event times):
    the bandwidth a memory-bound kernel can reach, measured in the same run."""
    torch, dev = _torch_cuda()
    n = (nbytes or CUDA_COPY_BYTES) // 4
    x = torch.randn(n, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    y = torch.empty_like(x)
    cmp_ = timing.compare({"copy": lambda: y.copy_(x)}, cuda=True, warmup=3, repeats=repeats, min_time=0.05,
                          max_time=2.0)
    secs = cmp_.medians["copy"]
    return {"copy_gbs": timing.gbytes(2 * n * 4, secs), "copy_bytes": 2 * n * 4, "copy_ms": secs * 1e3}


def cuda_device_info(index=None):
    """fastconv._C.cuda_devices()'s entry for the current torch CUDA device (None when fastconv sees
    none: a build without CUDA)."""
    if index is None:
        index = _torch_cuda()[1].index
    return next((dict(d) for d in _C.cuda_devices()["devices"] if d["index"] == index), None)


def cuda_peak(copy=None):
    """The GPU's ceilings for the % columns: its nominal fp32 peak from fastconv._C.cuda_devices()
    (SMs x FP32 lanes x 2 x clock) and the device-to-device copy measured now (``copy``:
    measure_cuda_copy's result, measured when not given)."""
    torch, dev = _torch_cuda()
    info = cuda_device_info()
    copy = copy or measure_cuda_copy()
    name = info["name"] if info else torch.cuda.get_device_name(dev)
    gflops = info["fp32_peak_tflops"] * 1e3 if info and info.get("fp32_peak_tflops") else math.nan
    src = (f"{name}: nominal fp32 peak (SMs × FP32 lanes × 2 × clock, fastconv._C.cuda_devices())"
           if info else f"{name}: no fp32 peak (this fastconv build has no CUDA)")
    return dict(copy, gflops=gflops, source=src + "; device-to-device copy y.copy_(x) of "
                f"{copy['copy_bytes'] // 2 >> 20} MiB measured in this run", gpu=info)


# ---- machine --------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_blas():
    """NumPy's BLAS as threadpoolctl sees it, e.g. 'openblas 0.3.27 (SkylakeX, 2 threads)'."""
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [d for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    return "; ".join(f"{d.get('internal_api')} {d.get('version') or ''} ({d.get('architecture')}, "
                     f"{d.get('num_threads')} threads)" for d in libs) or "none found by threadpoolctl"


def machine_info(threads, device="cpu"):
    """CPU model, ISA, threads, versions, GPU: what the JSON and every table header carry."""
    import fastconv as fc
    info = fc.info()
    return {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "isa": info["isa"], "isa_detected": info["isa_detected"],
        "threads": threads, "device": device, "fastconv": fc.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "compiler": info["compiler"],
        "peers": peers.versions(), "blas": numpy_blas(),
        "blas_env": {k: os.environ.get(k) for k in timing.BLAS_UNSET + tuple(timing.BLAS_SET)},
        "argv": sys.argv,
        "gpu": cuda_device_info() if device == "cuda" else None,
        "cuda_env": timing.cuda_settings() if device == "cuda" else None,
    }


def measure_peak(seconds=0.15, tries=2):
    """Best of `tries` runs of _C.measure_peak(seconds): fp32 FMA GFLOP/s and copy GB/s."""
    best = None
    for _ in range(max(1, tries)):
        r = _C.measure_peak(seconds)
        if best is None:
            best = dict(r)
        else:
            best["gflops"] = max(best["gflops"], r["gflops"])
            best["copy_gbs"] = max(best["copy_gbs"], r["copy_gbs"])
    best["tries"] = tries
    return best


def peak_cache_path():
    """$FASTCONV_CACHE_DIR/peak.json, else $XDG_CACHE_HOME (~/.cache)/fastconv/peak.json."""
    return _cache.cache_dir() / "peak.json"


def peak_with_cache(measured):
    """The machine's peak as the best ever measured here (other processes only ever lower a
    measurement): `measured` merged with the cache for this CPU, ISA and thread count, and
    the cache updated. Unreadable or unwritable caches are ignored."""
    path = peak_cache_path()
    key = f"{cpu_model()} | {measured['isa']} | {measured['threads']} threads"
    prev = _cache.read(path).get(key) or {}
    if not isinstance(prev, dict):
        prev = {}
    best = {k: max(float(prev.get(k) or 0.0), float(measured[k])) for k in ("gflops", "copy_gbs")}
    out = dict(measured, **best, this_run={k: measured[k] for k in ("gflops", "copy_gbs")}, cache=str(path))
    out["source"] = ("best measured on this machine, cached; this run: "
                     f"{measured['gflops']:.0f} GFLOP/s, {measured['copy_gbs']:.1f} GB/s"
                     if best != {k: measured[k] for k in best} else "measured in this run")
    _cache.update(path, {key: best})
    return out


def finite(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)
