# bench_conv.py: pytest-benchmark suite of fastconv.conv2d (every CPU algorithm + auto) vs its
# peers (torch F.conv2d, torch prepacked oneDNN, NNPACK) over the layers of ResNet-50, VGG-16
# and MobileNet (float32), with the shapes, contenders and timing of `python -m fastconv bench`.
"""Convolution benchmarks over real network layers.

Parametrised over network layer x batch x contender. Layers come from
``fastconv.bench.networks`` (the package's networks.txt), contenders and their callables from
``fastconv.bench.runner.contenders`` (every ``conv2d_forward`` CPU kernel of
``fastconv._C.kernels()`` that supports the layer, ``auto``, and each available peer), and the
timing from ``fastconv.bench.timing.compare`` -- exactly what the CLI uses.

    python -m pytest benchmarks/bench_conv.py -q                           # smoke: run once, check vs torch
    python -m pytest benchmarks/bench_conv.py --benchmark-enable           # measure the subset
    FASTCONV_BENCH_FULL=1 python -m pytest benchmarks/bench_conv.py --benchmark-enable   # every layer, b 1 and 8

Measurement: the first test of a (layer, batch) group times all of the group's contenders
together with ``timing.compare`` (warm-up, then interleaved round-robin, medians); each test
then reports its own samples to pytest-benchmark, with the median ratio to torch in
``extra_info`` (``torch_ms / ours_ms``: > 1 means faster than torch). Networks:
``FASTCONV_BENCH_NETWORKS`` (comma-separated, default resnet50,vgg16,mobilenet).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from suite import full_mode, record_samples

fc = pytest.importorskip("fastconv")
from fastconv.bench import networks, peers, runner, timing  # noqa: E402

DEFAULT_NETWORKS = ("resnet50", "vgg16", "mobilenet")
BATCHES = (1, 8)
SMOKE_BATCH8_MAX_FLOPS = 2e9   # the quick subset runs batch 8 only where it is cheap
# Smoke mode (benchmarks disabled, as in CI's `python -m pytest`): the quick subset at batch 1.


def peer_names():
    return [p for p in peers.CPU_DEFAULT if not peers.why_unavailable(p, "cpu")]


def contender_names(layer, batch):
    """Names timed for one layer: supported algorithms, 'auto', and the available peers."""
    params = runner.params_of(layer, batch)
    algos = [a for a in runner.conv_algorithms() if not fc._C.supports(a, params, "float32")] + ["auto"]
    names = algos + [p for p in peer_names() if p == "torch"
                     or (p != "nnpack" or (layer.groups == 1 and layer.dilation == (1, 1)))]
    return names


def selected_cases(config):
    nets = os.environ.get("FASTCONV_BENCH_NETWORKS", "")
    nets = [n.strip() for n in nets.split(",") if n.strip()] or list(DEFAULT_NETWORKS)
    full = full_mode(config)
    smoke = config.getoption("benchmark_disable", default=False) and not full
    cases = []
    for net in nets:
        layers = networks.load(net) if full else networks.load_quick(net)
        for layer in layers:
            for batch in ((1,) if smoke else BATCHES):
                if not full and batch > 1 and layer.flops(batch) > SMOKE_BATCH8_MAX_FLOPS:
                    continue
                for name in contender_names(layer, batch):
                    cases.append(pytest.param(layer, batch, name, id=f"{net}-{layer.name}-b{batch}-{name}"))
    return cases


def pytest_generate_tests(metafunc):
    if {"layer", "batch", "contender"} <= set(metafunc.fixturenames):
        metafunc.parametrize(("layer", "batch", "contender"), selected_cases(metafunc.config))


_GROUPS = {}  # (network, layer name, batch) -> (timing.Comparison, auto's algorithm)


def measured(layer, batch, options):
    """The interleaved comparison of every contender of one (layer, batch); cached."""
    key = (layer.network, layer.name, batch)
    if key not in _GROUPS:
        _GROUPS.clear()   # one group at a time: tests of a group are adjacent
        fns, _, _, _ = runner.contenders(layer, batch, runner.conv_algorithms() + ["auto"], peer_names())
        comparison = timing.compare(fns, **options)
        params = runner.params_of(layer, batch)
        _GROUPS[key] = (comparison, fc.algorithms.choose(params, np.dtype(np.float32)))
    return _GROUPS[key]


def test_conv2d(benchmark, layer, batch, contender, timing_options):
    benchmark.group = f"{layer.network}:{layer.name} b{batch}"
    flops = layer.flops(batch)
    extra = {"network": layer.network, "layer": layer.name, "shape": layer.describe(), "batch": batch,
             "count": layer.count, "flops": flops, "contender": contender}

    if benchmark.disabled:
        # Smoke: one call, output checked against torch's F.conv2d.
        names = [contender] + (["torch"] if contender != "torch" and "torch" in peer_names() else [])
        fns, skipped, _, _ = runner.contenders(layer, batch, [n for n in names if n not in peers.PEERS],
                                               [n for n in names if n in peers.PEERS])
        if contender not in fns:
            pytest.skip(skipped.get(contender, "not available"))
        y = peers.to_numpy(benchmark(fns[contender]))   # disabled fixture: calls it once
        assert y.shape == layer.output_shape(batch)
        assert np.isfinite(y).all()
        if "torch" in fns and contender != "torch":
            expected = peers.to_numpy(fns["torch"]())
            reduction = (layer.C // layer.groups) * layer.R * layer.S
            assert runner.close(y, expected, reduction), \
                f"{contender}: max error {np.abs(y - expected).max():.3g}, max |y| {np.abs(expected).max():.3g}"
        return

    comparison, auto_picks = measured(layer, batch, timing_options)
    if contender not in comparison.medians:
        pytest.skip(f"{contender} was not timed")
    extra.update(median_ms=comparison.ms(contender), gflops=timing.gflops(flops, comparison.medians[contender]),
                 rounds=comparison.rounds)
    if contender == "auto":
        extra["auto_picks"] = auto_picks
    if "torch" in comparison.medians and contender != "torch":
        extra["ratio_vs_torch"] = comparison.ratio("torch", contender)
    if not record_samples(benchmark, comparison.samples[contender], extra):
        fns, _, _, _ = runner.contenders(layer, batch, [contender] if contender not in peers.PEERS else [],
                                         [contender] if contender in peers.PEERS else [])
        benchmark.pedantic(fns[contender], rounds=timing_options["repeats"], warmup_rounds=timing_options["warmup"])
