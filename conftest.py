"""pytest, before anything imports fastconv: the emulated CUDA device.

When fastconv was built with the SIMT emulator (``FASTCONV_CUDA_EMU=ON``: the module
``fastconv._cuda_emu``, which is ``_C`` plus the CUDA kernel files compiled by the host compiler,
every CUDA thread a fiber) and this machine has no GPU, the tests load that module as
``fastconv._C``: the kernel table's CUDA rows then run on the emulator, on the tests' emulated
arrays (tests/emulated.py), and every test marked ``cuda`` runs against the reference as it would
on a GPU. ``FASTCONV_EMULATE_CUDA=0`` turns this off, ``=1`` requires it. The emulator's thread
order comes from ``FASTCONV_EMU_ORDER`` (forward, reverse, shuffle).
"""
import glob
import importlib.machinery
import importlib.util
import os
import shutil
import sys


def _has_gpu():
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


def _load_emulator():
    want = os.environ.get("FASTCONV_EMULATE_CUDA", "auto")
    if want == "0" or (want == "auto" and _has_gpu()) or "fastconv._C" in sys.modules:
        return
    spec = importlib.util.find_spec("fastconv")
    found = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_cuda_emu*.so")) if spec else []
    if not found:
        if want == "1":
            raise RuntimeError("FASTCONV_EMULATE_CUDA=1 but fastconv was built without the emulator "
                               "(install with FASTCONV_CUDA_EMU=ON)")
        return
    loader = importlib.machinery.ExtensionFileLoader("fastconv._cuda_emu", found[0])
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("fastconv._cuda_emu", loader))
    loader.exec_module(module)
    sys.modules["fastconv._cuda_emu"] = sys.modules["fastconv._C"] = module


_load_emulator()
