#!/usr/bin/env bash
# The GPU benchmark's CPU dry run (make bench-gpu-dry): what a lent GPU machine would do, here.
#
# 1. builds the bundle for this machine's Python (python -m bench.gpu_bundle build), in parts sized as for
#    the GPU machine;
# 2. makes a virtualenv that stands for the GPU machine's image: only the packages the bundle leaves to the
#    image (bundle.json's "image": torch, sentence-transformers, numpy, pyarrow, ...), installed with their
#    own dependencies, and nothing of codeindex (cached under bench/.cache/gpu-dry/image while the list
#    stays the same);
# 3. runs scripts/gpu-run.sh once per part, as the calls would, each with that part alone carried, with
#    that virtualenv's python and --dry: the last call unpacks the bundle and runs bench.gpu on the CPU.
# Passes when the last call writes gpu.json and BENCHMARKS-GPU.md (into bench/.cache/gpu-dry/out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
DRY=$ROOT/bench/.cache/gpu-dry
IMAGE=$DRY/image
PARTS=$DRY/parts
rm -rf "$PARTS" "$DRY/home" "$DRY/out" "$DRY/calls"
mkdir -p "$DRY"

VERSION=$("$PY" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
"$PY" -m bench.gpu_bundle build --python "$VERSION" --dest "$PARTS"
# the image: its packages at the versions the bundle was made against; torch alone first (its CPU wheel)
WANT=$("$PY" - "$PARTS/p1/manifest.json" <<'PYEOF'
import json, sys
image = json.load(open(sys.argv[1]))["content"]["image"]
print(" ".join(f"{name}=={version.split('+')[0]}" for name, version in image.items()))
PYEOF
)
if [[ ! -f $IMAGE/.stamp || $(cat "$IMAGE/.stamp") != "$WANT" ]]; then
    rm -rf "$IMAGE"
    "$PY" -c 'import sys, venv; venv.create(sys.argv[1], with_pip=True)' "$IMAGE"
    TORCH=$(tr ' ' '\n' <<<"$WANT" | grep '^torch==')
    "$IMAGE/bin/python" -m pip install -q --disable-pip-version-check "$TORCH"
    # shellcheck disable=SC2086
    "$IMAGE/bin/python" -m pip install -q --disable-pip-version-check "$TORCH" $WANT
    echo "$WANT" > "$IMAGE/.stamp"
fi

N=$(find "$PARTS" -mindepth 1 -maxdepth 1 -name 'p*' -type d | wc -l)
for K in $(seq 1 "$N"); do
    CALL=$DRY/calls/$K
    mkdir -p "$CALL"
    ln -s "$PARTS/p$K" "$CALL/p$K"
    echo "gpu-dry-run: call $K of $N, carrying p$K ($(du -shL "$PARTS/p$K" | cut -f1))"
    GPU_CARRIED=$CALL GPU_HOME=$DRY/home OUT=$DRY/out PYTHON=$IMAGE/bin/python GPU_BENCH_ARGS=--dry \
        bash "$ROOT/scripts/gpu-run.sh"
done
[[ -s $DRY/out/gpu.json && -s $DRY/out/BENCHMARKS-GPU.md ]] || { echo "gpu-dry-run: no results" >&2; exit 1; }
echo "gpu-dry-run: passed; the results of the dry run are in $DRY/out"
