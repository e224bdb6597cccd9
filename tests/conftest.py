"""Shared fixtures: real services as child processes on OS-picked loopback
ports, stopped by the test (or session) that started them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from codeindex_common import launcher  # noqa: E402


class ServiceProcess(launcher.ServiceProcess):
    """A stage service started apart on an OS-picked loopback port (``stage``: parser, embed or store), or
    with ``command`` any other (``orchestrator serve``); ``tls`` (a codeindex_common.tls.ClientTLS): how to
    reach one that speaks TLS; ``serving``: wait for health SERVING after the ready file."""

    def __init__(self, stage: str, tmp: Path, *args: str, env: dict[str, str] | None = None, tls=None,
                 command: list[str] | None = None, timeout: float = 180, serving: bool = True):
        self.stage = stage
        self.ready = tmp / f"{stage}-{time.monotonic_ns()}.ready.json"
        self.log = tmp / f"{stage}-{time.monotonic_ns()}.log"
        super().__init__(stage, command or launcher.stage_command(stage), args, listen="127.0.0.1:0",
                         ready_file=str(self.ready), log_path=str(self.log), env=env, cwd=str(ROOT))
        try:
            self.wait(timeout, tls=tls, serving=serving)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{stage} did not start: {exc}") from exc


def serve_command() -> list[str]:
    """``orchestrator serve``, for ServiceProcess's ``command``."""
    return launcher.orchestrator_command("serve")


class OrchestratorServe(ServiceProcess):
    """``orchestrator serve --path REPO ARGS`` (stage addresses, TLS, ...), stopped by the caller."""

    def __init__(self, tmp: Path, repo: Path, *args: str, timeout: float = 120, serving: bool = True):
        super().__init__("orchestrator", tmp, "--path", str(repo), *args, command=serve_command(), timeout=timeout,
                         serving=serving)


EXE = str(Path(sys.executable).with_name("orchestrator"))


def cli(*args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """``orchestrator ARGS`` run to its end from the repository root; its exit code is 0 unless ``check``
    is false."""
    run = subprocess.run([EXE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0 or not check, f"orchestrator {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
    return run


def index(repo: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    """``orchestrator index REPO --json``: its summary."""
    return json.loads(cli("index", str(repo), "--json", *extra, env=env).stdout.strip().splitlines()[-1])


def search(repo: Path, query: str, *extra: str, env: dict[str, str] | None = None) -> list[dict]:
    """``orchestrator search QUERY --path REPO -k 5 --json``: its hits."""
    return json.loads(cli("search", query, "--path", str(repo), "-k", "5", "--json", *extra, env=env).stdout)


def stop_process(proc: subprocess.Popen) -> int:
    """SIGTERM (a graceful shutdown), SIGKILL after 30 s; the exit code."""
    return launcher.stop_process(proc, 30)


@pytest.fixture
def start_service(tmp_path):
    started: list[ServiceProcess] = []

    def start(stage: str, *args: str, env: dict[str, str] | None = None, tls=None) -> ServiceProcess:
        svc = ServiceProcess(stage, tmp_path, *args, env=env, tls=tls)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="session")
def embed_service(tmp_path_factory):
    """One real embedding service (the real model) shared by the session."""
    svc = ServiceProcess("embed", tmp_path_factory.mktemp("embed"))
    yield svc
    svc.stop()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """Certificates made by openssl for the test, all signed by ca.pem (ca.key): server.pem for
    127.0.0.1 and localhost, named.pem for the name localhost only, and client.pem; each with its
    .key. other-ca.pem: a CA that signed none of them."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "1", "-subj", f"/CN=codeindex test {ca}", cwd=d)
    sans = {"server": "IP:127.0.0.1,DNS:localhost", "named": "DNS:localhost", "client": "IP:127.0.0.1,DNS:localhost"}
    for name, san in sans.items():
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return d


@pytest.fixture(scope="session")
def model():
    from sentence_transformers import SentenceTransformer

    from embed_svc.backends import default_model_path

    return SentenceTransformer(default_model_path(), device="cpu")
