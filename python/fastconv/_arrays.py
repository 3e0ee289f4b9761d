"""The caller's arrays, adapted: the one place that decides where a call runs.

Every op hands its arrays to ``backend_for``, which finds their device (all must share
one) and returns the backend that serves it. A backend knows its array library: it
makes the caller's arrays into what the core's ``_C.run`` takes (descriptors), allocates
outputs and workspace with that library, gives the current stream, checks finiteness
and wraps results back into the caller's type.

Today one backend exists, ``HOST``: NumPy arrays and torch CPU tensors (which share
memory with a NumPy view) on the CPU; a NumPy array is its own descriptor for the core.
CuPy arrays and torch CUDA tensors are recognised and refused with a clear TypeError
until a CUDA backend plugs in here (``_C.Tensor`` descriptors, the caller's stream and
allocator).
"""
from __future__ import annotations

import sys
import threading

import numpy as np

from . import _C

DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}
SUPPORTED_DTYPES = tuple(DTYPE_NAMES)
DTYPE_LIST = ", ".join(DTYPE_NAMES.values())


def device_of(a):
    """(device, kind) of one array: kind is the caller's library ('numpy', 'torch', 'cupy'),
    device 'cpu' or e.g. 'cuda:0'. Raises TypeError for anything that is not an array."""
    if isinstance(a, np.ndarray):
        return "cpu", "numpy"
    module = type(a).__module__
    if module.startswith("torch"):
        dev = getattr(a, "device", None)
        return ("cpu" if dev is None or dev.type == "cpu" else str(dev)), "torch"
    if module.startswith("cupy"):
        return f"cuda:{a.device.id}", "cupy"
    raise TypeError(f"expected a numpy.ndarray or a torch.Tensor, got {type(a).__name__}")


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
        return np.ascontiguousarray(w[:, :, ::-1, ::-1])

    # ---- allocation ---------------------------------------------------------------------
    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def workspace(self, nbytes, slot="buf"):
        """A workspace of at least ``nbytes``, kept per Python thread and reused: a fresh
        buffer of tens of MiB (Winograd's transformed kernel) costs more in page faults
        than the kernel takes to fill it. Holds the largest workspace seen, per thread and
        ``slot`` (buffers used at the same time need different slots). None for 0 bytes."""
        if not nbytes:
            return None
        buf = getattr(self._workspaces, slot, None)
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(nbytes, np.uint8)
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
        """False when a holds NaN or Inf (one vectorised sum; a finite sum that overflows
        also says False, which only costs auto its fastest choice)."""
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
    backend of their one device and the library of the first array. Raises TypeError when
    the arrays are on different devices or on a device this build has no kernels for."""
    device = kind = first = None
    for name, a in named_arrays:
        if a is None:
            continue
        dev, k = device_of(a)
        if device is None:
            device, kind, first = dev, k, name
        elif dev != device:
            raise TypeError(f"arrays must be on one device: {first} is on {device}, {name} on {dev}")
    if device is None or device == "cpu":
        return HOST, kind
    raise TypeError(f"{first} is on device '{device}': this build of fastconv runs on the CPU only "
                    f"(no CUDA kernels: fastconv.info()['cuda']); move it with .cpu() or cupy.asnumpy")


def same_dtype(named_arrays):
    """Raise TypeError unless all the (name, array) pairs share one dtype."""
    dtypes = {name: a.dtype for name, a in named_arrays if a is not None}
    if len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"arrays must share one dtype, got {desc}")
