"""Which algorithm runs a convolution: the names that exist, and ``auto``'s rules.

The rules are a few lines on purpose; benchmarks/RESULTS.md holds the
measurements behind them.

Winograd and FFT are not exact on non-finite inputs: a NaN or Inf input reaches, through
their transforms, other outputs of each tile whose window covers it (FFT: all of them; a
NaN/Inf weight reaches its whole output channel), where the reference may be finite.
``is_exact_on_nonfinite`` says so, and ``auto`` reruns a call on an exact kernel when such a
kernel's result is not all finite (functional._run_policy).
"""
from __future__ import annotations

import functools
import time

import numpy as np

from . import _C, _cache

# Names that stand for a family of kernel-table rows; resolve() picks the row.
ALIASES = ("winograd", "fft")


# Names that choose an algorithm rather than name one.
POLICIES = ("auto", "autotune")


@functools.lru_cache(maxsize=None)
def kernel_names(device="cpu"):
    """The conv2d kernels of the table on ``device``, in table order."""
    rows = [k["algorithm"] for k in _C.kernels() if k["op"] == "conv2d_forward" and k["device"] == device]
    return tuple(dict.fromkeys(rows))


@functools.lru_cache(maxsize=None)
def available(device="cpu"):
    """Names accepted by ``algorithm=`` for conv2d on ``device``: policies, aliases, kernels, reference."""
    names = kernel_names(device)
    aliases = tuple(a for a in ALIASES if any(r.startswith(a + ":") for r in names))
    return POLICIES + aliases + names + ("reference",)


def cpu_tuning(isa=None, vendor=None, family=None, model=None):
    """The key of auto's CPU tables: the instruction set and, on AVX-512, whose cores run it.
    ``"avx512"``: AMD's (fitted on a 2-core Zen 4, benchmarks/auto_grid_zen4.json; other
    vendors too); ``"avx512-intel"``: Intel's (a 2-core Sapphire Rapids-class Xeon,
    benchmarks/auto_grid_spr.json), whose two full-width FMA units a core halve the time of
    the products against Zen 4's one split zmm FMA, so the transforms and the memory traffic
    around them weigh more (F(4x4) pays only from 392 pixels, FFT only on large maps);
    ``"avx2"`` (fitted on a 2-core Zen 3, benchmarks/auto_grid_zen3.json); ``"avx2-zen1"``
    (AMD family 23 below model 0x30: Zen 1 and Zen+, whose FMAs are 128 bits wide), which keeps
    the rules measured there before the grid (RESULTS.md's Zen 1 sections: Winograd from 16
    channels and 49 pixels, F(4x4) from 196), none of the grid's AVX2 changes having been
    measured on it; and ``"scalar"``, which keeps them too. ``isa`` and ``vendor`` default to the
    active instruction set and the CPU's vendor, and without a vendor ``family`` and ``model``
    to the CPU's (``_C.cpu_identity()``, read from CPUID at run time)."""
    isa = isa or _C.get_isa()
    if vendor is None:
        ident = _cpu_identity()
        vendor = ident["vendor"]
        family = ident["family"] if family is None else family
        model = ident["model"] if model is None else model
    if isa == "avx512" and vendor == "intel":
        return "avx512-intel"
    if isa == "avx2" and vendor == "amd" and family == 23 and model is not None and model < 0x30:
        return "avx2-zen1"
    return isa


# Tunings whose rules predate the measured grids (see cpu_tuning).
_PRE_GRID = ("scalar", "avx2-zen1")


@functools.lru_cache(maxsize=None)
def _cpu_identity():
    return dict(_C.cpu_identity())


def _cpu_vendor():
    return _cpu_identity()["vendor"]


