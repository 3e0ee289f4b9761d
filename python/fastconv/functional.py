"""Convolution, forward and backward: dispatch of the public calls.

Every public convolution call goes through here: ``_arrays`` adapts the caller's arrays
(device, contiguity, dtype) and allocates, ``_args`` normalises the arguments into a
``_C.ConvParams``, ``algorithms`` picks the kernel, and one row of the kernel table runs
through ``_C.run``. Bad input raises ``ValueError``/``TypeError`` naming the argument
before C++ runs.
"""
from __future__ import annotations

import numpy as np

from . import _C, algorithms, reference
from ._args import (as_int, as_tuple, check_flip, check_needs, conv_params, conv_problem,
                    normalize_padding)
from ._arrays import DTYPE_LIST, HOST, SUPPORTED_DTYPES, backend_for, same_dtype

__all__ = ["conv1d", "conv2d", "conv1d_backward", "conv2d_backward", "conv2d_output_shape", "explain", "info",
           "set_num_threads", "get_num_threads", "conv_params"]


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=None):
    """(N, K, P, Q) of conv2d: P = (H + pad_top + pad_bottom - dilation*(R-1) - 1) // stride + 1.

    With dilation 1 and symmetric padding this is the familiar (N - F + 2P)/S + 1.
    """
    if groups is None:
        ranks_ok = len(input_shape) == 4 and len(weight_shape) == 4
        groups = max(1, int(input_shape[1]) // max(1, int(weight_shape[1]))) if ranks_ok else 1
    p, _ = conv_params(input_shape, weight_shape, stride, padding, dilation, groups)
    return (p.N, p.K, p.P, p.Q)


# ---- convolution -----------------------------------------------------------------

def _run_conv(x_arr, w_arr, b_arr, params, pads, algorithm, out, backend=HOST):
    """Run one algorithm (already validated) on normalised arrays of ``backend``; returns y."""
    dtype = x_arr.dtype
    shape = (params.N, params.K, params.P, params.Q)
    y = backend.check_out(out, shape, dtype) if out is not None else backend.empty(shape, dtype)
    if algorithm == "reference":
        y[...] = reference.conv2d(x_arr, w_arr, b_arr, stride=(params.stride_h, params.stride_w),
                                  pads=pads, dilation=(params.dil_h, params.dil_w), groups=params.groups)
        return y
    ws = backend.workspace(backend.workspace_bytes(algorithm, params, dtype))
    backend.run("conv2d_forward", algorithm, params, {"x": x_arr, "w": w_arr, "bias": b_arr, "y": y}, ws)
    return y


# auto's pick for a problem, kept: the rules cost ~7.5 us a call (a few percent of a 0.4 ms
# layer), and a pick depends only on the problem (conv_problem hands out one params object per
# distinct problem; the key keeps it alive, so its identity is not reused), the dtype, and the
# ISA, thread count and workspace cap in force.
_AUTO_PICKS_MAX = 1024
_auto_picks = {}


def _auto_pick(params, dtype, device):
    key = (params, dtype, device, _C.get_isa(), _C.get_num_threads(), algorithms.get_workspace_limit())
    algo = _auto_picks.get(key)
    if algo is None:
        if len(_auto_picks) >= _AUTO_PICKS_MAX:
            _auto_picks.clear()
        algo = _auto_picks[key] = algorithms.choose(params, dtype, device=device)
    return algo


def _run_policy(policy, x_arr, w_arr, b_arr, params, pads, out, backend=HOST):
    """Run 'auto' or 'autotune': pick a kernel, run it, return y. Both give the reference's
    NaN/Inf pattern. A kernel that may spread a NaN/Inf over a tile (Winograd, FFT) never
    turns one into a finite value and is non-finite wherever the reference is, so an all-finite
    result is the answer; otherwise an exact kernel runs the problem again. The output is checked
    rather than x and w: at batch 1 the weights are the most data (ResNet's 512x512x3x3: 9.4 MB,
    0.38 ms to check, a quarter of the Winograd call; its output is 25,088 values)."""
    dtype = x_arr.dtype
    device = backend.device
    if policy == "autotune" or algorithms.get_autotune():
        if params.N == 0:
            algo = algorithms.choose(params, dtype, device=device)
        else:
            scratch = out if out is not None else backend.empty((params.N, params.K, params.P, params.Q), dtype)
            algo = algorithms.tuned(params, dtype, lambda name: _run_conv(x_arr, w_arr, b_arr, params, pads, name,
                                                                          scratch, backend), device=device)
    else:
        algo = _auto_pick(params, dtype, device)
    y = _run_conv(x_arr, w_arr, b_arr, params, pads, algo, out, backend)
    if algorithms.is_exact_on_nonfinite(algo) or backend.all_finite(y):
        return y
    exact = algorithms.choose(params, dtype, inputs_finite=False, device=device)
    return _run_conv(x_arr, w_arr, b_arr, params, pads, exact, y, backend)


def _as_2d(op, x_arr, w_arr, stride, padding, dilation):
    """A 1-D problem (x (N, C, L), w (K, C/groups, S)) as its 2-D counterpart with H = R = 1."""
    if x_arr.ndim != 3:
        raise ValueError(f"{op}: input must be 3-D (N, C, L), got shape {x_arr.shape}")
    if w_arr.ndim != 3:
        raise ValueError(f"{op}: weight must be 3-D (K, C/groups, S), got shape {w_arr.shape}")
    x_arr = x_arr.reshape(tuple(x_arr.shape[:2]) + (1,) + tuple(x_arr.shape[2:]))  # views: both are contiguous
    w_arr = w_arr.reshape(tuple(w_arr.shape[:2]) + (1,) + tuple(w_arr.shape[2:]))
    stride = (1, as_tuple(stride, 1, "stride")[0])
    dilation = (1, as_tuple(dilation, 1, "dilation")[0])
    if not isinstance(padding, str):
        padding = ((0, 0),) + normalize_padding(padding, (x_arr.shape[3],), (w_arr.shape[3],), (1,), (1,))
    return x_arr, w_arr, stride, padding, dilation


def _conv_nd(op, x, weight, bias, stride, padding, dilation, groups, flip, algorithm, out, one_d):
    backend, kind = backend_for([("input", x), ("weight", weight), ("bias", bias)])
    x_arr = backend.array(x, "input")
    w_arr = backend.array(weight, "weight")
    b_arr = backend.array(bias, "bias") if bias is not None else None
    same_dtype([("input", x_arr), ("weight", w_arr), ("bias", b_arr)])
    if one_d:
        x_arr, w_arr, stride, padding, dilation = _as_2d(op, x_arr, w_arr, stride, padding, dilation)
    params, pads = conv_problem(x_arr.shape, w_arr.shape, stride, padding, dilation, groups, op)
    if b_arr is not None and b_arr.shape != (params.K,):
        raise ValueError(f"{op}: bias must have shape ({params.K},), got {b_arr.shape}")
    if check_flip(op, flip):
        w_arr = backend.flip_kernel(w_arr)
    algo = algorithms.resolve(algorithm, params, x_arr.dtype, device=backend.device)
    y_shape = (params.N, params.K, params.Q) if one_d else None
    out_1d = None
    if out is not None and one_d:
        out_1d = backend.check_out(out, y_shape, x_arr.dtype)
        out = out_1d.reshape(params.N, params.K, 1, params.Q)
    if algo in algorithms.POLICIES:
        y = _run_policy(algo, x_arr, w_arr, b_arr, params, pads, out, backend)
    else:
        y = _run_conv(x_arr, w_arr, b_arr, params, pads, algo, out, backend)
    if one_d:  # out= is returned itself, as in 2-D, not a reshaped view of it
        y = out_1d if out_1d is not None else y.reshape(y_shape)
    return backend.wrap(y, kind)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           flip=False, algorithm="auto", out=None):
    """2-D cross-correlation (or convolution with ``flip=True``), as torch.nn.functional.conv2d.

    x is (N, C, H, W), weight (K, C/groups, R, S), bias (K,) or None; returns (N, K, P, Q).
    ``padding``: int, (ph, pw), ((top, bottom), (left, right)), 'valid', 'same' (any stride;
    output ceil(H/stride)) or 'full'. ``algorithm``: 'auto', 'direct', 'im2col', 'winograd'
    (3x3 stride 1, float32; 'winograd:2|4|6' force the tile), 'fft' (stride 1, dilation 1,
    float32, kernels up to 15x15; 'fft:8' (up to 7x7) and 'fft:16' force the tile),
    'reference', 'autotune'. Winograd and FFT spread a NaN/Inf input over the outputs
    of its tile (FFT: every output of the tiles whose window covers it; a NaN/Inf weight,
    its whole output channel), where the reference may be finite; ``auto`` avoids them
    on such inputs.
    Repeated calls with the same weights: ``plan_conv2d`` prepares them once.
    ``out``: optional NumPy array to write the result into.
    """
    return _conv_nd("conv2d", x, weight, bias, stride, padding, dilation, groups, flip, algorithm, out, False)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           flip=False, algorithm="auto", out=None):
    """1-D cross-correlation over time series, as torch.nn.functional.conv1d.

    x is (N, C, L), weight (K, C/groups, S); returns (N, K, L_out). ``padding``: int,
    (left, right), 'valid', 'same' or 'full'.
    """
    return _conv_nd("conv1d", x, weight, bias, stride, padding, dilation, groups, flip, algorithm, out, True)


