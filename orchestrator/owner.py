"""One writer per index. Whoever writes an index directory (``index``,
``serve``, ``watch``, ``mcp``) holds its lock, ``<index dir>/lock`` (an OS
file lock: the kernel lets it go when the holder dies, however it dies, so a
dead process's lock is simply taken over), and a long-running holder says
in ``<index dir>/owner.json`` who it is and where its public API listens.
Everyone else goes through that API, or is told who holds the index."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from filelock import FileLock, Timeout

from codeindex_common.errors import FailedPrecondition

from .walker import tag_cache_dir

LOCK, OWNER = "lock", "owner.json"


@dataclass(frozen=True)
class Owner:
    """Who holds an index: its process, what it runs, and its public API (empty: none, e.g. ``index``)."""

    pid: int
    command: str
    address: str = ""
    plaintext: bool = True  # its API speaks plain text, without a token: a CLI on this machine can use it
    started: float = 0.0

    def describe(self) -> str:
        where = f", its API at {self.address}" if self.address else ""
        return f"`orchestrator {self.command}` (pid {self.pid}{where})"


class IndexLock:
    """The lock of one index directory, taken without waiting."""

    def __init__(self, index_dir: str):
        self.index_dir = index_dir
        os.makedirs(index_dir, exist_ok=True)
        tag_cache_dir(index_dir, "a codeindex index, made again by `orchestrator index`")  # no walk enters it
        self._lock = FileLock(os.path.join(index_dir, LOCK), timeout=0)

    def acquire(self, command: str) -> bool:
        """True once held (then ``owner.json`` says so); False when another live process holds it."""
        try:
            self._lock.acquire()
        except Timeout:
            return False
        self.publish(Owner(os.getpid(), command, started=time.time()))
        return True

    def publish(self, owner: Owner) -> None:
        path = os.path.join(self.index_dir, OWNER)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(owner), fh)
        os.replace(tmp, path)

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                os.unlink(os.path.join(self.index_dir, OWNER))
            except FileNotFoundError:
                pass
            self._lock.release()

    def __enter__(self) -> IndexLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def current_owner(index_dir: str, wait: float = 2.0) -> Owner | None:
    """The live process holding ``index_dir``'s lock, or None. A holder that has just taken the lock may
    not have written ``owner.json`` yet: it is waited for up to ``wait`` seconds."""
    if not os.path.isdir(index_dir):
        return None
    probe = FileLock(os.path.join(index_dir, LOCK), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        pass
    else:  # nobody holds it (whoever did is gone)
        probe.release()
        return None
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(os.path.join(index_dir, OWNER)) as fh:
                return Owner(**json.load(fh))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            if time.monotonic() > deadline:
                return Owner(pid=0, command="(unknown)")
            time.sleep(0.05)


def held_by(index_dir: str, owner: Owner) -> FailedPrecondition:
    return FailedPrecondition(f"the index at {index_dir} is held by {owner.describe()}: one writer per index; "
                              "use that one (its API, or `orchestrator search`/`status`, which go through it), "
                              "or stop it first")
