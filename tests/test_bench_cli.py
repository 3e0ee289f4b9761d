# test_bench_cli.py: `python -m fastconv bench`: every option parses, bad values exit with 2
# and a clear message, a tiny real run prints the table and summary, --json round-trips,
# --plot writes a PNG, --markdown keeps notes outside its markers, --peak gives plausible
# numbers, missing peers are skipped with a note, --device cuda without a GPU skips cleanly.
import argparse
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from fastconv.__main__ import main
from fastconv.bench import cli, formulations, networks, peers, report, runner

TINY = "1,8,12,12,8,3,3,1,1"
FAST = ["--repeats", "1", "--warmup", "0", "--min-time", "0.001", "--max-time", "0.5", "--no-progress",
        "--peak-gflops", "100"]


def parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def has_torch():
    return peers._torch() is not None


def test_every_option_parses():
    a = parse("--device", "cpu", "--network", "resnet50", "vgg16", "mobilenet", "lenet5", "all", TINY,
              "--batch", "1", "8", "--algorithms", "direct", "im2col", "auto",
              "--peers", "torch", "torch-prepacked", "nnpack", "cudnn", "--threads", "2", "--repeats", "3",
              "--warmup", "0", "--min-time", "0.1", "--max-time", "2", "--quick", "--sections", "conv", "gemm", "pool",
              "backward", "local", "weighted",
              "--peak", "--peak-gflops", "233", "--json", "r.json", "--plot", "r.png", "--markdown", "R.md",
              "--no-progress")
    assert a.device == "cpu" and a.batch == [1, 8] and a.threads == 2 and a.quick and a.peak
    assert a.network[:5] == ["resnet50", "vgg16", "mobilenet", "lenet5", "all"]
    assert isinstance(a.network[5], networks.Layer) and a.network[5].batch == 1
    assert a.peers == ["torch", "torch-prepacked", "nnpack", "cudnn"]
    assert a.sections == ["conv", "gemm", "pool", "backward", "local", "weighted"]
    assert (a.json, a.plot, a.markdown, a.peak_gflops, a.min_time) == ("r.json", "r.png", "R.md", 233.0, 0.1)
    assert parse("--device", "cuda", "--full").full
    assert parse("--peers").peers == []


def test_plan_modes():
    work, opts, quick = cli.plan(parse())
    assert quick and opts["min_time"] == 2.0
    assert {l.network for l, _ in work} == {"resnet50", "vgg16", "mobilenet", "lenet5"}
    assert len(work) == sum(len(v) for v in networks.QUICK.values())
    work, opts, quick = cli.plan(parse("--network", "resnet50", "--batch", "1", "8"))
    assert not quick and len(work) == 40 and opts["repeats"] == 11
    work, _, _ = cli.plan(parse("--network", "4,3,16,16,8,3,3,1,1"))
    assert [(l.C, b) for l, b in work] == [(3, 4)]
    work, _, _ = cli.plan(parse("--network", "4,3,16,16,8,3,3,1,1", "--batch", "2"))
    assert [b for _, b in work] == [2]


