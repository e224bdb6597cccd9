"""Shared fixtures: real services as child processes on OS-picked loopback
ports, stopped by the test (or session) that started them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ServiceProcess:
    """A service started apart; ``tls`` (a codeindex_common.server.ClientTLS): how to reach one that speaks TLS."""

    def __init__(self, stage: str, tmp: Path, *args: str, env: dict[str, str] | None = None, tls=None):
        self.stage = stage
        self.ready = tmp / f"{stage}-{time.monotonic_ns()}.ready.json"
        self.log = tmp / f"{stage}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", f"{stage}_svc", "--listen", "127.0.0.1:0", "--metrics-port", "0",
               "--ready-file", str(self.ready), *args]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 180
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{stage} exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{stage} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        self.address: str = info["address"]
        self.metrics_port: int = info["metrics_port"]
        from codeindex_common.server import wait_for_serving

        wait_for_serving(self.address, 120, tls=tls)

    def stop(self) -> int:
        return stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> int:
    """SIGTERM (a graceful shutdown), SIGKILL after 30 s; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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

    from embed_svc.backend import default_model_path

    return SentenceTransformer(default_model_path(), device="cpu")
