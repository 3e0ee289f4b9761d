#!/usr/bin/env python
# report.py: thin wrapper kept for old habits: regenerates benchmarks/RESULTS.md with
# `python -m fastconv bench`, which does the measuring and the writing (fastconv/bench/).
"""Write benchmarks/RESULTS.md with ``python -m fastconv bench``.

    python benchmarks/report.py            # = python -m fastconv bench --full --network resnet50 vgg16 mobilenet
                                           #     --batch 1 8 --sections conv gemm pool --markdown benchmarks/RESULTS.md
    python benchmarks/report.py --quick    # the quick subset, batch 1
    python benchmarks/report.py --batch 1 --sections conv   # any `bench` option overrides the defaults

Only the text between ``<!-- report:begin -->`` and ``<!-- report:end -->`` is rewritten.
NumPy's OpenBLAS environment for the GEMM section is handled by the CLI (it re-executes
itself without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE and with OPENBLAS_THREAD_TIMEOUT=4).
"""
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def command(argv):
    given = {a for a in argv if a.startswith("--")}
    cmd = [sys.executable, "-m", "fastconv", "bench"]
    if "--quick" not in given and "--full" not in given:
        cmd.append("--full")
    if "--network" not in given and "-n" not in argv:
        cmd += ["--network", "resnet50", "vgg16", "mobilenet"]
    if "--batch" not in given and "-b" not in argv:
        cmd += ["--batch", "1"] if "--quick" in given else ["--batch", "1", "8"]
    if "--sections" not in given:
        cmd += ["--sections", "conv", "gemm", "pool"]
    if "--markdown" not in given:
        cmd += ["--markdown", str(HERE / "RESULTS.md")]
    return cmd + list(argv)


if __name__ == "__main__":
    env = dict(os.environ)
    src = HERE.parent / "python"
    if (src / "fastconv" / "__init__.py").exists() and any(src.glob("fastconv/_C*")):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)   # developer build
    sys.exit(subprocess.call(command(sys.argv[1:]), env=env))
