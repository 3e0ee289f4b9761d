"""fastconv.arithmetic (issue 21 item 5): parameter counts, multiply-adds/FLOPs and receptive
fields, against the lecture's worked examples, the published receptive fields of AlexNet,
VGG-16 and ResNet-50, a brute-force composition of windows, and torch modules' graphs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv.__main__ import main


def test_lecture_example_parameters_and_output():
    """32x32x3 input, ten 5x5 filters, stride 1, pad 2: 32x32x10 output, 760 parameters."""
    assert fc.conv2d_params((10, 3, 5, 5)) == 760
    assert fc.conv2d_params((10, 3, 5, 5), bias=False) == 750
    cost = fc.conv2d_flops((1, 3, 32, 32), (10, 3, 5, 5), stride=1, padding=2)
    assert cost.output_shape == (1, 10, 32, 32) and cost.params == 750
    assert cost.macs == 32 * 32 * 10 * (5 * 5 * 3)
    assert cost.flops == 2 * cost.macs  # 2 per multiply-add; a bias adds one per output
    assert fc.conv2d_flops((1, 3, 32, 32), (10, 3, 5, 5), padding=2, bias=True).flops == 2 * cost.macs + 10240


def test_flops_agree_with_explain_and_groups():
    x, w = (2, 12, 17, 19), (18, 4, 3, 5)
    cost = fc.conv2d_flops(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3)
    e = fc.explain(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3)
    assert cost.output_shape == e.problem["output_shape"]
    assert cost.flops == e.algorithms[0]["flops"]
    n, k, p, q = cost.output_shape
    assert cost.macs == n * k * p * q * 4 * 3 * 5
    assert fc.conv2d_params((16, 3, 7)) == 16 * 3 * 7 + 16  # conv1d weights too


@pytest.mark.parametrize("stride, size, unused", [(1, 5, 0), (2, 3, 0), (3, 2, 1)])
def test_lecture_seven_by_seven_with_three_by_three(stride, size, unused):
    """7x7 input, 3x3 filter: stride 1 gives 5x5, stride 2 gives 3x3, stride 3 does not fit
    (one column and row are never read)."""
    row = fc.receptive_field([fc.Layer.conv(3, stride)], 7).final
    assert row.size == (size, size) and row.unused == (unused, unused) and row.rf == (3, 3)
    assert row.jump == (stride, stride) and row.start == (1.0, 1.0)


@pytest.mark.parametrize("network, layer, rf, size", [
    ("vgg16", "conv5_3", 196, 14),
    ("vgg16", "pool5", 212, 7),          # Araujo et al. 2019, Table 1
    ("alexnet", "pool5", 195, 6),        # Araujo et al. 2019, Table 1
    ("resnet50_v1", "layer4.2.conv3", 483, 7),   # the original ResNet-50 (stride in the 1x1): Araujo et al.
    ("resnet50", "layer4.2.conv3", 427, 7),      # torchvision's (stride in the 3x3)
    ("resnet50", "maxpool", 11, 56),
    ("lenet5", "c5", 32, 1),              # LeNet-5's C5 sees the whole 32x32 input
])
def test_known_receptive_fields(network, layer, rf, size):
    rows = {r.name: r for r in fc.receptive_field(network)}
    assert rows[layer].rf == (rf, rf) and rows[layer].size == (size, size)


def _brute_force(layers, size):
    """Windows composed as integer intervals, without the formulas: output 0's and output 1's
    input intervals after the stack, and the output size by sliding each window; all None when
    a layer's window does not fit its padded input."""
    intervals = [(0, 0), (1, 1)]  # of final outputs 0 and 1, in the last layer's coordinates
    sizes = [size]
    for layer in layers:
        k, s, d, (lo, hi) = layer.kernel[0], layer.stride[0], layer.dilation[0], layer.padding[0]
        span = d * (k - 1) + 1
        n = 0
        while n * s + span <= sizes[-1] + lo + hi:
            n += 1
        if n == 0:  # (a later layer's padding could make an output of nothing again)
            return None, None, None, None
        sizes.append(n)
    for layer in reversed(layers):
        k, s, d, (lo, _) = layer.kernel[0], layer.stride[0], layer.dilation[0], layer.padding[0]
        span = d * (k - 1) + 1
        intervals = [(a * s - lo, b * s - lo + span - 1) for a, b in intervals]
    (a0, b0), (a1, _) = intervals
    return sizes[-1], b0 - a0 + 1, a1 - a0, (a0 + b0) / 2


