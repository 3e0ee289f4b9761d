# test_plan.py: plan_conv2d (python/fastconv/plan.py) and the kernels' prepared weights
# (_C.prepared_bytes / prepare_weights / run(prepared=True)), and the
# workspace cap (set_workspace_limit, workspace_limit=) that auto chooses within.
import numpy as np
import pytest

import fastconv as fc
from fastconv import _C, algorithms
from fastconv.functional import conv_params

from cases import CONV_ALGORITHMS, conv_supported
from compare import assert_close, nan_out, tolerance

PREPARING = [a for a in CONV_ALGORITHMS if algorithms.prepares(a)]

# (x shape, w shape, stride, padding, dilation, groups): odd and prime sizes, groups,
# the Winograd paths (tile blocks; weight-bound blocks of output channels: K/g >= tiles).
CASES = [
    ((2, 16, 13, 11), (24, 16, 3, 3), 1, 1, 1, 1),
    ((1, 40, 7, 9), (72, 40, 3, 3), 1, ((0, 2), (1, 1)), 1, 1),   # K >= tiles: weight-bound, flipped
    ((3, 12, 17, 17), (18, 4, 3, 3), 1, 1, 1, 3),
    ((2, 9, 23, 19), (11, 9, 5, 3), 2, 2, 1, 1),
    ((1, 33, 29, 31), (7, 33, 1, 1), 1, 0, 1, 1),
    ((2, 8, 15, 14), (5, 8, 3, 3), 1, 2, 2, 1),
]

FLIPPED_PER_CALL = {1}  # the cases whose Winograd calls flip their products (< nr tiles)


def _data(rng, x_shape, w_shape, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("algorithm", PREPARING)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_prepared_equals_unprepared(isa, rng, algorithm, case):
    # The prepared form is what the kernel would build in the call: the same products in
    # the same order, so the results are bitwise those of conv2d. Except Winograd on the
    # weight-bound case with fewer tiles than a GEMM panel: there the call flips its
    # products (tiles as the rows), a plan keeps its prepared kernel's orientation, and the
    # sums run in other orders (conv2d_winograd.cpp, Plan::flipped).
    x_shape, w_shape, stride, padding, dilation, groups = CASES[case]
    for dtype in (np.float32, np.float64):
        if not conv_supported(algorithm, x_shape, w_shape, stride, padding, dilation, groups, dtype):
            continue
        x, w, b = _data(rng, x_shape, w_shape, dtype)
        want = fc.conv2d(x, w, b, stride, padding, dilation, groups, algorithm=algorithm)
        plan = fc.plan_conv2d(w, x_shape, stride, padding, dilation, groups, bias=b, algorithm=algorithm)
        assert plan.algorithm == algorithm and plan.prepared_bytes > 0
        out = nan_out(want.shape, dtype)
        assert plan(x, out=out) is out
        if algorithm.startswith("winograd") and case in FLIPPED_PER_CALL and isa != "scalar":
            assert_close(out, want, tolerance(algorithm, dtype, w_shape[1] * w_shape[2] * w_shape[3]), algorithm)
        else:
            np.testing.assert_array_equal(out, want)
        ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride, padding,
                        dilation, groups, algorithm="reference")
        assert_close(out, ref, tolerance(algorithm, dtype, w_shape[1] * w_shape[2] * w_shape[3]), algorithm)


@pytest.mark.parametrize("algorithm", ["auto", "direct", "reference", "winograd"])
def test_plan_any_batch_torch_and_flip(rng, algorithm):
    torch = pytest.importorskip("torch")
    x, w, b = _data(rng, (3, 16, 12, 12), (20, 16, 3, 3), np.float32)
    plan = fc.plan_conv2d(torch.from_numpy(w), (1, 16, 12, 12), padding=1, bias=torch.from_numpy(b),
                          flip=True, algorithm=algorithm)
    want = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1, flip=True,
                     algorithm="reference")
    tol = tolerance(plan.algorithm if plan.algorithm != "reference" else "direct", np.float32, 144)
    for n in (3, 1, 0):  # other batch sizes than planned, and an empty one
        y = plan(torch.from_numpy(x[:n]))
        assert isinstance(y, torch.Tensor) and tuple(y.shape) == (n, 20, 12, 12)
        assert_close(y.numpy(), want[:n], tol, algorithm)


def test_plan_copies_weights(rng):
    x, w, b = _data(rng, (1, 16, 9, 9), (8, 16, 3, 3), np.float32)
    plan = fc.plan_conv2d(w, x.shape, padding=1, bias=b, algorithm="im2col")
    before = plan(x)
    w[:] = 0
    b[:] = 0
    np.testing.assert_array_equal(plan(x), before)


