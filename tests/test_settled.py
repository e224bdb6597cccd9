"""A run that changes nothing starts no service (orchestrator/settled.py): it is answered from the marker
the last complete run left, and only while everything the marker vouches for still holds. The end-to-end
checks run `orchestrator index` with the real services and the instant ``hash`` backend, and one with the
real model (the refusal of another model)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestrator import settled
from orchestrator.statcache import StatCache
from orchestrator.walker import walk
from tests.conftest import cli, index
from tests.test_statcache import HASH, age, later, make_repo


def service_logs(repo: Path) -> dict[str, int]:
    """Each local service's log and its size: a service started writes to its log."""
    return {p.name: p.stat().st_size for p in (repo / ".codeindex" / "logs").glob("*.log")}


def without(summary: dict, *keys: str) -> dict:
    return {k: v for k, v in summary.items() if k not in keys}


@pytest.mark.slow
def test_a_run_that_changes_nothing_starts_no_service_and_answers_as_a_normal_run_would(tmp_path):
    repo = make_repo(tmp_path / "repo", 6)
    (repo / "data.bin").write_bytes(b"\x00\x01binary" * 50)
    (repo / "empty.py").write_text("")
    age(repo)
    first = index(repo, env=HASH)
    marker = repo / ".codeindex" / settled.MARKER
    assert first["files_indexed"] == 6 and marker.is_file()
    assert json.loads(marker.read_text())["racy"] == {}  # every file older than the racy window

    marker.unlink()
    asked = index(repo, env=HASH)  # a normal run: it asks the store, and leaves the marker again
    assert asked["files_unchanged"] == 8 and asked["files_indexed"] == 0 and marker.is_file()
    logs = service_logs(repo)
    assert {"embed.log", "store.log"} <= set(logs)
    answered = index(repo, env=HASH)
    assert without(answered, "seconds") == without(asked, "seconds")
    assert service_logs(repo) == logs  # no service started
    age(repo, 600)  # a touch of every file (a branch checkout): hashing alone
    touched = index(repo, env=HASH)
    assert touched["files_hashed"] == 7 and touched["files_unchanged"] == 8 and touched["files_indexed"] == 0
    assert service_logs(repo) == logs

    # a file deleted, one added, one edited: each is found (a normal run), and the marker is written again
    (repo / "mod0.py").unlink()
    assert index(repo, env=HASH)["files_removed"] == 1
    (repo / "added.py").write_text("def added(value):\n    return value\n")
    assert index(repo, env=HASH)["files_indexed"] == 1
    (repo / "mod1.py").write_text("def helper_1(value):\n    return value * 99\n")
    edited = index(repo, env=HASH)
    assert edited["files_indexed"] == 1 and edited["chunks_embedded"] == 1 and marker.is_file()


@pytest.mark.slow
def test_a_file_just_written_is_hashed_again_by_the_run_the_marker_answers(tmp_path):
    """Racy files (hashed within the stat cache's window of their change) are not in the cache: the marker
    keeps their hashes, and the run it answers reads them again, trusting them only if they hash the same."""
    repo = make_repo(tmp_path / "repo", 4)
    age(repo, -3600, settle=False)  # changed "in an hour": within the window whenever the run hashes them
    first = index(repo, env=HASH)
    racy = json.loads((repo / ".codeindex" / settled.MARKER).read_text())["racy"]
    assert first["files_indexed"] == 4 and sorted(racy) == ["mod0.py", "mod1.py", "mod2.py", "mod3.py"]
    logs = service_logs(repo)
    age(repo)
    again = index(repo, env=HASH)
    assert again["files_hashed"] == 4 and again["files_unchanged"] == 4 and again["files_indexed"] == 0
    assert service_logs(repo) == logs
    assert json.loads((repo / ".codeindex" / settled.MARKER).read_text())["racy"] == {}
    assert index(repo, env=HASH)["files_hashed"] == 0


@pytest.mark.slow
def test_the_marker_never_hides_a_change_to_the_index_or_the_model(tmp_path):
    import lancedb

    repo = make_repo(tmp_path / "repo", 5)
    age(repo)
    index(repo, env=HASH)
    # another writer drops a file's row from the index: the marker no longer holds, the file is indexed again
    lancedb.connect(str(repo / ".codeindex" / "lancedb")).open_table("files").delete("path = 'mod2.py'")
    healed = index(repo, env=HASH)
    assert healed["files_indexed"] == 1 and healed["index_files"] == 5
    assert index(repo, env=HASH)["files_indexed"] == 0

    # the embedder's settings are another model's: refused, as without a marker
    refused = cli("index", str(repo), "--json", check=False)
    assert refused.returncode == 1 and "--reindex" in refused.stderr, refused.stderr[-2000:]


