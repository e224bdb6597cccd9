"""The parser service as a real process: hostile input through a real index
run, a worker killed mid-file, a file past the timeout, chunk options."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import psutil
import pytest

from codeindex_common.pb import parser_pb2, parser_pb2_grpc
from codeindex_common.channels import CHANNEL_OPTIONS, wait_for_serving
from tests.conftest import ROOT
from tests.test_services import metrics_text

pytestmark = pytest.mark.slow


def hostile_files() -> dict[str, bytes]:
    """One of each kind of input that breaks chunkers."""
    return {
        "ok.py": b"def fine(values):\n    total = sum(values)\n    count = len(values)\n    return total / count\n",
        "img/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 20,
        "src/latin1.py": b"# caf\xe9\ndef accent():\n    label = '\xe9t\xe9'\n    return label.upper()\n",
        "data/zeros.txt": b"\0" * 4096,
        "src/empty.py": b"",
        "src/huge.py": b"value = 1\n" * 2_100_000,  # 21 MB
        "web/bundle.js": b"var a=1;" * 655_360,  # 5 MB on one line: over max_file_bytes
        "web/vendor.js": b"var b=2;" * 131_072,  # 1 MB on one line: under it, but one line
        "deep/nested.py": b"x = " + b"[\n" * 10_000 + b"]\n" * 10_000,
        "deep/nested.js": b"const x = " + b'{"a":\n' * 10_000 + b"1" + b"}\n" * 10_000 + b";\n",
        "src/half_broken.py": b"def good():\n    items = [1, 2]\n    return items\n\ndef broken(:\n    ]]]\n"
                              b"class Still:\n    def there(self):\n        value = 3\n        return value\n",
        "src/really_go.py": b"package main\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
        "src/really_png.js": b"\x89PNG\r\n\x1a\n\x00\x00binary",
        "src/crlf.py": b"def windows():\r\n    line = 'crlf'\r\n    return line\r\n",
        "src/mixed.js": b"function a() {\r\n  const x = 1;\n  return x;\r}\nfunction b() {\n  return 2;\r\n}\n",
        "src/bom.py": b"\xef\xbb\xbfdef with_bom():\n    marker = 'bom'\n    return marker\n",
    }


def write_tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_hostile_repository_is_indexed_and_every_file_accounted_for(start_service, embed_service, tmp_path):
    repo = tmp_path / "repo"
    files = hostile_files()
    write_tree(repo, files)
    parser = start_service("parser", "--workers", "2")
    store = start_service("store", "--uri", str(tmp_path / "index"))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "index", "--json", "--parser-addr", parser.address,
         "--embed-addr", embed_service.address, "--store-addr", store.address, str(repo)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    skipped = summary["files_skipped"]
    assert summary["files_indexed"] + sum(skipped.values()) == len(files), summary
    assert skipped.get("too_large") == 2 and skipped.get("long_lines") == 1, skipped
    assert skipped.get("binary") == 3 and skipped.get("empty") == 1, skipped
    assert not set(skipped) & {"worker_died", "timeout", "parse_failed"}, skipped
    # the parser is still healthy and still parses
    wait_for_serving(parser.address, 5)
    with grpc.insecure_channel(parser.address) as ch:
        r = list(parser_pb2_grpc.ParserStub(ch).Parse(iter([parser_pb2.ParseRequest(
            path="x.py", content=files["ok.py"])]), timeout=30))
    assert [c.symbol for c in r[0].chunks] == ["fine"]


def test_each_hostile_file_gets_a_result_from_the_service(start_service):
    """Straight to the service, the 21 MB file included (the orchestrator skips it before sending)."""
    parser = start_service("parser", "--workers", "2")
    files = hostile_files()
    with grpc.insecure_channel(parser.address, options=CHANNEL_OPTIONS) as ch:
        reqs = [parser_pb2.ParseRequest(path=p, content=d) for p, d in files.items()]
        out = {r.path: r for r in parser_pb2_grpc.ParserStub(ch).Parse(iter(reqs), timeout=300)}
    assert set(out) == set(files)
    reasons = {p: r.skip_reason for p, r in out.items()}
    assert reasons["src/huge.py"] == reasons["web/bundle.js"] == "too_large"
    assert reasons["web/vendor.js"] == "long_lines"
    assert reasons["data/zeros.txt"] == reasons["img/logo.png"] == reasons["src/really_png.js"] == "binary"
    names = {p: {c.qualified_name for c in r.chunks} for p, r in out.items()}
    assert {"good", "Still.there"} <= {n for q in names["src/half_broken.py"] for n in q.split(", ")}
    assert out["src/latin1.py"].detail.startswith("invalid UTF-8") and "accent" in names["src/latin1.py"]
    assert names["src/bom.py"] == {"with_bom"} and out["src/bom.py"].chunks[0].start_byte == 0
    assert names["src/crlf.py"] == {"windows"} and out["src/crlf.py"].chunks[0].end_line == 3
    for path in ("deep/nested.py", "deep/nested.js"):
        lines = files[path].count(b"\n")
        assert out[path].chunks and out[path].chunks[-1].end_line >= lines - 1, path


def slow_file(n: int = 30_000) -> bytes:
    """~1.8 MB of small functions: seconds of work for one worker."""
    return b"".join(b"def f_%d(x):\n    y = x * %d\n    z = y + 1\n    return z\n\n" % (i, i) for i in range(n))


def workers_of(pid: int) -> list[psutil.Process]:
    """The pool's workers: grandchildren of the service, under its forkserver."""
    return [p for p in psutil.Process(pid).children(recursive=True) if p.ppid() != pid]