# Winograd's thresholds by tuning (cpu_tuning), in output pixels per call (batch included):
# (from, F(4x4) from) for conv2d calls, which transform the kernel every call, and for plans,
# which transformed it once. AVX-512 on Zen 4 (benchmarks/auto_grid_zen4.json): below 100
# pixels (7x7 maps at batch 1) see _few_tiles; F(4x4) pays from 300 pixels per call, from 169
# in a plan and in a call with >= 256 channels per group (_F4_WIDE: 384 channels on 13x13,
# F(4x4) 1.68 ms, F(2x2) 1.75; 128 channels on 14x14, F(2x2) 0.27, F(4x4) 0.30). AVX-512 on
# Intel (auto_grid_spr.json): F(4x4) from 392 pixels, and in a call from 169 with >= 384
# channels per group, whose 16 tiles a map run flipped products (conv2d_winograd.cpp): 384 on
# 13x13, F(4x4) 1.51 ms, F(2x2) 1.73; 512 on 14x14 2.57 against 2.87; 256 on 14x14 0.86
# against 0.77. Plans keep F(2x2) there (384 on 13x13: 1.42 ms, F(4x4) 1.58).
# AVX2 (benchmarks/auto_grid_zen3.json, a 2-core Zen 3): F(4x4) from 169 pixels, calls and plans
# alike (384 on 13x13: 3.48 ms against F(2x2)'s 4.76; 64 on 13x13, a plan: 0.15 against 0.19);
# below 100 pixels see _few_tiles. Zen 1's AVX2 and scalar code (measured on Zen 1): from 49,
# F(4x4) from 196.
_WINOGRAD_PIXELS = {("avx512", False): (100, 300), ("avx512", True): (100, 169),
                    ("avx512-intel", False): (100, 392), ("avx512-intel", True): (100, 392),
                    ("avx2", False): (100, 169), ("avx2", True): (100, 169)}
# (tuning, plan): (channels per group, F(4x4) from this many pixels per call)
_F4_WIDE = {("avx512", False): (256, 169), ("avx512", True): (256, 169), ("avx512-intel", False): (384, 169)}
_WINOGRAD_PIXELS_DEFAULT = (49, 196)  # _PRE_GRID

# FFT for kernels of 5 and up: (from this many output pixels per call, the tile of 5x5
# kernels, from this many output pixels per image). Intel's AVX-512 cores (auto_grid_spr.json
# and bench runs on a Sapphire Rapids-class Xeon) take it from 56x56 maps in 16x16 tiles
# (64->64 5x5 on 56x56: fft:16 2.21 ms, direct 2.43, fft:8 3.05; on 28x28 direct 0.69, fft:8
# 1.06). And there 3x3 stride 2 with 32-64 channels per group runs on im2col up to this many
# output pixels per call, where direct's strided loads lose (64 channels on 14x14, batch 1:
# direct 1.8x im2col's time; on Zen 4 0.56x).
# AVX2 (auto_grid_zen3.json): not on 7x7 maps, whose 49 outputs an image do not pay 4 tiles' FFTs
# (64->64 5x5 on 7x7 at batch 8: direct 0.65 ms, fft:8 0.97; 7x7 kernels: 1.20, fft:16 2.26).
_FFT = {"avx512-intel": (3136, 16, 0), "avx2": (392, 8, 100)}
_FFT_DEFAULT = (392, 8, 0)
# AVX2 (auto_grid_zen3.json): up to 49 (64 channels on 14x14 -> 7x7 at batch 1, a plan: direct
# 1.26x im2col's time; a call 1.02x); and 3x3 stride 2 with 65-128 channels per group from
# _IM2COL_STRIDED_WIDE output pixels per call (128 on 56x56 at batch 1: direct 1.08x im2col's
# time, a plan 1.15x; on 28x28 at batch 8 1.14x, 1.20x; on 28x28 at batch 1 direct is 1.31x
# faster). ResNet-50 (v1.5, stride on the 3x3) through convert() at batch 1: its 128->128 3x3
# stride 2 ran 0.68x torch inside the model on direct.
_IM2COL_STRIDED = {"avx512-intel": 196, "avx2": 49}
_IM2COL_STRIDED_WIDE = {"avx2": 784}
# A plan's 3x3 with <= 64 channels per group runs im2col's prepared GEMM below this many output
# pixels per call (else direct); AVX2 (auto_grid_zen3.json): 16 channels on 7x7 0.020 ms, direct
# 0.032; on 14x14 a tie.
_PLAN_IM2COL_3X3 = {"avx2": 200}
_PLAN_IM2COL_3X3_DEFAULT = 36
# 5x5 and larger kernels on at most this many input pixels per call run im2col from this many
# channels per group, (call, plan): its GEMM gathers the patches from a padded copy of the
# image, and on one 7x7 map that beat direct. AVX2 (auto_grid_zen3.json, after 2d040af): 128->128
# 5x5 on 7x7 at batch 1, a call, im2col 1.27x faster than direct; 64 channels, a plan, 1.29x; at
# batch 8 direct or FFT wins (64 channels, 5x5: im2col 1.47x the fastest).
_IM2COL_SMALL_MAP = {"avx2": (49, 64, 16)}


