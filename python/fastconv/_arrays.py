"""The caller's arrays, adapted: the one place that decides where a call runs.

Every op hands its arrays to ``backend_for``, which finds their device (all must share
one) and returns the backend that serves it. A backend knows its array library: it
makes the caller's arrays into what the core's ``_C.run`` takes (descriptors), allocates
outputs and workspace with that library, gives the current stream, checks finiteness
and wraps results back into the caller's type.

Two backends exist. ``HOST``: NumPy arrays and torch CPU tensors (which share memory with a
NumPy view) on the CPU; a NumPy array is its own descriptor for the core. ``CudaBackend``:
arrays on a CUDA device, zero-copy, one backend per (array library, device index): torch
CUDA tensors, CuPy arrays, and the tests' emulated arrays (a library registered with
``register_library``, run by the SIMT emulator module). It describes each array to the core
as a ``_C.Tensor`` (pointer, dtype, shape), allocates outputs and workspaces with the caller's
library (torch's caching allocator, CuPy's memory pool) and queues the kernels on the
caller's current stream.
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

from . import _C

DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}
SUPPORTED_DTYPES = tuple(DTYPE_NAMES)
DTYPE_LIST = ", ".join(DTYPE_NAMES.values())


class DeviceMismatchError(TypeError, ValueError):
    """Arrays of one call on different devices (or a GPU array where only the CPU can serve):
    both a TypeError (as fastconv has always raised it) and a ValueError."""


def device_of(a):
    """(device, kind) of one array: kind is the caller's library ('numpy', 'torch', 'cupy', or
    a registered library's name), device 'cpu' or e.g. 'cuda:0'. Raises TypeError for anything
    that is not an array."""
    if isinstance(a, DeviceArray):  # already adapted (fastconv's own intermediate arrays)
        return f"cuda:{a.device_index}", a.lib.name
    if type(a) in _REGISTERED:
        lib = _REGISTERED[type(a)]
        return f"cuda:{lib.device_index(a)}", lib.name
    if isinstance(a, np.ndarray):
        return "cpu", "numpy"
    module = type(a).__module__
    if module.startswith("torch"):
        dev = getattr(a, "device", None)
        return ("cpu" if dev is None or dev.type == "cpu" else str(dev)), "torch"
    if module.startswith("cupy"):
        return f"cuda:{a.device.id}", "cupy"
    raise TypeError(f"expected a numpy.ndarray or a torch.Tensor, got {type(a).__name__}")


# Host buffers fastconv allocates (outputs, workspaces, a plan's prepared weights) start on a
# cache line. NumPy's start on 16 bytes, and the kernels' packed operands in them (Winograd's
# and FFT's transformed tiles, read as 64-byte vectors) then straddle two lines on every load:
# a split 512-bit load costs two on Intel's cores.
CACHE_LINE = 64


def _aligned_empty(shape, dtype):
    """np.empty(shape, dtype) whose data starts on a CACHE_LINE boundary."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape) if np.iterable(shape) else (int(shape),)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + CACHE_LINE, np.uint8)
    skip = -raw.ctypes.data % CACHE_LINE
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


