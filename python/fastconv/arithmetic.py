"""The arithmetic of convolutional networks that users otherwise do by hand: parameter counts,
multiply-adds and FLOPs of a convolution, and the receptive field of a stack of layers.

    fc.conv2d_params((10, 3, 5, 5))                      # 760: ten 5x5x3 filters and their biases
    fc.conv2d_flops((1, 3, 32, 32), (10, 3, 5, 5), padding=2)
    fc.receptive_field([fc.Layer.conv(3, padding=1), fc.Layer.pool(2)], 224)
    fc.receptive_field("vgg16")                          # a network of NETWORKS, at its input size

Receptive-field arithmetic (Dumoulin & Visin 2016, "A guide to convolution arithmetic"; Araujo
et al. 2019, "Computing receptive fields of convolutional neural networks"), per axis, for a
window of k taps d apart (span K = d (k - 1) + 1), stride s and padding (lo, hi):

    out   = floor((in + lo + hi - K) / s) + 1            (ceil for pooling with ceil_mode)
    jump  = jump_in * s                                  distance between neighbouring outputs, in input pixels
    rf    = rf_in + (K - 1) * jump_in                    input pixels one output sees
    start = start_in + ((K - 1) / 2 - lo) * jump_in      centre of output 0's field (pixel 0 at 0.0)

starting from out = the input size, jump = rf = 1, start = 0. ``unused`` counts the input pixels
at the end that no window reads ((in + lo + hi - K) mod s; the lecture's "does not fit").
Where paths merge (a residual sum) the field is the largest of the inputs' (fastconv.torch's
``receptive_field`` of an nn.Module follows its graph). Pure Python: no arrays, no kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._args import as_int, as_tuple, conv_params, normalize_padding, output_size, positive

__all__ = ["conv2d_params", "conv2d_flops", "ConvCost", "Layer", "FieldRow", "ReceptiveField", "receptive_field",
           "NETWORKS"]


# ---- one convolution ---------------------------------------------------------------------------

def conv2d_params(weight_shape, bias=True):
    """Learned parameters of a conv2d with ``weight_shape`` (K, C/groups, R, S): K*C/groups*R*S
    weights, plus K biases when ``bias``."""
    shape = tuple(as_int(v, "weight_shape") for v in weight_shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"weight_shape must be (K, C/groups, R, S) or, for conv1d, (K, C/groups, S); got {shape}")
    positive(shape, "weight_shape")
    count = 1
    for v in shape:
        count *= v
    return count + (shape[0] if bias else 0)


@dataclass(frozen=True)
class ConvCost:
    """What one conv2d costs: ``macs`` multiply-adds (N*K*P*Q * C/groups*R*S) and ``flops``
    = 2 * macs, plus one add per output for a bias: the count every convolution benchmark (and
    fastconv's GFLOP/s) uses."""
    output_shape: tuple
    params: int
    macs: int
    flops: int


def conv2d_flops(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, bias=False):
    """Output shape, parameters, multiply-adds and FLOPs (2 per multiply-add, + 1 per output for
    a bias) of ``conv2d(x, w, ...)`` for ``input_shape`` (N, C, H, W) and ``weight_shape``
    (K, C/groups, R, S); arguments as conv2d's."""
    params, _ = conv_params(tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups,
                            "conv2d_flops")
    outputs = params.N * params.K * params.P * params.Q
    macs = outputs * (params.C // params.groups) * params.R * params.S
    return ConvCost(output_shape=(params.N, params.K, params.P, params.Q),
                    params=conv2d_params(weight_shape, bias), macs=macs, flops=2 * macs + (outputs if bias else 0))


# ---- layers and their receptive fields ------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """A sliding-window layer: ``kind`` 'conv' or 'pool', per-axis kernel, stride, padding
    ((top, bottom), (left, right)) or a padding string ('same', 'valid', 'full'), dilation;
    ``ceil_mode`` for pooling. Build one with Layer.conv(...) or Layer.pool(...)."""
    kind: str
    kernel: tuple
    stride: tuple = (1, 1)
    padding: object = ((0, 0), (0, 0))
    dilation: tuple = (1, 1)
    ceil_mode: bool = False
    name: str = ""

    @classmethod
    def conv(cls, kernel, stride=1, padding=0, dilation=1, name=""):
        return cls._make("conv", kernel, stride, padding, dilation, False, name)

    @classmethod
    def pool(cls, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, name=""):
        """A pooling window; ``stride`` defaults to the kernel (torch's rule); padding is symmetric."""
        return cls._make("pool", kernel, kernel if stride is None else stride, padding, dilation, ceil_mode, name)

    @classmethod
    def _make(cls, kind, kernel, stride, padding, dilation, ceil_mode, name):
        k = positive(as_tuple(kernel, 2, "kernel"), "kernel")
        s = positive(as_tuple(stride, 2, "stride"), "stride")
        d = positive(as_tuple(dilation, 2, "dilation"), "dilation")
        if isinstance(padding, str):
            if kind == "pool":
                raise ValueError(f"pooling padding must be an int or a pair, got {padding!r}")
            normalize_padding(padding, (1, 1), k, s, d)  # checks the mode; resolved per input size
        else:
            padding = normalize_padding(padding, (1, 1), k, s, d)  # ints, pairs, per-side pairs
        return cls(kind, k, s, padding, d, bool(ceil_mode), str(name))

    def describe(self):
        k, s = self.kernel, self.stride
        text = f"{self.kind} {k[0]}x{k[1]}" + (f" s{s[0]}" if s[0] == s[1] else f" s{s[0]},{s[1]}")
        if isinstance(self.padding, str):
            text += f" {self.padding}"
        elif any(v for pair in self.padding for v in pair):
            (t, b), (left, r) = self.padding
            text += f" p{t}" if t == b == left == r else f" p{t},{b},{left},{r}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}" if self.dilation[0] == self.dilation[1] else f" d{self.dilation}"
        return text + (" ceil" if self.ceil_mode else "")


@dataclass(frozen=True)
class FieldRow:
    """One layer's output, per axis (height, width): size, receptive field, jump (effective
    stride), start (centre of output 0's field, in input pixels) and unused input pixels."""
    name: str
    layer: str
    size: tuple
    rf: tuple
    jump: tuple
    start: tuple
    unused: tuple


_INPUT = "input"


def _pads(layer, size):
    if isinstance(layer.padding, str):
        return normalize_padding(layer.padding, size, layer.kernel, layer.stride, layer.dilation)
    return layer.padding


def step(row, layer, name):
    """The FieldRow after ``layer`` given the row of its input (the formulas of the module's
    docstring); ValueError when the window does not fit the padded input."""
    pads = _pads(layer, row.size)
    size, rf, jump, start, unused = [], [], [], [], []
    for a in range(2):
        k, s, d, (lo, hi) = layer.kernel[a], layer.stride[a], layer.dilation[a], pads[a]
        span = d * (k - 1) + 1
        out = output_size(row.size[a], lo, hi, k, s, d, layer.ceil_mode)
        if out < 1 or span > row.size[a] + lo + hi:
            raise ValueError(f"{name}: a {layer.describe()} window (span {span}) does not fit the padded input "
                             f"size {row.size[a]} + {lo} + {hi}")
        size.append(out)
        rf.append(row.rf[a] + (span - 1) * row.jump[a])
        jump.append(row.jump[a] * s)
        start.append(row.start[a] + ((span - 1) / 2 - lo) * row.jump[a])
        unused.append(0 if layer.ceil_mode else (row.size[a] + lo + hi - span) % s)
    return FieldRow(name, layer.describe(), tuple(size), tuple(rf), tuple(jump), tuple(start), tuple(unused))


def input_row(input_size):
    """The field of the input itself: every pixel sees itself."""
    h, w = positive(as_tuple(input_size, 2, "input_size"), "input_size")
    return FieldRow(_INPUT, "", (h, w), (1, 1), (1, 1), (0.0, 0.0), (0, 0))


def merge(rows, name):
    """Where paths join (a sum or concatenation of feature maps): the sizes and jumps must agree;
    the field is the widest input's."""
    sizes = {r.size for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"{name}: feature maps of different sizes {sorted(sizes)} are joined")
    widest = max(rows, key=lambda r: (r.rf[0] * r.rf[1], r.rf))
    return FieldRow(name, "merge", widest.size, widest.rf, widest.jump, widest.start, widest.unused)


class ReceptiveField:
    """The table ``receptive_field`` returns: ``rows`` (FieldRow, the input first), ``final``
    (the last row); str() prints it."""

    def __init__(self, rows):
        self.rows = list(rows)

    @property
    def final(self):
        return self.rows[-1]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __str__(self):
        def pair(v, fmt="{}"):
            return fmt.format(v[0]) if v[0] == v[1] else f"{fmt.format(v[0])},{fmt.format(v[1])}"

        head = ("layer", "window", "output", "receptive field", "jump", "start", "unused")
        body = [(r.name, r.layer, f"{r.size[0]}x{r.size[1]}", pair(r.rf), pair(r.jump), pair(r.start, "{:g}"),
                 pair(r.unused)) for r in self.rows]
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
        return "\n".join(lines)

    __repr__ = __str__


def _as_layer(spec, i):
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind not in ("conv", "pool"):
            raise ValueError(f"layer {i}: kind must be 'conv' or 'pool', got {kind!r}")
        return getattr(Layer, kind)(**spec)
    raise TypeError(f"layer {i}: expected a fastconv.Layer or a dict with kind='conv'/'pool', got {spec!r}")


def receptive_field(layers, input_size=None):
    """Each layer's output size, receptive field, jump (effective stride), start offset and
    unused input pixels, for ``layers`` (a list of ``Layer``s or dicts like {'kind': 'conv',
    'kernel': 3, 'padding': 1}, applied in sequence; or the name of one of ``NETWORKS``) on an
    input of ``input_size`` (int or (H, W); a network's own size by default). A torch
    ``nn.Module``: use fastconv.torch.receptive_field, which follows the module's graph."""
    if isinstance(layers, str):
        if layers not in NETWORKS:
            raise ValueError(f"unknown network {layers!r}; known: {', '.join(sorted(NETWORKS))}")
        size, layers = NETWORKS[layers]
        input_size = size if input_size is None else input_size
    elif hasattr(layers, "named_modules"):
        raise TypeError("for a torch.nn.Module use fastconv.torch.receptive_field(module, input_size)")
    if input_size is None:
        raise TypeError("receptive_field needs input_size for a list of layers")
    rows = [input_row(input_size)]
    for i, spec in enumerate(layers):
        layer = _as_layer(spec, i)
        rows.append(step(rows[-1], layer, layer.name or f"{layer.kind}{i}"))
    return ReceptiveField(rows)


# ---- networks: the path through which their receptive field grows widest ---------------------------

def _vgg16():
    layers, block = [], 1
    for convs in (2, 2, 3, 3, 3):
        layers += [Layer.conv(3, padding=1, name=f"conv{block}_{i + 1}") for i in range(convs)]
        layers.append(Layer.pool(2, name=f"pool{block}"))
        block += 1
    return layers


def _resnet50(stride_on_3x3=True):
    """The bottlenecks' main path (1x1, 3x3, 1x1; the shortcut's 1x1 adds nothing to the
    field). torchvision's ResNet-50 (v1.5) strides in the 3x3 conv; the original (v1, He et
    al. 2015, and Araujo et al.'s table) in the first 1x1, which makes the field wider."""
    layers = [Layer.conv(7, 2, 3, name="conv1"), Layer.pool(3, 2, 1, name="maxpool")]
    for stage, (blocks, stride) in enumerate(((3, 1), (4, 2), (6, 2), (3, 2)), start=1):
        for b in range(blocks):
            s = stride if b == 0 else 1
            pre = f"layer{stage}.{b}"
            layers += [Layer.conv(1, 1 if stride_on_3x3 else s, name=f"{pre}.conv1"),
                       Layer.conv(3, s if stride_on_3x3 else 1, 1, name=f"{pre}.conv2"),
                       Layer.conv(1, name=f"{pre}.conv3")]
    return layers


def _lenet5():
    return [Layer.conv(5, name="c1"), Layer.pool(2, name="s2"), Layer.conv(5, name="c3"), Layer.pool(2, name="s4"),
            Layer.conv(5, name="c5")]


def _alexnet():
    return [Layer.conv(11, 4, 2, name="conv1"), Layer.pool(3, 2, name="pool1"), Layer.conv(5, padding=2, name="conv2"),
            Layer.pool(3, 2, name="pool2"), Layer.conv(3, padding=1, name="conv3"),
            Layer.conv(3, padding=1, name="conv4"), Layer.conv(3, padding=1, name="conv5"),
            Layer.pool(3, 2, name="pool5")]


# name -> (input size, layers)
NETWORKS = {
    "vgg16": (224, _vgg16()),
    "resnet50": (224, _resnet50(stride_on_3x3=True)),
    "resnet50_v1": (224, _resnet50(stride_on_3x3=False)),
    "lenet5": (32, _lenet5()),
    "alexnet": (224, _alexnet()),
}
