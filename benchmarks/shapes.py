# shapes.py: parser for oneDNN benchdnn convolution descriptors (benchmarks/shapes/*.txt)
# into one `Layer` per line. The benchmarks take their shapes from fastconv.bench.networks
# (the package's networks.txt); tests/test_bench_networks.py checks those against these files.
"""Convolution layers of real networks, from benchdnn's descriptor files.

A descriptor line such as ``mb50ic64ih56oc64oh56kh3ph1n"resnet_50:res2a_branch2b*3"``
becomes ``Layer(name='res2a_branch2b', count=3, groups=1, C=64, H=56, W=56, K=64, R=3,
S=3, stride=(1, 1), pad=((1, 1), (1, 1)), dilation=(1, 1))``. Syntax and defaults are
those of benchdnn (see ``benchmarks/shapes/README.md``):

- ``g`` groups (1), ``mb`` benchdnn's batch (ignored: the suite picks the batch),
  ``ic``/``oc`` channels, ``ih``/``iw`` input size (``iw`` = ``ih``), ``oh``/``ow``
  output size (computed when absent), ``kh``/``kw`` kernel (``kw`` = ``kh``),
  ``sh``/``sw`` stride (1; ``sw`` = ``sh``), ``ph``/``pw`` top/left padding (0;
  ``pw`` = ``ph``), ``dh``/``dw`` dilation MINUS one (0), ``n"name*count"``. A line
  with no width token at all is square: ``ow`` = ``oh`` and ``dw`` = ``dh`` too.
- ``_`` separates tokens and is ignored.
- The bottom/right padding is not in the descriptor: benchdnn's output size fixes it.
  We take the top/left pad when it reproduces ``oh``/``ow`` (symmetric, the usual case),
  else the smallest non-negative pad that does, so the fastconv call produces exactly
  benchdnn's output size.

Networks (``load(name)``):

- ``resnet50``      resnet_50.txt (224x224), 20 distinct shapes, 53 convolutions.
- ``vgg16``         vgg_19.txt's distinct shapes, which are exactly VGG-16's (224x224);
                    the repeat counts are changed to VGG-16's (conv3_2 x2, conv4_2 x2,
                    conv5_1 x3: 13 convolutions instead of VGG-19's 16).
- ``vgg19``         vgg_19.txt as it is.
- ``vgg16_ssd300``  vgg_16_ssd300.txt: the VGG-16 trunk at 300x300 plus SSD's extra and
                    head layers (including the dilated fc6, benchdnn ``dh5`` = dilation 6).
- ``mobilenet_dw``  mobilenet_dw.txt: MobileNet's depthwise 3x3 layers (groups = channels).
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

from fastconv.bench import networks

SHAPES_DIR = pathlib.Path(__file__).resolve().parent / "shapes"

NETWORK_FILES = {
    "resnet50": "resnet_50.txt",
    "vgg16": "vgg_19.txt",
    "vgg19": "vgg_19.txt",
    "vgg16_ssd300": "vgg_16_ssd300.txt",
    "mobilenet_dw": "mobilenet_dw.txt",
}

# VGG-19 repeats conv3_2, conv4_2 and conv5_1 (3, 3, 4 times); VGG-16 has the same
# distinct shapes with these counts.
_VGG16_COUNTS = {"conv3_2": 2, "conv4_2": 2, "conv5_1": 3}

_TOKEN = re.compile(r"(mb|ic|oc|ih|iw|oh|ow|kh|kw|sh|sw|ph|pw|dh|dw|g)(\d+)")
_NAME = re.compile(r'n"([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Layer(networks.Layer):
    """A benchdnn layer: the package's Layer plus the descriptor it came from."""
    line: str = ""       # the descriptor as written
    mb: int = 2          # benchdnn's own batch (unused by the suite)


def _out_size(size, k, stride, lo, hi, dil):
    return (size + lo + hi - dil * (k - 1) - 1) // stride + 1


