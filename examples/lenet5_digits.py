"""LeNet-5 from fastconv layers, trained on scikit-learn's bundled handwritten digits.

The 1,797 8x8 images of sklearn.datasets.load_digits (no download) are upsampled to LeNet-5's
32x32 input, split 80/20 (stratified, fixed seed), and the net (fastconv.torch.models.lenet5:
fastconv Conv2d and AvgPool2d layers, torch's ReLU/Linear) is trained with Adam (one-cycle
learning rate, random shifts); it reaches about 98% test accuracy in well under a minute on
2 cores.

    python examples/lenet5_digits.py            # the full run (15 epochs)
    python examples/lenet5_digits.py --quick    # a short run (4 epochs), for the tests
"""
import argparse
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from fastconv.torch.models import lenet5


def data(seed=0):
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]      # (N, 1, 8, 8) in [0, 1]
    x = nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=digits.target)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def shifted(x, max_shift=2):
    """Augmentation: the batch moved by a random whole-pixel offset (the digits are small
    and centred, a shift is still the same digit)."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
    return torch.roll(x, (dy, dx), dims=(2, 3))


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():  # inference: the conv layers run their prepared plans
        pred = net(x).argmax(1)
    net.train()
    return float((pred == y).float().mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="train 4 epochs instead of 15")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    epochs = args.epochs or (4 if args.quick else 15)
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = data()
    net = lenet5()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = epochs * -(-len(y_train) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps)  # decays to ~0: no late noise
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(y_train))
        total = 0.0
        for i in range(0, len(order), args.batch):
            b = order[i:i + args.batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(shifted(x_train[b])), y_train[b])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        print(f"epoch {epoch + 1:2d}  loss {total / len(y_train):.4f}  "
              f"test accuracy {accuracy(net, x_test, y_test):.2%}", flush=True)
    acc = accuracy(net, x_test, y_test)
    print(f"test accuracy {acc:.2%} ({len(y_test)} images) after {epochs} epochs, "
          f"{time.perf_counter() - start:.1f} s of training")
    return acc


if __name__ == "__main__":
    main()
    sys.exit(0)
