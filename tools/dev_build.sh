#!/usr/bin/env bash
# Developer build: compile fastconv._C into build/dev and copy it into python/fastconv,
# so that `PYTHONPATH=python python -m pytest` tests the working tree without a reinstall.
# Users and CI install with pip instead (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DSKBUILD_PROJECT_VERSION="$version" \
  -DFASTCONV_CUDA="${FASTCONV_CUDA:-OFF}" >/dev/null
cmake --build build/dev
cp build/dev/_C*.so python/fastconv/
