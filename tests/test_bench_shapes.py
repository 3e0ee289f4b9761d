# test_bench_shapes.py: tests of the benchdnn descriptor parser of the benchmark suite
# (benchmarks/shapes.py): known layers, every line of every file, output sizes.
import pathlib
import sys

import pytest

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import shapes  # noqa: E402

SHAPE_FILES = sorted((BENCH_DIR / "shapes").glob("*.txt"))


def by_name(net, name):
    (layer,) = [l for l in shapes.load(net) if l.name == name]
    return layer


def test_shape_files_present():
    assert {p.name for p in SHAPE_FILES} >= set(shapes.NETWORK_FILES.values())


def test_resnet_conv1():
    l = by_name("resnet50", "conv1")
    assert (l.C, l.K, l.R, l.S, l.H, l.W) == (3, 64, 7, 7, 224, 224)
    assert l.stride == (2, 2) and l.pad == ((3, 3), (3, 3)) and l.dilation == (1, 1)
    assert (l.P, l.Q) == (112, 112) and l.groups == 1 and l.count == 1
    assert l.flops(1) == 2 * 64 * 112 * 112 * 3 * 7 * 7
    assert l.flops(8) == 8 * l.flops(1)


def test_defaults_and_count():
    # mb50ic64ih56oc64oh56kh3ph1n"resnet_50:res2a_branch2b*3": iw, kw, sw, pw default to h's.
    l = by_name("resnet50", "res2a_branch2b")
    assert l.count == 3 and l.network == "resnet50"
    assert (l.W, l.S, l.stride, l.pad, l.Q) == (56, 3, (1, 1), ((1, 1), (1, 1)), 56)


def test_ssd_dilated_fc6():
    # mb32_ic512oc1024_ih19kh3oh19ph6dh5: benchdnn dh5 = dilation 6, both axes (square line).
    l = by_name("vgg16_ssd300", "fc6")
    assert l.dilation == (6, 6) and l.pad == ((6, 6), (6, 6))
    assert (l.C, l.K, l.H, l.P, l.Q) == (512, 1024, 19, 19, 19)


def test_mobilenet_depthwise():
    layers = shapes.load("mobilenet_dw")
    assert len(layers) == 9
    for l in layers:
        assert l.groups == l.C == l.K and l.weight_shape()[1] == 1
    l = by_name("mobilenet_dw", "conv2_2/dw")
    assert l.stride == (2, 2) and (l.H, l.P) == (112, 56)


def test_vgg16_counts():
    vgg16 = shapes.load("vgg16")
    vgg19 = shapes.load("vgg19")
    assert [l.name for l in vgg16] == [l.name for l in vgg19]
    assert sum(l.count for l in vgg16) == 13 and sum(l.count for l in vgg19) == 16


def test_end_pad_from_output_size():
    # Output 4 from 6 with a 3x3 s2 kernel and ph1 needs the bottom/right pad 2, not 1.
    l = shapes.parse_line('ic8ih6oc8oh4kh3sh2ph1n"x:asym"')
    assert l.pad == ((1, 2), (1, 2)) and (l.P, l.Q) == (4, 4) and l.symmetric_pad is None
    # Stride 2 with an unused last row: the end pad stays at the top pad.
    l = shapes.parse_line("ic8ih56iw56oc8oh28ow28kh1kw1sh2sw2ph0pw0")
    assert l.pad == ((0, 0), (0, 0)) and (l.P, l.Q) == (28, 28)


def test_rectangular_and_explicit_width():
    l = shapes.parse_line('g2mb1ic4ih10iw12oc6oh10ow6kh3kw1sh1sw2ph1pw0dh0dw0n"x:rect"')
    assert (l.groups, l.H, l.W, l.R, l.S, l.stride, l.dilation) == (2, 10, 12, 3, 1, (1, 2), (1, 1))
    assert (l.P, l.Q) == (10, 6)


@pytest.mark.parametrize("bad", ["ic3oc4kh3", "ic3ih8oc4kh3zz1", 'ic3ih8oc4kh3ic5n"x"', "ic3ih8oc4kh3oh3"])
def test_bad_lines(bad):
    # no ih; unknown token; ic twice; oh3 would need a negative bottom pad
    with pytest.raises(ValueError):
        shapes.parse_line(bad)


@pytest.mark.parametrize("path", SHAPE_FILES, ids=lambda p: p.name)
def test_every_line_parses_with_benchdnn_output_size(path):
    import re

    fc = pytest.importorskip("fastconv")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    layers = shapes.parse_file(path)
    assert len(layers) == len(lines) > 0
    for line, l in zip(lines, layers):
        assert l.count >= 1 and l.name
        body = re.sub(r'n"[^"]*"', "", line).replace("_", "")
        oh = re.search(r"oh(\d+)", body)
        ow = re.search(r"ow(\d+)", body)
        out = fc.conv2d_output_shape(l.input_shape(1), l.weight_shape(), groups=l.groups, **{
            k: v for k, v in l.conv_kwargs().items() if k != "groups"})
        assert out == (1, l.K, l.P, l.Q), line
        if oh:
            assert out[2] == int(oh.group(1)), line
        if ow or oh:
            assert out[3] == int((ow or oh).group(1)), line
