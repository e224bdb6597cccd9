"""The live index and one writer per index, with real parts: `orchestrator watch` (its own parser,
embedder and store, the real model) on a real repository, the CLI beside it, real file events."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import EXE, ROOT, cli, search, stop_process
from tests.test_faults import assert_equals_a_fresh_index_of

pytestmark = pytest.mark.slow
class Watch:
    """`orchestrator watch REPO --json`: its runs' summaries, one JSON line each, as they come."""

    def __init__(self, repo: Path):
        self.proc = subprocess.Popen([EXE, "watch", str(repo), "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _read(stream, put) -> None:
        for line in stream:
            put(line)

    def next_run(self, timeout: float = 120) -> dict:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"no run within {timeout}s; stderr:\n{''.join(self.stderr)[-3000:]}") from None

    def until(self, predicate, timeout: float = 60) -> dict:
        """Runs until one satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.next_run(max(1.0, deadline - time.monotonic()))
            if predicate(run):
                return run

    def stop(self) -> int:
        return stop_process(self.proc)


def make_repo(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "billing.py").write_text("def compute_invoice_total(items):\n    return sum(items)\n")
    (root / "pkg" / "mail.py").write_text("def send_welcome_email(user):\n    return f'hello {user}'\n")
    (root / ".gitignore").write_text("ignored/\n")
    return root


def test_a_watched_repository_stays_searchable_and_has_one_writer(tmp_path):
    repo = make_repo(tmp_path / "repo")
    watch = Watch(repo)
    try:
        first = watch.next_run(timeout=300)  # the run that brings the index up to date
        assert first["files_indexed"] == 3 and first["index_files"] == 3

        # a saved edit: indexed by the watcher, found by a search that goes through the watcher's API
        (repo / "pkg" / "billing.py").write_text(
            "def compute_invoice_total(items):\n    return sum(items)\n\n\n"
            "def apply_loyalty_discount(total, years):\n    return total * (1 - min(years, 10) / 100)\n")
        edited = watch.until(lambda r: r["files_indexed"] >= 1)
        assert edited["chunks_embedded"] >= 1 and edited["files_seen"] <= 2  # the changed path alone
        hits = search(repo, "apply_loyalty_discount")
        assert hits[0]["symbol"] == "apply_loyalty_discount"
        status = json.loads(cli("status", "--path", str(repo), "--json").stdout)
        assert "orchestrator watch" in status["served_by"] and status["chunks"] >= 4

        # a rename reuses the vectors; a deleted file's rows go; a removed folder's rows go; ignored paths
        # and the index's own folder are never indexed
        (repo / "pkg" / "mail.py").rename(repo / "pkg" / "email.py")
        moved = watch.until(lambda r: r["files_removed"] >= 1 and r["files_indexed"] >= 1)
        assert moved["chunks_embedded"] == 0
        assert {h["path"] for h in search(repo, "send a welcome email")} >= {"pkg/email.py"}
        (repo / "extra" / "deep").mkdir(parents=True)
        (repo / "extra" / "deep" / "tool.py").write_text("def rotate_api_credentials(key):\n    return key[::-1]\n")
        watch.until(lambda r: r["files_indexed"] >= 1)
        (repo / "ignored").mkdir()
        (repo / "ignored" / "secret.py").write_text("def leaked_secret_helper():\n    return 1\n")
        (repo / "loop").symlink_to(repo / "loop")  # a symbolic link loop: never followed
        os.mkfifo(repo / "pipe")  # not a regular file: skipped, never read (a read would block)
        shutil.rmtree(repo / "extra")
        watch.until(lambda r: r["files_removed"] >= 1)
        # a file replaced by a symbolic link loop: its rows go, the watcher goes on
        (repo / "pkg" / "email.py").unlink()
        (repo / "pkg" / "email.py").symlink_to(repo / "pkg" / "email.py")
        watch.until(lambda r: r["files_removed"] >= 1)
        (repo / "pkg" / "email.py").unlink()
        (repo / "pkg" / "email.py").write_text("def send_welcome_email(user):\n    return f'hello {user}'\n")
        watch.until(lambda r: r["files_indexed"] >= 1)
        paths = {h["path"] for q in ("rotate api credentials", "leaked secret helper", "send a welcome email")
                 for h in search(repo, q)}
        assert "extra/deep/tool.py" not in paths and "ignored/secret.py" not in paths and "pkg/mail.py" not in paths

        # a changed .gitignore: what it now ignores leaves the index, what it no longer ignores joins it
        (repo / ".gitignore").write_text("pkg/email.py\n")
        watch.until(lambda r: r["files_removed"] >= 1 and r["files_indexed"] >= 1)
        names = {h["path"] for q in ("send a welcome email", "leaked secret helper") for h in search(repo, q)}
        assert "pkg/email.py" not in names and "ignored/secret.py" in names, names
        (repo / ".gitignore").write_text("ignored/\n")
        watch.until(lambda r: r["files_removed"] >= 1 and r["files_indexed"] >= 1)
        names = {h["path"] for q in ("send a welcome email", "leaked secret helper") for h in search(repo, q)}
        assert "pkg/email.py" in names and "ignored/secret.py" not in names, names

        # one writer: a second watcher is refused, naming the first; an index run goes through it
        second = cli("watch", str(repo), check=False, timeout=120)
        assert second.returncode == 1 and "held by `orchestrator watch`" in second.stderr
        through = cli("index", str(repo), "--json")
        assert "it runs this index" in through.stderr
        summary = json.loads(through.stdout.strip().splitlines()[-1])
        assert summary["files_unchanged"] >= 3
        # and says what the index holds, as a run of its own does
        status = json.loads(cli("status", "--path", str(repo), "--json").stdout)
        assert (summary["index_chunks"], summary["index_files"], summary["model_id"]) == \
            (status["chunks"], status["files"], status["model_id"]) and summary["index_chunks"] > 0
        assert watch.proc.poll() is None  # the watcher outlived all of the above
    finally:
        code = watch.stop()
    assert code == 0, "".join(watch.stderr)[-3000:]
    assert not (repo / ".codeindex" / "owner.json").exists()  # the lock is let go with the process
    # a lock left by a dead process is taken over: kill -9 a watcher, then index without asking anyone
    dead = Watch(repo)
    try:
        dead.next_run(timeout=300)
    finally:
        dead.proc.kill()
        dead.proc.wait()
    again = json.loads(cli("index", str(repo), "--json").stdout.strip().splitlines()[-1])
    assert again["files_indexed"] == again["files_removed"] == 0 and again["files_unchanged"] == 3


def test_a_changed_path_that_arrives_during_a_run_is_indexed_again(tmp_path):
    """The watcher's own logic, with real file events and a stand-in for the index run that holds the
    first run open until a second edit has been seen."""
    import asyncio

    from codeindex_common.model import IndexSummary
    from orchestrator.watch import Watcher

    repo = make_repo(tmp_path / "repo")
    batches: list[set[str]] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def index(paths: set[str]) -> IndexSummary:
            batches.append(set(paths))
            if len(batches) == 1:
                (repo / "pkg" / "billing.py").write_text("def compute_invoice_total(items):\n    return 0\n")
                await release.wait()  # the run goes on while the file changes again
            return IndexSummary(files_indexed=len(paths))

        watcher = Watcher(str(repo), index, step_ms=50, debounce_ms=300)
        task = asyncio.create_task(watcher.run())
        await asyncio.wait_for(watcher.ready.wait(), 10)
        (repo / "pkg" / "mail.py").write_text("def send_welcome_email(user):\n    return user\n")
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if batches and watcher.pending:
                    break
            assert batches and watcher.pending, "the edit made during the first run was not seen as pending"
            release.set()
            for _ in range(100):
                await asyncio.sleep(0.05)
                if len(batches) >= 2:
                    break
            assert len(batches) >= 2, "the pending path was not indexed again"
        finally:
            release.set()
            watcher.stop()
            await task

    asyncio.run(scenario())
    assert batches[0] == {"pkg/mail.py"}
    assert "pkg/billing.py" in batches[1], batches


def test_a_locally_started_service_that_dies_is_started_again(tmp_path):
    """The embedded default supervises what it started: kill -9 of the parser, and the same address
    serves again."""
    import signal

    from codeindex_common.channels import wait_for_serving
    from codeindex_common.launcher import LocalServices

    with LocalServices(["parser"], str(tmp_path), timeout=120) as svc:
        first = svc.children["parser"].proc.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while svc.children["parser"].proc.pid == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert svc.children["parser"].proc.pid != first and svc.restarts == {"parser": 1}
        wait_for_serving(svc.address("parser"), 60)
        # a service that stopped cleanly (SIGTERM to the process group, as a client ending an `mcp` server
        # sends) is not started again while this process has time to stop too; only after that wait
        second = svc.children["parser"].proc
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        time.sleep(2 * svc.POLL_SECONDS + 0.5)
        assert svc.children["parser"].proc is second and svc.restarts == {"parser": 1}
        deadline = time.monotonic() + svc.CLEAN_EXIT_WAIT_S + 60
        while svc.children["parser"].proc is second and time.monotonic() < deadline:
            time.sleep(0.1)
        assert svc.restarts == {"parser": 2}
        wait_for_serving(svc.address("parser"), 60)



def test_a_lazy_local_service_starts_when_first_needed_and_a_released_one_stops(tmp_path):
    """LocalServices(lazy=...): nothing spawned until ready() asks, at the address said before; release()
    stops it (the supervisor does not bring it back) and ready() starts it again."""
    from codeindex_common.channels import wait_for_serving
    from codeindex_common.launcher import LocalServices

    with LocalServices(["parser"], str(tmp_path), timeout=120, lazy=["parser"]) as svc:
        address = svc.address("parser")
        assert address.startswith("unix:") and svc.children == {}
        svc.ready("parser")
        wait_for_serving(address, 10)
        first = svc.children["parser"].proc
        svc.release("parser")
        assert first.poll() is not None and "parser" not in svc.children
        time.sleep(2 * svc.POLL_SECONDS)
        assert svc.children == {} and svc.restarts == {}
        svc.ready("parser")
        assert svc.children["parser"].proc.pid != first.pid
        wait_for_serving(address, 10)

def test_a_one_shot_index_finishes_when_its_local_embedder_is_killed(tmp_path):
    """kill -9 of the locally started embedder in the middle of `orchestrator index`: the embedded
    default starts it again at the same address, the run carries on and finishes, and the index equals
    a fresh full index."""
    import psutil


    repo = tmp_path / "repo"
    for i in range(40):
        (repo / f"m{i}").mkdir(parents=True)
        (repo / f"m{i}" / "mod.py").write_text(
            "".join(f"def helper_{i}_{j}(value):\n    return value * {j} + {i}\n\n\n" for j in range(12)))
    run = subprocess.Popen([EXE, "index", str(repo), "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and run.poll() is None:
            embedders = [p for p in psutil.Process(run.pid).children()
                         if "embed_svc" in " ".join(p.cmdline())]
            log = repo / ".codeindex" / "logs" / "embed.log"
            if embedders and log.exists() and "loaded" in log.read_text(errors="replace"):
                time.sleep(1.0)  # the run is embedding
                killed = embedders[0].pid
                os.kill(killed, 9)
            time.sleep(0.1)
        out, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            stop_process(run)
    assert killed and run.returncode == 0, err[-3000:]
    assert "the local embed service exited with code -9; starting it again" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["files_indexed"] == 40
    assert_equals_a_fresh_index_of(repo, tmp_path)


def test_a_name_the_watch_cannot_decode_does_not_stop_the_watcher(tmp_path):
    """watchfiles cannot decode a name that is not UTF-8 and ends its watch; the watcher watches again,
    runs over everything (changes made meanwhile were not seen), and goes on seeing changes."""
    import asyncio

    from codeindex_common.model import IndexSummary
    from orchestrator.watch import Watcher

    calls: list = []

    async def scenario() -> None:
        async def index(paths):
            calls.append(paths)
            return IndexSummary()

        watcher = Watcher(str(tmp_path), index, step_ms=50, debounce_ms=300, retry_s=0.5)
        task = asyncio.create_task(watcher.run())
        await asyncio.wait_for(watcher.ready.wait(), 10)
        try:
            with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.py"), "wb") as fh:
                fh.write(b"y = 2\n")
            for _ in range(100):
                await asyncio.sleep(0.1)
                if None in calls:
                    break
            assert None in calls, calls  # the run over everything
            (tmp_path / "later.py").write_text("z = 1\n")
            for _ in range(100):
                await asyncio.sleep(0.1)
                if any(c and "later.py" in c for c in calls):
                    break
            assert any(c and "later.py" in c for c in calls), calls
        finally:
            watcher.stop()
            await task

    asyncio.run(scenario())