@pytest.mark.parametrize("argv,message", [
    (["--network", "resnet51"], "unknown network 'resnet51'"),
    (["--network", "1,2,3"], "N,C,H,W,K,R,S,stride,pad"),
    (["--network", "1,3,4,4,8,9,9,1,0"], "larger than the padded input"),
    (["--batch", "0"], "positive integer"),
    (["--threads", "x"], "positive integer"),
    (["--algorithms", "magic"], "unknown algorithm 'magic'"),
    (["--algorithms", "plan:magic"], "unknown algorithm 'plan:magic'"),
    (["--peers", "tensorflow"], "unknown peer 'tensorflow'"),
    (["--device", "tpu"], "invalid choice"),
    (["--plot", "speed.jpg"], "must end in .png"),
    (["--min-time", "-1"], "positive number"),
    (["--quick", "--full"], "not allowed with"),
    (["--sections", "fft"], "invalid choice"),
])
def test_bad_values_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_tiny_run_json_plot_markdown(tmp_path, capsys):
    js, png, md = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "R.md"
    md.write_text(f"# results\n\nhand-written note above\n\n{report.BEGIN}\nold table\n{report.END}\n\nnote below\n")
    assert main(["bench", "--network", TINY, *FAST, "--json", str(js), "--plot", str(png), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "custom, batch 1" in out and "direct" in out and "im2col" in out and "winner" in out
    assert "summary (geometric mean" in out
    line = [l for l in out.splitlines() if l.strip().startswith("custom batch 1")]
    assert line and "fastconv best" in line[0]
    # --json: every raw sample and the machine
    data = json.loads(js.read_text())
    assert data["schema"] == report.JSON_SCHEMA
    m = data["machine"]
    assert m["cpu"] and m["isa"] in ("scalar", "avx2", "avx512") and m["threads"] >= 1 and "gpu" in m["peers"]
    assert main(["bench", "--load", str(tmp_path / "missing.json")]) == 1
    (rec,) = data["conv"]
    assert rec["params"]["C"] == 8 and rec["batch"] == 1 and rec["flops"] == 2 * 8 * 12 * 12 * 8 * 9
    for name in ("direct", "im2col", "auto"):
        assert len(rec["samples"][name]) >= 1 and all(s > 0 for s in rec["samples"][name])
        assert rec["times"][name] > 0
    if has_torch():
        assert "torch" in rec["times"] and rec["baseline"] == "torch" and not rec["wrong"]
    # round trip: loading it back re-renders the same summary
    back = report.read_json(js)
    assert report.summary_lines(back) == [l for l in out.splitlines() if l.startswith(("summary", "  custom"))]
    assert main(["bench", "--load", str(js), "--no-progress"]) == 0
    assert line[0] in capsys.readouterr().out
    # --plot: a PNG
    head = png.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    # --markdown: the block replaced, the notes kept
    text = md.read_text()
    assert "hand-written note above" in text and "note below" in text and "old table" not in text
    assert text.index(report.BEGIN) < text.index("### custom, batch 1") < text.index(report.END)
    assert "**Machine:**" in text and "**Date:**" in text


def test_plans_are_contenders(tmp_path, capsys):
    # 'plan' (auto's plan_conv2d, weights prepared once) and 'plan:ALGO' are timed beside
    # the plain calls, checked against torch, and never counted as the per-call "best".
    js, md = tmp_path / "r.json", tmp_path / "R.md"
    assert main(["bench", "--network", TINY, *FAST, "--algorithms", "im2col", "plan", "plan:winograd:2",
                 "--json", str(js), "--markdown", str(md)]) == 0
    (rec,) = json.loads(js.read_text())["conv"]
    assert {"plan", "plan:winograd:2", "im2col"} <= set(rec["times"]) and not rec["wrong"]
    assert rec["best"] == "im2col"
    assert "Σ plan vs torch" in md.read_text()
    assert "plan" in capsys.readouterr().out


def test_gemm_and_pool_sections(capsys):
    assert main(["bench", "--sections", "gemm", "pool", *FAST]) == 0
    out = capsys.readouterr().out
    assert "## GEMM" in out and "1024×1024×1024" in out and "## Pooling" in out and "max 3×3 s2 p1" in out
    assert "max 3×3 s2 p1 backward" in out and "global avg backward" in out and "✗" not in out


def test_backward_section(tmp_path, capsys):
    # conv2d_backward of each algorithm with both backward kernels (and auto) against torch's
    # autograd on the same arrays; forward-only algorithms get one note, not a column.
    js = tmp_path / "b.json"
    assert main(["bench", "--network", TINY, "2,6,9,11,6,3,2,2,1,3", *FAST, "--sections", "backward",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "custom, batch 1 backward (grad_x + grad_w)" in out and "summary of backward" in out
    assert "have no backward kernels (forward only)" in out and "winograd:4" not in out.split("backward (grad_x")[1]
    data = json.loads(js.read_text())
    assert not data["conv"] and len(data["backward"]) == 2
    for rec in data["backward"]:
        assert {"direct", "im2col", "auto"} <= set(rec["times"]) and rec["auto_picks"] in ("direct", "im2col")
        assert rec["flops"] == 2 * networks.parse_layer(rec["layer"]).flops(rec["batch"])
        if has_torch():
            assert rec["baseline"] == "torch" and "torch" in rec["times"] and not rec["wrong"]
    assert main(["bench", "--load", str(js), "--no-progress"]) == 0
    assert "summary of backward" in capsys.readouterr().out


# ---- --sections local weighted: issue 21's layers against the torch code a user writes --------------

@pytest.fixture
def small_new_ops(monkeypatch):
    """The local and weighted sections on small shapes (every case kind of the real lists: local at
    batch 1 and 2, tiled with unequal tiles; weighted Gaussian strided, count_include_pad=False, a
    given non-separable window, normalize=False), so that a run takes a second."""
    monkeypatch.setattr(formulations, "LOCAL_SHAPES", [
        ("local 1x3x7x7 k4", (1, 3, 7, 7), 4, 3, None),
        ("local 2x4x6x8 k3", (2, 4, 6, 8), 3, 3, None),
        ("tiled 2x4x8x8 k5", (2, 4, 8, 8), 5, 3, (2, 3))])
    monkeypatch.setattr(formulations, "WEIGHTED_LAYERS", [
        ("gauss3x3s2p1", (1, 4, 11, 11), 3, 2, 1, True, {"sigma": 1.0}),
        ("gauss3x3s1p1-nocip", (1, 3, 9, 9), 3, 1, 1, False, {"sigma": 1.0}),
        ("dense3x3s1p1", (1, 3, 8, 8), 3, 1, 1, True,
         {"weight": np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 3.0]])}),
        ("gauss5x5s1p2-sum", (1, 3, 10, 10), 5, 1, 2, True, {"sigma": 1.0, "normalize": False})])


def test_local_and_weighted_sections(small_new_ops, tmp_path, capsys):
    # end to end: timed, checked against the torch formulations, console + --json + --markdown,
    # and --load renders the same tables; no --peak-gflops, so the copy bandwidth (the floor) is measured
    js, md = tmp_path / "l.json", tmp_path / "L.md"
    assert main(["bench", "--sections", "local", "weighted", *FAST[:-2], "--json", str(js),
                 "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "## Locally connected and tiled convolution" in out and "## Distance-weighted average pooling" in out
    assert "tiled 2x4x8x8 k5" in out and "gauss5x5s1p2-sum backward" in out and " ✗ |" not in out
    data = json.loads(js.read_text())
    assert data["options"]["sections"] == ["local", "weighted"] and not data["conv"] and not data["pool"]
    loc = data["local"]
    assert [(r["op"], r["pass"]) for r in loc] == [(name, p) for name, *_ in formulations.LOCAL_SHAPES
                                                  for p in ("forward", "backward")]
    copy = report.peak_of(data, "copy_gbs")
    assert copy and copy > 0
    for r in loc:
        assert len(r["samples"]["fastconv"]) == r["rounds"] >= 1 and all(t > 0 for t in r["times"].values())
        assert r["kind"] == ("tiled" if r["op"].startswith("tiled") else "local")
        weight = np.prod(r["weight"]) * 4
        assert r["weight_bytes"] == weight
        assert r["floor_bytes"] == (weight if r["kind"] == "local" and r["pass"] == "forward" else None)
        if has_torch():
            assert set(r["times"]) == {"fastconv", "einsum", "bmm"} and not r["wrong"]
            assert r["checked_against"] == "einsum" and r["peer"] in ("einsum", "bmm")
            assert r["ratio"] == pytest.approx(r["times"][r["peer"]] / r["times"]["fastconv"])
            assert r["times"][r["peer"]] == min(r["times"]["einsum"], r["times"]["bmm"])
    (fwd,) = [r for r in loc if r["op"] == "local 2x4x6x8 k3" and r["pass"] == "forward"]
    assert fwd["flops"] == 2 * 2 * 3 * 4 * 6 * 4 * 9 and fwd["weight"] == [4, 6, 3, 4, 3, 3]
    floor_cell = report.fmt_ms(fwd["floor_bytes"] / (copy * 1e9))
    weight_mb = 4 * 6 * 3 * 4 * 9 * 4 / 1e6
    assert f"| local 2x4x6x8 k3 | forward | 4×6×3×4×3×3 | {weight_mb:.2f} | {floor_cell} |" in out
    wp = data["weighted"]
    assert [p["op"] for p in wp[:2]] == ["gauss3x3s2p1", "gauss3x3s2p1 backward"] and len(wp) == 8
    assert wp[0]["output"] == [1, 4, 6, 6] and wp[0]["bytes"] == 4 * (4 * 11 * 11 + 4 * 6 * 6)
    assert wp[2]["window"] == "gauss σ=1 3×3 s1 p1, count_include_pad=False" and wp[4]["window"].startswith("given")
    for p in wp:
        assert not p["wrong"] and p["times"]["fastconv"] > 0
        if has_torch():
            assert p["checked_against"] == "torch" and p["ratio"] == pytest.approx(
                p["times"]["torch"] / p["times"]["fastconv"])
    # --markdown holds both tables; --load renders them again, measuring nothing
    text = md.read_text()
    assert "torch best / fastconv" in text and "| window |" in text and "floor ms" in text
    assert main(["bench", "--load", str(js), "--no-progress"]) == 0
    again = capsys.readouterr().out
    tables = [l for l in out.splitlines() if l.startswith("|")]
    assert len(tables) == 2 * 2 + 6 + 2 + 8 + 1 and tables == [l for l in again.splitlines() if l.startswith("|")]


def test_local_and_weighted_flag_wrong_results(small_new_ops, monkeypatch):
    # a wrong fastconv result is marked wrong (✗), its time is not passed off as a result
    pytest.importorskip("torch")
    import fastconv
    opts = dict(repeats=1, warmup=0, min_time=0.0, max_time=0.1)
    right_fwd, right_bwd = formulations.local_fastconv_fn, formulations.local_fastconv_backward_fn

    def scaled_forward(*a):
        f = right_fwd(*a)
        return lambda: f() * 1.01

    def zero_grad_w(*a):
        f = right_bwd(*a)
        return lambda: (f()[0], np.zeros_like(f()[1]))
    monkeypatch.setattr(formulations, "local_fastconv_fn", scaled_forward)
    monkeypatch.setattr(formulations, "local_fastconv_backward_fn", zero_grad_w)
    loc = runner.measure_local(opts)
    assert all(r["wrong"] == ["fastconv"] and r["peer"] for r in loc)
    right_pool, right_back = fastconv.weighted_avg_pool2d, fastconv.weighted_avg_pool2d_backward
    monkeypatch.setattr(fastconv, "weighted_avg_pool2d", lambda *a, **k: right_pool(*a, **k)[..., ::-1, :])
    monkeypatch.setattr(fastconv, "weighted_avg_pool2d_backward", lambda *a, **k: 2 * right_back(*a, **k))
    wp = runner.measure_weighted(opts)
    assert all(p["wrong"] == ["fastconv"] for p in wp)
    result = {"machine": {"device": "cpu", **{k: "x" for k in ("cpu", "isa", "isa_detected", "fastconv", "numpy",
                                                                 "python")},
                          "logical_cpus": 2, "threads": 2, "peers": {}},
              "options": {"timing": dict(opts, max_time=0.1)}, "date": "now", "peak": {}, "local": loc,
              "weighted": wp}
    text = report.markdown(result)
    rows = [l for l in text.splitlines() if l.startswith("| local ") or l.startswith("| gauss")]
    assert rows and all(" ✗ |" in l for l in rows)


def test_local_and_weighted_without_torch(small_new_ops, monkeypatch, tmp_path, capsys):
    # fastconv alone is timed, the torch columns say unavailable; local is still checked (NumPy reference)
    monkeypatch.setattr(peers, "_torch", lambda: None)
    js = tmp_path / "n.json"
    assert main(["bench", "--sections", "local", "weighted", *FAST, "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "torch is not installed: fastconv alone is timed" in out and "unavailable" in out and " ✗ |" not in out
    data = json.loads(js.read_text())
    for r in data["local"]:
        assert set(r["times"]) == {"fastconv"} and r["checked_against"] == "reference" and not r["wrong"]
        assert r["peer"] is None and r["ratio"] is None
    for p in data["weighted"]:
        assert set(p["times"]) == {"fastconv"} and p["checked_against"] is None and p["ratio"] is None
    assert main(["bench", "--load", str(js)]) == 0
    assert "results unchecked, torch unavailable" in capsys.readouterr().out


def test_json_is_kept_when_a_run_is_cut_short(tmp_path, monkeypatch, capsys):
    js = tmp_path / "cut.json"
    measure = runner.measure_conv
    calls = []

    def cut(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt   # as a timeout's signal would end the run
        return measure(*a, **k)
    monkeypatch.setattr(runner, "measure_conv", cut)
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "--network", TINY, "2,6,9,11,6,3,3,2,1,3", *FAST, "--algorithms", "direct", "--json", str(js)])
    data = json.loads(js.read_text())
    assert data["partial"] and len(data["conv"]) == 1 and data["conv"][0]["layer"] == TINY
    capsys.readouterr()
    assert main(["bench", "--load", str(js)]) == 0
    assert "partial: this run was cut short" in capsys.readouterr().out


def test_algorithm_names_of_either_device_parse():
    # --algorithms is checked before the device is known: any kernel of the CPU or CUDA table
    for name in runner.conv_algorithms("cpu") + runner.conv_algorithms("cuda") + ["auto", "plan"]:
        assert parse("--algorithms", name).algorithms == [name]
    assert runner.default_algorithms("cuda") == runner.conv_algorithms("cuda") + ["auto"]
    assert runner.default_algorithms("cpu")[-2:] == ["auto", "plan"]
    layer = networks.parse_layer(TINY)
    assert "named 'winograd:4'" in runner.why_not("winograd:4", runner.params_of(layer, 1), "cpu",
                                                   "conv2d_backward_data")
    if not runner.conv_algorithms("cuda"):   # a build without CUDA kernels says so
        assert "no CUDA kernels" in runner.cuda_kernels_missing()
        assert "no CUDA kernels" in runner.why_not("direct", runner.params_of(layer, 1), "cuda")


def test_peak_is_plausible(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    assert main(["bench", "--peak", "--no-progress"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"peak: ([\d.]+) GFLOP/s fp32 FMA, ([\d.]+) GB/s memory copy", out)
    assert m, out
    gflops, gbs = float(m.group(1)), float(m.group(2))
    assert 1 < gflops < 1e5 and 0.5 < gbs < 1e4
    r = runner.measure_peak(0.02, 1)
    assert r["gflops"] > 0 and r["copy_gbs"] > 0 and r["threads"] >= 1 and math.isfinite(r["gflops"])
    # the cache keeps the best value for this CPU/ISA/threads: the first (only) run's, which the CLI
    # printed to one decimal (a relative tolerance failed whenever a loaded machine measured < 50 GFLOP/s)
    printed = pytest.approx(gflops, abs=0.05 + 1e-9)
    cache = json.loads((tmp_path / "peak.json").read_text())
    (entry,) = cache.values()
    assert entry["gflops"] == printed
    low = dict(r, gflops=1.0, copy_gbs=0.5)
    merged = runner.peak_with_cache(low)
    assert merged["gflops"] == printed and merged["this_run"]["gflops"] == 1.0
    assert "best measured" in merged["source"]


def test_missing_peers_are_skipped_with_a_note(monkeypatch, capsys):
    assert main(["bench", "--network", TINY, *FAST, "--peers", "cudnn", "nnpack"]) == 0
    out = capsys.readouterr().out
    assert "cudnn skipped: cuDNN runs on the GPU only" in out
    monkeypatch.setattr(peers, "_torch", lambda: None)   # as if torch were not installed
    assert main(["bench", "--network", TINY, *FAST]) == 0
    out = capsys.readouterr().out
    assert "torch skipped: torch is not installed" in out and "nnpack skipped" in out
    (line,) = [l for l in out.splitlines() if "no torch baseline timed" in l]
    assert "direct" in out and "fastconv best" in line and "GFLOP/s" in line


def test_nnpack_unsupported_layer_is_a_note():
    layer = networks.parse_layer("1,8,12,12,8,3,3,1,1,8")   # depthwise
    fns, skipped, _, _ = runner.contenders(layer, 1, ["direct"], ["nnpack"])
    assert "direct" in fns and "nnpack" in skipped and "nnpack" not in fns


@pytest.mark.skipif(cli._cuda_unavailable() == "", reason="a CUDA device is present")
@pytest.mark.parametrize("extra", [[], ["--sections", "conv", "gemm", "pool", "backward", "local", "weighted"],
                                   ["--peak"],
                                   ["--sections", "gemm", "--json", "never.json"]])
def test_cuda_without_gpu_skips_cleanly(extra, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)   # restored after the test
    assert main(["bench", "--device", "cuda", "--network", TINY, *FAST, *extra]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "never.json").exists()
    # TF32 is switched off for cuBLAS/cuDNN before anything could start CUDA
    import os
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"


@pytest.mark.slow
@pytest.mark.skipif(cli._cuda_unavailable() == "", reason="a CUDA device is present")
def test_cuda_without_gpu_as_a_process():
    r = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--device", "cuda", "--sections", "gemm", "pool"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "skipped: no CUDA device" in r.stdout, r.stdout + r.stderr


@pytest.mark.cuda   # on a GPU machine: device_run.sh's `pytest -m cuda` runs it
@pytest.mark.skipif(cli._cuda_unavailable() != "", reason="no CUDA device")
def test_cuda_times_fastconv_and_cudnn(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    js = tmp_path / "c.json"
    assert main(["bench", "--device", "cuda", "--network", TINY, *FAST, "--sections", "conv", "backward", "gemm",
                 "pool", "local", "weighted", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "cudnn" in out and "×cudnn" in out and "GPU peak:" in out and "cuBLAS" in out
    data = json.loads(js.read_text())
    assert data["machine"]["gpu"]["name"] and data["machine"]["cuda_env"]["NVIDIA_TF32_OVERRIDE"] == "0"
    assert data["peak"]["gflops"] > 1000 and data["peak"]["copy_gbs"] > 100
    for key in ("conv", "backward"):
        (rec,) = data[key]
        assert rec["baseline"] == "cudnn" and not rec["wrong"], rec["wrong"]
        assert {"auto", "cudnn"} | set(runner.conv_algorithms("cuda")) <= set(rec["times"]) and rec["auto_picks"]
    (g,) = data["gemm"]
    assert not g["wrong"] and g["rel_err"]["fastconv"] < 1e-5 and g["rel_err"]["cublas"] < 1e-5   # TF32 off
    assert len(data["pool"]) == 8 and not any(p["wrong"] for p in data["pool"])
    assert "## Locally connected and tiled convolution on the GPU" in out
    assert len(data["local"]) == 2 * len(formulations.LOCAL_SHAPES)
    assert all(r["device"] == "cuda" and r["checked_against"] == "einsum" and not r["wrong"]
               and r["input"][0] == runner.CUDA_POOL_BATCH for r in data["local"])
    assert len(data["weighted"]) == 2 * len(formulations.WEIGHTED_LAYERS)
    assert all(p["device"] == "cuda" and p["checked_against"] == "torch" and not p["wrong"] for p in data["weighted"])


def test_rounds_vary_every_contenders_predecessor():
    """compare()'s rounds: each a permutation, and over a dozen rounds every contender follows
    several others (a rotation would keep each one's predecessor: the column after fft:16 would
    always run on caches it emptied)."""
    names = ["direct", "im2col", "winograd:2", "fft:16", "auto", "torch"]
    sequence = []
    for r in range(12):
        order = runner.timing.round_order(names, r)
        assert sorted(order) == sorted(names)
        assert order == runner.timing.round_order(names, r)  # the same every run
        sequence += order
    predecessors = {name: set() for name in names}
    for prev, cur in zip(sequence, sequence[1:]):
        predecessors[cur].add(prev)
    assert all(len(p) >= 3 for p in predecessors.values()), predecessors
    calls = []
    runner.timing.compare({n: (lambda n=n: calls.append(n)) for n in names}, warmup=1, repeats=4, min_time=0)
    assert calls[len(names):len(names) * 2] == runner.timing.round_order(names, 0)


# ---- --device cuda's code path, on a stand-in device --------------------------------------------

class _FakeDevice:
    """What the CUDA path of the benchmark needs from torch and fastconv's core, served by the CPU:
    torch CPU tensors stand in for CUDA tensors, fastconv's CPU kernels for its CUDA kernels, CPU
    timers for CUDA events and torch.matmul for _C.cuda_gemm. Every line of the CUDA branches of
    cli/runner/report/peers runs; what it cannot check is the GPU itself."""

    GPU = {"index": 0, "name": "Stand-in GPU", "capability": (9, 0), "memory_bytes": 8e10,
           "multiprocessors": 132, "clock_ghz": 1.98, "fp32_peak_tflops": 66.9, "memory_bandwidth_gbs": 3350.0}

    def __init__(self, monkeypatch):
        torch = pytest.importorskip("torch")
        self.calls = []
        compare = runner.timing.compare
        cpu_algorithms = runner.conv_algorithms, runner.backward_algorithms
        monkeypatch.setattr(cli, "_cuda_unavailable", lambda: "")
        monkeypatch.setattr(runner.timing, "cuda_setup", lambda: None)
        monkeypatch.setattr(runner.timing, "compare", lambda fns, cuda=False, **kw: compare(fns, **kw))
        monkeypatch.setattr(runner, "_torch_cuda", lambda: (torch, torch.device("cpu")))
        monkeypatch.setattr(runner, "_on_cuda", lambda a: isinstance(a, torch.Tensor))
        monkeypatch.setattr(runner, "cuda_kernels_missing", lambda: "")
        monkeypatch.setattr(runner, "cuda_device_info", lambda index=None: dict(self.GPU))
        monkeypatch.setattr(runner, "conv_algorithms", lambda device="cpu": ["direct", "im2col"] if device == "cuda"
                            else cpu_algorithms[0]("cpu"))
        monkeypatch.setattr(runner, "backward_algorithms", lambda device="cpu": cpu_algorithms[1]("cpu"))
        monkeypatch.setattr(runner, "supports", lambda k, params, device, op="conv2d_forward":
                            runner._C.supports(k, params, "float32", op, "cpu"))
        monkeypatch.setattr(runner, "current_stream", lambda dev: 1234)
        monkeypatch.setattr(runner, "cuda_descriptor", lambda t: t)
        monkeypatch.setattr(runner, "CUDA_GEMM_SIZES", ((67, 45, 33),))
        monkeypatch.setattr(runner, "CUDA_POOL_BATCH", 2)
        monkeypatch.setattr(runner, "CUDA_COPY_BYTES", 1 << 20)
        monkeypatch.setattr(runner.peers, "why_unavailable", lambda name, device="cpu":
                            "" if name == "cudnn" else "a CPU peer")
        monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)

        def cuda_gemm(ta, tb, alpha, a, b, beta, c, index, stream):
            self.calls.append((ta, tb, alpha, beta, tuple(c.shape), index, stream))
            torch.matmul(a, b, out=c)
        monkeypatch.setattr(runner._C, "cuda_gemm", cuda_gemm, raising=False)


def test_cuda_path_on_a_stand_in_device(monkeypatch, capsys, tmp_path, small_new_ops):
    fake = _FakeDevice(monkeypatch)
    local_arrays = []   # what fastconv's local ops are given: the device's tensors, not NumPy arrays
    right_fwd, right_bwd = formulations.local_fastconv_fn, formulations.local_fastconv_backward_fn

    def recorded(right):
        def make(*a, **k):
            local_arrays.extend(type(v) for v in a if v is not None and not isinstance(v, tuple))
            return right(*a, **k)
        return make
    monkeypatch.setattr(formulations, "local_fastconv_fn", recorded(right_fwd))
    monkeypatch.setattr(formulations, "local_fastconv_backward_fn", recorded(right_bwd))
    js, md = tmp_path / "c.json", tmp_path / "C.md"
    assert main(["bench", "--device", "cuda", "--network", TINY, "2,6,9,11,6,3,3,2,1,3", *FAST[:-2],
                 "--sections", "conv", "backward", "gemm", "pool", "local", "weighted", "--json", str(js),
                 "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "GPU peak: 66900 GFLOP/s fp32" in out and "Stand-in GPU" in out
    # local and weighted run on the device's tensors, at the GPU's batch
    assert "## Locally connected and tiled convolution on the GPU" in out and "skipped on cuda" not in out
    assert "## Distance-weighted average pooling on the GPU" in out
    assert "Ratios: cudnn_ms / ms" in out and "×cudnn" in out and "summary of backward" in out
    assert "no CUDA kernels yet" not in out
    data = json.loads(js.read_text())
    assert data["machine"]["gpu"]["name"] == "Stand-in GPU" and data["peak"]["copy_gbs"] > 0
    assert data["machine"]["cuda_env"]["NVIDIA_TF32_OVERRIDE"] == "0"
    assert data["options"]["algorithms"] == ["direct", "im2col", "auto"]
    for key in ("conv", "backward"):
        assert len(data[key]) == 2
        for rec in data[key]:
            assert rec["device"] == "cuda" and rec["baseline"] == "cudnn" and rec["checked_against"] == "cudnn"
            assert {"direct", "im2col", "auto", "cudnn"} <= set(rec["times"]) and not rec["wrong"]
            assert rec["auto_picks"] in ("direct", "im2col")
    assert data["backward"][0]["flops"] == 2 * data["conv"][0]["flops"]
    (g,) = data["gemm"]
    assert (g["M"], g["N"], g["K"], g["peer"]) == (67, 45, 33, "cublas") and not g["wrong"]
    assert g["rel_err"]["fastconv"] < 1e-5 and set(g["times"]) == {"fastconv", "cublas"}
    assert fake.calls[0] == (False, False, 1.0, 0.0, (67, 45), None, 1234)
    ops = [p["op"] for p in data["pool"]]
    assert len(ops) == 8 and ops[1] == "max 3×3 s2 p1 backward" and data["pool"][0]["input"][0] == 2
    assert all(not p["wrong"] and p["ratio"] > 0 for p in data["pool"])
    assert data["options"]["sections"] == ["conv", "backward", "gemm", "pool", "local", "weighted"]
    loc = data["local"]
    assert [(r["op"], r["pass"]) for r in loc] == [(name, p) for name in ("local 2x3x7x7 k4", "local 2x4x6x8 k3",
                                                                          "tiled 2x4x8x8 k5")
                                                   for p in ("forward", "backward")]
    import torch
    assert local_arrays and set(local_arrays) == {torch.Tensor}
    for r in loc:
        assert r["device"] == "cuda" and r["input"][0] == 2 and r["checked_against"] == "einsum" and not r["wrong"]
        assert set(r["times"]) == {"fastconv", "einsum", "bmm"} and r["ratio"] > 0
        assert r["floor_bytes"] == (r["weight_bytes"] if r["kind"] == "local" and r["pass"] == "forward" else None)
    (fwd,) = [r for r in loc if r["op"] == "local 2x3x7x7 k4" and r["pass"] == "forward"]
    assert fwd["weight"] == [5, 5, 4, 3, 3, 3] and fwd["flops"] == 2 * 2 * 4 * 25 * 27
    floor_cell = report.fmt_ms(fwd["floor_bytes"] / (data["peak"]["copy_gbs"] * 1e9))
    assert f"| local 2x3x7x7 k4 | forward | 5×5×4×3×3×3 | {fwd['weight_bytes'] / 1e6:.2f} | {floor_cell} |" in out
    assert len(data["weighted"]) == 8 and data["weighted"][0]["input"][0] == 2
    assert all(p["device"] == "cuda" and p["checked_against"] == "torch" and not p["wrong"] and p["ratio"] > 0
               for p in data["weighted"])
    text = md.read_text()
    assert "fastconv's CUDA kernels vs cuDNN" in text and "fastconv._C.cuda_gemm vs torch.matmul (cuBLAS" in text
    assert "% of copy" in text and "Convolution backward" in text
    assert "unfold + bmm (float32, CUDA tensors)" in text and "weight bytes at the device-to-device copy" in text
    # --peak alone prints the card's ceilings and measures nothing else
    assert main(["bench", "--device", "cuda", "--peak", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "peak: 66900 GFLOP/s fp32 (nominal)" in out and "device-to-device" in out and "custom" not in out
    # a wrong kernel shows as wrong, not as fast
    monkeypatch.setattr(runner.functional, "conv2d_backward", lambda *a, **k: (None, None))
    fns_wrong = runner.measure_backward(networks.parse_layer(TINY), 1, ["direct"], ["cudnn"],
                                        dict(repeats=1, warmup=0, min_time=0.0, max_time=0.1), "cuda")
    assert fns_wrong["wrong"] == ["direct"]

    def scaled_forward(*a):
        f = right_fwd(*a)
        return lambda: f() * 1.01
    monkeypatch.setattr(formulations, "local_fastconv_fn", scaled_forward)
    loc_wrong = runner.measure_local(dict(repeats=1, warmup=0, min_time=0.0, max_time=0.1), device="cuda")
    assert [r["wrong"] for r in loc_wrong] == [["fastconv"], []] * 3


@pytest.mark.slow
def test_help_as_a_module():
    r = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--network" in r.stdout and "--peak" in r.stdout


# ---- --model: whole networks, fastconv.torch.convert vs torch eager -------------------------------

def test_model_option_parses_and_plans_cases():
    a = parse("--model", "resnet18", "resnet50", "lenet5", "--image-size", "64")
    assert a.model == ["resnet18", "resnet50", "lenet5"] and a.image_size == 64 and not a.keep_batchnorm
    assert parse("--model", "resnet50", "--keep-batchnorm").keep_batchnorm
    from fastconv.bench import models
    assert models.cases(["lenet5", "resnet18", "resnet50"]) == [
        ("lenet5", "forward", 1), ("lenet5", "forward", 64), ("resnet18", "forward", 1), ("resnet18", "train", 8),
        ("resnet50", "forward", 1)]
    assert models.cases(["resnet18"], [2]) == [("resnet18", "forward", 2), ("resnet18", "train", 2)]
    for bad in (["--model", "vgg"], ["--model", "lenet5", "--image-size", "0"]):
        with pytest.raises(SystemExit):
            parse(*bad)


@pytest.mark.slow  # times whole models
def test_model_run_prints_the_table_and_json(tmp_path, capsys):
    pytest.importorskip("torch")
    out_json = tmp_path / "m.json"
    assert main(["bench", "--model", "lenet5", "resnet18", "--image-size", "32", "--batch", "2", *FAST,
                 "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.startswith(("lenet5 ", "resnet18 "))]
    assert [(r[0], r[1], r[2]) for r in rows] == [("lenet5", "forward", "2"), ("resnet18", "forward", "2"),
                                                  ("resnet18", "train", "2")]
    result = json.loads(out_json.read_text())
    assert [(m["model"], m["mode"], m["batch"], m["fold_batchnorm"]) for m in result["models"]] == [
        ("lenet5", "forward", 2, True), ("resnet18", "forward", 2, True), ("resnet18", "train", 2, True)]
    # The table prints the record's torch ms, fastconv ms and ratio = torch / fastconv, rounded
    # (compared with the record: sub-millisecond times rounded to 0.01 ms are too coarse to
    # recompute the ratio from).
    for r, m in zip(rows, result["models"]):
        assert m["torch_ms"] > 0 and m["fastconv_ms"] > 0
        assert m["ratio"] == pytest.approx(m["torch_ms"] / m["fastconv_ms"], rel=1e-12)
        assert (r[4], r[5], r[6]) == (f"{m['torch_ms']:.2f}", f"{m['fastconv_ms']:.2f}", f"{m['ratio']:.2f}x")
    assert "resnet50" not in text and "conv" not in result.get("options", {}).get("sections", [])
    assert all(len(m["samples"]["torch"]) == m["rounds"] >= 1 for m in result["models"])
    assert main(["bench", "--load", str(out_json)]) == 0
    assert "resnet18  train" in capsys.readouterr().out


def test_model_runs_on_cpu_only(capsys):
    assert main(["bench", "--model", "lenet5", "--device", "cuda", *FAST]) == 2
    assert "CPU only" in capsys.readouterr().err
