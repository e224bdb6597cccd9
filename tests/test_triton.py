"""The triton backend against a real Triton Inference Server running the real
model (deploy/triton/model_repository), started by scripts/triton-serve.sh
from .venv-triton on OS-picked loopback ports and stopped at the end. Without
.venv-triton these tests fail: run scripts/setup-triton-venv.sh first."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("TRITON_VENV") or ROOT / ".venv-triton")
SERVE = ROOT / "scripts" / "triton-serve.sh"
MODEL = "minilm"
MIN_COSINE = 0.999


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """scripts/triton-serve.sh in a process group of its own, so that stopping it stops the stub processes too."""

    def __init__(self, log: Path):
        if not (VENV / "tritonserver" / "bin" / "tritonserver").exists():
            pytest.fail(f"no Triton in {VENV}: run scripts/setup-triton-venv.sh first (about a minute, 1.6 GB)")
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log = log
        self.started = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(SERVE), "--grpc-port", str(self.port)], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 120) -> float:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(self.url)
        deadline = self.started + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"tritonserver exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    if client.is_model_ready(MODEL, client_timeout=2):
                        return time.monotonic() - self.started
                except InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"tritonserver not ready after {timeout} s:\n{self.tail()}")
                time.sleep(0.2)
        finally:
            client.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module", autouse=True)
def triton_server(tmp_path_factory):
    """Started first (autouse) so that it loads while the torch model does."""
    server = TritonServer(tmp_path_factory.mktemp("triton") / "tritonserver.log")
    yield server
    code = server.stop()
    assert code == 0, f"tritonserver exited {code} on SIGTERM:\n{server.tail()}"


@pytest.fixture(scope="module")
def torch_backend():
    from embed_svc.backends import TorchBackend

    return TorchBackend(device="cpu")


@pytest.fixture(scope="module")
def triton_url(triton_server, torch_backend) -> str:
    startup = triton_server.wait_ready()
    print(f"tritonserver ready {startup:.1f} s after start")
    return triton_server.url


@pytest.fixture(scope="module")
def backend(triton_url):
    from embed_svc.backends.triton import TritonBackend

    b = TritonBackend(url=triton_url, model_name=MODEL, in_flight=4)
    yield b
    b.close()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """40 real code chunks (embed_text) of the requests library (pip's vendored copy), of all sizes."""
    import pip._vendor.requests as requests

    from parser_svc.chunker import chunk_file

    out = []
    for path in sorted(Path(requests.__file__).parent.glob("*.py")):
        out += [c.embed_text for c in chunk_file(f"requests/{path.name}", path.read_bytes()).chunks]
    assert len(out) >= 200
    return out[::len(out) // 40][:40]


@pytest.fixture(scope="module")
def want(torch_backend, texts) -> np.ndarray:
    """The torch backend's vectors of ``texts``: what the triton backend must give."""
    return torch_backend.encode(texts)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    return (a * b).sum(axis=1) / np.linalg.norm(b, axis=1)


def test_vectors_and_settings_match_the_torch_backend(backend, torch_backend, texts, want):
    from embed_svc.backends import DEFAULT_MODEL_ID

    assert (backend.name, backend.device) == ("triton", f"triton:{backend.url}")
    assert (backend.model_id, backend.dim, backend.max_tokens) == (DEFAULT_MODEL_ID, 384, 256)
    assert backend.tokenizer_json == torch_backend.tokenizer_json  # the parser sizes chunks the same way
    got, counted = backend.tokenize(texts), torch_backend.tokenize(texts)
    assert (got.texts, got.inputs, got.tokens, got.padded) == (texts, None, counted.tokens, counted.padded)
    cos = cosines(backend.encode(texts), want)
    print(f"cosine vs torch over {len(texts)} chunks: min {cos.min():.6f}, mean {cos.mean():.6f}")
    assert cos.min() >= MIN_COSINE


def test_batches_in_flight_before_any_collect(backend, texts, want, triton_url):
    import tritonclient.grpc as grpcclient

    def executions() -> tuple[int, int]:
        client = grpcclient.InferenceServerClient(triton_url)
        try:
            stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
        finally:
            client.close()
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    def settled() -> tuple[int, int]:
        """The counts once two reads 0.3 s apart agree: Triton counts a request after answering it, so a
        read right after an earlier test's requests can miss some (CI once saw 80 inferences here, 40 of
        them the test before's)."""
        last, deadline = executions(), time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = executions()
            if now == last:
                break
            last = now
        return last

    before = settled()
    batches = [texts[i:i + 10] for i in range(0, 40, 10)]
    started = time.monotonic()
    handles = [backend.launch(backend.tokenize(b)) for b in batches]
    launched = time.monotonic() - started
    assert not all(f.done() for h in handles for f in h), "launch waited for the server"
    got = {i: backend.collect(handles[i]) for i in reversed(range(len(handles)))}  # in any order
    cos = cosines(np.concatenate([got[i] for i in range(len(handles))]), want)
    assert cos.min() >= MIN_COSINE
    inferences, runs = (a - b for a, b in zip(settled(), before))
    assert inferences == 40
    # the requests were at the server together: its dynamic batcher ran them in fewer model calls
    assert runs < len(batches), f"{len(batches)} requests in {runs} model calls (launched in {launched:.3f} s)"


def test_text_longer_than_the_window_and_empty_batches(backend, torch_backend, texts):
    long = "\n".join(texts)
    assert len(long) > 20 * 256
    batch = backend.tokenize([long, "x"])
    assert batch.tokens == torch_backend.tokenize([long, "x"]).tokens == 256 + 3  # truncated: [CLS] .. [SEP]
    cos = cosines(backend.encode([long, "x", ""]), torch_backend.encode([long, "x", ""]))
    assert cos.min() >= MIN_COSINE
    assert backend.encode([]).shape == (0, 384)


def test_a_batch_bigger_than_max_batch_size_is_split(backend, torch_backend, texts):
    assert backend.max_request == 128
    short = [t[:100] for t in texts]
    many = short * 4  # 160 texts > 128
    handle = backend.launch(backend.tokenize(many))
    assert len(handle) == 2
    cos = cosines(backend.collect(handle), np.tile(torch_backend.encode(short), (4, 1)))
    assert cos.min() >= MIN_COSINE


def test_make_backend_behind_the_batcher(triton_url, texts, want):
    from embed_svc.backends import make_backend
    from embed_svc.batcher import Batcher
    from embed_svc.backends.triton import TritonBackend

    backend = make_backend("triton", url=triton_url, model_name=MODEL, in_flight=4)
    assert isinstance(backend, TritonBackend)
    batcher = Batcher(backend, max_batch_size=8, max_wait_ms=1, in_flight=4, cache_size=0)
    batcher.start()

    async def main():
        return await asyncio.gather(*(batcher.embed(texts[i:i + 5]) for i in range(0, 40, 5)))

    try:
        got = np.concatenate(asyncio.run(main()))
    finally:
        batcher.stop()
        backend.close()
    assert cosines(got, want).min() >= MIN_COSINE


def test_clear_errors(triton_url):
    from codeindex_common.errors import Unavailable
    from embed_svc.backends.triton import TritonBackend, TritonError

    with pytest.raises(TritonError, match="no such model.*minilm"):
        TritonBackend(url=triton_url, model_name="no-such-model", ready_timeout=5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"not ready after 1 s.*scripts/triton-serve.sh"):
        TritonBackend(url=f"127.0.0.1:{free_port()}", ready_timeout=1)
    assert time.monotonic() - started < 5


def test_a_model_that_fails_to_load_is_reported_at_once(tmp_path):
    """model.py refuses a config whose output dims differ from the model's; the client says so without waiting."""
    import shutil

    from embed_svc.backends.triton import TritonBackend, TritonError

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "deploy" / "triton" / "model_repository", repo)
    config = repo / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 384 ]", "dims: [ 385 ]"))
    port = free_port()
    with open(tmp_path / "log", "wb") as out:
        proc = subprocess.Popen([str(SERVE), "--grpc-port", str(port), "--model-repository", str(repo), "--",
                                 "--exit-on-error=false"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        with pytest.raises(TritonError, match=r"failed to load: .*384-dim vectors but config.pbtxt says .*385"):
            TritonBackend(url=f"127.0.0.1:{port}", model_name=MODEL, ready_timeout=90)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_serve_script_checks_its_arguments(tmp_path):
    def serve(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SERVE), *args], capture_output=True, text=True, timeout=30,
                              env={**os.environ, **env})

    r = serve("--grpc-port", "http")
    assert r.returncode == 2 and "not a port" in r.stderr
    r = serve("--model-repository", str(tmp_path / "none"))
    assert r.returncode == 2 and "no model repository" in r.stderr
    r = serve(TRITON_VENV=str(tmp_path))
    assert r.returncode == 2 and "run scripts/setup-triton-venv.sh" in r.stderr
    assert "--grpc-port" in serve("--help").stdout


