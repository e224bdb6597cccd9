"""End to end: the real services, the real model, real LanceDB, on a small
multi-language repository made here; checks search results, not just exit
codes."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import grpc
import pytest

from tests.conftest import OrchestratorServe, cli, index, search
from tests.test_store import RUBY

pytestmark = pytest.mark.slow

FILES = {
    "billing/invoice.py": '''
        """Invoices."""
        from dataclasses import dataclass


        def compute_invoice_total(items, tax_rate):
            """Sum the line items of an invoice and add sales tax."""
            subtotal = sum(item.price * item.quantity for item in items)
            return round(subtotal * (1 + tax_rate), 2)


        class InvoiceRepository:
            """Stores invoices in a database table."""

            def __init__(self, connection):
                self.connection = connection

            def save(self, invoice):
                self.connection.execute("INSERT INTO invoices VALUES (?)", (invoice,))
        ''',
    "web/format.js": '''
        // Formatting helpers for the web client.
        function formatCurrency(amount, currency) {
          return new Intl.NumberFormat("en-US", { style: "currency", currency }).format(amount);
        }

        module.exports = { formatCurrency };
        ''',
    "web/retry.ts": '''
        export async function retryWithBackoff<T>(fn: () => Promise<T>, attempts: number): Promise<T> {
          let delay = 100;
          for (let i = 0; ; i++) {
            try {
              return await fn();
            } catch (err) {
              if (i >= attempts) throw err;
              await new Promise((r) => setTimeout(r, delay));
              delay *= 2;
            }
          }
        }
        ''',
    "server/query.go": '''
        package server

        import "strings"

        // ParseQueryParameters splits a URL query string into a map of keys to values.
        func ParseQueryParameters(query string) map[string]string {
        \tparams := map[string]string{}
        \tfor _, pair := range strings.Split(query, "&") {
        \t\tkv := strings.SplitN(pair, "=", 2)
        \t\tif len(kv) == 2 {
        \t\t\tparams[kv[0]] = kv[1]
        \t\t}
        \t}
        \treturn params
        }
        ''',
    "geo/distance.rs": '''
        pub struct Point { pub lat: f64, pub lon: f64 }

        /// Great-circle distance between two points on Earth, in kilometres.
        pub fn haversine_distance(a: &Point, b: &Point) -> f64 {
            let r = 6371.0_f64;
            let dlat = (b.lat - a.lat).to_radians();
            let dlon = (b.lon - a.lon).to_radians();
            let c = a.lat.to_radians().cos() * b.lat.to_radians().cos();
            let h = (dlat / 2.0).sin().powi(2) + c * (dlon / 2.0).sin().powi(2);
            2.0 * r * h.sqrt().asin()
        }
        ''',
    "auth/PasswordHasher.java": '''
        package auth;

        import java.security.MessageDigest;

        public class PasswordHasher {
            private final byte[] salt;

            public PasswordHasher(byte[] salt) { this.salt = salt; }

            /** Hashes a user's password together with a salt using SHA-256. */
            public byte[] hashPassword(String password) throws Exception {
                MessageDigest digest = MessageDigest.getInstance("SHA-256");
                digest.update(salt);
                return digest.digest(password.getBytes("UTF-8"));
            }
        }
        ''',
    "docs/guide.md": '''
        # Guide

        How to run the billing service.

        ## Deploying

        Build the image and push it.
        ''',
    ".gitignore": "generated/\n*.secret.py\n",
    "generated/copy.py": "def compute_invoice_total_generated(items):\n    return 0\n",
    "billing/keys.secret.py": "def secret_key():\n    return 'x'\n",
    "nested/.gitignore": "local_only.py\n",
    "nested/local_only.py": "def local_only_helper():\n    return 1\n",
    "nested/shared.py": "def shared_helper():\n    return 2\n",
    "billing/__init__.py": "",
}

QUERIES = {
    "calculate the total price of an invoice including tax": "compute_invoice_total",
    "format an amount of money as a currency string": "formatCurrency",
    "retry an async operation with exponential backoff": "retryWithBackoff",
    "distance between two coordinates on the earth": "haversine_distance",
    "hash a user's password with a salt": "hashPassword",
    "split a URL query string into key value pairs": "ParseQueryParameters",
}


def make_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    (root / "assets").mkdir()
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    return root


def test_embedded_default_index_search_and_incremental(tmp_path):
    repo = make_repo(tmp_path / "repo")
    first = index(repo)
    assert first["files_seen"] == 12  # 15 files less the three that .gitignore files exclude
    assert first["files_skipped"] == {"binary": 1, "empty": 1}
    assert first["files_indexed"] == 10 and first["files_removed"] == 0
    assert first["chunks_embedded"] == first["chunks_total"] > 0 and first["chunks_reused"] == 0
    assert (repo / ".codeindex" / "lancedb").is_dir()

    hits = search(repo, "calculate the total price of an invoice including tax")
    assert "compute_invoice_total" in [h["symbol"] for h in hits[:3]]
    top = next(h for h in hits if h["symbol"] == "compute_invoice_total")
    assert (top["path"], top["start_line"], top["end_line"], top["kind"], top["language"]) == \
        ("billing/invoice.py", 5, 8, "function", "python")
    assert set(top) >= {"path", "start_line", "end_line", "symbol", "kind", "language", "score"}
    every = {h["path"] for q in ("generated copy of invoice total", "secret key", "local only helper")
             for h in search(repo, q)}
    assert not every & {"generated/copy.py", "billing/keys.secret.py", "nested/local_only.py"}

    # nothing changed: nothing embedded
    again = index(repo)
    assert again["chunks_embedded"] == 0 and again["files_indexed"] == 0
    assert again["files_unchanged"] == 12  # skipped files (binary, empty) are remembered too

    # one function edited: only that file is re-indexed, only the new chunk embedded
    inv = repo / "billing/invoice.py"
    inv.write_text(inv.read_text().replace("return round(subtotal * (1 + tax_rate), 2)",
                                           "return round(subtotal * (1.0 + tax_rate), 2)"))
    edited = index(repo)
    assert edited["files_indexed"] == 1 and edited["files_unchanged"] == 11
    assert edited["chunks_embedded"] == 1 and edited["chunks_reused"] == edited["chunks_total"] - 1

    # a moved file embeds nothing
    (repo / "web/retry.ts").rename(repo / "web/retry_util.ts")
    moved = index(repo)
    assert moved["files_removed"] == 1 and moved["files_indexed"] == 1 and moved["chunks_embedded"] == 0

    # filters from the CLI
    methods = search(repo, "save an invoice", "--kind", "method", "--glob", "billing/**")
    assert methods and all(h["kind"] == "method" and h["path"].startswith("billing/") for h in methods)
    assert search(repo, "invoice", "--symbol", "no_such_symbol") == []

    # another model is refused; --reindex rebuilds with it
    other = {"CODEINDEX_EMBED_BACKEND": "hash"}
    refused = cli("index", str(repo), "--json", check=False, env=other)
    assert refused.returncode == 1 and "--reindex" in refused.stderr and "--dtype" not in refused.stderr
    # the same model in fp32 (the default is int8): refused too, and told how to keep the index
    fp32 = cli("index", str(repo), "--json", check=False, env={"CODEINDEX_EMBED_DTYPE": "fp32"})
    assert fp32.returncode == 1 and "running the embedder with --dtype int8" in fp32.stderr, fp32.stderr[-2000:]
    # and so is a search whose query the other model would embed (its vectors are not the index's); the
    # keyword mode embeds nothing and still answers
    wrong = cli("search", "invoice total", "--path", str(repo), "--json", check=False, env=other)
    assert wrong.returncode == 1 and "would not be comparable" in wrong.stderr and not wrong.stdout
    assert search(repo, "invoice total", "--mode", "keyword", env=other)
    rebuilt = index(repo, "--reindex", env=other)
    assert rebuilt["chunks_embedded"] == rebuilt["chunks_total"] == rebuilt["index_chunks"]
    rebuilt_back = index(repo, "--reindex")
    assert rebuilt_back["model_id"] == first["model_id"]

    # a deleted file leaves nothing behind
    (repo / "auth/PasswordHasher.java").unlink()
    gone = index(repo)
    assert gone["files_removed"] == 1
    hits = search(repo, "hash a user's password with a salt")
    assert all(h["path"] != "auth/PasswordHasher.java" for h in hits)


def test_running_services_and_the_public_api(tmp_path, embed_service, start_service):
    """With addresses given, the orchestrator uses running services; `serve`
    answers Index, Search and Status over gRPC."""
    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    repo = make_repo(tmp_path / "repo")
    parser = start_service("parser", "--workers", "2")
    store = start_service("store", "--uri", str(tmp_path / "index"))
    env = {"CODEINDEX_ORCHESTRATOR_STORE_ADDR": store.address}  # an environment variable works as a flag
    summary = index(repo, "--parser-addr", parser.address, "--embed-addr", embed_service.address, env=env)
    assert summary["files_indexed"] == 10
    # no local services were started: the index directory holds the stat cache alone
    assert [p.name for p in (repo / ".codeindex").iterdir()] == ["stat-cache"]

    api = OrchestratorServe(tmp_path, repo, "--parser-addr", parser.address, "--embed-addr",
                            embed_service.address, "--store-addr", store.address, timeout=60)
    try:
        address = api.address
        with grpc.insecure_channel(address) as ch:
            stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
            (repo / "nested/shared.py").write_text("def shared_helper():\n    return 3\n")
            updates = list(stub.Index(orchestrator_pb2.IndexRequest(path=str(repo)), timeout=120))
            assert updates[-1].done and updates[-1].summary.files_indexed == 1
            assert updates[-1].summary.chunks_embedded == 1
            for query, symbol in QUERIES.items():
                hits = stub.Search(orchestrator_pb2.QueryRequest(query=query, k=3), timeout=30).hits
                assert symbol in [h.symbol for h in hits], f"{query!r} -> {[h.symbol for h in hits]}"
            status = stub.Status(orchestrator_pb2.StatusRequest(), timeout=10)
            assert status.files == 12 and status.dim == 384  # 10 indexed, 2 recorded as skipped
            from codeindex_common.pb import common_pb2

            found = stub.FindSymbol(common_pb2.FindSymbolRequest(name="InvoiceRepository.save"), timeout=10)
            assert [(d.path, d.definition.qualified_name, d.definition.start_line, d.definition.end_line)
                    for d in found.definitions] == [("billing/invoice.py", "InvoiceRepository.save", 17, 18)]
            with pytest.raises(grpc.RpcError) as err:
                stub.Search(orchestrator_pb2.QueryRequest(query="  "), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # an exact identifier comes first in hybrid mode (the default)
            hits = stub.Search(orchestrator_pb2.QueryRequest(query="compute_invoice_total", k=5), timeout=30).hits
            assert (hits[0].symbol, hits[0].path) == ("compute_invoice_total", "billing/invoice.py")
            assert "def compute_invoice_total" in hits[0].snippet
            # filters; an injection string as a filter value is matched literally: no rows, no error
            only_ts = stub.Search(orchestrator_pb2.QueryRequest(query="retry a request", k=10, path_glob="web/*.ts"),
                                  timeout=30).hits
            assert only_ts and all(h.path.startswith("web/") and h.path.endswith(".ts") for h in only_ts)
            for field in ("language", "path_glob", "symbol"):
                injected = orchestrator_pb2.QueryRequest(query="invoice", k=10, **{field: "x' OR '1'='1"})
                assert list(stub.Search(injected, timeout=30).hits) == [], field
            # the public Index reads only under the allowed roots (here: the served repository)
            (tmp_path / "outside").mkdir()
            (repo / "escape").symlink_to(tmp_path / "outside")
            for path in (str(tmp_path), f"{repo}/../outside", str(repo / "escape"), "/etc"):
                with pytest.raises(grpc.RpcError) as err:
                    list(stub.Index(orchestrator_pb2.IndexRequest(path=path), timeout=30))
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, path
            (repo / "escape").unlink()
            # inside the root: a missing directory is NOT_FOUND, a file INVALID_ARGUMENT
            for path, code in ((repo / "no-such-dir", grpc.StatusCode.NOT_FOUND),
                               (repo / "billing" / "invoice.py", grpc.StatusCode.INVALID_ARGUMENT)):
                with pytest.raises(grpc.RpcError) as err:
                    list(stub.Index(orchestrator_pb2.IndexRequest(path=str(path)), timeout=30))
                assert err.value.code() == code, path
            for bad in (orchestrator_pb2.QueryRequest(query="invoice", kind="x' OR '1'='1"),
                        orchestrator_pb2.QueryRequest(query="invoice", k=5000),
                        orchestrator_pb2.QueryRequest(query="invoice", mode=2, min_score=0.5)):  # keyword
                with pytest.raises(grpc.RpcError) as err:
                    stub.Search(bad, timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    finally:
        assert api.stop() == 0


def test_live_view_names_the_bottleneck():
    from orchestrator.cli import live_view
    from orchestrator.pipeline import Progress

    p = Progress(files_total=10, files_parsed=10, chunks_embedded=50, chunks_done=40)
    p.started -= 10  # ten seconds into the run
    p.waits.finished["parse"] = 1.0  # parsing was over after one second
    p.waits.add("write", "starved", 8.0)
    p.waits.add("embed", "starved", 0.5)
    view = live_view(p)
    assert view.startswith("parse 10 files/s | embed 5 chunks/s | write 4 chunks/s")
    assert view.endswith("bottleneck: embed")


def test_index_progress_over_the_api_counts_every_file_to_the_end(tmp_path, embed_service, start_service):
    """The public Index's messages share one files_total, the files the run reads (skipped ones too), and
    the last one says all of them are done: the total does not shrink to the files indexed at the end."""
    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    for i in range(3):
        (repo / "pkg" / f"mod{i}.py").write_text(f"def helper_{i}(x):\n    return x + {i}\n")
    (repo / "pkg" / "blob.bin").write_bytes(b"\0\1\2binary")  # skipped: binary
    (repo / "pkg" / "empty.py").write_text("\n")  # skipped: empty
    parser = start_service("parser", "--workers", "1")
    store = start_service("store", "--uri", str(tmp_path / "index"))
    api = OrchestratorServe(tmp_path, repo, "--parser-addr", parser.address, "--embed-addr",
                            embed_service.address, "--store-addr", store.address, timeout=60)
    try:
        with grpc.insecure_channel(api.address) as ch:
            stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
            updates = list(stub.Index(orchestrator_pb2.IndexRequest(path=str(repo)), timeout=120))
            (repo / "pkg" / "mod0.py").write_text("def helper_0(x):\n    return x * 10\n")
            again = list(stub.Index(orchestrator_pb2.IndexRequest(path=str(repo)), timeout=120))
    finally:
        assert api.stop() == 0
    last = updates[-1]
    assert last.done and last.summary.files_indexed == 3 and dict(last.summary.files_skipped) == {
        "binary": 1, "empty": 1}
    assert {u.files_total for u in updates} == {5}, [(u.files_done, u.files_total) for u in updates]
    assert last.files_done == 5 and last.chunks_done == 3
    # a run with one change: every file is looked at (four of them unchanged), and all are done at the end
    assert again[-1].summary.files_indexed == 1 and again[-1].summary.files_unchanged == 4
    assert {u.files_total for u in again} == {5} and again[-1].files_done == 5


def test_every_definition_of_a_name_from_the_cli(tmp_path):
    """`search --symbol NAME` with no query lists every definition, merged small methods included, with
    its own lines; a search for the name itself puts a definition first."""
    repo = tmp_path / "repo"
    (repo / "lib").mkdir(parents=True)
    (repo / "lib" / "greeter.rb").write_text(RUBY)
    (repo / "lib" / "names.py").write_text("def name(user):\n    return user.name\n\n\nprint(name)\n")
    index(repo)
    listed = json.loads(cli("search", "--symbol", "name", "--path", str(repo), "--json").stdout)
    assert [(d["path"], d["qualified_name"], d["start_line"], d["end_line"], d["kind"]) for d in listed] == [
        ("lib/greeter.rb", "Greeter.name", 5, 7, "method"), ("lib/names.py", "name", 1, 2, "function")]
    text = cli("search", "--symbol", "Greeter#name", "--path", str(repo)).stdout
    assert text.strip() == "lib/greeter.rb:5-7  Greeter.name (method, ruby)"
    hits = search(repo, "Greeter.name")
    assert (hits[0]["path"], hits[0]["start_line"]) == ("lib/greeter.rb", 2) and 0 < hits[0]["score"] <= 1
    grouped = cli("search", "greet someone loudly", "--path", str(repo), "--context", "1").stdout
    assert grouped.splitlines()[0] == "lib/greeter.rb" and "│" in grouped


def _log_times(path: Path, needle: str) -> list[str]:
    """The timestamps of a service log's lines that hold ``needle`` (the log's own format sorts by time)."""
    if not path.exists():
        return []
    return [line[:23] for line in path.read_text().splitlines() if needle in line]


def test_the_run_starts_the_parser_only_for_changed_files_and_stops_it_before_the_upkeep(tmp_path):
    """The embedded run's services on demand: a run that parses nothing never starts the parser, and the
    parser and embedder of a run that wrote something stop before the store's upkeep (its memory peak)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def alpha(value):\n    return value + 1\n")
    logs = repo / ".codeindex" / "logs"
    hashing = {"CODEINDEX_EMBED_BACKEND": "hash"}
    assert index(repo, env=hashing)["files_indexed"] == 1
    started = len(_log_times(logs / "parser.log", "serving parser"))
    assert started == 1
    assert index(repo, env=hashing)["files_unchanged"] == 1
    assert len(_log_times(logs / "parser.log", "serving parser")) == started, "a run with nothing to parse"
    # nor the others: the last run's marker answers (orchestrator.settled)
    assert len(_log_times(logs / "embed.log", "serving embed")) == 1
    assert len(_log_times(logs / "store.log", "serving store")) == 1

    (repo / "a.py").write_text("def alpha(value):\n    return value + 2\n")
    assert index(repo, env=hashing)["files_indexed"] == 1
    assert len(_log_times(logs / "parser.log", "serving parser")) == started + 1
    upkeep = _log_times(logs / "store.log", "upkeep:")[-1]
    for stage in ("parser", "embed"):
        stopped = _log_times(logs / f"{stage}.log", f"shutting down {stage}")[-1]
        assert stopped <= upkeep, f"the {stage} was still running during the upkeep"