# ---- backward --------------------------------------------------------------------

def _transposed_problem(params, pads):
    """For a stride-1 convolution, grad_x = conv2d(grad_y, w') with w'[c, k] = w[k, c]
    rotated 180 degrees (per group) and pads (d*(R-1) - lo, d*(R-1) - hi): every input
    pixel gathers the outputs its window reached. Returns (ConvParams, pads) of that
    forward problem, or None when it does not exist (a stride, or a pad larger than the
    dilated kernel, whose rows never reach the output: negative pads)."""
    if params.stride_h != 1 or params.stride_w != 1:
        return None
    span_h, span_w = params.dil_h * (params.R - 1), params.dil_w * (params.S - 1)
    t_pads = ((span_h - pads[0][0], span_h - pads[0][1]), (span_w - pads[1][0], span_w - pads[1][1]))
    if any(v < 0 for pair in t_pads for v in pair):
        return None
    t_params, _ = conv_problem((params.N, params.K, params.P, params.Q),
                               (params.C, params.K // params.groups, params.R, params.S),
                               1, t_pads, (params.dil_h, params.dil_w), params.groups, "conv2d_backward")
    return t_params, t_pads


def _transposed_weight(w_arr, groups, backend=HOST):
    """w (K, C/g, R, S) -> w' (C, K/g, R, S): per group, channels swapped and the kernel
    rotated 180 degrees, by ``_C.transpose_rotate_weight`` (NumPy's strided copy, runs of
    R*S reversed values, took 2.1 ms for ResNet's 512x512x3x3 on Zen 5). Written into a
    reused per-thread buffer (a fresh one of 9 MiB costs about as much in page faults as
    the copy); valid until the next call on this thread."""
    k, cg, r, s = w_arr.shape
    out = backend.workspace(w_arr.nbytes, "transposed_weight")[:w_arr.nbytes].view(w_arr.dtype)
    out = out.reshape(groups * cg, k // groups, r, s)
    _C.transpose_rotate_weight(np.ascontiguousarray(w_arr), out, groups)
    return out


def _grad_input_as_forward(gy, w_arr, params, pads, backend=HOST):
    """grad_x of a stride-1 convolution by the forward kernel ``auto`` picks for the
    transposed problem (Winograd for 3x3 float32: 4x fewer multiplications than the
    backward GEMM + col2im), or None when there is no such problem. Like the forward's
    auto, it takes an exact algorithm when grad_y or w holds NaN/Inf."""
    transposed = _transposed_problem(params, pads)
    if transposed is None or not backend.all_finite(w_arr):
        # Non-finite weights: the forward formulation would multiply them by grad_y's zero
        # padding (Inf * 0 = NaN) at pixels the reference's gather never reaches.
        return None
    t_params, t_pads = transposed
    w_t = _transposed_weight(w_arr, params.groups, backend)
    return _run_policy("auto", gy, w_t, None, t_params, t_pads, None, backend)


def _run_conv_backward(gy, x_arr, w_arr, params, pads, algorithm, needs, data_as_forward=False, backend=HOST):
    """(grad_x or None, grad_w or None, grad_b or None) for normalised 4-D arrays of
    ``backend``; ``data_as_forward``: grad_x by a forward kernel where the problem allows it."""
    dtype = x_arr.dtype
    need_x, need_w, need_b = needs
    if algorithm == "reference":
        gx, gw, gb = reference.conv2d_backward(gy, x_arr, w_arr, stride=(params.stride_h, params.stride_w),
                                               pads=pads, dilation=(params.dil_h, params.dil_w),
                                               groups=params.groups)
        return (gx if need_x else None, gw if need_w else None, gb if need_b else None)
    gx = gw = gb = None
    if need_x and data_as_forward:
        gx = _grad_input_as_forward(gy, w_arr, params, pads, backend)
    if need_x and gx is None:
        gx = backend.empty(x_arr.shape, dtype)
        ws = backend.workspace(backend.workspace_bytes(algorithm, params, dtype, False, "conv2d_backward_data"))
        backend.run("conv2d_backward_data", algorithm, params, {"grad_y": gy, "w": w_arr, "grad_x": gx}, ws)
    if need_w or need_b:
        gw = backend.empty(w_arr.shape, dtype) if need_w else None
        gb = backend.empty((params.K,), dtype) if need_b else None
        ws = (backend.workspace(backend.workspace_bytes(algorithm, params, dtype, False, "conv2d_backward_weight"))
              if need_w else None)
        backend.run("conv2d_backward_weight", algorithm, params,
                    {"grad_y": gy, "x": x_arr, "grad_w": gw, "grad_bias": gb}, ws)
    return gx, gw, gb


def _conv_backward_nd(op, grad_y, x, weight, stride, padding, dilation, groups, flip, algorithm, needs, one_d):
    backend, kind = backend_for([("input", x), ("grad_y", grad_y), ("weight", weight)])
    gy_arr = backend.array(grad_y, "grad_y")
    x_arr = backend.array(x, "input")
    w_arr = backend.array(weight, "weight")
    same_dtype([("grad_y", gy_arr), ("input", x_arr), ("weight", w_arr)])
    needs = check_needs(op, needs)
    flip = check_flip(op, flip)
    if one_d:
        x_arr, w_arr, stride, padding, dilation = _as_2d(op, x_arr, w_arr, stride, padding, dilation)
    params, pads = conv_problem(x_arr.shape, w_arr.shape, stride, padding, dilation, groups, op)
    y_shape = (params.N, params.K, params.Q) if one_d else (params.N, params.K, params.P, params.Q)
    if gy_arr.shape != y_shape:
        raise ValueError(f"{op}: grad_y must have the output's shape {y_shape}, got {gy_arr.shape}")
    gy_arr = gy_arr.reshape(params.N, params.K, params.P, params.Q)
    algo = algorithms.resolve_backward(algorithm, params, device=backend.device)
    if flip:  # y = conv(x, flipped w): grad_w is the flipped gradient of the flipped weight
        w_arr = backend.flip_kernel(w_arr)
    gx, gw, gb = _run_conv_backward(gy_arr, x_arr, w_arr, params, pads, algo, needs,
                                    data_as_forward=algorithm == "auto" and backend is HOST, backend=backend)
    if gw is not None and flip:
        gw = backend.flip_kernel(gw)
    if one_d:
        gx = gx.reshape(gx.shape[0], gx.shape[1], gx.shape[3]) if gx is not None else None
        gw = gw.reshape(gw.shape[0], gw.shape[1], gw.shape[3]) if gw is not None else None
    return tuple(backend.wrap(g, kind) if g is not None else None for g in (gx, gw, gb))


def conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    flip=False, algorithm="auto", needs=(True, True, True)):
    """Gradients of ``conv2d(x, weight, bias, ...)`` given ``grad_y`` (N, K, P, Q), the
    gradient of its output: returns (grad_x (N, C, H, W), grad_weight (K, C/groups, R, S),
    grad_bias (K,) = grad_y summed over N, P, Q), with None for what ``needs``
    (grad_x, grad_weight, grad_bias) does not ask for. Arguments as conv2d's; ``algorithm``:
    'auto', 'direct', 'im2col', 'reference'. With 'auto', grad_x of a stride-1 convolution
    is the forward convolution of grad_y with the transposed, rotated kernel, run by the
    forward kernel auto picks for it (Winograd for 3x3 float32, which spreads NaN/Inf over
    its tiles, so non-finite grad_y or weights take an exact kernel); the rest runs the
    backward kernel of ``algorithms.choose_backward``.
    """
    return _conv_backward_nd("conv2d_backward", grad_y, x, weight, stride, padding, dilation, groups, flip,
                             algorithm, needs, False)


def conv1d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    flip=False, algorithm="auto", needs=(True, True, True)):
    """Gradients of ``conv1d`` given ``grad_y`` (N, K, L_out): (grad_x (N, C, L),
    grad_weight (K, C/groups, S), grad_bias (K,)), None where ``needs`` says so."""
    return _conv_backward_nd("conv1d_backward", grad_y, x, weight, stride, padding, dilation, groups, flip,
                             algorithm, needs, True)


