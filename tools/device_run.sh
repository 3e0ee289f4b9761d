#!/usr/bin/env bash
# device_run.sh: one call on the GPU machine a session may be lent (issue 18 item 6). Nothing is
# compiled there: the wheel comes built from this machine (tools/build_gpu_wheel.sh: Python 3.12,
# CUDA for sm_90, in dist/gpu, carried). It installs that wheel (pip --no-deps --no-index), runs the
# CUDA tests of the carried tree (pytest -m cuda), compute-sanitizer's memcheck, racecheck and initcheck over
# every CUDA kernel once (python -m fastconv.bench.smoke: small odd-sized problems), then the GPU
# benchmark (python -m fastconv bench --device cuda): ResNet-50 and VGG-16 layers at batch 1 and 8
# against cuDNN, conv2d_backward at batch 8 against autograd's cuDNN backward, the 4096^3 SGEMM
# against cuBLAS, pooling forward/backward against torch with the device-to-device copy roofline,
# and issue 21's layers at batch 32 against the torch code a user writes (locally connected / tiled
# convolution vs unfold + einsum / bmm, distance-weighted pooling vs a depthwise conv2d).
# Each step runs under its own timeout, trimmed so that the whole run stays within BUDGET_S
# (default 450 s); elapsed times are printed. Everything lands in $OUT (at most 8 files, the card's
# name in the benchmark files): run.log (this output: machine, steps, tables), tests.txt,
# sanitizer.txt, <card>_conv.json, <card>_backward.json, <card>_sections.json (gemm, pool, local,
# weighted; partial if a step was cut short) and <card>_results.md (every table as Markdown); a
# short summary is printed last.
#   usage: here:        bash tools/build_gpu_wheel.sh      (prints the path to carry: dist/gpu)
#          device tool: run(command="bash tools/device_run.sh", carry=["dist/gpu"], timeout_s=540)
#          extra arguments are passed to the convolution benchmark (e.g. --algorithms im2col auto)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/fastconv-device}
BUDGET=${BUDGET_S:-450}
WHEELS=dist/gpu
SITE=/tmp/fastconv-site
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
T0=$(date +%s)

# step [--to FILE] NAME SECONDS COMMAND...: run COMMAND under `timeout` (its output to FILE, appended,
# if given), the limit trimmed to what is left of the budget; prints its exit status and elapsed
# time. Never stops the script.
step() {
  local to=/dev/stdout
  if [[ $1 == --to ]]; then
    to=$2
    shift 2
  fi
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - T0)))
  if ((left < 15)); then
    echo "== $name: skipped (the ${BUDGET} s budget is spent)"
    return 0
  fi
  ((limit > left)) && limit=$left
  local t
  t=$(date +%s)
  echo "== $name (limit ${limit} s; at $((t - T0)) s)"
  timeout -k 10 "$limit" "$@" >>"$to" 2>&1
  local rc=$?
  echo "== $name: rc $rc$( ((rc == 124 || rc == 137)) && echo ' (timed out)'), $(($(date +%s) - t)) s"
  return 0
}

. tools/source_hash.sh  # source_hash: the same hash as build_gpu_wheel.sh's: the wheel is this tree's or stale

main() {
# ---- machine ------------------------------------------------------------------------------------
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
  --format=csv 2>&1 | head -3
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
CARD=$(echo "${CARD:-unknown GPU}" | tr -c 'A-Za-z0-9._-' '_' | sed 's/_*$//')
python3 -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version(), '|', torch.cuda.get_device_name())"
echo "card: $CARD; cores: $(nproc); budget: ${BUDGET} s"

# ---- install the carried wheel --------------------------------------------------------------------
wheel=$(ls "$WHEELS"/fastconv-*-cp312-*.whl 2>/dev/null | head -1)
if [[ -z $wheel ]]; then
  echo "error: no wheel in $WHEELS: run tools/build_gpu_wheel.sh here and carry $WHEELS"
  exit 1
