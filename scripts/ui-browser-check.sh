#!/usr/bin/env bash
# Look at the MLflow UI as a user would: run a pipeline with a prune stage and a plotting probe into a
# fresh store, start `deepscope ui`, and take headless-Chromium screenshots of the runs table, the run
# page and the probe's plot. Needs chromium (Debian: `apt-get install chromium`) and the venv of
# `make install`. Usage: bash scripts/ui-browser-check.sh [OUTDIR]   (default: ./ui-check)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-ui-check}" && cd "${1:-ui-check}" && pwd)"
BIN="$ROOT/.venv/bin"
PORT="${PORT:-5055}"
command -v chromium > /dev/null || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 2; }
cd "$OUT"
rm -rf mlflow.db mlartifacts
cat > pipeline.toml <<'TOML'
[run]
name = "ui-check"
seed = 0

[data]
use = "fashion-mnist-sample"
subset = 1000

[model]
use = "lenet-300-100"

[[stage]]
do = "prune"
use = "synflow"
compression = 10

[[stage]]
do = "train"
use = "standard"
epochs = 1

[[stage]]
do = "probe"
use = "effective-sparsity"
TOML
"$BIN/deepscope" run pipeline.toml > run.txt
RUN="$(grep -o 'run [0-9a-f]\{32\}' run.txt | head -1 | cut -d' ' -f2)"
"$BIN/deepscope" ui --port "$PORT" --store mlflow.db > ui.log 2>&1 &
UI=$!
trap 'kill -TERM $UI 2> /dev/null; wait $UI 2> /dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/" > /dev/null && break; sleep 1; done
RUNS="$(grep -o "http://127.0.0.1:$PORT/#/experiments/[0-9]*/runs?workflowType=machine_learning" ui.log | head -1)"
EXP="$(echo "$RUNS" | sed 's|.*/experiments/\([0-9]*\)/runs.*|\1|')"
shot() { chromium --headless --no-sandbox --disable-gpu --window-size=1400,1100 --virtual-time-budget=20000 \
           --screenshot="$OUT/$1" "$2" > /dev/null 2>&1; }
shot runs.png "$RUNS"
shot run.png "http://127.0.0.1:$PORT/#/experiments/$EXP/runs/$RUN?workflowType=machine_learning"
shot plot.png "http://127.0.0.1:$PORT/#/experiments/$EXP/runs/$RUN/artifacts/probe/effective-sparsity/effective_sparsity.png?workflowType=machine_learning"
ls -l "$OUT"/*.png
echo "look at runs.png (the runs table), run.png (params, metrics) and plot.png (the probe's plot)"
