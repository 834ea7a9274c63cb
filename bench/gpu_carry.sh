#!/usr/bin/env bash
# Build .devcarry/, what bench/gpu_session.sh needs on a bare GPU machine (name it in the run tool's `carry`):
# cp312 wheels the device image lacks, minilm-l6 as fp16 safetensors (the fp32 file, 90 MB, is over what
# travels), the Home Depot file, the tail-quality run caches to resume from, and a snapshot of the library
# at HEAD (so edits made while the device runs cannot change what it trains). About 57 MB.
#
#   bash bench/gpu_carry.sh            # then: run `bash bench/gpu_session.sh` with carry [".devcarry"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=.devcarry
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devcarry/' >>.git/info/exclude; }
rm -rf "$OUT" && mkdir -p "$OUT/whl" "$OUT/minilm16"

# What tailguard imports that the device image does not have (the device image's package list), at the
# versions of this venv.
for name in pydantic pydantic_core pydantic-settings annotated-types typing-inspection typing_extensions \
    python-dotenv; do
    version=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$version" ] || { echo "$name is not installed in $PY's environment" >&2; exit 2; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$OUT/whl" "$name==$version"
done

"$PY" - "$OUT/minilm16" <<'PYEOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from tailguard.model import minilm_dir
src, dst = minilm_dir(), Path(sys.argv[1])
for f in src.iterdir():
    if f.is_file() and f.suffix != ".safetensors" and f.name != "pytorch_model.bin":
        shutil.copy(f, dst / f.name)
tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in
           load_file(src / "model.safetensors").items()}
save_file(tensors, dst / "model.fp16.safetensors", metadata={"format": "pt"})
print("minilm-l6 as fp16:", dst)
PYEOF

cp ../shared/data/homedepot/dev.csv.gz "$OUT/"
# The run caches hold every run's eval scores as JSON (13 MB for 64 runs): gzip them (~4x smaller). A fresh
# checkout has the H200 runs of docs/RESULTS.md in docs/results/tail_quality_runs.tar.gz.
if ls .tailguard/tail_quality/fold*-runs.json >/dev/null 2>&1; then
    tar czf "$OUT/cache.tar.gz" -C .tailguard/tail_quality $(cd .tailguard/tail_quality && ls fold*-runs.json)
elif [ -f docs/results/tail_quality_runs.tar.gz ]; then
    cp docs/results/tail_quality_runs.tar.gz "$OUT/cache.tar.gz"
else
    echo "no run caches to resume from"
fi
mkdir -p "$OUT/src" && git archive HEAD src/tailguard | tar -x -C "$OUT"
du -sh "$OUT"
