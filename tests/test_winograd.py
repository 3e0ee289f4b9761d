"""Winograd F(m x m, 3 x 3), m = 2, 4, 6: the matrices rebuilt exactly (Cook-Toom in
rationals) from the interpolation points documented in csrc/math/winograd.h, the
identity they must satisfy, the C++ tile transforms, the accuracy contract, NaN/Inf
behaviour and the errors for problems Winograd does not serve."""
from fractions import Fraction as Fr

import numpy as np
import pytest

import fastconv
from fastconv import _C
from compare import assert_close, nan_out

TILES = (2, 4, 6)
H = Fr(1, 2)
# The points documented in csrc/math/winograd.h (plus the point at infinity).
POINTS = {2: [0, 1, -1], 4: [0, 1, -1, H, -H], 6: [0, 1, -1, 2, -2, H, -H]}
# The accuracy contract (README): max |error| / max |y| on signed random float32 data.
CONTRACT = {2: 1e-5, 4: 5e-5, 6: 2e-4}


# ---- exact construction ------------------------------------------------------------

def _polymul(a, b):
    out = [Fr(0)] * (len(a) + len(b) - 1)
    for i, u in enumerate(a):
        for j, v in enumerate(b):
            out[i + j] += u * v
    return out


def _poly_from_roots(roots):
    p = [Fr(1)]
    for a in roots:
        p = _polymul(p, [-a, Fr(1)])
    return p


def cook_toom(m, points, r=3):
    """(AT, G, BT) of F(m, r) as lists of Fractions: Toom-Cook for the linear convolution
    with points a_j and infinity, transposed into a correlation. The 1/f_j of Lagrange
    interpolation goes to G, with the sign s_j = sign(f_j) on both G's and B^T's row j."""
    pts = [Fr(p) for p in points]
    n = m + r - 1
    assert len(pts) == n - 1
    AT = [[a ** i for a in pts] + [Fr(int(i == m - 1))] for i in range(m)]
    G, BT = [], []
    for j, a in enumerate(pts):
        others = pts[:j] + pts[j + 1:]
        f = Fr(1)
        for b in others:
            f *= a - b
        s = 1 if f > 0 else -1
        G.append([s * a ** k / f for k in range(r)])
        BT.append([s * c for c in _poly_from_roots(others)] + [Fr(0)])
    G.append([Fr(int(k == r - 1)) for k in range(r)])
    BT.append(_poly_from_roots(pts))
    return AT, G, BT


def _mat(a, b):
    return [[sum((a[i][k] * b[k][j] for k in range(len(b))), Fr(0)) for j in range(len(b[0]))] for i in range(len(a))]


def _t(a):
    return [list(r) for r in zip(*a)]


@pytest.mark.parametrize("m", TILES)
def test_identity_is_exact_in_rationals(m):
    """Y = A^T [(G g G^T) (.) (B^T d B)] A equals the direct 3x3 correlation of one tile,
    exactly, for random rational d and g."""
    AT, G, BT = cook_toom(m, POINTS[m])
    n = m + 2
    rng = np.random.default_rng(m)
    d = [[Fr(int(v), 7) for v in row] for row in rng.integers(-50, 51, (n, n))]
    g = [[Fr(int(v), 3) for v in row] for row in rng.integers(-50, 51, (3, 3))]
    U = _mat(_mat(G, g), _t(G))
    V = _mat(_mat(BT, d), _t(BT))
    Mx = [[U[i][j] * V[i][j] for j in range(n)] for i in range(n)]
    Y = _mat(_mat(AT, Mx), _t(AT))
    want = [[sum((d[i + r][j + s] * g[r][s] for r in range(3) for s in range(3)), Fr(0)) for j in range(m)]
            for i in range(m)]
    assert Y == want


@pytest.mark.parametrize("m", TILES)
def test_cpp_matrices_are_the_cook_toom_ones(m):
    AT, G, BT = _C.winograd_matrices(m)
    for got, want in zip((AT, G, BT), cook_toom(m, POINTS[m])):
        want = np.array([[float(v) for v in row] for row in want])  # each entry rounded once
        assert got.dtype == np.float64 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("m", TILES)
def test_cpp_tile_transforms(m):
    """The kernel's own vectorised tile transforms against the exact matrices."""
    AT, G, BT = (np.array([[float(v) for v in row] for row in M]) for M in cook_toom(m, POINTS[m]))
    rng = np.random.default_rng(10 + m)
    n = m + 2
    d = rng.standard_normal((n, n)).astype(np.float32)
    g = rng.standard_normal((3, 3)).astype(np.float32)
    t = rng.standard_normal((n, n)).astype(np.float32)
    for got, want in [(_C.winograd_transform_input(m, d), BT @ d @ BT.T),
                      (_C.winograd_transform_kernel(m, g), G @ g @ G.T),
                      (_C.winograd_transform_output(m, t), AT @ t @ AT.T)]:
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))
    with pytest.raises(ValueError, match="tile"):
        _C.winograd_transform_input(m, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="2, 4 or 6"):
        _C.winograd_matrices(3)


# ---- accuracy over whole convolutions -------------------------------------------------

