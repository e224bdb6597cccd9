"""The public API's security: TLS, mutual TLS and bearer tokens on a real
`orchestrator serve`, with certificates made by openssl for the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc
from tests.conftest import OrchestratorServe

pytestmark = pytest.mark.slow
TOKEN = "s3cr3t-token-for-the-test"


def serve(tmp_path: Path, repo: Path, stages: list[str], *extra: str) -> tuple[subprocess.Popen, str, Path]:
    """`orchestrator serve` (perhaps speaking TLS only: its ready file is waited for, not its health)."""
    api = OrchestratorServe(tmp_path, repo, *stages, *extra, timeout=60, serving=False)
    return api.proc, api.address, api.log


def status(channel, token: str | None = None):
    metadata = [("authorization", f"Bearer {token}")] if token else None
    return orchestrator_pb2_grpc.OrchestratorStub(channel).Status(orchestrator_pb2.StatusRequest(), timeout=10,
                                                                   metadata=metadata)


@pytest.fixture
def stages(tmp_path, embed_service, start_service) -> list[str]:
    parser = start_service("parser", "--workers", "1")
    store = start_service("store", "--uri", str(tmp_path / "index"))
    return ["--parser-addr", parser.address, "--embed-addr", embed_service.address, "--store-addr", store.address]


def test_tls_and_bearer_token(tmp_path, pki, stages):
    repo = tmp_path / "repo"
    repo.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    proc, address, log = serve(tmp_path, repo, stages, "--tls-cert", str(pki / "server.pem"), "--tls-key",
                               str(pki / "server.key"), "--auth-token-file", str(token_file))
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        with grpc.secure_channel(address, creds) as ch:
            assert status(ch, TOKEN).dim == 0  # an empty index, answered
            for token in (None, "wrong", TOKEN + "x"):
                with pytest.raises(grpc.RpcError) as err:
                    status(ch, token)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:  # streaming calls too
                list(orchestrator_pb2_grpc.OrchestratorStub(ch).Index(
                    orchestrator_pb2.IndexRequest(path=str(repo)), timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
        with grpc.insecure_channel(address) as ch:  # plain text is not spoken
            with pytest.raises(grpc.RpcError) as err:
                status(ch, TOKEN)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert TOKEN not in log.read_text()  # never logged
    assert TOKEN not in " ".join(proc.args)  # never on the command line


def test_token_from_the_environment_and_mutual_tls(tmp_path, pki, stages, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setenv("CODEINDEX_ORCHESTRATOR_AUTH_TOKEN", TOKEN)
    proc, address, _ = serve(tmp_path, repo, stages, "--tls-cert", str(pki / "server.pem"), "--tls-key",
                             str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"))
    try:
        ca = (pki / "ca.pem").read_bytes()
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca)) as ch:
            with pytest.raises(grpc.RpcError) as err:  # no client certificate: the handshake fails
                status(ch, TOKEN)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        mutual = grpc.ssl_channel_credentials(root_certificates=ca, private_key=(pki / "client.key").read_bytes(),
                                              certificate_chain=(pki / "client.pem").read_bytes())
        with grpc.secure_channel(address, mutual) as ch:
            assert status(ch, TOKEN).dim == 0
            with pytest.raises(grpc.RpcError) as err:
                status(ch)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
