# test_gemm.py: the project's packed GEMM (csrc/cpu/gemm*.cpp) through _C.gemm,
#   C = alpha * op(A) @ op(B) + beta * C + bias[:, None],
# against NumPy in float64, on every instruction set this CPU has (scalar, avx2,
# avx512), both dtypes, all four transpose combinations, and sizes that straddle the
# register and cache blocks of every ISA (mr 4/8, nr 4/12/24/48, mc 128/192, kc 256,
# nc 2048/2400/4800, the 8 MiB packed B panel) and the narrow-N column kernels.
# Limits: the binding passes contiguous arrays, so leading dimensions other than the
# row length are exercised only by the C++ callers (im2col's chunks use ldc > N).
import numpy as np
import pytest

from fastconv import _C

DTYPES = [np.float32, np.float64]
# The `isa` fixture (every instruction set this CPU has) comes from conftest.py.


@pytest.fixture
def threads():
    before = _C.get_num_threads()
    yield _C.set_num_threads
    _C.set_num_threads(before)


def make(rng, dtype, ta, tb, M, N, K, bias):
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    C0 = rng.standard_normal((M, N)).astype(dtype)
    bm = rng.standard_normal(M).astype(dtype) if bias else None
    return A, B, C0, bm


def reference(ta, tb, alpha, A, B, beta, C0, bm):
    a = A.astype(np.float64)
    b = B.astype(np.float64)
    ref = alpha * ((a.T if ta else a) @ (b.T if tb else b))
    if beta != 0:
        ref = ref + beta * C0.astype(np.float64)
    if bm is not None:
        ref = ref + bm.astype(np.float64)[:, None]
    return ref


def run_gemm(ta, tb, alpha, A, B, beta, C0, bm):
    # beta == 0 must not read C: hand it NaN, which any read would propagate.
    C = np.full(C0.shape, np.nan, C0.dtype) if beta == 0 else C0.copy()
    _C.gemm(ta, tb, alpha, A, B, beta, C, bm)
    return C


def assert_close(C, ref, K):
    assert not np.isnan(C).any()
    scale = max(1.0, float(np.abs(ref).max()))
    tol = (1e-5 * np.sqrt(K) if C.dtype == np.float32 else 1e-12) * scale
    err = float(np.abs(C.astype(np.float64) - ref).max())
    assert err <= tol, f"max error {err:.3g} > tolerance {tol:.3g}"


# Odd, prime and edge sizes; (alpha, beta, bias) cycle through the interesting cases.
SHAPES = [(1, 1, 1), (2, 2, 2), (1, 97, 13), (97, 1, 13), (7, 13, 31), (13, 31, 7),
          (31, 7, 97), (12, 32, 8), (11, 33, 17), (25, 65, 3), (6, 16, 1), (5, 17, 2)]
SCALARS = [(1.0, 0.0, False), (1.0, 0.0, True), (-0.5, 1.0, False), (2.0, 0.3, True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["NN", "NT", "TN", "TT"])
def test_transposes_and_edges(isa, dtype, ta, tb):
    rng = np.random.default_rng(1)
    for i, (M, N, K) in enumerate(SHAPES):
        for alpha, beta, bias in (SCALARS[i % 4], SCALARS[(i + 1) % 4]):
            A, B, C0, bm = make(rng, dtype, ta, tb, M, N, K, bias)
            C = run_gemm(ta, tb, alpha, A, B, beta, C0, bm)
            assert_close(C, reference(ta, tb, alpha, A, B, beta, C0, bm), K)


# Just below / above the cache blocks: mc (128, 192), kc (256), nc (2048 scalar, 2400 f64,
# 4800 f32) and the register blocks of every ISA.
# Column mode (A's K block in L2, B over 512 KiB): (67, 3137, 65), (129, 785, 513) in
# several K blocks, (5, 2048, 1100); the panel mode's B panel in rounds: (261, 2048, 1100),
# K x N over the 8 MiB B panel with A too tall for column mode; K blocks outermost (a B panel
# over 1 MiB whose K blocks stay under 512 KiB, gemm.cpp's pc_outer): (251, 197, 1153).
BLOCK_SHAPES = [(127, 33, 255), (145, 17, 257), (193, 31, 129), (385, 5, 513), (47, 2401, 3),
                (3, 4801, 2), (3, 4097, 2), (24, 64, 256), (37, 97, 600), (9, 49, 50),
                (67, 3137, 65), (129, 785, 513), (5, 2048, 1100), (261, 2048, 1100), (251, 197, 1153)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)], ids=["NN", "TT"])
