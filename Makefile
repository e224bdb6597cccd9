# codeindex: every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
K ?= 10

.DEFAULT_GOAL := help
.PHONY: gpu-bundle bench-gpu-dry test-docker peer-venv triton-venv triton-serve test-deps help install index search status test lint protos bench bench-gpu clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install codeindex with its pinned dependencies

index: $(STAMP) ## index a repository with the embedded default: make index REPO=path
	@test -n "$(REPO)" || { echo "usage: make index REPO=<path>"; exit 2; }
	$(VENV)/bin/orchestrator index "$(REPO)"

search: $(STAMP) ## search an indexed repository: make search REPO=path Q="query" [K=10]
	@test -n "$(REPO)" -a -n "$(Q)" || { echo 'usage: make search REPO=<path> Q="<query>"'; exit 2; }
	$(VENV)/bin/orchestrator search "$(Q)" --path "$(REPO)" -k $(K)

status: $(STAMP) ## what the index of REPO holds: make status REPO=path
	$(VENV)/bin/orchestrator status --path "$(or $(REPO),.)"

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

test-deps: ## Debian's prometheus and docker-compose, and kubectl, for the metrics and deployment tests
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v docker-compose >/dev/null || { \
	  echo "installing Debian's prometheus and docker-compose packages (for the metrics and deployment tests)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus docker-compose >/dev/null; }
	@command -v kubectl >/dev/null || { \
	  echo "installing kubectl (kustomize v5 built in; from the Kubernetes or Google Cloud apt repository)"; \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null || { \
	  echo "kubectl >= 1.27 is needed for the deployment tests: https://kubernetes.io/docs/tasks/tools/"; exit 1; }; }

triton-venv: ## NVIDIA Triton in its own virtualenv (.venv-triton: numpy<2), for the triton backend and its tests
	scripts/setup-triton-venv.sh

peer-venv: ## mcp-vector-search 4.1.14 in its own virtualenv (.venv-peer), for make bench STAGE=peer
	scripts/setup-peer-venv.sh

triton-serve: triton-venv ## run Triton on deploy/triton/model_repository (gRPC 127.0.0.1:$(or $(PORT),8001))
	scripts/triton-serve.sh --grpc-port $(or $(PORT),8001)

test: $(STAMP) test-deps triton-venv ## run the test suite (the triton tests against a real Triton server)
	$(VENV)/bin/pytest

test-docker: $(STAMP) ## build the images for real and run the stack in Docker (a daemon started if none answers)
	PY=$(PY) scripts/docker-test.sh $(if $(CI_OPTIONAL),--if-available)

lint: $(STAMP) ## static checks (ruff)
	$(VENV)/bin/ruff check .

bench: $(STAMP) ## benchmark: make bench [QUICK=1] [STAGE=parser|embed|tokenize|store|pipeline|search|load|quality|live|peer|scale]
	$(if $(filter peer,$(STAGE))$(if $(STAGE),,all),scripts/setup-peer-venv.sh)
	$(PY) -m bench.run $(if $(QUICK),--quick) $(if $(STAGE),--stage $(STAGE))

bench-gpu: $(STAMP) ## the same benchmark with the embedder and baselines on CUDA, all stages but peer (writes docs/BENCHMARKS-GPU.md)
	CODEINDEX_EMBED_DEVICE=cuda $(PY) -m bench.run $(if $(QUICK),--quick) $(if $(STAGE),--stage $(STAGE))

gpu-bundle: $(STAMP) ## the GPU benchmark for a bare GPU machine: .gpu-bundle/p1..pN, one part a call of scripts/gpu-run.sh
	$(PY) -m bench.gpu_bundle build

bench-gpu-dry: $(STAMP) ## the GPU benchmark's CPU dry run: the bundle installed over a stand-in for the GPU image, run part by part
	scripts/gpu-dry-run.sh

protos: $(STAMP) ## regenerate the gRPC stubs from protos/*.proto
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. protos/*.proto

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .venv-triton .venv-peer .pytest_cache build *.egg-info
