"""auto's choice against every CPU algorithm on a grid of layers (issue 23, items 2 and 3).

    python benchmarks/auto_grid.py --out benchmarks/auto_grid_zen4.json   # measure (about 4 min, 2 cores)
    python benchmarks/auto_grid.py --load benchmarks/auto_grid_zen4.json  # auto's regret on a recorded grid
    python benchmarks/auto_grid.py --quick --out /tmp/grid.json           # a few points, a minute
    python benchmarks/auto_grid.py --update benchmarks/auto_grid_zen4.json --kernels 3 --strides 1
                                           # re-measure part of a recorded grid after a kernel changed

Grid (float32, 2 threads, one process, every algorithm of a point interleaved round-robin, medians
of fastconv.bench.timing.compare): channels C = K in 16, 64, 128, 256, 384, 512, 1024; maps 7, 13,
14, 28, 56, 112; kernels 1, 3, 5, 7 (5 and 7 up to 128 channels, and depthwise); stride 1 and 2
("same" padding k // 2); batch 1 and 8; groups 1 and depthwise (groups = C, kernels > 1). Points
above --max-gflop (default 0.6 GFLOP a call) are left out: they take minutes each and behave like
the largest kept ones. Each point times every conv2d kernel of this build that supports it.

--update re-measures the grid's points with the given kernel sizes, strides and batches (all
algorithms of each point, interleaved, as --out does), replaces them in the recorded file and
lists the update under "updates" in it; the file's other points keep their times.

Recorded grids: auto_grid_zen4.json (2-core AMD Zen 4), auto_grid_spr.json (2-core Intel
Sapphire Rapids-class Xeon, AMX and AVX512-FP16; measured with the workspaces aligned to cache
lines, e3aec73: before it, F(4x4)'s times there were bimodal, split loads or not) and
auto_grid_zen3.json (2-core AMD Zen 3, EPYC family 25 model 1: AVX2 only, the "avx2" rules).

--load re-evaluates fastconv.algorithms.choose (the rules as they are now, for the recorded
instruction set and CPU vendor, fastconv.algorithms.cpu_tuning) on the recorded times: the
share of points where auto's pick is within 10 % of the fastest (issue 23's goal: >= 95 %),
the misses, and a table per kernel size for RESULTS.md.
tests/test_auto_rules.py asserts the same share on the recorded file: the rules' table, never a
time.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time

import numpy as np

import fastconv as fc
from fastconv import algorithms
from fastconv.bench import networks, runner, timing

CHANNELS = (16, 64, 128, 256, 384, 512, 1024)
MAPS = (7, 13, 14, 28, 56, 112)
KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
BATCHES = (1, 8)
QUICK = dict(channels=(64, 384), maps=(7, 13), kernels=(1, 3), strides=(1,), batches=(1,))
TIMING = dict(warmup=1, repeats=3, min_time=0.15, max_time=3.0)
WITHIN = 1.10       # auto within 10 % of the fastest ...
GOAL_SHARE = 0.95   # ... at >= 95 % of the points


def grid(max_gflop=0.6, channels=CHANNELS, maps=MAPS, kernels=KERNELS, strides=STRIDES, batches=BATCHES):
    """The grid's layers: [networks.Layer], batch in each layer's N."""
    out = []
    for c, m, k, s, n, depthwise in itertools.product(channels, maps, kernels, strides, batches, (False, True)):
        if (depthwise and k == 1) or m < k or (k >= 5 and c > 128 and not depthwise):
            continue
        g = c if depthwise else 1
        p = (m + 2 * (k // 2) - k) // s + 1
        if 2 * n * c * (c // g) * k * k * p * p > max_gflop * 1e9:
            continue
        out.append(networks.parse_layer(f"{n},{c},{m},{m},{c},{k},{k},{s},{k // 2},{g}"))
    return out


def point_key(point):
    p = point["params"]
    return (point["batch"], p["C"], p["H"], p["W"], p["K"], p["R"], p["S"], p["stride"][0], p["groups"])


def update(path, layers, note):
    """Re-measure `layers` and put their points into the recorded grid at path in place of the
    same points (one process; the other points keep their recorded times)."""
    with open(path) as f:
        record = json.load(f)
    fresh = measure(layers, path + ".partial")
    os.remove(path + ".partial")
    new = {point_key(pt): pt for pt in fresh["points"]}
    kept = [pt for pt in record["points"] if point_key(pt) not in new]
    record["points"] = kept + list(new.values())
    record.setdefault("updates", []).append({"date": fresh["date"], "machine": fresh["machine"],
                                             "points": len(new), "what": note})
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    return record


def measure(layers, out_path, progress=True):
    """Time every supported kernel on each layer, called directly and through a plan
    ('plan:NAME', weights prepared once) for the kernels that prepare weights, all interleaved;
    write the JSON after every point."""
    kernels = runner.conv_algorithms("cpu")
    algos = kernels + [f"plan:{k}" for k in kernels if algorithms.prepares(k)]
    ident = fc._C.cpu_identity()
    record = {"machine": {"cpu": runner.cpu_model(), "isa": fc._C.get_isa(), "vendor": ident["vendor"],
                          "family": ident["family"], "model": ident["model"], "threads": fc.get_num_threads(),
                          "python": platform.python_version(), "fastconv": fc.__version__},
              "timing": TIMING, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "points": []}
    start = time.perf_counter()
    for i, layer in enumerate(layers):
        rec = runner.measure_conv(layer, layer.batch, algos, [], TIMING)
        params = {k: v for k, v in rec["params"].items() if k not in ("name", "network", "count")}
        record["points"].append({"params": params, "batch": layer.batch, "flops": rec["flops"],
                                 "times": {k: float(f"{v:.4g}") for k, v in rec["times"].items()}})
        if progress:
            best = min(rec["times"], key=rec["times"].get)
            print(f"[{i + 1}/{len(layers)} {time.perf_counter() - start:.0f} s] {layer.name}: {best} "
                  f"{rec['times'][best] * 1e3:.3f} ms", file=sys.stderr, flush=True)
        with open(out_path + ".tmp", "w") as f:
            json.dump(record, f, separators=(",", ":"))
        os.replace(out_path + ".tmp", out_path)
    return record


def point_params(point):
    """ConvParams of a recorded point."""
    p = point["params"]
    return runner.params_of(networks.parse_layer(
        f"{point['batch']},{p['C']},{p['H']},{p['W']},{p['K']},{p['R']},{p['S']},{p['stride'][0]},"
        f"{p['pad'][0][0]},{p['groups']}"), point["batch"])


def evaluate(record, prepared=False):
    """[(point, pick, best, regret)]: auto's pick by the current rules for the recorded ISA and
    CPU vendor (a record without a vendor is auto_grid_zen4.json's first version: AMD), the
    fastest kernel, and t[pick] / t[best] (inf when the pick was not timed). prepared: a plan's
    pick (choose(prepared=True)) against the kernels' times through plans ('plan:NAME', or the
    direct call for a kernel that prepares nothing)."""
    isa, vendor = record["machine"]["isa"], record["machine"].get("vendor", "amd")
    out = []
    for point in record["points"]:
        times = {k: v for k, v in point["times"].items() if not k.startswith("plan:")}
        if prepared:
            times = {k: point["times"].get(f"plan:{k}", v) for k, v in times.items()}
        if not times:
            continue
        pick = algorithms.choose(point_params(point), np.dtype(np.float32), prepared=prepared, isa=isa,
                                 vendor=vendor)
        best = min(times, key=times.get)
        out.append((point, pick, best, times[pick] / times[best] if pick in times else float("inf")))
    return out


def describe(point):
    p = point["params"]
    dw = p["groups"] > 1
    return (f"N{point['batch']} C{p['C']} {p['H']}x{p['W']} k{p['R']} s{p['stride'][0]}"
            + (" dw" if dw else ""))


def report(record, prepared=False):
    rows = evaluate(record, prepared)
    ok = [r for r in rows if r[3] <= WITHIN]
    what = "plan_conv2d's auto (weights prepared)" if prepared else "auto (conv2d calls)"
    print(f"\n{what}: {record['machine']['cpu']}, ISA {record['machine']['isa']}, "
          f"{record['machine']['threads']} threads, {record['date']}: {len(rows)} points")
    print(f"auto within {round((WITHIN - 1) * 100)} % of the fastest at {len(ok)}/{len(rows)} points "
          f"({len(ok) / max(len(rows), 1):.1%}; goal {GOAL_SHARE:.0%}); geometric mean of t[auto]/t[best] "
          f"{np.exp(np.mean([np.log(min(r[3], 100.0)) for r in rows])):.3f}")
    print("\n| kernel | points | auto within 10 % | worst t[auto]/t[best] |\n|---|---|---|---|")
    for k in sorted({r[0]["params"]["R"] for r in rows}):
        sub = [r for r in rows if r[0]["params"]["R"] == k]
        good = sum(r[3] <= WITHIN for r in sub)
        worst = max(sub, key=lambda r: r[3])
        print(f"| {k}x{k} | {len(sub)} | {good} ({good / len(sub):.0%}) | {worst[3]:.2f} ({describe(worst[0])}: "
              f"{worst[1]} vs {worst[2]}) |")
    misses = sorted((r for r in rows if r[3] > WITHIN), key=lambda r: -r[3])
    if misses:
        print(f"\nmisses ({len(misses)}): point, auto's pick, the fastest, t[pick]/t[best]")
        for point, pick, best, regret in misses:
            print(f"  {describe(point):<28} {pick:<11} {best:<11} {regret:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="measure and write the grid's times here (JSON)")
    ap.add_argument("--load", help="evaluate the current rules on a recorded grid")
    ap.add_argument("--quick", action="store_true", help="a few points only")
    ap.add_argument("--update", help="re-measure part of a recorded grid (--kernels, --strides, --batches)")
    ap.add_argument("--kernels", type=int, nargs="+", default=KERNELS)
    ap.add_argument("--strides", type=int, nargs="+", default=STRIDES)
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    ap.add_argument("--note", default="", help="why --update re-measured (kept in the file)")
    ap.add_argument("--max-gflop", type=float, default=0.6)
    args = ap.parse_args(argv)
    if args.update:
        layers = grid(args.max_gflop, kernels=tuple(args.kernels), strides=tuple(args.strides),
                      batches=tuple(args.batches))
        print(f"{len(layers)} points to re-measure; {timing.__name__} options {TIMING}", file=sys.stderr)
        record = update(args.update, layers, f"kernels {args.kernels}, strides {args.strides}, batches "
                        f"{args.batches}: {args.note}".rstrip(": "))
        report(record)
        report(record, prepared=True)
        return 0
    if args.load:
        with open(args.load) as f:
            record = json.load(f)
        report(record)
        report(record, prepared=True)
        return 0
    if not args.out:
        ap.error("give --out PATH to measure or --load PATH to evaluate")
    layers = grid(args.max_gflop, **(QUICK if args.quick else {}))
    print(f"{len(layers)} points; {timing.__name__} options {TIMING}", file=sys.stderr)
    record = measure(layers, args.out)
    report(record)
    report(record, prepared=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
