"""Fault injection with real processes: during an index run of a real
repository, `kill -9` one stage's service, restart it at the same address,
and the run still finishes (calls retried, broken streams resumed from the
last acknowledged item); the table then equals a fresh full index."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServiceProcess, cli
from tests.test_crash import read_chunks, read_files, run_index
from tests.test_services import counter

pytestmark = pytest.mark.slow

PACKAGES = ("codeindex_common", "store_svc", "orchestrator", "parser_svc", "embed_svc")
# when to kill each stage: once it has done this much of the run (a counter on its own metrics page)
PROGRESS = {"parser": ("parser_files_total", 2), "embed": ("embed_texts_total", 16),
            "store": ("store_files_written_total", 3)}


def assert_equals_fresh_index(uri: str, reference) -> None:
    """The same (path, content hash) rows and files rows as a fresh full index, and no duplicate chunk."""
    ref_chunks, ref_files = reference
    chunks = read_chunks(uri)
    assert sorted((p, h) for p, _, h in chunks) == sorted((p, h) for p, _, h in ref_chunks)
    assert not [k for k, n in collections.Counter((p, i) for p, i, _ in chunks).items() if n > 1], "duplicates"
    assert sorted(read_files(uri)) == sorted(ref_files)


def assert_equals_a_fresh_index_of(repo: Path, tmp: Path) -> None:
    """``repo``'s own index (``.codeindex``) equals a fresh full index of it, made apart under ``tmp``."""
    fresh = tmp / "fresh"
    cli("index", str(repo), "--json", "--index-dir", str(fresh))
    assert_equals_fresh_index(str(repo / ".codeindex" / "lancedb"),
                              (read_chunks(str(fresh / "lancedb")), read_files(str(fresh / "lancedb"))))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "repo"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def reference(repo, embed_service, tmp_path_factory):
    """A fresh full index of the repository: (path, content hash) rows and files rows."""
    tmp = tmp_path_factory.mktemp("reference")
    parser = ServiceProcess("parser", tmp, "--workers", "1")
    store = ServiceProcess("store", tmp, "--uri", str(tmp / "lancedb"))
    try:
        run_index(repo, parser.address, embed_service.address, store.address)
    finally:
        parser.stop()
        store.stop()
    return read_chunks(str(tmp / "lancedb")), read_files(str(tmp / "lancedb"))


@pytest.mark.parametrize("victim, how", [("parser", "SIGKILL"), ("embed", "SIGKILL"), ("store", "SIGKILL"),
                                         ("store", "SIGTERM")])
