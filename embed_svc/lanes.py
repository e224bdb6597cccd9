"""The embedder's queue: distinct texts waiting for a batch, in two lanes, and the choice of the next batch.

Owns what the batcher's threads decide under its lock, with no threads of its own:

- the two lanes: queries (``urgent``: EmbedOnce, what a search waits for) and bulk texts
  (Embed streams, what an index run sends by the thousand), oldest first;
- the pending-by-key map of every text queued or running, so that an identical text joins
  the one already there instead of being queued again (a query joining a queued bulk text
  moves it to the query lane);
- the lane rule (:meth:`Lanes.next_lane`): queries first, but not twice in a row while bulk
  texts wait;
- the batch choice (:func:`select_batch`): texts of similar length around the oldest one,
  within the size and token caps, after dropping texts whose callers all went away; lengths are
  the tokenizer's real counts where the backend gives them (see :meth:`uncounted`), an estimate
  from characters otherwise.

Not thread-safe: the :class:`embed_svc.batcher.Batcher` holds its lock around every call.
"""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

URGENT, BULK = "urgent", "bulk"


def estimate_tokens(text: str, max_tokens: int) -> int:
    """A cheap length estimate to group texts (the tokenizer gives the real count later)."""
    return min(max_tokens, len(text) // 4 + 2)


def select_batch(window: list, max_size: int, max_tokens: int) -> list:
    """Pick a batch from ``window`` (oldest first): the items nearest in
    length to the oldest one, so that padding is small and the oldest item
    never starves. The token budget counts padding: size x longest."""
    if not window:
        return []
    order = sorted(range(len(window)), key=lambda i: window[i].tokens)
    pos = order.index(0)
    lo = hi = pos  # grow [lo, hi] around the oldest item, cheaper side first
    while hi - lo + 1 < max_size:
        left = window[order[lo - 1]].tokens if lo > 0 else None
        right = window[order[hi + 1]].tokens if hi + 1 < len(order) else None
        if left is None and right is None:
            break
        longest = window[order[hi]].tokens
        if right is not None and (left is None or right - window[order[pos]].tokens
                                  <= window[order[pos]].tokens - left):
            if (hi - lo + 2) * right > max_tokens:
                break
            hi += 1
        else:
            if (hi - lo + 2) * longest > max_tokens:
                break
            lo -= 1
    return [window[i] for i in order[lo:hi + 1]]


class Waiter(Protocol):
    """A request waiting for vectors; ``cancelled`` once its caller went away (or it failed)."""

    cancelled: bool


@dataclass(eq=False)
class Item:
    """One distinct text, and every (request, row) waiting for its vector."""

    key: bytes
    text: str
    tokens: int
    waiters: list[tuple[Waiter, int]]
    urgent: bool = False
    enqueued: float = field(default_factory=time.perf_counter)
    counted: bool = False  # ``tokens`` is the real count (the backend's tokenizer), not an estimate
    encoding: Any = None  # its token ids from the count (backends.base.Encoded), until its batch is tokenized

    def wanted(self) -> bool:
        return any(not req.cancelled for req, _ in self.waiters)


class Lanes:
    """Texts waiting for a batch (``len``: how many), and every text queued or running (``pending``)."""

    def __init__(self, max_tokens: int, max_batch_size: int, max_batch_tokens: int):
        self.max_tokens = max_tokens  # the model's window: the most an estimate says
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.group_window = 8 * max_batch_size  # how far ahead batches look for texts of similar length
        self._lanes: dict[str, collections.deque[Item]] = {URGENT: collections.deque(), BULK: collections.deque()}
        self._last_urgent = False  # the last batch came from the query lane
        self._pending: dict[bytes, Item] = {}  # queued or running, by text key
        self._purge = False  # a request was cancelled: the next take drops its texts from the whole queue

    def __len__(self) -> int:
        return len(self._lanes[URGENT]) + len(self._lanes[BULK])

    def pending(self, key: bytes) -> bool:
        """Whether the text is queued or running (a request for it joins it)."""
        return key in self._pending

    def add(self, key: bytes, text: str, waiter: tuple[Waiter, int], urgent: bool) -> bool:
        """Queue ``text`` for ``waiter`` (request, row), or join the identical text queued or running:
        True when joined. A query joining a queued bulk text moves it to the query lane."""
        item = self._pending.get(key)
        if item is None:
            item = Item(key, text, estimate_tokens(text, self.max_tokens), [waiter], urgent)
            self._pending[key] = item
            self._lanes[URGENT if urgent else BULK].append(item)
            return False
        item.waiters.append(waiter)
        bulk = self._lanes[BULK]
        if urgent and not item.urgent and item in bulk:  # still queued: a query now waits for it
            bulk.remove(item)
            item.urgent = True
            self._lanes[URGENT].append(item)
        return True

    def next_lane(self) -> str:
        """The lane the next batch comes from: queries first, but not twice in a row while bulk texts wait."""
        return URGENT if self._lanes[URGENT] and not (self._last_urgent and self._lanes[BULK]) else BULK

    def size(self, lane: str) -> int:
        return len(self._lanes[lane])

    def oldest(self, lane: str) -> float:
        """When the lane's oldest text was queued (``time.perf_counter``); the lane must not be empty."""
        return self._lanes[lane][0].enqueued

    def uncounted(self, lane: str) -> list[Item]:
        """The texts the next batch of ``lane`` is chosen from whose length is still an estimate."""
        return [it for it in itertools.islice(self._lanes[lane], self.group_window)
                if not it.counted and it.wanted()]

    def cancelled(self) -> None:
        """A request's caller went away (or it failed): its texts nobody else waits for leave the queue at
        the next take, all of them (so that they hold no room in it)."""
        self._purge = True

    def take(self, lane: str) -> tuple[list[Item], int]:
        """The next batch from ``lane`` (see :func:`select_batch`), and how many texts were dropped
        first because every caller of theirs went away. The batch stays pending until :meth:`done`."""
        dropped = self._drop_unwanted() if self._purge else 0
        queue = self._lanes[lane]
        window: list[Item] = []
        # only as far as the window reaches (the texts behind it are looked at when their turn comes: one
        # batch costs its window, not the whole queue, which an index run fills with tens of thousands)
        while queue and len(window) < self.group_window:
            it = queue.popleft()
            if it.wanted():
                window.append(it)
            else:
                self._pending.pop(it.key, None)
                dropped += 1
        batch = select_batch(window, self.max_batch_size, self.max_batch_tokens)
        chosen = {id(it) for it in batch}
        queue.extendleft(reversed([it for it in window if id(it) not in chosen]))  # back in front, in order
        self._last_urgent = lane == URGENT
        return batch, dropped

    def _drop_unwanted(self) -> int:
        """Every queued text whose callers all went away leaves the queue; how many."""
        self._purge = False
        dropped = 0
        for lane, queue in self._lanes.items():
            kept = collections.deque()
            for it in queue:
                if it.wanted():
                    kept.append(it)
                else:
                    self._pending.pop(it.key, None)
                    dropped += 1
            self._lanes[lane] = kept
        return dropped

    def done(self, key: bytes) -> None:
        """The text is answered (or dropped): no longer pending, so the next request for it queues it anew."""
        self._pending.pop(key, None)

    def clear(self) -> list[Item]:
        """Empty both lanes (at shutdown): the texts that were queued, queries first; still pending until done."""
        items = [*self._lanes[URGENT], *self._lanes[BULK]]
        self._lanes = {URGENT: collections.deque(), BULK: collections.deque()}
        return items