def test_plan_reprepares_after_isa_change(rng):
    # Packed panels depend on the ISA's register blocks: a plan made at one ISA must
    # still be right after the ISA is lowered (and back).
    x, w, b = _data(rng, (2, 24, 14, 14), (40, 24, 3, 3), np.float32)
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1,
                    algorithm="reference")
    before = _C.get_isa()
    try:
        for algorithm in PREPARING:
            plan = fc.plan_conv2d(w, x.shape, padding=1, bias=b, algorithm=algorithm)
            for isa in ("scalar", before):
                _C.set_isa(isa)
                assert_close(plan(x), ref, tolerance(algorithm, np.float32, 216), f"{algorithm} at {isa}")
    finally:
        _C.set_isa(before)


def test_auto_plan_gives_reference_nan_pattern(rng):
    # auto plans Winograd for this layer; an input NaN must not spread over its tile.
    x, w, b = _data(rng, (1, 32, 24, 24), (32, 32, 3, 3), np.float32)
    plan = fc.plan_conv2d(w, x.shape, padding=1, bias=b)
    assert plan.algorithm.startswith("winograd")
    x[0, 3, 10, 10] = np.nan
    y = plan(x)
    ref = fc.conv2d(x, w, b, padding=1, algorithm="reference")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    # NaN in the weights: auto plans an exact algorithm from the start.
    w[0, 0, 0, 0] = np.inf
    assert algorithms.is_exact_on_nonfinite(fc.plan_conv2d(w, x.shape, padding=1).algorithm)


def test_plan_workspace_and_explain(rng):
    x, w, _ = _data(rng, (1, 64, 28, 28), (64, 64, 3, 3), np.float32)
    plan = fc.plan_conv2d(w, x.shape, padding=1, algorithm="winograd:4")
    info = plan.explain()
    params, _ = conv_params(x.shape, w.shape, 1, 1, 1, 1)
    # 36 transformed 64 x 64 kernels, each plane padded by at most one cache line.
    assert info["prepared_bytes"] == _C.prepared_bytes("winograd:4", params, "float32")
    assert 36 * 64 * 64 * 4 <= info["prepared_bytes"] <= 36 * (64 * 64 * 4 + 64)
    assert info["workspace_bytes"] == _C.workspace_bytes("winograd:4", params, "float32", True)
    # A plan's call needs no room for the transformed kernel.
    assert info["workspace_bytes"] < _C.workspace_bytes("winograd:4", params, "float32")
    assert "winograd:4" in repr(plan)
    rows = {r["algorithm"]: r for r in fc.explain(x.shape, w.shape, padding=1).algorithms}
    assert rows["winograd:4"]["prepared_bytes"] == info["prepared_bytes"]
    assert rows["winograd:4"]["plan_workspace_bytes"] == info["workspace_bytes"]
    assert rows["direct"]["prepared_bytes"] == 0


def test_workspace_limit_makes_auto_choose_within_it(rng):
    x, w, b = _data(rng, (1, 64, 28, 28), (64, 64, 3, 3), np.float32)
    params, _ = conv_params(x.shape, w.shape, 1, 1, 1, 1)
    unlimited = algorithms.choose(params, np.dtype(np.float32))
    assert unlimited.startswith("winograd")
    # Explain, plan and the global setting all choose within the cap.
    small = fc.explain(x.shape, w.shape, padding=1, workspace_limit=0)
    need = {r["algorithm"]: r["workspace_bytes"] for r in small.algorithms}
    assert need[small.auto] == 0 and "workspace limit" in str(small)
    plan = fc.plan_conv2d(w, x.shape, padding=1, bias=b, workspace_limit=0)
    assert plan.workspace_bytes == 0
    try:
        fc.set_workspace_limit(0)
        assert fc.get_workspace_limit() == 0
        assert algorithms.choose(params, np.dtype(np.float32)) == small.auto
        y = fc.conv2d(x, w, b, padding=1)
        ref = fc.conv2d(x, w, b, padding=1, algorithm="reference")
        assert_close(y, ref, tolerance("direct", np.float32, 576), "capped auto")
        # A cap nothing fits: auto still runs, with the candidate that needs least.
        big = (1, 512, 64, 64), (64, 512, 1, 1)
        p2, _ = conv_params(*big, 1, 0, 1, 1)
        pick = algorithms.choose(p2, np.dtype(np.float32))
        assert pick in ("im2col", "direct")
    finally:
        fc.set_workspace_limit(None)
    assert fc.get_workspace_limit() is None
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="workspace limit"):
            fc.set_workspace_limit(bad)
        with pytest.raises(ValueError, match="workspace_limit"):
            fc.plan_conv2d(w, x.shape, workspace_limit=bad)


