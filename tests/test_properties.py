"""Hypothesis properties of convolution: equivariance to translation, linearity,
and agreement of every algorithm with the reference on random problems."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from cases import CONV_ALGORITHMS, EXACT_ALGORITHMS, conv_supported
from compare import tolerance


@st.composite
def problems(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 4))
    kg = draw(st.integers(1, 4))
    winograd_shaped = draw(st.booleans())  # half the time 3x3, stride 1, dilation 1
    r, s = (3, 3) if winograd_shaped else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dh, dw = (1, 1) if winograd_shaped else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = ((draw(st.integers(0, 2)), draw(st.integers(0, 2))), (draw(st.integers(0, 2)), draw(st.integers(0, 2))))
    h = draw(st.integers(max(1, dh * (r - 1) + 1 - sum(pads[0])), 12))
    w = draw(st.integers(max(1, dw * (s - 1) + 1 - sum(pads[1])), 12))
    n = draw(st.integers(1, 2))
    stride = (1, 1) if winograd_shaped else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return (n, cg * groups, h, w), (kg * groups, cg, r, s), stride, pads, (dh, dw), groups


@st.composite
def problems_and_algorithms(draw):
    """A problem, and one of the algorithms of the kernel table that serve it."""
    problem = draw(problems())
    xs, ws, stride, pads, dilation, groups = problem
    serving = [a for a in CONV_ALGORITHMS if conv_supported(a, xs, ws, stride, pads, dilation, groups)]
    return problem, draw(st.sampled_from(serving))


@settings(max_examples=80, deadline=None)
@given(pa=problems_and_algorithms(), seed=st.integers(0, 2**32 - 1))
def test_random_problems_match_reference(pa, seed):
    problem, algorithm = pa
    xs, ws, stride, pads, dilation, groups = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    want = fastconv.conv2d(x, w, None, stride, pads, dilation, groups, algorithm="reference")
    got = fastconv.conv2d(x, w, None, stride, pads, dilation, groups, algorithm=algorithm,
                          out=np.full(want.shape, np.nan, np.float32))
    tol = tolerance(algorithm, np.float32, ws[1] * ws[2] * ws[3]) * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@settings(max_examples=40, deadline=None)
@given(shift=st.tuples(st.integers(0, 4), st.integers(0, 4)), seed=st.integers(0, 2**32 - 1),
       algorithm=st.sampled_from(EXACT_ALGORITHMS),  # compared exactly: Winograd rounds
       ksize=st.tuples(st.integers(1, 4), st.integers(1, 4)))
def test_equivariant_to_translation(shift, seed, algorithm, ksize):
    """Shift the input, the output shifts the same (stride 1, valid convolution)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (1, 3, 16, 15)).astype(np.float32)  # integers: every sum is exact
    w = rng.integers(-3, 4, (2, 3) + ksize).astype(np.float32)
    dy, dx = shift
    y = fastconv.conv2d(x, w, algorithm=algorithm)
    y_shifted = fastconv.conv2d(x[:, :, dy:, dx:], w, algorithm=algorithm)
    np.testing.assert_array_equal(y_shifted, y[:, :, dy:, dx:])


# float64, 3x3 pad 1: the algorithms that serve it (Winograd is float32 only).
LINEAR_ALGORITHMS = [a for a in CONV_ALGORITHMS
                     if conv_supported(a, (2, 3, 9, 10), (4, 3, 3, 3), 1, 1, dtype=np.float64)]


@settings(max_examples=30, deadline=None)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), seed=st.integers(0, 2**32 - 1),
       algorithm=st.sampled_from(LINEAR_ALGORITHMS))
def test_linear_in_the_input(a, b, seed, algorithm):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((2, 2, 3, 9, 10))
    w = rng.standard_normal((4, 3, 3, 3))
    lhs = fastconv.conv2d(a * x1 + b * x2, w, padding=1, algorithm=algorithm)
    rhs = (a * fastconv.conv2d(x1, w, padding=1, algorithm=algorithm)
           + b * fastconv.conv2d(x2, w, padding=1, algorithm=algorithm))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
