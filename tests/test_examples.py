# test_examples.py: every script of examples/ runs in quick mode in a subprocess and does what
# it says: LeNet-5 learns the digits (>= 90% test accuracy after the quick run), the edge
# detector finds the demo's edges (and agrees with torch), the ResNets match torch.nn's.
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # each test runs a script in a new Python process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, timeout=240):
    # The scripts import the fastconv these tests import (installed, or the dev tree's python/).
    import fastconv
    site = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args], capture_output=True,
                         text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_lenet5_digits_quick_learns():
    out = run_example("lenet5_digits.py", "--quick")
    acc = float(re.search(r"^test accuracy ([\d.]+)%", out, re.M).group(1))
    assert acc >= 90.0, out


def test_edge_detector_finds_the_demos_edges(tmp_path):
    png = tmp_path / "edges.png"
    out = run_example("edge_detector.py", "--quick", "--save", str(png))
    vertical, horizontal, total = (int(v.replace(",", "")) for v in re.search(
        r"edge pixels: ([\d,]+) vertical edges, ([\d,]+) horizontal edges, ([\d,]+) in all", out).groups())
    assert vertical > 1000 and horizontal > 1000 and max(vertical, horizontal) <= total <= vertical + horizontal
    assert png.stat().st_size > 1000


def test_resnet_quick_matches_torch():
    out = run_example("resnet.py", "--quick")
    errors = [float(v) for v in re.findall(r"max \|fastconv - torch\| / max \|torch\| = ([\d.e+-]+)", out)]
    assert len(errors) == 2 and max(errors) < 1e-4, out


def test_locally_connected_beats_shared_conv_where_position_matters():
    out = run_example("locally_connected.py", "--quick")
    acc = {name: float(v) for name, v in re.findall(r"^(shared conv|locally connected) .*?([\d.]+)%", out, re.M)}
    assert acc["locally connected"] >= 90.0 and acc["shared conv"] <= 75.0, out
    params = {name: int(v.replace(",", "")) for name, v in
              re.findall(r"^(shared conv|locally connected) \S.*?\s([\d,]+)\s+[\d,]+\s+[\d.]+%", out, re.M)}
    assert params["locally connected"] > 10 * params["shared conv"], out
