# source_hash.sh: sourced by tools/build_gpu_wheel.sh (here) and tools/device_run.sh (on the GPU
# machine), so both hash the sources alike: the wheel carried to the GPU is this tree's, or stale.
# Run from the repository root; prints 16 hex digits.
source_hash() {
  find csrc python/fastconv CMakeLists.txt pyproject.toml -type f \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.py' -o -name '*.pyi' \
       -o -name '*.txt' -o -name '*.toml' \) -not -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
