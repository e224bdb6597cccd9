"""What git's index does for ``git status``: remember each file's stat (size,
mtime, ctime, inode) beside its content hash, so that a run reads and hashes
only the files whose stat changed.

The cache answers one question, "what is this file's content hash?", and only
when the file's stat is the one recorded. Whether the file is indexed is still
decided by comparing that hash with the store's manifest, so a cache that is
stale, from another store, or lost costs time and never a missed change:

- it is one file in the index directory, sorted by path, read as a stream
  beside the walk (which comes in the same order) and written again at the
  end of a run from what the run kept and recorded, atomically (a temporary
  file renamed over it: a crash leaves the previous one). A file that cannot
  be read, lacks its last line (cut short), or was written for another
  root, format or hash (the chunking version) is dropped and rebuilt;
- *racy* entries are never trusted, as in git: a file whose mtime or ctime
  lies within ``RACY_NS`` of the moment it was hashed could be changed again
  within the same timestamp tick (a 1 s or 2 s filesystem) without its stat
  changing, so its stat is not recorded and the next run hashes it again (by
  then it is old enough to be recorded). The window also covers the gap
  between the kernel's file timestamps and ``time.time_ns()``.

A ``touch`` of every file (a branch checkout) changes every stat: each file is
read and hashed once, found unchanged against the manifest, and recorded with
its new stat; nothing is parsed or embedded.

Memory does not grow with the repository: the recorded entries are streamed,
and only this run's new records (the files it read) are held until the end.
Records are NUL-separated fields ending in NUL and a newline (a path holds no
NUL; it may hold a newline)."""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO

from codeindex_common.model import CHUNKING_VERSION

from .walker import Entry

log = logging.getLogger(__name__)

FORMAT = 2  # 1: one JSON object of every file (read whole)
RACY_NS = 2_000_000_000  # FAT's 2 s mtime resolution, the coarsest in common use
_END = re.compile(r"\n\x00end\x00\d+\x00\n\Z")  # the last record (an empty path, "end", the count)
BLOCK = 1 << 20

Key = tuple[int, int, int, int]
Record = tuple[str, Key, str]  # (path, stat key, content hash)


def stat_key(e: Entry) -> Key:
    return (e.size, e.mtime_ns, e.ctime_ns, e.ino)


def write_record(fh: IO[str], fields: Iterable) -> None:
    fh.write("\0".join(map(str, fields)) + "\0\n")


def read_records(fh: IO[str]) -> Iterator[list[str]]:
    """The records of ``fh`` from where it stands, each as its fields (block by block, never whole)."""
    rest = ""
    while block := fh.read(BLOCK):
        parts = (rest + block).split("\0\n")
        rest = parts.pop()
        for part in parts:
            yield part.split("\0")
    if rest:
        yield rest.split("\0")


class StatCache:
    """path -> (stat, content hash) of the files of one root, kept in ``path`` ("" : no file, nothing kept
    between runs). :meth:`recorded` streams what the last run kept; :meth:`record` notes what this run
    hashed; :meth:`save` writes the merge of what the caller keeps and what this run recorded."""

    def __init__(self, path: str, root: str):
        self.path, self.root = path, os.path.abspath(root)
        self.updates: dict[str, Record | None] = {}  # this run's: path -> its record, or None (forget it)
        self.dropped = 0  # records of the file that this run does not keep (a file gone, a stat changed)
        self.racy: dict[str, str] = {}  # this run's racy files: path -> content hash (not kept here)

    def _header(self) -> dict:
        return {"format": FORMAT, "root": self.root, "chunking_version": CHUNKING_VERSION}

    def recorded(self) -> Iterator[Record]:
        """What the file holds, in path order; nothing when it is missing, foreign or damaged."""
        if not self.path:
            return
        try:
            fh = open(self.path, encoding="utf-8", errors="surrogateescape", newline="")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("the stat cache %s cannot be read (%s): it is rebuilt", self.path, exc)
            return
        with fh:
            if not self._usable(fh):
                return
            for fields in read_records(fh):
                if fields[0] == "":  # the end mark
                    return
                try:
                    path, size, mtime, ctime, ino, fhash = fields
                    yield path, (int(size), int(mtime), int(ctime), int(ino)), fhash
                except ValueError:
                    log.warning("the stat cache %s is malformed: it is rebuilt", self.path)
                    return

    def _usable(self, fh: IO[str]) -> bool:
        """Its header is this cache's and it ends with the end mark; ``fh`` stands after the header."""
        try:
            header = json.loads(fh.readline())
            start = fh.tell()
            fh.seek(0, os.SEEK_END)
            fh.seek(max(start - 1, fh.tell() - 64))
            tail = fh.read()
            fh.seek(start)
        except (OSError, ValueError, UnicodeDecodeError):
            return False
        # another root, format or chunking version: every file is hashed again; no end mark: cut short
        return header == self._header() and _END.search(tail) is not None

    def lookup(self, e: Entry, recorded: Record | None) -> str | None:
        """The content hash ``recorded`` for ``e``'s path, if its stat is still the one recorded."""
        if recorded is not None and recorded[1] == stat_key(e) and e.mtime_ns:
            return recorded[2]
        return None

    def record(self, e: Entry, fhash: str, hashed_at_ns: int | None = None) -> None:
        """``e`` (stat taken before it was read) hashed to ``fhash`` at ``hashed_at_ns`` (now): kept unless
        racy."""
        now = time.time_ns() if hashed_at_ns is None else hashed_at_ns
        if not e.mtime_ns or max(e.mtime_ns, e.ctime_ns) + RACY_NS > now:
            self.updates[e.path] = None  # racy: hashed again next time
            self.racy[e.path] = fhash
            return
        self.updates[e.path] = (e.path, stat_key(e), fhash)
        self.racy.pop(e.path, None)

    def save(self, kept: Iterable[Record]) -> None:
        """Write ``kept`` (records in path order) with this run's records merged in (they win), atomically;
        a failure is logged, never raised (the next run hashes more). Not written when it would be the
        same: nothing recorded, nothing dropped."""
        if not self.path or (not self.updates and not self.dropped and os.path.exists(self.path)):
            return
        updates = [(p, r) for p, r in sorted(self.updates.items())]
        merged = heapq.merge(((r[0], 1, r) for r in kept), ((p, 0, r) for p, r in updates))
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stat-cache.", dir=os.path.dirname(self.path))
            try:
                with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                    fh.write(json.dumps(self._header()) + "\n")
                    last, count = None, 0
                    for path, _, rec in merged:
                        if path == last:
                            continue  # this run's record came first and wins
                        last = path
                        if rec is not None:
                            write_record(fh, (path, *rec[1], rec[2]))
                            count += 1
                    fh.write(f"\0end\0{count}\0\n")
                os.replace(tmp, self.path)
                with contextlib.suppress(FileNotFoundError):  # format 1's file, read whole, is no more
                    os.unlink(os.path.join(os.path.dirname(self.path), "stat-cache.json"))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("the stat cache %s was not written: %s", self.path, exc)
