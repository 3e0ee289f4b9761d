"""Shared fixtures: the instruction sets to test and the random generator. The case table is
cases.py, the forward/backward comparison with the reference compare.py. Tests marked ``cuda``
run on a CUDA device, or on the emulator (the root conftest.py, tests/emulated.py), and are
skipped only where there is neither."""
import numpy as np
import pytest

import emulated  # noqa: F401  (registers the emulated arrays when the emulator is loaded)
from fastconv import _C


def pytest_collection_modifyitems(config, items):
    status = _C.cuda_devices()
    if status["devices"]:
        return
    skip = pytest.mark.skip(reason=f"no CUDA device ({status['why_none']}) and no emulator build "
                                   "(FASTCONV_CUDA_EMU=ON)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

ISA_ORDER = ["scalar", "avx2", "avx512"]
AVAILABLE_ISAS = ISA_ORDER[: ISA_ORDER.index(_C.detected_isa()) + 1]


@pytest.fixture(params=AVAILABLE_ISAS)
def isa(request):
    """Run the test once per instruction set this CPU has, restoring the best afterwards."""
    before = _C.get_isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
