"""The images of docker/Dockerfile built and run for real (`make test-docker`).

scripts/docker-test.sh starts a Docker daemon (or uses the one that answers), builds the four
service images and a Prometheus image from a locally bootstrapped Debian root and local wheels,
then runs this file with DOCKER_HOST pointing at that daemon. Nothing here mocks Docker: every
check is on real containers, started here and removed by the fixture that started them.

- each image, alone with no network at all (``--network none``), read-only root, no capabilities,
  becomes healthy by its own gRPC health check: nothing is downloaded at start; the four talk over
  unix sockets in a shared directory, and the host asks the orchestrator's API there;
- the stack of docker/compose.host.yaml (host networking: this daemon has no bridge; each
  container binds its own loopback address, ports picked free here): two parser and two embedder
  containers behind one name each, the store, the orchestrator's API and Prometheus;
- `orchestrator index` in the orchestrator's container over a mounted repository, a search from
  the host through the public API, streams spread over both replicas of each stage, Prometheus
  scraping every container, and the index surviving `docker-compose down` and `up`.

Run by `make test-docker` only (marker ``docker``; `make test` deselects it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from protos import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from tests.test_prometheus import dashboard_exprs

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker/compose.host.yaml"
TAG = os.environ.get("CODEINDEX_DOCKER_TAG", "0.1.0")
IMAGES = {name: f"codeindex/{name}:{TAG}" for name in ("parser", "embed", "store", "orchestrator")}
PROMETHEUS_IMAGE = "codeindex/prometheus:local"
UID = "10001"
# the loopback address each container of docker/compose.host.yaml binds (see its header)
ADDRESSES = {"parser-1": "127.0.1.1", "parser-2": "127.0.1.2", "embed-1": "127.0.2.1", "embed-2": "127.0.2.2",
             "store": "127.0.3.1", "orchestrator": "127.0.0.1", "prometheus": "127.0.0.1"}
CODEINDEX_SERVICES = ("parser-1", "parser-2", "embed-1", "embed-2", "store", "orchestrator")
# the repository the stack indexes: a copy of this project's own shared package, and a function in it
REPO_SOURCE = ROOT / "codeindex_common"
KNOWN = ("codeindex_common/healthcheck.py", "listen_address")
QUERY = "the address a service listens on, read from its LISTEN environment variable"


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, timeout=timeout)


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def wait_healthy(containers: list[str], timeout: float = 300) -> None:
    """Until every container's own HEALTHCHECK says healthy; the states and logs of those that are not, when
    it fails."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {c: inspect(c)["State"].get("Health", {}).get("Status", "none") for c in containers}
        if all(s == "healthy" for s in states.values()):
            return
        if any(inspect(c)["State"]["Status"] == "exited" for c in containers):
            break
        time.sleep(2)
    logs = {c: docker("logs", "--tail", "30", c, check=False).stderr[-3000:] for c in containers
            if states.get(c) != "healthy"}
    pytest.fail(f"not healthy: {states}\n" + "\n".join(f"--- {c}\n{log}" for c, log in logs.items()))


def free_port(*hosts: str) -> int:
    """A TCP port free on every one of ``hosts`` now (the OS picks it on the first)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    with socket.socket() as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def metrics(url: str) -> dict[str, float]:
    """A /metrics page as {sample with labels: value}."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def search(address: str, query: str, k: int = 5) -> list:
    with grpc.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        return list(stub.Search(orchestrator_pb2.QueryRequest(query=query, k=k), timeout=60).hits)


def status(address: str) -> orchestrator_pb2.StatusResponse:
    with grpc.insecure_channel(address) as channel:
        return orchestrator_pb2_grpc.OrchestratorStub(channel).Status(orchestrator_pb2.StatusRequest(), timeout=30)


# ---------------------------------------------------------------- the images


