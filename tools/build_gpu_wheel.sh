#!/usr/bin/env bash
# build_gpu_wheel.sh: build, on THIS machine, the fastconv wheel that tools/device_run.sh installs on
# the lent GPU machine (issue 18 item 6): that machine's minutes go to GPU work, not compiling. The
# wheel is for its python3 (3.12) with CUDA kernels for sm_90 only (H100/H200), the CUDA runtime
# linked statically; it lands in dist/gpu/ (ignored by git: the device tool's `carry` takes it) with
# a copy of this machine's libgomp.so.1 (loaded there only if the image lacks one) and SOURCE_HASH,
# the hash of the sources it was built from (device_run.sh warns when the carried tree differs).
# Checked here: the wheel imports under Python 3.12 (a venv with numpy) and fastconv.info() reports
# no GPU instead of failing; its _C holds sm_90 code (cuobjdump, when installed).
#   usage: bash tools/build_gpu_wheel.sh
#          then: device tool run(command="bash tools/device_run.sh", carry=["dist/gpu"], timeout_s=540)
#   environment: FASTCONV_GPU_PYTHON  a python3.12 to build with (default: pyenv's newest 3.12.x,
#                                     else python3.12 on PATH)
#                FASTCONV_CUDA_ARCHS  CUDA architectures (default 90)
#                JOBS                 parallel compile jobs (default: the number of cores)
# Build tree: build/gpu-wheel (kept: a rebuild recompiles only what changed); its venv:
# build/gpu-wheel-venv (scikit-build-core, pybind11, ninja, numpy; from the package index once).
# Time: 18 min from scratch on 2 busy cores (7 min of CPU: about 4 on 2 idle ones), a rebuild after
# small changes about 2 min (configure 30 s); the wheel is 3.7 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${FASTCONV_CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
DIST=dist/gpu
BUILD_DIR=build/gpu-wheel
VENV=build/gpu-wheel-venv
t0=$(date +%s)

. tools/source_hash.sh  # source_hash: the same hash as device_run.sh's over the carried tree

find_python() {
  if [[ -n ${FASTCONV_GPU_PYTHON:-} ]]; then echo "$FASTCONV_GPU_PYTHON"; return; fi
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  local found
  found=$(ls -d "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -1 || true)
  if [[ -n $found ]]; then echo "$found"; return; fi
  command -v python3.12 || { echo "error: no Python 3.12 (set FASTCONV_GPU_PYTHON)" >&2; exit 1; }
}

PY=$(find_python)
echo "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
command -v nvcc >/dev/null || { echo "error: nvcc is not on PATH (the wheel needs the CUDA kernels)" >&2; exit 1; }
echo "nvcc: $(nvcc --version | tail -1)"

if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import scikit_build_core, pybind11, ninja, numpy" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja numpy
fi

hash=$(source_hash)   # taken before compiling: the sources the build starts from
rm -rf "$DIST"
mkdir -p "$DIST/lib" "$BUILD_DIR"
echo "building (sm_$ARCHS, $JOBS jobs, nice 10; log: $BUILD_DIR.log) ..."
if ! PATH="$PWD/$VENV/bin:$PATH" FASTCONV_CUDA=ON FASTCONV_CUDA_ARCHS="$ARCHS" FASTCONV_CUDA_EMU=OFF \
     CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" nice -n 10 \
     "$VENV/bin/python" -m pip wheel . -v --no-deps --no-build-isolation -w "$DIST" \
       --config-settings=build-dir="$BUILD_DIR" --config-settings=cmake.define.FASTCONV_CUDA=ON \
       --config-settings=cmake.define.FASTCONV_CUDA_ARCHS="$ARCHS" >"$BUILD_DIR.log" 2>&1; then
  tail -40 "$BUILD_DIR.log"
  echo "error: the wheel build failed (full log: $BUILD_DIR.log)" >&2
  exit 1
fi
wheel=$(ls "$DIST"/fastconv-*-cp312-*.whl)
cp -L "$(gcc -print-file-name=libgomp.so.1)" "$DIST/lib/" 2>/dev/null || echo "note: no libgomp.so.1 copied"
echo "$hash" >"$DIST/SOURCE_HASH"
[[ $(source_hash) == "$hash" ]] || echo "note: sources changed while building; rebuild before carrying"
build_s=$(( $(date +%s) - t0 ))

# Check: it imports under Python 3.12 without a GPU and says so.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
vpy="$PWD/$VENV/bin/python"
"$vpy" -m pip install -q --no-deps --no-index --target "$site" "$wheel"
(cd /tmp && PYTHONPATH="$site" "$vpy" - <<'EOF'
import fastconv
from fastconv import _C
info = fastconv.info()
b = _C.build_info()
assert b["cuda_kernels"], "the wheel has no CUDA kernels"
rows = fastconv.algorithms.kernel_names("cuda")
assert rows, "no conv2d rows on device 'cuda'"
print(f"import: ok: fastconv {info['version']}, CUDA kernels {b['cuda_kernels']}, conv2d cuda rows {', '.join(rows)}")
print(f"info()['cuda']: {info['cuda']}; devices: {len(info['cuda_devices'])}")
EOF
) || { echo "error: the wheel does not import under Python 3.12" >&2; exit 1; }
if command -v cuobjdump >/dev/null; then
  so=$(ls "$site"/fastconv/_C*.so)
  echo "device code in $(basename "$so"): $(cuobjdump --list-elf "$so" 2>/dev/null | grep -o 'sm_[0-9a-z]*' \
    | sort | uniq -c | tr -s ' \n' ' ')"
fi
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1)); built in ${build_s} s; sources $(cat "$DIST/SOURCE_HASH")"
echo "carry: $DIST"
