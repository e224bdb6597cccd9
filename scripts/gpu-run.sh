#!/usr/bin/env bash
# The GPU benchmark on a bare, lent GPU machine (issue 20): run in the repository's root there, in one call
# per part of the bundle, each call carrying the next part (`python -m bench.gpu_bundle build` made them):
#
#   call 1: carry .gpu-bundle/p1   command: bash scripts/gpu-run.sh
#   call 2: carry .gpu-bundle/p2   command: bash scripts/gpu-run.sh      (within the 30 s the machine stays warm)
#   ...     the call that brings the last part unpacks the bundle and runs `python -m bench.gpu`
#
# A call that completes nothing prints which part to carry next and returns at once. The results go to
# $OUT (the folder the device tool brings back): gpu.json, BENCHMARKS-GPU.md and the run's log.
#
# Environment: GPU_COMMIT (the commit of the tree the call carries, for the report: there is no .git there),
# GPU_CARRIED (default .gpu-bundle: where this call's parts are), GPU_HOME (default /tmp/codeindex-gpu: the parts kept between calls, the unpacked bundle,
# the work), PYTHON (default python3: the image's, which holds torch), GPU_BENCH_ARGS (passed on to
# bench.gpu, e.g. --dry for the CPU dry run), OUT (default $GPU_HOME/out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GPU_HOME=${GPU_HOME:-/tmp/codeindex-gpu}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$GPU_HOME/out}
mkdir -p "$GPU_HOME" "$OUT"

STATE=$("$PYTHON" "$ROOT/bench/gpu_bundle.py" receive --carried "${GPU_CARRIED:-$ROOT/.gpu-bundle}" --home "$GPU_HOME")
echo "gpu-run: $STATE"
if ! "$PYTHON" -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["ready"] else 1)' "$STATE"; then
    echo "gpu-run: bundle incomplete; carry the next part (.gpu-bundle/pK for the first missing part above)"
    exit 0
fi

BUNDLE=$GPU_HOME/bundle
# the bundle's packages before the image's (its grpcio and protobuf are the ones the stubs need)
export PYTHONPATH=$BUNDLE/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# `orchestrator` as bench.common runs it, without an installed console script
mkdir -p "$GPU_HOME/bin"
printf '#!/bin/sh\nexec "%s" -m orchestrator "$@"\n' "$(command -v "$PYTHON")" > "$GPU_HOME/bin/orchestrator"
chmod +x "$GPU_HOME/bin/orchestrator"
export CODEINDEX_ORCHESTRATOR=$GPU_HOME/bin/orchestrator

cd "$ROOT"
# shellcheck disable=SC2086
"$PYTHON" -m bench.gpu --bundle "$BUNDLE" --manifest "$GPU_HOME/parts/manifest.json" --work "$GPU_HOME/work" --out "$OUT" ${GPU_BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/gpu-run.log"
exit "${PIPESTATUS[0]}"
