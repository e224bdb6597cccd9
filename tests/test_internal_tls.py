"""TLS and mutual TLS between the orchestrator and the stages: real parser,
embed and store services started apart with certificates made by openssl
(the `pki` fixture), a real `orchestrator index`, `search`, `status` and
`serve` through them, and the ways it must fail: no client certificate, a
certificate that does not verify, plain text against TLS."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from codeindex_common import healthcheck
from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc
from codeindex_common.tls import ClientTLS
from orchestrator import clients
from orchestrator.config import OrchestratorConfig
from orchestrator.session import make_stages
from tests.conftest import ROOT, ServiceProcess
from tests.test_security import serve

pytestmark = pytest.mark.slow
ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))


def server_tls(pki: Path, cert: str = "server") -> list[str]:
    return ["--tls-cert", str(pki / f"{cert}.pem"), "--tls-key", str(pki / f"{cert}.key"),
            "--tls-client-ca", str(pki / "ca.pem")]


def client_tls(pki: Path) -> list[str]:
    return ["--internal-tls-ca", str(pki / "ca.pem"), "--internal-tls-cert", str(pki / "client.pem"),
            "--internal-tls-key", str(pki / "client.key")]


class Stages:
    def __init__(self, parser: ServiceProcess, embed: ServiceProcess, store: ServiceProcess, uri: str):
        self.parser, self.embed, self.store, self.uri = parser, embed, store, uri
        port = store.address.rsplit(":", 1)[1]
        # the store's certificate holds the name localhost only: reached through a dns:/// name, which
        # the orchestrator expands to 127.0.0.1 and still checks the certificate against
        self.args = ["--parser-addr", parser.address, "--embed-addr", embed.address,
                     "--store-addr", f"dns:///localhost:{port}"]


@pytest.fixture(scope="module")
def stages(pki, tmp_path_factory) -> Stages:
    """The three services, each requiring a client certificate signed by the test CA. The store's TLS
    settings come from its environment, the others' from flags."""
    tmp = tmp_path_factory.mktemp("internal-tls")
    tls = ClientTLS(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
    uri = str(tmp / "lancedb")
    started: list[ServiceProcess] = []
    try:
        started.append(ServiceProcess("parser", tmp, "--workers", "1", *server_tls(pki), tls=tls))
        started.append(ServiceProcess("embed", tmp, *server_tls(pki), tls=tls))
        started.append(ServiceProcess("store", tmp, "--uri", uri, tls=replace(tls, server_name="localhost"), env={
            "CODEINDEX_STORE_TLS_CERT": str(pki / "named.pem"), "CODEINDEX_STORE_TLS_KEY": str(pki / "named.key"),
            "CODEINDEX_STORE_TLS_CLIENT_CA": str(pki / "ca.pem")}))
        yield Stages(*started, uri)
    finally:
        for svc in started:
            svc.stop()
    for svc in started:
        log = svc.log.read_text()
        assert "mutual TLS" in log  # the start-up line says what it speaks...
        assert "PRIVATE KEY" not in log  # ...and no key material is ever logged


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tls-repo") / "repo"
    root.mkdir()
    for name in ("errors.py", "config.py", "healthcheck.py"):
        shutil.copy(ROOT / "codeindex_common" / name, root / name)
    return root


def orchestrator(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([ORCHESTRATOR, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return proc, time.monotonic() - started


def test_index_search_and_status_through_mutual_tls(stages, repo, pki):
    run, _ = orchestrator("index", str(repo), "--json", *stages.args, *client_tls(pki))
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["files_indexed"] == 3 and summary["index_chunks"] > 10
    assert "PRIVATE KEY" not in run.stdout + run.stderr
    # the same settings from the environment (CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_*)
    env = {"CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_CA": str(pki / "ca.pem"),
           "CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_CERT": str(pki / "client.pem"),
           "CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_KEY": str(pki / "client.key")}
    found, _ = orchestrator("search", "read a TLS certificate file", "--path", str(repo), "--json", *stages.args,
                            env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout.strip().splitlines()[-1])
    status, _ = orchestrator("status", "--path", str(repo), "--json", *stages.args, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["chunks"] == summary["index_chunks"]


def test_serve_reaches_the_stages_over_mutual_tls(stages, repo, pki, tmp_path):
    proc, address, _ = serve(tmp_path, repo, stages.args, *client_tls(pki))
    try:
        with grpc.insecure_channel(address) as ch:  # the public API itself: plain text here
            status = orchestrator_pb2_grpc.OrchestratorStub(ch).Status(orchestrator_pb2.StatusRequest(), timeout=30)
        assert status.index_uri == stages.uri  # answered by the store, over mutual TLS
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_without_a_client_certificate_the_run_fails_naming_the_stage(stages, repo, pki):
    """The server drops the connection during the handshake; the client cannot tell that from a service
    restarting, so it is retried for --retry-seconds (small here), then named with a hint."""
    run, seconds = orchestrator("index", str(repo), *stages.args, "--internal-tls-ca", str(pki / "ca.pem"),
                                "--retry-seconds", "2")
    assert run.returncode == 1
    assert "orchestrator: error: the embed stage at" in run.stderr  # the first call of a run: the embedder's Info
    assert "give --internal-tls-cert and --internal-tls-key" in run.stderr
    assert seconds < 20


@pytest.mark.parametrize("how", ["another CA", "another name"])
def test_a_certificate_that_does_not_verify_stops_the_run_at_once(stages, repo, pki, how):
    """Not retried (the default --retry-seconds is 60): waiting does not fix a certificate."""
    args = client_tls(pki)
    if how == "another CA":
        args[1] = str(pki / "other-ca.pem")
    else:
        args += ["--internal-tls-server-name", "elsewhere.example"]
    run, seconds = orchestrator("index", str(repo), *stages.args, *args)
    assert run.returncode == 1
    assert "the embed stage at" in run.stderr and "certificate was not accepted" in run.stderr
    assert seconds < 15


def test_plain_text_is_refused(stages, repo):
    with grpc.insecure_channel(stages.parser.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    run, seconds = orchestrator("index", str(repo), *stages.args, "--retry-seconds", "2")
    assert run.returncode == 1
    assert "the embed stage at" in run.stderr and "if it speaks TLS, give --internal-tls-ca" in run.stderr
    assert seconds < 20


def test_healthcheck_over_tls(stages, pki):
    def probe(address: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "codeindex_common.healthcheck", address, *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, **(env or {})})

    env = {"CODEINDEX_HEALTHCHECK_TLS_CA": str(pki / "ca.pem"),
           "CODEINDEX_HEALTHCHECK_TLS_CERT": str(pki / "client.pem"),
           "CODEINDEX_HEALTHCHECK_TLS_KEY": str(pki / "client.key")}
    ok = probe(stages.parser.address, env=env)
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    mutual = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"), "--tls-key",
              str(pki / "client.key")]
    # a probe on 127.0.0.1 of a service whose certificate is for a name: --tls-server-name
    assert probe(stages.store.address, *mutual, "--tls-server-name", "localhost").returncode == 0
    assert probe(stages.store.address, *mutual).returncode == 1  # 127.0.0.1 is not in its certificate
    assert probe(stages.embed.address, *mutual, "codeindex.v1.Embedder").returncode == 0
    assert probe(stages.parser.address, "--tls-ca", str(pki / "ca.pem")).returncode == 1  # no client certificate
    # --of SERVICE: the address the service's own listen variable names (an image's HEALTHCHECK), a wildcard
    # host asked on loopback
    port = stages.parser.address.rsplit(":", 1)[1]
    by_env = probe("--of", "parser", env={**env, "CODEINDEX_PARSER_LISTEN": f"0.0.0.0:{port}"})
    assert (by_env.returncode, by_env.stdout.strip()) == (0, "SERVING"), by_env.stderr
    plain = probe(stages.parser.address)
    assert (plain.returncode, plain.stdout.strip()) == (1, "NOT SERVING")
    assert "UNAVAILABLE" in plain.stderr  # with the reason
    missing = probe(stages.parser.address, "--tls-ca", str(pki / "missing.pem"))
    assert missing.returncode == 2 and "cannot read the CA file" in missing.stderr


def test_a_dns_name_is_checked_after_expansion(stages, pki):
    """dns:///localhost:PORT is dialled at 127.0.0.1:PORT, but the certificate is checked for localhost."""
    port = stages.store.address.rsplit(":", 1)[1]
    assert clients.targets(f"dns:///localhost:{port}") == [(f"127.0.0.1:{port}", "localhost")]
    assert clients.targets(f"127.0.0.1:{port},unix:/x.sock") == [(f"127.0.0.1:{port}", ""), ("unix:/x.sock", "")]
    tls = ClientTLS(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
    assert healthcheck.check(f"dns:///localhost:{port}", tls=tls)  # gRPC's own resolver: the name as authority
    assert not healthcheck.check(stages.store.address, tls=tls)

    async def via_client(address: str) -> str:
        client = clients.StoreClient(address, 10, retry_seconds=0, tls=tls)
        try:
            return (await client.stats()).uri
        finally:
            await client.close()

    assert asyncio.run(via_client(f"dns:///localhost:{port}")) == stages.uri


def test_internal_tls_is_for_the_stages_given_by_address(tmp_path, pki):
    """Locally started stages (the embedded default, on unix sockets) stay plain text."""
    cfg = OrchestratorConfig(parser_addr="parser.example:50051", internal_tls_ca=str(pki / "ca.pem"))

    async def build():
        stages = make_stages(cfg, {"parser": "parser.example:50051", "embed": "unix:/e.sock", "store": "unix:/s.sock"})
        try:
            return stages.parser.tls, stages.embedder.tls, stages.store.tls
        finally:
            await stages.close()

    assert asyncio.run(build()) == (True, False, False)


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "CERT"], "TLS needs both a certificate and a key file"),
    (["--tls-client-ca", "CA"], "mutual TLS (a client CA) needs the server's certificate and key"),
    (["--tls-cert", "CERT", "--tls-key", "MISSING"], "cannot read the TLS key file"),
], ids=["no key", "a client CA without a certificate", "a missing file"])
def test_a_service_refuses_incomplete_tls_settings(pki, args, message):
    files = {"CERT": str(pki / "server.pem"), "CA": str(pki / "ca.pem"), "MISSING": str(pki / "missing.key")}
    run = subprocess.run([sys.executable, "-m", "parser_svc", "--listen", "127.0.0.1:0", "--metrics-port", "0",
                          *[files.get(a, a) for a in args]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith(f"parser: {message}")


def _error(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=details)


@pytest.mark.parametrize("details, retried, hint", [
    # what gRPC's client said in the runs above, and in others tried by hand
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed "
     "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
     "unable to get local issuer certificate: OK", False, "certificate was not accepted"),
    ("connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:1: Custom verification check "
     "failed with error: UNAUTHENTICATED: Hostname Verification Check failed.", False, "certificate was not accepted"),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed "
     "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER",
     False, "the service does not speak TLS"),
    # the server refusing a client without a certificate (or plain text) looks like this: retried
    ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed", True,
     "closed the connection while it was being set up"),
    # a service restarting: retried, no TLS hint
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote "
     "host: Connection refused", True, ""),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Ssl handshake failed: "
     "SSL_ERROR_SYSCALL: Connection reset by peer", True, ""),
])
def test_which_tls_failures_are_retried(details, retried, hint):
    err = _error(details)
    assert clients.transient(err) is retried
    found = clients.tls_hint(err, tls=True)
    assert (hint in found) if hint else found == ""
