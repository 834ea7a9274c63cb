#!/usr/bin/env bash
# Issue #18's GPU grid as one command: the round-two recipes trained by bench/tail_quality.py (the library's
# recipes from policies/recipes.yaml, trained as the retrain flow trains: compact rebalance, the flow's
# TrainConfig, recipes.train_candidate), then bench/tail_round2.py's pre-registered statistic (tail lift
# minus overall lift of per-query ROC AUC, paired bootstrap over queries pooled over seeds and folds) on
# their cached eval scores, beside the seed ensemble and hybrid computed from the baseline's seeds.
#
#   bash bench/gpu_carry.sh            # here, once: .devcarry/ (wheels, minilm-l6 fp16, data, library)
#   then on a lent device: run(command="bash bench/gpu_round2.sh", carry=[".devcarry"], timeout_s=560)
#
# The baseline is `none` (the converged MiniLM cross-encoder of docs/RESULTS.md round one); a resumed
# session (.devcarry/cache.tar.gz from an earlier runs.tar.gz) skips every run already cached with the same
# options. Writes to $OUT: session.log, tail_quality.log, RESULTS.md, runs.tar.gz, round2.md, round2.json.
# Dry run on the CPU (a few rows):
#   OUT=/tmp/r2 GS_DEVICE=cpu GS_WORKERS=1 GS_PYTHON=.venv/bin/python GR_FOLDS=0 GR_SEEDS=0 \
#   GR_ROWS="--train-rows 3000 --eval-rows 1500" GR_EPOCHS=1 bash bench/gpu_round2.sh
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
RECIPES=${GR_RECIPES:-graded,graded_pairwise,hybrid,distilled3}
FOLDS=${GR_FOLDS:-0,1,2,3,4}
SEEDS=${GR_SEEDS:-0,1,2}
ROWS=${GR_ROWS:---train-rows 0 --eval-rows 0}
EPOCHS=${GR_EPOCHS:-8}
# The statistic needs ~60 s after the grid (data load, cross-fitted hybrids, 2000 resamples).
export GS_MARGIN_S=${GS_MARGIN_S:-120}
export GS_SKIP_TG=${GS_SKIP_TG:-1}
export GS_TQ_ARGS="--strategies none,$RECIPES --seeds $SEEDS --folds $FOLDS $ROWS --epochs $EPOCHS \
--patience 2 --batch-size 128 --lr 1e-4 --max-length 48"
bash bench/gpu_session.sh
PY=${GS_PYTHON:-python3}
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:$PWD/src || export PYTHONPATH=$PWD/src
DATA=.devcarry/dev.csv.gz
[ -f "$DATA" ] || DATA=${GR_DATA:-../shared/data/homedepot/dev.csv.gz}
# shellcheck disable=SC2086
timeout -k 5 "${GR_STAT_TIMEOUT:-110}" "$PY" bench/tail_round2.py --data "$DATA" --work /tmp/tq_work \
    --folds "$FOLDS" --seeds "$SEEDS" $ROWS --trained "$RECIPES" --json "$OUT/round2.json" \
    >"$OUT/round2.md" 2>&1
echo "tail_round2.py rc $? (table in round2.md)" | tee -a "$OUT/session.log"