fi
if [[ -f $WHEELS/SOURCE_HASH && $(cat "$WHEELS/SOURCE_HASH") != "$(source_hash)" ]]; then
  echo "WARNING: $wheel was built from other sources than this tree (rebuild: tools/build_gpu_wheel.sh)"
fi
step install 40 python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --upgrade "$wheel"
export PYTHONPATH=$SITE
check_import() { (cd /tmp && python3 -c "import fastconv, json; print(json.dumps(fastconv.info()['cuda_devices']))"); }
if ! check_import; then
  echo "note: retrying with the carried libgomp ($WHEELS/lib)"
  export LD_LIBRARY_PATH=$PWD/$WHEELS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  check_import || { echo "error: the installed wheel does not import"; exit 1; }
fi

# ---- tests: every test marked cuda, in the carried tree, against the installed wheel -----------------
xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 8)
step --to "$OUT/tests.txt" "pytest -m cuda" 100 python3 -m pytest tests -m cuda -q -p no:cacheprovider \
  "${xdist[@]}"
tail -3 "$OUT/tests.txt"

# ---- compute-sanitizer: each CUDA kernel once (torch's caching allocator off: exact bounds) ---------
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck initcheck; do  # initcheck: no kernel reads memory nothing wrote
  echo "==== $tool" >>"$OUT/sanitizer.txt"
  step --to "$OUT/sanitizer.txt" "compute-sanitizer $tool" 45 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" \
    --tool "$tool" --error-exitcode 86 --print-limit 20 python3 -m fastconv.bench.smoke --device cuda --quiet
  sed -n "/^==== $tool/,\$p" "$OUT/sanitizer.txt" | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^smoke|FAIL" | head -5
done

# ---- benchmarks (each --json is rewritten after every layer: a step cut short keeps its layers) -------
bench=(python3 -m fastconv bench --device cuda --no-progress --warmup 2 --repeats 15 --min-time 0.2 --max-time 2)
step "bench conv" 100 "${bench[@]}" -n resnet50 vgg16 -b 1 8 --json "$OUT/${CARD}_conv.json" "$@"
# one process for the small sections (torch's CUDA start-up once): gemm and pool ~30 s, local and
# weighted (20 comparisons, ~0.3 s each at --min-time 0.2) ~15 s more
step "bench gemm pool local weighted" 75 "${bench[@]}" --sections gemm pool local weighted \
  --json "$OUT/${CARD}_sections.json"
step "bench backward" 70 "${bench[@]}" --warmup 1 -n resnet50 vgg16 -b 8 --sections backward \
  --json "$OUT/${CARD}_backward.json"

# ---- Markdown of every table, and the summary ----------------------------------------------------------
BUDGET=$((BUDGET + 30))   # the report's own allowance
md=$OUT/${CARD}_results.md
: >"$md"
for part in conv sections backward; do
  js=$OUT/${CARD}_$part.json
  [[ -f $js ]] || continue
  rm -f "/tmp/fastconv-$part.md"
  step --to /dev/null "markdown $part" 20 python3 -m fastconv bench --load "$js" --markdown "/tmp/fastconv-$part.md"
  cat "/tmp/fastconv-$part.md" >>"$md" 2>/dev/null
done
echo
echo "== summary ($CARD, $(($(date +%s) - T0)) s)"
tail -1 "$OUT/tests.txt"
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|^smoke cuda" "$OUT/sanitizer.txt"
# each section's title (cut short) above its geometric means
grep -hE "^  (resnet50|vgg16) batch|^GPU peak|WRONG|^## (GEMM|Pooling|Locally|Distance)|^\| (4096×|\*\*geometric)" \
  "$OUT/run.log" | cut -c1-110 | head -32
ls -la "$OUT"
}

main "$@" 2>&1 | tee -a "$OUT/run.log"
exit "${PIPESTATUS[0]}"
