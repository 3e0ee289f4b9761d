"""fastconv inside PyTorch: differentiable functions, torch.nn layers, convert(), custom ops.

    from fastconv.torch import conv2d, max_pool2d        # torch.nn.functional's signatures
    from fastconv.torch import Conv2d, MaxPool2d, ...     # torch.nn subclasses (same state_dict)
    from fastconv.torch import convert                    # swap a model's layers in place
    model = convert(model)                                # then train, torch.compile, DDP as usual

The only part of fastconv that imports torch. The kernels are registered as custom ops
(``torch.ops.fastconv.conv2d``, ...; see ops.py) with fake implementations and autograd
formulas, so autograd, torch.compile(fullgraph=True) and DistributedDataParallel see
ordinary differentiable operators. CPU float32/float64 tensors.
"""
from . import ops
from .convert import Skipped, convert
from .functional import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_max_pool1d, adaptive_max_pool2d,
                         avg_pool1d, avg_pool2d, conv1d, conv2d, lp_pool1d, lp_pool2d, max_pool1d, max_pool2d,
                         weighted_avg_pool2d)
from .receptive import receptive_field
from .local import LocallyConnected2d, TiledConv2d, local_conv2d, tiled_conv2d
from .modules import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d,
                      AvgPool2d, Conv1d, Conv2d, FoldedBatchNorm2d, LPPool1d, LPPool2d, MaxPool1d, MaxPool2d,
                      WeightedAvgPool2d)

__all__ = [
    "conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "lp_pool1d", "lp_pool2d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "LPPool1d", "LPPool2d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
    "convert", "Skipped", "FoldedBatchNorm2d", "ops", "receptive_field",
    "weighted_avg_pool2d", "WeightedAvgPool2d",
    "local_conv2d", "tiled_conv2d", "LocallyConnected2d", "TiledConv2d",
]
