"""Shared fixtures: the instruction sets to test and the random generator. The case table is
cases.py, the forward/backward comparison with the reference compare.py."""
import numpy as np
import pytest

from fastconv import _C

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
