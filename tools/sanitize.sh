#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer on) over the tests that run
# fastconv's C++: the CPU kernels, the boundary and error paths (C++ exceptions included), pooling,
# the backward ops, and the CUDA kernels on the SIMT emulator (fastconv._cuda_emu). It also is CI's
# build with the alternative compiler and Python (issue 19): clang-16 (Debian's) and Python 3.12.
#
#   bash tools/sanitize.sh            # fresh venv, sanitizer build, the tests; any report fails it
#   FASTCONV_SAN_CXX=g++ FASTCONV_SAN_CC=gcc bash tools/sanitize.sh   # the same with GCC
#
# The build: pip install . -C cmake.define.FASTCONV_SANITIZE=address,undefined (every C++ object
# and the modules' link, -fno-sanitize-recover=all), FASTCONV_CUDA=OFF (nvcc's objects are not
# instrumented, and CI has no GPU to run them), FASTCONV_CUDA_EMU=ON. The interpreter is not
# instrumented, so the sanitizer runtime is preloaded (LD_PRELOAD); Python allocates with malloc
# (PYTHONMALLOC=malloc) so that LeakSanitizer sees through Python objects to the memory they own.
# The first ASan or UBSan report ends the process with a non-zero status; leaks are reported at
# exit and fail it too. tools/lsan.supp suppresses leaks of the interpreter and third-party
# libraries only. pytest runs with -s: a report is printed, not captured with the dying test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cc=${FASTCONV_SAN_CC:-clang-16}
cxx=${FASTCONV_SAN_CXX:-clang++-16}
python=${FASTCONV_SAN_PYTHON:-python3.12}
venv=${FASTCONV_SAN_VENV:-${TMPDIR:-/tmp}/fastconv-san-venv}

# clang-16, its OpenMP and its sanitizer runtimes (Debian's packages), unless already there.
if [[ $cxx == clang++-16 ]]; then
  missing=()
  for pkg in clang-16 libomp-16-dev libclang-rt-16-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "sanitize.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi
# Python 3.12: on PATH, or a pyenv installation (whose shim fails unless that version is selected).
if ! "$python" -c pass 2>/dev/null; then
  found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1 || true)
  if [[ -n $found ]]; then
    python=$found
  else
    echo "sanitize.sh: no Python 3.12; using python3 ($(python3 --version))" >&2
    python=python3
  fi
fi

rm -rf "$venv"
"$python" -m venv "$venv"
. "$venv/bin/activate"
echo "sanitize.sh: $(python --version), $($cxx --version | head -1)"
python -m pip install --quiet --upgrade pip
# What the tests import (pytest-benchmark: pyproject's addopts name its options). No torch: the
# torch tests skip (torch 2.13 is here for Python 3.11 only; its own code is not ours to check).
python -m pip install --quiet numpy pytest hypothesis pytest-benchmark

start=$SECONDS
CC=$cc CXX=$cxx FASTCONV_CUDA=OFF FASTCONV_CUDA_EMU=ON python -m pip install --quiet \
  -C build-dir=build/sanitize -C install.strip=false -C cmake.define.FASTCONV_SANITIZE=address,undefined .
build_seconds=$((SECONDS - start))
echo "sanitize.sh: build ${build_seconds}s"

# The runtime to preload: clang's shared ASan runtime carries UBSan's handlers too; GCC has two.
if [[ $("$cxx" --version) == *clang* ]]; then
  preload=$("$cxx" -print-file-name=libclang_rt.asan-x86_64.so)
else
  preload="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libubsan.so)"
fi
for lib in $preload; do
  [[ -f $lib ]] || { echo "sanitize.sh: sanitizer runtime $lib not found" >&2; exit 1; }
done
symbolizer=$(command -v llvm-symbolizer-16 || command -v llvm-symbolizer || true)

# The tests that run C++ (see README): the CPU kernels, their boundaries and errors, pooling,
# backward, the GEMM, the plan/dispatch paths, and the emulated CUDA kernels and emulator
# (-m cuda rows of the same files). Left out: the benchmarks, CLI, examples, packaging, stub and
# device-script tests (Python/tooling, or seconds of real timing that ASan would only slow down),
# the torch integration (no torch here) and tests marked slow.
tests=(tests/test_conv.py tests/test_boundary.py tests/test_errors.py tests/test_pool.py
  tests/test_pool_backward.py tests/test_backward.py tests/test_direct_paths.py tests/test_fft.py
  tests/test_winograd.py tests/test_gemm.py tests/test_plan.py tests/test_api.py
  tests/test_reference.py tests/test_emulator.py tests/test_cuda_gemm.py tests/test_cuda_pool.py
  tests/test_cuda_direct.py tests/test_cuda_arrays.py tests/test_threads.py tests/test_numerics.py
  tests/test_local_conv.py tests/test_weighted_pool.py)
shopt -s nullglob
tests+=(tests/test_fuzz*.py)  # the fuzz tests, at CI's short budget, where they exist
shopt -u nullglob

# intercept_tls_get_addr=0: LLVM 16's LeakSanitizer misreads glibc 2.36's dynamic TLS blocks of
# threads (OpenMP's workers) and crashes at exit ("Tracer caught signal 11", the DTLS range is
# garbage; google/sanitizers#1322). TLS is still scanned; the blocks are reached through the heap.
# allocator_may_return_null=1: an allocation past ASan's limit (1 TiB) returns NULL as malloc does
# without ASan, instead of aborting. test_fuzz draws outputs of 2**40 elements and more, which
# must raise MemoryError (NumPy's malloc fails); ASan's default turned that into a crash.
start=$SECONDS
status=0
env LD_PRELOAD="$preload" PYTHONMALLOC=malloc FASTCONV_EMULATE_CUDA=1 \
  ASAN_OPTIONS="detect_leaks=1:intercept_tls_get_addr=0:allocator_may_return_null=1:halt_on_error=1:check_initialization_order=1:strict_init_order=1" \
  LSAN_OPTIONS="suppressions=$root/tools/lsan.supp:print_suppressions=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1" \
  ${symbolizer:+ASAN_SYMBOLIZER_PATH=$symbolizer} \
  python -m pytest -s -q -p no:cacheprovider -m "not slow" "${tests[@]}" || status=$?
echo "sanitize.sh: tests $((SECONDS - start))s, exit status $status (build ${build_seconds}s)"
((status == 0)) || echo "sanitize.sh: FAILED: a failing test or a sanitizer report (above)" >&2
exit "$status"
