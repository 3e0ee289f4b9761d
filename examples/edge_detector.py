"""The lecture's edge detector (``python -m fastconv demo``) as a PyTorch layer computed by fastconv.

A fastconv.torch.Conv2d with two fixed 1x2 / 2x1 difference kernels ([-1, 1]: each pixel minus
its left neighbour; its transpose: minus the pixel above) runs on the demo's image (a disc on a
checkerboard); the horizontal map is the demo's edge map exactly. The layer is checked against
torch.nn.Conv2d with the same weights and timed against it, and the edge pixels are counted.

    python examples/edge_detector.py [--quick] [--save edges.png]
"""
import argparse

import numpy as np
import torch
from torch import nn

import fastconv
import fastconv.torch as ft
from fastconv.__main__ import EDGE_KERNEL, EDGE_THRESHOLD, demo_image, median_ms


def edge_layer(layers):
    """Conv2d(1 -> 2, kernel 2x2): channel 0 = x[i, j+1] - x[i, j], channel 1 = x[i+1, j] - x[i, j]
    (a 2x2 kernel holds both the 1x2 and the 2x1 difference; the last row/column is cropped)."""
    conv = layers.Conv2d(1, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, :] = torch.from_numpy(EDGE_KERNEL[0, 0, 0])
        conv.weight[1, 0, :, 0] = torch.from_numpy(EDGE_KERNEL[0, 0, 0])
    conv.requires_grad_(False)
    return conv


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer timing repeats")
    ap.add_argument("--save", help="write the edge magnitude as a PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    image = demo_image()
    x = torch.from_numpy(image)[None, None]
    ours, theirs = edge_layer(ft), edge_layer(nn)
    with torch.no_grad():
        edges, reference = ours(x), theirs(x)
    assert torch.allclose(edges, reference), "fastconv and torch disagree"
    horizontal = fastconv.conv2d(image[None, None], EDGE_KERNEL)[0, 0]       # the demo's edge map
    assert np.array_equal(edges[0, 0, :, :].numpy(), horizontal[:-1, :]), "not the demo's edge map"
    magnitude = edges[0].abs().amax(0)
    count = int((magnitude > EDGE_THRESHOLD).sum())
    print(f"input {image.shape[1]}x{image.shape[0]}, edge map {magnitude.shape[1]}x{magnitude.shape[0]}")
    print(f"edge pixels: {int((edges[0, 0].abs() > EDGE_THRESHOLD).sum()):,} vertical edges, "
          f"{int((edges[0, 1].abs() > EDGE_THRESHOLD).sum()):,} horizontal edges, {count:,} in all")
    repeats = 5 if args.quick else 50
    with torch.no_grad():
        print(f"fastconv.torch.Conv2d {median_ms(lambda: ours(x), repeats):8.3f} ms   "
              f"torch.nn.Conv2d {median_ms(lambda: theirs(x), repeats):8.3f} ms   (median of {repeats})")
    if args.save:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.imsave(args.save, magnitude.numpy(), cmap="gray")
        print(f"saved {args.save}")
    return count


if __name__ == "__main__":
    main()
