# test_device_run.py: the scripts of a lent GPU session, checked without a GPU: tools/build_gpu_wheel.sh
# (run here) and tools/device_run.sh (run there) parse (bash -n; shellcheck when installed), name only
# files that exist, agree on the source hash, carry an ignored path; device_run.sh runs end to end
# against stand-in commands (python3, nvidia-smi, compute-sanitizer) that check every fastconv
# command line it issues with fastconv's own parsers, keeps to its file limits and trims its steps to
# the time budget; the smoke module it puts under compute-sanitizer passes on the CPU rows and skips
# without a GPU.
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import pytest

from fastconv.bench import smoke

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = [ROOT / "tools" / "device_run.sh", ROOT / "tools" / "build_gpu_wheel.sh"]
PY_DIR = pathlib.Path(smoke.__file__).resolve().parents[2]   # the fastconv package's parent (python/)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_names_only_files_that_exist(script):
    text = script.read_text()
    paths = set(re.findall(r"(?<![\w/.$-])((?:tools|tests|csrc|python)/[\w./-]*[\w])", text))
    paths |= {p for p in ("CMakeLists.txt", "pyproject.toml") if p in text}
    assert paths, "no repository paths found: the pattern is broken"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{script.name} names files the repository does not have: {missing}"
    for module in re.findall(r"-m (fastconv[\w.]*)", text):
        path = ROOT / "python" / module.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), module


def test_the_wheel_travels_as_an_ignored_carried_path():
    # the device tool's carry takes paths git ignores; both scripts use dist/gpu
    r = subprocess.run(["git", "check-ignore", "-q", "dist/gpu/fastconv-0.1.0-cp312-cp312-linux_x86_64.whl"],
                       cwd=ROOT, capture_output=True)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.returncode == 0, "dist/gpu is not ignored by git: carry=['dist/gpu'] would not take it"
    for script in SCRIPTS:
        assert "dist/gpu" in script.read_text()


def test_both_scripts_hash_the_sources_alike():
    # one definition, sourced by both: neither may define its own
    for script in SCRIPTS:
        text = script.read_text()
        assert ". tools/source_hash.sh" in text and "source_hash() {" not in text
    assert "source_hash() {" in (ROOT / "tools" / "source_hash.sh").read_text()


def test_device_run_budget_fits_the_lease():
    # each step's own limit, and the whole run's budget, well inside one device call (10 min at most)
    text = SCRIPTS[0].read_text()
    budget = int(re.search(r"BUDGET=\$\{BUDGET_S:-(\d+)\}", text).group(1))
    limits = [int(m) for m in re.findall(r"\bstep (?:--to \S+ )?\"[^\"]+\" (\d+)", text)]
    limits += [int(m) for m in re.findall(r"\bstep (?:--to \S+ )?(?!--to)\w+ (\d+)", text)]
    assert budget <= 450 and len(limits) >= 7 and max(limits) <= 120
    assert "usage" in text and 'carry=["dist/gpu"]' in text and "timeout_s=540" in text


# ---- device_run.sh end to end, against stand-ins ------------------------------------------------------

PY_STUB = r"""#!/bin/bash
# python3 stand-in: logs its arguments; fastconv command lines are parsed by fastconv's own parsers.
echo "python3 $*" >>"$STUB_LOG"
case "$1 $2" in
  "-m fastconv")
    exec "$REAL_PY" - "${@:3}" <<'EOF'
import argparse, pathlib, sys
sys.path.insert(0, __import__("os").environ["FC_PY_DIR"])
from fastconv.bench import cli
p = argparse.ArgumentParser()
cli.add_parser(p.add_subparsers(dest="command"))
a = p.parse_args(sys.argv[1:])          # exits 2 on a bad option
print("parsed:", " ".join(sys.argv[1:]))
if a.json:
    pathlib.Path(a.json).write_text("{}")
    print("  resnet50 batch 1 (20 layers, 2.78 GFLOP) vs cudnn: fastconv best 0.50x")
if a.markdown:
    pathlib.Path(a.markdown).write_text("## stand-in tables\n")
EOF
    ;;
  "-m fastconv.bench.smoke")
    exec "$REAL_PY" -c 'import os, sys; sys.path.insert(0, os.environ["FC_PY_DIR"]); sys.argv[0] = "smoke"
from fastconv.bench import smoke; sys.exit(smoke.main(sys.argv[1:]))' "${@:3}"
    ;;
  "-m pytest")
    sleep "${STUB_PYTEST_SLEEP:-0}"
    echo "12 passed in 0.1s"
    ;;
  "-m pip") ;;
  *) echo "[]" ;;
esac
"""
SMI_STUB = """#!/bin/bash
case "$*" in
  *noheader*) echo "Stand-in GPU 80GB" ;;
  *) echo "name, driver_version"; echo "Stand-in GPU 80GB, 580.00" ;;
esac
"""
SAN_STUB = """#!/bin/bash
echo "compute-sanitizer $*" >>"$STUB_LOG"
while [[ $1 == --* ]]; do shift 2; done   # the options, each with its value
"$@"
echo "========= ERROR SUMMARY: 0 errors"
"""


def _stand_in_tree(tmp_path, wheel=True):
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(SCRIPTS[0], repo / "tools" / "device_run.sh")
    shutil.copy(ROOT / "tools" / "source_hash.sh", repo / "tools" / "source_hash.sh")
    if wheel:
        (repo / "dist" / "gpu").mkdir(parents=True)
        (repo / "dist" / "gpu" / "fastconv-0.1.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in (("python3", PY_STUB), ("nvidia-smi", SMI_STUB), ("compute-sanitizer", SAN_STUB)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(stat.S_IRWXU)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", OUT=str(out), STUB_LOG=str(tmp_path / "calls"),
               REAL_PY=sys.executable, FC_PY_DIR=str(PY_DIR))
    return repo, out, env


