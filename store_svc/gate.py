"""The store's gate between reading the tables and removing their files.

LanceDB reads a table at one version: a search, a write's lookup or a version
listing reads the files that version names. The upkeep's cleanup removes the
files of old versions, and LanceDB judges a version old by when it was
*committed*, not by when it stopped being the latest: a version committed an
hour ago that a compaction replaced a millisecond ago is removed at once, under
a search still reading it ("Not found: .../data/<file>.lance"). So every
operation on the tables holds the gate *shared*, and the cleanup (and a reset,
which drops the tables) holds it *exclusive*: it waits for the operations in
flight, and the ones that start after it read the latest version, which the
cleanup keeps.

Two things a plain readers-writer lock lacks: a thread holding it shared may
take it shared again (a write's own reads, an upkeep's closing stats) without
waiting, and a thread waiting for it exclusive holds back new shared holders,
so that a steady stream of searches cannot put the cleanup off forever.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Gate:
    """Shared by many threads at once, or exclusive to one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0  # threads holding it shared
        self._exclusive = False
        self._waiting = 0  # threads waiting to hold it exclusive
        self._depth = threading.local()  # how many times this thread holds it shared

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        if not depth:
            with self._cond:
                self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
                self._shared += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if not depth:
                with self._cond:
                    self._shared -= 1
                    if not self._shared:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[bool]:
        """Held exclusive (yields True), or not after waiting ``timeout`` seconds for the holders in flight
        (yields False, and the shared holders it held back meanwhile go on)."""
        if getattr(self._depth, "n", 0):
            raise RuntimeError("the gate is wanted exclusive by a thread that holds it shared: it would wait forever")
        with self._cond:
            self._waiting += 1
            try:
                held = self._cond.wait_for(lambda: not self._exclusive and not self._shared, timeout)
            finally:
                self._waiting -= 1
                self._cond.notify_all()  # shared holders it held back: wait again for it, or (not held) go on
            self._exclusive = held
        try:
            yield held
        finally:
            if held:
                with self._cond:
                    self._exclusive = False
                    self._cond.notify_all()
