"""auto's rules against a measured grid (issue 23, item 2).

benchmarks/auto_grid_zen4.json holds the median times of every CPU kernel, called directly and
through a plan, over benchmarks/auto_grid.py's grid of layers, measured once on a 2-core Zen 4
(`python benchmarks/auto_grid.py --out benchmarks/auto_grid_zen4.json`). These tests time
nothing: they evaluate the rules as they are now (fastconv.algorithms.choose, for the recorded
instruction set) on the recorded times, so a rule change that makes auto pick a slow kernel on
the measured machine fails here.
"""
import json
import pathlib

import numpy as np
import pytest

import fastconv as fc
from benchmarks import auto_grid
from fastconv import algorithms

GRID = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "auto_grid_zen4.json"


@pytest.fixture(scope="module")
def record():
    return json.loads(GRID.read_text())


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


def _params(n, c, m, k):
    from fastconv.functional import conv_params
    return conv_params((n, c, m, m), (c, c, k, k), 1, k // 2, 1, 1)[0]
