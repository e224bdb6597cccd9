"""The stat cache (orchestrator/statcache.py): a file is read and hashed only when its stat is not the
one recorded; a stale, corrupt or foreign cache costs time, never a missed change. The end-to-end checks
run `orchestrator index` with the real services (the instant ``hash`` backend: change detection is what
is measured, not the model)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from codeindex_common.model import CHUNKING_VERSION
from orchestrator.statcache import RACY_NS, StatCache
from orchestrator.walker import walk
from tests.conftest import index

HASH = {"CODEINDEX_EMBED_BACKEND": "hash"}
HOUR_NS = 3600 * 10**9


def make_repo(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"mod{i}.py").write_text(f"def helper_{i}(value):\n    return value * {i + 2}\n")
    return root


def age(repo: Path, seconds: float = 3600, settle: bool = True) -> None:
    """Every file's mtime ``seconds`` in the past; then (``settle``) a wait until their ctime (which only
    the kernel sets: to now) is older than RACY_NS too, so that a run trusts what it hashes."""
    then = time.time_ns() - int(seconds * 1e9)
    for p in repo.rglob("*.py"):
        os.utime(p, ns=(then, then))
    if settle:
        time.sleep(RACY_NS / 1e9 + 0.1)


def later() -> int:
    """A hashing time past the racy window of files changed up to now."""
    return time.time_ns() + RACY_NS + 1


def entries(repo: Path) -> dict:
    return {e.path: e for e in walk(str(repo))}


# ---------------------------------------------------------------- the cache alone


def saved(cache: StatCache) -> dict:
    """What a run that kept nothing but its own records would leave, read back: path -> record."""
    cache.save(iter(()))
    return {r[0]: r for r in StatCache(cache.path, cache.root).recorded()}


def test_a_recorded_stat_gives_the_hash_and_any_change_of_it_does_not(tmp_path):
    repo = make_repo(tmp_path / "repo")
    age(repo, settle=False)
    cache = StatCache(str(tmp_path / "cache"), str(repo))
    e = entries(repo)["mod0.py"]
    cache.record(e, "h0", later())
    records = saved(cache)
    assert cache.lookup(e, records["mod0.py"]) == "h0"
    (repo / "mod0.py").write_text("def helper_0(value):\n    return value * 9\n")  # same size, new mtime
    assert cache.lookup(entries(repo)["mod0.py"], records["mod0.py"]) is None
    # the mtime put back as it was: the ctime still moved
    os.utime(repo / "mod0.py", ns=(e.mtime_ns, e.mtime_ns))
    moved = entries(repo)["mod0.py"]
    assert (moved.size, moved.mtime_ns) == (e.size, e.mtime_ns) and cache.lookup(moved, records["mod0.py"]) is None


def test_a_racy_entry_is_not_trusted(tmp_path):
    """A file hashed within RACY_NS of its mtime could change again in the same timestamp tick with the
    same stat: it is not recorded, and the next run hashes it again."""
    repo = make_repo(tmp_path / "repo")
    age(repo, settle=False)
    e = entries(repo)["mod1.py"]
    cache = StatCache(str(tmp_path / "cache"), str(repo))
    changed = max(e.mtime_ns, e.ctime_ns)
    cache.record(e, "h1", hashed_at_ns=changed + RACY_NS // 2)
    assert "mod1.py" not in saved(cache)
    cache.record(e, "h1", hashed_at_ns=changed + RACY_NS + 1)
    assert cache.lookup(e, saved(cache)["mod1.py"]) == "h1"
    cache.record(e, "h1", hashed_at_ns=max(e.mtime_ns, e.ctime_ns) + 1)  # racy again: the entry goes
    cache.save(StatCache(cache.path, cache.root).recorded())
    assert list(StatCache(cache.path, cache.root).recorded()) == []


def test_the_cache_survives_a_round_trip_and_a_bad_or_foreign_file_is_dropped(tmp_path):
    repo = make_repo(tmp_path / "repo")
    age(repo, settle=False)
    path = tmp_path / "index" / "stat-cache"
    cache = StatCache(str(path), str(repo))
    for e in entries(repo).values():
        cache.record(e, f"hash-of-{e.path}", later())
    records = saved(cache)
    assert list(records) == sorted(entries(repo))  # in path order
    assert {p: cache.lookup(e, records[p]) for p, e in entries(repo).items()} == {
        p: f"hash-of-{p}" for p in entries(repo)}
    assert list(StatCache(str(path), str(tmp_path)).recorded()) == []  # written for another root
    text = path.read_text()
    path.write_text(text.replace(f'"chunking_version": {CHUNKING_VERSION}', '"chunking_version": -1'))
    assert list(StatCache(str(path), str(repo)).recorded()) == []  # another hash: every file hashed again
    for bad in ("{not json", '{"header": 1}', "[]", text[: len(text) // 2], text[:-3], ""):
        path.write_text(bad)
        assert list(StatCache(str(path), str(repo)).recorded()) == [], bad
    path.write_text(text.replace("\nmod2.py\0", "\nmod2.py\0x\0"))  # a record of the wrong shape
    assert [r[0] for r in StatCache(str(path), str(repo)).recorded()] == ["mod0.py", "mod1.py"]
    # the next save over a bad file writes it whole (never a partial file: a temporary one renamed)
    rebuilt = StatCache(str(path), str(repo))
    for e in entries(repo).values():
        rebuilt.record(e, f"hash-of-{e.path}", later())
    assert saved(rebuilt) == records
    mtime = path.stat().st_mtime_ns
    StatCache(str(path), str(repo)).save(iter(()))  # nothing recorded or dropped: not written again
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == ["stat-cache"]


def test_a_path_with_a_newline_or_a_tab_round_trips(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("a\nb.py", "a\tb.py", "a.py"):
        (repo / name).write_text("x = 1\n")
    age(repo, settle=False)
    cache = StatCache(str(tmp_path / "cache"), str(repo))
    for e in entries(repo).values():
        cache.record(e, "h-" + e.path.replace("\n", "n"), later())
    assert {p: r[2] for p, r in saved(cache).items()} == {"a\tb.py": "h-a\tb.py", "a\nb.py": "h-anb.py",
                                                           "a.py": "h-a.py"}


# ---------------------------------------------------------------- orchestrator index


@pytest.mark.slow
def test_a_run_hashes_only_what_changed_and_a_touch_embeds_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo", 8)
    age(repo)
    first = index(repo, env=HASH)
    assert first["files_indexed"] == first["files_hashed"] == 8
    assert (repo / ".codeindex" / "stat-cache").is_file()
    written = (repo / ".codeindex" / "stat-cache").stat().st_mtime_ns
    noop = index(repo, env=HASH)
    assert noop["files_unchanged"] == 8 and noop["files_hashed"] == 0  # nothing read
    assert (repo / ".codeindex" / "stat-cache").stat().st_mtime_ns == written  # nor written

    # one edit of the same size, its mtime put back: the ctime gives it away
    st = (repo / "mod3.py").stat()
    (repo / "mod3.py").write_text("def helper_3(value):\n    return value * 7\n")
    os.utime(repo / "mod3.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    edit = index(repo, env=HASH)
    assert edit["files_indexed"] == 1 and edit["files_hashed"] == 1 and edit["chunks_embedded"] == 1

    # a touch of every file (a branch checkout): each is hashed once, nothing is parsed or embedded
    age(repo, 600)
    touched = index(repo, env=HASH)
    assert touched["files_hashed"] == 8 and touched["files_unchanged"] == 8
    assert touched["files_indexed"] == touched["chunks_embedded"] == touched["chunks_total"] == 0
    assert index(repo, env=HASH)["files_hashed"] == 0

    # a file just written is racy: hashed in the run that finds it and in the next, then trusted
    (repo / "new.py").write_text("def brand_new(value):\n    return value\n")
    found = index(repo, env=HASH)
    assert found["files_indexed"] == 1 and found["files_hashed"] == 1
    assert index(repo, env=HASH)["files_hashed"] <= 1
    (repo / "mod0.py").unlink()
    assert index(repo, env=HASH)["files_removed"] == 1


@pytest.mark.slow
def test_a_corrupt_or_foreign_cache_costs_time_never_a_missed_change(tmp_path):
    repo = make_repo(tmp_path / "repo", 5)
    age(repo)
    index(repo, env=HASH)
    cache = repo / ".codeindex" / "stat-cache"
    cache.write_text(cache.read_text()[:40])  # as a crash in the middle of a write would, had it not been atomic
    rebuilt = index(repo, env=HASH)
    assert rebuilt["files_hashed"] == 5 and rebuilt["files_unchanged"] == 5 and rebuilt["files_indexed"] == 0
    assert index(repo, env=HASH)["files_hashed"] == 0  # written anew
    # the cache says every file is as it was, but the index is another one (emptied): all are indexed
    other = tmp_path / "other-index"
    moved = index(repo, "--index-dir", str(other), env=HASH)
    assert moved["files_indexed"] == 5
    (other / "stat-cache").write_bytes(cache.read_bytes())
    reset = index(repo, "--index-dir", str(other), "--reindex", env=HASH)
    assert reset["files_indexed"] == 5 and reset["files_hashed"] == 5 and reset["index_files"] == 5


def test_a_walk_whose_index_dir_cannot_be_made_spills_to_the_temp_dir_and_the_cache_is_only_not_kept(tmp_path):
    """A read-only repository whose stages are given (the orchestrator's container with /repo mounted
    read-only): the run still walks, and the stat cache it cannot write costs the next run time, not a
    failure."""
    from orchestrator.diff import Walked

    repo = make_repo(tmp_path / "repo", 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # nothing can be made under a regular file, even by root
    cache = StatCache(str(blocker / ".codeindex" / "stat-cache"), str(repo))
    walked = Walked(str(repo), cache, 1 << 20, str(blocker / ".codeindex"))
    try:
        walked.fill(walk(str(repo)))
        assert [r[0] for r in walked.records()] == ["mod0.py", "mod1.py", "mod2.py"]
    finally:
        walked.close()
    cache.record(entries(repo)["mod0.py"], "abc", hashed_at_ns=later())
    cache.save(iter(()))  # logged, not raised
    assert not (blocker / ".codeindex").exists()