def winograd_pixels(tuning=None, prepared=False):
    """(pixels per call from which auto takes Winograd, pixels from which it takes F(4x4))
    for the tuning ``tuning`` (cpu_tuning(); default: this CPU's), for conv2d
    calls or, with ``prepared``, plans."""
    return _WINOGRAD_PIXELS.get((tuning or cpu_tuning(), bool(prepared)), _WINOGRAD_PIXELS_DEFAULT)


def winograd_tile(params, tuning=None, prepared=False):
    """``algorithm="winograd"``'s tile size m of F(m x m, 3 x 3). Larger tiles need fewer
    multiplications per output (2.25x, 4x, 5.06x fewer than direct for m = 2, 4, 6) but
    waste more of the edge tiles, cost more per transform and need a transformed kernel
    of 16, 36, 64 x K x C/groups floats that few tiles cannot amortise. F(6x6) only ties
    F(4x4) on the largest maps, with 4x the error, so it is never picked; F(4x4) from
    ``winograd_pixels()[1]`` output pixels per call (fewer with many channels, see _F4_WIDE).
    """
    tuning = tuning or cpu_tuning()
    per_call = params.N * params.P * params.Q
    if per_call >= winograd_pixels(tuning, prepared)[1]:
        return 4
    wide_cg, wide_pixels = _F4_WIDE.get((tuning, bool(prepared)), (0, None))
    if wide_pixels and params.C // params.groups >= wide_cg and per_call >= wide_pixels:
        return 4
    return 2


def fft_tile(params):
    """``algorithm="fft"``'s tile size n (n x n FFTs, overlap-save). An n x n tile yields
    (n-R+1) x (n-S+1) outputs for n*n/2 + 2 complex products per channel pair, so 16x16
    tiles need fewer products per output as the kernel grows (1.4x fewer than 8x8 for 3x3,
    2.4x for 5x5, 6.5x for 7x7), but their kernel spectra are 3.8x larger (computed per
    call without a plan), they waste more of the edge tiles, and their few tiles per image
    make narrow GEMMs that pay more packing per product. Measured (batch 1, 64->64 at
    56x56, 1 and 2 threads, Zen 4, interleaved medians): 7x7: fft:16 1.8x faster than
    fft:8; 5x5: a tie at 56x56, fft:8 ahead at 112x112; 3x3: fft:8 10-25% ahead. Kernels of
    8 and more need 16x16 tiles.
    """
    return 16 if max(params.R, params.S) >= 6 else 8


# ---- workspace cap -------------------------------------------------------------------------

_workspace_limit = None  # bytes, or None: no cap


def set_workspace_limit(nbytes):
    """Cap the scratch memory ``auto`` may choose an algorithm for (bytes; None: no cap).
    An explicit ``algorithm=`` is not capped; when nothing fits, ``auto`` takes the
    candidate that needs the least."""
    global _workspace_limit
    if nbytes is not None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
            raise ValueError(f"workspace limit must be a non-negative int of bytes or None, got {nbytes!r}")
        nbytes = int(nbytes)
    _workspace_limit = nbytes


def get_workspace_limit():
    return _workspace_limit


def workspace_bytes(name, params, dtype, prepared=False, device="cpu"):
    """Scratch bytes kernel ``name`` needs for this problem at the current thread count
    (with ``prepared``: when its weights come from a plan)."""
    if name == "reference":
        return 0
    dname = np.dtype(dtype).name
    prepared = prepared and prepares(name, device)
    return _C.workspace_bytes(name, params, dname, prepared, "conv2d_forward", device)


@functools.lru_cache(maxsize=None)
def prepares(name, device="cpu"):
    """True when kernel ``name`` has a prepared (pre-transformed) form of the weights."""
    return any(k["prepares"] for k in _C.kernels()
               if k["algorithm"] == name and k["op"] == "conv2d_forward" and k["device"] == device)


def choose(params, dtype, inputs_finite=True, workspace_limit=None, prepared=False, device="cpu", isa=None,
           vendor=None):
    """``auto``, within a workspace cap (``workspace_limit`` bytes, else the global
    ``set_workspace_limit``; ``prepared``: sized for a plan's kernels): the rules'
    choice when it fits, else the first of im2col, direct that fits, else the one
    that needs the least. ``isa``, ``vendor``: the CPU the rules assume (cpu_tuning; default:
    this one; benchmarks/auto_grid.py evaluates a recorded machine's)."""
    return choose_with_rule(params, dtype, inputs_finite, workspace_limit, prepared, device, isa, vendor)[0]


