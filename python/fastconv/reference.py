"""The NumPy oracle every kernel is tested against.

Deliberately plain: pad, slice one kernel tap at a time, accumulate in float64
with einsum. Arguments are already normalised by ``fastconv.functional``:
``stride=(sh, sw)``, ``pads=((top, bottom), (left, right))``, ``dilation=(dh, dw)``.
The result has the input's dtype.
"""
from __future__ import annotations

import numpy as np


def conv2d(x, w, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Cross-correlation of x (N, C, H, W) with w (K, C/groups, R, S); y is (N, K, P, Q)."""
    x = np.asarray(x)
    w = np.asarray(w)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    dh, dw = dilation
    p = (h + pt + pb - dh * (r - 1) - 1) // sh + 1
    q = (wd + pl + pr - dw * (s - 1) - 1) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(n, groups, cg, h + pt + pb, wd + pl + pr)
    wg = w.astype(np.float64).reshape(groups, k // groups, cg, r, s)
    y = np.zeros((n, groups, k // groups, p, q), np.float64)
    for i in range(r):
        for j in range(s):
            tap = xg[:, :, :, i * dh: i * dh + (p - 1) * sh + 1: sh, j * dw: j * dw + (q - 1) * sw + 1: sw]
            y += np.einsum("ngcpq,gkc->ngkpq", tap, wg[:, :, :, i, j])
    y = y.reshape(n, k, p, q)
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    return y.astype(x.dtype)
