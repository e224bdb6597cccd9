"""Helpers for streaming RPCs."""

from __future__ import annotations

import asyncio
from typing import TypeVar
from collections.abc import AsyncIterator, Awaitable, Callable

Req = TypeVar("Req")
Res = TypeVar("Res")


async def map_unordered(requests: AsyncIterator[Req], fn: Callable[[Req], Awaitable[Res]],
                        max_in_flight: int) -> AsyncIterator[Res]:
    """Run ``fn`` on each request as it arrives, yield results as they
    finish (not in request order). At most ``max_in_flight`` requests are
    being worked on or waiting to be yielded, so a slow reader slows the
    writer down instead of growing a buffer."""
    async for results in map_unordered_ready(requests, fn, max_in_flight, 1):
        yield results[0]


async def map_unordered_ready(requests: AsyncIterator[Req], fn: Callable[[Req], Awaitable[Res]],
                              max_in_flight: int, most: int) -> AsyncIterator[list[Res]]:
    """:func:`map_unordered`, a list at a time: the next result to finish
    and those finished with it (up to ``most`` in all), so that what is done
    together is answered in one message."""
    slots = asyncio.Semaphore(max_in_flight)
    done: asyncio.Queue = asyncio.Queue()
    pending: set[asyncio.Task] = set()

    async def one(req: Req) -> None:
        try:
            await done.put((await fn(req), None))
        except Exception as exc:  # noqa: BLE001 - re-raised to the reader below
            await done.put((None, exc))

    async def feed() -> None:
        async for req in requests:
            await slots.acquire()
            task = asyncio.create_task(one(req))
            pending.add(task)
            task.add_done_callback(pending.discard)
        while pending:
            await asyncio.gather(*list(pending))
        await done.put((_END, None))

    feeder = asyncio.create_task(feed())
    try:
        more = True
        while more:
            results: list = []
            more = _take(await _next_done(done, feeder), results)
            while more and len(results) < most and not done.empty():
                more = _take(done.get_nowait(), results)
            if results:
                yield results
                for _ in results:
                    slots.release()
    finally:
        feeder.cancel()
        for task in list(pending):
            task.cancel()


_END = object()


async def _next_done(done: asyncio.Queue, feeder: asyncio.Task):
    """The next finished item; the feeder's error if the request stream failed first."""
    while True:
        if feeder.done():
            feeder.result()  # raises if the request stream failed
            return await done.get()
        getter = asyncio.ensure_future(done.get())
        try:
            await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            got = getter.done()
            if not got:
                getter.cancel()  # still waiting: nothing was taken from the queue
        if got:
            return getter.result()


def _take(item, results: list) -> bool:
    """Add a finished (result, error) to ``results`` (raising the error); False at the end of the requests."""
    result, exc = item
    if result is _END:
        return False
    if exc is not None:
        raise exc
    results.append(result)
    return True
