# bench_conv.py: pytest-benchmark suite of fastconv.conv2d (every CPU algorithm + auto) vs
# torch.nn.functional.conv2d over the layers of ResNet-50, VGG-16 and MobileNet (float32).
"""Convolution benchmarks over real network layers.

Parametrised over network layer x batch x contender, where the contenders are every
``conv2d_forward`` CPU algorithm in ``fastconv._C.kernels()`` that supports the layer,
``auto``, and the ``torch`` peer (NCHW, skipped when torch is not installed).

    python -m pytest benchmarks/bench_conv.py --benchmark-disable -q       # smoke: run once, check vs torch
    python -m pytest benchmarks/bench_conv.py --benchmark-enable           # measure the subset
    FASTCONV_BENCH_FULL=1 python -m pytest benchmarks/bench_conv.py --benchmark-enable   # every layer, b 1 and 8

Measurement: the first test of a (layer, batch) group times all of the group's
contenders together with ``timing.compare`` (warm-up, then interleaved round-robin,
medians); each test then reports its own samples to pytest-benchmark, with the
median ratio to torch in ``extra_info`` (``torch_ms / ours_ms``: > 1 means fastconv
is faster). Networks: ``FASTCONV_BENCH_NETWORKS`` (comma-separated, default
resnet50,vgg16,mobilenet_dw).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import shapes
import timing
from suite import full_mode, record_samples

fc = pytest.importorskip("fastconv")

DEFAULT_NETWORKS = ("resnet50", "vgg16", "mobilenet_dw")
BATCHES = (1, 8)
SMOKE_BATCH8_MAX_FLOPS = 2e9   # smoke mode runs batch 8 only where it is cheap


def conv_algorithms():
    """conv2d CPU algorithms of the kernel table, in table order."""
    rows = [k["algorithm"] for k in fc._C.kernels() if k["op"] == "conv2d_forward" and k["device"] == "cpu"]
    return list(dict.fromkeys(rows))


def supported(layer, batch, algorithm, dtype="float32"):
    """'' when `algorithm` can run the layer, else the kernel's reason."""
    params, _ = fc.functional.conv_params(layer.input_shape(batch), layer.weight_shape(), layer.stride,
                                          layer.pad, layer.dilation, layer.groups)
    return fc._C.supports(algorithm, params, dtype)


def contenders(layer, batch):
    """Names timed for one layer: supported algorithms, 'auto', and 'torch'."""
    return [a for a in conv_algorithms() if not supported(layer, batch, a)] + ["auto", "torch"]


def selected_cases(config):
    nets = os.environ.get("FASTCONV_BENCH_NETWORKS", "")
    nets = [n.strip() for n in nets.split(",") if n.strip()] or list(DEFAULT_NETWORKS)
    full = full_mode(config)
    cases = []
    for net in nets:
        for layer in (shapes.load(net) if full else shapes.load_quick(net)):
            for batch in BATCHES:
                if not full and batch > 1 and layer.flops(batch) > SMOKE_BATCH8_MAX_FLOPS:
                    continue
                for name in contenders(layer, batch):
                    cases.append(pytest.param(layer, batch, name, id=f"{net}-{layer.name}-b{batch}-{name}"))
    return cases


def pytest_generate_tests(metafunc):
    if {"layer", "batch", "contender"} <= set(metafunc.fixturenames):
        metafunc.parametrize(("layer", "batch", "contender"), selected_cases(metafunc.config))


# ---- problems and callables -----------------------------------------------------------

def make_arrays(layer, batch, seed=0):
    """x (N, C, H, W) and weight (K, C/groups, R, S), float32, unit-variance outputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(layer.input_shape(batch), dtype=np.float32)
    fan_in = (layer.C // layer.groups) * layer.R * layer.S
    w = rng.standard_normal(layer.weight_shape(), dtype=np.float32) / np.float32(np.sqrt(fan_in))
    return x, w


def fastconv_fn(layer, x, w, algorithm):
    kw = layer.conv_kwargs()
    return lambda: fc.conv2d(x, w, None, algorithm=algorithm, **kw)


def torch_fn(layer, x, w):
    """torch.nn.functional.conv2d on the same memory (NCHW); explicit F.pad first if the
    layer's padding is asymmetric (none of the shipped files needs it)."""
    import torch
    import torch.nn.functional as F
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    sym = layer.symmetric_pad
    if sym is not None:
        return lambda: F.conv2d(xt, wt, None, layer.stride, sym, layer.dilation, layer.groups)
    (t, b), (l, r) = layer.pad
    return lambda: F.conv2d(F.pad(xt, (l, r, t, b)), wt, None, layer.stride, 0, layer.dilation, layer.groups)


def group_fns(layer, batch, x, w):
    fns = {}
    for name in contenders(layer, batch):
        if name == "torch":
            try:
                fns[name] = torch_fn(layer, x, w)
            except ImportError:
                pass
        else:
            fns[name] = fastconv_fn(layer, x, w, name)
    return fns


_GROUPS = {}  # (network, layer name, batch) -> (timing.Comparison, auto's algorithm)


def measured(layer, batch, options):
    """The interleaved comparison of every contender of one (layer, batch); cached."""
    key = (layer.network, layer.name, batch)
    if key not in _GROUPS:
        _GROUPS.clear()   # one group at a time: tests of a group are adjacent
        x, w = make_arrays(layer, batch)
        comparison = timing.compare(group_fns(layer, batch, x, w), **options)
        params, _ = fc.functional.conv_params(x.shape, w.shape, layer.stride, layer.pad, layer.dilation, layer.groups)
        _GROUPS[key] = (comparison, fc.algorithms.choose(params, x.dtype))
    return _GROUPS[key]


# ---- the benchmark -----------------------------------------------------------------------

def test_conv2d(benchmark, layer, batch, contender, timing_options):
    if contender == "torch":
        pytest.importorskip("torch")
    benchmark.group = f"{layer.network}:{layer.name} b{batch}"
    flops = layer.flops(batch)
    extra = {"network": layer.network, "layer": layer.name, "shape": layer.describe(), "batch": batch,
             "count": layer.count, "flops": flops, "contender": contender}

    if benchmark.disabled:
        # Smoke: one call, output checked against torch (or just its shape without torch).
        x, w = make_arrays(layer, batch)
        fn = torch_fn(layer, x, w) if contender == "torch" else fastconv_fn(layer, x, w, contender)
        y = np.asarray(benchmark(fn))   # disabled fixture: calls fn once
        assert y.shape == layer.output_shape(batch)
        assert np.isfinite(y).all()
        if contender != "torch":
            try:
                expected = torch_fn(layer, x, w)().numpy()
            except ImportError:
                return
            scale = float(np.abs(expected).max()) or 1.0
            np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-4 * scale)
        return

    comparison, auto_picks = measured(layer, batch, timing_options)
    ms = comparison.ms(contender)
    extra.update(median_ms=ms, gflops=timing.gflops(flops, comparison.medians[contender]),
                 rounds=comparison.rounds)
    if contender == "auto":
        extra["auto_picks"] = auto_picks
    if "torch" in comparison.medians and contender != "torch":
        extra["ratio_vs_torch"] = comparison.ratio("torch", contender)
    if not record_samples(benchmark, comparison.samples[contender], extra):
        x, w = make_arrays(layer, batch)
        fn = torch_fn(layer, x, w) if contender == "torch" else fastconv_fn(layer, x, w, contender)
        benchmark.pedantic(fn, rounds=timing_options["repeats"], warmup_rounds=timing_options["warmup"])