def test_the_embed_service_with_the_triton_backend(start_service, triton_url, texts, want):
    """End to end: the embedding service serves Triton's vectors through gRPC, several streams at once."""
    import concurrent.futures

    import grpc

    from codeindex_common import vectors
    from codeindex_common.pb import embed_pb2, embed_pb2_grpc
    from tests.test_services import metrics_text

    svc = start_service("embed", "--backend", "triton", "--triton-url", triton_url, "--triton-model", MODEL,
                        "--in-flight", "4")
    with grpc.insecure_channel(svc.address) as ch:
        stub = embed_pb2_grpc.EmbedderStub(ch)
        info = stub.Info(embed_pb2.InfoRequest(), timeout=10)
        assert (info.backend, info.dim, info.max_tokens) == ("triton", 384, 256) and info.tokenizer_json

        def stream(part: int) -> dict[str, np.ndarray]:
            reqs = [embed_pb2.EmbedRequest(request_id=str(i), texts=texts[i:i + 5]) for i in range(part, 40, 20)]
            return {r.request_id: vectors.unpack(r.vectors, r.dim, r.count) for r in stub.Embed(iter(reqs), timeout=60)}

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got: dict[str, np.ndarray] = {}
            for part in pool.map(stream, (0, 5, 10, 15)):
                got.update(part)
    vecs = np.concatenate([got[str(i)] for i in range(0, 40, 5)])
    assert cosines(vecs, want).min() >= MIN_COSINE
    assert f'embed_texts_total{{backend="triton",device="triton:{triton_url}"}} 40.0' in metrics_text(svc.metrics_port)
