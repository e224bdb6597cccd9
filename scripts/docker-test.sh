#!/usr/bin/env bash
# make test-docker: build the images of docker/Dockerfile for real and run them (tests/test_docker.py).
#
# 1. A Docker daemon: the one that answers at DOCKER_HOST (or /var/run/docker.sock); otherwise one
#    started here (Debian's docker.io, installed when missing) on its own socket, without a bridge or
#    iptables rules (--bridge=none --iptables=false: containers get host networking or none), its
#    images kept in $CACHE/docker from one run to the next, and stopped at the end.
# 2. The base image when BASE_IMAGE is not given: Debian bookworm with python3.11, made by
#    debootstrap from Debian's archive and imported (the root is cached in $CACHE).
# 3. Wheels: every pin of pyproject.toml as a wheel, made by this host's pip (torch's CPU wheel from
#    wherever its configuration finds it; elsewhere set PIP_EXTRA_INDEX_URL to PyTorch's CPU index),
#    cached in $CACHE/wheels-HASH and served to the builds on a loopback port.
# 4. docker/Dockerfile's four targets (BASE_IMAGE, WHEELS_URL) and docker/Dockerfile.prometheus.
# 5. tests/test_docker.py against them (its image sizes in $CACHE/images.json).
#
#   scripts/docker-test.sh [--if-available] [PYTEST ARGS...]
# --if-available (CI): where no Docker daemon can be had, say so and exit 0 instead of failing.
set -euo pipefail
cd "$(dirname "$0")/.."

OPTIONAL=0
if [[ "${1:-}" == --if-available ]]; then OPTIONAL=1; shift; fi
CACHE=${CODEINDEX_DOCKER_CACHE:-/var/cache/codeindex-docker}
PY=${PY:-.venv/bin/python}
TAG=${CODEINDEX_DOCKER_TAG:-0.1.0}
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
RUN=/run/codeindex-docker
mkdir -p "$CACHE"
export DOCKER_BUILDKIT=0  # the classic builder: BuildKit's frontend would come from a registry

say() { echo "test-docker: $*" >&2; }

no_docker() {
    if [[ $OPTIONAL == 1 ]]; then
        echo "==================== make test-docker SKIPPED: $* ===================="
        exit 0
    fi
    say "error: $*"
    exit 1
}

