"""Why locally connected layers exist: a task where *where* a feature appears matters.

Each 10x10 image holds one short bar, horizontal or vertical, at a random place in the top
or the bottom half, plus noise. The label is 1 for a horizontal bar in the top half or a
vertical bar in the bottom half, else 0: neither the bar's kind nor its half alone says
anything about the label. Two small networks with the same shape, feature layer -> ReLU ->
global average pool -> linear, are trained briefly:

  - a shared convolution (fastconv.torch.Conv2d): translation-equivariant features, pooled
    over the image, cannot tell the top from the bottom: about chance;
  - a locally connected layer (fastconv.torch.LocallyConnected2d, a kernel per position,
    Goodfellow et al. 9.5): it learns different detectors in the two halves and solves it,
    at the price of P*Q times the parameters. (TiledConv2d sits between the two.)

    python examples/locally_connected.py [--quick] [--steps N]
"""
import argparse
import time

import numpy as np
import torch
from torch import nn

import fastconv as fc
from fastconv.torch import Conv2d, LocallyConnected2d, TiledConv2d

SIZE = 10


def make_data(n, rng):
    x = rng.normal(0.0, 0.2, (n, 1, SIZE, SIZE))
    horizontal = rng.random(n) < 0.5
    top = rng.random(n) < 0.5
    for i in range(n):
        r = rng.integers(0, SIZE // 2 - 2) + (0 if top[i] else SIZE // 2)  # rows r..r+2 stay in the half
        c = rng.integers(0, SIZE - 2)
        if horizontal[i]:
            x[i, 0, r + 1, c:c + 3] += 1.0
        else:
            x[i, 0, r:r + 3, c + 1] += 1.0
    y = (horizontal == top).astype(np.int64)  # horizontal in the top half, or vertical in the bottom half
    return torch.from_numpy(x), torch.from_numpy(y)


def model(features):
    return nn.Sequential(features, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double()


def train(net, x, y, steps, rng):
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), 64))
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def accuracy(net, x, y):
    with torch.no_grad():
        return float((net(x).argmax(1) == y).double().mean()) * 100


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps (the test suite's run)")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    steps = args.steps or (300 if args.quick else 1000)
    torch.manual_seed(0)
    fc.set_num_threads(1)  # tiny layers: a second thread costs more in start-up than it saves
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x_train, y_train = make_data(4000, rng)
    x_test, y_test = make_data(1000, rng)
    nets = {
        "shared conv (Conv2d)": model(Conv2d(1, 8, 3)),
        "tiled conv (TiledConv2d, 2x2 sets)": model(TiledConv2d(1, 8, 3, tiles=2, bias="channel")),
        "locally connected (LocallyConnected2d)": model(LocallyConnected2d(1, 8, 3, input_size=SIZE)),
    }
    print(f"task: bar kind x image half, {len(x_train)} train / {len(x_test)} test images, {steps} Adam steps of 64")
    print(f"{'layer':<40} {'parameters':>10} {'layer params':>12} {'test accuracy':>14} {'time':>7}")
    for name, net in nets.items():
        t0 = time.perf_counter()
        train(net, x_train, y_train, steps, rng)
        params = sum(p.numel() for p in net.parameters())
        layer_params = sum(p.numel() for p in net[0].parameters())
        print(f"{name:<40} {params:>10,} {layer_params:>12,} {accuracy(net, x_test, y_test):>13.1f}% "
              f"{time.perf_counter() - t0:>6.1f}s")
    p, q = fc.local_conv2d_output_size(SIZE, 3)
    print(f"the locally connected layer holds a 3x3 kernel per output position: {p}x{q} positions x 8 channels")


if __name__ == "__main__":
    main()
