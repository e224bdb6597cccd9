"""The public API's servicer over a real gRPC server on port 0, with stand-in
stages that only record how the runs it starts overlap (the end-to-end tests
of the API, with the real stages, are in test_e2e.py)."""

from __future__ import annotations

import asyncio

import grpc

from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc
from orchestrator.pipeline import Settings
from orchestrator.servicer import OrchestratorServicer


class _HangingEmbedder:
    """The first call of every index run (the model's Info) waits until the run is cancelled, and then
    takes a while to end (as a real stage's call does): a servicer that let the lock go before the
    cancelled run had ended would start the next run while this one is still active."""

    ENDING_SECONDS = 0.5

    def __init__(self) -> None:
        self.active = self.most = self.cancelled = 0
        self.entered = asyncio.Event()

    async def info(self):
        self.active += 1
        self.most = max(self.most, self.active)
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            await asyncio.sleep(self.ENDING_SECONDS)
            raise
        finally:
            self.active -= 1


class _Stages:
    def __init__(self) -> None:
        self.embedder = _HangingEmbedder()

    async def up(self, *stages: str) -> None:  # all of them serve already
        pass

    def spawn(self, *stages: str) -> None:
        pass


def test_a_cancelled_index_run_ends_before_the_next_one_starts(tmp_path):
    """A client that goes away stops its run, and the lock that keeps one run per store is let go only
    after the run has ended: two runs never write the same store at once."""
    stages = _Stages()

    async def scenario() -> None:
        server = grpc.aio.server()
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
            OrchestratorServicer(stages, Settings(), {}, [str(tmp_path)]), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
                first = stub.Index(orchestrator_pb2.IndexRequest(path=str(tmp_path)))
                await asyncio.wait_for(stages.embedder.entered.wait(), 10)
                first.cancel()
                stages.embedder.entered.clear()
                second = stub.Index(orchestrator_pb2.IndexRequest(path=str(tmp_path)))
                await asyncio.wait_for(stages.embedder.entered.wait(), 10)
                second.cancel()
        finally:
            await server.stop(None)

    asyncio.run(scenario())
    assert stages.embedder.most == 1, "a second run started while the cancelled one was still going"
    assert stages.embedder.cancelled >= 1
