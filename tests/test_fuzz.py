"""Fuzzing (issue 19, item 1): hypothesis draws random calls of every convolution and pooling
op, valid and invalid, forward and backward, on the CPU and on the CUDA device (the emulator
here: tests marked ``cuda``). Each call must either match the NumPy reference at the
algorithm's tolerance, with the right shape and array type, or raise ValueError/TypeError with
a message; never crash, hang or return a wrong shape.

Whether a draw is valid is decided by the predicates below, written from the contract
(docs/api.md, and torch's rules where it says "as torch"), not from fastconv's own checks
(_args.py): the test asserts that fastconv raises exactly when the predicate says invalid. On
the CPU, where torch can express the problem, torch must also agree on validity, so an
"invalid" draw is invalid for torch too and not just for fastconv and this file.

Sizes are small (the reference is NumPy); a few draws take 2**40 or 2**62 for a stride, pad,
kernel or output size: such a call must raise ValueError/MemoryError, or, when its output is
empty, return the right shape (it is not computed against the reference).

Budget: 200 examples per test by default (CI: about 20 s for the four tests with the emulator);
``FASTCONV_FUZZ_EXAMPLES=N`` sets max_examples per test for a long run, and
``FASTCONV_FUZZ_PROGRESS=PATH`` writes its counts and the call each test is running (a crash
stops the process before hypothesis can report). Failing examples are kept in .hypothesis/
(ignored by git) and replayed first on the next run.
"""
import faulthandler
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import emulated
import fastconv
from cases import CONV_ROWS, CONV_BACKWARD_ROWS, pool_case, pool_rows
from compare import (CONV_TOLERANCE, POOL_BACKWARD_TOLERANCE, POOL_TOLERANCE,
                     pool_reference_backward, pool_reference_forward)
from fastconv import reference as ref

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch cross-check of validity is skipped without torch
    torch = F = None

EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "200"))
# A call that takes longer than this is a hang: faulthandler prints every thread's stack and
# exits the run (the emulator runs a small conv in well under a second).
HANG_SECONDS = 120

# FASTCONV_FUZZ_PROGRESS=PATH: each test writes "<examples run> <valid ones>" to PATH.<test>
# every 100 examples and at its end (a long run's count, even if it is stopped).
PROGRESS = os.environ.get("FASTCONV_FUZZ_PROGRESS")
_counts = {}


def log_call(test, desc):
    """With FASTCONV_FUZZ_PROGRESS, the call about to run goes to PATH.<test>.last: what a crash
    (which stops the run before hypothesis can report its example) was running."""
    if PROGRESS:
        with open(f"{PROGRESS}.{test}.last", "w") as f:
            f.write(desc + "\n")


def count_example(test, valid, final=False):
    c = _counts.setdefault(test, [0, 0])
    if not final:
        c[0] += 1
        c[1] += bool(valid)
    if PROGRESS and (final or c[0] % 100 == 0):
        with open(f"{PROGRESS}.{test}", "w") as f:
            f.write(f"{c[0]} {c[1]}\n")


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

EMULATING = emulated.emulating()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
ALLOWED = (ValueError, TypeError)


class Invalid(Exception):
    """The contract says this call must raise (the message says which rule)."""


class NotForTorch(Exception):
    """A rule of fastconv's own (dtypes, devices, out=, ...) that torch does not share: no
    torch cross-check for this draw."""


class Fuzz:
    """The draw of one call: ``data`` and whether this call may be invalid. Four draws in ten
    may break rules, each rule at its own rate; the others break none (a call breaking one of a
    dozen rules at random would almost never be valid)."""

    def __init__(self, data):
        self.data = data
        self.invalid = data.draw(st.integers(0, 9), label="may be invalid") < 4

    def draw(self, strategy, label):
        return self.data.draw(strategy, label=label)

    def bad(self, label, one_in):
        """True for about one invalid call in ``one_in`` (never for a valid one)."""
        return self.invalid and self.data.draw(st.integers(0, one_in - 1), label=label) == 0


# ---- arrays: values, dtypes, layouts, devices -----------------------------------------------

GOOD_DTYPES = [np.float32, np.float64]
BAD_DTYPES = [np.int32, np.float16, np.complex64, np.bool_, object]
HOST_LAYOUTS = ["contiguous", "strided", "fortran", "channels_last", "reversed", "readonly"]
TORCH_LAYOUTS = ["torch", "torch_channels_last"]


def layout_of(host, layout):
    """``host`` (C-contiguous) as an array of the same values in another memory layout:
    a strided view, Fortran order, channels-last (NHWC memory seen as NCHW), reversed strides,
    read-only, or a torch CPU tensor (contiguous or torch.channels_last)."""
    if layout == "contiguous" or host.dtype == object:
        return host
    if layout == "strided":
        big = np.zeros(host.shape[:-1] + (2 * host.shape[-1],), host.dtype) if host.ndim else host.copy()
        if not host.ndim:
            return big
        big[..., ::2] = host
        return big[..., ::2]
    if layout == "fortran":
        return np.asfortranarray(host)
    if layout == "channels_last":
        if host.ndim < 3:
            return host
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(host, 1, -1)), -1, 1)
    if layout == "reversed":
        if not host.ndim:
            return host
        return np.ascontiguousarray(host[..., ::-1])[..., ::-1]
    if layout == "readonly":
        a = host.copy()
        a.flags.writeable = False
        return a
    t = torch.from_numpy(host.copy())
    if layout == "torch_channels_last" and host.ndim == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def on(device, a):
    """An array for ``device``: itself on the CPU, an emulated CUDA array on 'cuda'."""
    if device == "cuda" and isinstance(a, np.ndarray):
        return emulated.EmulatedArray(a)
    return a


def host_of(a):
    if isinstance(a, emulated.EmulatedArray):
        return a.get()
    if torch is not None and isinstance(a, torch.Tensor):
        return a.numpy()
    return np.asarray(a)


def draw_layout(data, device):
    layouts = HOST_LAYOUTS + (TORCH_LAYOUTS if device == "cpu" and torch is not None else [])
    return data.draw(st.sampled_from(layouts), label="layout")


