"""fastconv.bench: the benchmark behind ``python -m fastconv bench``.

- ``timing``: the one timing method (warm-up, interleaved rounds, medians; CUDA events on the GPU),
  shared with the pytest-benchmark suite in ``benchmarks/``;
- ``networks``: layer shapes of ResNet-50, VGG-16, MobileNet and LeNet-5 (``networks.txt``);
- ``peers``: torch, torch prepacked (oneDNN), NNPACK, cuDNN, each skipped with a note when missing;
- ``runner``: measures layers forward and backward (and GEMM, pooling; locally connected / tiled
  convolution and weighted pooling, ``--sections local weighted``) into plain records;
- ``formulations``: the torch code a user would write for the layers torch lacks (unfold + einsum /
  bmm; a depthwise conv2d with the fixed window) and their shapes, shared with ``benchmarks/``;
- ``report``: console table and summary, Markdown for RESULTS.md, JSON, PNG plot;
- ``cli``: the options;
- ``smoke``: every kernel of a device's table once on small problems, checked against the CPU
  (``python -m fastconv.bench.smoke --device cuda``: what tools/device_run.sh runs under
  compute-sanitizer).

``--device cuda`` times fastconv's CUDA kernels against cuDNN, cuBLAS, torch and the torch
formulations of ``local`` and ``weighted`` on the same torch CUDA tensors (TF32 off, CUDA events).

torch, tqdm and matplotlib are optional and imported only where they are used.
"""
