"""A run's diff of the repository against the index, without holding either
whole: every list here is in path order (the walk's, the stat cache's, the
store's manifest pages), so each diff is a merge of streams.

1. :class:`Walked` (in a thread, while the local services start): the walk,
   or the paths a watcher named, merged with the stat cache's records, each
   file with the hash the cache gives it (its stat is the one recorded),
   spilled to a temporary file as it goes: one record in memory, not one per
   file.
2. :class:`Diff` (as the run streams): ``Walked`` merged with the manifest as
   the store streams it. A file whose cached hash is the manifest's is
   unchanged and goes no further; the others go on to be read, with the hash
   the index has for them. Paths the manifest has and the walk has not are the
   files to remove (held: they are the change).
3. At the end, the stat cache is written again from the spill (what still
   holds) and what the run recorded (the files it read)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Container, Iterable, Iterator, Mapping

from .statcache import Record, StatCache, read_records, write_record
from .walker import Entry

log = logging.getLogger(__name__)


class Walked:
    """The files a run looks at, in path order, each with its hash from the stat cache ("" where the
    cache has none for its stat), in a temporary file (removed by :meth:`close`)."""

    def __init__(self, root: str, cache: StatCache, max_file_bytes: int, tmp_dir: str | None = None):
        self.root, self.cache, self.max_file_bytes = os.path.abspath(root), cache, max_file_bytes
        if tmp_dir:
            try:
                os.makedirs(tmp_dir, exist_ok=True)
            except OSError as exc:  # a read-only repository whose index is elsewhere: the system's temp dir
                log.warning("walk spill in the system's temp dir: %s", exc)
                tmp_dir = None
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape", newline="",
                                            dir=tmp_dir or None, prefix=".walk.")
        self.files = 0  # every file walked, skipped ones too
        self.readable = 0  # those the run reads unless the cache knows them
        self.cached: set[str] = set()  # a selection's files the cache knew (paths runs: few)
        self.skips: dict[str, int] = {}  # files not read, by reason
        self.changed = False  # a file the cache cannot vouch for was found (Walked.fill)

    def fill(self, entries: Iterable[Entry], keep_cached: bool = False,
             on_change: Callable[[], None] | None = None, vouched: Container[str] = ()) -> None:
        """Write ``entries`` (in path order) with the cache's hash of each; ``keep_cached``: remember which
        paths it knew (a selection's, for the cache's rewrite). ``on_change`` is called once, at the first
        file that is surely a change to the index (new, and not in ``vouched``; gone; skipped now), so that
        a caller may start what a change needs while the walk goes on; a file whose stat changed is not
        one yet (a ``touch``: it may hash the same). :attr:`changed`: any file the cache cannot vouch for.
        In a thread."""
        recorded = self.cache.recorded()
        rec = next(recorded, None)
        dropped = gone = 0
        for e in entries:
            while rec is not None and rec[0] < e.path:
                gone += not keep_cached  # a whole walk did not find it
                rec = next(recorded, None)
            match = rec if rec is not None and rec[0] == e.path else None
            cached = self.cache.lookup(e, match) or ""
            if match is not None:
                dropped += not cached  # its stat changed
                rec = next(recorded, None)
            if cached and keep_cached:
                self.cached.add(e.path)
            write_record(self._file, (e.path, e.size, e.mtime_ns, e.ctime_ns, e.ino, e.skip_reason, cached))
            self.files += 1
            reason = self.skip_reason(e.skip_reason, e.size)
            if reason:
                self.skips[reason] = self.skips.get(reason, 0) + 1
            else:
                self.readable += 1
            self.changed = self.changed or bool(dropped or gone or (reason and match is not None)
                                                or (not reason and not cached and e.path not in vouched))
            if on_change is not None and (gone or (match is not None if reason else
                                                   match is None and e.path not in vouched)):
                on_change()
                on_change = None
        if not keep_cached:
            gone += (rec is not None) + sum(1 for _ in recorded)  # past the last file: gone
        self.cache.dropped += dropped + gone
        self.changed = self.changed or bool(gone)
        if gone and on_change is not None:
            on_change()
        self._file.flush()

    def skip_reason(self, walker_reason: str, size: int) -> str:
        """Why the run does not read a file ("": it does): the walker's reason, or its size."""
        return walker_reason or ("too_large" if size > self.max_file_bytes else "")

    def records(self) -> Iterator[list[str]]:
        """Each file's fields (path, size, mtime, ctime, inode, skip reason, cached hash), in path order."""
        self._file.seek(0)
        return read_records(self._file)

    def entry(self, fields: list[str]) -> Entry:
        path, size, mtime, ctime, ino, skip, _ = fields
        return Entry(path, os.path.join(self.root, path), int(size), skip, int(mtime), int(ctime), int(ino))

    def kept(self) -> Iterator[Record]:
        """The stat cache's records that still hold (whole walks: the files the cache knew; their stat has
        not changed), in path order."""
        for path, size, mtime, ctime, ino, _, cached in self.records():
            if cached:
                yield path, (int(size), int(mtime), int(ctime), int(ino)), cached

    def close(self) -> None:
        self._file.close()


