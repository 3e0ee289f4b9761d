# test_bench_networks.py: the package's network tables (fastconv/bench/networks.txt) agree with
# oneDNN benchdnn's lists in benchmarks/shapes/ (parsed by benchmarks/shapes.py), LeNet-5 is
# right, and single layers from the command line parse.
import dataclasses
import pathlib
import sys

import pytest

from fastconv.bench import networks

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
import shapes  # noqa: E402

FIELDS = ("name", "groups", "C", "H", "W", "K", "R", "S", "stride", "pad", "dilation")
# (package network, benchdnn loader name, counts where the network differs from the benchdnn list)
PAIRS = [("resnet50", "resnet50", {}),
         ("vgg16", "vgg16", {}),                     # vgg_19.txt's shapes with VGG-16's counts
         ("mobilenet", "mobilenet_dw", {"conv5_1/dw": 5})]


@pytest.mark.parametrize("net,benchdnn,counts", PAIRS, ids=[p[0] for p in PAIRS])
def test_network_matches_benchdnn(net, benchdnn, counts):
    ours = networks.load(net)
    theirs = shapes.load(benchdnn)
    assert [l.name for l in ours] == [l.name for l in theirs]
    for a, b in zip(ours, theirs):
        assert {f: getattr(a, f) for f in FIELDS} == {f: getattr(b, f) for f in FIELDS}, a.name
        assert a.count == counts.get(a.name, b.count), a.name
        assert (a.P, a.Q) == (b.P, b.Q) and a.flops(2) == b.flops(2)


def test_network_totals():
    assert sum(l.count for l in networks.load("resnet50")) == 53
    assert len(networks.load("resnet50")) == 20
    assert sum(l.count for l in networks.load("vgg16")) == 13
    assert sum(l.count for l in networks.load("mobilenet")) == 13
    assert len(networks.load("mobilenet")) == 9
    # ResNet-50's convolutions at 224x224: ~3.9 G multiply-adds without the FC layer.
    macs = sum(l.count * l.flops(1) for l in networks.load("resnet50")) / 2
    assert 3.8e9 < macs < 3.9e9


def test_lenet5():
    c1, c2, c3 = networks.load("lenet5")
    assert (c1.C, c1.H, c1.K, c1.R, c1.P) == (1, 32, 6, 5, 28)
    assert (c2.C, c2.H, c2.K, c2.R, c2.P) == (6, 14, 16, 5, 10)
    assert (c3.C, c3.H, c3.K, c3.R, c3.P, c3.Q) == (16, 5, 120, 5, 1, 1)


def test_quick_subsets_exist():
    for net, names in networks.QUICK.items():
        assert [l.name for l in networks.load_quick(net)] == [l.name for l in networks.load(net) if l.name in names]
        assert len(networks.load_quick(net)) == len(names), net


def test_parse_layer():
    l = networks.parse_layer("8,64,56,56,128,3,3,2,1")
    assert (l.batch, l.C, l.H, l.W, l.K, l.R, l.S) == (8, 64, 56, 56, 128, 3, 3)
    assert (l.stride, l.pad) == ((2, 2), ((1, 1), (1, 1)))
    assert (l.P, l.Q, l.groups, l.dilation) == (28, 28, 1, (1, 1))
    l = networks.parse_layer("1,32,14,14,32,3,3,1,2,32,2")
    assert (l.groups, l.dilation, l.P) == (32, (2, 2), 14)
    for bad in ("1,2,3", "a,b,c,d,e,f,g,h,i", "1,3,8,8,4,3,3,0,1", "1,3,4,4,4,9,9,1,0", "1,6,8,8,4,3,3,1,1,4"):
        with pytest.raises(ValueError):
            networks.parse_layer(bad)


def test_every_table_line_is_a_valid_conv():
    import fastconv as fc
    for net in networks.networks():
        for l in networks.load(net):
            out = fc.conv2d_output_shape(l.input_shape(1), l.weight_shape(), groups=l.groups, **{
                k: v for k, v in l.conv_kwargs().items() if k != "groups"})
            assert out == l.output_shape(1), (net, l.name)
            assert dataclasses.replace(l).to_dict()["shape"] == l.describe()
