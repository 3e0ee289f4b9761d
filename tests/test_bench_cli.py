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

import pytest

from fastconv.__main__ import main
from fastconv.bench import cli, networks, peers, report, runner

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
              "--peak", "--peak-gflops", "233", "--json", "r.json", "--plot", "r.png", "--markdown", "R.md",
              "--no-progress")
    assert a.device == "cpu" and a.batch == [1, 8] and a.threads == 2 and a.quick and a.peak
    assert a.network[:5] == ["resnet50", "vgg16", "mobilenet", "lenet5", "all"]
    assert isinstance(a.network[5], networks.Layer) and a.network[5].batch == 1
    assert a.peers == ["torch", "torch-prepacked", "nnpack", "cudnn"] and a.sections == ["conv", "gemm", "pool"]
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
def test_cuda_without_gpu_skips_cleanly(capsys):
    assert main(["bench", "--device", "cuda", "--network", TINY, *FAST]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out


@pytest.mark.skipif(cli._cuda_unavailable() != "", reason="no CUDA device")
def test_cuda_times_cudnn(capsys):
    assert main(["bench", "--device", "cuda", "--network", TINY, *FAST]) == 0
    out = capsys.readouterr().out
    assert "cudnn" in out and "fastconv has no CUDA kernels yet" in out


@pytest.mark.slow
def test_help_as_a_module():
    r = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--network" in r.stdout and "--peak" in r.stdout


# ---- --model: whole networks, fastconv.torch.convert vs torch eager -------------------------------

def test_model_option_parses_and_plans_cases():
    a = parse("--model", "resnet18", "resnet50", "lenet5", "--image-size", "64")
    assert a.model == ["resnet18", "resnet50", "lenet5"] and a.image_size == 64
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
    assert [(m["model"], m["mode"], m["batch"]) for m in result["models"]] == [
        ("lenet5", "forward", 2), ("resnet18", "forward", 2), ("resnet18", "train", 2)]
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