_MORE = ("", "")  # the page is used up: fetch the next one


class Diff:
    """``walked`` merged with the manifest (an async iterator of pages of (path, hash), in path order).
    Iterate :meth:`to_read` for the files to read (each with the hash the index has, None: new); then
    :attr:`removed` holds the paths to remove. ``removable(path)``: whether a path the manifest has and the
    walk has not is gone (a whole walk: always; a selection: when it was looked at or lay under a path
    that is gone). ``skip(reason)`` counts a file not read, ``unchanged()`` one the cache vouches for."""

    def __init__(self, walked: Walked, manifest: AsyncIterator[list[tuple[str, str]]],
                 removable: Callable[[str], bool], skip: Callable[[str], None], unchanged: Callable[[], None],
                 hashed: Mapping[str, str] | None = None):
        """``hashed``: path -> content hash of files this run has already read (their cache hash otherwise)."""
        self.walked, self.removable = walked, removable
        self.skip, self.unchanged = skip, unchanged
        self.hashed = hashed or {}
        self.removed: list[str] = []
        self._pages = aiter(manifest)
        self._page: list[tuple[str, str]] = []
        self._at = 0

    def _step(self) -> tuple[str, str]:
        """The manifest's next (path, hash) from the page at hand, or _MORE."""
        self._at += 1
        return self._page[self._at] if self._at < len(self._page) else _MORE

    async def _fetch(self) -> tuple[str, str] | None:
        """The first (path, hash) of the next page that has one; None after the last."""
        while (page := await anext(self._pages, None)) is not None:
            if page:
                self._page, self._at = page, 0
                return page[0]
        return None

    async def to_read(self) -> AsyncIterator[tuple[Entry, str | None]]:
        head = await self._fetch()
        for fields in self.walked.records():
            path, cached = fields[0], fields[6] or self.hashed.get(fields[0], "")
            while head is not None and head[0] < path:
                self._not_walked(head[0])
                head = self._step()
                if head is _MORE:
                    head = await self._fetch()
            old = None
            if head is not None and head[0] == path:
                old, head = head[1], self._step()
                if head is _MORE:
                    head = await self._fetch()
            reason = self.walked.skip_reason(fields[5], int(fields[1]))
            if reason:
                self.skip(reason)
                if old is not None:
                    self.removed.append(path)  # skipped now: its rows go
            elif cached and cached == old:
                self.unchanged()
            else:
                yield self.walked.entry(fields), old
        while head is not None:
            self._not_walked(head[0])
            head = self._step()
            if head is _MORE:
                head = await self._fetch()

    def _not_walked(self, path: str) -> None:
        if self.removable(path):
            self.removed.append(path)
