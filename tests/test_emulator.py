"""The SIMT emulator (csrc/cuda/emu/emu.h) on its own self-test kernels (csrc/cuda/emu_selftest.cu),
through fastconv._cuda_emu (built with FASTCONV_CUDA_EMU=ON; skipped otherwise).

Correct kernels must match their host computation in every thread order; planted bugs must be
reported (a RuntimeError carrying the emulator's diagnosis) or, for races the emulator cannot see
directly (a missing __syncthreads, warp-synchronous code without __syncwarp), give wrong results
in the orders that expose them. Every self-test the module lists must be classified here.
"""

import os
import re
import subprocess
import sys
import threading
import time

import pytest

emu = pytest.importorskip("fastconv._cuda_emu")

ORDERS = ("forward", "reverse", "shuffle")

# Correct kernels: the largest absolute error allowed against the host.
CORRECT = {
    "sgemm": 1e-4,  # 127x129x131 in float32 against float64
    "warp_shuffle": 1e-5,
    "syncthreads_count": 0,
    "ballot": 0,
    "atomics": 1e-4,  # float atomicAdd's sum depends on the order
    "dynamic_smem": 0,
    "dynamic_smem_64k_opt_in": 0,
    "index_3d": 0,
    "intrinsics": 1e-6,
}

# Planted races: the orders in which the result must be wrong (error > 1e-2). Other orders may
# happen to give the right answer.
WRONG_IN = {
    "sgemm_missing_sync": ("reverse", "shuffle"),
    "legacy_warp_reduce": ("forward", "reverse", "shuffle"),
}

THREAD = r"fastconv emulator: kernel '{}' block \(0,0,0\) thread \(\d+,0,0\): "
SITE = r"at \S*emu_selftest\.cu:\d+"
MASK_RULE = r"every lane of a warp operation's mask must reach it"

# Planted bugs the emulator must report in every order: (regex the message must match, strings
# it must contain).
RAISES = {
    "early_return_barrier": (
        THREAD.format("early_return_kernel") + r".*every thread of a block must reach each barrier",
        ["thread (37,0,0)", "__syncthreads()"],
    ),
    "divergent_barrier": (
        THREAD.format("divergent_barrier_kernel")
        + rf"waits at __syncthreads\(\) {SITE} while thread \(\d+,0,0\) waits at __syncthreads\(\) {SITE}: "
        r"divergent barrier",
        [],
    ),
    "shfl_divergent": (THREAD.format("shfl_divergent_kernel") + ".*" + MASK_RULE, ["__shfl_down_sync()", "0xffffffff"]),
    "shfl_mask_disagree": (
        THREAD.format("shfl_mask_disagree_kernel") + r"__shfl_xor_sync\(\) .*masks disagree",
        ["0x0001ffff", "0xffffffff"],
    ),
    "syncwarp_vs_syncthreads": (
        THREAD.format("syncwarp_vs_syncthreads_kernel") + ".*" + MASK_RULE,
        ["__syncwarp()", "__syncthreads()"],
    ),
    "kernel_exception": (
        r"^fastconv emulator: kernel 'exception_kernel' block \(1,0,0\) thread \(3,0,0\): "
        r"exception thrown in the kernel: planted device-side check failed$",
        [],
    ),
    "dynamic_smem_64k_refused": (
        r"^fastconv emulator: kernel 'big_smem_not_opted_in': launch with 65536 bytes of dynamic shared "
        r"memory, more than the 49152 allowed .*cudaFuncSetAttribute",
        [],
    ),
    "dynamic_smem_opt_in_too_large": (r"cudaFuncSetAttribute.*cudaErrorInvalidValue", []),
    "too_many_threads": (
        r"^fastconv emulator: kernel 'noop_kernel': launch with 1025 threads per block \(1025,1,1\), "
        r"more than 1024 \(cudaErrorInvalidConfiguration\)$",
        [],
    ),
    "block_z_too_large": (r"kernel 'noop_kernel': launch with block \(1,1,65\) beyond", []),
    "grid_y_too_large": (r"kernel 'noop_kernel': launch with grid \(1,65536,1\) beyond", []),
    "memcpy_host_as_device": (r"cudaMemcpy\(.*cudaMemcpyHostToDevice\): cudaErrorInvalidValue", []),
}

# Planted out-of-bounds writes only AddressSanitizer stops (one float past a cudaMalloc'ed array,
# past a block's dynamic shared memory, past a local array on a fiber's stack): the kind of report
# it must give and the kernel its stack must name. A build without ASan refuses to run them.
ASAN_CATCHES = {
    "global_oob_write": ("heap-buffer-overflow", "global_oob_kernel"),
    "shared_oob_write": ("heap-buffer-overflow", "shared_oob_kernel"),
    "local_oob_write": ("stack-buffer-overflow", "local_oob_kernel"),
}
ASAN = "address" in emu.build_info().get("sanitizers", "")


