#!/usr/bin/env bash
# One short session on a GPU machine checks everything: the GPU tests, then every benchmark on CUDA.
# Usage: bash benchmarks/device-check.sh OUTDIR   (results and logs land in OUTDIR)
set -uo pipefail
out="${1:?usage: device-check.sh OUTDIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONUNBUFFERED=1 DEEPSCOPE_STRICT_PLUGINS=1
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
status=0
"$py" -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log" || status=1
for bench in benchmarks/bench_*.py; do
  name=$(basename "$bench" .py)
  echo "== $name" | tee -a "$out/benchmarks.log"
  args=()
  if "$py" "$bench" --help 2>/dev/null | grep -q -- "--device"; then
    args=(--device cuda)
  else
    echo "($name has no --device option: it measures the CPU path only)" | tee -a "$out/benchmarks.log"
  fi
  "$py" "$bench" "${args[@]}" 2>&1 | tee "$out/$name.txt" | tee -a "$out/benchmarks.log" || status=1
done
exit $status