def choose_with_rule(params, dtype, inputs_finite=True, workspace_limit=None, prepared=False, device="cpu",
                     isa=None, vendor=None):
    """``choose``'s pick and the rule that fired, as a sentence (``explain`` shows it)."""
    if device not in _RULES:
        raise ValueError(f"no rules for device {device!r}; known: {', '.join(_RULES)}")
    limit = workspace_limit if workspace_limit is not None else _workspace_limit
    tuning = cpu_tuning(isa, vendor) if device == "cpu" else None
    first, rule = _RULES[device](params, dtype, inputs_finite, tuning, prepared)
    if limit is None:
        return first, rule
    options = [first] + [a for a in ("im2col", "direct") if a != first]
    need = {a: workspace_bytes(a, params, dtype, prepared, device) for a in options}
    for a in options:
        if need[a] <= limit:
            return a, (rule if a == first else
                       f"{rule}; its workspace exceeds the limit of {limit:,} bytes: the first of im2col, direct "
                       "that fits")
    return min(options, key=lambda a: need[a]), f"{rule}; nothing fits the limit of {limit:,} bytes: the smallest"


def _cpu_rules(params, dtype, inputs_finite=True, tuning=None, prepared=False):
    """``auto``'s rules on the CPU, fitted to benchmarks/auto_grid_zen4.json: every kernel timed
    on 773 layers (channels 16-1024, maps 7-112, kernels 1/3/5/7, stride 1/2, batch 1/8, groups
    1 and depthwise; 2-core Zen 4, AVX-512), called directly and through plans. On that grid
    these rules pick a kernel within 10 % of the fastest at 97 % of the points, for calls and
    for plans alike (tests/test_auto_rules.py; ``python benchmarks/auto_grid.py --load ...``
    lists the misses). Intel's AVX-512 cores (``tuning`` "avx512-intel", cpu_tuning) differ
    where benchmarks/auto_grid_spr.json, the same grid on a Sapphire Rapids-class Xeon, says
    so, and AVX2 code (``tuning`` "avx2") where auto_grid_zen3.json, the grid on a Zen 3 without
    AVX-512, does. Returns (kernel, the rule as a sentence). Winograd and FFT need float32 and finite
    inputs (``inputs_finite=False``: a tile would spread a NaN or Inf over it).
    """
    cg = params.C // params.groups
    if params.groups > 1 and cg <= 4:
        return "direct", "depthwise-like (<= 4 input channels per group): direct"
    dname = np.dtype(dtype).name
    pixels = params.P * params.Q           # output pixels of one image
    per_call = params.N * pixels           # of the whole call
    k = max(params.R, params.S)
    tuning = tuning or cpu_tuning()
    wide_isa = tuning.startswith("avx512")
    # AVX2 too: at 16 channels direct beats both tiles (Zen 3, 16 on 14x14: 0.05 ms, F(4x4) 0.09)
    min_cg = 16 if tuning in _PRE_GRID else 32
    if inputs_finite and cg >= min_cg and not _C.supports("winograd:4", params, dname):
        first, f4 = winograd_pixels(tuning, prepared)
        if per_call >= first:
            return f"winograd:{winograd_tile(params, tuning, prepared)}", (
                f"3x3 stride 1, >= {min_cg} channels per group, >= {first} output pixels per call: Winograd, "
                + _tile_text(tuning, prepared))
        if tuning not in _PRE_GRID:
            return _few_tiles(cg, prepared, wide_isa)
    fft_from, tile_5x5, fft_map = _FFT.get(tuning, _FFT_DEFAULT)
    if inputs_finite and k >= 5 and cg >= 64 and per_call >= fft_from and pixels >= fft_map:
        # 5x5: 8x8 tiles, ahead of 16x16 and of direct up to 56x56 maps (64->64 at 56x56, Zen 4:
        # fft:8 3.0 ms, direct 3.5, fft:16 3.9); 7x7 and up: 16x16 tiles up to 64 channels a
        # group, past which direct wins (128->128 7x7 on 28x28: direct 7.5 ms, fft:16 8.9).
        # Intel: direct up to 56x56 maps, then 16x16 tiles for 5x5 too (_FFT).
        if params.R * params.S <= 25 and tile_5x5 == 8 and not _C.supports("fft:8", params, dname):
            return "fft:8", f"5x5 stride 1, >= 64 channels per group, >= {fft_from} output pixels per call: FFT 8x8"
        if cg < 128 and not _C.supports("fft:16", params, dname):
            smallest = "5x5" if tile_5x5 == 16 else "7x7"
            return "fft:16", (f"{smallest}-15x15 stride 1, 64-127 channels per group, >= {fft_from} output pixels "
                              "per call: FFT 16x16")
    if pixels <= 4:  # e.g. LeNet-5's conv3, 5x5 on a 5x5 map: 0.04 ms against direct's 0.11
        return "im2col", "an output map of <= 4 pixels: im2col (a matrix product over the whole map)"
    if k == 1:
        if params.stride_h > 1 and not prepared and not (cg >= 384 and per_call <= 392):
            return "direct", ("1x1 stride 2 (a call), < 384 channels per group or > 392 output pixels per call: "
                              "direct, which reads only the strided pixels")
        return "im2col", ("1x1: im2col (one GEMM, no unroll; at stride 2 with >= 384 channels per group on <= 392 "
                          "output pixels, its gathered GEMM beats direct: 512 channels on 7x7 at batch 8, 1.2-1.45x)")
    small_strided = _IM2COL_STRIDED.get(tuning, 0)
    if k == 3 and params.stride_h > 1 and 32 <= cg <= 64 and per_call <= small_strided:
        return "im2col", (f"3x3 stride 2, 32-64 channels per group, <= {small_strided} output pixels per call "
                          f"({tuning}): im2col")
    small_map, call_cg, plan_cg = _IM2COL_SMALL_MAP.get(tuning, (0, 0, 0))
    if k >= 5 and params.N * params.H * params.W <= small_map and cg >= (plan_cg if prepared else call_cg):
        return "im2col", (f"5x5 and larger on <= {small_map} input pixels per call, >= "
                          f"{plan_cg if prepared else call_cg} channels per group ({tuning}): im2col")
    wide_strided = _IM2COL_STRIDED_WIDE.get(tuning, 0)
    if k == 3 and params.stride_h > 1 and 64 < cg <= 128 and wide_strided and per_call >= wide_strided:
        return "im2col", (f"3x3 stride 2, 65-128 channels per group, >= {wide_strided} output pixels per call "
                          f"({tuning}): im2col")
    plan_im2col_below = _PLAN_IM2COL_3X3.get(tuning, _PLAN_IM2COL_3X3_DEFAULT)
    if cg <= 64 and not (prepared and k == 3 and per_call < plan_im2col_below):
        return "direct", "spatial kernel, <= 64 channels per group: direct (im2col's GEMM is too shallow)"
    if cg <= 128 and (pixels >= 150 or k >= 5):
        return "direct", "spatial kernel, <= 128 channels per group, >= 150 output pixels or 5x5 and up: direct"
    if params.R * params.S >= 49:
        return "direct", "7x7 and larger kernels: direct (im2col would unroll the input 49 times)"
    return "im2col", "everything else: im2col"


