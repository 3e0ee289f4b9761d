"""tools/check_isa_objects.py: which symbols of a per-ISA object it accepts (its ISA's
namespace, local symbols, the personality pointer) and which it reports (everything else
global or weak), and that it fails when it finds no object to check."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "tools" / "check_isa_objects.py"
_spec = importlib.util.spec_from_file_location("check_isa_objects", _PATH)
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


@pytest.mark.parametrize("name, isa, inside", [
    # fastconv::cpu::avx2::conv2d_direct_workspace_bytes(ConvParams const&, DType)
    ("_ZN8fastconv3cpu4avx229conv2d_direct_workspace_bytesERKNS_10ConvParamsENS_5DTypeE", "avx2", True),
    # the same function, checked as another ISA's object
    ("_ZN8fastconv3cpu4avx229conv2d_direct_workspace_bytesERKNS_10ConvParamsENS_5DTypeE", "avx512", False),
    # void fastconv::cpu::avx512::conv2d_direct<float>(...)
    ("_ZN8fastconv3cpu6avx51213conv2d_directIfEEvRKNS_10ConvParamsEPKT_S8_S8_PS6_Pv", "avx512", True),
    # guard variable and local static of fastconv::cpu::avx512::gemm_kernel_f32()
    ("_ZGVZN8fastconv3cpu6avx51215gemm_kernel_f32EvE1k", "avx512", True),
    ("_ZZN8fastconv3cpu6avx51215gemm_kernel_f32EvE1k", "avx512", True),
    # std::vector<float>::_M_default_append(unsigned long)
    ("_ZNSt6vectorIfSaIfEE17_M_default_appendEm", "avx512", False),
    # fastconv::str_cat<char [11], char [42]>(...), the FC_CHECK message builder
    ("_ZN8fastconv7str_catIJA11_cA42_cEEENSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEDpRKT_",
     "avx2", False),
    # fastconv::cpu::gemm_detail::kernel_avx2_f32(): right words, wrong namespace
    ("_ZN8fastconv3cpu11gemm_detail15kernel_avx2_f32Ev", "avx2", False),
])
def test_namespace_of_mangled_names(name, isa, inside):
    assert check.in_namespace(name, isa) is inside


@pytest.mark.parametrize("kind, checked", [("T", True), ("W", True), ("V", True), ("D", True),
                                           ("B", True), ("R", True), ("u", True), ("t", False),
                                           ("d", False), ("b", False), ("r", False)])
def test_global_types(kind, checked):
    assert check.is_global(kind) is checked


def test_isa_of_object_paths():
    assert check.isa_of(Path("CMakeFiles/fc_kernels_avx512.dir/csrc/cpu/pool2d.cpp.o")) == "avx512"
    assert check.isa_of(Path("CMakeFiles/_C.dir/csrc/cpu/gemm_avx2.cpp.o")) == "avx2"
    assert check.isa_of(Path("CMakeFiles/_C.dir/csrc/cpu/gemm.cpp.o")) is None
    assert check.isa_of(Path("CMakeFiles/_C.dir/csrc/registry.cpp.o")) is None


def test_no_objects_fails(tmp_path, capsys):
    (tmp_path / "CMakeFiles" / "_C.dir").mkdir(parents=True)
    assert check.main([str(tmp_path)]) == 1
    assert "nothing was checked" in capsys.readouterr().err
