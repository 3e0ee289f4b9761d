"""Helper of test_torch_ddp.py (not a test file): trains a small fastconv CNN with SGD for a
few steps on deterministic data, either alone on the whole batch or as one rank of a
DistributedDataParallel group (gloo, localhost) on its slice of the batch, and saves the
initial and final parameters.

    python tests/ddp_train.py OUT.pt                      # single process, whole batch
    python tests/ddp_train.py OUT.pt RANK WORLD PORT      # one DDP rank
"""
import os
import sys

import torch
from torch import nn

import fastconv
import fastconv.torch as ft

STEPS, BATCH = 4, 8


def model():
    torch.manual_seed(0)
    return nn.Sequential(ft.Conv2d(1, 4, 3, padding=1), nn.ReLU(), ft.MaxPool2d(2),
                         ft.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(), ft.AvgPool2d(2),
                         ft.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, BATCH, 1, 12, 12, generator=g), torch.randint(0, 3, (STEPS, BATCH), generator=g)


def train(net, xs, ys):
    # Mean loss per process: DDP averages the ranks' gradients, which is then the whole batch's mean.
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for x, y in zip(xs, ys):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def main(argv):
    torch.set_num_threads(1)
    fastconv.set_num_threads(1)
    out = argv[0]
    xs, ys = data()
    net = model()
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if len(argv) == 1:
        train(net, xs, ys)
    else:
        rank, world, port = (int(v) for v in argv[1:])
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
        share = BATCH // world
        ddp = nn.parallel.DistributedDataParallel(net)
        train(ddp, xs[:, rank * share:(rank + 1) * share], ys[:, rank * share:(rank + 1) * share])
        torch.distributed.destroy_process_group()
    torch.save({"initial": initial, "final": {k: v.detach().clone() for k, v in net.state_dict().items()}}, out)


if __name__ == "__main__":
    main(sys.argv[1:])