def _tile_text(tuning, prepared):
    """winograd_tile's choice for this tuning, as words."""
    text = f"F(4x4) from {winograd_pixels(tuning, prepared)[1]}"
    wide_cg, wide_pixels = _F4_WIDE.get((tuning, bool(prepared)), (0, None))
    if wide_pixels:
        text += f" (from {wide_pixels} with >= {wide_cg} channels per group)"
    return text + ", else F(2x2)"


def _few_tiles(cg, prepared, wide_isa=True):
    """3x3 stride 1 with fewer than 100 output pixels per call (7x7 maps at batch 1), AVX-512:
    a call transforms the kernel for only 16 tiles, which pays from 32 channels per group (512
    channels: 1.39 ms against im2col's 1.55); a plan's transformed kernel pays from 128. AVX2
    (Zen 3): a call's transform does not pay (direct up to 128 channels, 0.28 ms against F(2x2)'s
    0.35; then im2col, 512 channels 2.39 against 2.55; on Zen 1, "avx2-zen1", F(2x2) stays: 3.84
    ms against im2col's 6.77); a plan's F(2x2) does from 32 channels (64: 0.078 ms, direct 0.092)."""
    if not wide_isa:
        if prepared:
            return "winograd:2", "3x3 stride 1, < 100 output pixels, a plan, >= 32 channels per group (AVX2): F(2x2)"
        if cg <= 128:
            return "direct", "3x3 stride 1, < 100 output pixels, a call, <= 128 channels per group (AVX2): direct"
        return "im2col", "3x3 stride 1, < 100 output pixels, a call, > 128 channels per group (AVX2): im2col"
    if prepared:
        if cg >= 128:
            return "winograd:2", "3x3 stride 1, < 100 output pixels, a plan, >= 128 channels per group: F(2x2)"
        return "im2col", "3x3 stride 1, < 100 output pixels, a plan, < 128 channels per group: im2col"
    return "winograd:2", "3x3 stride 1, < 100 output pixels, >= 32 channels per group: Winograd F(2x2)"