def test_a_worker_killed_mid_file_costs_only_that_file(start_service):
    parser = start_service("parser", "--workers", "2")
    before = {p.pid for p in workers_of(parser.proc.pid)}
    assert len(before) == 2
    killed = threading.Event()

    def requests():
        yield parser_pb2.ParseRequest(path="slow_a.py", content=slow_file())
        yield parser_pb2.ParseRequest(path="slow_b.py", content=slow_file())
        time.sleep(1.0)  # both workers are busy with the slow files now
        for p in workers_of(parser.proc.pid):
            os.kill(p.pid, signal.SIGKILL)
        killed.set()
        for i in range(6):
            yield parser_pb2.ParseRequest(path=f"ok_{i}.py", content=hostile_files()["ok.py"])

    with grpc.insecure_channel(parser.address, options=CHANNEL_OPTIONS) as ch:
        out = {r.path: r for r in parser_pb2_grpc.ParserStub(ch).Parse(requests(), timeout=120)}
    assert killed.is_set()
    assert out["slow_a.py"].skip_reason == out["slow_b.py"].skip_reason == "worker_died"
    assert all(out[f"ok_{i}.py"].chunks and not out[f"ok_{i}.py"].skip_reason for i in range(6))
    after = {p.pid for p in workers_of(parser.proc.pid)}
    assert len(after) == 2 and not after & before, "dead workers are replaced"
    m = metrics_text(parser.metrics_port)
    assert 'parser_failures_total{reason="worker_died"} 2.0' in m
    assert "parser_worker_restarts_total 2.0" in m
    wait_for_serving(parser.address, 5)


def test_a_file_past_the_timeout_is_reported_and_the_worker_replaced(start_service):
    parser = start_service("parser", "--workers", "1", "--parse-timeout", "0.5")
    reqs = [parser_pb2.ParseRequest(path="slow.py", content=slow_file()),
            parser_pb2.ParseRequest(path="ok.py", content=hostile_files()["ok.py"])]
    with grpc.insecure_channel(parser.address, options=CHANNEL_OPTIONS) as ch:
        out = {r.path: r for r in parser_pb2_grpc.ParserStub(ch).Parse(iter(reqs), timeout=60)}
    assert out["slow.py"].skip_reason == "timeout" and "0.5 s" in out["slow.py"].detail
    assert [c.symbol for c in out["ok.py"].chunks] == ["fine"]
    assert 'parser_failures_total{reason="timeout"} 1.0' in metrics_text(parser.metrics_port)


def test_chunk_options_size_chunks_for_the_model_window(start_service):
    from embed_svc.backends import default_model_path
    from parser_svc.sizing import TokenCounter

    tokenizer = os.path.join(default_model_path(), "tokenizer.json")
    parser = start_service("parser", "--workers", "1")
    body = "".join(f"    step_{i} = transform(step_{i - 1}, {i})\n" for i in range(1, 200))
    source = f"def pipeline(step_0):\n{body}    return step_199\n".encode()
    options = parser_pb2.ChunkOptions(max_tokens=128, tokenizer_json=open(tokenizer, "rb").read())
    with grpc.insecure_channel(parser.address, options=CHANNEL_OPTIONS) as ch:
        stub = parser_pb2_grpc.ParserStub(ch)
        reqs = [parser_pb2.ParseRequest(path="p.py", content=source, options=options),
                parser_pb2.ParseRequest(path="q.py", content=source)]  # options hold for the whole stream
        out = {r.path: r for r in stub.Parse(iter(reqs), timeout=60)}
        counter = TokenCounter(tokenizer)
        for path in ("p.py", "q.py"):
            chunks = out[path].chunks
            assert len(chunks) > 5
            assert max(counter.count(c.embed_text) + counter.special for c in chunks) <= 128
        bad = parser_pb2.ChunkOptions(max_tokens=128, tokenizer_json=b"{not json")
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Parse(iter([parser_pb2.ParseRequest(path="p.py", content=source, options=bad)]), timeout=30))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def own_workers() -> list[psutil.Process]:
    """This process's pool workers: children of its own forkserver."""
    servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
    return [w for s in servers for w in s.children()]


def test_a_group_of_small_files_whose_worker_dies_is_parsed_again_file_by_file(caplog):
    """Files that arrive together travel in one task; when its worker is
    killed, each file is parsed again on its own and every one gets chunks."""
    from parser_svc.chunker import Limits
    from parser_svc.parser import Parser

    parser = Parser(1, Limits(), group_below=4_000_000)  # the slow file joins the group too
    parser.GROUP_BYTES = 8_000_000
    parser.start()
    try:
        async def run():
            files = [("slow.py", slow_file(20_000))] + [(f"ok_{i}.py", hostile_files()["ok.py"]) for i in range(5)]
            tasks = [asyncio.create_task(parser.parse(path, data)) for path, data in files]
            await asyncio.sleep(0.8)  # the one worker is busy with the group
            victims = own_workers()
            assert len(victims) == 1
            victims[0].kill()
            return [await t for t in tasks], victims[0].pid

        results, killed = asyncio.run(run())
        assert "a group of 6 files failed (ProcessExpired)" in caplog.text
        assert [r.skip_reason for r in results] == [""] * 6
        assert all(r.chunks for r in results)
        assert killed not in {p.pid for p in own_workers()}
    finally:
        parser.close()