# ---- introspection -----------------------------------------------------------------

class Explanation:
    """What each algorithm would do with one convolution; ``str()`` gives a table."""

    def __init__(self, problem, rows, auto, auto_rule="", plan=None, plan_rule=""):
        self.problem = problem      # dict of the normalised problem
        self.algorithms = rows      # list of dicts: algorithm, supported, reason, flops, workspace_bytes
        self.auto = auto            # the algorithm algorithm="auto" runs
        self.auto_rule = auto_rule  # the rule of algorithms.choose that picked it, as a sentence
        self.plan = plan            # what plan_conv2d's auto picks (weights prepared once)
        self.plan_rule = plan_rule

    def __repr__(self):
        return (f"Explanation(auto={self.auto!r}, auto_rule={self.auto_rule!r}, plan={self.plan!r}, "
                f"algorithms={self.algorithms!r})")

    def __str__(self):
        p = self.problem
        lines = [f"conv2d x{p['input_shape']} * w{p['weight_shape']} -> y{p['output_shape']}  "
                 f"stride={p['stride']} pads={p['pads']} dilation={p['dilation']} groups={p['groups']} "
                 f"dtype={p['dtype']}",
                 f"{'algorithm':<10} {'ok':<3} {'GFLOP':>9} {'workspace':>12} {'plan weights':>12} "
                 f"{'plan wksp':>12}  note"]
        for r in self.algorithms:
            note = ("<- auto" if r["algorithm"] == self.auto else "") if r["supported"] else r["reason"]
            lines.append(f"{r['algorithm']:<10} {'yes' if r['supported'] else 'no':<3} "
                         f"{r['flops'] / 1e9:>9.4f} {r['workspace_bytes']:>12,} {r['prepared_bytes']:>12,} "
                         f"{r['plan_workspace_bytes']:>12,}  {note}")
        if self.problem.get("workspace_limit") is not None:
            lines.append(f"auto chose within a workspace limit of {self.problem['workspace_limit']:,} bytes")
        if self.auto_rule:
            lines.append(f"auto: {self.auto}, by the rule: {self.auto_rule}")
        if self.plan_rule:
            lines.append(f"plan_conv2d's auto: {self.plan}, by the rule: {self.plan_rule}")
        return "\n".join(lines)


