#!/usr/bin/env bash
# Start NVIDIA Triton Inference Server from .venv-triton (scripts/setup-triton-venv.sh) on the
# model repository in deploy/triton/model_repository: gRPC only, bound to loopback, in the
# foreground (exec: signals reach tritonserver itself; SIGINT/SIGTERM stop it gracefully).
#
#   scripts/triton-serve.sh [--grpc-port N] [--model-repository DIR] [--address HOST]
#                           [--http-port N] [--metrics-port N] [--gpu] [--log-verbose N] [-- TRITONSERVER-ARGS...]
#
#   --grpc-port N          gRPC port (default 8001); the embed service's --triton-url is HOST:N
#   --model-repository DIR (default deploy/triton/model_repository)
#   --address HOST         address every endpoint binds (default 127.0.0.1; 0.0.0.0 to serve others)
#   --http-port N          also serve Triton's HTTP/REST API on port N (default: off)
#   --metrics-port N       also serve Prometheus metrics on port N (default: off)
#   --gpu                  the models' GPU configs (<model>/configs/gpu.pbtxt: KIND_GPU, fp16); needs a CUDA
#                          build of torch in the Triton venv (deploy/triton/README.md)
#   --log-verbose N        tritonserver's log verbosity (default 0)
#   -- ARGS...             passed to tritonserver as they are
#
# Environment: TRITON_VENV (default <repo>/.venv-triton); CODEINDEX_TRITON_MODEL_PATH (a
# sentence-transformers model directory to serve instead of the packaged all-MiniLM-L6-v2);
# HF_HUB_OFFLINE (default 1: the packaged model needs no model hub).
# In the official Triton container, run tritonserver itself: see deploy/triton/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TRITON_VENV:-$ROOT/.venv-triton}
SERVER=$VENV/tritonserver
GRPC_PORT=8001
REPO=$ROOT/deploy/triton/model_repository
ADDRESS=127.0.0.1
HTTP_PORT=
METRICS_PORT=
LOG_VERBOSE=0
CONFIG_NAME=
EXTRA=()

die() { echo "triton-serve: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
need() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
port() { [[ $2 =~ ^[0-9]+$ && $2 -ge 1 && $2 -le 65535 ]] || die "$1: not a port: $2"; echo "$2"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --grpc-port) need "$@"; GRPC_PORT=$(port "$1" "$2"); shift 2 ;;
        --grpc-port=*) GRPC_PORT=$(port --grpc-port "${1#*=}"); shift ;;
        --model-repository) need "$@"; REPO=$2; shift 2 ;;
        --model-repository=*) REPO=${1#*=}; shift ;;
        --address) need "$@"; ADDRESS=$2; shift 2 ;;
        --address=*) ADDRESS=${1#*=}; shift ;;
        --http-port) need "$@"; HTTP_PORT=$(port "$1" "$2"); shift 2 ;;
        --http-port=*) HTTP_PORT=$(port --http-port "${1#*=}"); shift ;;
        --metrics-port) need "$@"; METRICS_PORT=$(port "$1" "$2"); shift 2 ;;
        --metrics-port=*) METRICS_PORT=$(port --metrics-port "${1#*=}"); shift ;;
        --gpu) CONFIG_NAME=gpu; shift ;;
        --log-verbose) need "$@"; LOG_VERBOSE=$2; shift 2 ;;
        --log-verbose=*) LOG_VERBOSE=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ -x $SERVER/bin/tritonserver && -x $VENV/bin/python ]] \
    || die "no Triton in $VENV: run scripts/setup-triton-venv.sh first"
[[ -d $REPO ]] || die "no model repository at $REPO"
REPO=$(cd "$REPO" && pwd)

# The Python-backend stub embeds the interpreter .venv-triton was made from: it needs that
# interpreter's libpython (a pyenv or self-built Python keeps it outside the loader's search path)
# and .venv-triton's site-packages on its path. The server's own libraries come with the wheel.
read -r LIBDIR SITE < <("$VENV/bin/python" -c \
    'import sysconfig; print(sysconfig.get_config_var("LIBDIR"), sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH=$SERVER/lib:$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PATH=$VENV/bin:$PATH
export PYTHONNOUSERSITE=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

ARGS=(
    --model-repository="$REPO"
    --backend-directory="$SERVER/backends"
    --cache-directory="$SERVER/caches"
    --grpc-address="$ADDRESS" --grpc-port="$GRPC_PORT"
    --log-verbose="$LOG_VERBOSE"
)
if [[ -n $HTTP_PORT ]]; then
    ARGS+=(--allow-http=true --http-address="$ADDRESS" --http-port="$HTTP_PORT")
else
    ARGS+=(--allow-http=false)
fi
if [[ -n $METRICS_PORT ]]; then
    ARGS+=(--allow-metrics=true --metrics-address="$ADDRESS" --metrics-port="$METRICS_PORT")
else
    ARGS+=(--allow-metrics=false)
fi
if [[ -n $CONFIG_NAME ]]; then
    ARGS+=(--model-config-name="$CONFIG_NAME")
fi
exec "$SERVER/bin/tritonserver" "${ARGS[@]}" "${EXTRA[@]}"
