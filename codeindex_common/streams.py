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
    slots = asyncio.Semaphore(max_in_flight)
    done: asyncio.Queue = asyncio.Queue()
    pending: set[asyncio.Task] = set()
    _END = object()

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
        while True:
            if feeder.done():
                feeder.result()  # raises if the request stream failed
                item = await done.get()
            else:
                getter = asyncio.ensure_future(done.get())
                try:
                    await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    got = getter.done()
                    if not got:
                        getter.cancel()  # still waiting: nothing was taken from the queue
                if not got:
                    continue
                item = getter.result()
            result, exc = item
            if result is _END:
                return
            if exc is not None:
                raise exc
            yield result
            slots.release()
    finally:
        feeder.cancel()
        for task in list(pending):
            task.cancel()
