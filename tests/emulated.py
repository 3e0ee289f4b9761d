"""The tests' emulated CUDA arrays: host memory that the SIMT emulator's kernels address as
device memory (fastconv._cuda_emu, loaded as fastconv._C by the root conftest.py). They are a
library of their own to fastconv (registered with _arrays.register_library), so a test hands
fastconv "GPU" arrays exactly as it would CuPy arrays, and fastconv's CUDA backend (descriptors,
allocation, streams, wrapping) runs as it does on a GPU."""
import numpy as np

from fastconv import _arrays


class EmulatedArray:
    """An array on the emulated CUDA device 0 (its memory: ``host``, a C-contiguous ndarray)."""

    __slots__ = ("host",)

    def __init__(self, host):
        self.host = host

    @property
    def shape(self):
        return self.host.shape

    @property
    def dtype(self):
        return self.host.dtype

    @property
    def ndim(self):
        return self.host.ndim

    def get(self):
        """A NumPy copy (as CuPy's .get())."""
        return self.host.copy()


class EmulatedLibrary:
    """fastconv's view of EmulatedArray (the methods of _arrays.TorchCuda)."""

    name = "emulated"

    def dtype(self, a):
        return a.host.dtype

    def shape(self, a):
        return a.host.shape

    def device_index(self, a):
        return 0

    def contiguous(self, a):
        return a if a.host.flags.c_contiguous else EmulatedArray(np.ascontiguousarray(a.host))

    def is_contiguous(self, a):
        return a.host.flags.c_contiguous

    def pointer(self, a):
        return a.host.ctypes.data

    def empty(self, shape, dtype, index):
        # As cudaMalloc in the emulator: NaN bytes, so a kernel that reads before writing shows.
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        return EmulatedArray(np.full(count * dtype.itemsize, 0xFF, np.uint8).view(dtype).reshape(shape))

    def reshape(self, a, shape):
        return EmulatedArray(a.host.reshape(shape))

    def fill(self, a, value):
        a.host.fill(value)

    def copy(self, a):
        return EmulatedArray(a.host.copy())

    def flip_hw(self, a):
        return EmulatedArray(np.ascontiguousarray(a.host[:, :, ::-1, ::-1]))

    def from_host(self, a, index):
        return EmulatedArray(np.array(a, copy=True, order="C"))

    def all_finite(self, a):
        return bool(np.isfinite(np.add.reduce(a.host, axis=None)))

    def stream(self, index):
        return 0


def emulating():
    """True when fastconv._C is the emulator module (the CUDA rows run on the emulator)."""
    return bool(_arrays._C.build_info().get("cuda_emulated"))


if emulating():
    _arrays.register_library(EmulatedArray, EmulatedLibrary())
