#!/usr/bin/env bash
# Issue 19 in one device command: training samples/s + MFU (bench/train_gpu.py: bert-base seq 128, MiniLM-L6
# seq 48 eager / compiled + length bucketing / HF Trainer, a torch.profiler table) and scoring pairs/s
# (bench/score_gpu.py), each under its own timeout; every table lands in $OUT as soon as it exists, so a
# timeout still returns what finished.
#
#   bash bench/gpu_efficiency.sh --prepare    # HERE, once: cp312 wheels the device image lacks -> .effcarry/whl
#   bash bench/gpu_efficiency.sh              # ON THE DEVICE: run tool, carry [".effcarry"], timeout_s 540
#   DEVICE=cpu TINY=1 OUT=/tmp/eff PY=.venv/bin/python bash bench/gpu_efficiency.sh   # CPU dry run (smoke)
#
# The device has no network: tailguard's pure-Python needs (pydantic and friends, at this venv's versions)
# travel as wheels in .effcarry/whl (~2.5 MB) and install into /tmp/site. torch, transformers, accelerate,
# pandas, numpy, safetensors, tokenizers and tqdm are in the device image. Models are random-init
# BERTs of the benchmarked shapes built on the device: no weights travel.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
CARRY=.effcarry
WHEELS="pydantic pydantic_core pydantic-settings annotated-types typing-inspection typing_extensions python-dotenv"

if [ "${1:-}" = "--prepare" ]; then
    PY=${PY:-.venv/bin/python}
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >>.git/info/exclude
    rm -rf "$CARRY" && mkdir -p "$CARRY/whl"
    for name in $WHEELS; do
        version=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
        [ -n "$version" ] || { echo "$name is not installed in $PY's environment" >&2; exit 2; }
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$CARRY/whl" "$name==$version" || exit 2
    done
    du -sh "$CARRY"
    echo "now: run tool, command 'bash bench/gpu_efficiency.sh', carry [\"$CARRY\"], timeout_s 540"
    exit 0
fi

: "${OUT:?set OUT to the folder that comes back}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-330}   # bert-base x2 (one compiles: ~1 min) + MiniLM x3 + profile
SCORE_TIMEOUT=${SCORE_TIMEOUT:-120}
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[gpu_efficiency +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/session.log"; }

if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$CARRY"/whl/*.whl 2>&1 | tee -a "$OUT/session.log" || { log "wheel install FAILED"; exit 3; }
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
{ nvidia-smi 2>&1 || true; } | head -15 >>"$OUT/session.log"
"$PY" - 2>&1 <<'EOF' | tee -a "$OUT/session.log"
import platform, sys, torch, transformers
print("python", sys.version.split()[0], platform.machine(), "| torch", torch.__version__, "| cuda",
      torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "| transformers", transformers.__version__)
import tailguard.model  # noqa: F401
print("tailguard.model imports ok from", tailguard.model.__file__)
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { log "import check FAILED"; exit 4; }

EXTRA=()
if [ "$TINY" = 1 ]; then
    EXTRA+=(--tiny)
fi
BACKEND=inductor
if [ "$DEVICE" = cpu ]; then
    BACKEND=eager # inductor on 2 shared CPU cores compiles for minutes; 'eager' still runs the compile path
fi

log "train_gpu.py (timeout ${TRAIN_TIMEOUT}s)"
timeout -k 5 "$TRAIN_TIMEOUT" "$PY" bench/train_gpu.py --device "$DEVICE" --compile-backend "$BACKEND" \
    --out "$OUT" "${EXTRA[@]}" >"$OUT/train_gpu.log" 2>&1
log "train_gpu.py rc $?"
log "score_gpu.py (timeout ${SCORE_TIMEOUT}s)"
timeout -k 5 "$SCORE_TIMEOUT" "$PY" bench/score_gpu.py --device "$DEVICE" --out "$OUT" "${EXTRA[@]}" \
    >"$OUT/score_gpu.log" 2>&1
log "score_gpu.py rc $?"

{
    echo "# GPU efficiency (issue 19): \`DEVICE=$DEVICE TINY=$TINY bash bench/gpu_efficiency.sh\`"
    echo
    cat "$OUT/train_gpu.md" 2>/dev/null || echo "(train_gpu.py wrote no table: see train_gpu.log)"
    echo
    cat "$OUT/score_gpu.md" 2>/dev/null || echo "(score_gpu.py wrote no table: see score_gpu.log)"
    echo
    echo '```'
    head -32 "$OUT/profile_train.txt" 2>/dev/null || echo "(no profile)"
    echo '```'
} >"$OUT/RESULTS.md"
log "done: $OUT/RESULTS.md"
