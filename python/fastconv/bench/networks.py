# networks.py: the convolution layers of ResNet-50, VGG-16, MobileNet (depthwise) and LeNet-5
# (read from networks.txt next to this file), single layers given on the command line, and the
# quick subset the default benchmark runs. The one source of shapes for the CLI and benchmarks/.
"""Layer shapes of real networks.

``load("resnet50")`` returns one :class:`Layer` per distinct convolution, with ``count``, how
often it occurs (network totals weight each layer by it). ``parse_layer("1,64,56,56,64,3,3,1,1")``
makes a layer from ``N,C,H,W,K,R,S,stride,pad[,groups[,dilation]]``.
"""
from __future__ import annotations

import dataclasses
import pathlib

from fastconv._args import output_size

DATA = pathlib.Path(__file__).resolve().parent / "networks.txt"

# Representative subset of each network (stem, 1x1, 1x1 s2, 3x3 at several sizes, depthwise
# s1/s2): the quick default of `python -m fastconv bench` and the pytest-benchmark smoke set.
QUICK = {
    "resnet50": ("conv1", "res2a_branch2b", "res3a_branch1", "res4a_branch2c", "res5a_branch2b"),
    "vgg16": ("conv1_1", "conv4_2", "conv5_1"),
    "mobilenet": ("conv2_2/dw", "conv4_1/dw", "conv6/dw"),
    "lenet5": ("conv1", "conv2", "conv3"),
}


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution: x is (N, C, H, W), weight (K, C/groups, R, S), y (N, K, P, Q)."""
    name: str
    count: int
    groups: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple        # (sh, sw)
    pad: tuple           # ((top, bottom), (left, right))
    dilation: tuple = (1, 1)
    network: str = ""
    batch: int = 0       # a layer given on the command line carries its own N; 0: none

    @property
    def P(self):
        (t, b), d, s = self.pad[0], self.dilation[0], self.stride[0]
        return output_size(self.H, t, b, self.R, s, d)

    @property
    def Q(self):
        (l, r), d, s = self.pad[1], self.dilation[1], self.stride[1]
        return output_size(self.W, l, r, self.S, s, d)

    def flops(self, batch):
        """2 x multiply-adds of one call at this batch (not multiplied by count)."""
        return 2 * batch * self.K * self.P * self.Q * (self.C // self.groups) * self.R * self.S

    def input_shape(self, batch):
        return (batch, self.C, self.H, self.W)

    def weight_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    def output_shape(self, batch):
        return (batch, self.K, self.P, self.Q)

    @property
    def symmetric_pad(self):
        """(ph, pw) when top == bottom and left == right (what torch's conv2d takes), else None."""
        (t, b), (l, r) = self.pad
        return (t, l) if (t == b and l == r) else None

    def conv_kwargs(self):
        """Keyword arguments of fastconv.conv2d (after x and weight) for this layer."""
        return dict(stride=self.stride, padding=self.pad, dilation=self.dilation, groups=self.groups)

    def describe(self):
        """Short human-readable shape, e.g. '64->256 1x1 s2 56x56->28x28'."""
        s = f"{self.C}->{self.K} {self.R}x{self.S}"
        if self.stride != (1, 1):
            s += f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride}"
        if self.dilation != (1, 1):
            s += f" d{self.dilation[0]}" if self.dilation[0] == self.dilation[1] else f" d{self.dilation}"
        if self.groups != 1:
            s += " dw" if self.groups == self.C == self.K else f" g{self.groups}"
        return s + f" {self.H}x{self.W}->{self.P}x{self.Q}"

    def to_dict(self):
        d = dataclasses.asdict(self)
        d.update(P=self.P, Q=self.Q, shape=self.describe())
        return d


def _make(network, name, count, C, H, W, K, R, S, stride, pad, groups=1, dilation=1, batch=0):
    return Layer(name=name, count=count, groups=groups, C=C, H=H, W=W, K=K, R=R, S=S,
                 stride=(stride, stride), pad=((pad, pad), (pad, pad)), dilation=(dilation, dilation),
                 network=network, batch=batch)


def _read(path=DATA):
    nets = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        if not 11 <= len(line) <= 13:
            raise ValueError(f"{path.name}:{n}: expected 11 to 13 columns, got {len(line)}: {raw!r}")
        try:
            values = [int(v) for v in line[2:]]
        except ValueError:
            raise ValueError(f"{path.name}:{n}: columns after the name must be integers: {raw!r}") from None
        nets.setdefault(line[0], []).append(_make(line[0], line[1], *values))
    return nets


_NETWORKS = None


def networks():
    """Names load() accepts, in file order."""
    global _NETWORKS
    if _NETWORKS is None:
        _NETWORKS = _read()
    return tuple(_NETWORKS)


def load(name):
    """The distinct layers of a network, with occurrence counts."""
    networks()
    if name not in _NETWORKS:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(_NETWORKS)}")
    return list(_NETWORKS[name])


def load_quick(name):
    """The QUICK subset of a network, in file order."""
    keep = QUICK.get(name, ())
    return [layer for layer in load(name) if layer.name in keep] or load(name)


def parse_layer(text):
    """'N,C,H,W,K,R,S,stride,pad[,groups[,dilation]]' -> Layer (network 'custom', batch N)."""
    try:
        v = [int(t) for t in text.split(",")]
    except ValueError:
        v = []
    if len(v) not in (9, 10, 11):
        raise ValueError(f"a layer is N,C,H,W,K,R,S,stride,pad[,groups[,dilation]] (integers), got {text!r}")
    n, c, h, w, k, r, s, stride, pad = v[:9]
    groups = v[9] if len(v) > 9 else 1
    dilation = v[10] if len(v) > 10 else 1
    if min(n, c, h, w, k, r, s, stride, groups, dilation) < 1 or pad < 0:
        raise ValueError(f"layer {text!r}: sizes, stride, groups and dilation must be positive, pad >= 0")
    if c % groups or k % groups:
        raise ValueError(f"layer {text!r}: C={c} and K={k} must be divisible by groups={groups}")
    if dilation * (r - 1) + 1 > h + 2 * pad or dilation * (s - 1) + 1 > w + 2 * pad:
        raise ValueError(f"layer {text!r}: the kernel is larger than the padded input")
    return _make("custom", text, 1, c, h, w, k, r, s, stride, pad, groups, dilation, batch=n)