def test_a_killed_and_restarted_stage_does_not_stop_the_run(victim, how, repo, reference, embed_service, tmp_path):
    """SIGKILL: the service dies at once. SIGTERM: it shuts down gracefully (NOT_SERVING, no new calls, the
    calls in flight get --grace-seconds) and exits 0; either way the run goes on once it is back, and no
    write is lost or doubled."""
    uri = str(tmp_path / "lancedb")
    args = {"parser": ("--workers", "1"), "embed": (), "store": ("--uri", uri, "--flush-rows", "32",
                                                                  "--flush-ms", "50", "--grace-seconds", "2")}
    sockets = {stage: f"unix:{tmp_path / stage}.sock" for stage in args}
    running: dict[str, ServiceProcess] = {}

    def start(stage: str) -> ServiceProcess:
        running[stage] = ServiceProcess(stage, tmp_path, "--listen", sockets[stage], *args[stage])
        return running[stage]

    for stage in ("parser", "store") + (("embed",) if victim == "embed" else ()):
        start(stage)
    embed_addr = sockets["embed"] if victim == "embed" else embed_service.address
    exe = str(Path(sys.executable).with_name("orchestrator"))
    orch = subprocess.Popen([exe, "index", str(repo), "--json", "--parser-addr", sockets["parser"],
                             "--embed-addr", embed_addr, "--store-addr", sockets["store"],
                             "--embed-request-texts", "8"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # kill -9 once the victim is well under way: some of its work done, most not
        port = running[victim].metrics_port if victim in running else embed_service.metrics_port
        name, enough = PROGRESS[victim]
        deadline = time.monotonic() + 300
        while counter(port, name) < enough:
            assert orch.poll() is None, orch.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"{victim} did no work in 300 s"
            time.sleep(0.01)
        running[victim].proc.send_signal(getattr(signal, how))
        code = running[victim].proc.wait(30)
        assert code == (0 if how == "SIGTERM" else -signal.SIGKILL), f"{victim} exited {code}"
        time.sleep(1.0)
        assert orch.poll() is None, "the run stopped at once instead of retrying"
        start(victim)  # the same address: the run picks it up again
        out, err = orch.communicate(timeout=600)
    finally:
        if orch.poll() is None:
            orch.kill()
            orch.communicate()
        for svc in running.values():
            svc.stop()
    assert orch.returncode == 0, err[-3000:]
    assert re.search(r"stream broke \(UNAVAILABLE\); resuming", err), err[-3000:]
    assert_equals_fresh_index(uri, reference)


def _sigint_at_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_killed_or_interrupted_orchestrator_is_resumed_by_the_next_run(how, repo, reference, embed_service,
                                                                          tmp_path):
    """kill -9 (or Ctrl-C) of the orchestrator mid-run; the next run converges to a fresh full index. The
    store is frozen (SIGSTOP) once it has written three files, so that the run is provably unfinished when the
    signal lands, however loaded the machine; it is thawed once the orchestrator had a second to act on the
    signal, so that a Ctrl-C that the run ignored would let it finish (exit 0).

    The orchestrator starts with SIGINT at its default disposition, as a command typed at a terminal does.
    A test run that a shell without job control put in the background (as CI's may be) inherits SIGINT
    ignored, and a Python started so ignores Ctrl-C for good, rightly (`nohup`, `cmd &`): three CI runs saw
    exit 0 for that reason alone."""
    uri = str(tmp_path / "lancedb")
    parser = ServiceProcess("parser", tmp_path, "--workers", "1")
    store = ServiceProcess("store", tmp_path, "--uri", uri, "--flush-rows", "1", "--flush-ms", "50")
    try:
        exe = str(Path(sys.executable).with_name("orchestrator"))
        cmd = [exe, "index", str(repo), "--json", "--parser-addr", parser.address, "--embed-addr",
               embed_service.address, "--store-addr", store.address, "--embed-request-texts", "8"]
        orch = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_sigint_at_default)
        deadline = time.monotonic() + 300
        while counter(store.metrics_port, "store_files_written_total") < 3:
            assert orch.poll() is None and time.monotonic() < deadline, orch.communicate()[1][-3000:]
            time.sleep(0.01)
        store.proc.send_signal(signal.SIGSTOP)
        try:
            assert orch.poll() is None, "the run had finished before the store was frozen"
            orch.send_signal(getattr(signal, how))
            time.sleep(1.0)
        finally:
            store.proc.send_signal(signal.SIGCONT)
        out, err = orch.communicate(timeout=60)
        if how == "SIGINT":  # Ctrl-C: a clean stop that says how to resume
            assert orch.returncode == 130 and "run the same command again to resume" in err, \
                f"exit {orch.returncode}; stdout: {out[-1000:]}; stderr: {err[-3000:]}"
        else:
            assert orch.returncode == -signal.SIGKILL
        written = counter(store.metrics_port, "store_files_written_total")
        assert written < len(reference[1]), "the run had finished before it was stopped"
        summary = run_index(repo, parser.address, embed_service.address, store.address)
        assert summary["files_indexed"] > 0
    finally:
        parser.stop()
        store.stop()
    assert_equals_fresh_index(uri, reference)


def test_a_hung_stage_is_reopened_and_one_that_stays_hung_fails_the_run_naming_it(repo, reference, embed_service,
                                                                                   tmp_path):
    """SIGSTOP: the process keeps its sockets but answers nothing (a hung replica). A stream that answers
    none of its items for --rpc-timeout is reopened like a broken one, so a short hang only delays the
    run; a stage that stays hung fails it after --retry-seconds, naming the stage, and the next run
    converges to a fresh full index."""
    uri = str(tmp_path / "lancedb")
    parser = ServiceProcess("parser", tmp_path, "--workers", "1")
    store = ServiceProcess("store", tmp_path, "--uri", uri, "--flush-rows", "32", "--flush-ms", "50")
    embed = ServiceProcess("embed", tmp_path)
    exe = str(Path(sys.executable).with_name("orchestrator"))

    def index(embed_addr: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([exe, "index", str(repo), "--json", "--parser-addr", parser.address,
                                 "--embed-addr", embed_addr, "--store-addr", store.address,
                                 "--embed-request-texts", "8", *extra],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def hang_when_busy(victim: ServiceProcess, port: int, name: str, enough: int, orch) -> None:
        deadline = time.monotonic() + 300
        while counter(port, name) < enough:
            assert orch.poll() is None, orch.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"no {name} in 300 s"
            time.sleep(0.01)
        victim.proc.send_signal(signal.SIGSTOP)

    try:
        # a 10 s hang of the embedder, past the 5 s deadline: the run waits, reopens, and finishes
        orch = index(embed.address, "--rpc-timeout", "5")
        hang_when_busy(embed, embed.metrics_port, "embed_texts_total", 16, orch)
        time.sleep(10)
        assert orch.poll() is None, "the run stopped during the hang"
        embed.proc.send_signal(signal.SIGCONT)
        out, err = orch.communicate(timeout=600)
        assert orch.returncode == 0, err[-3000:]
        assert re.search(r"embed stream broke \(DEADLINE_EXCEEDED\); resuming", err), err[-3000:]

        # the store hung for good, from its first writes of the next run: a clean failure that names it
        parser_files = counter(parser.metrics_port, "parser_files_total")
        shutil.copy(repo / "orchestrator" / "cli.py", repo / "orchestrator" / "cli_copy.py")  # new work
        try:
            orch = index(embed_service.address, "--rpc-timeout", "2", "--retry-seconds", "4")
            hang_when_busy(store, parser.metrics_port, "parser_files_total", parser_files + 1, orch)
            started = time.monotonic()
            _, err = orch.communicate(timeout=120)
            assert orch.returncode == 1, err[-3000:]
            assert re.search(r"the store stage at \S+ failed: DEADLINE_EXCEEDED.*still failing after", err), \
                err[-3000:]
            assert time.monotonic() - started < 60
        finally:
            store.proc.send_signal(signal.SIGCONT)
            (repo / "orchestrator" / "cli_copy.py").unlink()
        run_index(repo, parser.address, embed_service.address, store.address)
    finally:
        for svc in (embed, parser, store):
            svc.proc.send_signal(signal.SIGCONT)
            svc.stop()
    assert_equals_fresh_index(uri, reference)
