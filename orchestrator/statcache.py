"""What git's index does for ``git status``: remember each file's stat (size,
mtime, ctime, inode) beside its content hash, so that a run reads and hashes
only the files whose stat changed.

The cache answers one question, "what is this file's content hash?", and only
when the file's stat is the one recorded. Whether the file is indexed is still
decided by comparing that hash with the store's manifest, so a cache that is
stale, from another store, or lost costs time and never a missed change:

- it is one JSON file in the index directory, replaced atomically at the end
  of a run (a crash leaves the previous one); one that cannot be read, or was
  written for another root or another hash (the chunking version), is
  dropped and rebuilt by the next run;
- *racy* entries are never trusted, as in git: a file whose mtime or ctime
  lies within ``RACY_NS`` of the moment it was hashed could be changed again
  within the same timestamp tick (a 1 s or 2 s filesystem) without its stat
  changing, so its stat is not recorded and the next run hashes it again (by
  then it is old enough to be recorded). The window also covers the gap
  between the kernel's file timestamps and ``time.time_ns()``.

A ``touch`` of every file (a branch checkout) changes every stat: each file is
read and hashed once, found unchanged against the manifest, and recorded with
its new stat; nothing is parsed or embedded."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

from codeindex_common.model import CHUNKING_VERSION

from .walker import Entry

log = logging.getLogger(__name__)

FORMAT = 1
RACY_NS = 2_000_000_000  # FAT's 2 s mtime resolution, the coarsest in common use


def stat_key(e: Entry) -> tuple[int, int, int, int]:
    return (e.size, e.mtime_ns, e.ctime_ns, e.ino)


class StatCache:
    """path -> (stat, content hash) of the files of one root, loaded from ``path`` ("" : no file, nothing
    kept between runs)."""

    def __init__(self, path: str, root: str):
        self.path, self.root = path, os.path.abspath(root)
        self.entries: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self.hits = self.misses = 0
        self.changed = False  # whether there is anything to save
        if path:
            self.entries = self._load()
            self.changed = not self.entries

    def _header(self) -> dict:
        return {"format": FORMAT, "root": self.root, "chunking_version": CHUNKING_VERSION}

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("the stat cache %s cannot be read (%s): it is rebuilt", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("header") != self._header():
            return {}  # another root, format or chunking version: every file is hashed again
        try:
            return {p: (tuple(v[:4]), v[4]) for p, v in data["files"].items()}
        except (KeyError, TypeError, IndexError, AttributeError):
            log.warning("the stat cache %s is malformed: it is rebuilt", self.path)
            return {}

    def lookup(self, e: Entry) -> str | None:
        """The content hash recorded for ``e``'s path, if its stat is still the one recorded."""
        got = self.entries.get(e.path)
        if got is not None and got[0] == stat_key(e) and e.mtime_ns:
            self.hits += 1
            return got[1]
        self.misses += 1
        return None

    def record(self, e: Entry, fhash: str, hashed_at_ns: int | None = None) -> None:
        """``e`` (stat taken before it was read) hashed to ``fhash`` at ``hashed_at_ns`` (now): kept unless
        racy."""
        now = time.time_ns() if hashed_at_ns is None else hashed_at_ns
        if not e.mtime_ns or max(e.mtime_ns, e.ctime_ns) + RACY_NS > now:
            self.forget([e.path])  # racy: hashed again next time
            return
        entry = (stat_key(e), fhash)
        if self.entries.get(e.path) != entry:
            self.entries[e.path] = entry
            self.changed = True

    def forget(self, paths) -> None:
        for p in paths:
            if self.entries.pop(p, None) is not None:
                self.changed = True

    def keep_only(self, present: set[str]) -> None:
        """After a walk of the whole root: drop the files it did not find."""
        kept = {p: v for p, v in self.entries.items() if p in present}
        if len(kept) != len(self.entries):
            self.entries, self.changed = kept, True

    def save(self) -> None:
        """Write the cache atomically (a temporary file renamed over the old one) if anything changed; a
        failure is logged, never raised (the next run hashes more)."""
        if not self.path or not self.changed:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stat-cache.", dir=os.path.dirname(self.path))
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"header": self._header(),
                               "files": {p: [*k, h] for p, (k, h) in self.entries.items()}}, fh,
                              separators=(",", ":"))
                os.replace(tmp, self.path)
                self.changed = False
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("the stat cache %s was not written: %s", self.path, exc)
