"""Command line: ``python -m fastconv info | explain | demo | bench`` (bench: see fastconv/bench/cli.py)."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import fastconv


def _shape(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _padding(text):
    if text in ("valid", "same", "full"):
        return text
    v = _shape(text)
    return v[0] if len(v) == 1 else v


def cmd_info(args):
    print(json.dumps(fastconv.info(), indent=2))


def cmd_explain(args):
    if args.model:
        table = fastconv.receptive_field(args.model, args.input_size)
        size = table.rows[0].size
        print(f"{args.model} at {size[0]}x{size[1]}: output size, receptive field, jump (effective stride), "
              "start (centre of output 0's field, input pixels) and unused input pixels, per layer")
        print(table)
        return
    if args.input_shape is None or args.weight_shape is None:
        raise SystemExit("explain: give INPUT_SHAPE and WEIGHT_SHAPE (one convolution), or --model NAME")
    print(fastconv.explain(args.input_shape, args.weight_shape, stride=args.stride, padding=args.padding,
                           dilation=args.dilation, groups=args.groups, dtype=args.dtype))


def median_ms(fn, repeats=20):
    """Median wall time of fn() in ms over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


# The lecture's edge detector: each pixel minus its left neighbour (also examples/edge_detector.py).
EDGE_KERNEL = np.array([[[[-1.0, 1.0]]]], np.float32)
EDGE_THRESHOLD = 0.25


def demo_image(h=280, w=320):
    """The demo's test image: a disc on a checkerboard, float32 (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = ((xx - w // 2) ** 2 + (yy - h // 2) ** 2 < 90 ** 2).astype(np.float32)  # a disc
    image += 0.5 * ((xx // 40 + yy // 40) % 2)                                       # on a checkerboard
    return image


def cmd_demo(args):
    """The lecture's edge detector: each pixel minus its left neighbour, on a 320x280 image."""
    image = demo_image()
    h, w = image.shape
    kernel = EDGE_KERNEL
    x = image[None, None]
    edges = fastconv.conv2d(x, kernel)[0, 0]
    flops = edges.size * 3  # two multiplies and one add per output pixel
    dense = 2 * (h * w) * edges.size
    print(f"fastconv {fastconv.__version__}  isa={fastconv.info()['isa']}  threads={fastconv.get_num_threads()}")
    print(f"input {w}x{h} image, kernel [-1, 1] -> output {edges.shape[1]}x{edges.shape[0]}")
    print(f"convolution: {flops:,} FLOPs; the same map as a dense matrix product: {dense:,} FLOPs "
          f"({dense / flops:,.0f}x more)")
    print(f"edge pixels found: {int(np.count_nonzero(np.abs(edges) > EDGE_THRESHOLD)):,}")
    for algorithm in [r["algorithm"] for r in fastconv.explain(x.shape, kernel.shape).algorithms if r["supported"]]:
        ms = median_ms(lambda: fastconv.conv2d(x, kernel, algorithm=algorithm))
        print(f"  {algorithm:<10} {ms:8.3f} ms")
    if args.save:
        np.save(args.save, edges)
        print(f"saved the edge map to {args.save}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, instruction set, threads, CUDA").set_defaults(fn=cmd_info)
    ex = sub.add_parser("explain", help="what each algorithm would do with one convolution; "
                                         "--model: a network's receptive fields")
    ex.add_argument("input_shape", type=_shape, nargs="?", help="N,C,H,W")
    ex.add_argument("weight_shape", type=_shape, nargs="?", help="K,C/groups,R,S")
    ex.add_argument("--model", choices=sorted(fastconv.NETWORKS),
                    help="print each layer's output size, receptive field, jump and start instead")
    ex.add_argument("--input-size", type=int, default=None, help="with --model: the input's side (default: its own)")
    ex.add_argument("--stride", type=_shape, default=(1,))
    ex.add_argument("--padding", type=_padding, default=0, help="int, ph,pw, valid, same or full")
    ex.add_argument("--dilation", type=_shape, default=(1,))
    ex.add_argument("--groups", type=int, default=1)
    ex.add_argument("--dtype", default="float32")
    ex.set_defaults(fn=cmd_explain)
    demo = sub.add_parser("demo", help="the lecture's edge detector, timed per algorithm")
    demo.add_argument("--save", help="write the edge map to this .npy file")
    demo.set_defaults(fn=cmd_demo)
    from .bench import cli as bench_cli
    bench_cli.add_parser(sub)
    args = parser.parse_args(argv)
    for name in ("stride", "dilation"):
        if hasattr(args, name):
            v = getattr(args, name)
            setattr(args, name, v[0] if len(v) == 1 else v)
    try:
        if args.command == "bench":
            # Re-executing itself (for NumPy's BLAS environment) only as a real command, never in-process.
            return args.fn(args, argv=sys.argv[1:] if argv is None else argv, allow_reexec=argv is None)
        args.fn(args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
