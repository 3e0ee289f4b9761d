#!/usr/bin/env bash
# format.sh: clang-format over the C++/CUDA sources under csrc/ with the repository's .clang-format.
#   tools/format.sh            rewrite the files in place
#   tools/format.sh --check    change nothing: clang-format's dry run with -Werror names every place that
#                              would change, then a count of the lines per file; exit status 1 if any would
# Needs clang-format 23 (`pip install ".[test]"` installs it): other major versions format some
# constructs differently, so a different one is refused rather than trusted.
set -euo pipefail
cd "$(dirname "$0")/.."

want_major=23
mode=fix
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: tools/format.sh [--check]" >&2; exit 2 ;;
esac

if ! command -v clang-format >/dev/null; then
  echo "format.sh: clang-format not found; pip install 'clang-format==23.*'" >&2
  exit 2
fi
version=$(clang-format --version)
major=$(sed -E 's/.*version ([0-9]+)\..*/\1/' <<<"$version")
if [[ "$major" != "$want_major" ]]; then
  echo "format.sh: need clang-format $want_major, found: $version" >&2
  exit 2
fi

mapfile -t files < <(git ls-files -- 'csrc/*.cpp' 'csrc/*.h' 'csrc/*.cu' 'csrc/*.cuh')
if [[ "$mode" == fix ]]; then
  clang-format -i --style=file -- "${files[@]}"
  exit 0
fi

status=0
clang-format --dry-run -Werror --style=file -- "${files[@]}" || status=1
if [[ $status -ne 0 ]]; then
  # The dry run's warnings are per replacement; count what a reader sees: the lines each file loses
  # and gains.
  total=0
  for f in "${files[@]}"; do
    n=$(clang-format --style=file -- "$f" | diff -U0 -- "$f" - | grep -c '^[-+][^-+]' || true)
    if [[ "$n" -gt 0 ]]; then
      echo "$f: $n lines differ"
      total=$((total + n))
    fi
  done
  echo "format.sh --check: $total lines differ from .clang-format's style; run tools/format.sh to fix" >&2
fi
exit $status
