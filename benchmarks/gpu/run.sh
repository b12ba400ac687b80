#!/usr/bin/env bash
# infermeter on a real GPU, end to end, in one command (BENCHMARKS.md, "H100"):
#
#   benchmarks/gpu/run.sh OUTDIR
#
# installs infermeter from this working tree (plus wheels from $INFERMETER_WHEELS, default
# .whl/, for a machine without network: see benchmarks/gpu/wheels.txt), makes a random-weight
# Llama-3.1-8B-shaped model, lets `infermeter sweep` launch `transformers serve
# --continuous-batching` and run the reduced seed experiments (experiment.yaml) with GPU
# telemetry, runs the client self-check, writes the report, and prints a summary table last.
# Budget: INFERMETER_GPU_BUDGET_S seconds (default 420); the sweep is interrupted (its finished
# cells kept) when less than the time needed for the self-check and the report is left.  Run it
# again with the same OUTDIR to resume: the finished cells are kept, the rest run.
# INFERMETER_GPU_REHEARSAL=1 runs the same pipeline on CPU with a tiny model of the same structure.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
BUDGET=${INFERMETER_GPU_BUDGET_S:-420}
WHEELS=${INFERMETER_WHEELS:-$ROOT/.whl}
WORK=${TMPDIR:-/tmp}/infermeter-gpu
PY=${PYTHON:-python3}
if [ "${INFERMETER_GPU_REHEARSAL:-0}" = 1 ]; then SHAPE=tiny DEVICE=cpu VENDOR=cpu; else SHAPE=llama-3.1-8b DEVICE=cuda VENDOR=nvidia; fi
LOG=$OUT/run.log
: >>"$LOG"
step() { printf '[%4ds] %s\n' "$SECONDS" "$*" | tee -a "$LOG"; }
quiet() { "$@" >>"$LOG" 2>&1 || { echo "failed: $* (see $LOG)"; tail -n 30 "$LOG"; exit 1; }; }

step "install infermeter from $ROOT into $WORK/site"
rm -rf "$WORK" && mkdir -p "$WORK/site" "$WORK/hf-hub"
WHL=()
compgen -G "$WHEELS/*.whl" >/dev/null && WHL=("$WHEELS"/*.whl)
# one install (a second --target install would not replace the first one's bin/)
quiet "$PY" -m pip install --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
  --target "$WORK/site" "${WHL[@]}" "$ROOT"
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$WORK/site/bin:$PATH"
infermeter() { "$PY" -m infermeter "$@"; }  # this install, whatever else is on PATH
export HF_HUB_CACHE="$WORK/hf-hub" HF_HUB_OFFLINE=1 INFERMETER_CACHE="$WORK/cache" PYTHONUNBUFFERED=1
TF_BIN=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")/transformers
[ -x "$TF_BIN" ] || TF_BIN=$(command -v transformers || true)
if [ -z "$TF_BIN" ]; then  # no console script: the same entry point through this python
  TF_BIN=$WORK/bin/transformers
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\nexec "%s" -c "import sys; from transformers.cli.transformers import main; sys.exit(main())" "$@"\n' "$PY" >"$TF_BIN"
  chmod +x "$TF_BIN"
fi
"$PY" - <<'PY' | tee "$OUT/machine.txt" | tee -a "$LOG"
import os, platform, torch, transformers, infermeter
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"machine: {platform.node()} {os.cpu_count()} cores; GPU {gpu}; python {platform.python_version()}; "
      f"torch {torch.__version__}; transformers {transformers.__version__}; infermeter {infermeter.__version__}")
PY
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,power.limit --format=csv >>"$OUT/machine.txt" 2>&1 || true
fi

step "make the $SHAPE model (random bf16 weights, infermeter's tokenizer)"
TOK=$("$PY" -c 'from infermeter.embedded.tokenizer import ensure_tokenizer; print(ensure_tokenizer()[0])' 2>>"$LOG")
"$PY" "$HERE/make_model.py" --tokenizer "$TOK" --out "$WORK/model" --shape "$SHAPE" --device "$DEVICE" 2>>"$LOG" | tee -a "$LOG"

step "sweep: infermeter launches transformers serve and runs $HERE/experiment.yaml"
sed -e "s#@MODEL@#$WORK/model#g" -e "s#@OUTPUT@#$OUT/experiment#g" -e "s#@VENDOR@#$VENDOR#g" \
    -e "s#@EXECUTABLE@#$TF_BIN#g" "$HERE/experiment.yaml" >"$OUT/experiment.yaml"
LEFT=$(( BUDGET - SECONDS - 75 ))   # keep 75 s for the self-check, the report and the summary
[ "$LEFT" -ge 30 ] || LEFT=30
rc=0
RESUME=()
[ -f "$OUT/experiment/experiment.json" ] && RESUME=(--resume)  # run again on the same OUTDIR: the cells left
timeout -s INT -k 30 "$LEFT" "$PY" -m infermeter sweep "$OUT/experiment.yaml" "${RESUME[@]}" --disable-tqdm >>"$LOG" 2>&1 || rc=$?
step "sweep exit code $rc (0 all cells done; 5 some failed or pending; 124/130 stopped at the time budget)"

step "client self-check"
infermeter selfcheck --grid 1:5,16:5,64:5,256:5,256:1 --json "$OUT/selfcheck.json" >"$OUT/selfcheck.txt" 2>&1 || true
cat "$OUT/selfcheck.txt" >>"$LOG"

step "report"
infermeter report "$OUT/experiment" -o "$OUT/report" >>"$LOG" 2>&1 || echo "report failed (see $LOG)"

step "summary"
"$PY" "$HERE/summary.py" "$OUT" | tee "$OUT/summary.md"