def _cuda_rules(params, dtype, inputs_finite=True, tuning=None, prepared=False):
    """``auto``'s rules on a CUDA device (csrc/cuda/). Not measured yet (no GPU has run this
    version): chosen by what each kernel's structure is built for, to be replaced by a measured
    table (benchmarks/RESULTS.md) when a GPU session runs ``bench --device cuda``:

    - depthwise-like (<= 4 input channels per group): direct, whose depthwise kernel stages an
      input tile in shared memory, where a GEMM would have a reduction of R*S (9) and tiles of
      one group's few channels;
    - small reductions (C/groups * R * S < 32, e.g. a first layer of 3 channels and 3x3): direct;
    - everything else: im2col on the tiled GEMM (register-blocked, shared-memory tiles).
    """
    cg = params.C // params.groups
    if params.groups > 1 and cg <= 4:
        return "direct", "depthwise-like (<= 4 input channels per group): direct"
    if cg * params.R * params.S < 32:
        return "direct", "reduction C/groups*R*S < 32: direct"
    return "im2col", "everything else: im2col on the tiled GEMM"


# ``auto``'s rules per device: a device's kernels win on different problems.
_RULES = {"cpu": _cpu_rules, "cuda": _cuda_rules}


def _reference_on_host(algorithm, device):
    """ValueError for algorithm='reference' on a GPU array: the reference is NumPy."""
    if algorithm == "reference" and device != "cpu":
        raise ValueError(f"algorithm 'reference' runs on the CPU only (NumPy) but the arrays are on {device}; "
                         "move them with .cpu() / cupy.asnumpy, or choose a kernel of fastconv.algorithms.available"
                         f"({device!r})")


# ---- autotuning ------------------------------------------------------------------------
# Opt-in (set_autotune(True) makes "auto" tune; algorithm="autotune" tunes one call): the
# first call of a problem times every kernel that supports it on the caller's data and
# keeps the winner, in this process and in autotune.json under the user cache directory
# ($FASTCONV_CACHE_DIR overrides), keyed by version, device, ISA, threads, dtype and problem, so
# the next process starts tuned.

_autotune = False
_tuned = {}  # key -> winner, this process


def set_autotune(enabled=True):
    """Make ``algorithm="auto"`` time the candidates once per problem and keep the winner."""
    global _autotune
    _autotune = bool(enabled)


def get_autotune():
    return _autotune


def autotune_cache_path():
    return _cache.cache_dir() / "autotune.json"


def autotune_key(params, dtype, device="cpu"):
    p = params
    if device == "cpu":
        machine = f"cpu|{_cpu_vendor()}|{_C.get_isa()}|{_C.get_num_threads()}t"
    else:  # the GPU's name: a cache shared by machines with different cards keeps them apart
        machine = f"{device}|" + "+".join(d["name"] for d in _C.cuda_devices()["devices"])
    return (f"{_C.build_info()['version']}|{machine}|{np.dtype(dtype).name}|"
            f"N{p.N} C{p.C} H{p.H} W{p.W} K{p.K} R{p.R} S{p.S} P{p.P} Q{p.Q} pad{p.pad_h},{p.pad_w} "
            f"s{p.stride_h},{p.stride_w} d{p.dil_h},{p.dil_w} g{p.groups}")


def candidates(params, dtype, prepared=False, device="cpu"):
    """Every kernel of the table on ``device`` that can run this problem (within the
    workspace cap, when one is set and any fits)."""
    name = np.dtype(dtype).name
    options = [k for k in kernel_names(device) if not _C.supports(k, params, name, "conv2d_forward", device)]
    if _workspace_limit is not None:
        fitting = [k for k in options if workspace_bytes(k, params, dtype, prepared, device) <= _workspace_limit]
        options = fitting or options
    return options