apt_install() {  # Debian packages, when their command is missing
    local missing=()
    for pair in "$@"; do command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}"); done
    [[ ${#missing[@]} == 0 ]] && return 0
    say "installing Debian's ${missing[*]}"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

PIDS=()
DOCKERD_PID=""
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -n $DOCKERD_PID ]]; then
        say "stopping the Docker daemon started here (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    fi
    exit $rc
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. the daemon
if ! docker info >/dev/null 2>&1; then
    apt_install docker=docker.io dockerd=docker.io docker-compose=docker-compose ||
        no_docker "Debian's docker.io could not be installed"
    export DOCKER_HOST=unix://$RUN/docker.sock
    if ! docker info >/dev/null 2>&1; then
        mkdir -p "$RUN"
        say "starting dockerd (log: $RUN/dockerd.log)"
        dockerd --host "$DOCKER_HOST" --data-root "$CACHE/docker" --exec-root "$RUN/exec" \
            --pidfile "$RUN/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
            >"$RUN/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 60); do
            docker info >/dev/null 2>&1 && break
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.5
        done
        if ! docker info >/dev/null 2>&1; then
            tail -5 "$RUN/dockerd.log" >&2 || true
            kill "$DOCKERD_PID" 2>/dev/null || true
            DOCKERD_PID=""
            no_docker "no Docker daemon could be started on this machine (dockerd's log above)"
        fi
    fi
fi
apt_install docker-compose=docker-compose
# containers an interrupted earlier run left (their restart policy brings them back with the daemon)
leftover=$(docker ps -aq --filter name='^ci-nonet-' --filter name='^codeindex-test-')
if [[ -n $leftover ]]; then
    say "removing $(wc -w <<<"$leftover") containers of an earlier run"
    docker rm -f $leftover >/dev/null
fi
say "Docker $(docker version --format '{{.Server.Version}}') at ${DOCKER_HOST:-the default socket}," \
    "storage driver $(docker info --format '{{.Driver}}')"

# ---------------------------------------------------------------- 2. the base image
if [[ -z ${BASE_IMAGE:-} ]]; then
    BASE_IMAGE=codeindex/bookworm-python3.11:local
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        ROOTFS=$CACHE/bookworm-python3.11.tar
        if [[ ! -s $ROOTFS ]]; then
            apt_install debootstrap=debootstrap
            tmp=$(mktemp -d "$CACHE/rootfs.XXXXXX")
            say "bootstrapping Debian bookworm with python3.11 into $tmp"
            debootstrap --variant=minbase --include=python3.11,python3-venv,ca-certificates \
                bookworm "$tmp" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$CACHE/debootstrap.log" 2>&1 ||
                { tail -5 "$CACHE/debootstrap.log" >&2; exit 1; }
            rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
            tar -C "$tmp" -cf "$ROOTFS.part" . && mv "$ROOTFS.part" "$ROOTFS"
            rm -rf "$tmp"
        fi
        docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["python3"]' "$ROOTFS" "$BASE_IMAGE" >/dev/null
    fi
fi
say "base image $BASE_IMAGE"

# ---------------------------------------------------------------- 3. the wheels
"$PY" -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
    >"$CACHE/requirements.txt"
WHEELS=$CACHE/wheels-$(sha256sum "$CACHE/requirements.txt" | cut -c1-16)
if [[ ! -e $WHEELS/.complete ]]; then
    say "making the wheels of pyproject.toml's pins in $WHEELS"
    "$PY" -m pip wheel --quiet --wheel-dir "$WHEELS" torch==2.13.0 -r "$CACHE/requirements.txt" \
        'setuptools>=68' wheel 2> >(grep -v "is ignored: it is neither" >&2)
    touch "$WHEELS/.complete"
fi
PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PY" -m http.server --bind 127.0.0.1 --directory "$WHEELS" "$PORT" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null && break
    sleep 0.1; done

# ---------------------------------------------------------------- 4. the images
build() {  # build LOG ARGS...: the build's output in LOG, its tail when it fails
    local log=$CACHE/build-$1.log; shift
    if ! docker build --network host "$@" >"$log" 2>&1; then
        tail -30 "$log" >&2
        say "error: docker build $* failed (log: $log)"
        exit 1
    fi
}
start=$SECONDS
# the requirements stage under a tag of its own: it is the dependencies' cache, and a pruned dangling image
build requirements --build-arg BASE_IMAGE="$BASE_IMAGE" -f docker/Dockerfile --target requirements \
    -t "codeindex/requirements:cache" .
for target in parser embed store orchestrator; do
    say "building codeindex/$target:$TAG"
    build "$target" --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELS_URL="http://127.0.0.1:$PORT/" \
        -f docker/Dockerfile --target "$target" -t "codeindex/$target:$TAG" .
done
say "building codeindex/prometheus:local (Debian's prometheus)"
build prometheus --build-arg BASE_IMAGE="$BASE_IMAGE" -f docker/Dockerfile.prometheus -t codeindex/prometheus:local docker
say "images built in $((SECONDS - start)) s"
kill "${PIDS[@]}" 2>/dev/null || true
PIDS=()
# the images these tags held before, and their layers, are dangling now: removed, or every run would leave
# a few GB behind (the vfs storage driver keeps each layer as a whole copy). The dependencies' layers stay:
# the new images and the tagged requirements stage hold them
say "removing dangling images: $(docker image prune -f | tail -1)"

# ---------------------------------------------------------------- 5. the tests
CODEINDEX_DOCKER_TAG=$TAG CODEINDEX_DOCKER_REPORT=$CACHE/images.json \
    "$(dirname "$PY")/pytest" -m docker -rP -p no:cacheprovider tests/test_docker.py "$@"
