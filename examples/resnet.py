"""ResNet-18 and ResNet-50 from fastconv layers (no torchvision), checked against the same nets
built from torch.nn layers with the same weights.

fastconv.torch.models defines both with torchvision's structure and parameter names, so
``state_dict`` moves between them (and to/from torchvision's resnet18/resnet50). This runs
each net forward in eval mode on random images, with fastconv's layers and with torch's, and
prints the largest difference of the logits and the time of each.

    python examples/resnet.py                  # both nets, 224x224, batch 1
    python examples/resnet.py --quick          # 64x64 images: a few seconds
"""
import argparse
import time

import torch
from torch import nn

from fastconv.torch.models import resnet18, resnet50


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def check(name, build, size, batch):
    torch.manual_seed(0)
    ours = build().eval()
    theirs = build(layers=nn).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        t0 = time.perf_counter()
        y = ours(x)               # first call: also prepares each layer's plan
        first = time.perf_counter() - t0
        want = theirs(x)
        ours_s, theirs_s = best_of(lambda: ours(x)), best_of(lambda: theirs(x))
    err = float((y - want).abs().max() / want.abs().max())
    print(f"{name}: logits {tuple(y.shape)}, max |fastconv - torch| / max |torch| = {err:.2e}; "
          f"fastconv {1e3 * ours_s:.1f} ms (first call {1e3 * first:.1f} ms), "
          f"torch {1e3 * theirs_s:.1f} ms (best of 3)")
    assert err < 1e-4, f"{name}: fastconv and torch disagree ({err:.2e})"
    return err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64x64 images")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    size = 64 if args.quick else 224
    return {name: check(name, build, size, args.batch) for name, build in (("resnet18", resnet18),
                                                                              ("resnet50", resnet50))}


if __name__ == "__main__":
    main()
