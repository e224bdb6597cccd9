"""Walk a repository the way git sees it: every .gitignore (nested ones
too) is honoured through pathspec's gitignore matching; .git and the index
directory are never entered, nor any directory tagged as a cache (a
``CACHEDIR.TAG`` with the signature of the Cache Directory Tagging
Specification, https://bford.info/cachedir/: every index directory holds one,
wherever ``--index-dir`` puts it, and so do pytest's and cargo's caches);
symlinks are not followed (no loops, no escape)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from collections.abc import Iterator

import pathspec

from codeindex_common.model import CHUNKING_VERSION

ALWAYS_SKIPPED_DIRS = {".git", ".hg", ".svn", ".codeindex"}
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def is_cache_dir(path: str) -> bool:
    """The directory holds a cache directory tag: a regular file (a link is not followed, a FIFO not opened)
    whose first bytes are the specification's signature."""
    try:
        fd = os.open(os.path.join(path, CACHEDIR_TAG), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)


def tag_cache_dir(path: str, what: str) -> None:
    """Write ``path``'s cache directory tag unless it has one (best effort: a read-only directory stays
    untagged). Only a new file is written: never through a link, never over another file of that name."""
    if is_cache_dir(path):
        return
    try:
        fd = os.open(os.path.join(path, CACHEDIR_TAG), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(CACHEDIR_SIGNATURE + f"\n# This file is a cache directory tag: {what}.\n"
                 "# For information about cache directory tags see https://bford.info/cachedir/\n".encode())


@dataclass(frozen=True)
class Entry:
    path: str  # relative, '/' separated
    abspath: str
    size: int
    skip_reason: str = ""  # "symlink", "unreadable", "not_regular", "bad_name"
    # the rest of the stat the walk took (not following links), for the stat cache; 0: none
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0


class _Ignores:
    """The .gitignore specs that apply in one directory, root first."""

    def __init__(self, specs: tuple[tuple[str, pathspec.GitIgnoreSpec], ...] = ()):
        self.specs = specs

    def child(self, rel_dir: str, abs_dir: str) -> _Ignores:
        gi = os.path.join(abs_dir, ".gitignore")
        try:
            with open(gi, encoding="utf-8", errors="replace") as fh:
                spec = pathspec.GitIgnoreSpec.from_lines(fh)
        except OSError:
            return self
        return _Ignores(self.specs + ((rel_dir, spec),))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        verdict = False
        for base, spec in self.specs:
            sub = rel[len(base) + 1:] if base else rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:  # the deepest matching .gitignore decides
                verdict = result.include
        return verdict


def walk(root: str, skip_dirs: set[str] | None = None) -> Iterator[Entry]:
    """Every file under ``root`` that git would not ignore, in the order of their paths as strings (git's
    index order: a directory's files come where its name and a "/" sort among its siblings), so that the
    walk merges with other lists sorted by path without being held whole. Memory: one listing per level."""
    root = os.path.abspath(root)
    skip = ALWAYS_SKIPPED_DIRS | (skip_dirs or set())
    stack = [iter(_listing("", root, _Ignores(), skip))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, Entry):
            yield item
        else:
            stack.append(iter(_listing(*item, skip)))


def _listing(rel_dir: str, abs_dir: str, ignores: _Ignores, skip: set[str]) -> list:
    """One directory's files (Entry) and subdirectories to walk ((rel, path, ignores)), in path order;
    ``ignores``: its parent's (its own .gitignore, where it has one, is added here)."""
    try:
        scanned = list(os.scandir(abs_dir))
    except OSError:
        return []
    if rel_dir and any(e.name == CACHEDIR_TAG for e in scanned) and is_cache_dir(abs_dir):
        return []  # a cache (an index directory among them): nothing in it is indexed
    if any(e.name == ".gitignore" for e in scanned):
        ignores = ignores.child(rel_dir, abs_dir)
    keyed: list[tuple[str, Entry | tuple[str, str, _Ignores]]] = []
    for e in scanned:
        rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            st = None
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        if is_dir and e.name in skip or ignores.ignored(rel, is_dir):
            continue
        if not _utf8(e.name):  # paths travel and are stored as UTF-8: listed, as a skip, under a readable name
            name = _readable(e.name)
            keyed.append((name, Entry(f"{rel_dir}/{name}" if rel_dir else name, e.path, 0, "bad_name")))
        elif st is None:
            keyed.append((e.name, Entry(rel, e.path, 0, "unreadable")))
        elif is_dir:
            keyed.append((e.name + "/", (rel, e.path, ignores)))
        else:
            keyed.append((e.name, _file_entry(rel, e.path, st)))
    keyed.sort(key=lambda k: k[0])
    return [item for _, item in keyed]


class IgnoreCache:
    """Whether a path under ``root`` is one a walk would skip (an always-skipped directory, a .gitignore at
    any level): for watch events, which name paths one at a time. The .gitignore files of each directory
    are read once; ``forget`` drops them when one changes."""

    def __init__(self, root: str, skip_dirs: set[str] | None = None):
        self.root = os.path.abspath(root)
        self.skip = ALWAYS_SKIPPED_DIRS | (skip_dirs or set())
        self._dirs: dict[str, _Ignores] = {"": _Ignores().child("", self.root)}
        self._caches: dict[str, bool] = {}  # directory -> it is tagged as a cache

    def forget(self) -> None:
        self._dirs = {"": _Ignores().child("", self.root)}
        self._caches = {}

    def _cache(self, rel_dir: str) -> bool:
        if rel_dir not in self._caches:
            self._caches[rel_dir] = is_cache_dir(os.path.join(self.root, rel_dir))
        return self._caches[rel_dir]

    def _ignores(self, rel_dir: str) -> _Ignores:
        if rel_dir not in self._dirs:
            parent = rel_dir.rpartition("/")[0]
            self._dirs[rel_dir] = self._ignores(parent).child(rel_dir, os.path.join(self.root, rel_dir))
        return self._dirs[rel_dir]

    def skipped(self, rel: str, is_dir: bool = False) -> bool:
        """``rel`` ('/'-separated, relative to the root) or a directory above it is skipped."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            last_is_dir = i < len(parts) or is_dir
            if last_is_dir and (parts[i - 1] in self.skip or self._cache(sub)):
                return True
            if self._ignores("/".join(parts[:i - 1])).ignored(sub, last_is_dir):
                return True
        return False


def select(root: str, paths: set[str], ignores: IgnoreCache) -> tuple[list[Entry], set[str]]:
    """The files a walk would yield among ``paths`` (relative, '/'-separated; a directory stands for every
    file under it), and the paths that are gone (to be removed from the index with whatever lies under
    them)."""
    root = os.path.abspath(root)
    found: dict[str, Entry] = {}
    gone: set[str] = set()
    for rel in sorted(paths):
        if not rel or rel.startswith("../") or ignores.skipped(rel):
            continue
        full = os.path.join(root, rel)
        if _through_link(root, rel):  # the walk lists the link itself, and never what lies behind it
            continue
        if not _utf8(rel):  # as the walk lists it: a skip under a readable name
            if os.path.lexists(full):
                found[_readable(rel)] = Entry(_readable(rel), full, 0, "bad_name")
            else:
                gone.add(_readable(rel))
            continue
        if not os.path.lexists(full):
            gone.add(rel)
        elif os.path.isdir(full) and not os.path.islink(full):
            for e in walk(full):  # the folder's own .gitignore files; those above it through ignores
                path = f"{rel}/{e.path}"
                if not ignores.skipped(path):
                    found[path] = dataclasses.replace(e, path=path)
        else:
            found[rel] = _entry(rel, full)
    return [found[p] for p in sorted(found)], gone


def _through_link(root: str, rel: str) -> bool:
    """A folder on the way to ``rel`` (not ``rel`` itself) is a symbolic link."""
    parts = rel.split("/")[:-1]
    return any(os.path.islink(os.path.join(root, *parts[:i])) for i in range(1, len(parts) + 1))


def _utf8(name: str) -> bool:
    """The name (as os.scandir gives it: bytes that are not UTF-8 as lone surrogates) is UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _readable(name: str) -> str:
    """A name that is not UTF-8, its stray bytes written as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _file_entry(rel: str, path: str, st: os.stat_result) -> Entry:
    """A file that is not a directory, by its (not followed) stat: a regular file, or a skip with its reason."""
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, path, 0, "symlink")
    if not stat.S_ISREG(st.st_mode):
        return Entry(rel, path, 0, "not_regular")
    return Entry(rel, path, st.st_size, "", st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _entry(rel: str, full: str) -> Entry:
    try:
        return _file_entry(rel, full, os.stat(full, follow_symlinks=False))
    except OSError:
        return Entry(rel, full, 0, "unreadable")


def file_hash(data: bytes) -> str:
    """A file's content hash, salted with the chunking version: when the parser's chunks change, every file
    is parsed again once (and re-embeds only the chunks whose text changed)."""
    return hashlib.blake2b(data, digest_size=16, person=f"chunks-v{CHUNKING_VERSION}".encode()).hexdigest()


def read(entry: Entry) -> bytes:
    with open(entry.abspath, "rb") as fh:
        return fh.read()


def read_batch(batch: list[Entry]) -> list[tuple[Entry, str, bytes | None, int]]:
    """(entry, content hash, bytes, when it was hashed) of each file, read once; bytes None when it cannot
    be read. Runs in a thread: the caller keeps the bytes of changed files only."""
    out: list[tuple[Entry, str, bytes | None, int]] = []
    for e in batch:
        try:
            data = read(e)
        except OSError:
            out.append((e, "", None, 0))
            continue
        out.append((e, file_hash(data), data, time.time_ns()))
    return out