@pytest.mark.slow
def test_with_the_real_model_the_run_after_a_full_index_starts_no_service(tmp_path):
    """The default embedder (onnx) notes each use of its export by touching the export's export.json; the
    marker vouches for the exports by their content, so that touch does not undo it (it did: every run after
    one that started the embedder took a second, starting the services, instead of a few milliseconds)."""
    repo = make_repo(tmp_path / "repo", 3)
    age(repo)
    first = index(repo)
    assert first["files_indexed"] == 3 and first["chunks_embedded"] > 0
    logs = service_logs(repo)
    assert "embed.log" in logs
    again = index(repo)
    assert again["files_unchanged"] == 3 and again["files_indexed"] == 0
    assert service_logs(repo) == logs  # no service started


def test_touching_an_onnx_export_keeps_the_fingerprint_and_changing_its_content_does_not(tmp_path, monkeypatch):
    import os

    export = tmp_path / "onnx" / "abc" / "export.json"
    export.parent.mkdir(parents=True)
    export.write_text('{"model_id": "m"}')
    monkeypatch.setenv("CODEINDEX_EMBED_ONNX_CACHE", str(tmp_path / "onnx"))
    fingerprint = settled.embedder_fingerprint()
    os.utime(export, (1, 1))  # used: touched
    assert settled.embedder_fingerprint() == fingerprint
    export.write_text('{"model_id": "m+int8tok"}')  # exported again, another model id
    assert settled.embedder_fingerprint() != fingerprint


def test_the_manifest_must_be_the_cache_and_the_racy_files_exactly(tmp_path):
    repo = make_repo(tmp_path / "repo", 3)
    cache = StatCache(str(tmp_path / "stat-cache"), str(repo))
    for e in walk(str(repo)):
        if e.path != "mod1.py":
            cache.record(e, f"h-{e.path}", later())
    cache.save(iter(()))
    racy = {"mod1.py": "h-mod1.py"}

    async def pages(*pairs):
        yield list(pairs)

    def same(*pairs, racy=racy) -> bool:
        return asyncio.run(settled.manifest_is(pages(*pairs), StatCache(cache.path, cache.root), racy))

    every = [(p, f"h-{p}") for p in ("mod0.py", "mod1.py", "mod2.py")]
    assert same(*every)
    assert not same(*every[:2])  # one indexed file less
    assert not same(*every, ("mod3.py", "h"))  # one more
    assert not same(every[0], ("mod1.py", "other"), every[2])  # another hash
    assert not same(*every, racy={})  # a racy file the marker would not hash again
    assert not same(every[0], ("mod1.py", ""), every[2])  # a write still pending


def test_the_marker_holds_only_while_the_index_the_cache_and_the_embedder_are_as_it_says(tmp_path, monkeypatch):
    where = tmp_path / "index"
    (where / "lancedb" / "files.lance" / "_versions").mkdir(parents=True)
    (where / "lancedb" / "files.lance" / "_versions" / "1.manifest").write_text("")
    cache = where / "stat-cache"
    cache.write_text("x")
    monkeypatch.setenv("CODEINDEX_EMBED_BACKEND", "hash")
    fingerprint = settled.embedder_fingerprint()
    marker = settled.Settled(fingerprint, "/repo", settled.table_versions(str(where)),
                             settled.file_identity(str(cache)), 3, 1, "m", {})
    marker.write(str(where))
    read = settled.Settled.read(str(where))
    assert read == marker and read.holds(str(where), str(cache), fingerprint, "/repo")
    assert not read.holds(str(where), str(cache), fingerprint, "/another-repo")

    monkeypatch.setenv("CODEINDEX_EMBED_DTYPE", "fp32")
    assert settled.embedder_fingerprint() != fingerprint  # another setting of the embedder
    monkeypatch.setenv("CODEINDEX_EMBED_BACKEND", "triton")
    assert settled.embedder_fingerprint() == ""  # its model is the server's: never vouched for
    assert not read.holds(str(where), str(cache), "", "/repo")

    (where / "lancedb" / "files.lance" / "_versions" / "2.manifest").write_text("")  # a commit
    assert not read.holds(str(where), str(cache), fingerprint, "/repo")
    marker.versions = settled.table_versions(str(where))
    assert marker.holds(str(where), str(cache), fingerprint, "/repo")
    cache.write_text("y")  # the stat cache rewritten
    assert not marker.holds(str(where), str(cache), fingerprint, "/repo")

    for unusable in ("{not json", "[]", json.dumps({**json.loads((where / settled.MARKER).read_text()), "format": 1})):
        (where / settled.MARKER).write_text(unusable)
        assert settled.Settled.read(str(where)) is None
    settled.clear(str(where))
    assert not (where / settled.MARKER).exists()
