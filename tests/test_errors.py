"""Every bad input of DESIGN.md's list raises ValueError/TypeError naming the
argument and its values, before C++ runs; the C++ layer re-checks on its own."""
import importlib.util
import pathlib

import numpy as np
import pytest

import bad_inputs
import fastconv
from fastconv import _C

ROOT = pathlib.Path(__file__).resolve().parent.parent

X = np.zeros((2, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(x=np.zeros((4, 8, 8), np.float32)), ValueError, ["input", "4-D"]),
    (dict(w=np.zeros((6, 4, 3), np.float32)), ValueError, ["weight", "4-D"]),
    (dict(w=np.zeros((6, 3, 3, 3), np.float32)), ValueError, ["C=4", "groups"]),
    (dict(w=np.zeros((6, 2, 3, 3), np.float32), groups=4), ValueError, ["C=4"]),
    (dict(w=np.zeros((6, 1, 3, 3), np.float32), groups=4), ValueError, ["K=6", "groups=4"]),
    (dict(groups=0), ValueError, ["groups"]),
    (dict(stride=0), ValueError, ["stride", "0"]),
    (dict(stride=(1, -2)), ValueError, ["stride"]),
    (dict(dilation=0), ValueError, ["dilation"]),
    (dict(padding=-1), ValueError, ["padding"]),
    (dict(padding=((0, -1), (0, 0))), ValueError, ["padding"]),
    (dict(padding="middle"), ValueError, ["padding", "middle"]),
    (dict(padding=(1, 2, 3)), ValueError, ["padding"]),
    (dict(w=np.zeros((6, 4, 9, 3), np.float32)), ValueError, ["kernel height 9", "padded input"]),
    (dict(w=np.zeros((6, 4, 3, 3), np.float32), dilation=5), ValueError, ["dilated to 11"]),
    (dict(x=X.astype(np.int32), w=W.astype(np.int32)), TypeError, ["int32", "float32, float64"]),
    (dict(x=X.astype(np.float16), w=W.astype(np.float16)), TypeError, ["float16"]),
    (dict(w=W.astype(np.float64)), TypeError, ["input=float32", "weight=float64"]),
    (dict(bias=np.zeros(6, np.float64)), TypeError, ["bias=float64"]),
    (dict(bias=np.zeros(5, np.float32)), ValueError, ["bias", "(6,)"]),
    (dict(x=[[1.0]]), TypeError, ["numpy.ndarray", "list"]),
    (dict(stride=1.5), TypeError, ["stride"]),
    (dict(stride=True), TypeError, ["stride"]),
    (dict(algorithm="bogus"), ValueError, ["bogus", "direct", "im2col"]),
    (dict(algorithm="fft", stride=2), ValueError, ["fft", "stride 1", "stride (2, 2)"]),
    (dict(algorithm="winograd", stride=2), ValueError, ["winograd", "stride 1", "stride (2, 2)"]),
    (dict(algorithm=3), TypeError, ["algorithm"]),
    (dict(flip="yes"), TypeError, ["flip"]),
    (dict(out=np.zeros((2, 6, 6, 5), np.float32)), ValueError, ["out", "(2, 6, 6, 6)"]),
    (dict(out=np.zeros((2, 6, 6, 6), np.float64)), ValueError, ["out", "float64"]),
    (dict(out=np.zeros((2, 6, 6, 12), np.float32)[..., ::2]), ValueError, ["contiguous"]),
])
def test_conv2d_rejects(kwargs, exc, words):
    args = dict(x=X, w=W, bias=None, stride=1, padding=0, dilation=1, groups=1)
    args.update(kwargs)
    x, w = args.pop("x"), args.pop("w")
    with pytest.raises(exc) as info:
        fastconv.conv2d(x, w, **args)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_int64_overflow_is_rejected():
    with pytest.raises(ValueError, match="int64"):
        fastconv.explain((2**40, 2**20, 2**10, 2**10), (1, 2**20, 1, 1))


def test_conv1d_rejects_wrong_rank():
    with pytest.raises(ValueError, match="3-D"):
        fastconv.conv1d(X, W)