def explain(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, dtype="float32",
            workspace_limit=None, device="cpu"):
    """Per algorithm: supported or why not, FLOPs, workspace bytes of a call, and of a plan
    (``plan_conv2d``) its prepared weights and workspace; and which one ``auto`` picks
    (within ``workspace_limit`` bytes, default the global ``set_workspace_limit``), on
    ``device`` ('cpu' or 'cuda': the kernel table's rows of that device and its auto rules)."""
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype {dtype} is not supported; supported dtypes: {DTYPE_LIST}")
    params, pads = conv_params(tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups, "explain")
    rows = []
    for name in algorithms.available(device)[len(algorithms.POLICIES):]:
        if name in algorithms.ALIASES:  # 'winograd': its rows 'winograd:m' are listed
            continue
        why = (("" if device == "cpu" else "the NumPy reference runs on the CPU only") if name == "reference"
               else _C.supports(name, params, dtype.name, "conv2d_forward", device))
        ws = prep = plan_ws = 0
        if not why and name != "reference":
            ws = algorithms.workspace_bytes(name, params, dtype, device=device)
            plan_ws = algorithms.workspace_bytes(name, params, dtype, prepared=True, device=device)
            prep = _C.prepared_bytes(name, params, dtype.name, device)
        rows.append({"algorithm": name, "supported": not why, "reason": why,
                     "flops": params.flops(), "workspace_bytes": ws, "prepared_bytes": prep,
                     "plan_workspace_bytes": plan_ws})
    problem = {"input_shape": tuple(int(v) for v in input_shape), "weight_shape": tuple(int(v) for v in weight_shape),
               "output_shape": (params.N, params.K, params.P, params.Q),
               "stride": (params.stride_h, params.stride_w), "pads": pads,
               "dilation": (params.dil_h, params.dil_w), "groups": params.groups, "dtype": dtype.name,
               "device": device,
               "workspace_limit": workspace_limit if workspace_limit is not None else algorithms.get_workspace_limit()}
    auto, auto_rule = algorithms.choose_with_rule(params, dtype, workspace_limit=workspace_limit, device=device)
    plan, plan_rule = algorithms.choose_with_rule(params, dtype, workspace_limit=workspace_limit, prepared=True,
                                                  device=device)
    return Explanation(problem, rows, auto, auto_rule, plan, plan_rule)


