"""Memory and size (issue 19 item 4): no growth of resident memory over 10^4 calls, sizes whose
products overflow int64 or exceed memory raise ValueError/MemoryError instead of aborting, and
the CPU kernels index with 64 bits: a single H*W plane of more than 2^31 elements is convolved
and pooled correctly where the machine has the memory for it."""
import gc
import os

import numpy as np
import pytest

import fastconv as fc
from fastconv import _C


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mem_available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")


def _mixed_calls(rng):
    """One round of every kind of call, including calls that C++ refuses with an exception
    (their error paths must free what they allocated too)."""
    x = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 7, 6)).astype(np.float32)
    bad = _C.ConvParams()
    bad.N, bad.C, bad.H, bad.W, bad.K, bad.R, bad.S, bad.P, bad.Q = 2, 6, 13, 11, 8, 3, 3, 0, 6
    y = np.empty((2, 8, 7, 6), np.float32)
    plan = fc.plan_conv2d(w, x.shape, stride=2, padding=1, groups=2, algorithm="im2col")

    def round_():
        fc.conv2d(x, w, stride=2, padding=1, groups=2, algorithm="direct")
        fc.conv2d(x, w, stride=2, padding=1, groups=2, algorithm="im2col")
        fc.conv2d_backward(gy, x, w, stride=2, padding=1, groups=2)
        plan(x)
        fc.max_pool2d(x, 3, stride=2, return_indices=True)
        fc.avg_pool2d_backward(np.ones((2, 6, 6, 5), np.float32), x, 2)
        fc.adaptive_max_pool2d(x, (4, 3))
        with pytest.raises(ValueError):
            _C.run("conv2d_forward", "direct", bad, {"x": x, "w": w, "y": y})
        with pytest.raises(ValueError):
            fc.conv2d(x, w, groups=4)

    return round_


def test_no_resident_memory_growth_over_ten_thousand_calls():
    round_ = _mixed_calls(np.random.default_rng(0))
    for _ in range(200):  # warm up: thread pools, scratch buffers, caches reach their size
        round_()
    gc.collect()
    before = _rss_bytes()
    calls_per_round = 9
    for _ in range(10_000 // calls_per_round + 1):
        round_()
    gc.collect()
    grown = _rss_bytes() - before
    # A leak of even 100 bytes a call would be ~1 MB; allocator noise stays well under 4 MB.
    assert grown < 4 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB over 10^4 calls"


@pytest.mark.parametrize("call, exc, words", [
    # Products beyond int64: the output's element count.
    (lambda: fc.conv2d(np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32),
                       padding=2**40), ValueError, ["int64"]),
    (lambda: fc.explain((2**40, 2**20, 2**10, 2**10), (1, 2**20, 1, 1)), ValueError, ["int64"]),
    (lambda: fc.conv2d_output_shape((2**62, 4, 2**10, 2**10), (2**20, 4, 1, 1)), ValueError, ["int64"]),
    # One value beyond int64 (C++ holds int64 sizes).
    (lambda: fc.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32),
                       stride=2**64), ValueError, ["stride"]),
    (lambda: fc.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32),
                       dilation=2**63), ValueError, ["dilation"]),
    # Sizes that fit int64 but not in memory (16 TiB outputs).
    (lambda: fc.conv2d(np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32),
                       padding=2**20), MemoryError, []),
    (lambda: fc.adaptive_avg_pool2d(np.ones((1, 1, 2, 2), np.float32), (2**21, 2**21)), MemoryError, []),
    (lambda: fc.adaptive_max_pool1d(np.ones((1, 2**10, 3), np.float32), 2**40, return_indices=True),
     MemoryError, []),
])
def test_oversized_problems_raise_clear_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_workspace_sizes_never_overflow():
    """C++ refuses a problem whose im2col workspace in bytes (per thread) would not fit int64,
    instead of returning a wrapped size that a caller would allocate and overrun."""
    p = _C.ConvParams()
    # Every tensor is small enough to index, the unrolled input (C*R*S*P*Q values) too,
    # but not its bytes for every thread.
    p.N, p.C, p.H, p.W, p.K, p.R, p.S = 1, 2**24, 2**12, 2**12, 1, 2**6, 2**6
    p.pad_h = p.pad_w = 2**10
    p.P = p.Q = 2**12 + 2**11 - 2**6 + 1
    with pytest.raises(ValueError, match="int64"):
        _C.workspace_bytes("im2col", p, "float64")
    p.C, p.R, p.S = 1, 3, 3
    p.pad_h = p.pad_w = 0
    p.P = p.Q = 2**12 - 2
    assert _C.workspace_bytes("im2col", p, "float64") > 0


# A single 46341 x 46341 plane: 2,147,488,281 elements, just over 2^31, so any 32-bit offset
# into it wraps. Input 8.6 GB; at most 6.4 GB of outputs at once (max pooling's values and int64
# indices at stride 2), and a GiB to spare.
BIG_SIDE = 46341
BIG_BYTES = 4 * BIG_SIDE**2 + 12 * (BIG_SIDE // 2) ** 2 + (1 << 30)


@pytest.mark.skipif(_mem_available_bytes() < BIG_BYTES,
                    reason=f"needs {BIG_BYTES / 2**30:.1f} GiB of available memory for a >2^31-element plane")
def test_a_plane_of_more_than_2_31_elements():
    assert BIG_SIDE * BIG_SIDE > 2**31
    x = np.zeros((1, 1, BIG_SIDE, BIG_SIDE), np.float32)
    # Marks past 2^31 elements (the last row from column 41708 on) and three before, where a
    # wrapped 32-bit offset would read or write elsewhere; windows of 3 at stride 2 reach the
    # last row.
    last = BIG_SIDE - 1
    marks = {(last, last): 7.0, (last, 41709): -3.0, (last, 43001): 5.0, (last, 30000): 6.0, (100, 200): 2.0,
             (last - 1, 9): 4.0}
    assert sum(i * BIG_SIDE + j >= 2**31 for i, j in marks) == 3
    for (i, j), v in marks.items():
        x[0, 0, i, j] = v
    w = np.ones((1, 1, 3, 3), np.float32)
    y = fc.conv2d(x, w, stride=2, algorithm="direct")
    out = (BIG_SIDE - 3) // 2 + 1
    assert y.shape == (1, 1, out, out)

    def windows(i, j):  # outputs whose 3x3 window at stride 2 covers (i, j)
        return [(p, q) for p in range(max(0, (i - 1) // 2), min(out, i // 2 + 1))
                for q in range(max(0, (j - 1) // 2), min(out, j // 2 + 1))]

    want = {}
    for (i, j), v in marks.items():
        for pq in windows(i, j):
            want[pq] = want.get(pq, 0.0) + v
    for (p, q), v in want.items():
        assert y[0, 0, p, q] == v, (p, q)
        y[0, 0, p, q] = 0
    assert not y.any(), "a value landed outside the windows of the marks"
    del y
    m, idx = fc.max_pool2d(x, 3, stride=2, return_indices=True)
    for (i, j), v in marks.items():
        for p, q in windows(i, j):
            if v > 0:
                assert m[0, 0, p, q] == v
                assert idx[0, 0, p, q] == i * BIG_SIDE + j  # int64 indices, some past 2^31
