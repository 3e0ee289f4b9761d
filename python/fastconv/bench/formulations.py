# formulations.py: the torch code a user would write for fastconv's layers that torch lacks
# (locally connected / tiled convolution, distance-weighted average pooling), and the shapes
# they are benchmarked on. One copy serves `python -m fastconv bench --sections local weighted`
# (runner.py) and benchmarks/bench_local.py / bench_weighted_pool.py, which import it.
"""Peer formulations of issue 21's layers and their benchmark shapes.

Locally connected / tiled: torch has no such layer; the usual formulation unfolds the input and
contracts it with the position-major weight: ``cols = F.unfold(x, (R, S))`` (N, C*R*S, P*Q), then
``einsum('ncl,lkc->nkl', cols, w.view(P*Q, K, C*R*S))`` or ``bmm`` over the positions; a tiled
weight is first indexed per position (``w[p % TP, q % TQ]``). Both are timed; the benchmark's
ratio is against the faster one.

Weighted pooling: a depthwise ``F.conv2d`` (groups=C) with the fixed normalised window; with
``count_include_pad=False`` also divided by the window's share inside the input, a map computed
once per shape (outside the timing).

torch is imported inside the functions only.
"""
from __future__ import annotations

import numpy as np

# (name, (N, C, H, W), K, kernel, tiles: None = locally connected, else (TP, TQ)); 3x3, stride 1, no padding
LOCAL_SHAPES = [
    ("local 1x16x32x32 k16", (1, 16, 32, 32), 16, 3, None),
    ("local 8x32x16x16 k32", (8, 32, 16, 16), 32, 3, None),
    ("local 1x64x14x14 k64", (1, 64, 14, 14), 64, 3, None),
    ("tiled2 8x32x16x16 k32", (8, 32, 16, 16), 32, 3, (2, 2)),
]

# (name, input shape at batch 1, kernel, stride, padding, count_include_pad, fastconv keyword arguments)
WEIGHTED_LAYERS = [
    ("gauss3x3s2p1", (1, 64, 112, 112), 3, 2, 1, True, {"sigma": 1.0}),
    ("gauss5x5s1p2", (1, 256, 56, 56), 5, 1, 2, True, {"sigma": 1.0}),
    ("gauss3x3s1p1", (1, 512, 28, 28), 3, 1, 1, True, {"sigma": 1.0}),
    ("gauss3x3s1p1-nocip", (1, 512, 28, 28), 3, 1, 1, False, {"sigma": 1.0}),
    ("dense3x3s1p1", (1, 512, 28, 28), 3, 1, 1, True,
     {"weight": np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 3.0]])}),
    ("gauss5x5s1p2-sum", (1, 256, 56, 56), 5, 1, 2, True, {"sigma": 1.0, "normalize": False}),
]


# ---- locally connected and tiled convolution ---------------------------------------------------

def local_problem(shape, k, r, tiles, seed=0):
    """(x (N, C, H, W), weight (TP, TQ, K, C, R, R) or (P, Q, K, C, R, R), (P, Q)): float32,
    unit-variance outputs."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    p, q = h - r + 1, w - r + 1
    sets = tiles or (p, q)
    x = rng.standard_normal(shape, dtype=np.float32)
    wt = rng.standard_normal(sets + (k, c, r, r), dtype=np.float32) / np.float32(np.sqrt(c * r * r))
    return x, wt, (p, q)


def _as_torch(a):
    """A NumPy array as a torch view of it; a torch tensor (any device) as it is."""
    import torch
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(a)


def local_torch_fns(x, wt, pq, tiles):
    """(einsum, bmm): the unfold + einsum and unfold + bmm formulations, each a callable
    (x=..., w=...) -> (N, K, P, Q) tensor, by default on ``x`` and ``wt``: NumPy arrays (torch
    views of them) or torch tensors (CUDA ones run there)."""
    import torch
    import torch.nn.functional as F
    n = x.shape[0]
    p, q = pq
    sets_h, sets_w, k, _, r, s = wt.shape
    tx = _as_torch(x)
    tw = _as_torch(wt)
    # a tiled layer would keep its per-position set indices; made once, on the weight's device
    ih = torch.arange(p, device=tw.device) % sets_h
    iw = torch.arange(q, device=tw.device) % sets_w

    def weight_per_position(w):
        if tiles is None:
            return w.reshape(p * q, k, -1)
        return w[ih[:, None], iw[None, :]].reshape(p * q, k, -1)

    def einsum(x=tx, w=tw):
        cols = F.unfold(x, (r, s))
        return torch.einsum("ncl,lkc->nkl", cols, weight_per_position(w)).reshape(n, k, p, q)

    def bmm(x=tx, w=tw):
        cols = F.unfold(x, (r, s))  # (N, CRS, L) -> (L, CRS, N)
        return torch.bmm(weight_per_position(w), cols.permute(2, 1, 0)).permute(2, 1, 0).reshape(n, k, p, q)

    return einsum, bmm


def local_fastconv_fn(x, wt, tiles, algorithm="direct"):
    """fastconv's forward of the problem as a zero-argument callable."""
    import fastconv as fc
    op = fc.local_conv2d if tiles is None else fc.tiled_conv2d
    return lambda: op(x, wt, algorithm=algorithm)


def local_fastconv_backward_fn(x, wt, tiles, gy, algorithm="direct"):
    """fastconv's backward (grad_x, grad_w; no bias) as a zero-argument callable -> (gx, gw)."""
    import fastconv as fc
    op = fc.local_conv2d_backward if tiles is None else fc.tiled_conv2d_backward
    return lambda: op(gy, x, wt, needs=(True, True, False), algorithm=algorithm)[:2]


def local_torch_backward_fns(x, wt, pq, tiles, gy):
    """(einsum, bmm): torch autograd's (grad_x, grad_w) through each formulation, zero-argument
    callables (a fresh graph per call, as a training step builds one); the arrays as in
    local_torch_fns (NumPy or torch tensors on one device)."""
    import torch
    einsum, bmm = local_torch_fns(x, wt, pq, tiles)
    tx, tw, tgy = _as_torch(x), _as_torch(wt), _as_torch(gy)

    def torch_backward(form):
        def run():
            x_leaf = tx.detach().requires_grad_()
            w_leaf = tw.detach().requires_grad_()
            return torch.autograd.grad(form(x_leaf, w_leaf), (x_leaf, w_leaf), tgy)
        return run

    return torch_backward(einsum), torch_backward(bmm)


# ---- distance-weighted average pooling --------------------------------------------------------

def weighted_input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def weighted_torch_formulation(shape, k, s, p, cip, kw, device=None):
    """A callable t -> weighted_avg_pool2d's result computed with torch: a depthwise conv2d with
    the fixed window (on ``device``, default the CPU), divided by the window's share inside the
    input when normalised without count_include_pad."""
    import torch
    import torch.nn.functional as F

    import fastconv as fc
    c = shape[1]
    normalize = kw.get("normalize", True)
    w = fc.pool_window_weights(k, sigma=kw.get("sigma", 1.0), weight=kw.get("weight"), normalize=normalize)
    if normalize:
        w = w / w.sum()
    wt = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(w, (c, 1, k, k)), np.float32)).to(device)
    if normalize and not cip:  # divide by the window's share inside the input (once per shape)
        ones = torch.ones((1, 1) + tuple(shape[2:]), device=device)
        share = F.conv2d(ones, wt[:1], stride=s, padding=p)
        return lambda t: F.conv2d(t, wt, stride=s, padding=p, groups=c) / share
    return lambda t: F.conv2d(t, wt, stride=s, padding=p, groups=c)
