"""reference.py, the oracle, checked against torch.nn.functional where torch is installed."""
import numpy as np
import pytest

import fastconv
from fastconv import reference

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", [
    ((2, 3, 11, 13), (5, 3, 3, 3), 1, 1, 1, 1),
    ((1, 4, 17, 12), (6, 2, 5, 3), (2, 3), (2, 1), (1, 2), 2),
    ((1, 6, 9, 9), (6, 1, 3, 3), 2, 1, 1, 6),
    ((3, 2, 8, 7), (4, 2, 1, 1), 1, 0, 1, 1),
    ((1, 3, 10, 10), (2, 3, 4, 4), 1, "same", 1, 1),
    ((1, 3, 10, 10), (2, 3, 3, 3), 1, "same", 3, 1),
    ((1, 3, 10, 10), (2, 3, 3, 3), 1, "valid", 1, 1),
])
def test_reference_conv2d_matches_torch(xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    got = fastconv.conv2d(x, w, b, stride, padding, dilation, groups, algorithm="reference")
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, padding, dilation, groups)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)


def test_reference_asymmetric_padding_is_torch_pad_then_conv():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 7, 9))
    w = rng.standard_normal((3, 2, 3, 2))
    got = reference.conv2d(x, w, None, (2, 1), ((0, 2), (3, 1)), (1, 2), 1)
    padded = F.pad(torch.from_numpy(x), (3, 1, 0, 2))
    want = F.conv2d(padded, torch.from_numpy(w), stride=(2, 1), dilation=(1, 2))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)


def test_same_padding_with_stride_follows_tensorflow():
    """'same' with stride s gives ceil(H/s); torch refuses strided 'same', so compare with explicit pads."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 10, 11))
    w = rng.standard_normal((1, 1, 3, 4))
    y = fastconv.conv2d(x, w, stride=3, padding="same", algorithm="reference")
    assert y.shape[2:] == (4, 4)
    # H: out 4, need (4-1)*3+3-10 = 2 -> (1, 1); W: need (4-1)*3+4-11 = 2 -> (1, 1)
    want = F.conv2d(F.pad(torch.from_numpy(x), (1, 1, 1, 1)), torch.from_numpy(w), stride=3)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-10, atol=1e-10)


def test_reference_conv1d_matches_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 31))
    w = rng.standard_normal((6, 2, 5))
    got = fastconv.conv1d(x, w, None, 2, 3, 2, 2, algorithm="reference")
    want = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), None, 2, 3, 2, 2)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)
