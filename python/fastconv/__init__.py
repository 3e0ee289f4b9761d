"""fastconv: convolution and pooling on the CPU by direct, im2col+GEMM, Winograd and FFT
algorithms, forward and backward, with the call signatures of torch.nn.functional.

    import fastconv as fc
    y = fc.conv2d(x, w, bias, stride=1, padding="same", algorithm="auto")

The public names are listed in ``__all__``; docs/api.md is the contract (arrays, dtypes,
padding, errors, algorithms); ``fastconv.torch`` holds the autograd functions and layers.
"""
from . import _C
from .arithmetic import NETWORKS, ConvCost, Layer, conv2d_flops, conv2d_params, receptive_field
from .algorithms import get_autotune, get_workspace_limit, set_autotune, set_workspace_limit
from .functional import (conv1d, conv1d_backward, conv2d, conv2d_backward, conv2d_output_shape, explain,
                         get_num_threads, info, set_num_threads)
from .local import (local_conv1d, local_conv1d_backward, local_conv2d, local_conv2d_backward,
                    local_conv2d_output_size, tiled_conv1d, tiled_conv1d_backward, tiled_conv2d,
                    tiled_conv2d_backward)
from .plan import ConvPlan, plan_conv2d
from .pooling import (adaptive_avg_pool1d, adaptive_avg_pool1d_backward, adaptive_avg_pool2d,
                      adaptive_avg_pool2d_backward, adaptive_max_pool1d, adaptive_max_pool1d_backward,
                      adaptive_max_pool2d, adaptive_max_pool2d_backward, avg_pool1d, avg_pool1d_backward,
                      avg_pool2d, avg_pool2d_backward, lp_pool1d, lp_pool1d_backward, lp_pool2d,
                      lp_pool2d_backward, max_pool1d, max_pool1d_backward, max_pool2d, max_pool2d_backward)
from .pooling import (pool_window_weights, weighted_avg_pool1d, weighted_avg_pool1d_backward, weighted_avg_pool2d,
                      weighted_avg_pool2d_backward)

__version__ = _C.build_info()["version"]

__all__ = [
    "conv1d", "conv2d", "conv1d_backward", "conv2d_backward", "conv2d_output_shape", "explain", "info",
    "set_num_threads", "get_num_threads", "set_autotune", "get_autotune", "__version__",
    "plan_conv2d", "ConvPlan", "set_workspace_limit", "get_workspace_limit",
    "max_pool2d", "avg_pool2d", "lp_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "max_pool1d", "avg_pool1d", "lp_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
    "max_pool2d_backward", "avg_pool2d_backward", "lp_pool2d_backward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_backward", "max_pool1d_backward", "avg_pool1d_backward", "lp_pool1d_backward",
    "adaptive_avg_pool1d_backward", "adaptive_max_pool1d_backward",
    "conv2d_params", "conv2d_flops", "ConvCost", "Layer", "receptive_field", "NETWORKS",
    "weighted_avg_pool2d", "weighted_avg_pool1d", "weighted_avg_pool2d_backward", "weighted_avg_pool1d_backward",
    "pool_window_weights",
    "tiled_conv2d", "tiled_conv1d", "local_conv2d", "local_conv1d", "tiled_conv2d_backward", "tiled_conv1d_backward",
    "local_conv2d_backward", "local_conv1d_backward", "local_conv2d_output_size",
]
