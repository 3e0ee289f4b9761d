#!/usr/bin/env bash
# device_run.sh: one call on the GPU machine a session may be lent (see the developers'
# guide): install fastconv there with CUDA enabled (Python 3.12, torch with CUDA, no
# package registry: --no-build-isolation), run the whole test suite, then time on that
# quiet machine: the CPU layers pinned to 2 cores (as the 2-core development machine
# runs them) and cuDNN's table on the GPU. Everything lands in $OUT; a short summary is
# printed last.
#   usage (device tool): bash tools/device_run.sh [extra CPU bench arguments]
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/fastconv-device}
mkdir -p "$OUT"
{ lscpu; nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
  >"$OUT/machine.txt" 2>&1
t0=$(date +%s)
python3 -m pip install -q --no-build-isolation . >"$OUT/install.log" 2>&1 || { tail -40 "$OUT/install.log"; exit 1; }
echo "install: $(( $(date +%s) - t0 )) s"
cd /tmp  # import the installed package, not the source tree
python3 -c "import fastconv, json; print(json.dumps(fastconv.info()))" | tee "$OUT/info.json"
cd - >/dev/null

t0=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider >"$OUT/tests.txt" 2>&1
echo "tests (rc $?): $(( $(date +%s) - t0 )) s: $(tail -1 "$OUT/tests.txt")"

t0=$(date +%s)
taskset -c 0,1 timeout 270 python3 -m fastconv bench --threads 2 --no-progress --json "$OUT/cpu.json" \
  --peers torch torch-prepacked nnpack "$@" >"$OUT/cpu.txt" 2>&1
echo "cpu bench (rc $?): $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
timeout 60 python3 -m fastconv bench --device cuda --no-progress --json "$OUT/cuda.json" >"$OUT/cuda.txt" 2>&1
echo "cuda bench (rc $?): $(( $(date +%s) - t0 )) s"
grep -E "Model name|^\|.*NVIDIA" "$OUT/machine.txt" | head -3
grep -A30 "^summary" "$OUT/cpu.txt" | head -30
grep -A10 "^summary" "$OUT/cuda.txt" | head -10
