#!/usr/bin/env bash
# One GPU device session: train_gpu.py (samples/s, MFU) then tail_quality.py (the strategy grid), all
# inside one command of at most GS_LIMIT_S seconds. Everything it needs travels in .devcarry/ (ignored,
# named in `carry`):
#   .devcarry/whl/*.whl          cp312 wheels the device image lacks (pydantic, pydantic-settings, ...)
#   .devcarry/minilm16/          minilm-l6 weights as fp16 safetensors (+ config and tokenizer files)
#   .devcarry/dev.csv.gz         the Home Depot relevance file (../shared does not travel)
#   .devcarry/src/tailguard/     optional: a snapshot of the library (e.g. `git archive HEAD src/tailguard`)
#   .devcarry/cache.tar.gz       optional: fold*-runs.json from an earlier session, to resume the grid
# bench/gpu_carry.sh builds all of it.
# Writes to $OUT as it goes (a timeout still returns what finished): session.log, train_gpu.txt,
# tail_quality.log, RESULTS.md, runs.tar.gz (the per-fold run caches and results.json).
#
#   bash bench/gpu_session.sh                         # on the device (OUT is set there)
#   GS_SKIP_TG=1 GS_LIMIT_S=400 bash bench/gpu_session.sh   # a second session: the grid only, resumed
#   OUT=/tmp/gpuout GS_DEVICE=cpu GS_PYTHON=/tmp/devsim/bin/python GS_TQ_ARGS="..." bash bench/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
: "${OUT:?set OUT to the folder that comes back}"
PY=${GS_PYTHON:-python3}
DEVICE=${GS_DEVICE:-cuda}
WORKERS=${GS_WORKERS:-12}
LIMIT_S=${GS_LIMIT_S:-540}         # the run tool's timeout_s
MARGIN_S=${GS_MARGIN_S:-45}        # end this long before LIMIT_S
RENDER_S=${GS_RENDER_S:-60}        # kept after the last run for comparisons and the page
TG_TIMEOUT=${GS_TG_TIMEOUT:-90}    # hard cap on train_gpu.py
TG_ARGS=${GS_TG_ARGS:---steps 60 --batch-size 128 --max-length 128}
TQ_ARGS=${GS_TQ_ARGS:---strategies all,augment_rows --seeds 0,1,2 --folds 0,1,2,3,4 --train-rows 0 --eval-rows 0 \
--epochs 8 --patience 2 --batch-size 128 --lr 1e-4 --max-length 48}
BASE_LABEL="minilm-l6 (fp16-rounded copy upcast to fp32)"
WORK=/tmp/tq_work
T0=$(date +%s)
END=$((T0 + LIMIT_S - MARGIN_S))
mkdir -p "$OUT"
log() { echo "[gpu_session +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/session.log"; }
snapshot() {  # the run caches so far -> $OUT/runs.tar.gz (written beside, then copied in whole)
    [ -d "$WORK" ] || return 0
    (cd "$WORK" && tar czf /tmp/runs.tar.gz --ignore-failed-read ./*.json 2>/dev/null) &&
        cp /tmp/runs.tar.gz "$OUT/runs.tar.gz.part" && mv "$OUT/runs.tar.gz.part" "$OUT/runs.tar.gz"
}

log "start; device $DEVICE, workers $WORKERS, limit ${LIMIT_S}s, end by +$((END - T0))s"
if [ -d .devcarry/src/tailguard ]; then
    rm -rf src/tailguard && cp -r .devcarry/src/tailguard src/ && log "using the library snapshot .devcarry/src"
fi
if ls .devcarry/whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .devcarry/whl/*.whl 2>&1 | tee -a "$OUT/session.log" || { log "wheel install FAILED"; exit 3; }
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
{ nvidia-smi 2>&1 || true; } | tee -a "$OUT/session.log"
"$PY" - 2>&1 <<'EOF' | tee -a "$OUT/session.log"
import platform, sys, torch, transformers, pandas, numpy
print("python", sys.version.split()[0], platform.machine(), "| torch", torch.__version__, "| cuda",
      torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "| transformers", transformers.__version__, "| pandas", pandas.__version__, "| numpy", numpy.__version__)
import tailguard.balance, tailguard.contract, tailguard.data, tailguard.metrics, tailguard.model  # noqa
print("tailguard imports ok from", tailguard.model.__file__)
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { log "import check FAILED"; exit 4; }

# minilm-l6 travels as fp16 safetensors (half the size); train from an fp32 copy of it.
"$PY" - 2>&1 <<'EOF' | tee -a "$OUT/session.log"
import shutil
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(".devcarry/minilm16"), Path("/tmp/minilm")
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.suffix != ".safetensors":
        shutil.copy(f, dst / f.name)
sd = load_file(src / "model.fp16.safetensors")
sd = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})
print("base: /tmp/minilm,", len(sd), "tensors,", sum(v.numel() for v in sd.values()) / 1e6, "M params")
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { log "base conversion FAILED"; exit 5; }

if [ "${GS_SKIP_TG:-0}" = 1 ]; then
    log "train_gpu.py skipped (GS_SKIP_TG=1)"
else
    log "train_gpu.py $TG_ARGS (timeout ${TG_TIMEOUT}s)"
    # shellcheck disable=SC2086
    timeout -k 5 "$TG_TIMEOUT" "$PY" bench/train_gpu.py $TG_ARGS 2>&1 | tee "$OUT/train_gpu.txt"
    log "train_gpu.py rc ${PIPESTATUS[0]}"
fi
# Resume the grid: run caches from an earlier session travel in .devcarry/cache (same options = reused).
if [ -f .devcarry/cache.tar.gz ]; then
    mkdir -p "$WORK" && tar xzf .devcarry/cache.tar.gz -C "$WORK" && log "resuming from .devcarry/cache.tar.gz"
elif ls .devcarry/cache/fold*-runs.json >/dev/null 2>&1; then
    mkdir -p "$WORK" && cp .devcarry/cache/fold*-runs.json "$WORK/" && log "resuming from .devcarry/cache"
fi

LEFT=$((END - $(date +%s)))
BUDGET_S=$((LEFT - RENDER_S - 20))  # 20 s: loading the data and starting the workers
BUDGET_MIN=$(awk "BEGIN {printf \"%.2f\", $BUDGET_S / 60}")
log "tail_quality.py: ${LEFT}s left; budget ${BUDGET_MIN} min for runs"
if [ "$BUDGET_S" -gt 30 ]; then
    (while sleep 20; do snapshot; done) &
    SNAP=$!
    # shellcheck disable=SC2086
    timeout -k 10 "$((LEFT - 10))" "$PY" bench/tail_quality.py --device "$DEVICE" --workers "$WORKERS" \
        --budget-minutes "$BUDGET_MIN" --base /tmp/minilm --base-label "$BASE_LABEL" \
        --data .devcarry/dev.csv.gz --work "$WORK" --out "$OUT/RESULTS.md" $TQ_ARGS \
        >"$OUT/tail_quality.log" 2>&1
    RC=$?
    kill "$SNAP" 2>/dev/null
    wait "$SNAP" 2>/dev/null
    log "tail_quality.py rc $RC"
    grep -E "^tail per-query AUC lift|^Grid asked|^- fold" "$OUT/tail_quality.log" | tee -a "$OUT/session.log"
else
    log "no time left for tail_quality.py"
fi
snapshot
log "done"