class ArrayMaker:
    """Makes a call's arrays: the values (NumPy, for the reference) and what fastconv gets (a
    dtype, layout and device of the draw), with the contract's verdict on them."""

    def __init__(self, fz, device):
        data = fz.data
        self.data, self.device = data, device
        self.dtype = data.draw(st.sampled_from(GOOD_DTYPES), label="dtype")
        self.layout = draw_layout(data, device)
        self.bad = "none"
        if fz.bad("bad array", 3):
            self.bad = data.draw(st.sampled_from(["dtype", "mixed_dtype", "list", "device", "not_array"]),
                                 label="bad array")
        # Which of the call's arrays gets the bad property (drawn later, by name).
        self.bad_slot = None
        self.kind = "torch" if self.layout.startswith("torch") else ("emulated" if device == "cuda" else "numpy")

    def make(self, name, host_values, slots):
        """``host_values`` (float64) as the array passed for ``name`` (one of ``slots``)."""
        if self.bad in ("mixed_dtype", "device") and len(slots) == 1:
            self.bad = "none"  # one array cannot mix with another: it is just another dtype or device
        if self.bad != "none" and self.bad_slot is None:
            self.bad_slot = self.data.draw(st.sampled_from(slots), label="bad slot")
        a = host_values.astype(self.dtype)
        if self.bad_slot == name:
            if self.bad == "dtype":
                dt = self.data.draw(st.sampled_from(BAD_DTYPES), label="bad dtype")
                return np.array(a, dtype=dt) if dt is object else a.astype(dt)
            if self.bad == "mixed_dtype":
                return on(self.device, a.astype(np.float64 if self.dtype == np.float32 else np.float32))
            if self.bad == "list":
                return a.tolist()
            if self.bad == "not_array":
                return self.data.draw(st.sampled_from([3.0, "x", 2]), label="not an array")
            if self.bad == "device":
                if self.device == "cuda":
                    return a  # a NumPy array among CUDA ones
                if not EMULATING:  # no second device to mix in: a list is refused all the same
                    return a.tolist()
                return emulated.EmulatedArray(np.ascontiguousarray(a))
        return on(self.device, layout_of(a, self.layout if self.device == "cpu" else
                                         self.layout if not self.layout.startswith("torch") else "contiguous"))

    def verdict(self):
        """Raise Invalid when a bad array was passed (the contract: TypeError, or
        DeviceMismatchError for devices)."""
        if self.bad_slot is not None:
            raise Invalid(f"bad array {self.bad} in {self.bad_slot}")


def describe_value(v):
    shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
    if shape is None:
        return repr(v) if not isinstance(v, list) else f"list{np.shape(v)}"
    strides = getattr(v, "strides", None) if isinstance(v, np.ndarray) else None
    return f"{type(v).__name__}{tuple(shape)} {dtype}" + (f" strides={strides}" if strides else "")


def describe(fn, arrays, kw):
    """One line: the call, its arrays by type, shape, dtype and strides."""
    args = ", ".join(describe_value(a) for a in arrays)
    return f"{fn}({args}, " + ", ".join(f"{k}={describe_value(v)}" for k, v in kw.items()) + ")"


def check_result_type(result, kind):
    if kind == "torch":
        assert isinstance(result, torch.Tensor), type(result)
    elif kind == "emulated":
        assert isinstance(result, emulated.EmulatedArray), type(result)
    else:
        assert isinstance(result, np.ndarray), type(result)


def assert_is_out(result, out, kind):
    """out= is what a call returns; for torch inputs (torch in, torch out) a tensor on out's memory."""
    if kind == "torch":
        assert isinstance(result, torch.Tensor), type(result)
        assert result.shape == out.shape and (out.size == 0 or np.shares_memory(result.numpy(), out))
    else:
        assert result is out, (type(result), type(out))