@pytest.mark.slow   # spawns bash and a dozen Python processes
def test_device_run_end_to_end_on_stand_ins(tmp_path):
    repo, out, env = _stand_in_tree(tmp_path)
    r = subprocess.run(["bash", str(repo / "tools" / "device_run.sh"), "--algorithms", "im2col", "auto"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = r.stdout
    assert "card: Stand-in_GPU_80GB" in log and "== summary (Stand-in_GPU_80GB" in log
    assert "(timed out)" not in log and "skipped" not in log.split("== summary")[0].replace("skipped: no CUDA", "")
    calls = (tmp_path / "calls").read_text().splitlines()
    benches = [c for c in calls if c.startswith("python3 -m fastconv bench")]
    assert len(benches) == 6                     # conv, gemm+pool+local+weighted, backward, and a --load for each
    assert any("--sections backward" in c for c in benches)
    assert any(c.endswith("--sections gemm pool local weighted --json " + str(out / "Stand-in_GPU_80GB_sections.json"))
               for c in benches)
    assert any(c.endswith("--algorithms im2col auto") and "-n resnet50 vgg16 -b 1 8" in c for c in benches)
    assert log.count("parsed: bench") == 3 and "rc 2" not in log   # every command line parses
    assert re.findall(r"== (?:bench|markdown) [\w ]+: rc (\d+)", log) == ["0"] * 6
    assert any(c.startswith("python3 -m pip install") and "--no-index" in c and "--no-deps" in c for c in calls)
    assert any(c.startswith("python3 -m pytest tests -m cuda") for c in calls)
    sanitizer = [c for c in calls if c.startswith("compute-sanitizer")]
    assert [c.split()[2] for c in sanitizer] == ["memcheck", "racecheck", "initcheck"]
    # what comes back: at most 8 files, plain names, the card's name on the benchmark files
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["run.log", "tests.txt", "sanitizer.txt", "Stand-in_GPU_80GB_conv.json",
                            "Stand-in_GPU_80GB_sections.json", "Stand-in_GPU_80GB_backward.json",
                            "Stand-in_GPU_80GB_results.md"])
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files) and len(files) <= 8
    assert (out / "run.log").read_text().count("== summary") == 1
    assert (out / "Stand-in_GPU_80GB_results.md").read_text().count("## stand-in tables") == 3
    san = (out / "sanitizer.txt").read_text()
    assert san.count("skipped: no CUDA device") == 3 and "==== initcheck" in san   # the smoke ran, found no GPU


@pytest.mark.slow
def test_device_run_trims_steps_to_its_budget(tmp_path):
    repo, out, env = _stand_in_tree(tmp_path)
    env.update(BUDGET_S="17", STUB_PYTEST_SLEEP="4")
    r = subprocess.run(["bash", str(repo / "tools" / "device_run.sh")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== pytest -m cuda (limit 1" in r.stdout                 # trimmed to what was left
    assert "compute-sanitizer racecheck: skipped (the 17 s budget is spent)" in r.stdout
    assert "bench conv: skipped" in r.stdout and "== summary" in r.stdout


@pytest.mark.slow
def test_device_run_without_a_wheel_says_how_to_make_one(tmp_path):
    repo, out, env = _stand_in_tree(tmp_path, wheel=False)
    r = subprocess.run(["bash", str(repo / "tools" / "device_run.sh")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "run tools/build_gpu_wheel.sh here and carry dist/gpu" in r.stdout


# ---- the smoke module ------------------------------------------------------------------------------

def test_smoke_runs_every_cpu_row(capsys):
    assert smoke.main(["--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"smoke cpu: \d+ checks, 0 failed; every row exercised", out), out


def test_smoke_reports_wrong_and_failing_kernels(monkeypatch, capsys):
    import fastconv
    real = fastconv.conv2d

    def broken(x, w, b=None, *, algorithm, **kw):
        if algorithm == "direct":
            raise RuntimeError("launch failed")
        return real(x, w, b, algorithm=algorithm, **kw) * 2
    monkeypatch.setattr(fastconv, "conv2d", broken)
    assert smoke.main(["--device", "cpu", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAIL conv2d_forward im2col: 1x1  (y)" in out
    assert "FAIL conv2d_forward direct: 1x1  (RuntimeError: launch failed)" in out
    assert not re.search(r"^ok ", out, re.M) and "max_pool2d" not in out   # --quiet: failures only
    n_forward = int(re.search(r"smoke cpu: \d+ checks, (\d+) failed", out).group(1))
    assert n_forward == len(re.findall(r"^FAIL conv2d_forward", out, re.M))   # those failed, nothing else


@pytest.mark.cuda
def test_smoke_on_the_gpu(capsys, monkeypatch):
    if smoke.why_no_device("cuda"):
        pytest.skip(smoke.why_no_device("cuda"))
    monkeypatch.setenv("PYTORCH_NO_CUDA_MEMORY_CACHING", os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING", "0"))
    assert smoke.main(["--device", "cuda", "--quiet"]) == 0, capsys.readouterr().out
    assert "every row exercised" in capsys.readouterr().out


def test_smoke_without_a_gpu_skips(capsys):
    if smoke.why_no_device("cuda") == "":
        pytest.skip("a CUDA device is present")
    assert smoke.main(["--device", "cuda"]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out
