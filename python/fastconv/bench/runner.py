# runner.py: measures what `python -m fastconv bench` reports: per layer and batch every
# fastconv algorithm and every peer, timed together with timing.compare (interleaved, medians),
# outputs checked against torch; plus GEMM vs NumPy and pooling vs torch. Returns plain dicts
# (JSON-ready); report.py turns them into tables, Markdown and plots.
"""Measurement of convolution layers, GEMM and pooling."""
from __future__ import annotations

import math
import os
import platform
import sys

import numpy as np

from .. import _C, _cache, algorithms, functional
from ..plan import plan_conv2d
from . import peers, timing

GEMM_SIZES = ((1024, 1024, 1024), (256, 3136, 64), (64, 3136, 256), (128, 784, 512), (512, 784, 128),
              (1024, 196, 256), (2048, 49, 512), (64, 3136, 576))   # M x N x K


def conv_algorithms():
    """conv2d CPU algorithms of the kernel table, in table order (new rows appear by themselves)."""
    return list(algorithms.kernel_names())


def close(y, ref, reduction=1):
    """Same shape and max |y - ref| <= max(1e-3, 2e-4 * sqrt(reduction)) * max |ref|.

    A check for wrong outputs, not an accuracy test (tests/ does that per algorithm): loose
    enough for Winograd F(6x6, 3x3) in float32 over 512 channels, far below the O(max |ref|)
    error of a wrong index. `reduction` is the length of each output's dot product (C/g*R*S).
    """
    y, ref = np.asarray(y), np.asarray(ref)
    if y.shape != ref.shape:
        return False
    if not ref.size:
        return True
    scale = float(np.abs(ref).max()) or 1.0
    tol = max(1e-3, 2e-4 * math.sqrt(reduction)) * scale
    return bool(np.all(np.abs(y.astype(np.float64) - ref) <= tol))


def make_arrays(layer, batch, seed=0):
    """x (N, C, H, W) and weight (K, C/groups, R, S), float32, unit-variance outputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(layer.input_shape(batch), dtype=np.float32)
    fan_in = (layer.C // layer.groups) * layer.R * layer.S
    w = rng.standard_normal(layer.weight_shape(), dtype=np.float32) / np.float32(np.sqrt(fan_in))
    return x, w


def params_of(layer, batch):
    params, _ = functional.conv_params(layer.input_shape(batch), layer.weight_shape(), layer.stride,
                                       layer.pad, layer.dilation, layer.groups)
    return params


def fastconv_fn(layer, x, w, algorithm):
    """One fastconv.conv2d call; the output array is allocated once, as a network would reuse it."""
    kw = layer.conv_kwargs()
    out = np.empty(layer.output_shape(x.shape[0]), np.float32)
    conv2d = functional.conv2d
    return lambda: conv2d(x, w, None, algorithm=algorithm, out=out, **kw)


def plan_fn(layer, x, w, name):
    """A plan made once (weights prepared) and called per round: 'plan' is auto's,
    'plan:ALGO' forces the kernel."""
    algorithm = name.split(":", 1)[1] if ":" in name else "auto"
    out = np.empty(layer.output_shape(x.shape[0]), np.float32)
    plan = plan_conv2d(w, x.shape, algorithm=algorithm, **layer.conv_kwargs())
    return lambda: plan(x, out=out)


def contenders(layer, batch, algos, peer_names, device="cpu"):
    """(fns, skipped): name -> zero-argument callable, and name -> reason for the rest."""
    x, w = make_arrays(layer, batch)
    fns, skipped = {}, {}
    if device == "cuda":
        for a in algos:
            skipped[a] = "fastconv has no CUDA kernels yet"
    else:
        params = params_of(layer, batch)
        for a in algos:
            kernel = a.split(":", 1)[1] if a.startswith("plan:") else a
            why = "" if kernel in ("auto", "reference", "plan") else _C.supports(kernel, params, "float32")
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
        ref = peers.to_numpy(fns[ref_name]())
        reduction = (layer.C // layer.groups) * layer.R * layer.S
        wrong = [n for n, fn in fns.items() if n != ref_name and not close(peers.to_numpy(fn()), ref, reduction)]
    cmp_ = timing.compare(fns, cuda=(device == "cuda"), **options) if fns else None
    flops = layer.flops(batch)
    rec = {
        "network": layer.network, "layer": layer.name, "shape": layer.describe(), "batch": batch,
        "count": layer.count, "flops": flops, "params": layer.to_dict(), "device": device,
        "samples": cmp_.samples if cmp_ else {}, "times": cmp_.medians if cmp_ else {},
        "rounds": cmp_.rounds if cmp_ else 0, "skipped": skipped, "wrong": wrong, "checked_against": ref_name,
        "auto_picks": algorithms.choose(params_of(layer, batch), np.dtype(np.float32)) if device == "cpu" else None,
    }
    annotate(rec, algos)
    return rec


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
                    "ratio": timing.ratio(cmp_.medians["numpy"], cmp_.medians["fastconv"])})
        if progress:
            progress(f"gemm {m}x{n}x{k}")
    return out


def pool_cases():
    """(label, input shape, fastconv function name, args) of the pooling section."""
    return [("max 3×3 s2 p1", (1, 64, 112, 112), "max_pool2d", (3, 2, 1)),
            ("max 2×2 s2", (1, 64, 112, 112), "max_pool2d", (2, 2)),
            ("avg 2×2 s2", (1, 256, 56, 56), "avg_pool2d", (2,)),
            ("global avg", (1, 2048, 7, 7), "adaptive_avg_pool2d", (1,))]


def measure_pool(options, progress=None):
    """fastconv pooling vs torch.nn.functional (when torch is installed)."""
    import fastconv as fc
    torch = peers._torch()
    rng = np.random.default_rng(0)
    out = []
    for label, shape, fn_name, args in pool_cases():
        x = rng.standard_normal(shape, dtype=np.float32)
        f_fc = getattr(fc, fn_name)
        y = np.asarray(f_fc(x, *args))
        fns = {"fastconv": lambda: f_fc(x, *args)}
        ok = True
        if torch is not None:
            f_t = getattr(torch.nn.functional, fn_name)
            xt = torch.from_numpy(x)
            fns["torch"] = lambda: f_t(xt, *args)
            ok = close(y, f_t(xt, *args).numpy())
        cmp_ = timing.compare(fns, **options)
        t = cmp_.medians
        out.append({"op": label, "input": list(shape), "output": list(y.shape), "bytes": x.nbytes + y.nbytes,
                    "times": t, "samples": cmp_.samples, "rounds": cmp_.rounds,
                    "wrong": [] if ok else ["fastconv"], "ratio": timing.ratio(t.get("torch"), t["fastconv"])})
        if progress:
            progress(f"pool {label}")
    return out


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