def tuned(params, dtype, run, repeats=3, prepared=False, device="cpu"):
    """The fastest candidate for this problem: from this process, the cache file, or by
    timing ``run(name)`` (one warm-up, best of ``repeats``) for each candidate
    (``prepared``: as a plan runs them, with the weights prepared ahead)."""
    key = autotune_key(params, dtype, device) + ("|plan" if prepared else "")
    options = candidates(params, dtype, prepared, device)
    winner = _tuned.get(key)
    if winner not in options:
        winner = _cache.read(autotune_cache_path()).get(key)
    if winner not in options:  # not tuned yet, or the cache is stale or corrupt
        best = None
        for name in options:
            run(name)
            t = min(_timed(run, name) for _ in range(repeats))
            if best is None or t < best[0]:
                best = (t, name)
        winner = best[1]
        _cache.update(autotune_cache_path(), {key: winner})
    _tuned[key] = winner
    return winner


def _timed(run, name):
    t0 = time.perf_counter()
    run(name)
    return time.perf_counter() - t0


def is_exact_on_nonfinite(name):
    """False for algorithms that may spread a NaN/Inf input over a tile (Winograd, FFT)."""
    return not name.startswith(("winograd", "fft"))


def resolve(algorithm, params, dtype, device="cpu"):
    """Validate an ``algorithm=`` value for this problem on ``device``; return the kernel
    name to run."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a string, got {algorithm!r}")
    _reference_on_host(algorithm, device)
    names = available(device)
    if algorithm in POLICIES:  # functional.py turns these into a kernel (it has the data)
        return algorithm
    if device != "cpu" and algorithm not in names and algorithm in available("cpu"):
        raise ValueError(f"algorithm {algorithm!r} has no {device} kernel (it runs on the CPU); on {device}: "
                         f"{', '.join(n for n in names if n != 'reference')}")
    if algorithm == "winograd":
        why = _C.supports("winograd:2", params, dtype.name, "conv2d_forward", device)
        if why:
            raise ValueError(f"algorithm 'winograd' cannot run this problem: {why}")
        return f"winograd:{winograd_tile(params)}"
    if algorithm == "fft":
        why = _C.supports("fft:16", params, dtype.name, "conv2d_forward", device)
        if why:
            raise ValueError(f"algorithm 'fft' cannot run this problem: {why}")
        return f"fft:{fft_tile(params)}"
    if algorithm not in names:
        raise ValueError(f"unknown algorithm {algorithm!r}; available: {', '.join(names)}")
    if algorithm != "reference":
        why = _C.supports(algorithm, params, dtype.name, "conv2d_forward", device)
        if why:
            raise ValueError(f"algorithm {algorithm!r} cannot run this problem: {why}")
    return algorithm


# ---- backward ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def backward_kernel_names(device="cpu"):
    """The kernels of the table on ``device`` that have both conv2d backward ops, in table order."""
    ops = {}
    for k in _C.kernels():
        if k["device"] == device and k["op"] in ("conv2d_backward_data", "conv2d_backward_weight"):
            ops.setdefault(k["algorithm"], set()).add(k["op"])
    return tuple(a for a, o in ops.items() if len(o) == 2)


def backward_available(device="cpu"):
    """Names accepted by ``algorithm=`` for conv2d_backward on ``device``."""
    return ("auto",) + backward_kernel_names(device) + ("reference",)


def choose_backward(params, device="cpu"):
    """``auto`` for conv2d_backward: direct for depthwise-like problems (<= 4 input channels
    per group), where im2col's GEMMs are a few rows tall; im2col (one GEMM per chunk for
    each of the data and weight gradients) for everything else."""
    if params.groups > 1 and params.C // params.groups <= 4:
        return "direct"
    return "im2col"


def resolve_backward(algorithm, params, device="cpu"):
    """Validate conv2d_backward's ``algorithm=``; return the kernel name to run."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a string, got {algorithm!r}")
    _reference_on_host(algorithm, device)
    names = backward_available(device)
    if algorithm == "auto":
        return choose_backward(params, device)
    if algorithm not in names:
        raise ValueError(f"conv2d_backward: algorithm {algorithm!r} has no backward pass; available: "
                         f"{', '.join(names)}")
    return algorithm