def set_num_threads(n):
    """Threads the CPU kernels use (default: OpenMP's, i.e. OMP_NUM_THREADS or all cores)."""
    n = as_int(n, "n")
    if n > 2**31 - 1:  # OpenMP takes a C int
        raise ValueError(f"number of threads must be at most {2**31 - 1}, got {n}")
    _C.set_num_threads(n)


def get_num_threads():
    return _C.get_num_threads()


def _cuda_status(build):
    """One line: the CUDA kernels compiled and the GPUs they run on, or why everything runs on
    the CPU."""
    if not build["cuda_kernels"]:
        return "none (this build has no CUDA kernels; everything runs on the CPU)"
    status = _C.cuda_devices()
    gpus = [f"cuda:{d['index']} {d['name']} (sm_{d['capability'][0]}{d['capability'][1]}, "
            f"{d['memory_bytes'] / 2**30:.1f} GiB)" for d in status["devices"]]
    if not gpus:
        return (f"{build['cuda_kernels']} CUDA kernels compiled, no GPU ({status['why_none']}); "
                "everything runs on the CPU")
    return f"{build['cuda_kernels']} CUDA kernels on " + ", ".join(gpus)


def info():
    """Version, instruction set in use, threads, CUDA status, build details."""
    b = _C.build_info()
    return {
        "version": b["version"],
        "isa": _C.get_isa(),
        "isa_detected": _C.detected_isa(),
        "cpu": _C.cpu_identity(),
        "threads": _C.get_num_threads(),
        "cuda": _cuda_status(b),
        "cuda_devices": _C.cuda_devices()["devices"],
        "openmp": b["openmp"],
        "compiler": b.get("compiler", "unknown"),
        "numpy": np.__version__,
        "algorithms": algorithms.available(),
        "cuda_algorithms": algorithms.available("cuda") if b["cuda_kernels"] else (),
    }