class HostBackend:
    """NumPy arrays and CPU torch tensors, run by the CPU kernels."""

    device = "cpu"

    def __init__(self):
        self._workspaces = threading.local()

    # ---- the caller's arrays ----------------------------------------------------------
    def view(self, a):
        """a as an ndarray, as it is (CPU tensors share their memory)."""
        return a if isinstance(a, np.ndarray) else a.detach().numpy()

    def array(self, a, name):
        """a as a C-contiguous ndarray of a supported dtype (a view when it already is one;
        CPU tensors share their memory)."""
        arr = self.view(a)
        if arr.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {arr.dtype}; supported dtypes: {DTYPE_LIST}")
        return np.ascontiguousarray(arr)

    def wrap(self, arr, kind):
        """arr as the caller's array type (torch tensors share the NumPy memory)."""
        if kind == "torch":
            return sys.modules["torch"].from_numpy(arr)
        return arr

    def flip_kernel(self, w):
        """w (K, C, R, S) with each kernel rotated 180 degrees, as a contiguous copy."""
        # a copy, not ascontiguousarray: that keeps a view whose size-1 axes have negative
        # strides (NumPy calls it contiguous), which torch.from_numpy refuses
        return w[:, :, ::-1, ::-1].copy()

    def contiguous(self, a):
        """a (already this backend's array, any dtype) C-contiguous: itself or a copy."""
        return np.ascontiguousarray(a)

    # ---- allocation ---------------------------------------------------------------------
    def empty(self, shape, dtype):
        return _aligned_empty(shape, dtype)

    def workspace(self, nbytes, slot="buf"):
        """A workspace of at least ``nbytes``, kept per Python thread and reused: a fresh
        buffer of tens of MiB (Winograd's transformed kernel) costs more in page faults
        than the kernel takes to fill it. Holds the largest workspace seen, per thread and
        ``slot`` (buffers used at the same time need different slots). None for 0 bytes."""
        if not nbytes:
            return None
        buf = getattr(self._workspaces, slot, None)
        if buf is None or buf.nbytes < nbytes:
            buf = _aligned_empty(nbytes, np.uint8)
            setattr(self._workspaces, slot, buf)
        return buf

    def check_out(self, out, shape, dtype, name="out"):
        """A caller-provided output array: NumPy, C-contiguous and writable, right shape/dtype."""
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
        if out.shape != tuple(shape) or out.dtype != dtype:
            raise ValueError(f"{name} has shape {out.shape} and dtype {out.dtype}; "
                             f"expected shape {tuple(shape)} and dtype {dtype}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"{name} must be C-contiguous and writable")
        return out

    # ---- values -------------------------------------------------------------------------
    def all_finite(self, a):
        """False when a holds NaN or Inf: the C++ check (its exponent bits, read by the CPU
        threads) for C-contiguous float32/float64 arrays, else one vectorised sum (a finite sum
        that overflows also says False, which only costs auto its fastest choice)."""
        if isinstance(a, np.ndarray) and a.dtype in DTYPE_NAMES and a.flags.c_contiguous:
            return _C.all_finite(a)
        with np.errstate(invalid="ignore", over="ignore"):  # Inf - Inf is the answer here, not a warning
            return bool(np.isfinite(np.add.reduce(a, axis=None)))

    def stream(self):
        return 0  # the CPU has no streams

    # ---- the core -------------------------------------------------------------------------
    def run(self, op, algorithm, params, tensors, workspace=None, prepared=False):
        """One op of the kernel table on this device (tensors: slot name -> array)."""
        _C.run(op, algorithm, params, tensors, workspace, self.device, 0, self.stream(), prepared)

    def workspace_bytes(self, algorithm, params, dtype, prepared=False, op="conv2d_forward"):
        return _C.workspace_bytes(algorithm, params, DTYPE_NAMES[np.dtype(dtype)], prepared, op, self.device)

    def prepare(self, algorithm, params, w, out):
        _C.prepare_weights(algorithm, params, w, out, self.device)


HOST = HostBackend()


def backend_for(named_arrays):
    """(backend, kind) for a call's (name, array) pairs (None entries are skipped): the
    backend of their one device and the library of the first array. Raises
    DeviceMismatchError when the arrays are on different devices or libraries, or on a CUDA
    device this build or machine cannot serve."""
    device = kind = first = None
    for name, a in named_arrays:
        if a is None:
            continue
        dev, k = device_of(a)
        if device is None:
            device, kind, first = dev, k, name
        elif dev != device:
            raise DeviceMismatchError(f"arrays must be on one device: {first} is on {device}, {name} on {dev}")
        elif k != kind and device != "cpu":
            raise DeviceMismatchError(f"arrays on {device} must come from one library: {first} is a {kind} "
                                      f"array, {name} a {k} array")
    if device is None or device == "cpu":
        return HOST, kind
    if not device.startswith("cuda:"):
        raise DeviceMismatchError(f"{first} is on device '{device}': fastconv runs on the CPU and on CUDA "
                                  "devices; move it with .cpu() or .cuda()")
    return cuda_backend(kind, int(device.split(":")[1]), first), kind


def same_dtype(named_arrays):
    """Raise TypeError unless all the (name, array) pairs share one dtype."""
    dtypes = {name: a.dtype for name, a in named_arrays if a is not None}
    if len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"arrays must share one dtype, got {desc}")


# ---- CUDA devices ------------------------------------------------------------------------------

