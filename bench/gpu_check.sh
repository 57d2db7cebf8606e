#!/usr/bin/env bash
# One measurement run on a lent GPU machine (issue 17 item 4): π0 / π0.5 chunk latency, training step
# time and memory (LoRA, expert-only), built-in collection with a full-size policy, then full FSDP
# through the CLI (bench/gpu_check.py says what each figure is). bench/README.md gives the device call.
#
#   bash bench/gpu_check.sh             on the GPU machine; figures in $OUT/figures.jsonl
#   bash bench/gpu_check.sh --dry-run   anywhere: the tiny presets on the CPU, the same steps
#
# It stops itself after GPU_CHECK_LIMIT_S seconds (300), install included; every figure is written
# the moment it is measured, so a stopped run keeps what it had. That machine has no network: zarr
# and its dependencies come from the carried wheelhouse (`make wheelhouse`, WHEELHOUSE=.whl), which
# goes into a scratch folder beside the machine's own packages (--no-deps: its CUDA torch stays),
# and cfgrl is imported from this tree (PYTHONPATH), which is what an editable install would do.
# PYTHON picks the interpreter (python3: on the GPU machine, the one with CUDA torch).
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT_S=${GPU_CHECK_LIMIT_S:-300}
PYTHON=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-.whl}
OUT=${OUT:-/tmp/cfgrl-gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"

site=$(mktemp -d /tmp/cfgrl-site.XXXXXX)
shopt -s nullglob
wheels=("$WHEELHOUSE"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "gpu_check: no wheels in $WHEELHOUSE: run 'make wheelhouse' here and carry $WHEELHOUSE" | tee -a "$LOG"
  exit 1
fi
"$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
  --target "$site" "${wheels[@]}" 2>&1 | tee -a "$LOG" || { echo "gpu_check: installing $WHEELHOUSE failed" | tee -a "$LOG"; exit 1; }
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

left=$((LIMIT_S - SECONDS))
# the driver starts no step in its last 20 s; timeout ends it (and every process it started) at the limit
timeout -k 5 "$left" "$PYTHON" bench/gpu_check.py --out "$OUT" --budget-s $((left - 20)) "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "gpu_check: stopped at the ${LIMIT_S} s limit; figures so far in $OUT/figures.jsonl" | tee -a "$LOG"
rm -rf "$site"
exit "$status"