def test_every_image_is_built_non_root_with_a_health_check_and_its_size_is_reported():
    sizes = {}
    for name, image in [*IMAGES.items(), ("prometheus", PROMETHEUS_IMAGE)]:
        info = json.loads(docker("image", "inspect", image).stdout)[0]
        sizes[name] = info["Size"]
        config = info["Config"]
        assert config["User"] not in ("", "root", "0"), f"{image} runs as root"
        assert config.get("Healthcheck", {}).get("Test"), f"{image} has no HEALTHCHECK"
        if name != "prometheus":
            assert config["User"] == UID, image
            assert "codeindex_common.healthcheck" in " ".join(config["Healthcheck"]["Test"]), image
            assert "HF_HUB_OFFLINE=1" in config["Env"], image
    lines = [f"  {name:<13} {size / 2**20:8.0f} MiB" for name, size in sizes.items()]
    print("\nimage sizes (uncompressed, as `docker image inspect` counts them):\n" + "\n".join(lines))
    report = os.environ.get("CODEINDEX_DOCKER_REPORT")
    if report:
        Path(report).write_text(json.dumps({IMAGES.get(n, PROMETHEUS_IMAGE): s for n, s in sizes.items()},
                                           indent=1) + "\n")
    # the model and the ONNX export are inside the embed image, not fetched later
    assert sizes["embed"] > sizes["parser"]


# ---------------------------------------------------------------- no network at all


@pytest.fixture
def socket_dir():
    # short: a unix socket's path has at most 107 bytes; open to the containers' uid
    path = Path(tempfile.mkdtemp(prefix="ci-sock-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_each_image_starts_with_no_network_on_a_read_only_root_and_nothing_downloaded(socket_dir):
    """Each service alone in a network namespace with no interface but loopback: a model or grammar
    download at start would fail, and the health check would never say SERVING. The four reach each
    other over unix sockets in a shared directory, which the host reaches too."""
    name = f"ci-nonet-{os.getpid()}"
    common = ["--network", "none", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges:true", "-v", f"{socket_dir}:/sock"]
    env = {
        "parser": ["-e", "CODEINDEX_PARSER_LISTEN=unix:/sock/parser.sock"],
        "embed": ["-e", "CODEINDEX_EMBED_LISTEN=unix:/sock/embed.sock"],
        "store": ["-e", "CODEINDEX_STORE_LISTEN=unix:/sock/store.sock", "--tmpfs", f"/data:uid={UID},gid={UID}"],
        "orchestrator": ["-e", "CODEINDEX_ORCHESTRATOR_LISTEN=unix:/sock/api.sock",
                         "-e", "CODEINDEX_ORCHESTRATOR_PARSER_ADDR=unix:/sock/parser.sock",
                         "-e", "CODEINDEX_ORCHESTRATOR_EMBED_ADDR=unix:/sock/embed.sock",
                         "-e", "CODEINDEX_ORCHESTRATOR_STORE_ADDR=unix:/sock/store.sock",
                         "-v", f"{REPO_SOURCE}:/repo:ro"],
    }
    containers = []
    try:
        for stage, image in IMAGES.items():
            container = f"{name}-{stage}"
            docker("run", "-d", "--name", container, *common, *env[stage], "--health-interval", "3s", image)
            containers.append(container)
        wait_healthy(containers)
        for container in containers:
            state = inspect(container)
            assert state["HostConfig"]["NetworkMode"] == "none"
            assert state["HostConfig"]["ReadonlyRootfs"] is True
            links = docker("exec", container, "python", "-c",
                           "import socket; print([n for _, n in socket.if_nameindex()])").stdout
            assert links.strip() == "['lo']", f"{container} has a network interface: {links}"
        # the orchestrator in its box reached the store in another: its API answers from the host
        answer = status(f"unix:{socket_dir}/api.sock")
        assert answer.chunks == 0 and answer.index_uri == "/data/index"
    finally:
        for container in containers:
            docker("rm", "-f", container, check=False)


# ---------------------------------------------------------------- the compose stack


class Stack:
    def __init__(self, project: str, env: dict[str, str], ports: dict[str, int]):
        self.project, self.env, self.ports = project, env, ports
        self.started = time.time()

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker-compose", "-p", self.project, "-f", str(COMPOSE), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"docker-compose {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-4000:]}")
        return proc

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: {ids}"
        return ids[0]

    def up(self) -> None:
        self.compose("up", "-d")
        wait_healthy([self.container(s) for s in (*CODEINDEX_SERVICES, "prometheus")])

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.ports['API_PORT']}"

    def metrics_url(self, service: str) -> str:
        stage = service.split("-")[0].upper()
        return f"http://{ADDRESSES[service]}:{self.ports[f'{stage}_METRICS_PORT']}/metrics"

    def index(self) -> dict:
        """`orchestrator index /repo --json` in the orchestrator's container: its summary."""
        out = self.compose("exec", "-T", "orchestrator", "orchestrator", "index", "/repo", "--json").stdout
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    repo = tmp / "repo"
    shutil.copytree(REPO_SOURCE, repo / "codeindex_common", ignore=shutil.ignore_patterns("__pycache__"))
    ports = {
        "API_PORT": free_port("127.0.0.1"),
        "ORCHESTRATOR_METRICS_PORT": free_port("127.0.0.1"),
        "PARSER_PORT": free_port("127.0.1.1", "127.0.1.2"),
        "PARSER_METRICS_PORT": free_port("127.0.1.1", "127.0.1.2"),
        "EMBED_PORT": free_port("127.0.2.1", "127.0.2.2"),
        "EMBED_METRICS_PORT": free_port("127.0.2.1", "127.0.2.2"),
        "STORE_PORT": free_port("127.0.3.1"),
        "STORE_METRICS_PORT": free_port("127.0.3.1"),
        "PROMETHEUS_PORT": free_port("127.0.0.1"),
    }
    # the shipped Prometheus configuration, its targets moved to this run's ports
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/host.yml").read_text())
    prometheus["global"]["scrape_interval"] = "1s"  # the dashboard's rates need a few samples of a short run
    defaults = {"9100": "ORCHESTRATOR", "9101": "PARSER", "9102": "EMBED", "9103": "STORE"}
    for job in prometheus["scrape_configs"]:
        for cfg in job["static_configs"]:
            cfg["targets"] = [re.sub(r":(\d+)$", lambda m: f":{ports[defaults[m[1]] + '_METRICS_PORT']}", t)
                              for t in cfg["targets"]]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
    (tmp / "prometheus.yml").chmod(0o644)
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "REPO": str(repo),
           "PROMETHEUS_CONFIG": str(tmp / "prometheus.yml")}
    stack = Stack(f"codeindex-test-{os.getpid()}", env, ports)
    try:
        stack.up()
        yield stack
    finally:
        stack.compose("down", "-v", "--timeout", "20", check=False)


