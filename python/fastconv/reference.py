"""The NumPy oracle every kernel is tested against.

Deliberately plain: pad, slice one kernel tap at a time, accumulate in float64
with einsum. Arguments are already normalised (``fastconv._args``, as the public
functions do): ``stride=(sh, sw)``, ``pads=((top, bottom), (left, right))``,
``dilation=(dh, dw)``. The result has the input's dtype. Pooling follows torch's
CPU semantics (see the section below); the output-size formulas are ``_args``'s.
"""
from __future__ import annotations

import numpy as np

from ._args import output_size as _out_size
from ._args import pool_output_size


# IEEE arithmetic on NaN/Inf data (Inf - Inf, Inf * 0) is the contract, not a mistake: the
# oracle computes it without NumPy's warnings, as the kernels do.
_ieee = np.errstate(invalid="ignore", over="ignore")


@_ieee
def conv2d(x, w, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Cross-correlation of x (N, C, H, W) with w (K, C/groups, R, S); y is (N, K, P, Q)."""
    x = np.asarray(x)
    w = np.asarray(w)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    dh, dw = dilation
    p = _out_size(h, pt, pb, r, sh, dh)
    q = _out_size(wd, pl, pr, s, sw, dw)
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


@_ieee
def conv2d_backward(grad_y, x, w, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Gradients of conv2d (above) given grad_y (N, K, P, Q): (grad_x (N, C, H, W),
    grad_w (K, C/groups, R, S), grad_bias (K,)). Tap by tap, as the forward: each tap's
    slice of the padded input gets grad_y times the tap's weights, and the tap's weights
    get grad_y times the slice; the padding is cropped off grad_x at the end."""
    x = np.asarray(x)
    w = np.asarray(w)
    gy = np.asarray(grad_y, np.float64)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    dh, dw = dilation
    p, q = gy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(n, groups, cg, h + pt + pb, wd + pl + pr)
    gxg = np.zeros_like(xg)
    wg = w.astype(np.float64).reshape(groups, k // groups, cg, r, s)
    gyg = gy.reshape(n, groups, k // groups, p, q)
    gw = np.zeros_like(wg)
    for i in range(r):
        for j in range(s):
            sl = (slice(None),) * 3 + (slice(i * dh, i * dh + (p - 1) * sh + 1, sh),
                                       slice(j * dw, j * dw + (q - 1) * sw + 1, sw))
            gxg[sl] += np.einsum("ngkpq,gkc->ngcpq", gyg, wg[:, :, :, i, j])
            gw[:, :, :, i, j] = np.einsum("ngkpq,ngcpq->gkc", gyg, xg[sl])
    gx = gxg.reshape(xp.shape)[:, :, pt:pt + h, pl:pl + wd]
    gb = gy.sum(axis=(0, 2, 3))
    return gx.astype(x.dtype), gw.reshape(w.shape).astype(x.dtype), gb.astype(x.dtype)


# ---- tiled / locally connected convolution ---------------------------------------------------

def _tiled_patches(x, w_shape, stride, pads, dilation):
    """(padded float64 x, P, Q, patch(i, j)): the (N, C, R, S) window of output (i, j)."""
    n, c, h, wd = x.shape
    r, s = w_shape[-2:]
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    dh, dw = dilation
    p = _out_size(h, pt, pb, r, sh, dh)
    q = _out_size(wd, pl, pr, s, sw, dw)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))

    def window(i, j):
        return (slice(None), slice(None), slice(i * sh, i * sh + dh * (r - 1) + 1, dh),
                slice(j * sw, j * sw + dw * (s - 1) + 1, dw))
    return xp, p, q, window


@_ieee
def tiled_conv2d(x, w, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Tiled convolution of x (N, C, H, W) with w (TP, TQ, K, C/groups, R, S): output (i, j)
    is the sum of products of its zero-padded window with set w[i % TP, j % TQ]; bias None,
    (K,) or per set (TP, TQ, K). TP x TQ = P x Q is a locally connected layer. One position
    at a time, in float64."""
    x = np.asarray(x)
    w = np.asarray(w)
    n, c = x.shape[:2]
    tp, tq, k, cg, r, s = w.shape
    xp, p, q, window = _tiled_patches(x, w.shape, stride, pads, dilation)
    wg = w.astype(np.float64).reshape(tp, tq, groups, k // groups, cg, r, s)
    b = None if bias is None else np.asarray(bias, np.float64)
    y = np.zeros((n, k, p, q), np.float64)
    for i in range(p):
        for j in range(q):
            patch = xp[window(i, j)].reshape(n, groups, cg, r, s)
            y[:, :, i, j] = np.einsum("ngcrs,gkcrs->ngk", patch, wg[i % tp, j % tq]).reshape(n, k)
            if b is not None:
                y[:, :, i, j] += b if b.ndim == 1 else b[i % tp, j % tq]
    return y.astype(x.dtype)


@_ieee
def tiled_conv2d_backward(grad_y, x, w, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Gradients of tiled_conv2d (above) given grad_y (N, K, P, Q): (grad_x (N, C, H, W),
    grad_w (TP, TQ, K, C/groups, R, S), grad_bias per set (TP, TQ, K)), one position at a
    time: its window gets grad_y times its set's weights, its set gets grad_y times the
    window."""
    x = np.asarray(x)
    w = np.asarray(w)
    gy = np.asarray(grad_y, np.float64)
    n, c, h, wd = x.shape
    tp, tq, k, cg, r, s = w.shape
    (pt, _), (pl, _) = pads
    xp, p, q, window = _tiled_patches(x, w.shape, stride, pads, dilation)
    wg = w.astype(np.float64).reshape(tp, tq, groups, k // groups, cg, r, s)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(wg)
    gb = np.zeros((tp, tq, k), np.float64)
    for i in range(p):
        for j in range(q):
            g = gy[:, :, i, j].reshape(n, groups, k // groups)
            patch = xp[window(i, j)].reshape(n, groups, cg, r, s)
            gxp[window(i, j)] += np.einsum("ngk,gkcrs->ngcrs", g, wg[i % tp, j % tq]).reshape(n, c, r, s)
            gw[i % tp, j % tq] += np.einsum("ngk,ngcrs->gkcrs", g, patch)
            gb[i % tp, j % tq] += gy[:, :, i, j].sum(axis=0)
    gx = gxp[:, :, pt:pt + h, pl:pl + wd]
    return gx.astype(x.dtype), gw.reshape(w.shape).astype(x.dtype), gb.astype(x.dtype)


# ---- pooling -------------------------------------------------------------------------------
# Plain loops over output positions, vectorised over (N, C) only; float64 accumulation.
# x is (N, C, H, W); per-axis arguments are pairs (h, w); pads are symmetric (top, left).
# Semantics are torch.nn.functional's CPU ones, spelled out here independently of the
# kernels: max takes the first maximum in row-major order, or the LAST NaN if the window
# has one; avg divides by the window clipped to the padded input (count_include_pad) or by
# the number of elements inside the input; adaptive windows are [floor(i*n/m), ceil((i+1)*n/m)).

def _pool_taps(o, size, kernel, stride, pad, dilation):
    """Input positions of the taps of window o that fall inside [0, size)."""
    start = o * stride - pad
    return [start + j * dilation for j in range(kernel) if 0 <= start + j * dilation < size]


def _adaptive_taps(o, size, out):
    return list(range(o * size // out, -(-(o + 1) * size // out)))


def _max_select(x, taps):
    """Max over the window taps [(row, col), ...] of x (N, C, H, W): (values, flat indices)."""
    n, c, h, w = x.shape
    pos = np.array([r * w + s for r, s in taps], np.int64)
    v = x.reshape(n, c, h * w)[:, :, pos]
    nan = np.isnan(v)
    first_max = np.argmax(np.where(nan, -np.inf, v), axis=-1)
    last_nan = v.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    sel = np.where(nan.any(axis=-1), last_nan, first_max)
    return np.take_along_axis(v, sel[..., None], -1)[..., 0], pos[sel]


def max_pool2d(x, kernel, stride, pads=(0, 0), dilation=(1, 1), ceil_mode=False):
    """Max pooling; returns (y (N, C, P, Q), indices int64 into each H*W plane)."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    P = pool_output_size(h, kernel[0], stride[0], pads[0], dilation[0], ceil_mode)
    Q = pool_output_size(w, kernel[1], stride[1], pads[1], dilation[1], ceil_mode)
    y = np.empty((n, c, P, Q), x.dtype)
    idx = np.empty((n, c, P, Q), np.int64)
    for i in range(P):
        rows = _pool_taps(i, h, kernel[0], stride[0], pads[0], dilation[0])
        for j in range(Q):
            cols = _pool_taps(j, w, kernel[1], stride[1], pads[1], dilation[1])
            if not rows or not cols:  # dilated window all in the padding: torch gives -inf and
                # the index of the first tap past the top/left padding
                r0, c0 = i * stride[0] - pads[0], j * stride[1] - pads[1]
                while r0 < 0:
                    r0 += dilation[0]
                while c0 < 0:
                    c0 += dilation[1]
                y[:, :, i, j] = -np.inf
                idx[:, :, i, j] = r0 * w + c0
                continue
            y[:, :, i, j], idx[:, :, i, j] = _max_select(x, [(r, s) for r in rows for s in cols])
    return y, idx


def _avg_windows(h, w, kernel, stride, pads, ceil_mode, count_include_pad, divisor_override):
    """(P, Q, [(i, j, rows, cols, divisor), ...]) of average pooling, divisor as torch's."""
    P = pool_output_size(h, kernel[0], stride[0], pads[0], 1, ceil_mode)
    Q = pool_output_size(w, kernel[1], stride[1], pads[1], 1, ceil_mode)
    windows = []
    for i in range(P):
        rows = _pool_taps(i, h, kernel[0], stride[0], pads[0], 1)
        r0 = i * stride[0] - pads[0]
        for j in range(Q):
            cols = _pool_taps(j, w, kernel[1], stride[1], pads[1], 1)
            s0 = j * stride[1] - pads[1]
            if divisor_override:
                div = divisor_override
            elif count_include_pad:  # the window clipped to the padded input
                div = (min(r0 + kernel[0], h + pads[0]) - r0) * (min(s0 + kernel[1], w + pads[1]) - s0)
            else:
                div = len(rows) * len(cols)
            windows.append((i, j, rows, cols, div))
    return P, Q, windows


def _adaptive_windows(h, w, output_size):
    """(P, Q, [(i, j, rows, cols, divisor), ...]) of adaptive average pooling."""
    P, Q = output_size
    windows = []
    for i in range(P):
        rows = _adaptive_taps(i, h, P)
        for j in range(Q):
            cols = _adaptive_taps(j, w, Q)
            windows.append((i, j, rows, cols, len(rows) * len(cols)))
    return P, Q, windows


def _average(x, P, Q, windows):
    """y (N, C, P, Q): each window's sum over its taps divided by its divisor."""
    n, c = x.shape[:2]
    xd = x.astype(np.float64)
    y = np.empty((n, c, P, Q), np.float64)
    for i, j, rows, cols, div in windows:
        y[:, :, i, j] = xd[:, :, rows][:, :, :, cols].sum(axis=(2, 3)) / div
    return y.astype(x.dtype)


def _average_backward(grad_y, x_shape, windows):
    """float64 grad_x: each window's grad_y / divisor added to every one of its taps."""
    gy = np.asarray(grad_y, np.float64)
    gx = np.zeros(x_shape, np.float64)
    for i, j, rows, cols, div in windows:
        ri, ci = np.ix_(rows, cols)  # the taps of one window are distinct: += is safe
        gx[:, :, ri, ci] += (gy[:, :, i, j] / div)[:, :, None, None]
    return gx


def avg_pool2d(x, kernel, stride, pads=(0, 0), ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling (y is (N, C, P, Q)), divisor as torch's."""
    x = np.asarray(x)
    P, Q, windows = _avg_windows(*x.shape[2:], kernel, stride, pads, ceil_mode, count_include_pad,
                                 divisor_override)
    return _average(x, P, Q, windows)


def avg_pool2d_backward(grad_y, x, kernel, stride, pads=(0, 0), ceil_mode=False, count_include_pad=True,
                        divisor_override=None):
    """grad_x (N, C, H, W) of avg_pool2d given grad_y (N, C, P, Q)."""
    x = np.asarray(x)
    _, _, windows = _avg_windows(*x.shape[2:], kernel, stride, pads, ceil_mode, count_include_pad,
                                 divisor_override)
    return _average_backward(grad_y, x.shape, windows).astype(x.dtype)


def max_pool2d_empty_windows(h, w, kernel, stride, pads=(0, 0), dilation=(1, 1), ceil_mode=False):
    """(P, Q) mask of max pooling's windows with no tap inside the input (dilated, all in the
    padding): y = -inf whatever x is."""
    P = pool_output_size(h, kernel[0], stride[0], pads[0], dilation[0], ceil_mode)
    Q = pool_output_size(w, kernel[1], stride[1], pads[1], dilation[1], ceil_mode)
    rows = np.array([not _pool_taps(i, h, kernel[0], stride[0], pads[0], dilation[0]) for i in range(P)], bool)
    cols = np.array([not _pool_taps(j, w, kernel[1], stride[1], pads[1], dilation[1]) for j in range(Q)], bool)
    return rows[:, None] | cols[None, :]


def max_pool2d_backward(grad_y, x_shape, indices, empty=None):
    """grad_x (N, C, H, W) of max pooling: grad_y added at the forward's indices (flat into
    each H*W plane); works for adaptive max pooling too. A dilated window with no tap inside
    the input (``empty``, max_pool2d_empty_windows; y = -inf whatever x is) passes no
    gradient: its index may lie past the plane, or, wrapping past a row's end, name an
    element the window never read (torch adds the gradient there)."""
    gy = np.asarray(grad_y)
    n, c, h, w = x_shape
    gx = np.zeros((n * c, h * w), np.float64)
    rows = np.repeat(np.arange(n * c), gy.shape[2] * gy.shape[3])
    idx = np.asarray(indices).reshape(-1)
    inside = idx < h * w
    if empty is not None:
        inside &= ~np.broadcast_to(empty, gy.shape).reshape(-1)
    np.add.at(gx, (rows[inside], idx[inside]), gy.reshape(-1).astype(np.float64)[inside])
    return gx.reshape(x_shape).astype(gy.dtype)


def lp_pool2d_backward(grad_y, x, norm_type, kernel, stride, ceil_mode=False):
    """grad_x of lp_pool2d, torch's autograd spelled out: with a = avg_pool2d(x^p) and
    u = sign(a)*relu(|a|)*kh*kw, y = u^(1/p); relu passes no gradient where a == 0, so
    grad_a = grad_y * (1/p)*u^(1/p-1)*kh*kw (0 where a == 0), grad_x = p*x^(p-1) * avg
    backward(grad_a). p = +-inf: grad_y*sign(x) at the window's first max (min) of |x|."""
    x = np.asarray(x)
    gy = np.asarray(grad_y, np.float64)
    if np.isinf(norm_type):
        sign = 1.0 if norm_type > 0 else -1.0
        _, idx = max_pool2d(sign * np.abs(x), kernel, stride, (0, 0), (1, 1), ceil_mode)
        gx = max_pool2d_backward(gy, x.shape, idx)
        return (gx * np.sign(x.astype(np.float64))).astype(x.dtype)
    xd = x.astype(np.float64)
    _, _, windows = _avg_windows(*x.shape[2:], kernel, stride, (0, 0), ceil_mode, True, None)
    with np.errstate(all="ignore"):
        a = avg_pool2d(xd ** norm_type, kernel, stride, (0, 0), ceil_mode, True)
        area = kernel[0] * kernel[1]
        u = a * area
        ga = np.where(np.abs(a) <= 0, 0.0, gy * (1.0 / norm_type) * u ** (1.0 / norm_type - 1) * area)
        gx = _average_backward(ga, x.shape, windows) * (norm_type * xd ** (norm_type - 1))
    return gx.astype(x.dtype)


def adaptive_avg_pool2d_backward(grad_y, x, output_size):
    """grad_x of adaptive_avg_pool2d given grad_y (N, C, P, Q)."""
    x = np.asarray(x)
    _, _, windows = _adaptive_windows(*x.shape[2:], output_size)
    return _average_backward(grad_y, x.shape, windows).astype(x.dtype)


def lp_pool2d(x, norm_type, kernel, stride, ceil_mode=False):
    """torch's Lp pooling: (avg_pool2d(x^p) * kh*kw)^(1/p); +-inf: max (min) of |x|."""
    x = np.asarray(x)
    if np.isinf(norm_type):
        sign = 1.0 if norm_type > 0 else -1.0
        y, _ = max_pool2d(sign * np.abs(x), kernel, stride, (0, 0), (1, 1), ceil_mode)
        return (sign * y).astype(x.dtype)
    with np.errstate(all="ignore"):
        a = avg_pool2d(x.astype(np.float64) ** norm_type, kernel, stride, (0, 0), ceil_mode, True)
        y = (a * (kernel[0] * kernel[1])) ** (1.0 / norm_type)
    return y.astype(x.dtype)


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling to output_size (P, Q)."""
    x = np.asarray(x)
    P, Q, windows = _adaptive_windows(*x.shape[2:], output_size)
    return _average(x, P, Q, windows)


def adaptive_max_pool2d(x, output_size):
    """Adaptive max pooling to output_size (P, Q); returns (y, indices)."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    P, Q = output_size
    y = np.empty((n, c, P, Q), x.dtype)
    idx = np.empty((n, c, P, Q), np.int64)
    for i in range(P):
        rows = _adaptive_taps(i, h, P)
        for j in range(Q):
            cols = _adaptive_taps(j, w, Q)
            y[:, :, i, j], idx[:, :, i, j] = _max_select(x, [(r, s) for r in rows for s in cols])
    return y, idx


# ---- distance-weighted average pooling -------------------------------------------------------
# weight is the (R, S) window (float64). Window (i, j) covers rows i*sh - ph + r, columns
# j*sw - pw + s. normalize: sum over the taps inside the input of weight * x, divided by the sum
# of the weights of the counted taps (inside the padded input with count_include_pad, else
# inside the input); else the weighted sum alone.

def gaussian_window(kernel, sigma):
    """exp(-d^2 / (2 sigma^2)), d the Euclidean distance of tap (r, s) from the window's centre;
    sigma a pair (inf: that axis uniform)."""
    r = np.arange(kernel[0]) - (kernel[0] - 1) / 2
    s = np.arange(kernel[1]) - (kernel[1] - 1) / 2
    inv = [0.0 if np.isinf(sg) else 1 / (2 * sg * sg) for sg in sigma]
    return np.exp(-(r[:, None] ** 2 * inv[0] + s[None, :] ** 2 * inv[1]))


def _weighted_windows(h, w, weight, stride, pads, ceil_mode, count_include_pad):
    """(P, Q, [(i, j, tap weights (R, S) with 0 outside the input, divisor weights (R, S)), ...])."""
    R, S = weight.shape
    P = pool_output_size(h, R, stride[0], pads[0], 1, ceil_mode)
    Q = pool_output_size(w, S, stride[1], pads[1], 1, ceil_mode)
    out = []
    for i in range(P):
        rows = i * stride[0] - pads[0] + np.arange(R)
        for j in range(Q):
            cols = j * stride[1] - pads[1] + np.arange(S)
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
            padded = ((rows < h + pads[0])[:, None] & (cols < w + pads[1])[None, :])  # starts are >= -pad
            counted = padded if count_include_pad else inside
            out.append((i, j, rows, cols, np.where(inside, weight, 0.0), np.where(counted, weight, 0.0).sum()))
    return P, Q, out


@_ieee
def weighted_avg_pool2d(x, weight, stride, pads=(0, 0), ceil_mode=False, count_include_pad=True, normalize=True):
    """Distance-weighted average pooling of x (N, C, H, W) with the (R, S) window weight."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    weight = np.asarray(weight, np.float64)
    P, Q, windows = _weighted_windows(h, w, weight, stride, pads, ceil_mode, count_include_pad)
    xp = np.zeros((n, c, h + 2 * weight.shape[0], w + 2 * weight.shape[1]))  # room for any window
    off_h, off_w = weight.shape
    xp[:, :, off_h:off_h + h, off_w:off_w + w] = x
    y = np.empty((n, c, P, Q))
    for i, j, rows, cols, tw, div in windows:
        patch = xp[:, :, rows[0] + off_h:rows[-1] + off_h + 1, cols[0] + off_w:cols[-1] + off_w + 1]
        v = np.einsum("ncrs,rs->nc", patch, tw)
        y[:, :, i, j] = v / div if normalize else v
    return y.astype(x.dtype)


@_ieee
def weighted_avg_pool2d_backward(grad_y, x, weight, stride, pads=(0, 0), ceil_mode=False, count_include_pad=True,
                                 normalize=True):
    """grad_x (N, C, H, W) of weighted_avg_pool2d given grad_y (N, C, P, Q)."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    weight = np.asarray(weight, np.float64)
    gy = np.asarray(grad_y, np.float64)
    _, _, windows = _weighted_windows(h, w, weight, stride, pads, ceil_mode, count_include_pad)
    off_h, off_w = weight.shape
    gxp = np.zeros((n, c, h + 2 * off_h, w + 2 * off_w))
    for i, j, rows, cols, tw, div in windows:
        g = gy[:, :, i, j] / div if normalize else gy[:, :, i, j]
        gxp[:, :, rows[0] + off_h:rows[-1] + off_h + 1, cols[0] + off_w:cols[-1] + off_w + 1] += \
            g[:, :, None, None] * tw
    return gxp[:, :, off_h:off_h + h, off_w:off_w + w].astype(x.dtype)
