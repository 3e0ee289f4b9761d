"""Autotuning: algorithm="autotune" / set_autotune(True) time the candidates once per
problem, keep the winner in this process and in a JSON cache under FASTCONV_CACHE_DIR,
survive a corrupt cache file, and keep the reference's NaN/Inf pattern."""
import json

import numpy as np
import pytest

import fastconv
from fastconv import algorithms
from compare import assert_close, nan_out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    algorithms._tuned.clear()
    yield tmp_path
    algorithms._tuned.clear()
    fastconv.set_autotune(False)


def _problem(rng, c=16):
    x = rng.standard_normal((2, c, 13, 11)).astype(np.float32)
    w = rng.standard_normal((8, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    return x, w, b


def _count_runs(monkeypatch):
    calls = []
    real = fastconv.functional._run_conv

    def counting(x, w, b, params, pads, algorithm, out, *backend):
        calls.append(algorithm)
        return real(x, w, b, params, pads, algorithm, out, *backend)
    monkeypatch.setattr(fastconv.functional, "_run_conv", counting)
    return calls


def test_autotune_times_every_candidate_once_and_caches(cache_dir, rng, monkeypatch):
    x, w, b = _problem(rng)
    want = fastconv.conv2d(x, w, b, padding=1, algorithm="reference")
    calls = _count_runs(monkeypatch)
    got = fastconv.conv2d(x, w, b, padding=1, algorithm="autotune", out=nan_out(want.shape, np.float32))
    assert_close(got, want, 1e-4)
    params, _ = fastconv.functional.conv_params(x.shape, w.shape, 1, 1, 1, 1)
    options = algorithms.candidates(params, np.float32)
    assert set(options) >= {"direct", "im2col", "winograd:2"}
    assert set(calls[:-1]) == set(options)       # each timed (warm-up + 3), then the real call
    cache = json.loads((cache_dir / "autotune.json").read_text())
    key = algorithms.autotune_key(params, np.float32)
    assert cache[key] in options and calls[-1] == cache[key]
    calls.clear()
    fastconv.conv2d(x, w, b, padding=1, algorithm="autotune")
    assert calls == [cache[key]]                 # tuned: no more timing


def test_next_process_starts_tuned_from_the_file(cache_dir, rng, monkeypatch):
    x, w, b = _problem(rng)
    params, _ = fastconv.functional.conv_params(x.shape, w.shape, 1, 1, 1, 1)
    key = algorithms.autotune_key(params, np.float32)
    (cache_dir / "autotune.json").write_text(json.dumps({key: "direct"}))
    calls = _count_runs(monkeypatch)
    fastconv.set_autotune(True)
    fastconv.conv2d(x, w, b, padding=1)          # "auto" tunes when autotuning is on
    assert calls == ["direct"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": 3}', ""])
def test_corrupt_or_stale_cache_never_breaks_a_call(cache_dir, rng, content):
    (cache_dir / "autotune.json").write_text(content)
    x, w, b = _problem(rng)
    want = fastconv.conv2d(x, w, b, padding=1, algorithm="reference")
    got = fastconv.conv2d(x, w, b, padding=1, algorithm="autotune")
    assert_close(got, want, 1e-4)
    assert isinstance(json.loads((cache_dir / "autotune.json").read_text()), dict)


def test_unknown_winner_in_cache_is_retuned(cache_dir, rng):
    x, w, b = _problem(rng)
    params, _ = fastconv.functional.conv_params(x.shape, w.shape, 1, 1, 1, 1)
    key = algorithms.autotune_key(params, np.float32)
    (cache_dir / "autotune.json").write_text(json.dumps({key: "winograd:6", "other": "im2col"}))
    fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), None, padding=1, algorithm="autotune")
    cache = json.loads((cache_dir / "autotune.json").read_text())
    assert cache["other"] == "im2col"             # other entries survive the update
    key64 = algorithms.autotune_key(params, np.float64)
    assert cache[key64] in ("direct", "im2col")  # float64: Winograd is no candidate


def test_autotune_keeps_nan_where_the_reference_has_it(cache_dir, rng):
    x, w, b = _problem(rng, c=32)
    x[1, 5, 6, 6] = np.nan
    want = fastconv.conv2d(x, w, b, padding=1, algorithm="reference")
    got = fastconv.conv2d(x, w, b, padding=1, algorithm="autotune")
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))


def test_autotune_on_empty_batch_and_unwritable_cache(tmp_path, monkeypatch, rng):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    algorithms._tuned.clear()
    x, w, b = _problem(rng)
    assert fastconv.conv2d(x[:0], w, b, padding=1, algorithm="autotune").shape == (0, 8, 13, 11)
    y = fastconv.conv2d(x, w, b, padding=1, algorithm="autotune")
    assert_close(y, fastconv.conv2d(x, w, b, padding=1, algorithm="reference"), 1e-4)
    algorithms._tuned.clear()


def test_set_autotune_flag():
    assert fastconv.get_autotune() is False
    fastconv.set_autotune(True)
    assert fastconv.get_autotune() is True
    fastconv.set_autotune(False)
    assert "autotune" in fastconv.info()["algorithms"]
