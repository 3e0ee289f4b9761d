"""auto's rules against measured grids (issue 23, items 2 and 3).

benchmarks/auto_grid_zen4.json, auto_grid_spr.json and auto_grid_zen3.json hold the median times
of every CPU kernel, called directly and through a plan, over benchmarks/auto_grid.py's grid of
layers, measured on a 2-core AMD Zen 4, a 2-core Intel Sapphire Rapids-class Xeon (both AVX-512)
and a 2-core AMD Zen 3 (AVX2)
(`python benchmarks/auto_grid.py --out ...`). These tests time nothing: they evaluate the rules
as they are now (fastconv.algorithms.choose, for the recorded instruction set and CPU vendor,
whatever CPU runs the test) on the recorded times, so a rule change that makes auto pick a slow
kernel on either measured machine fails here.
"""
import json
import pathlib

import numpy as np
import pytest

import fastconv as fc
from benchmarks import auto_grid
from fastconv import algorithms

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
GRIDS = {"zen4": ("amd", "avx512"), "spr": ("intel", "avx512-intel"), "zen3": ("amd", "avx2")}  # file: (vendor, tuning)


@pytest.fixture(scope="module", params=sorted(GRIDS))
def record(request):
    rec = json.loads((BENCHMARKS / f"auto_grid_{request.param}.json").read_text())
    vendor, tuning = GRIDS[request.param]
    assert rec["machine"].get("vendor", "amd") == vendor
    assert algorithms.cpu_tuning(rec["machine"]["isa"], vendor) == tuning
    return rec


def test_the_grid_is_the_issues(record):
    """Every kind of point the issue names is in the recorded grid, with every kernel timed."""
    points = record["points"]
    assert len(points) >= 600
    params = [p["params"] for p in points]
    assert {p["R"] for p in params} == {1, 3, 5, 7}
    assert {p["stride"][0] for p in params} == {1, 2}
    assert {p["C"] for p in params} >= {16, 64, 256, 384, 512, 1024}
    assert {p["H"] for p in params} >= {7, 13, 14, 28, 56, 112}
    assert {pt["batch"] for pt in points} == {1, 8}
    assert any(p["groups"] == p["C"] > 1 for p in params)
    for pt in points:
        assert "direct" in pt["times"] and "im2col" in pt["times"]
        assert all(t > 0 for t in pt["times"].values())


@pytest.mark.parametrize("prepared", [False, True], ids=["conv2d", "plan"])
def test_auto_is_within_10_percent_of_the_fastest_at_95_percent_of_points(record, prepared):
    rows = auto_grid.evaluate(record, prepared)
    good = [r for r in rows if r[3] <= auto_grid.WITHIN]
    misses = sorted(((auto_grid.describe(p), pick, best, round(regret, 2)) for p, pick, best, regret in rows
                     if regret > auto_grid.WITHIN), key=lambda m: -m[3])
    assert len(good) / len(rows) >= auto_grid.GOAL_SHARE, misses


def test_no_pick_is_far_from_the_fastest(record):
    """Beyond the 5 % the goal allows, no pick costs more than 2x the fastest kernel."""
    for prepared in (False, True):
        worst = max(auto_grid.evaluate(record, prepared), key=lambda r: r[3])
        assert worst[3] <= 2.0, (prepared, auto_grid.describe(worst[0]), worst[1:])


def test_explain_states_the_rule_that_fired():
    e = fc.explain((1, 384, 13, 13), (384, 384, 3, 3), padding=1)
    name, rule = algorithms.choose_with_rule(_params(1, 384, 13, 3), np.float32)
    assert e.auto == name and e.auto_rule == rule and rule
    assert f"auto: {e.auto}, by the rule: {e.auto_rule}" in str(e)
    assert e.plan and e.plan_rule and f"plan_conv2d's auto: {e.plan}" in str(e)
    # A workspace cap that the rule's pick exceeds says so.
    tight = fc.explain((1, 384, 13, 13), (384, 384, 3, 3), padding=1, workspace_limit=0)
    assert "exceeds the limit" in tight.auto_rule or "nothing fits" in tight.auto_rule