@pytest.fixture(autouse=True)
def _restore_order():
    old = emu.get_order()
    yield
    emu.set_order(old)


def test_every_selftest_is_classified():
    names = set(emu.selftest_names())
    known = set(CORRECT) | set(WRONG_IN) | set(RAISES) | set(ASAN_CATCHES)
    assert names == known, f"unclassified: {sorted(names - known)}, missing: {sorted(known - names)}"


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_kernel(name, order):
    emu.set_order(order)
    assert emu.selftest(name) <= CORRECT[name]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(RAISES))
def test_planted_bug_is_reported(name, order):
    emu.set_order(order)
    pattern, parts = RAISES[name]
    with pytest.raises(RuntimeError, match=pattern) as info:
        emu.selftest(name)
    for part in parts:
        assert part in str(info.value)


def test_divergent_barrier_names_both_sites():
    with pytest.raises(RuntimeError) as info:
        emu.selftest("divergent_barrier")
    lines = re.findall(r"emu_selftest\.cu:(\d+)", str(info.value))
    assert len(lines) == 2 and lines[0] != lines[1], str(info.value)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(WRONG_IN))
def test_planted_race_gives_wrong_result(name, order):
    emu.set_order(order)
    error = emu.selftest(name)  # never raises: the emulator cannot see these races
    if order in WRONG_IN[name]:
        assert error > 1e-2


@pytest.mark.parametrize("name", sorted(ASAN_CATCHES))
def test_planted_out_of_bounds_write(name):
    if not ASAN:
        with pytest.raises(RuntimeError, match="runs only in an AddressSanitizer build"):
            emu.selftest(name)
        return
    # ASan ends the process at its report: run it in a child (which inherits LD_PRELOAD and the
    # sanitizer options) and read the report.
    kind, kernel = ASAN_CATCHES[name]
    code = f"import fastconv._cuda_emu as emu; emu.selftest({name!r}); print('not caught')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "not caught" not in r.stdout, r.stdout + r.stderr[-4000:]
    assert f"ERROR: AddressSanitizer: {kind}" in r.stderr, r.stderr[-4000:]
    assert kernel in r.stderr, r.stderr[-4000:]  # the symbolised stack runs through the kernel


def test_shuffle_is_reproducible():
    emu.set_order("shuffle")
    assert emu.selftest("sgemm_missing_sync") == emu.selftest("sgemm_missing_sync")


def test_usable_after_errors():
    # Errors abandon fibers mid-kernel (at a barrier, in a warp operation, unwinding an exception):
    # their stacks must be reused cleanly by the next launches.
    for order in ORDERS:
        emu.set_order(order)
        for name in RAISES:
            with pytest.raises(RuntimeError):
                emu.selftest(name)
            assert emu.selftest("warp_shuffle") <= CORRECT["warp_shuffle"]
        assert emu.selftest("sgemm") <= CORRECT["sgemm"]


def test_order_setting():
    for order in ORDERS:
        emu.set_order(order)
        assert emu.get_order() == order
    with pytest.raises(ValueError, match="unknown order 'sideways'"):
        emu.set_order("sideways")
    assert emu.get_order() == ORDERS[-1]


def test_concurrent_threads():
    # Each OS thread has its own scheduler, fibers and static shared memory.
    emu.set_order("reverse")
    names = ["sgemm", "warp_shuffle", "atomics", "ballot", "dynamic_smem"] * 3
    errors, failures = {}, []

    def work(tag):
        try:
            for i, name in enumerate(names):
                errors[tag, i] = emu.selftest(name)
            with pytest.raises(RuntimeError, match="divergent barrier"):
                emu.selftest("divergent_barrier")
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for (_, i), error in errors.items():
        assert error <= CORRECT[names[i]]


def test_fiber_switch_rate():
    emu.set_order("forward")
    emu.selftest("sgemm")  # warm: stacks allocated
    before, start = emu.fiber_switches(), time.perf_counter()
    for _ in range(3):
        emu.selftest("sgemm")
    seconds = time.perf_counter() - start
    switches = emu.fiber_switches() - before
    # 8x9 blocks of 256 threads, 9 tiles of two barriers: ~3 switches per thread and barrier.
    assert switches > 3 * 72 * 256 * 18
    rate = switches / seconds
    print(f"emulator: {rate:.3g} fiber switches/s (sgemm, host reference included)")
    assert rate > 1e5  # ~1e7 on a quiet machine; far lower means something is badly wrong


@pytest.mark.slow
def test_order_from_environment():
    code = "import fastconv._cuda_emu as e; print(e.get_order()); print(e.selftest('sgemm_missing_sync') > 1e-2)"
    env = dict(os.environ, FASTCONV_EMU_ORDER="reverse")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["reverse", "True"]