# (x shape, w shape, padding, groups)
SHAPES = [
    ((1, 512, 14, 14), (64, 512, 3, 3), 1, 1),          # the contract's 512 channels
    ((2, 7, 13, 11), (5, 7, 3, 3), 1, 1),               # batch, odd/prime sizes
    ((1, 6, 17, 19), (9, 2, 3, 3), ((0, 2), (1, 0)), 3),  # asymmetric pads, groups
    ((1, 8, 9, 9), (8, 1, 3, 3), 1, 8),                 # depthwise
    ((3, 5, 2, 3), (4, 5, 3, 3), 1, 1),                 # H, W smaller than any tile
    ((1, 4, 5, 5), (3, 4, 3, 3), "full", 1),            # output larger than the input
    ((1, 3, 23, 29), (4, 3, 3, 3), "valid", 1),
    ((0, 4, 8, 8), (4, 4, 3, 3), 1, 1),                 # empty batch
    # Rows of 16 whole interior tiles side by side (the vectorised gather and scatter of
    # strided tiles), next to clipped and padded edge tiles: 131 columns = 2 runs + edges.
    ((2, 3, 37, 131), (5, 3, 3, 3), ((1, 0), (2, 1)), 1),
    ((1, 2, 9, 100), (3, 2, 3, 3), 0, 1),
    # ResNet's maps: rows of 14 or 7 tiles, so blocks of 8 interior tiles (AVX2's transposed
    # gather and scatter) span rows of tiles and images; batch 3 puts block edges anywhere.
    ((3, 6, 56, 56), (5, 6, 3, 3), 1, 1),
    ((2, 5, 28, 31), (4, 5, 3, 3), 1, 1),
    # The kernel transform reads 16 output channels x 16 input channels at a time: 19 x 37
    # leaves both counts with a remainder (and K >= tiles: the channel-blocked path), and
    # 20 channels a group start each group's rows mid-block.
    ((1, 37, 6, 7), (19, 37, 3, 3), 1, 1),
    ((2, 40, 5, 5), (24, 20, 3, 3), 1, 2),
]


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("case", SHAPES, ids=[f"x{s[0]}-w{s[1]}-p{s[2]}-g{s[3]}".replace(" ", "") for s in SHAPES])
def test_accuracy_contract(m, case, isa, rng):
    xs, ws, padding, groups = case
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    want = fastconv.conv2d(x, w, b, padding=padding, groups=groups, algorithm="reference")
    out = nan_out(want.shape, np.float32)
    got = fastconv.conv2d(x, w, b, padding=padding, groups=groups, algorithm=f"winograd:{m}", out=out)
    assert got is out
    assert_close(got, want, CONTRACT[m], f"winograd:{m}/{isa}")


def test_winograd_alias_picks_a_tile(rng):
    x = rng.standard_normal((1, 16, 30, 30)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    want = fastconv.conv2d(x, w, padding=1, algorithm="reference")
    got = fastconv.conv2d(x, w, padding=1, algorithm="winograd")
    assert_close(got, want, CONTRACT[6], "winograd")
    assert "winograd" in fastconv.info()["algorithms"]


# ---- NaN and Inf ------------------------------------------------------------------

@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_explicit_winograd_nan_spreads_over_the_tile(m, bad, rng):
    """Documented behaviour of explicit winograd: every output the reference gives as
    non-finite is non-finite; beyond those, a NaN or Inf input may turn into NaN other
    outputs of the tiles whose (m+2)x(m+2) input window covers it (which ones depends on
    the zero pattern of the transforms), never an output of any other tile."""
    x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x[0, 1, 9, 10] = bad
    want = fastconv.conv2d(x, w, padding=1, algorithm="reference")
    got = fastconv.conv2d(x, w, padding=1, algorithm=f"winograd:{m}")
    assert np.all(~np.isfinite(got[~np.isfinite(want)]))
    # tiles whose input window (rows t*m - 1 .. t*m + m) covers row 9 / column 10
    hit_r = [t for t in range(-(-20 // m)) if t * m - 1 <= 9 <= t * m + m]
    hit_c = [t for t in range(-(-20 // m)) if t * m - 1 <= 10 <= t * m + m]
    spoiled = np.zeros((20, 20), bool)
    for tr in hit_r:
        for tc in hit_c:
            spoiled[tr * m:(tr + 1) * m, tc * m:(tc + 1) * m] = True
    assert np.all(np.isfinite(got[:, :, ~spoiled]))
    clean = got[:, :, ~spoiled]
    assert np.all(np.isfinite(clean))
    np.testing.assert_allclose(clean, want[:, :, ~spoiled], rtol=0, atol=1e-4 * np.abs(want[np.isfinite(want)]).max())


# ---- what Winograd does not serve ------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["winograd", "winograd:2", "winograd:4", "winograd:6"])
@pytest.mark.parametrize("kwargs, words", [
    (dict(w=np.zeros((4, 3, 5, 5), np.float32)), ["3x3", "kernel 5x5"]),
    (dict(stride=2), ["stride 1", "stride (2, 2)"]),
    (dict(dilation=2), ["dilation 1", "dilation (2, 2)"]),
    (dict(x=np.zeros((1, 3, 8, 8)), w=np.zeros((4, 3, 3, 3))), ["float32", "float64"]),
])
def test_unsupported_problems_raise(algorithm, kwargs, words):
    args = dict(x=np.zeros((1, 3, 8, 8), np.float32), w=np.zeros((4, 3, 3, 3), np.float32), padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(args.pop("x"), args.pop("w"), **args, algorithm=algorithm)
    for word in [algorithm] + words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"