def test_settings_out_of_range_and_a_missing_index_are_refused_before_anything_starts(tmp_path):
    for args, said in ((("index", str(tmp_path), "--embed-streams", "0"), "--embed-streams must be 1 or more"),
                       (("index", str(tmp_path), "--write-streams", "-1"), "--write-streams must be 1 or more"),
                       (("index", str(tmp_path), "--max-file-bytes", "-1"), "--max-file-bytes must be 1 or more"),
                       (("index", str(tmp_path), "--rpc-timeout", "0"), "--rpc-timeout must be more than 0"),
                       (("index", str(tmp_path), "--rpc-timeout", "inf"), "--rpc-timeout must be more than 0"),
                       (("index", str(tmp_path), "--index-metrics-port", "70000"), "from -1 to 65535"),
                       (("status", "--path", str(tmp_path)), "no index in"),
                       (("search", "", "--path", str(tmp_path), "--store-addr", "127.0.0.1:1"),
                        "search needs a query (or --symbol NAME"),
                       (("search", "x", "--path", str(tmp_path), "--index-dir", str(tmp_path / "ix")),
                        f"--index-dir {tmp_path / 'ix'}` first")):
        run = cli(*args, check=False, timeout=60)
        assert run.returncode == 1 and said in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing was made: no index directory, no logs
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = cli("index", str(tmp_path), "--index-metrics-port", str(taken.getsockname()[1]), check=False,
                  timeout=60)
    assert run.returncode == 1 and "could not serve metrics on 127.0.0.1:" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