def test_block_boundaries(isa, dtype, ta, tb):
    rng = np.random.default_rng(2)
    for i, (M, N, K) in enumerate(BLOCK_SHAPES):
        alpha, beta, bias = SCALARS[(i + 1) % 4]
        A, B, C0, bm = make(rng, dtype, ta, tb, M, N, K, bias)
        C = run_gemm(ta, tb, alpha, A, B, beta, C0, bm)
        assert_close(C, reference(ta, tb, alpha, A, B, beta, C0, bm), K)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_small_integers_exact(isa, dtype):
    # Integer inputs with sums below 2^24: every path must give the exact result.
    rng = np.random.default_rng(3)
    for M, N, K in [(13, 37, 29), (64, 50, 300), (5, 3, 1)]:
        A = rng.integers(-3, 4, (M, K)).astype(dtype)
        B = rng.integers(-3, 4, (K, N)).astype(dtype)
        C = rng.integers(-9, 10, (M, N)).astype(dtype)
        bm = rng.integers(-9, 10, M).astype(dtype)
        want = 2 * (A.astype(np.int64) @ B.astype(np.int64)) - C.astype(np.int64) + bm[:, None]
        _C.gemm(False, False, 2.0, A, B, -1.0, C, bm)
        np.testing.assert_array_equal(C, want.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_k_zero(isa, dtype):
    # K == 0: C = beta * C + bias (and beta == 0 ignores the NaN in C).
    A = np.zeros((5, 0), dtype)
    B = np.zeros((0, 7), dtype)
    bm = np.arange(5, dtype=dtype)
    C = np.full((5, 7), np.nan, dtype)
    _C.gemm(False, False, 1.0, A, B, 0.0, C, bm)
    np.testing.assert_array_equal(C, np.repeat(bm[:, None], 7, axis=1))
    C2 = np.ones((5, 7), dtype)
    _C.gemm(False, False, 1.0, A, B, 3.0, C2, None)
    np.testing.assert_array_equal(C2, np.full((5, 7), 3.0, dtype))


def test_nan_in_inputs_propagates(isa):
    A = np.ones((20, 9), np.float32)
    B = np.ones((9, 40), np.float32)
    A[3, 4] = np.nan
    B[2, 33] = np.inf
    C = np.zeros((20, 40), np.float32)
    _C.gemm(False, False, 1.0, A, B, 0.0, C)
    assert np.isnan(C[3]).all()
    assert np.isinf(C[np.arange(20) != 3, 33]).all()
    assert np.isfinite(np.delete(np.delete(C, 3, 0), 33, 1)).all()


# Tall (row blocks), wide (column runs), deep (B panel in rounds) products, column mode
# (the next three) and K blocks outermost (the last).
THREAD_SHAPES = [(500, 40, 100), (64, 1000, 64), (150, 150, 300), (2048, 49, 64),
                 (261, 2048, 1100), (67, 3137, 65), (129, 785, 513), (40, 2048, 1100), (251, 197, 1153)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_threads_agree(threads, dtype):
    # The summation order depends only on the blocking, never on the thread count,
    # so the results must be bitwise identical.
    rng = np.random.default_rng(4)
    for M, N, K in THREAD_SHAPES:
        A, B, C0, bm = make(rng, dtype, False, True, M, N, K, True)
        results = []
        for n in (1, 2, 4):
            threads(n)
            results.append(run_gemm(False, True, 0.5, A, B, 0.0, C0, bm))
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])
        assert_close(results[0], reference(False, True, 0.5, A, B, 0.0, C0, bm), K)


