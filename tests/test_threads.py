"""Concurrency (issue 19 item 3): the GIL is released inside the kernels, many Python threads
calling convolution, pooling and backward at once get exactly the results of the same calls made
one after another, and two processes writing the autotune cache at once leave a valid file that
holds both processes' entries."""
import json
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv as fc
from fastconv import _cache


def _workload(seed):
    """Calls of every kind on problems of different shapes (odd sizes, strides, groups), each a
    closure returning a tuple of arrays; inputs are made once so serial and concurrent runs see
    the same data."""
    rng = np.random.default_rng(seed)

    def randn(*shape, dtype=np.float32):
        return rng.standard_normal(shape).astype(dtype)

    x1, w1 = randn(2, 6, 17, 13), randn(8, 3, 3, 3)
    x2, w2 = randn(1, 16, 23, 23), randn(16, 16, 3, 3)
    x3, w3 = randn(3, 5, 31, 9, dtype=np.float64), randn(7, 5, 5, 2, dtype=np.float64)
    x4, w4 = randn(2, 12, 19, 19), randn(12, 1, 3, 3)
    gy1 = randn(2, 8, 9, 7)
    xp = randn(2, 5, 29, 31)
    xs, w1d = randn(4, 3, 101), randn(6, 3, 7)
    gp = randn(2, 5, 15, 16)
    calls = [
        ("conv2d direct", lambda: (fc.conv2d(x1, w1, stride=2, padding=1, groups=2, algorithm="direct"),)),
        ("conv2d im2col", lambda: (fc.conv2d(x1, w1, stride=2, padding=1, groups=2, algorithm="im2col"),)),
        ("conv2d winograd", lambda: (fc.conv2d(x2, w2, padding=1, algorithm="winograd"),)),
        ("conv2d fft", lambda: (fc.conv2d(x2, w2, padding="same", algorithm="fft"),)),
        ("conv2d auto f64", lambda: (fc.conv2d(x3, w3, padding=((2, 1), (0, 1)), dilation=(1, 2)),)),
        ("conv2d depthwise", lambda: (fc.conv2d(x4, w4, stride=(2, 1), padding=1, groups=12),)),
        ("conv2d backward", lambda: fc.conv2d_backward(gy1, x1, w1, stride=2, padding=1, groups=2)),
        ("conv1d", lambda: (fc.conv1d(xs, w1d, padding="same"),)),
        ("max_pool2d", lambda: fc.max_pool2d(xp, 3, stride=2, padding=1, return_indices=True)),
        ("max_pool2d backward", lambda: (fc.max_pool2d_backward(gp, xp, 3, stride=2, padding=1),)),
        ("avg_pool2d", lambda: (fc.avg_pool2d(xp, (2, 3), ceil_mode=True, count_include_pad=False),)),
        ("lp_pool2d", lambda: (fc.lp_pool2d(xp, 3.0, 2),)),
        ("adaptive_avg_pool2d", lambda: (fc.adaptive_avg_pool2d(xp, (5, 7)),)),
        ("adaptive_max_pool1d", lambda: fc.adaptive_max_pool1d(xs, 13, return_indices=True)),
    ]
    return calls


def _run_concurrently(calls, python_threads, rounds):
    """Every call `rounds` times, spread over `python_threads` threads started together."""
    jobs = [(i, name, fn) for i, (name, fn) in enumerate(calls)] * rounds
    start = threading.Barrier(python_threads)

    def job(item):
        i, name, fn = item
        return i, name, fn()

    def first(item):
        start.wait()  # every worker is inside the pool before the first kernel runs
        return job(item)

    with ThreadPoolExecutor(python_threads) as pool:
        futures = [pool.submit(first if n < python_threads else job, item) for n, item in enumerate(jobs)]
        return [f.result() for f in futures]


@pytest.mark.parametrize("omp_threads", [1, 2, 3])
@pytest.mark.parametrize("python_threads", [2, 8])
def test_concurrent_calls_match_serial_ones(omp_threads, python_threads):
    before = fc.get_num_threads()
    fc.set_num_threads(omp_threads)
    try:
        calls = _workload(seed=omp_threads * 10 + python_threads)
        serial = [fn() for _, fn in calls]
        for i, name, got in _run_concurrently(calls, python_threads, rounds=3):
            assert len(got) == len(serial[i]), name
            for g, s in zip(got, serial[i]):
                # Same thread count, same kernels: bit for bit, whatever else runs beside them.
                np.testing.assert_array_equal(g, s, err_msg=f"{name}: a concurrent call differs from the serial one")
    finally:
        fc.set_num_threads(before)


def test_kernels_release_the_gil():
    """While one thread runs a long convolution, another Python thread keeps running: it
    counts many times in the time of one call (with the GIL held it would count ~once per
    switch interval of 5 ms, i.e. a handful)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 96, 96)).astype(np.float32)
    w = rng.standard_normal((64, 64, 5, 5)).astype(np.float32)
    fc.conv2d(x, w, algorithm="direct")  # warm up (allocations, first-touch)
    ticks, done = [0], threading.Event()
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.2)  # a GIL-holding kernel would starve the counter for the whole call

    def count():
        while not done.is_set():
            ticks[0] += 1

    counter = threading.Thread(target=count)
    try:
        counter.start()
        time.sleep(0.01)
        t0, ticks_before = time.perf_counter(), ticks[0]
        while time.perf_counter() - t0 < 0.3:  # long enough for the scheduler to run the counter too
            fc.conv2d(x, w, algorithm="direct")
            fc.conv2d_backward(np.ones((1, 64, 92, 92), np.float32), x, w, algorithm="im2col",
                               needs=(True, True, False))
            fc.max_pool2d(x, 3, stride=1)
        elapsed, counted = time.perf_counter() - t0, ticks[0] - ticks_before
    finally:
        done.set()
        counter.join()
        sys.setswitchinterval(old)
    # The counter only runs while the calls run without the GIL. Holding it through each call (and
    # the 0.2 s switch interval between them), the counter would get the GIL once or twice in all,
    # a few ticks; without it, it counts at millions a second whenever the scheduler runs it, even
    # on a loaded machine.
    assert counted > 1_000, f"only {counted} ticks of another thread during {elapsed:.3f} s of kernels"


_WRITER = textwrap.dedent("""
    import sys
    from fastconv import _cache
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        _cache.update(path, {f"{tag}-{i}": {"winner": tag, "i": i, "pad": "x" * 200}})
""")


def test_two_processes_writing_the_cache_leave_a_valid_file(tmp_path):
    path = tmp_path / "autotune.json"
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, str(n)]) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    data = json.loads(path.read_text())  # valid JSON, no torn write
    want = {f"{tag}-{i}" for tag in ("a", "b") for i in range(n)}
    assert set(data) == want, f"lost {len(want - set(data))} entries, {len(set(data) - want)} stray"
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"
    assert _cache.read(path) == data