def _params(n, c, m, k, stride=1):
    from fastconv.functional import conv_params
    return conv_params((n, c, m, m), (c, c, k, k), stride, k // 2, 1, 1)[0]


def test_tuning_follows_the_vendor_and_isa():
    """Intel's AVX-512 cores get their own table; AMD's and other vendors' share Zen 4's; below
    AVX-512 the ISA alone decides. On Intel F(4x4) pays from 392 pixels, and from 169 only in
    a call with >= 384 channels (from 256 in calls and plans on Zen 4)."""
    assert algorithms.cpu_tuning("avx512", "intel") == "avx512-intel"
    assert algorithms.cpu_tuning("avx512", "amd") == algorithms.cpu_tuning("avx512", "other") == "avx512"
    assert algorithms.cpu_tuning("avx2", "intel") == "avx2"
    for c, prepared, amd, intel in [(256, False, 4, 2), (256, True, 4, 2), (512, False, 4, 4), (512, True, 4, 2)]:
        p = _params(1, c, 14, 3)
        assert algorithms.choose(p, np.float32, prepared=prepared, isa="avx512", vendor="amd") == f"winograd:{amd}"
        name, rule = algorithms.choose_with_rule(p, np.float32, prepared=prepared, isa="avx512", vendor="intel")
        assert name == f"winograd:{intel}" and "F(4x4) from 392" in rule
        assert ("from 169 with >= 384 channels" in rule) == (not prepared)
    assert algorithms.choose(_params(8, 256, 7, 3), np.float32, prepared=True, isa="avx512",
                             vendor="intel") == "winograd:4"
    assert algorithms.choose(_params(1, 64, 14, 3, stride=2), np.float32, isa="avx512", vendor="intel") == "im2col"
    assert algorithms.choose(_params(1, 64, 14, 3, stride=2), np.float32, isa="avx512", vendor="amd") == "direct"
    # AVX2 (Zen 3's grid): F(4x4) from 169 pixels; under 100 a call runs direct or im2col, a plan F(2x2)
    for c, m, n, prepared, pick in [(256, 13, 1, False, "winograd:4"), (64, 13, 1, True, "winograd:4"),
                                    (128, 7, 1, False, "direct"), (512, 7, 1, False, "im2col"),
                                    (64, 7, 1, True, "winograd:2"), (16, 14, 1, False, "direct")]:
        assert algorithms.choose(_params(n, c, m, 3), np.float32, prepared=prepared, isa="avx2",
                                 vendor="amd") == pick, (c, m, prepared)
    # and no per-call FFT on 7x7 maps
    p5 = _params(8, 64, 7, 5)
    assert algorithms.choose(p5, np.float32, isa="avx2", vendor="amd") == "direct"
    # one 7x7 map with a 5x5 or 7x7 kernel: im2col's padded gather, calls from 64 channels, plans from 16
    for c, n, prepared, pick in [(128, 1, False, "im2col"), (64, 1, False, "im2col"), (16, 1, False, "direct"),
                                 (16, 1, True, "im2col"), (128, 8, False, "direct")]:
        assert algorithms.choose(_params(n, c, 7, 5), np.float32, prepared=prepared, isa="avx2",
                                 vendor="amd") == pick, (c, n, prepared)
    assert algorithms.choose(_params(1, 128, 7, 5), np.float32, isa="avx512", vendor="amd") == "direct"
    # 3x3 stride 2: im2col for 64 channels up to 49 output pixels per call, for 65-128 from 784
    for n, c, m, pick in [(1, 64, 14, "im2col"), (8, 64, 14, "direct"), (1, 128, 56, "im2col"),
                          (1, 128, 28, "direct"), (8, 128, 28, "im2col")]:
        for prepared in (False, True):
            assert algorithms.choose(_params(n, c, m, 3, stride=2), np.float32, prepared=prepared, isa="avx2",
                                     vendor="amd") == pick, (n, c, m, prepared)
    assert algorithms.choose(_params(1, 128, 56, 3, stride=2), np.float32, isa="avx512", vendor="amd") == "direct"
    assert algorithms.choose(p5, np.float32, isa="avx512", vendor="amd") == "fft:8"
    # Zen 1 and Zen+ (AMD family 23 below model 0x30) keep the AVX2 rules measured there before the grid:
    # Winograd from 16 channels and 49 pixels, F(4x4) from 196; Zen 2 and later take the grid's
    assert algorithms.cpu_tuning("avx2", "amd", 23, 1) == algorithms.cpu_tuning("avx2", "amd", 23, 0x18) == "avx2-zen1"
    assert algorithms.cpu_tuning("avx2", "amd", 23, 0x31) == algorithms.cpu_tuning("avx2", "amd", 25, 1) == "avx2"
    assert algorithms.cpu_tuning("avx512", "amd", 23, 1) == "avx512"
    for c, m, pick in [(16, 14, "winograd:4"), (128, 7, "winograd:2"), (512, 7, "winograd:2"), (64, 13, "winograd:2")]:
        assert algorithms._cpu_rules(_params(1, c, m, 3), np.float32, tuning="avx2-zen1")[0] == pick, (c, m)
    assert algorithms._cpu_rules(p5, np.float32, tuning="avx2-zen1")[0] == "fft:8"
    # this process's own tuning is its CPU's
    ident = fc._C.cpu_identity()
    assert algorithms.cpu_tuning() == algorithms.cpu_tuning(fc._C.get_isa(), ident["vendor"], ident["family"],
                                                            ident["model"])