def test_bad_shapes_raise():
    A = np.zeros((4, 5), np.float32)
    B = np.zeros((6, 3), np.float32)
    C = np.zeros((4, 3), np.float32)
    with pytest.raises((ValueError, TypeError)):
        _C.gemm(False, False, 1.0, A, B, 0.0, C)
    with pytest.raises((ValueError, TypeError)):
        _C.gemm(False, False, 1.0, A, np.zeros((5, 3), np.float64), 0.0, C)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_leading_dimension_through_im2col(isa, dtype):
    # im2col unrolls a large image in column chunks and writes each chunk's product
    # into y with ldc = P*Q > N: the one caller that reaches ldc != N (and the bias).
    import fastconv as fc

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 64, 40, 40)).astype(dtype)   # col: 576 rows x 1600 columns
    w = rng.standard_normal((13, 64, 3, 3)).astype(dtype)
    b = rng.standard_normal(13).astype(dtype)
    y = fc.conv2d(x, w, b, padding=1, algorithm="im2col")
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1,
                    algorithm="reference")
    assert_close(y, np.asarray(ref, np.float64), 576)


def test_called_inside_parallel_region(threads):
    # A batch of small images makes im2col parallelise over images and call the GEMM
    # from inside its parallel region: each call must run serially on its thread, with
    # that thread's own packing buffers.
    import fastconv as fc

    threads(2)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 6, 11, 11)).astype(np.float32)
    w = rng.standard_normal((7, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    y = fc.conv2d(x, w, b, stride=2, algorithm="im2col")
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride=2,
                    algorithm="reference")
    assert_close(y, np.asarray(ref, np.float64), 54)


# ---- operands packed ahead (gemm_pack_a / gemm_pack_b + gemm_ex: plans, Winograd) ----------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("pack_a,pack_b", [(True, False), (False, True), (True, True)],
                         ids=["A", "B", "AB"])
