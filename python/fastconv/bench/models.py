# models.py: `python -m fastconv bench --model`: whole networks, fastconv (a torch.nn model
# converted with fastconv.torch.convert) against the same torch.nn model in eager mode, in one
# process, interleaved by timing.compare. Imports torch only when called.
"""End-to-end model benchmarks.

Cases per model (``--batch`` replaces the batch sizes):

- lenet5:   forward at batch 1 and 64 (32x32 single-channel images)
- resnet18: forward at batch 1; one training step at batch 8 (224x224)
- resnet50: forward at batch 1 (224x224)

forward: ``model.eval()`` under ``torch.no_grad()`` (fastconv's layers run their prepared
plans; convert() folds each BatchNorm2d into the convolution before it, unless
``--keep-batchnorm``). train: ``model.train()``; zero_grad, cross-entropy of the logits, backward, SGD step
(fastconv's layers run the custom ops' forward and backward). Both models start from the same
weights. Ratio = torch_ms / fastconv_ms (> 1: fastconv is faster).
"""
from __future__ import annotations

import math

from . import timing

MODELS = ("lenet5", "resnet18", "resnet50")
CASES = {"lenet5": (("forward", 1), ("forward", 64)),
         "resnet18": (("forward", 1), ("train", 8)),
         "resnet50": (("forward", 1),)}
IMAGE_SIZE = {"lenet5": 32, "resnet18": 224, "resnet50": 224}
CHANNELS = {"lenet5": 1, "resnet18": 3, "resnet50": 3}


def cases(names, batches=None):
    """[(model, mode, batch)] to measure."""
    out = []
    for name in names:
        for mode, batch in CASES[name]:
            for b in (batches or [batch]):
                if (name, mode, b) not in out:
                    out.append((name, mode, b))
    return out


def build(name, algorithm="auto", fold_batchnorm=True):
    """(torch.nn model, fastconv-converted copy with the same weights)."""
    import copy

    import torch
    from torch import nn

    import fastconv.torch as ft
    from fastconv.torch import models

    torch.manual_seed(0)
    theirs = getattr(models, name)(layers=nn)
    ours = ft.convert(copy.deepcopy(theirs), algorithm=algorithm, fold_batchnorm=fold_batchnorm)
    return theirs, ours


def _forward(model, x):
    import torch
    model.eval()

    def run():
        with torch.no_grad():
            model(x)
    return run


def _train_step(model, x, y):
    import torch
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def run():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return run


def measure_model(name, mode, batch, opts, image_size=None, algorithm="auto", fold_batchnorm=True):
    """One case, torch and fastconv interleaved; a JSON-able record."""
    import torch

    size = image_size or IMAGE_SIZE[name]
    theirs, ours = build(name, algorithm, fold_batchnorm)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, CHANNELS[name], size, size, generator=g)
    if mode == "forward":
        fns = {"torch": _forward(theirs, x), "fastconv": _forward(ours, x)}
    else:
        y = torch.randint(0, 10, (batch,), generator=g)
        fns = {"torch": _train_step(theirs, x, y), "fastconv": _train_step(ours, x, y)}
    c = timing.compare(fns, **opts)
    return {"model": name, "mode": mode, "batch": batch, "image_size": size, "algorithm": algorithm,
            "fold_batchnorm": fold_batchnorm,
            "rounds": c.rounds, "samples": c.samples,
            "torch_ms": c.ms("torch"), "fastconv_ms": c.ms("fastconv"), "ratio": c.ratio("torch", "fastconv"),
            "spread": {k: c.spread(k) for k in fns}}


def table(records):
    """The console/markdown table of model records."""
    header = ["model", "step", "batch", "image", "torch ms", "fastconv ms", "ratio (torch/fastconv)", "rounds"]
    rows = [[r["model"], r["mode"], str(r["batch"]), f"{r['image_size']}x{r['image_size']}",
             f"{r['torch_ms']:.2f}", f"{r['fastconv_ms']:.2f}",
             "n/a" if r["ratio"] is None or not math.isfinite(r["ratio"]) else f"{r['ratio']:.2f}x",
             str(r["rounds"])] for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
