"""python -m fastconv info | explain | demo."""
import json
import subprocess
import sys

import pytest

from fastconv.__main__ import main


def test_info_prints_json(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["isa"] in ("scalar", "avx2", "avx512")


def test_explain_prints_table(capsys):
    assert main(["explain", "1,32,112,112", "32,1,3,3", "--padding", "1", "--groups", "32"]) == 0
    out = capsys.readouterr().out
    assert "direct" in out and "<- auto" in out and "(1, 32, 112, 112)" in out


def test_explain_bad_problem_is_a_clear_error(capsys):
    assert main(["explain", "1,3,4,4", "3,3,9,9"]) == 2
    assert "kernel height 9" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_as_a_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastconv", "demo", "--save", str(tmp_path / "edges.npy")],
                         capture_output=True, text=True, check=True).stdout
    assert "output 319x280" in out and "267,960 FLOPs" in out
    assert (tmp_path / "edges.npy").exists()
