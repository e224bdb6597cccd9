"""gRPC clients of the three stages, exposing domain types only, so the
pipeline itself has no grpc imports. RPC failures become StageError naming
the stage."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from codeindex_common import vectors, wire
from codeindex_common.errors import CodeindexError
from codeindex_common.channels import CHANNEL_OPTIONS, open_channel
from codeindex_common.model import (EmbedInfo, FileRecord, Hit, IndexSummary,
                                    ProgressUpdate, Query, Stats, SymbolHit, SymbolQuery, manifest_from_pb)
from codeindex_common.pb import (embed_pb2, embed_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, parser_pb2,
                                 parser_pb2_grpc, store_pb2, store_pb2_grpc)
from codeindex_common.tls import ClientTLS
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from . import metrics

log = logging.getLogger("codeindex.orchestrator")


class StageError(CodeindexError):
    """A stage failed; the message names it."""

    status = "UNAVAILABLE"

    def __init__(self, stage: str, address: str, err: Exception):
        if isinstance(err, grpc.aio.AioRpcError):
            detail = f"{err.code().name}: {err.details()}"
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.status = "FAILED_PRECONDITION"
            elif err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self.status = "INVALID_ARGUMENT"
        else:
            detail = f"{type(err).__name__}: {err}"
        super().__init__(f"the {stage} stage at {address} failed: {detail}")
        self.stage = stage


# round_robin: a name that resolves to several addresses (a headless Service,
# `dns:///parser.ns.svc:50051`) gets a subchannel per address, and each new
# call (each stream) goes to the next one
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def addresses(spec: str) -> list[str]:
    """A stage's targets: one address, a `dns:///name:port` target (expanded
    to every address the name resolves to now, e.g. each pod behind a
    headless Service), or several of either separated by commas."""
    return [address for address, _ in targets(spec)]


def targets(spec: str) -> list[tuple[str, str]]:
    """:func:`addresses`, each with the name its server's TLS certificate must
    hold when it is not the address's own host: the name of the `dns:///`
    target it was resolved from ("" otherwise)."""
    specs = [a.strip() for a in spec.split(",") if a.strip()]
    if not specs:
        raise CodeindexError(f"no address in {spec!r}")
    return [t for target in specs for t in _resolve(target)]


def _resolve(target: str) -> list[tuple[str, str]]:
    """``dns:///name:port`` as one target per resolved address (so that streams
    are spread evenly from the first one on), each with ``name``; the name
    itself if it does not resolve yet (gRPC keeps trying) or if it is not a
    dns:/// target."""
    if not target.startswith("dns:///"):
        return [(target, "")]
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return [(target, "")]
    ips = sorted({info[4][0] for info in infos})
    name = host.strip("[]")
    return [(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", name) for ip in ips] or [(target, "")]


def channel(address: str, tls: ClientTLS | None = None, server_name: str = "") -> grpc.aio.Channel:
    """A channel to one target, with the message-size limits and round_robin; TLS when ``tls`` is enabled
    (the certificate checked for ``server_name`` when given, else for the address's host)."""
    return open_channel(address, tls, [*CHANNEL_OPTIONS, ("grpc.service_config", ROUND_ROBIN)], aio=True,
                        server_name=server_name)


TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


def transient(err: Exception) -> bool:
    """A failure worth retrying: the service unreachable or refusing work for
    now, or gRPC's client core failing a write on a connection that just died
    (INTERNAL "Internal error from Core", grpc/grpc#36066), which is not the
    service's INTERNAL (a bug there is not retried). A TLS handshake that
    fails on a certificate is not transient either: waiting does not fix it."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return False
    if tls_failure(err):
        return False
    return err.code() in TRANSIENT or (err.code() == grpc.StatusCode.INTERNAL
                                       and "from Core" in (err.details() or ""))


# what gRPC's client reports when the TLS handshake itself fails: a certificate not signed by the CA, a name
# not in it, a server that answers in plain text. SSL_ERROR_SYSCALL is the connection dropping mid-handshake
# (a restart), which stays transient.
_TLS_FAILURES = ("handshake failed", "verification check failed", "certificate_verify_failed")


def tls_failure(err: grpc.aio.AioRpcError) -> bool:
    details = (err.details() or "").lower()
    return (err.code() == grpc.StatusCode.UNAVAILABLE and any(f in details for f in _TLS_FAILURES)
            and "ssl_error_syscall" not in details)


def tls_hint(err: Exception, tls: bool) -> str:
    """What to check, when a failure looks like TLS set up wrongly on one side."""
    if not isinstance(err, grpc.aio.AioRpcError) or err.code() != grpc.StatusCode.UNAVAILABLE:
        return ""
    details = err.details() or ""
    if "WRONG_VERSION_NUMBER" in details:
        return "the service does not speak TLS: leave out --internal-tls-* for it, or start it with --tls-cert"
    if tls_failure(err):
        return ("the service's certificate was not accepted: check --internal-tls-ca and the name the "
                "certificate holds (--internal-tls-server-name)")
    connecting = "failed to connect to all addresses" in details or "connections to all backends failing" in details
    if connecting and "Socket closed" in details:
        if tls:
            return ("the service closed the connection while it was being set up: if it requires a client "
                    "certificate (mutual TLS), give --internal-tls-cert and --internal-tls-key")
        return ("the service closed the connection while it was being set up: if it speaks TLS, "
                "give --internal-tls-ca")
    return ""


_END = object()


def retryable(err: Exception) -> bool:
    """Transient, or past its deadline (a replica hung or unreachable: another
    attempt, maybe on another replica, may answer; every call here is safe to repeat)."""
    return transient(err) or (isinstance(err, grpc.aio.AioRpcError)
                              and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED)


def _stalled(items: int, seconds: float) -> grpc.aio.AioRpcError:
    """A stream that answered none of the items it holds for a whole deadline."""
    return grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=f"no answer to {items} items in {seconds:.0f} s (--rpc-timeout)")


class _Client:
    """A stage's replicas: a channel per configured target; calls (a stream is
    one call) take the targets in turn, and within a target gRPC's round_robin
    policy takes the resolved addresses in turn.

    Transient failures (UNAVAILABLE: a replica restarting or gone;
    RESOURCE_EXHAUSTED: a shared service refusing work for now) are retried
    with exponential backoff and jitter, for up to ``retry_seconds`` without
    progress; then the stage is reported down by name. Unary calls are
    repeated; a broken stream is opened again (on the next replica) and the
    items it had not answered are sent again first (:meth:`_resumable`)."""

    stage = ""
    stub_class: type = object

    def __init__(self, address: str, timeout: float, retry_seconds: float = 60.0, tls: ClientTLS | None = None):
        self.address = address
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.tls = tls is not None and tls.enabled
        self.channels = [channel(a, tls, name) for a, name in targets(address)]
        self._stubs = itertools.cycle([self.stub_class(ch) for ch in self.channels])

    @property
    def stub(self):
        """The next replica's stub."""
        return next(self._stubs)

    def error(self, err: Exception, retried: float = 0.0) -> StageError:
        e = StageError(self.stage, self.address, err)
        message = e.args[0]
        if retried:
            message += f" (still failing after {retried:.0f} s of retries)"
        hint = tls_hint(err, self.tls)
        if hint:
            message += f"; {hint}"
        e.args = (message,)
        return e

    def _retrying(self) -> AsyncRetrying:
        def count(state) -> None:
            metrics.STAGE_RETRIES.labels(self.stage).inc()

        return AsyncRetrying(
            retry=retry_if_exception(retryable),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0), stop=stop_after_delay(self.retry_seconds),
            before_sleep=count, reraise=True)

    async def _call(self, method: str, request, timeout: float | None = None):
        """A unary call with its deadline, repeated while the failure is transient."""
        started = time.monotonic()
        try:
            async for attempt in self._retrying():
                with attempt:
                    return await getattr(self.stub, method)(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise self.error(err, time.monotonic() - started if retryable(err) else 0.0) from err

    def _resumable(self, method: str, items: AsyncIterator, item_key, to_pb, response_key,
                   batch: Batching | None = None, decode=None) -> AsyncIterator:
        """A bidirectional stream that survives the service restarting (see :class:`ResumableStream`)."""
        return ResumableStream(self, method, items, item_key, to_pb, response_key, batch, decode).responses()

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


@dataclass(frozen=True)
class Batching:
    """Several items a message: the source gives lists of items, and a message holds a list and those
    behind it that are ready, up to ``items`` items and, past the first, while their ``weight`` (summed)
    stays within ``max_weight``."""

    items: int
    weight: Callable[[Any], int]
    max_weight: int

    def groups(self, items: list) -> list[list]:
        """``items`` (sent again after a broken stream) as the messages to send them in."""
        groups: list[list] = []
        weight = 0
        for it in items:
            w = self.weight(it)
            if not groups or len(groups[-1]) == self.items or weight + w > self.max_weight:
                groups.append([])
                weight = 0
            groups[-1].append(it)
            weight += w
        return groups


class ResumableStream:
    """A bidirectional stream that survives the service restarting: every
    item sent and not yet answered is kept (``pending``, by ``item_key``),
    and sent again first on a new stream when the old one breaks, so nothing
    is lost and nothing is answered twice. ``to_pb(item, first)`` builds a
    request (``first``: the new stream's first message); ``response_key``
    names the item an answer is for. A stream whose stage answers none of the
    items it holds for a whole deadline is cancelled and reopened, like a
    broken one; a stage still failing after ``retry_seconds`` is reported by
    name.

    ``batch``: several items a message (:class:`Batching`): the source gives lists of items, ``to_pb``
    takes a list of items and ``response_key`` gives the keys of all the items an answer is for. ``decode``: what
    an answer is made into (before ``response_key`` reads it) when it comes as bytes."""

    def __init__(self, client: _Client, method: str, items: AsyncIterator, item_key, to_pb, response_key,
                 batch: Batching | None = None, decode=None):
        self.client, self.method, self.decode = client, method, decode
        self.items, self.item_key, self.to_pb, self.response_key = items, item_key, to_pb, response_key
        self.batch = batch
        # the source's next item (batched: list of items), read ahead by one (four lists, to fill a message)
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=4 if batch else 1)
        self.held = None  # a list taken from the outbox that did not fit its message: the next one's first
        self.pending: dict = {}  # sent and not yet answered, in order
        self.ended = False  # the source has no more items
        self.pumping: asyncio.Task | None = None
        self.failing_since: float | None = None
        self.failures = 0

    async def responses(self) -> AsyncIterator:
        """The answers, each once, across as many streams as it takes."""
        self.pumping = asyncio.create_task(self._pump())
        call = None
        try:
            while True:
                try:
                    call = getattr(self.client.stub, self.method)(self._requests(list(self.pending.values())))
                    async for response in self._answers(call):
                        if self.decode is not None:
                            response = self.decode(response)
                        if self.batch:
                            for key in self.response_key(response):
                                self.pending.pop(key, None)
                        else:
                            self.pending.pop(self.response_key(response), None)
                        self.failing_since, self.failures = None, 0
                        yield response
                    if self.ended and not self.pending:
                        return
                    raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                               grpc.aio.Metadata(), details="the stream ended early")
                except grpc.aio.AioRpcError as err:
                    await asyncio.sleep(self._backoff(err))
        finally:
            self.pumping.cancel()
            if call is not None:
                call.cancel()  # a no-op once the call has ended; else (the caller stopped early) it ends it

    async def _pump(self) -> None:
        """The source's items into the outbox, then the end marker."""
        async for item in self.items:
            await self.outbox.put(item)
        await self.outbox.put(_END)

    async def _next_item(self):
        """The next item of the source; its error if it failed. Cancelled while waiting: nothing is lost."""
        if self.held is not None:
            item, self.held = self.held, None
            return item
        if not self.outbox.empty():
            return self.outbox.get_nowait()  # the usual case while the source keeps ahead: no task, no wait
        getter = asyncio.ensure_future(self.outbox.get())
        try:
            await asyncio.wait({getter, self.pumping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()  # the item, if any, stays in the queue
        if getter.done() and not getter.cancelled():
            return getter.result()
        self.pumping.result()  # the source failed: its error
        return await self.outbox.get()

    async def _requests(self, resend: list):
        """One stream's requests: the unanswered items of the last stream first, then new ones."""
        first = True
        for group in (self.batch.groups(resend) if self.batch else resend):
            yield self.to_pb(group, first)
            first = False
        while not self.ended:
            item = await self._next_item()
            if item is _END:
                self.ended = True
                return
            if not self.batch:
                self.pending[self.item_key(item)] = item
                yield self.to_pb(item, first)
                first = False
                continue
            group = self._ready(item)
            for it in group:
                self.pending[self.item_key(it)] = it
            for part in self.batch.groups(group):  # a list too large for one message: several
                yield self.to_pb(part, first)
                first = False

    def _ready(self, items: list) -> list:
        """``items`` (a list from the source) and the lists behind it in the outbox that fit one message
        with it."""
        group, weight = list(items), sum(map(self.batch.weight, items))
        while len(group) < self.batch.items and not self.outbox.empty():
            more = self.outbox.get_nowait()
            if more is _END:
                self.ended = True
                break
            w = sum(map(self.batch.weight, more))
            if len(group) + len(more) > self.batch.items or weight + w > self.batch.max_weight:
                self.held = more
                break
            group.extend(more)
            weight += w
        return group

    async def _answers(self, call):
        """One stream's answers; a stream that holds items and answers none of
        them for a whole deadline is stuck (a hung or stopped process): it is
        cancelled and reported as stalled."""
        timeout = self.client.timeout
        while True:
            reading = asyncio.ensure_future(call.read())
            while True:
                waiting = bool(self.pending)
                done, _ = await asyncio.wait({reading}, timeout=timeout)
                if done:
                    break
                if waiting and self.pending:
                    reading.cancel()
                    call.cancel()
                    raise _stalled(len(self.pending), timeout)
            response = reading.result()
            if response is grpc.aio.EOF:
                return
            yield response

    def _backoff(self, err: grpc.aio.AioRpcError) -> float:
        """Seconds to wait before the next stream, after ``err``; raises when it is not worth another one."""
        pumping = self.pumping
        if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
            raise pumping.exception() from err  # the source failed, not the stage
        if not retryable(err):
            raise self.client.error(err) from err
        self.failing_since = self.failing_since or time.monotonic()
        waited = time.monotonic() - self.failing_since
        if waited > self.client.retry_seconds:
            raise self.client.error(err, waited) from err
        self.failures += 1
        metrics.STAGE_RETRIES.labels(self.client.stage).inc()
        log.warning("%s stream broke (%s); resuming with %d unanswered items", self.client.stage,
                    err.code().name, len(self.pending))
        return _backoff(self.failures)


def _backoff(failures: int) -> float:
    """Seconds before opening a broken stream again: exponential from 0.2 s, at most 2 s, with jitter."""
    return min(2.0, 0.1 * 2 ** failures) * (0.5 + random.random())


def _method(module, service: str, name: str) -> str:
    return f"/{module.DESCRIPTOR.services_by_name[service].full_name}/{name}"


class _ParserStub(parser_pb2_grpc.ParserStub):
    """The generated stub, and ParseMany with its answers left as their bytes (ParserClient.parse splits
    them, and each file's answer goes on to the store as it came)."""

    def __init__(self, channel):
        super().__init__(channel)
        self.ParseManyBytes = channel.stream_stream(_method(parser_pb2, "Parser", "ParseMany"),
                                                    request_serializer=parser_pb2.ParseBatch.SerializeToString,
                                                    response_deserializer=None)


class _StoreStub(store_pb2_grpc.StoreStub):
    """The generated stub, and WriteMany taking its requests serialized already (FileRecord.serialized)."""

    def __init__(self, channel):
        super().__init__(channel)
        self.WriteManyBytes = channel.stream_stream(_method(store_pb2, "Store", "WriteMany"), request_serializer=None,
                                                    response_deserializer=store_pb2.WriteAcks.FromString)


class ParserClient(_Client):
    stage = "parser"
    stub_class = _ParserStub

    # files a ParseMany message: as many as are ready, up to 64 or 4 MiB (a larger file goes alone)
    PARSE_BATCH = Batching(items=64, weight=lambda f: len(f[1]), max_weight=4 << 20)

    async def parse(self, files: AsyncIterator[list[tuple[str, bytes]]], max_tokens: int = 0,
                    tokenizer_json: bytes = b"") -> AsyncIterator[list[tuple[parser_pb2.ParseResponse, memoryview]]]:
        """Lists of (path, content) in; chunks of each file out, the files
        done together in a list, as they are done; chunks are sized for a model
        window of ``max_tokens`` counted with ``tokenizer_json`` (both from the
        embedder's Info). Several files go each way in a message (ParseMany),
        as many as are ready. Each file comes as the parser's own message (path,
        language, chunks, skip_reason, detail: FileResult's fields) with its
        bytes, not made into Python objects: the orchestrator reads two fields
        of a chunk (content_hash, embed_text) and hands the bytes on to the
        store (FileRecord.parsed), which costs 8 µs a chunk less than sending
        the chunk messages and 70 less than a round trip through
        ``FileResult`` (``FileResult.from_pb`` where the objects are wanted)."""
        options = parser_pb2.ChunkOptions(max_tokens=max_tokens, tokenizer_json=tokenizer_json)

        def to_pb(group: list[tuple[str, bytes]], first: bool) -> parser_pb2.ParseBatch:
            return parser_pb2.ParseBatch(files=[parser_pb2.ParseRequest(path=path, content=content)
                                                for path, content in group], options=options if first else None)

        def split(answer: bytes) -> list[tuple[parser_pb2.ParseResponse, memoryview]]:
            return [(parser_pb2.ParseResponse.FromString(raw), raw) for raw in wire.repeated(answer, 1)]

        async for done in self._resumable("ParseManyBytes", files, lambda item: item[0], to_pb,
                                          lambda answer: [pb.path for pb, _ in answer], self.PARSE_BATCH, split):
            yield done


class EmbedderClient(_Client):
    stage = "embed"
    stub_class = embed_pb2_grpc.EmbedderStub

    async def info(self) -> EmbedInfo:
        return EmbedInfo.from_pb(await self._call("Info", embed_pb2.InfoRequest()))

    async def embed_once(self, texts: list[str]) -> np.ndarray:
        r = await self._call("EmbedOnce", embed_pb2.EmbedRequest(texts=texts))
        return vectors.unpack(r.vectors, r.dim, r.count)

    async def embed(self, requests: AsyncIterator[tuple[str, list[str]]]) -> AsyncIterator[tuple[str, np.ndarray]]:
        """(request id, texts) in; (request id, vectors) out, in any order."""
        def to_pb(item, first: bool) -> embed_pb2.EmbedRequest:
            return embed_pb2.EmbedRequest(request_id=item[0], texts=item[1])

        async for r in self._resumable("Embed", requests, lambda item: item[0], to_pb, lambda r: r.request_id):
            yield r.request_id, vectors.unpack(r.vectors, r.dim, r.count)


class StoreClient(_Client):
    stage = "store"
    stub_class = _StoreStub

    # files a WriteMany message: as many as are ready, up to 64 or 1,024 chunks (about 4 MB)
    WRITE_BATCH = Batching(items=64, weight=lambda r: r.rows, max_weight=1024)

    async def write(self, records: AsyncIterator[list[FileRecord]]) -> AsyncIterator[list[tuple[str, int]]]:
        """Lists of FileRecords in; (path, rows) acknowledgements out once
        committed, those of a commit in a list. A
        record sent again after a broken stream is written again: the store
        replaces a file's rows, so the result is the same. Several files go in
        one message (WriteMany), as many as are ready."""
        def to_pb(group: list[FileRecord], first: bool) -> bytes:  # a FileRecords message, joined once
            return b"".join([piece for r in group for piece in wire.framed(1, r.serialized())])

        async for answer in self._resumable("WriteManyBytes", records, lambda r: r.path, to_pb,
                                            lambda a: [ack.path for ack in a.acks], self.WRITE_BATCH):
            yield [(ack.path, ack.rows) for ack in answer.acks]

    async def manifest(self) -> AsyncIterator[list[tuple[str, str]]]:
        """(path, content hash) of every indexed file ("" while its write is pending), in path order, a page
        (a list) at a time. A stream broken by a transient failure (the store restarting) is opened again after the
        last path it gave, for up to ``retry_seconds`` without progress. No deadline: the run reads it at
        the pace of its walk."""
        last, failures, since = "", 0, time.monotonic()
        while True:
            try:
                async for page in self.stub.Manifest(store_pb2.ManifestRequest(after=last)):
                    files = manifest_from_pb(page)
                    if files:
                        last, failures, since = files[-1][0], 0, time.monotonic()
                        yield files
                return
            except grpc.aio.AioRpcError as err:
                waited = time.monotonic() - since
                if not retryable(err) or waited > self.retry_seconds:
                    raise self.error(err, waited if retryable(err) else 0.0) from err
                metrics.STAGE_RETRIES.labels(self.stage).inc()
                failures += 1
                await asyncio.sleep(_backoff(failures))

    async def delete(self, paths: list[str]) -> int:
        r = await self._call("Delete", store_pb2.DeleteRequest(paths=paths))
        return r.files_deleted

    async def lookup_vectors(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        r = await self._call("LookupVectors", store_pb2.LookupVectorsRequest(content_hashes=hashes))
        if not r.content_hashes:
            return {}
        vecs = vectors.unpack(r.vectors, r.dim, len(r.content_hashes))
        return dict(zip(r.content_hashes, vecs))

    async def search(self, vector: np.ndarray | None, q: Query) -> list[Hit]:
        r = await self._call("Search", q.to_search_pb(vector))
        return [Hit.from_pb(h) for h in r.hits]

    async def find_symbol(self, q: SymbolQuery) -> list[SymbolHit]:
        r = await self._call("FindSymbol", q.to_pb())
        return [SymbolHit.from_pb(d) for d in r.definitions]

    async def optimize(self, quiet: bool = False) -> store_pb2.OptimizeResponse:
        """The upkeep after a run (``quiet``: the repository has gone quiet; see the store's Optimize)."""
        # building the vector index of a large table takes minutes, not the usual deadline
        return await self._call("Optimize", store_pb2.OptimizeRequest(quiet=quiet), timeout=max(self.timeout, 3600))

    async def reset(self) -> int:
        return (await self._call("Reset", store_pb2.ResetRequest())).chunks_dropped

    async def stats(self) -> Stats:
        return Stats.from_pb(await self._call("Stats", store_pb2.StatsRequest()))


class Stages:
    """The three stage clients of one run, and (``local``) the launcher of those started as local child
    processes: :meth:`up` waits for a stage before its first use (starting a lazy one), :meth:`release`
    stops one the run needs no more. Both do nothing for stages given by address."""

    def __init__(self, parser_addr: str, embed_addr: str, store_addr: str, timeout: float = 60.0,
                 retry_seconds: float = 60.0, tls: dict[str, ClientTLS] | None = None, local=None):
        """``tls``: TLS settings by stage ("parser", "embed", "store"); a stage not in it is plain text.
        ``local``: a :class:`codeindex_common.launcher.LocalServices` started with ``wait=False``."""
        tls = tls or {}
        self.parser = ParserClient(parser_addr, timeout, retry_seconds, tls.get("parser")) if parser_addr else None
        self.embedder = EmbedderClient(embed_addr, timeout, retry_seconds, tls.get("embed")) if embed_addr else None
        self.store = StoreClient(store_addr, timeout, retry_seconds, tls.get("store"))
        self.local = local
        self._starting = asyncio.Lock()

    async def up(self, *stages: str) -> None:
        """Once each of ``stages`` ("parser", "embed", "store") that was started locally serves."""
        await self._local("ready", stages)

    def spawn(self, *stages: str) -> None:
        """Start those of ``stages`` that are local and not running yet, without waiting for them (from any
        thread): :meth:`up` waits."""
        if self.local is not None:
            for stage in stages:
                if stage in self.local.stages:
                    self.local.spawn(stage)

    async def release(self, *stages: str) -> None:
        """Stop those of ``stages`` that were started locally (the run needs them no more)."""
        await self._local("release", stages)

    async def _local(self, action: str, stages: tuple[str, ...]) -> None:
        if self.local is None:
            return
        async with self._starting:
            for stage in stages:
                if stage in self.local.stages:
                    await asyncio.to_thread(getattr(self.local, action), stage)

    async def close(self) -> None:
        for c in (self.parser, self.embedder, self.store):
            if c is not None:
                await c.close()


class ApiClient:
    """The public API of a server that holds an index (``serve``, ``watch``, ``mcp``): what the CLI and a
    second front end go through instead of starting services of their own. Domain types in and out."""

    def __init__(self, address: str, timeout: float = 60.0):
        self.address, self.timeout = address, timeout
        self.channel = channel(address)
        self.stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel)

    def error(self, err: grpc.aio.AioRpcError) -> StageError:
        e = StageError("server", self.address, err)
        e.args = (e.args[0].replace("the server stage", "the server holding the index"),)
        return e

    async def _call(self, method: str, request):
        """A unary call with its deadline; a failure names the server."""
        try:
            return await getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err

    async def search(self, q: Query) -> list[Hit]:
        r = await self._call("Search", q.to_query_pb())
        return [Hit.from_query_hit_pb(h) for h in r.hits]

    async def find_symbol(self, q: SymbolQuery) -> list[SymbolHit]:
        r = await self._call("FindSymbol", q.to_pb())
        return [SymbolHit.from_pb(d) for d in r.definitions]

    async def status(self) -> tuple[Stats, float]:
        """The index's stats, and when the server's last run ended (0: none yet)."""
        r = await self._call("Status", orchestrator_pb2.StatusRequest())
        return Stats.from_status_pb(r), r.last_run_at

    async def index(self, root: str, reindex: bool = False, on_progress=None) -> IndexSummary:
        """An index run by the server (after any run it has going); ``on_progress(ProgressUpdate)``."""
        request = orchestrator_pb2.IndexRequest(path=root, reindex=reindex)
        try:
            async for update in self.stub.Index(request, timeout=max(self.timeout, 24 * 3600)):
                if update.done:
                    return IndexSummary.from_pb(update.summary)
                if on_progress is not None:
                    on_progress(ProgressUpdate.from_pb(update))
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err
        raise CodeindexError(f"the server at {self.address} ended the run without a summary")

    async def close(self) -> None:
        await self.channel.close()