def guarded(call):
    """Run ``call`` with the hang guard on."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        return call()
    finally:
        faulthandler.cancel_dump_traceback_later()


# Outputs larger than this (bytes) are not computed here (the huge draws, 2**40 and 2**62, make
# outputs of a TiB or more, or none): such a call may raise MemoryError (or ValueError, for
# sizes past int64) instead of running, and is checked for its shape only.
HUGE_BYTES = 2**30


def is_huge(shape):
    """Whether an output of ``shape`` could not be allocated were its batch not empty."""
    return math.prod(max(d, 1) for d in shape) * 8 > HUGE_BYTES


def check_huge(call, shape):
    """A valid call whose output is huge: MemoryError or ValueError (past what NumPy or int64
    can index) with a message, or, when no memory is needed (an empty batch), the result's
    right shape."""
    try:
        got = guarded(call)
    except ALLOWED + (MemoryError,) as e:
        assert str(e).strip(), f"empty message from {type(e).__name__}"
        return
    got = got if isinstance(got, tuple) else (got,)
    assert tuple(host_of(got[0]).shape) == tuple(shape), (host_of(got[0]).shape, shape)


def expect_raise(call, why, huge=False):
    """The call must raise ValueError/TypeError with a message (it is invalid: ``why``), or
    MemoryError too for an output of more than HUGE_BYTES."""
    allowed = ALLOWED + ((MemoryError,) if huge else ())
    try:
        guarded(call)
    except allowed as e:
        assert str(e).strip(), f"empty message from {type(e).__name__} ({why})"
        return e
    pytest.fail(f"fastconv accepted an invalid call ({why})")


# ---- scalars: ints, tuples ------------------------------------------------------------------

def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def per_axis(v, nd, name):
    """The contract's "an int or a tuple of nd ints" as a tuple, or Invalid (NotForTorch for a
    non-integer: torch reads True as 1)."""
    if isinstance(v, tuple):
        if not all(is_int(e) for e in v):
            raise NotForTorch(f"{name}={v!r} holds a non-integer")
        if len(v) != nd:
            raise Invalid(f"{name}={v!r} is not {nd} ints")
        return tuple(int(e) for e in v)
    if not is_int(v):
        raise NotForTorch(f"{name}={v!r} is not an int")
    return (int(v),) * nd


def positive(t, name):
    if any(e <= 0 for e in t):
        raise Invalid(f"{name}={t} not positive")
    return t


def int_or_tuple(fz, nd, label, lo, hi, bad_values):
    """An int in [lo, hi] or an nd-tuple of them; sometimes a bad value."""
    data = fz.data
    if fz.bad(label + " bad", 6):
        return data.draw(st.sampled_from(bad_values + [(lo,) * (nd + 1)]), label=label + " (bad)")
    kind = data.draw(st.sampled_from(["int", "tuple"]), label=label + " form")
    if kind == "int":
        return data.draw(st.integers(lo, hi), label=label)
    return tuple(data.draw(st.lists(st.integers(lo, hi), min_size=nd, max_size=nd), label=label))


# ---- convolution ----------------------------------------------------------------------------

def conv_pads(padding, nd, sizes, kernel, stride, dilation):
    """The contract's padding forms (docs/api.md, Padding) as ((lo, hi),) * nd, or Invalid."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "full":
            return tuple((dilation[i] * (kernel[i] - 1),) * 2 for i in range(nd))
        if padding == "same":
            pads = []
            for i in range(nd):
                out = math.ceil(sizes[i] / stride[i])
                total = max((out - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 - sizes[i], 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise Invalid(f"unknown padding {padding!r}")
    if is_int(padding):
        pads = ((int(padding),) * 2,) * nd
    elif isinstance(padding, tuple) and nd == 2 and len(padding) == 2 and all(is_int(e) for e in padding):
        pads = tuple((int(p), int(p)) for p in padding)
    elif (isinstance(padding, tuple) and len(padding) == nd
          and all(isinstance(e, tuple) and len(e) == 2 and all(is_int(v) for v in e) for e in padding)):
        # per side, one (lo, hi) pair per spatial axis (1-D: also ((left, right),))
        pads = tuple(tuple(int(v) for v in e) for e in padding)
    elif isinstance(padding, tuple) and nd == 1 and len(padding) == 2 and all(is_int(e) for e in padding):
        pads = ((int(padding[0]), int(padding[1])),)
    else:
        raise Invalid(f"padding {padding!r} is no form of the contract")
    if any(v < 0 for pair in pads for v in pair):
        raise Invalid(f"negative padding {padding!r}")
    return pads


def draw_padding(fz, nd):
    data = fz.data
    form = "bad" if fz.bad("padding bad", 5) else data.draw(
        st.sampled_from(["int", "pair", "per_side", "valid", "same", "full"]), label="padding form")
    small = st.integers(0, 3)
    if form == "int":
        return data.draw(small, label="padding")
    if form == "pair":
        return tuple(data.draw(st.lists(small, min_size=2, max_size=2), label="padding"))
    if form == "per_side":
        if nd == 1:
            return tuple(data.draw(st.lists(small, min_size=2, max_size=2), label="padding"))
        return tuple(tuple(data.draw(st.lists(small, min_size=2, max_size=2))) for _ in range(2))
    if form == "bad":
        return data.draw(st.sampled_from([-1, (0, -2), ((0, 1), (-1, 0)), "middle", "", "SAME ", 1.5, (1, 2, 3),
                                          ((1, 1),), ((1, 2, 3), (0, 0)), None, 2**40, 2**62]), label="padding (bad)")
    return form


def conv_algorithms(device, backward, bad):
    """The names ``algorithm=`` may take on ``device``: the kernel table's rows and the
    policies; with ``bad``, the aliases, the reference (valid on the CPU), forward-only rows for
    a backward call and names no table has."""
    rows = CONV_BACKWARD_ROWS if backward else CONV_ROWS
    names = [r.algorithm for r in rows if r.device == device] + ["auto"] + ([] if backward else ["autotune"])
    if device == "cpu":
        names += ["reference"] + ([] if backward else ["winograd", "fft"])
    if not bad:
        return names
    return ["bogus", "", "AUTO", "winograd", "fft", "reference", "autotune"] + [
        r.algorithm for r in CONV_ROWS if r.algorithm not in names]


def serves(algorithm, device, backward, dtype, kernel, stride, dilation):
    """docs/api.md's table: what each algorithm serves (on the CPU and on CUDA)."""
    name = algorithm.split(":")[0]
    if algorithm in ("bogus", "", "AUTO"):
        raise Invalid(f"unknown algorithm {algorithm!r}")
    if algorithm == "autotune" and backward:
        raise Invalid("autotune has no backward")
    if algorithm in ("auto", "autotune"):
        return
    if device == "cuda" and name not in ("direct", "im2col"):
        raise Invalid(f"{algorithm} does not run on GPU arrays")
    if backward:
        if name not in ("direct", "im2col", "reference"):
            raise Invalid(f"{algorithm} has no backward")
        return
    if name in ("winograd", "fft"):
        if np.dtype(dtype) != np.float32:
            raise Invalid(f"{algorithm} is float32 only")
        if stride != (1, 1) or dilation != (1, 1):
            raise Invalid(f"{algorithm}: stride 1 and dilation 1 only")
        if name == "winograd" and kernel != (3, 3):
            raise Invalid("winograd: 3x3 only")
        limit = 7 if algorithm == "fft:8" else 15
        if name == "fft" and max(kernel) > limit:
            raise Invalid(f"{algorithm}: kernels up to {limit}")


def tolerance_of(algorithm, dtype, reduction):
    """compare.tolerance for one kernel; for a policy or an alias, the loosest kernel it may
    pick (the tolerance is only a bound: each is tested at its own in test_conv.py)."""
    dt = np.dtype(dtype).type
    if algorithm in CONV_TOLERANCE:
        names = [algorithm]
    elif algorithm in ("winograd", "fft"):
        names = [n for n in CONV_TOLERANCE if n.startswith(algorithm)]
    elif algorithm == "reference":
        names = ["direct"]
    else:
        names = list(CONV_TOLERANCE)
    tol = max(CONV_TOLERANCE[n][dt] for n in names if dt in CONV_TOLERANCE[n])
    return tol * max(1.0, math.sqrt(reduction)) * 4


def draw_conv(data, device):
    """One random conv call: (function, args, kwargs, verdict, reference thunk, meta)."""
    fz = Fuzz(data)
    nd = data.draw(st.sampled_from([1, 2]), label="nd")
    backward = data.draw(st.booleans(), label="backward")
    via_plan = nd == 2 and not backward and device == "cpu" and data.draw(st.integers(0, 7), label="plan") == 0
    rank_x = nd + 2 + (data.draw(st.sampled_from([-1, 1]), label="x rank error") if fz.bad("x rank", 12) else 0)
    rank_w = nd + 2 + (data.draw(st.sampled_from([-1, 1]), label="w rank error") if fz.bad("w rank", 12) else 0)
    groups = data.draw(st.sampled_from([1, 1, 2, 3]), label="groups")
    if fz.bad("groups bad", 10):
        groups = data.draw(st.sampled_from([0, -1, 1.0, True, "2"]), label="groups (bad)")
    g = groups if is_int(groups) and groups > 0 else 1
    cg = data.draw(st.integers(1, 4), label="C/groups")
    c = cg * g + (data.draw(st.sampled_from([-1, 1]), label="channel error") if fz.bad("channels", 8) else 0)
    k = g * data.draw(st.integers(1, 4), label="K/groups") + (1 if fz.bad("K % groups", 8) else 0)
    n = data.draw(st.sampled_from([0, 1, 1, 2, 3]), label="N")
    sizes = tuple(data.draw(st.integers(1, 11), label="size") for _ in range(nd))
    if fz.bad("empty dim", 10):
        axis = data.draw(st.integers(0, nd), label="empty axis")
        if axis == 0:
            c = 0
        else:
            sizes = sizes[:axis - 1] + (0,) + sizes[axis:]
    kernel = tuple(data.draw(st.integers(1, 5), label="kernel") for _ in range(nd))
    if fz.bad("kernel 0", 12):
        kernel = (0,) + kernel[1:]
    stride = int_or_tuple(fz, nd, "stride", 1, 3, [0, -1, 1.5, True, "1", 2**40] + ([(1, 0)] if nd == 2 else []))
    dilation = int_or_tuple(fz, nd, "dilation", 1, 3, [0, -2, 2.0, False])
    padding = draw_padding(fz, nd)
    flip = "yes" if fz.bad("flip bad", 15) else data.draw(st.booleans(), label="flip")
    algorithm = data.draw(st.sampled_from(conv_algorithms(device, backward, fz.bad("algorithm bad", 6))),
                          label="algorithm")
    if fz.bad("algorithm type", 15):
        algorithm = 3
    with_bias = not backward and data.draw(st.booleans(), label="bias")
    bias_len = k + (1 if fz.bad("bias length", 10) else 0)

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x_shape = (n, c) + sizes
    w_shape = (k, cg) + kernel
    x_shape = (x_shape + (2,) * 3)[:rank_x]
    w_shape = (w_shape + (2,) * 3)[:rank_w]
    x_vals = rng.standard_normal(x_shape)
    w_vals = rng.standard_normal(w_shape)
    b_vals = rng.standard_normal(bias_len)

    arrays = ArrayMaker(fz, device)
    dtype = arrays.dtype
    slots = ["input", "weight"] + (["bias"] if with_bias else []) + (["grad_y"] if backward else [])
    x = arrays.make("input", x_vals, slots)
    w = arrays.make("weight", w_vals, slots)
    b = arrays.make("bias", b_vals, slots) if with_bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    # ---- the verdict, from the contract ----
    reasons = []
    torch_ok = True
    pads = None
    try:
        try:
            arrays.verdict()
        except Invalid:
            raise NotForTorch(f"bad array {arrays.bad} in {arrays.bad_slot}") from None
        if not isinstance(flip, bool):
            raise NotForTorch("flip not a bool")
        if rank_x != nd + 2 or rank_w != nd + 2:
            raise Invalid("wrong rank")
        if not is_int(groups):
            raise NotForTorch("groups not an int")
        if groups <= 0:
            raise Invalid("groups not positive")
        if c <= 0 or min(sizes) <= 0 or min(kernel) <= 0:
            raise Invalid("empty channel, spatial or kernel dimension")
        if c != cg * groups:
            raise Invalid("channel mismatch")
        if k % groups:
            raise Invalid("K % groups")
        st_t = positive(per_axis(stride, nd, "stride"), "stride")
        dl_t = positive(per_axis(dilation, nd, "dilation"), "dilation")
        try:
            pads = conv_pads(padding, nd, sizes, kernel, st_t, dl_t)
        except Invalid as e:
            raise NotForTorch(str(e)) from None  # torch has no 'full', and F.pad crops on negative pads
        for i in range(nd):
            if dl_t[i] * (kernel[i] - 1) + 1 > sizes[i] + pads[i][0] + pads[i][1]:
                raise Invalid("kernel larger than the padded input")
        if with_bias and bias_len != k:
            raise Invalid("bias length")
        # A stride past the padded input gives one output whatever its value: it limits nothing
        # (the 32-bit rule, Winograd's and FFT's stride 1).
        st_eff = tuple(min(st_t[i], sizes[i] + sum(pads[i]) - dl_t[i] * (kernel[i] - 1)) for i in range(nd))
        if device == "cuda" and max(st_eff + dl_t + tuple(v for pair in pads for v in pair)) >= 2**30:
            raise NotForTorch("the CUDA kernels index with 32 bits: strides, dilations, pads below 2^30")
        try:
            if not isinstance(algorithm, str):
                raise Invalid("algorithm not a string")
            serves(algorithm, device, backward, dtype, (1,) * (2 - nd) + kernel,
                   (1,) * (2 - nd) + st_eff, (1,) * (2 - nd) + dl_t)
        except Invalid as e:
            raise NotForTorch(str(e)) from None
    except Invalid as e:
        reasons.append(str(e))
    except NotForTorch as e:
        reasons.append(str(e))
        torch_ok = False

    gy = None
    out_shape = None
    meta_huge = False
    if pads is not None and rank_x == nd + 2 and rank_w == nd + 2:
        # the output's shape (even of a call invalid for another reason: a huge one may raise
        # MemoryError before the other check)
        out_sizes = tuple((sizes[i] + pads[i][0] + pads[i][1] - dl_t[i] * (kernel[i] - 1) - 1) // st_t[i] + 1
                          for i in range(nd))
        meta_huge = is_huge((n, k) + out_sizes)
        torch_ok = torch_ok and not meta_huge
        if not reasons:
            out_shape = (n, k) + out_sizes
    if backward:
        gy_shape = out_shape if out_shape is not None and not meta_huge else (n, max(k, 1)) + (2,) * nd
        if fz.bad("grad_y shape", 8):
            gy_shape = gy_shape[:-1] + (gy_shape[-1] + 1,)
            if not reasons:
                reasons.append("grad_y of the wrong shape")
                torch_ok = False
        gy_vals = rng.standard_normal(gy_shape)
        gy = arrays.make("grad_y", gy_vals, slots)
        needs = data.draw(st.sampled_from([(True, True, True)] * 3 + [(True, False, False), (False, True, True),
                                                                         (False, False, False)]), label="needs")
        if fz.bad("needs bad", 12):
            needs = data.draw(st.sampled_from([(True, True), (1, 1, 1)]), label="needs (bad)")
        if not reasons and (len(needs) != 3 or not all(isinstance(v, bool) for v in needs)):
            reasons.append("needs not three bools")
            torch_ok = False
    out = None
    if not backward and not via_plan and data.draw(st.integers(0, 5), label="out") == 0:
        good_shape = out_shape if out_shape is not None and not meta_huge else (1,)
        form = data.draw(st.sampled_from(["shape", "dtype", "strided"]), label="out form") if fz.bad("out bad", 2) \
            else "good"
        shape = good_shape if form != "shape" else good_shape[:-1] + (good_shape[-1] + 1,)
        odt = dtype if form != "dtype" else (np.float64 if dtype == np.float32 else np.float32)
        out = np.full(shape if form != "strided" else shape[:-1] + (2 * shape[-1],), np.nan, odt)
        if form == "strided":
            out = out[..., ::2]
            if out.flags.c_contiguous:  # NumPy calls it C-contiguous (an axis of size 0 or 1): so does the contract
                form = "good"
        out = on(device, out) if form != "strided" else out
        if not reasons and form != "good":
            reasons.append(f"out= {form}")
            torch_ok = False

    if backward:
        fn = getattr(fastconv, f"conv{nd}d_backward")
        call = lambda: fn(gy, x, w, **kw, flip=flip, algorithm=algorithm, needs=needs)  # noqa: E731
    elif via_plan:
        def call():
            plan = fastconv.plan_conv2d(w, np.shape(host_of(x)), **kw, bias=b, flip=flip, algorithm=algorithm)
            return plan(x)
    else:
        fn = getattr(fastconv, f"conv{nd}d")
        call = lambda: fn(x, w, b, **kw, flip=flip, algorithm=algorithm, out=out)  # noqa: E731

    meta = dict(nd=nd, backward=backward, algorithm=algorithm, dtype=dtype, kind=arrays.kind, out=out,
                reasons=reasons, torch_ok=torch_ok, huge=meta_huge, x_shape=x_shape, out_shape=out_shape,
                desc=describe(f"conv{nd}d" + ("_backward" if backward else "") + (" (plan)" if via_plan else ""),
                              (gy, x, w, b) if backward else (x, w, b), dict(kw, flip=flip, algorithm=algorithm,
                              needs=needs if backward else None, out=out)))
    if not reasons and not meta_huge:
        meta.update(pads=pads, stride=st_t, dilation=dl_t, groups=groups, flip=flip,
                    x=host_of(x).astype(np.float64), w=host_of(w).astype(np.float64),
                    b=None if b is None else host_of(b).astype(np.float64),
                    gy=None if gy is None else host_of(gy).astype(np.float64), needs=needs if backward else None)
    meta["torch_args"] = (x_shape, w_shape, stride, padding, dilation, groups, bias_len if with_bias else None,
                          nd, pads)
    return call, meta


def lift(a, nd):
    """A 1-D problem's array as the 2-D one with H = 1."""
    return a if nd == 2 else a[:, :, None, :]


def conv_reference(meta, magnitude=False):
    """(y,) or (grad_x, grad_w, grad_b) of the NumPy oracle (float64 accumulation) for a valid
    draw; with ``magnitude``, of |x|, |w|, |b|, |grad_y|: each output's sum of |terms|, the
    scale of its rounding error (a result that cancels to near 0 still carries it)."""
    nd = meta["nd"]
    x, w = lift(meta["x"], nd), lift(meta["w"], nd)
    if magnitude:
        x, w = np.abs(x), np.abs(w)
        meta = dict(meta, b=None if meta["b"] is None else np.abs(meta["b"]),
                    gy=None if meta["gy"] is None else np.abs(meta["gy"]))
    if meta["flip"]:
        w = w[:, :, ::-1, ::-1]
    two = lambda t, fill: (fill,) * (2 - nd) + tuple(t)  # noqa: E731
    pads = ((0, 0),) * (2 - nd) + tuple(meta["pads"])
    stride, dil = two(meta["stride"], 1), two(meta["dilation"], 1)
    if not meta["backward"]:
        y = ref.conv2d(x, w, meta["b"], stride=stride, pads=pads, dilation=dil, groups=meta["groups"])
        return (y if nd == 2 else y[:, :, 0, :],)
    gy = lift(meta["gy"], nd)
    gx, gw, gb = ref.conv2d_backward(gy, x, w, stride=stride, pads=pads, dilation=dil, groups=meta["groups"])
    if meta["flip"]:
        gw = gw[:, :, ::-1, ::-1]
    if nd == 1:
        gx, gw = gx[:, :, 0, :], gw[:, :, 0, :]
    return gx, gw, gb


def assert_close_to(got, want, magnitude, tol, what):
    """compare.assert_close's check (shape, finite, max error <= tol x a scale), the scale being
    the larger of max |want| and max of the sums of |terms| (``magnitude``)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values in output"
    if not want.size:
        return
    scale = max(float(np.max(np.abs(want))), float(np.max(magnitude)), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(got.dtype).astype(np.float64))))
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:.1e} x {scale:.3e}"


def torch_accepts_conv(meta):
    """Whether torch runs the problem (zero padding by F.pad, then a 'valid' conv), or None
    when torch cannot express it (a draw whose invalidity is fastconv's own rule)."""
    x_shape, w_shape, stride, padding, dilation, groups, bias_len, nd, pads = meta["torch_args"]
    if torch is None or not meta["torch_ok"]:
        return None
    big = [e for v in (stride, dilation) for e in (v if isinstance(v, tuple) else (v,)) if is_int(e) and e >= 2**31]
    if big or (pads is not None and max(v for pair in pads for v in pair) >= 2**31):
        return None  # huge arguments: torch's limits are not the contract's
    if not (len(x_shape) == nd + 2 and len(w_shape) == nd + 2) or 0 in x_shape[1:] or 0 in w_shape:
        return None  # torch takes unbatched and empty-channel inputs the contract refuses
    try:
        if pads is None:  # a padding form that is invalid before the sizes matter
            return None
        xt = torch.zeros(x_shape, dtype=torch.float64)
        flat = [v for pair in reversed(pads) for v in pair]
        xt = F.pad(xt, flat)
        wt = torch.zeros(w_shape, dtype=torch.float64)
        bt = torch.zeros(bias_len, dtype=torch.float64) if bias_len is not None else None
        conv = F.conv2d if nd == 2 else F.conv1d
        conv(xt, wt, bt, stride=stride, padding=0, dilation=dilation, groups=groups)
        return True
    except Exception:  # torch's errors are RuntimeError, ValueError, TypeError: any is "refused"
        return False


def settled_without_values(call, meta, accepted, huge_shape):
    """The checks every drawn call gets before its values: an invalid call raises (and torch
    refuses it too, where torch can express it), a valid one is accepted by torch, a huge one
    gives the right shape or MemoryError/ValueError. True when nothing is left to compare."""
    event("valid" if not meta["reasons"] else f"invalid: {meta['reasons'][0].split('=')[0]}")
    if meta["reasons"]:
        expect_raise(call, "; ".join(meta["reasons"]), meta["huge"])
        if accepted is not None:
            assert not accepted, f"torch accepts what the predicate calls invalid: {meta['reasons']}"
        return True
    if accepted is not None:
        assert accepted, "torch refuses what the predicate calls valid"
    if meta["huge"]:
        check_huge(call, huge_shape)
        return True
    return False


def check_conv(call, meta):
    if settled_without_values(call, meta, torch_accepts_conv(meta),
                              meta["out_shape"] if not meta["backward"] else meta["x_shape"]):
        return
    got = guarded(call)
    want, scale = conv_reference(meta), conv_reference(meta, magnitude=True)
    dtype = meta["dtype"]
    if not meta["backward"]:
        check_result_type(got, meta["kind"])
        if meta["out"] is not None:
            assert_is_out(got, meta["out"], meta["kind"])
        red = int(np.prod(meta["w"].shape[1:]))
        assert_close_to(host_of(got), want[0], scale[0], tolerance_of(meta["algorithm"], dtype, red), "forward")
        assert host_of(got).dtype == dtype
        return
    assert isinstance(got, tuple) and len(got) == 3
    n, k = meta["out_shape"][:2]
    w_shape = meta["w"].shape
    red_x = k // meta["groups"] * int(np.prod(w_shape[2:]))
    red_w = max(int(np.prod(meta["out_shape"][2:])) * n, 1)
    algo = "auto" if meta["algorithm"] == "auto" else meta["algorithm"]
    for name, g, wnt, sc, red, need in zip(("grad_x", "grad_w", "grad_b"), got, want, scale, (red_x, red_w, red_w),
                                           meta["needs"]):
        if not need:
            assert g is None, f"{name} computed though not needed"
            continue
        check_result_type(g, meta["kind"])
        assert host_of(g).dtype == dtype
        assert_close_to(host_of(g), wnt, sc, tolerance_of(algo, dtype, red), name)


@pytest.fixture(scope="module", autouse=True)
def _autotune_cache(tmp_path_factory):
    """autotune's winners go to a scratch cache, not the user's; the example counts are
    written out at the end."""
    old = os.environ.get("FASTCONV_CACHE_DIR")
    os.environ["FASTCONV_CACHE_DIR"] = str(tmp_path_factory.mktemp("fuzz-cache"))
    yield
    for test in _counts:
        count_example(test, False, final=True)
    if old is None:
        del os.environ["FASTCONV_CACHE_DIR"]
    else:
        os.environ["FASTCONV_CACHE_DIR"] = old


@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(data=st.data())
def test_fuzz_conv(device, data):
    """conv1d/conv2d (and plans), forward and backward, every algorithm name, valid or not."""
    call, meta = draw_conv(data, device)
    count_example(f"conv-{device}", not meta["reasons"])
    log_call(f"conv-{device}", meta["desc"])
    check_conv(call, meta)


# ---- pooling --------------------------------------------------------------------------------

POOL_OPS = ["max_pool2d", "avg_pool2d", "lp_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
            "max_pool1d", "avg_pool1d", "lp_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d"]


def torch_pool_size(size, k, s, p, d, ceil):
    """torch's pooling_output_shape (ATen/native/Pool.h), for one axis."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool_verdict(op, nd, shape, kw):
    """(output spatial sizes) by torch's rules as docs/api.md says ("as torch"), or Invalid."""
    if len(shape) not in (nd + 1, nd + 2):
        raise Invalid("wrong rank")
    if 0 in shape[-(nd + 1):]:
        raise Invalid("empty channel or spatial dimension")
    sizes = shape[-nd:]
    if op.startswith("adaptive"):
        o = kw["output_size"]
        if isinstance(o, tuple):
            if len(o) != nd or not all(v is None or is_int(v) for v in o):
                raise Invalid(f"output_size {o!r}")
            o = tuple(sizes[i] if v is None else v for i, v in enumerate(o))
        elif is_int(o):
            o = (o,) * nd
        else:
            raise Invalid(f"output_size {o!r}")
        if min(o) < 0:
            raise Invalid("negative output_size")
        if (shape[0] if len(shape) == nd + 2 else 1) * shape[-nd - 1] * math.prod(o) > 2**63 - 1:
            raise NotForTorch("the outputs overflow int64")
        return o
    k = positive(per_axis(kw["kernel_size"], nd, "kernel_size"), "kernel_size")
    s = k if kw.get("stride") is None else positive(per_axis(kw["stride"], nd, "stride"), "stride")
    p = per_axis(kw.get("padding", 0), nd, "padding")
    d = positive(per_axis(kw.get("dilation", 1), nd, "dilation"), "dilation")
    if min(p) < 0:
        raise Invalid("negative padding")
    if any(p[i] > k[i] // 2 for i in range(nd)):
        raise Invalid("padding more than half the kernel")
    out = tuple(torch_pool_size(sizes[i], k[i], s[i], p[i], d[i], kw.get("ceil_mode", False)) for i in range(nd))
    if min(out) < 1:
        raise Invalid("output size < 1")
    batch = shape[0] if len(shape) == nd + 2 else 1
    if batch * shape[-nd - 1] * math.prod(out) * math.prod(k) > 2**63 - 1:
        raise NotForTorch("the taps of all windows overflow int64")
    return out


def draw_pool(data, device):
    fz = Fuzz(data)
    op = data.draw(st.sampled_from(POOL_OPS), label="op")
    nd = 1 if op.endswith("1d") else 2
    family = "max" if "max" in op else "lp" if op.startswith("lp") else "avg"
    backward = data.draw(st.booleans(), label="backward")
    rank = nd + 2 - (data.draw(st.sampled_from([2, -1]), label="rank error") if fz.bad("rank", 10)
                     else data.draw(st.sampled_from([0, 0, 0, 1]), label="unbatched"))
    n = data.draw(st.sampled_from([0, 1, 1, 2]), label="N")
    c = data.draw(st.integers(1, 3), label="C")
    sizes = tuple(data.draw(st.integers(1, 10), label="size") for _ in range(nd))
    if fz.bad("empty dim", 10):
        c = 0
    full = (n, c) + sizes
    shape = full[:rank] if rank <= nd + 2 else full + (2,)
    if rank == nd + 1:
        shape = full[1:]
    elif rank < nd + 1:
        shape = full[2:]
    kw = {}
    if op.startswith("adaptive"):
        kw["output_size"] = data.draw(st.one_of(
            st.integers(0, 8), st.tuples(*[st.one_of(st.none(), st.integers(0, 8))] * nd) if nd == 2
            else st.integers(0, 8)), label="output_size")
        if fz.bad("output_size bad", 3):
            kw["output_size"] = data.draw(st.sampled_from([-1, (2, -1), 1.5, (3,) * (nd + 1), "2", 2**40]
                                                          + ([None] if nd == 1 else [])), label="output_size (bad)")
    else:
        kw["kernel_size"] = int_or_tuple(fz, nd, "kernel_size", 1, 5, [0, -1, 2.5, "3", 2**40])
        if data.draw(st.booleans(), label="stride given"):
            kw["stride"] = int_or_tuple(fz, nd, "stride", 1, 3, [0, -2, 1.5, 2**40])
        if family != "lp":
            kw["padding"] = int_or_tuple(fz, nd, "padding", 0, 3, [-1, 0.5, 2**40])
        if family == "max":
            kw["dilation"] = int_or_tuple(fz, nd, "dilation", 1, 3, [0, -1])
        kw["ceil_mode"] = data.draw(st.booleans(), label="ceil_mode")
        if family == "avg":
            kw["count_include_pad"] = data.draw(st.booleans(), label="count_include_pad")
            if nd == 2:
                kw["divisor_override"] = data.draw(st.sampled_from([None] * 4 + [1, 3, -2]),
                                                   label="divisor_override")
                if fz.bad("divisor 0", 8):
                    kw["divisor_override"] = 0
        if family == "lp":
            kw["norm_type"] = data.draw(st.sampled_from([1, 2, 3, 0.5, -1.5, math.inf, -math.inf, 2.0]),
                                        label="norm_type")
            if fz.bad("norm_type bad", 4):
                kw["norm_type"] = data.draw(st.sampled_from([0, 0.0, math.nan, "2", None]), label="norm_type (bad)")
    return_indices = family == "max" and data.draw(st.booleans(), label="return_indices")

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    if family == "max":  # small integers: ties exercise the index rule
        vals = rng.integers(-3, 4, shape).astype(np.float64)
    elif family == "lp":  # positive: no NaN from a negative base to a fractional power
        vals = np.abs(rng.standard_normal(shape)) + 0.25
    else:
        vals = rng.standard_normal(shape)
    arrays = ArrayMaker(fz, device)
    dtype = arrays.dtype
    slots = ["input"] + (["grad_y"] if backward else [])
    x = arrays.make("input", vals, slots)

    reasons, torch_ok = [], True
    out_sizes = None
    try:
        try:
            arrays.verdict()
        except Invalid as e:
            raise NotForTorch(str(e)) from None
        out_sizes = pool_verdict(op, nd, shape, kw)
        if family == "lp":
            p = kw["norm_type"]
            if not isinstance(p, (int, float)) or p == 0 or math.isnan(p):
                raise NotForTorch(f"norm_type {p!r}")
        if kw.get("divisor_override") == 0:
            raise Invalid("divisor_override 0")
    except Invalid as e:
        reasons.append(str(e))
    except NotForTorch as e:
        reasons.append(str(e))
        torch_ok = False
    y_shape = None
    huge = False
    if not reasons:
        y_shape = (shape[:-nd] + tuple(out_sizes))
        # (the reference loops over a window's taps in Python: a huge kernel is checked for shape only)
        if is_huge(y_shape) or max(per_axis(kw.get("kernel_size", 1), nd, "kernel_size")) > 2**20:
            torch_ok, huge = False, True

    fn_kw = dict(kw)
    if family == "max" and not backward:
        fn_kw["return_indices"] = return_indices
    out = None
    indices = None
    gy = None
    if backward:
        gy_shape = y_shape if y_shape is not None and not huge else shape
        if fz.bad("grad_y shape", 8):
            gy_shape = gy_shape[:-1] + (gy_shape[-1] + 1,)
            if not reasons:
                reasons.append("grad_y of the wrong shape")
                torch_ok = False
        gy = arrays.make("grad_y", rng.standard_normal(gy_shape), slots)
        if family == "max" and not reasons and not huge and data.draw(st.booleans(), label="pass indices"):
            fwd = getattr(fastconv, op)
            fkw = {kk: v for kk, v in kw.items()}
            _, indices = guarded(lambda: fwd(x, **fkw, return_indices=True))
            fn_kw["indices"] = indices
        call = lambda: getattr(fastconv, op + "_backward")(gy, x, **fn_kw)  # noqa: E731
    else:
        if data.draw(st.integers(0, 5), label="out") == 0:
            form = "shape" if fz.bad("out bad", 2) else "good"
            good = y_shape if y_shape is not None and not huge else (1,)
            oshape = good if form == "good" else good[:-1] + (good[-1] + 1,)
            y_out = on(device, np.full(oshape, np.nan, dtype))
            out = (y_out, on(device, np.full(oshape, -1, np.int64))) if return_indices else y_out
            fn_kw["out"] = out
            if not reasons and form != "good":
                reasons.append("out= of the wrong shape")
                torch_ok = False
        call = lambda: getattr(fastconv, op)(x, **fn_kw)  # noqa: E731

    meta = dict(op=op, nd=nd, family=family, backward=backward, kw=kw, dtype=dtype, kind=arrays.kind,
                reasons=reasons, torch_ok=torch_ok, shape=shape, y_shape=y_shape, return_indices=return_indices,
                out=out, huge=huge, desc=describe(op + ("_backward" if backward else ""), (gy, x), fn_kw))
    if not reasons and not huge:
        meta.update(x=host_of(x).astype(dtype), gy=None if gy is None else host_of(gy).astype(dtype))
    return call, meta


def torch_accepts_pool(meta):
    """Whether torch.nn.functional runs the call (its validity), or None where torch's rules are
    not the contract's (bad arrays, out=, fastconv's stricter checks)."""
    if torch is None or not meta["torch_ok"]:
        return None
    op, kw, shape = meta["op"], dict(meta["kw"]), meta["shape"]
    if len(shape) not in (meta["nd"] + 1, meta["nd"] + 2):
        return None  # torch reads other ranks as batched/unbatched ones of another op
    if op.startswith("adaptive") and shape[-meta["nd"] - 1] == 0:
        # torch's adaptive pooling takes C = 0 in some cases (average pooling; unbatched inputs,
        # whose C it reads as an empty batch); the contract refuses an empty C uniformly.
        return None
    if any(is_int(e) and abs(e) >= 2**31 for v in kw.values() for e in (v if isinstance(v, tuple) else (v,))):
        return None  # torch's pooling takes 32-bit window arguments; the contract sets no such limit
    if op == "lp_pool1d" and any(isinstance(v, tuple) for v in kw.values()):
        return None  # torch's lp_pool1d multiplies by kernel_size, so it takes an int only
    if op.startswith("lp") and (not isinstance(kw["norm_type"], (int, float)) or math.isinf(kw["norm_type"])):
        return None
    # Types torch takes that the contract refuses (floats for ints) are not asked of torch.
    for v in kw.values():
        for e in (v if isinstance(v, tuple) else (v,)):
            if isinstance(e, (float, str)) and not (op.startswith("lp") and v is kw.get("norm_type")):
                return None
    try:
        xt = torch.zeros(shape, dtype=torch.float64)
        fn = getattr(F, op)
        if op.startswith("lp"):
            p = kw.pop("norm_type")
            fn(xt, p, **kw)
        else:
            fn(xt, **kw)
        return True
    except Exception:  # torch's errors are RuntimeError, ValueError, TypeError: any is "refused"
        return False


def pool_reference(meta):
    """((y, indices or None)) or grad_x of the NumPy oracle for a valid draw."""
    nd, x = meta["nd"], meta["x"]
    unbatched = len(meta["shape"]) == nd + 1
    xb = x[None] if unbatched else x
    case = pool_case(meta["op"], xb.shape, **meta["kw"])
    if meta["backward"]:
        gy = meta["gy"][None] if unbatched else meta["gy"]
        gx = pool_reference_backward(case, xb, gy)
        return gx[0] if unbatched else gx
    y, idx = pool_reference_forward(case, xb)
    if unbatched:
        y, idx = y[0], (None if idx is None else idx[0])
    return y, idx


def check_pool(call, meta):
    if settled_without_values(call, meta, torch_accepts_pool(meta),
                              meta["shape"] if meta["backward"] else meta["y_shape"]):
        return
    got = guarded(call)
    dtype, family = meta["dtype"], meta["family"]
    if meta["backward"]:
        check_result_type(got, meta["kind"])
        gx = host_of(got)
        want = pool_reference(meta).astype(dtype)
        assert gx.shape == meta["shape"] and gx.dtype == dtype, (gx.shape, gx.dtype)
        tol = POOL_BACKWARD_TOLERANCE["direct"][family][dtype]
        finite = want[np.isfinite(want)]
        scale = float(np.max(np.abs(finite))) if finite.size else 1.0
        np.testing.assert_allclose(gx, want, rtol=tol, atol=tol * scale)
        return
    want_y, want_idx = pool_reference(meta)
    if meta["return_indices"]:
        assert isinstance(got, tuple) and len(got) == 2
        y, idx = got
        check_result_type(idx, meta["kind"])
        if meta["out"] is not None:
            assert_is_out(y, meta["out"][0], meta["kind"])
            assert_is_out(idx, meta["out"][1], meta["kind"])
        np.testing.assert_array_equal(host_of(idx), want_idx)
    else:
        y = got
        if meta["out"] is not None:
            assert_is_out(y, meta["out"], meta["kind"])
    check_result_type(y, meta["kind"])
    yh = host_of(y)
    assert yh.shape == meta["y_shape"] and yh.dtype == dtype, (yh.shape, meta["y_shape"], yh.dtype)
    rtol, atol = POOL_TOLERANCE["direct"][family][dtype]
    np.testing.assert_allclose(yh, want_y.astype(dtype), rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(data=st.data())
def test_fuzz_pool(device, data):
    """Every pooling op, 1-D and 2-D, forward and backward (with and without indices), valid or not."""
    assert pool_rows("max_pool2d") and pool_rows("max_pool2d", "backward")
    call, meta = draw_pool(data, device)
    count_example(f"pool-{device}", not meta["reasons"])
    log_call(f"pool-{device}", meta["desc"])
    check_pool(call, meta)