@st.composite
def stacks(draw):
    layers = []
    for _ in range(draw(st.integers(1, 5))):
        k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        lo, hi = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        kind = draw(st.sampled_from(["conv", "pool"]))
        if kind == "pool":
            lo = hi = min(lo, k // 2)
            layers.append(fc.Layer.pool(k, s, lo, d))
        else:
            layers.append(fc.Layer.conv(k, s, ((lo, hi), (lo, hi)), d))
    return layers


@settings(max_examples=200, deadline=None)
@given(layers=stacks(), size=st.integers(40, 90))
def test_fields_match_composed_windows(layers, size):
    out, rf, jump, start = _brute_force(layers, size)
    if out is None:  # a layer's window is wider than its padded input: refused, not a size of 0
        with pytest.raises(ValueError, match="does not fit"):
            fc.receptive_field(layers, size)
        return
    if out < 2:
        return  # output 1 does not exist: nothing to compare the jump with
    final = fc.receptive_field(layers, size).final
    assert final.size[0] == out and final.rf[0] == rf and final.jump[0] == jump and final.start[0] == start


def test_bad_layers_are_refused_clearly():
    with pytest.raises(ValueError, match="does not fit"):
        fc.receptive_field([fc.Layer.conv(5)], 3)
    with pytest.raises(ValueError, match="unknown network"):
        fc.receptive_field("resnet5000")
    with pytest.raises(ValueError, match="kind"):
        fc.receptive_field([{"kind": "dense", "kernel": 3}], 8)
    with pytest.raises(TypeError, match="Layer"):
        fc.receptive_field([(3, 1)], 8)
    with pytest.raises(TypeError, match="input_size"):
        fc.receptive_field([fc.Layer.conv(3)])
    with pytest.raises(ValueError, match="positive"):
        fc.Layer.conv(0)
    with pytest.raises(ValueError, match="pooling padding"):
        fc.Layer.pool(3, padding="same")
    # dicts work as layers; 'same' padding resolves per input size
    t = fc.receptive_field([{"kind": "conv", "kernel": 3, "padding": "same", "stride": 2}], 9)
    assert t.final.size == (5, 5)


def test_explain_model_prints_the_table(capsys):
    main(["explain", "--model", "resnet50"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("layer4.2.conv3 "))
    assert "427" in line.split() and "7x7" in line.split()
    main(["explain", "--model", "vgg16", "--input-size", "256"])
    assert "8x8" in next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("pool5 "))


def test_torch_modules_follow_their_graph():
    torch = pytest.importorskip("torch")
    from fastconv.torch import models, receptive_field
    nn = torch.nn
    spec = {r.name: r for r in fc.receptive_field("resnet50")}
    for layers in (None, nn):  # fastconv.torch's layers and torch.nn's
        table = receptive_field(models.resnet50(layers=layers), 224)
        got = {r.name: r for r in table}
        for name, row in spec.items():
            if name != "input":
                assert got[name].rf == row.rf and got[name].size == row.size and got[name].jump == row.jump, name
        # the shortcut's 1x1 conv sees the block's input field, no wider
        assert got["layer2.0.downsample.0"].rf == spec["layer1.2.conv3"].rf
        assert table.final.name == "avgpool" and table.final.size == (1, 1)
    vgg = nn.Sequential(*[m for c_in, c_out in ((3, 8), (8, 8)) for m in (nn.Conv2d(c_in, c_out, 3, padding=1),
                                                                           nn.ReLU())], nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    t = receptive_field(vgg, 32)
    assert [r.rf[0] for r in t.rows] == [1, 3, 5, 6] and t.final.size == (16, 16)
    with pytest.raises(TypeError, match="Module"):
        receptive_field([fc.Layer.conv(3)], 8)
    conv1d = nn.Sequential(nn.Conv1d(2, 4, 5, stride=2), nn.MaxPool1d(3))
    assert receptive_field(conv1d, 100).final.rf == (1, 5 + 2 * 2)
    np.testing.assert_equal(receptive_field(conv1d, 100).final.size, (1, 16))
