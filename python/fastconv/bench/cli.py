# cli.py: `python -m fastconv bench`: options, what runs in which mode, progress, and the
# outputs (console table and summary, --json, --plot, --markdown). Exit codes: 0 done (also
# `--device cuda` without a GPU: it prints "skipped: no CUDA device" and measures nothing),
# 2 bad arguments, 1 an output file could not be written.
# --device cuda: fastconv's CUDA kernels against cuDNN/cuBLAS/torch on the same torch CUDA
# tensors, TF32 off (NVIDIA_TF32_OVERRIDE=0 set before torch starts CUDA), CUDA-event timing.
"""python -m fastconv bench: which algorithm wins for each layer of a real network, and by how much.

With no options: a quick run on the CPU (a few representative layers of ResNet-50, VGG-16,
MobileNet and LeNet-5, batch 1, short timing; about a minute on 2 cores), printing per layer
every fastconv algorithm and every available peer (torch F.conv2d and NNPACK by default;
torch prepacked oneDNN with --peers) with its time, GFLOP/s and % of the machine's peak
(measured briefly at the start of every run, or --peak-gflops), the winner and its ratio to
torch, then one summary line per network.

Modes: with --network and no --quick, every layer of the named networks with the longer
timing (--full does that for all networks); --quick forces the short subset.

GPU: --device cuda times fastconv's CUDA kernels (each conv2d kernel of the table's cuda rows,
and auto) against cuDNN (torch's F.conv2d, cudnn.benchmark on, TF32 off everywhere:
NVIDIA_TF32_OVERRIDE=0 is set before torch starts CUDA) on the same torch CUDA tensors, which
fastconv takes zero-copy and runs on torch's current stream; CUDA events time both. % of peak is
of the card's nominal fp32 peak (fastconv._C.cuda_devices()). --sections gemm: a 4096^3 SGEMM,
fastconv._C.cuda_gemm vs torch.matmul (cuBLAS); pool: pooling forward and backward at batch 32
vs torch, with GB/s as % of a device-to-device copy measured in the same run; backward:
conv2d_backward vs autograd's cuDNN backward; local and weighted (below) at batch 32, fastconv and
the torch formulations on the same CUDA tensors (local's floor at the device-to-device copy
bandwidth). Without a GPU (or torch with CUDA) it prints "skipped: no CUDA device"
and exits with 0.

The lecture's other layers (issue 21), which no peer library has, against the torch code a user
would write instead (fastconv.bench.formulations; torch needed for the peer columns, which say
"unavailable" without it, while fastconv is still timed):
--sections local: fastconv.local_conv2d / tiled_conv2d, forward and backward (grad_x, grad_w),
vs F.unfold + einsum and F.unfold + bmm over the positions (ratio against the faster), with the
locally connected forward's floor (weight bytes at the measured copy bandwidth, the bound a
batch-1 forward sits near). --sections weighted:
fastconv.weighted_avg_pool2d, forward and backward, vs a depthwise F.conv2d with the fixed
normalised window (and torch's autograd through it), with GB/s. Every result is checked against
the formulation's and marked wrong if it differs.

Whole models: --model resnet18 resnet50 lenet5 times complete networks instead of single
layers: a torch.nn model converted by fastconv.torch.convert against the same model in torch
eager mode, interleaved: forward at batch 1 (LeNet-5 also at 64) and one ResNet-18 training
step (forward, backward, SGD) at batch 8; --batch and --image-size change the cases;
--keep-batchnorm converts without folding BatchNorm2d into the convolutions. The
per-layer sections run as well only when --network or --sections is given.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from . import models, networks, peers, report, runner, timing

NETWORK_NAMES = ("resnet50", "vgg16", "mobilenet", "lenet5")
SECTIONS = ("conv", "gemm", "pool", "backward", "local", "weighted")


def _network(text):
    if text == "all" or text in networks.networks():
        return text
    if "," in text:
        try:
            return networks.parse_layer(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    raise argparse.ArgumentTypeError(
        f"unknown network {text!r}: use one of {', '.join(networks.networks())}, all, "
        "or a layer N,C,H,W,K,R,S,stride,pad[,groups[,dilation]]")


def _number(text, cast, ok, what):
    """argparse type: text parsed by cast and accepted by ok, else a clear error."""
    try:
        v = cast(text)
    except ValueError:
        v = None
    if v is None or not ok(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def _positive_int(text):
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _nonneg_int(text):
    return _number(text, int, lambda v: v >= 0, "a non-negative integer")


def _positive_float(text):
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def _algorithm(text):
    known = list(dict.fromkeys(runner.conv_algorithms() + runner.conv_algorithms("cuda") + ["auto"]))
    base = text[len("plan:"):] if text.startswith("plan:") else text
    if text != "plan" and base not in known:
        raise argparse.ArgumentTypeError(f"unknown algorithm {text!r}; this build has: {', '.join(known)}, "
                                         "plan (auto's plan_conv2d) and plan:ALGO")
    return text


def _peer(text):
    if text not in peers.PEERS:
        raise argparse.ArgumentTypeError(f"unknown peer {text!r}; known: {', '.join(peers.PEERS)}")
    return text


def _png(text):
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"--plot writes a PNG: the path must end in .png, got {text!r}")
    return text


def add_parser(sub):
    """Register the `bench` subcommand on an argparse subparsers object."""
    p = sub.add_parser("bench", help="benchmark fastconv against torch, NNPACK and cuDNN on real network layers",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default) or cuda: fastconv's CUDA kernels vs cuDNN (cuBLAS, torch) on torch CUDA "
                        "tensors, TF32 off, CUDA events; without a GPU it prints 'skipped: no CUDA device' and "
                        "exits with 0")
    p.add_argument("--network", "-n", nargs="+", type=_network, default=None, metavar="NET",
                   help="resnet50, vgg16, mobilenet, lenet5, all, or a single layer N,C,H,W,K,R,S,stride,pad"
                        "[,groups[,dilation]] (its N is the batch unless --batch is given); default: all, quick subset")
    p.add_argument("--model", "-m", nargs="+", choices=models.MODELS, default=None, metavar="MODEL",
                   help="end-to-end: " + ", ".join(models.MODELS) + " converted by fastconv.torch.convert vs torch "
                        "eager (needs torch); see above")
    p.add_argument("--keep-batchnorm", action="store_true",
                   help="--model: convert(fold_batchnorm=False), BatchNorm2d run apart from the convolutions")
    p.add_argument("--image-size", type=_positive_int, default=None, metavar="PIXELS",
                   help="--model input height and width (default: 32 for lenet5, 224 for the ResNets)")
    p.add_argument("--batch", "-b", nargs="+", type=_positive_int, default=None, metavar="N",
                   help="batch sizes (default 1)")
    p.add_argument("--algorithms", nargs="+", type=_algorithm, default=None, metavar="ALGO",
                   help="fastconv algorithms to time (default: every conv2d kernel of this build on the device, "
                        "auto, and on the CPU plan: a fastconv.plan_conv2d made once, weights prepared; plan:ALGO "
                        "forces its kernel); names the device has no kernel for are skipped with a note")
    p.add_argument("--peers", nargs="*", type=_peer, default=None, metavar="PEER",
                   help="torch, torch-prepacked, nnpack, cudnn (default on cpu: torch and nnpack; on cuda: cudnn); "
                        "torch-prepacked is opt-in: torch's threads keep spinning after it and slow the next "
                        "contender in the interleaved rounds; peers that are not installed are skipped with a "
                        "note; --peers alone: none")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for fastconv, torch and NumPy's BLAS alike (default: fastconv's, i.e. all cores)")
    p.add_argument("--repeats", type=_positive_int, default=None, help="minimum interleaved rounds per layer")
    p.add_argument("--warmup", type=_nonneg_int, default=None, help="warm-up calls per contender")
    p.add_argument("--min-time", type=_positive_float, default=None, help="minimum seconds per layer")
    p.add_argument("--max-time", type=_positive_float, default=None, help="stop a layer's rounds after this long")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="representative layers only, short timing")
    mode.add_argument("--full", action="store_true",
                      help="every layer of every network (or of --network), longer timing (RESULTS.md)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=None,
                   help="conv (default), gemm (fastconv's GEMM vs numpy.matmul; on cuda a 4096^3 SGEMM vs "
                        "cuBLAS), pool (forward and backward vs torch), backward (conv2d_backward vs torch "
                        "autograd; cuDNN on cuda) on the layers of --network, local (locally connected and tiled "
                        "convolution, forward and backward, vs torch's unfold + einsum / unfold + bmm), "
                        "weighted (weighted_avg_pool2d, forward and backward, vs a depthwise F.conv2d with the "
                        "fixed window); --peers does not apply to pool, local and weighted: torch when installed")
    p.add_argument("--peak", action="store_true",
                   help="measure the machine's fp32 FMA peak and memory copy bandwidth for 1 s each and print "
                        "them; alone, that is all it does. Every run otherwise measures them briefly (2 x 0.15 s) "
                        "at the start; %% of peak uses the best value ever measured on this machine "
                        "(cached in ~/.cache/fastconv/peak.json, or $FASTCONV_CACHE_DIR)")
    p.add_argument("--peak-gflops", type=_positive_float, default=None, metavar="GFLOPS",
                   help="use this fp32 peak for the %% columns instead of measuring it")
    p.add_argument("--json", metavar="PATH",
                   help="write every raw sample and the machine info as JSON (rewritten, marked partial, after "
                        "each measurement: a run cut short keeps what it measured)")
    p.add_argument("--plot", metavar="PATH.png", type=_png,
                   help="write a PNG: per-layer speedup over torch for each contender, one panel per network")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the tables between <!-- report:begin/end --> markers of PATH (e.g. "
                        "benchmarks/RESULTS.md); text outside the markers is kept")
    p.add_argument("--load", metavar="JSON",
                   help="re-render tables/--plot/--markdown from a --json file, measuring nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=run)
    return p


# ---- what to run -----------------------------------------------------------------------------------

def plan(args):
    """[(layer, batch)] to measure, the timing options and whether this is the quick subset."""
    explicit = args.network is not None
    quick = args.quick or (not explicit and not args.full)
    wanted = args.network or ["all"]
    layers = []
    for item in wanted:
        if isinstance(item, networks.Layer):
            layers.append(item)
            continue
        for net in (NETWORK_NAMES if item == "all" else (item,)):
            layers.extend(networks.load_quick(net) if quick else networks.load(net))
    seen, work = set(), []
    for layer in layers:
        for b in (args.batch or ([layer.batch] if layer.batch else [1])):
            key = (layer.network, layer.name, b)
            if key not in seen:
                seen.add(key)
                work.append((layer, b))
    opts = dict(timing.QUICK if quick else timing.FULL)
    for k in ("warmup", "repeats", "min_time", "max_time"):
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k)
    return work, opts, quick


class Progress:
    """tqdm on stderr when installed and wanted; else one plain line per step."""

    def __init__(self, total, enabled=True):
        self.bar = None
        self.total, self.n, self.enabled = total, 0, enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, file=sys.stderr, unit="layer", leave=False, dynamic_ncols=True)
            except ImportError:
                pass

    def start(self, label):
        """Show what is being measured now."""
        if self.bar is not None:
            self.bar.set_description_str(label[:40])
        elif self.enabled:
            print(f"[{self.n + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def __call__(self, label=""):
        """One step done."""
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and label:
            print(f"[{self.n}/{self.total}] {label}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _reexec_for_blas(argv):
    """NumPy's OpenBLAS must load without OPENBLAS_CORETYPE/L2_SIZE and with THREAD_TIMEOUT=4
    when it is timed (see timing.py); re-execute this command once with that environment."""
    env = timing.blas_environment(os.environ)
    env["FASTCONV_BENCH_REEXEC"] = "1"
    print("note: re-executing with NumPy's OpenBLAS environment for the GEMM section "
          "(OPENBLAS_THREAD_TIMEOUT=4, no OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE)", file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "fastconv"] + list(argv), env)


def _cuda_unavailable():
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return ""


def run(args, argv=None, allow_reexec=False):
    """Run `bench` with parsed args; returns the exit code."""
    import fastconv

    only_models = args.model is not None and args.sections is None and args.network is None
    sections = args.sections or ([] if only_models else ["conv"])
    if args.load:
        try:
            result = report.read_json(args.load)
        except OSError as e:
            print(f"error: cannot read {args.load}: {e}", file=sys.stderr)
            return 1
        return _emit(result, args)
    only_peak = args.peak and args.network is None and args.sections is None and args.model is None and not (
        args.json or args.plot or args.markdown or args.full or args.quick)
    if args.model and args.device != "cpu":
        print("error: --model runs on the CPU only (fastconv.torch's layers run on the CPU)", file=sys.stderr)
        return 2
    if args.model and peers._torch() is None:
        print("error: --model needs torch (pip install 'fastconv[torch]')", file=sys.stderr)
        return 2
    device = args.device
    if device == "cuda":
        timing.cuda_environment(os.environ)   # before torch starts CUDA (cuBLAS, cuDNN read it)
        why = _cuda_unavailable()
        if why:
            print(f"skipped: no CUDA device ({why}); nothing was measured. "
                  "Run on a machine with a GPU and a CUDA build of torch.")
            return 0
        timing.cuda_setup()
    if "gemm" in sections and device == "cpu" and allow_reexec and not timing.blas_environment_ok(os.environ) \
            and not os.environ.get("FASTCONV_BENCH_REEXEC"):
        _reexec_for_blas(argv if argv is not None else sys.argv[2:])

    threads = args.threads or fastconv.get_num_threads()
    applied = timing.set_threads(threads)

    if device == "cuda":
        # The card's ceilings: its nominal fp32 peak and a device-to-device copy measured now.
        peak = runner.cuda_peak()
        if args.peak_gflops:
            peak.update(gflops=args.peak_gflops, source="--peak-gflops; " + peak["source"])
        if args.peak:
            print(f"peak: {peak['gflops']:.0f} GFLOP/s fp32 (nominal), {peak['copy_gbs']:.0f} GB/s device-to-device "
                  f"copy (read + write, measured: {peak['copy_ms']:.3f} ms for {peak['copy_bytes'] // 2 >> 20} MiB) "
                  f"on {peak['source'].split(':')[0]}")
            if only_peak:
                return 0
    elif args.peak_gflops:
        peak = {"gflops": args.peak_gflops, "copy_gbs": math.nan, "source": "--peak-gflops"}
    else:
        secs, tries = (1.0, 1) if args.peak else (0.15, 2)
        peak = runner.peak_with_cache(runner.measure_peak(secs, tries))
    if args.peak and device == "cpu":
        now = peak.get("this_run", peak)
        print(f"peak: {now['gflops']:.1f} GFLOP/s fp32 FMA, {now['copy_gbs']:.1f} GB/s memory copy "
              f"(read + write; ISA {fastconv.info()['isa']}, {threads} threads)")
        if peak.get("this_run") and peak["source"] != "measured in this run":
            print(f"best measured on this machine: {peak['gflops']:.1f} GFLOP/s, {peak['copy_gbs']:.1f} GB/s "
                  f"(used for % of peak; cache {peak['cache']})")
        if only_peak:
            return 0

    work, opts, quick = plan(args)
    if "conv" not in sections and "backward" not in sections:
        work = []
    model_cases = models.cases(args.model, args.batch) if args.model else []
    algos = args.algorithms or runner.default_algorithms(device)
    peer_names = list(args.peers) if args.peers is not None else list(
        peers.CUDA_DEFAULT if device == "cuda" else peers.CPU_DEFAULT)
    notes = []
    if device == "cuda":
        missing = runner.cuda_kernels_missing()
        if missing:
            notes.append(f"fastconv skipped: {missing}; only the peers are timed")
        gpu = peak.get("gpu") or {}
        notes.append(f"GPU {gpu.get('name', '?')} (sm_{''.join(map(str, gpu.get('capability', ())))}, "
                     f"{gpu.get('multiprocessors', '?')} SMs): TF32 off (cudnn, matmul, NVIDIA_TF32_OVERRIDE=0), "
                     "cudnn.benchmark on, CUDA-event times on torch's current stream")
    for p in peer_names:
        why = peers.why_unavailable(p, device)
        if why:
            notes.append(f"{p} skipped: {why}")
    if any(s in sections for s in ("local", "weighted")) and peers._torch() is None:
        notes.append("local/weighted: torch is not installed: fastconv alone is timed, the torch columns say "
                     "unavailable (local checks against fastconv's NumPy reference, weighted is unchecked)")
    back_algos = [a for a in algos if a in ("auto", "reference") or a in runner.backward_algorithms(device)]
    if "backward" in sections and len(back_algos) < len(algos):
        notes.append("backward: " + ", ".join(a for a in algos if a not in back_algos)
                     + " have no backward kernels (forward only); not timed there")
    result = {
        "schema": report.JSON_SCHEMA, "date": report.now(),
        "machine": runner.machine_info(threads, device), "peak": peak,
        "options": {"device": device, "quick": quick, "sections": sections, "algorithms": algos,
                    "peers": peer_names, "threads": threads, "threads_applied": applied, "timing": opts,
                    "batches": sorted({b for _, b in work}), "models": args.model, "image_size": args.image_size},
        "conv": [], "backward": [], "gemm": [], "pool": [], "local": [], "weighted": [], "models": [],
        "notes": notes,
    }
    for n in notes:
        print(f"note: {n}")
    start = time.perf_counter()
    gemm_sizes = runner.CUDA_GEMM_SIZES if device == "cuda" else runner.GEMM_SIZES
    total = (len(work) if "conv" in sections else 0) + (len(work) if "backward" in sections else 0) \
        + (len(gemm_sizes) if "gemm" in sections else 0) \
        + (runner.pool_steps(device) if "pool" in sections else 0) \
        + (runner.local_steps(device) if "local" in sections else 0) \
        + (runner.weighted_steps(device) if "weighted" in sections else 0) + len(model_cases)
    progress = Progress(total, enabled=not args.no_progress)

    def checkpoint():
        """--json rewritten after every measurement, marked partial: a run cut short (a timeout on a
        lent GPU) keeps what it measured; --load renders it."""
        if args.json:
            try:
                report.write_json(args.json, dict(result, partial=True, elapsed_s=time.perf_counter() - start))
            except OSError:
                pass   # the final write reports it
    try:
        if "conv" in sections:
            for layer, batch in work:
                progress.start(f"{layer.network} {layer.name} b{batch}")
                result["conv"].append(runner.measure_conv(layer, batch, algos, peer_names, opts, device))
                progress()
                checkpoint()
        if "backward" in sections:
            for layer, batch in work:
                progress.start(f"backward {layer.network} {layer.name} b{batch}")
                result["backward"].append(runner.measure_backward(layer, batch, back_algos, peer_names, opts,
                                                                  device))
                progress()
                checkpoint()
        if "gemm" in sections:
            result["gemm"] = (runner.measure_gemm_cuda(opts, gemm_sizes, progress=progress) if device == "cuda"
                              else runner.measure_gemm(opts, gemm_sizes, progress=progress))
            checkpoint()
        if "pool" in sections:
            result["pool"] = runner.measure_pool(opts, progress=progress, device=device)
            checkpoint()
        if "local" in sections:
            result["local"] = runner.measure_local(opts, progress=progress, device=device)
            checkpoint()
        if "weighted" in sections:
            result["weighted"] = runner.measure_weighted(opts, progress=progress, device=device)
            checkpoint()
        for name, mode, batch in model_cases:
            progress.start(f"{name} {mode} b{batch}")
            result["models"].append(models.measure_model(name, mode, batch, opts, args.image_size,
                                                                fold_batchnorm=not args.keep_batchnorm))
            progress()
    finally:
        progress.close()
    result["elapsed_s"] = time.perf_counter() - start
    return _emit(result, args)


def _emit(result, args):
    """Print the tables and summary; write --json, --markdown, --plot."""
    print("\n".join(report.header_lines(result)))
    if result.get("conv"):
        print(report.console_conv(result))
    if result.get("backward"):
        print(report.console_conv(result, "backward"))
    if result.get("gemm"):
        print("\n" + report.md_gemm(result))
    if result.get("pool"):
        print("\n" + report.md_pool(result))
    if result.get("local"):
        print("\n" + report.md_local(result))
    if result.get("weighted"):
        print("\n" + report.md_weighted(result))
    if result.get("models"):
        print("\nwhole models: fastconv = the torch.nn model converted by fastconv.torch.convert; "
              "ratio > 1: fastconv is faster\n" + models.table(result["models"]))
    if "elapsed_s" in result:
        print(f"\nmeasured in {result['elapsed_s']:.0f} s")
    try:
        if args.json and not args.load:
            report.write_json(args.json, result)
            print(f"wrote {args.json}")
        if args.markdown:
            report.write_markdown(args.markdown, report.markdown(result))
            print(f"wrote {args.markdown}")
        if args.plot:
            try:
                report.plot(result, args.plot)
                print(f"wrote {args.plot}")
            except ImportError:
                print("note: --plot needs matplotlib (pip install 'fastconv[bench]'); no plot written")
            except ValueError as e:
                print(f"note: no plot written: {e}")
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