class DeviceArray:
    """An array on a CUDA device as the ops handle it: the caller's library object (a torch
    tensor, a CuPy array, an emulated array) with the small NumPy-like surface functional.py and
    pooling.py use (shape, dtype as a NumPy dtype, reshape, fill). The memory is the library's;
    this holds a reference so it stays alive for the call."""

    __slots__ = ("lib", "obj", "shape", "dtype", "device_index")

    def __init__(self, lib, obj):
        self.lib, self.obj = lib, obj
        self.shape = tuple(lib.shape(obj))
        self.dtype = lib.dtype(obj)
        self.device_index = lib.device_index(obj)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return DeviceArray(self.lib, self.lib.reshape(self.obj, tuple(shape)))

    def fill(self, value):
        self.lib.fill(self.obj, value)

    def copy(self):
        return DeviceArray(self.lib, self.lib.copy(self.obj))

    def descriptor(self):
        """The core's description of this memory (a contiguous array of the library)."""
        return _C.Tensor(self.lib.pointer(self.obj), self.dtype.name, self.shape, None, "cuda",
                           self.device_index, True)


class TorchCuda:
    """torch tensors on a CUDA device."""

    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        self._dtypes = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                        torch.int64: np.dtype(np.int64), torch.uint8: np.dtype(np.uint8)}
        self._to_torch = {v: k for k, v in self._dtypes.items()}

    def dtype(self, a):
        if a.dtype not in self._dtypes:
            raise TypeError(f"tensor has dtype {a.dtype}; supported dtypes: {DTYPE_LIST}")
        return self._dtypes[a.dtype]

    def shape(self, a):
        return tuple(a.shape)

    def device_index(self, a):
        return a.device.index if a.device.index is not None else self.torch.cuda.current_device()

    def contiguous(self, a):
        return a.detach().contiguous()

    def is_contiguous(self, a):
        return a.is_contiguous()

    def pointer(self, a):
        return a.data_ptr()

    def empty(self, shape, dtype, index):
        return self.torch.empty(tuple(shape), dtype=self._to_torch[np.dtype(dtype)], device=f"cuda:{index}")

    def reshape(self, a, shape):
        return a.view(shape)

    def fill(self, a, value):
        a.fill_(value)

    def copy(self, a):
        return a.detach().clone()

    def flip_hw(self, a):
        return self.torch.flip(a, (2, 3)).contiguous()

    def from_host(self, a, index):
        return self.torch.from_numpy(a).to(f"cuda:{index}")

    def all_finite(self, a):
        return bool(self.torch.isfinite(a.sum()).item())

    def stream(self, index):
        return self.torch.cuda.current_stream(index).cuda_stream


class CuPy:
    """CuPy arrays."""

    name = "cupy"

    def __init__(self):
        import cupy
        self.cupy = cupy

    def dtype(self, a):
        return np.dtype(a.dtype)

    def shape(self, a):
        return tuple(a.shape)

    def device_index(self, a):
        return a.device.id

    def contiguous(self, a):
        return self.cupy.ascontiguousarray(a)

    def is_contiguous(self, a):
        return a.flags.c_contiguous

    def pointer(self, a):
        return a.data.ptr

    def empty(self, shape, dtype, index):
        with self.cupy.cuda.Device(index):
            return self.cupy.empty(tuple(shape), dtype)

    def reshape(self, a, shape):
        return a.reshape(shape)

    def fill(self, a, value):
        a.fill(value)

    def copy(self, a):
        return a.copy()

    def flip_hw(self, a):
        return self.cupy.ascontiguousarray(a[:, :, ::-1, ::-1])

    def from_host(self, a, index):
        with self.cupy.cuda.Device(index):
            return self.cupy.asarray(a)

    def all_finite(self, a):
        return bool(self.cupy.isfinite(a.sum()))

    def stream(self, index):
        with self.cupy.cuda.Device(index):
            return self.cupy.cuda.get_current_stream().ptr


_LIBRARIES = {"torch": TorchCuda, "cupy": CuPy}
_REGISTERED = {}  # array type -> library instance (register_library)


def register_library(array_type, library):
    """Make arrays of ``array_type`` CUDA arrays served by ``library`` (an object with TorchCuda's
    methods and a ``name``), run by ``_C``'s CUDA rows (on the emulator, ``_C`` is the
    emulator module: the root conftest.py). The tests register their emulated arrays this way."""
    _REGISTERED[array_type] = library
    _LIBRARIES[library.name] = lambda: library
    _BACKENDS.clear()


_BACKENDS = {}
_backends_lock = threading.Lock()