def test_prepacked_operands_match_plain(isa, threads, dtype, pack_a, pack_b):
    # The packed forms hold exactly the panels the driver would pack itself, so the
    # products are bitwise those of the plain call, at every block boundary and with
    # one and two threads.
    rng = np.random.default_rng(7)
    for n in (1, 2):
        threads(n)
        for i, (M, N, K) in enumerate(SHAPES + BLOCK_SHAPES):
            ta, tb = bool(i % 2), bool(i % 3 == 0)
            alpha, beta, bias = SCALARS[i % 4]
            A, B, C0, bm = make(rng, dtype, ta, tb, M, N, K, bias)
            want = run_gemm(ta, tb, alpha, A, B, beta, C0, bm)
            C = np.full(C0.shape, np.nan, dtype) if beta == 0 else C0.copy()
            _C.gemm(ta, tb, alpha, A, B, beta, C, bm, pack_a=pack_a, pack_b=pack_b)
            np.testing.assert_array_equal(C, want, err_msg=f"M={M} N={N} K={K} ta={ta} tb={tb}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_prepacked_a_row_range(isa, dtype):
    # Winograd's blocks of output channels use rows [row0, row0 + M) of one packed A.
    rng = np.random.default_rng(8)
    mr = _C.gemm_pack_a_rows_multiple(np.dtype(dtype).name)
    MA, N, K = 5 * mr + 3, 37, 300
    A = rng.standard_normal((MA, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    for row0, rows in [(0, mr), (mr, 2 * mr + 3), (2 * mr, 3 * mr + 3), (4 * mr, mr + 3)]:
        C = np.full((rows, N), np.nan, dtype)
        _C.gemm(False, False, 1.0, A, B, 0.0, C, None, pack_a=True, a_row0=row0)
        assert_close(C, reference(False, False, 1.0, A[row0:row0 + rows], B, 0.0, C, None), K)
    with pytest.raises(ValueError, match="packed A rows"):
        _C.gemm(False, False, 1.0, A, B, 0.0, np.zeros((mr, N), dtype), None, pack_a=True, a_row0=1)
    with pytest.raises(ValueError, match="packed A rows"):
        _C.gemm(False, False, 1.0, A, B, 0.0, np.zeros((2 * mr, N), dtype), None, pack_a=True,
                a_row0=4 * mr)


# ---- gathered B (the weight gradient's implicit im2col, GemmOperand::gathered) -------------

def gathered_problem(rng, dtype, M, K, N, segment, row_stride, gap):
    """A, data, offsets and the B they gather: row k at k*row_stride, segment s at s*gap
    (rows and segments overlap in data, as a conv's patches of neighbouring pixels do)."""
    segments = -(-N // segment)
    k_offsets = np.arange(K, dtype=np.int64) * row_stride
    segment_offsets = np.arange(segments, dtype=np.int64) * gap
    data = rng.standard_normal(int(k_offsets[-1] + segment_offsets[-1] + segment)).astype(dtype)
    n = np.arange(N)
    B = data[k_offsets[:, None] + segment_offsets[n // segment][None, :] + (n % segment)[None, :]]
    A = rng.standard_normal((M, K)).astype(dtype)
    return A, data, k_offsets, segment_offsets, B


# (M, K, N, segment, row stride, segment gap): panels inside one segment (the fast copy),
# panels across several short ones (the 7x7 stem's 21), one-column segments, a ragged last
# panel, and products big enough (>= 4 MiB of B) for the column mode with few panels.
GATHERED = [(8, 5, 48, 48, 7, 60), (13, 97, 576, 192, 64, 3712), (64, 300, 147, 21, 6, 690),
            (5, 31, 37, 1, 3, 5), (17, 2, 100, 50, 50, 50), (64, 8000, 147, 21, 6, 690),
            (64, 3136, 576, 192, 64, 3712)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_gathered_b_matches_materialised(isa, threads, dtype):
    # Gathering packs the same panels as the plain B it describes, so the product is
    # bitwise the plain one, in either driver mode and with one or two threads.
    rng = np.random.default_rng(9)
    for n in (1, 2):
        threads(n)
        for i, (M, K, N, segment, row_stride, gap) in enumerate(GATHERED):
            if K * N > 1_000_000 and (dtype == np.float64 or isa == "scalar"):
                continue  # the column-mode sizes are about float32's 4 MiB threshold
            A, data, ko, so, B = gathered_problem(rng, dtype, M, K, N, segment, row_stride, gap)
            alpha, beta, _ = SCALARS[i % 4]
            C0 = rng.standard_normal((M, N)).astype(dtype)
            want = run_gemm(False, False, alpha, A, np.ascontiguousarray(B), beta, C0, None)
            C = np.full(C0.shape, np.nan, dtype) if beta == 0 else C0.copy()
            _C.gemm_gathered(alpha, A, data, ko, so, segment, beta, C)
            np.testing.assert_array_equal(C, want, err_msg=f"M={M} K={K} N={N} segment={segment}")
            assert_close(C, reference(False, False, alpha, A, B, beta, C0, None), K)


def test_gathered_b_rejects_offsets_outside_data():
    rng = np.random.default_rng(10)
    A, data, ko, so, _ = gathered_problem(rng, np.float32, 4, 6, 20, 10, 3, 12)
    C = np.zeros((4, 20), np.float32)
    with pytest.raises(ValueError, match="outside data"):
        _C.gemm_gathered(1.0, A, data[:-1], ko, so, 10, 0.0, C)
    with pytest.raises(ValueError, match="segment_offsets needs 2"):
        _C.gemm_gathered(1.0, A, data, ko, so[:1], 10, 0.0, C)
    with pytest.raises(ValueError, match="segment must be positive"):
        _C.gemm_gathered(1.0, A, data, ko, so, 0, 0.0, C)