def test_auto_picks_are_kept_per_problem_isa_threads_and_cap(rng, monkeypatch):
    # fastconv.conv2d keeps auto's pick per problem; the ISA, thread count and workspace cap in
    # force are part of its key, so changing any of them picks again.
    x, w, b = _data(rng, (1, 64, 28, 28), (64, 64, 3, 3), np.float32)
    params, _ = conv_params(x.shape, w.shape, 1, 1, 1, 1)
    ran, real = [], fc.functional._run_conv
    monkeypatch.setattr(fc.functional, "_run_conv", lambda *a: ran.append(a[5]) or real(*a))

    def pick():
        fc.conv2d(x, w, b, padding=1)
        return ran[-1]
    first = pick()
    assert first == pick() == algorithms.choose(params, np.dtype(np.float32)) and first.startswith("winograd")
    try:
        fc.set_workspace_limit(0)
        assert algorithms.workspace_bytes(pick(), params, np.float32) == 0
    finally:
        fc.set_workspace_limit(None)
    assert pick() == first
    isa = _C.get_isa()
    try:
        _C.set_isa("scalar")
        assert pick() == algorithms.choose(params, np.dtype(np.float32))
    finally:
        _C.set_isa(isa)
    threads = fc.get_num_threads()
    try:
        fc.set_num_threads(1)
        assert pick() == algorithms.choose(params, np.dtype(np.float32))
    finally:
        fc.set_num_threads(threads)
    assert pick() == first


def test_autotuned_plan(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    x, w, b = _data(rng, (1, 16, 20, 20), (16, 16, 3, 3), np.float32)
    plan = fc.plan_conv2d(w, x.shape, padding=1, bias=b, algorithm="autotune")
    params, _ = conv_params(x.shape, w.shape, 1, 1, 1, 1)
    assert plan.algorithm in algorithms.candidates(params, np.dtype(np.float32))
    assert "|plan" in (tmp_path / "autotune.json").read_text()
    ref = fc.conv2d(x, w, b, padding=1, algorithm="reference")
    tol = tolerance(plan.algorithm, np.float32, 144)
    assert_close(plan(x), ref, tol, plan.algorithm)
    assert fc.plan_conv2d(w, x.shape, padding=1, bias=b, algorithm="autotune").algorithm == plan.algorithm


def test_plan_errors(rng):
    x, w, b = _data(rng, (1, 8, 10, 10), (4, 8, 3, 3), np.float32)
    plan = fc.plan_conv2d(w, x.shape)
    with pytest.raises(ValueError, match=r"plan was made for inputs \(N, 8, 10, 10\)"):
        plan(np.zeros((1, 8, 11, 10), np.float32))
    with pytest.raises(TypeError, match="float32"):
        plan(x.astype(np.float64))
    with pytest.raises(ValueError, match="input_shape"):
        fc.plan_conv2d(w, (8, 10, 10))
    with pytest.raises(ValueError, match="channels"):
        fc.plan_conv2d(w, (1, 9, 10, 10))
    with pytest.raises(ValueError, match="bias"):
        fc.plan_conv2d(w, x.shape, bias=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="cannot run"):
        fc.plan_conv2d(w, x.shape, stride=2, algorithm="winograd")
    with pytest.raises(TypeError, match="flip"):
        fc.plan_conv2d(w, x.shape, flip=1)
    with pytest.raises(ValueError, match="out"):
        plan(x, out=np.zeros((1, 4, 7, 7), np.float32))
    # The C++ layer checks the prepared form on its own.
    params, _ = conv_params(x.shape, w.shape, 1, 0, 1, 1)
    assert _C.prepared_bytes("direct", params, "float32") == 0
    with pytest.raises(ValueError, match="no prepared weights"):
        _C.prepare_weights("direct", params, w, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="prepared weight"):
        _C.run("conv2d_forward", "im2col", params, {"x": x, "w": np.zeros(3, np.float32),
                                                    "y": np.zeros((1, 4, 8, 8), np.float32)}, prepared=True)


@pytest.mark.parametrize("algorithm", ["winograd:2", "winograd:4", "fft:8", "im2col"])
def test_buffers_start_on_a_cache_line(algorithm, rng):
    """Workspaces and a plan's prepared weights start on 64 bytes (NumPy's own start on 16):
    the kernels read their packed operands as 64-byte vectors, which otherwise straddle two
    cache lines on every load."""
    from fastconv import _arrays
    for nbytes in (1, 1000, 3 << 20):
        assert _arrays.HOST.workspace(nbytes, slot="alignment-test").ctypes.data % 64 == 0
        a = _arrays.HOST.empty((nbytes,), np.float32)
        assert a.ctypes.data % 64 == 0 and a.shape == (nbytes,) and a.flags.c_contiguous and a.flags.writeable
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    plan = fc.plan_conv2d(w, x.shape, padding=1, algorithm=algorithm)
    assert plan._prepared is None or plan._prepared.ctypes.data % 64 == 0
    np.testing.assert_allclose(plan(x), fc.conv2d(x, w, padding=1, algorithm="reference"), rtol=1e-4, atol=1e-4)