def test_every_container_is_healthy_by_its_own_grpc_health_check(stack):
    for service in CODEINDEX_SERVICES:
        container = stack.container(service)
        state = inspect(container)
        assert state["State"]["Health"]["Status"] == "healthy", service
        test = " ".join(state["Config"]["Healthcheck"]["Test"])
        assert "codeindex_common.healthcheck --of" in test, f"{service}: {test}"
        # the same check by hand, at the loopback address this container was given
        stage = service.split("-")[0]
        out = docker("exec", container, "python", "-m", "codeindex_common.healthcheck", "--of", stage)
        assert out.stdout.strip() == "SERVING", service
        listen = next(e for e in state["Config"]["Env"] if e.startswith(f"CODEINDEX_{stage.upper()}_LISTEN="))
        assert listen.split("=", 1)[1].startswith(ADDRESSES[service] + ":"), listen


def test_containers_run_as_uid_10001_on_a_read_only_root(stack):
    for service in CODEINDEX_SERVICES:
        container = stack.container(service)
        state = inspect(container)
        assert state["HostConfig"]["ReadonlyRootfs"] is True, service
        assert state["HostConfig"]["CapDrop"] == ["ALL"], service
        assert docker("exec", container, "id", "-u").stdout.strip() == UID, service
        write = docker("exec", container, "touch", "/app/written", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, service


def test_orchestrator_index_in_its_container_then_a_search_from_the_host_finds_the_function(stack):
    summary = stack.index()
    files = len([p for p in (Path(stack.env["REPO"]) / "codeindex_common").glob("*.py")])
    assert summary["files_indexed"] == files, summary
    assert summary["chunks_embedded"] > 50, summary
    hits = search(stack.api, QUERY)
    assert hits, "no hits"
    found = [(h.path, h.symbol) for h in hits]
    assert KNOWN in found[:3], found
    answer = status(stack.api)
    assert answer.files == files and answer.chunks == summary["chunks_total"], answer


def test_streams_were_spread_over_both_replicas_of_each_stage(stack):
    parsed = {s: total(metrics(stack.metrics_url(s)), "parser_files_total") for s in ("parser-1", "parser-2")}
    embedded = {s: total(metrics(stack.metrics_url(s)), "embed_texts_total") for s in ("embed-1", "embed-2")}
    assert all(n > 0 for n in parsed.values()), f"a parser replica got no file: {parsed}"
    assert all(n > 0 for n in embedded.values()), f"an embedder replica got no text: {embedded}"
    print(f"\nfiles parsed by replica: {parsed}; texts embedded by replica: {embedded}")


def test_an_index_run_through_the_api_after_an_edit_reads_only_the_change(stack):
    """The public API's Index RPC (a run inside `orchestrator serve`, whose metrics Prometheus scrapes; a run
    of `orchestrator index` in the container is a process of its own), after one file was edited and a
    binary file added."""
    repo = Path(stack.env["REPO"])
    edited = repo / KNOWN[0]
    edited.write_text(edited.read_text() + "\n\ndef docker_probe_marker():\n    return 'seen in a container'\n")
    (repo / "codeindex_common" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(200))
    with grpc.insecure_channel(stack.api) as channel:
        progress = list(orchestrator_pb2_grpc.OrchestratorStub(channel).Index(
            orchestrator_pb2.IndexRequest(path="/repo"), timeout=300))
    summary = progress[-1].summary
    assert progress[-1].done
    assert summary.files_indexed == 1 and summary.files_skipped["binary"] == 1, summary
    assert 1 <= summary.chunks_embedded < summary.chunks_total, summary
    for mode in (common_pb2.SEARCH_MODE_HYBRID, common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_KEYWORD):
        with grpc.insecure_channel(stack.api) as channel:
            hits = orchestrator_pb2_grpc.OrchestratorStub(channel).Search(
                orchestrator_pb2.QueryRequest(query="docker_probe_marker", k=3, mode=mode), timeout=60).hits
        assert hits and hits[0].symbol == "docker_probe_marker", (mode, list(hits))


def _prometheus(stack: Stack, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{stack.ports['PROMETHEUS_PORT']}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_in_its_container_scrapes_every_service(stack):
    expected = {f"{ADDRESSES[s]}:{stack.ports[s.split('-')[0].upper() + '_METRICS_PORT']}" for s in CODEINDEX_SERVICES}
    deadline = time.monotonic() + 60
    while True:
        targets = _prometheus(stack, "/api/v1/targets")["activeTargets"]
        health = {t["labels"]["instance"]: t["health"] for t in targets}
        if all(health.get(i) == "up" for i in expected) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {i: health.get(i) for i in expected} == {i: "up" for i in expected}
    # after the index run: each parser replica's files, as Prometheus scraped them
    deadline = time.monotonic() + 30
    while True:
        result = _prometheus(stack, "/api/v1/query", query="sum by (instance) (parser_files_total)")["result"]
        if len(result) == 2 and all(float(r["value"][1]) > 0 for r in result) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert len(result) == 2 and all(float(r["value"][1]) > 0 for r in result), result
    rules = _prometheus(stack, "/api/v1/rules")["groups"]
    assert rules and all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
    # the Grafana dashboard's panels (Grafana's image cannot be had offline): each query has data since the
    # stack started, the index runs and the searches above included
    # a rate needs two scrapes after the searches: on a slow host a fixed wait was not always enough
    deadline = time.monotonic() + 30
    while True:
        time.sleep(3)  # a few more scrapes
        empty = _empty_panels(stack)
        if not empty or time.monotonic() > deadline:
            break
    assert not empty, f"panel queries with no data: {empty}"


def _empty_panels(stack) -> list[str]:
    """The dashboard's queries that have no data since the stack started."""
    end, empty = time.time(), []
    for expr in dashboard_exprs():
        q = expr.replace("$namespace", ".*").replace("$instance", ".*")
        data = _prometheus(stack, "/api/v1/query_range", query=q, start=str(stack.started), end=str(end),
                           step="2")["result"]
        if not any(series["values"] for series in data):
            empty.append(expr)
    return empty


def test_the_index_on_its_volume_survives_down_and_up(stack):
    before = status(stack.api)
    assert before.chunks > 0, "nothing indexed yet"
    stack.compose("down", "--timeout", "20")  # the volume stays (no -v)
    assert not stack.compose("ps", "-q").stdout.split()
    stack.up()
    after = status(stack.api)
    assert (after.files, after.chunks) == (before.files, before.chunks)
    assert KNOWN in [(h.path, h.symbol) for h in search(stack.api, QUERY)][:3]
    # and it is the same index, not a new one: an index run embeds nothing
    summary = stack.index()
    assert summary["chunks_embedded"] == 0 and summary["files_indexed"] == 0, summary