def _end_pad(size, k, stride, lo, dil, out, what, line):
    """Bottom/right pad giving exactly `out`: lo itself if it does, else the smallest >= 0."""
    if out is None or _out_size(size, k, stride, lo, lo, dil) == out:
        return lo
    need = (out - 1) * stride + dil * (k - 1) + 1 - size - lo   # smallest hi with that output
    for hi in range(max(need, 0), need + stride):
        if hi >= 0 and _out_size(size, k, stride, lo, hi, dil) == out:
            return hi
    raise ValueError(f"{what}={out} cannot be reached with a non-negative end pad: {line!r}")


def parse_line(line, network=""):
    """Parse one benchdnn descriptor line into a Layer; raise ValueError on bad syntax."""
    text = line.strip()
    m = _NAME.search(text)
    full_name = m.group(1) if m else ""
    body = (text[:m.start()] + text[m.end():]) if m else text
    body = body.replace("_", "").strip()
    fields = {}
    pos = 0
    for tok in _TOKEN.finditer(body):
        if tok.start() != pos:
            raise ValueError(f"unparsable descriptor {line!r} at {body[pos:]!r}")
        key = tok.group(1)
        if key in fields:
            raise ValueError(f"descriptor {line!r} gives {key} twice")
        fields[key] = int(tok.group(2))
        pos = tok.end()
    if pos != len(body):
        raise ValueError(f"unparsable descriptor {line!r} at {body[pos:]!r}")
    for key in ("ic", "oc", "ih", "kh"):
        if key not in fields:
            raise ValueError(f"descriptor {line!r} lacks {key}")

    name, count = full_name, 1
    if "*" in name:
        name, _, cnt = name.rpartition("*")
        count = int(cnt)
    if ":" in name:
        prefix, _, name = name.partition(":")
        network = network or prefix

    # benchdnn: a descriptor with no width token at all is square (every w value copies
    # its h value, dw and ow included); otherwise a missing w value takes the default.
    square = not any(k in fields for k in ("iw", "ow", "kw", "sw", "pw", "dw"))
    g = fields.get("g", 1)
    C, K = fields["ic"], fields["oc"]
    H = fields["ih"]
    W = fields.get("iw", H)
    R = fields["kh"]
    S = fields.get("kw", R)
    sh = fields.get("sh", 1)
    sw = fields.get("sw", sh)
    ph = fields.get("ph", 0)
    pw = fields.get("pw", ph)
    dh = fields.get("dh", 0) + 1
    dw = (dh if square else fields.get("dw", 0) + 1)
    oh = fields.get("oh")
    ow = oh if square else fields.get("ow")
    if C % g or K % g:
        raise ValueError(f"descriptor {line!r}: channels {C}->{K} not divisible by g{g}")
    pb = _end_pad(H, R, sh, ph, dh, oh, "oh", line)
    pr = _end_pad(W, S, sw, pw, dw, ow, "ow", line)
    return Layer(name=name, count=count, groups=g, C=C, H=H, W=W, K=K, R=R, S=S,
                 stride=(sh, sw), pad=((ph, pb), (pw, pr)), dilation=(dh, dw),
                 network=network, line=text, mb=fields.get("mb", 2))


def parse_file(path, network=""):
    """Every non-comment, non-blank line of a benchdnn shapes file, as Layers."""
    layers = []
    for raw in pathlib.Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            layers.append(parse_line(line, network))
    return layers


def load(name):
    """The layers of a network by name (see NETWORK_FILES); counts are the repeats in the net."""
    if name not in NETWORK_FILES:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(NETWORK_FILES)}")
    layers = parse_file(SHAPES_DIR / NETWORK_FILES[name], network=name)
    layers = [dataclasses.replace(l, network=name) for l in layers]
    if name == "vgg16":
        layers = [dataclasses.replace(l, count=_VGG16_COUNTS.get(l.name, l.count)) for l in layers]
    return layers


def networks():
    """Names load() accepts."""
    return tuple(NETWORK_FILES)
