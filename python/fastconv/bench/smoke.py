# smoke.py: `python -m fastconv.bench.smoke --device cuda`: every kernel of the table on one device
# run once on small odd-sized problems (conv2d forward and backward per algorithm, every pooling op
# forward and backward (distance-weighted included), tiled/locally connected convolution, and on
# CUDA the tiled GEMM), each result checked against the CPU: a few
# seconds' run that tools/device_run.sh puts under compute-sanitizer (memcheck, racecheck), where
# the full test suite would take far too long. Exit codes: 0 all matched (also --device cuda
# without a GPU: "skipped: no CUDA device"), 1 a mismatch or an error, 2 bad arguments.
"""Run each kernel of a device once on small problems and check it against the CPU.

On ``--device cuda`` the arrays are torch CUDA tensors (fastconv takes them zero-copy) and torch's
caching allocator is switched off (``PYTORCH_NO_CUDA_MEMORY_CACHING=1``, set before torch starts
CUDA) so that every buffer is its own cudaMalloc and compute-sanitizer's memcheck sees an access
past its end. Outputs are never pre-filled by this script: fastconv allocates them, uninitialised.
References: ``fastconv.reference`` (NumPy, float64) for convolution, the CPU kernels (tested against
the reference by the test suite) for pooling, NumPy for the GEMM. Tolerance: ``runner.close``, a
check for wrong outputs, not an accuracy test (tests/ does that).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

import numpy as np

# (label, x shape, w shape, conv2d keyword arguments): odd and prime sizes, stride, asymmetric
# padding, dilation, groups, depthwise, 1x1.
CONV_CASES = (
    ("3x3 p1 bias", (2, 3, 11, 13), (5, 3, 3, 3), dict(padding=1)),
    ("3x2 s2 d(2,1) pad((1,0),(0,1))", (1, 6, 9, 10), (4, 6, 3, 2),
     dict(stride=2, padding=((1, 0), (0, 1)), dilation=(2, 1))),
    ("depthwise 3x3 p1", (2, 6, 7, 9), (6, 1, 3, 3), dict(padding=1, groups=6)),
    ("1x1", (1, 17, 5, 7), (19, 17, 1, 1), {}),
    ("grouped 3x3 s2", (1, 8, 8, 9), (6, 4, 3, 3), dict(stride=2, groups=2)),
)
# Tiled / locally connected convolution: (label, x shape, weight shape (TP, TQ, K, C/groups, R, S),
# tiled_conv2d keyword arguments); the second is locally connected (TP x TQ = the output size).
TILED_CASES = (
    ("tiled 2x3 sets 3x3 p1 d(1,2)", (2, 4, 9, 11), (2, 3, 5, 4, 3, 3), dict(padding=1, dilation=(1, 2))),
    ("local 3x2 s2 groups 2", (1, 6, 11, 9), (5, 4, 4, 3, 3, 2), dict(stride=2, groups=2)),
)
POOL_X = (2, 5, 11, 13)   # Lp pooling takes |x| + 0.1: a fractional power of a negative number is NaN
# (label, function, positional args, keyword args, backward function)
POOL_CASES = (
    ("max 3x3 s2 p1 +indices", "max_pool2d", (3, 2, 1), dict(return_indices=True), "max_pool2d_backward"),
    ("max (2,3) s(2,1) p1 d(1,2) ceil", "max_pool2d", ((2, 3), (2, 1), 1, (1, 2), True), {}, "max_pool2d_backward"),
    ("avg 3x3 s2 p1 ceil no-pad-count", "avg_pool2d", (3, 2, 1, True, False), {}, "avg_pool2d_backward"),
    ("avg 2x2 divisor 3", "avg_pool2d", (2,), dict(divisor_override=3), "avg_pool2d_backward"),
    ("lp p=2 3x3 s2", "lp_pool2d", (2.0, 3, 2), {}, "lp_pool2d_backward"),
    ("lp p=1.5 2x2", "lp_pool2d", (1.5, 2), {}, "lp_pool2d_backward"),
    ("adaptive avg (3,5)", "adaptive_avg_pool2d", ((3, 5),), {}, "adaptive_avg_pool2d_backward"),
    ("adaptive max (3,5) +indices", "adaptive_max_pool2d", ((3, 5),), dict(return_indices=True),
     "adaptive_max_pool2d_backward"),
    # distance-weighted: a Gaussian (the separable path) and a window that is no outer product
    ("weighted gauss 3x3 s2 p1 ceil no-pad-count", "weighted_avg_pool2d", (3, 2, 1, True, False),
     dict(sigma=1.3), "weighted_avg_pool2d_backward"),
    ("weighted 2-D window (2,3) unnormalised", "weighted_avg_pool2d", ((2, 3), 1),
     dict(weight=np.array([[1.0, 2.0, 0.5], [0.25, 3.0, 1.0]]), normalize=False), "weighted_avg_pool2d_backward"),
)
GEMM_CASES = ((False, False, 37, 29, 41, 1), (True, False, 37, 29, 41, 1), (False, True, 37, 29, 41, 1),
              (True, True, 37, 29, 41, 1), (False, False, 33, 65, 17, 3))   # trans_a, trans_b, M, N, K, batch


class Device:
    """Moving arrays to the device and back: NumPy on 'cpu', torch CUDA tensors on 'cuda'."""

    def __init__(self, name):
        self.name = name
        self.torch = None
        if name == "cuda":
            import torch
            self.torch = torch

    def put(self, a):
        if self.torch is None or a is None:
            return a
        return self.torch.from_numpy(np.ascontiguousarray(a)).cuda()

    def get(self, a):
        if a is None or isinstance(a, np.ndarray):
            return a
        return a.cpu().numpy()

    def sync(self):
        if self.torch is not None:
            self.torch.cuda.synchronize()


def why_no_device(device):
    """'' when `device` can run here, else why not."""
    if device == "cpu":
        return ""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    from . import runner
    return runner.cuda_kernels_missing()


class Checker:
    """Runs the checks, one line each, counting failures and the kernel rows they exercised."""

    def __init__(self, device, verbose=True):
        self.device, self.verbose = device, verbose
        self.failures, self.runs, self.covered = [], 0, set()

    def check(self, label, rows, fn):
        """fn() -> [(name, result, expected, reduction)]; rows: the table rows it exercises."""
        from .runner import close
        try:
            pairs = fn()
            self.device.sync()   # an asynchronous launch error surfaces here, charged to this check
            bad = [name for name, got, want, red in pairs if not close(self.device.get(got), want, red)]
        except Exception as e:   # noqa: BLE001 - report every failure, keep going
            bad = [f"{type(e).__name__}: {e}"]
            if self.verbose:
                traceback.print_exc()
        self.runs += 1
        self.covered.update(rows)
        if bad:
            self.failures.append(f"{label}: {', '.join(bad)}")
        if self.verbose or bad:
            print(f"{'ok  ' if not bad else 'FAIL'} {label}" + (f"  ({', '.join(bad)})" if bad else ""), flush=True)


def run(device_name="cuda", verbose=True, seed=0):
    """Check every kernel of `device_name`'s table; returns the Checker (failures, runs, covered)."""
    import fastconv as fc
    from fastconv import _C, reference
    from fastconv._args import conv_params
    from fastconv.local import _problem as _tiled_problem

    from . import runner

    dev = Device(device_name)
    chk = Checker(dev, verbose)
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    for label, xs, ws, kw in CONV_CASES:
        x, w, b = rand(*xs), rand(*ws), rand(ws[0])
        params, pads = conv_params(xs, ws, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                                   kw.get("groups", 1))
        ref_kw = dict(stride=(params.stride_h, params.stride_w), pads=pads, dilation=(params.dil_h, params.dil_w),
                      groups=params.groups)
        red = (params.C // params.groups) * params.R * params.S
        y_ref = reference.conv2d(x, w, b, **ref_kw)
        gy = rand(*y_ref.shape)
        gx_ref, gw_ref, gb_ref = reference.conv2d_backward(gy, x, w, **ref_kw)
        back_red = ((params.K // params.groups) * params.R * params.S, params.N * params.P * params.Q)
        for a in runner.conv_algorithms(device_name):
            if runner.supports(a, params, device_name):
                continue
            chk.check(f"conv2d_forward {a}: {label}", {("conv2d_forward", a)},
                      lambda a=a: [("y", fc.conv2d(dev.put(x), dev.put(w), dev.put(b), algorithm=a, **kw), y_ref,
                                    red)])
        for a in runner.backward_algorithms(device_name):
            if runner.supports(a, params, device_name, "conv2d_backward_data") or \
                    runner.supports(a, params, device_name, "conv2d_backward_weight"):
                continue

            def backward(a=a):
                gx, gw, gb = fc.conv2d_backward(dev.put(gy), dev.put(x), dev.put(w), algorithm=a, **kw)
                return [("grad_x", gx, gx_ref, back_red[0]), ("grad_w", gw, gw_ref, back_red[1]),
                        ("grad_bias", gb, gb_ref, back_red[1])]
            chk.check(f"conv2d_backward {a}: {label}", {("conv2d_backward_data", a), ("conv2d_backward_weight", a)},
                      backward)

    for label, xs, ws, kw in TILED_CASES:
        x, w, b = rand(*xs), rand(*ws), rand(*ws[:3])
        params, pads, _, _ = _tiled_problem("smoke", x, w, kw.get("stride", 1), kw.get("padding", 0),
                                            kw.get("dilation", 1), kw.get("groups", 1), False, False)
        ref_kw = dict(stride=(params.stride_h, params.stride_w), pads=pads, dilation=(params.dil_h, params.dil_w),
                      groups=params.groups)
        y_ref = reference.tiled_conv2d(x, w, b, **ref_kw)
        gy = rand(*y_ref.shape)
        gx_ref, gw_ref, gb_ref = reference.tiled_conv2d_backward(gy, x, w, **ref_kw)
        red = (params.C // params.groups) * params.R * params.S

        def tiled(x=x, w=w, b=b, gy=gy, params=params, y_ref=y_ref, gx_ref=gx_ref, gw_ref=gw_ref, gb_ref=gb_ref,
                  red=red):
            # The Python functions take CPU arrays only: the rows run through _C.run, on the
            # device's arrays (outputs uninitialised), the data gradient's workspace included.
            outs = {name: dev.put(np.empty(shape, np.float32)) for name, shape in
                    (("y", y_ref.shape), ("grad_x", x.shape), ("grad_w", w.shape), ("grad_bias", b.shape))}
            ins = {"x": dev.put(x), "w": dev.put(w), "bias": dev.put(b), "grad_y": dev.put(gy)}
            desc = (lambda a: a) if dev.torch is None else runner.cuda_descriptor
            index = 0 if dev.torch is None else ins["x"].device.index
            stream = 0 if dev.torch is None else dev.torch.cuda.current_stream().cuda_stream
            nbytes = _C.workspace_bytes("direct", params, "float32", False, "tiled_conv2d_backward_data",
                                        device_name, index)
            ws = dev.put(np.empty(nbytes, np.uint8)) if nbytes else None

            def run_op(op, **t):
                _C.run(op, "direct", params, {k: desc(v) for k, v in t.items()},
                       desc(ws) if ws is not None and op == "tiled_conv2d_backward_data" else None, device_name,
                       index, stream)
            run_op("tiled_conv2d_forward", x=ins["x"], w=ins["w"], bias=ins["bias"], y=outs["y"])
            run_op("tiled_conv2d_backward_data", grad_y=ins["grad_y"], w=ins["w"], grad_x=outs["grad_x"])
            run_op("tiled_conv2d_backward_weight", grad_y=ins["grad_y"], x=ins["x"], grad_w=outs["grad_w"],
                   grad_bias=outs["grad_bias"])
            back_red = params.N * params.P * params.Q
            return [("y", outs["y"], y_ref, red), ("grad_x", outs["grad_x"], gx_ref, params.K * params.R * params.S),
                    ("grad_w", outs["grad_w"], gw_ref, back_red), ("grad_bias", outs["grad_bias"], gb_ref, back_red)]
        chk.check(f"tiled_conv2d forward and backward direct: {label}",
                  {("tiled_conv2d_forward", "direct"), ("tiled_conv2d_backward_data", "direct"),
                   ("tiled_conv2d_backward_weight", "direct")}, tiled)

    signed = rand(*POOL_X)
    for label, name, args, kw, back in POOL_CASES:
        x = np.abs(signed) + np.float32(0.1) if name.startswith("lp") else signed
        f, fb = getattr(fc, name), getattr(fc, back)
        want = f(x, *args, **kw)                      # the CPU kernels
        y_host = want[0] if isinstance(want, tuple) else want
        gy = rand(*y_host.shape)
        op = name.replace("adaptive_", "").replace("pool2d", "pool2d_forward")
        b_op = op.replace("forward", "backward")

        def forward(f=f, x=x, args=args, kw=kw, want=want):
            got = f(dev.put(x), *args, **kw)
            if isinstance(want, tuple):
                return [("y", got[0], want[0], 1), ("indices", got[1], want[1], 1)]
            return [("y", got, want, 1)]

        def backward(f=f, fb=fb, x=x, args=args, kw=kw, want=want, gy=gy):
            if isinstance(want, tuple):   # max pooling, with the forward's indices and without
                _, idx = f(dev.put(x), *args, **kw)
                gx_ref = fb(gy, x, *args, indices=want[1])
                return [("grad_x (indices)", fb(dev.put(gy), dev.put(x), *args, indices=idx), gx_ref, 1),
                        ("grad_x (recomputed)", fb(dev.put(gy), dev.put(x), *args), gx_ref, 1)]
            return [("grad_x", fb(dev.put(gy), dev.put(x), *args, **kw), fb(gy, x, *args, **kw), 1)]
        chk.check(f"{name}: {label}", {(op, "*")}, forward)
        chk.check(f"{back}: {label}", {(b_op, "*")}, backward)

    if device_name == "cuda":
        torch = dev.torch
        for ta, tb, m, n, k, batch in GEMM_CASES:
            lead = (batch,) if batch > 1 else ()
            a = rand(*lead, *((k, m) if ta else (m, k)))
            b = rand(*lead, *((n, k) if tb else (k, n)))
            c = rand(*lead, m, n)
            alpha, beta = 0.5, (2.0 if batch > 1 else 0.0)
            opa = np.swapaxes(a, -1, -2) if ta else a
            opb = np.swapaxes(b, -1, -2) if tb else b
            want = alpha * np.matmul(opa.astype(np.float64), opb) + beta * c

            def gemm(ta=ta, tb=tb, a=a, b=b, c=c, alpha=alpha, beta=beta, want=want, k=k):
                da, db, dc = dev.put(a), dev.put(b), dev.put(c)
                index = dc.device.index
                _C.cuda_gemm(ta, tb, alpha, runner.cuda_descriptor(da), runner.cuda_descriptor(db), beta,
                             runner.cuda_descriptor(dc), index, torch.cuda.current_stream(dc.device).cuda_stream)
                return [("C", dc, want, k)]
            chk.check(f"cuda_gemm trans_a={ta} trans_b={tb} {m}x{n}x{k} batch {batch}", {("gemm", "cuda")}, gemm)

    rows = {(k["op"], k["algorithm"]) for k in _C.kernels() if k["device"] == device_name}
    pool_ops = {op for op, a in chk.covered if a == "*"}
    missed = sorted(f"{op} {a}" for op, a in rows if (op, a) not in chk.covered and op not in pool_ops)
    chk.missed = missed
    return chk


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastconv.bench.smoke", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda",
                   help="the kernel table's device to check (default cuda); cpu runs the same checks on the CPU rows")
    p.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = p.parse_args(argv)
    if args.device == "cuda":
        # Before torch starts CUDA: every tensor its own cudaMalloc, exact bounds for memcheck.
        os.environ.setdefault("PYTORCH_NO_CUDA_MEMORY_CACHING", "1")
    why = why_no_device(args.device)
    if why:
        print(f"skipped: no CUDA device ({why}); nothing was run")
        return 0
    chk = run(args.device, verbose=not args.quiet)
    print(f"smoke {args.device}: {chk.runs} checks, {len(chk.failures)} failed"
          + (f"; table rows not exercised: {', '.join(chk.missed)}" if chk.missed else "; every row exercised"))
    for f in chk.failures:
        print(f"  FAIL {f}")
    return 1 if chk.failures else 0


if __name__ == "__main__":
    sys.exit(main())