def test_cpp_rechecks_params():
    """A problem that bypasses Python's checks is refused by C++ with ValueError."""
    p = _C.ConvParams()
    p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q = 1, 4, 8, 8, 6, 3, 3, 6, 6
    y = np.empty((1, 6, 6, 6), np.float32)
    x = np.zeros((1, 4, 8, 8), np.float32)
    w = np.zeros((6, 4, 3, 3), np.float32)
    _C.run("conv2d_forward", "direct", p, {"x": x, "w": w, "y": y})  # consistent: runs
    bad = [("stride_h", 0, "stride"), ("groups", 3, "groups"), ("P", 0, "output size"),
           ("pad_w", -1, "padding"), ("dil_h", 0, "dilation")]
    for field, value, word in bad:
        q = _C.ConvParams()
        for f in ("N", "C", "H", "W", "K", "R", "S", "P", "Q"):
            setattr(q, f, getattr(p, f))
        setattr(q, field, value)
        with pytest.raises(ValueError, match=word):
            _C.run("conv2d_forward", "direct", q, {"x": x, "w": w, "y": y})
    with pytest.raises(ValueError, match="dimension 3"):
        _C.run("conv2d_forward", "im2col", p, {"x": x, "w": w, "y": np.empty((1, 6, 6, 5), np.float32)})
    with pytest.raises(TypeError, match="dtype"):
        _C.run("conv2d_forward", "im2col", p, {"x": x, "w": w.astype(np.float64), "y": y})
    with pytest.raises(ValueError, match="contiguous"):
        _C.run("conv2d_forward", "im2col", p, {"x": np.zeros((1, 4, 8, 16), np.float32)[..., ::2], "w": w, "y": y})
    with pytest.raises(ValueError, match="no cpu kernel 'nope'"):
        _C.run("conv2d_forward", "nope", p, {"x": x, "w": w, "y": y})
    with pytest.raises(TypeError, match="int32"):
        _C.run("conv2d_forward", "direct", p, {"x": x.astype(np.int32), "w": w, "y": y})


def test_isa_cannot_be_raised_or_misnamed():
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("sse9")
    if _C.detected_isa() != "avx512":
        with pytest.raises(ValueError, match="not supported"):
            _C.set_isa("avx512")


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        fastconv.set_num_threads(0)
    with pytest.raises(TypeError):
        fastconv.set_num_threads("2")


def test_arrays_of_other_devices_are_refused_clearly():
    torch = pytest.importorskip("torch")
    meta = torch.zeros((1, 1, 3, 3), device="meta")
    for error in (TypeError, ValueError):
        with pytest.raises(error, match="CPU and on CUDA devices"):
            fastconv.conv2d(meta, meta)


# ---- the table of bad inputs (tests/bad_inputs.py; README.md's "Errors") -----------------------

@pytest.mark.parametrize("row", [pytest.param(r, id=r.what, marks=[pytest.mark.cuda] if r.cuda else [])
                                 for r in bad_inputs.ROWS])
def test_bad_input_table(row):
    """Each row's call raises its exception with exactly its message (or, for an accepted edge
    case, returns what the row says)."""
    exc, message = bad_inputs.run(row)
    assert (exc, message) == (row.exception, row.message)
    if row.exception is not None:
        with pytest.raises((ValueError, TypeError, MemoryError)):
            eval(row.call, bad_inputs.namespace())  # noqa: S307 (the table's own source)


def test_bad_input_table_covers_issue_19():
    """The kinds of bad input issue 19 asks the table to hold, each in at least one row."""
    kinds = ["wrong rank", "channel mismatch", "groups do not divide", "groups 0", "stride 0", "dilation 0",
             "negative padding", "kernel larger than the padded input", "output size < 1", "unsupported dtype",
             "mixed dtypes", "mixed devices", "unknown algorithm", "unknown padding string", "non-integer stride",
             "object array", "plain list", "pooling kernel 0", "pooling padding more than half the kernel",
             "adaptive output size 0", "Lp norm 0", "backward grad of the wrong shape"]
    whats = [r.what for r in bad_inputs.ROWS]
    assert [k for k in kinds if not any(w.startswith(k) for w in whats)] == []


def test_readme_errors_table_is_the_rows():
    """README.md's Errors table is tools/errors_table.py's rendering of the rows."""
    spec = importlib.util.spec_from_file_location("errors_table", ROOT / "tools" / "errors_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    readme = (ROOT / "README.md").read_text()
    assert tool.with_table(readme, bad_inputs.render()) == readme, "run python tools/errors_table.py"