def cuda_backend(kind, index, name="input"):
    """The backend of library ``kind``'s arrays on CUDA device ``index``; DeviceMismatchError
    when this build has no CUDA kernels or the machine no such device."""
    key = (kind, index)
    backend = _BACKENDS.get(key)
    if backend is None:
        with _backends_lock:
            lib = _LIBRARIES[kind]()
            status = _C.cuda_devices()
            if not any(k["device"] == "cuda" for k in _C.kernels()):
                raise DeviceMismatchError(f"{name} is on cuda:{index} but this build of fastconv has no CUDA "
                                          f"kernels ({status['why_none']}); move it with .cpu() or cupy.asnumpy")
            if index >= len(status["devices"]):
                raise DeviceMismatchError(f"{name} is on cuda:{index} but fastconv sees "
                                          f"{len(status['devices'])} CUDA device(s) ({status['why_none']})")
            backend = _BACKENDS[key] = CudaBackend(lib, index)
    return backend


class CudaBackend:
    """Arrays of one library on one CUDA device, run by _C's CUDA kernels (in the tests, _C is the
    emulator module) on the library's current stream."""

    device = "cuda"

    def __init__(self, lib, index):
        self.lib, self.index = lib, index

    # ---- the caller's arrays ----------------------------------------------------------
    def view(self, a):
        return a if isinstance(a, DeviceArray) else DeviceArray(self.lib, a)

    def array(self, a, name):
        arr = self.view(a)
        if arr.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {arr.dtype}; supported dtypes: {DTYPE_LIST}")
        return self.contiguous(arr)

    def contiguous(self, a):
        a = self.view(a)
        return a if self.lib.is_contiguous(a.obj) else DeviceArray(self.lib, self.lib.contiguous(a.obj))

    def wrap(self, arr, kind):
        return arr.obj

    def flip_kernel(self, w):
        return DeviceArray(self.lib, self.lib.flip_hw(w.obj))

    def from_host(self, a):
        """A copy of the small host array a (a pooling window) on this device."""
        return DeviceArray(self.lib, self.lib.from_host(np.ascontiguousarray(a), self.index))

    # ---- allocation (the caller's library: its pool or caching allocator) ---------------
    def empty(self, shape, dtype):
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return DeviceArray(self.lib, self.lib.empty(shape, np.dtype(dtype), self.index))

    def workspace(self, nbytes, slot="buf"):
        """A fresh workspace from the library's allocator (which caches): reusing one across
        calls would race with kernels still queued on another stream. None for 0 bytes."""
        return self.empty((nbytes,), np.uint8) if nbytes else None

    def check_out(self, out, shape, dtype, name="out"):
        if isinstance(out, DeviceArray):  # fastconv's own scratch (autotune, plans)
            dev, kind = f"cuda:{out.device_index}", out.lib.name
        else:
            try:
                dev, kind = device_of(out)
            except TypeError:
                dev = kind = None
        if dev != f"cuda:{self.index}" or kind != self.lib.name:
            raise DeviceMismatchError(f"{name} must be a {self.lib.name} array on cuda:{self.index}, got "
                                      f"{type(out).__name__}" + (f" on {dev}" if dev else ""))
        arr = self.view(out)
        if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"{name} has shape {arr.shape} and dtype {arr.dtype}; "
                             f"expected shape {tuple(shape)} and dtype {np.dtype(dtype)}")
        if not self.lib.is_contiguous(arr.obj):
            raise ValueError(f"{name} must be C-contiguous")
        return arr

    # ---- values -------------------------------------------------------------------------
    def all_finite(self, a):
        return self.lib.all_finite(self.view(a).obj)

    def stream(self):
        return self.lib.stream(self.index)

    # ---- the core -------------------------------------------------------------------------
    def _describe(self, a):
        return None if a is None else self.view(a).descriptor()

    def run(self, op, algorithm, params, tensors, workspace=None, prepared=False):
        described = {slot: self._describe(a) for slot, a in tensors.items() if a is not None}
        _C.run(op, algorithm, params, described, self._describe(workspace), "cuda", self.index,
                      self.stream(), prepared)

    def workspace_bytes(self, algorithm, params, dtype, prepared=False, op="conv2d_forward"):
        return _C.workspace_bytes(algorithm, params, DTYPE_NAMES[np.dtype(dtype)], prepared, op, "cuda",
                                         self.index)

    def prepare(self, algorithm, params, w, out):
        _C.prepare_weights(algorithm, params, self._describe(w), self._describe(out), "cuda", self.index,
                                  self.stream())
