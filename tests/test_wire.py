"""codeindex_common.wire: the messages framed by hand (a parser's answers passed on as they came) are the
messages protobuf itself makes and reads."""

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeindex_common import wire
from codeindex_common.model import FileRecord
from codeindex_common.pb import common_pb2, parser_pb2, store_pb2
from codeindex_common.streams import map_unordered_ready

names = st.text(max_size=40)


def parse_response(path: str, texts: list[str], skip: str = "") -> parser_pb2.ParseResponse:
    return parser_pb2.ParseResponse(path=path, language="python", skip_reason=skip, chunks=[
        common_pb2.Chunk(id=f"{path}#{i}", path=path, text=t, embed_text="# " + t, content_hash=f"h{i}")
        for i, t in enumerate(texts)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(names, st.lists(st.text(max_size=300), max_size=5)), max_size=8))
def test_a_batch_framed_by_hand_is_protobufs_and_splits_back(files):
    answers = [parse_response(path, texts).SerializeToString() for path, texts in files]
    framed = b"".join(wire.field(1, a) for a in answers)
    assert framed == parser_pb2.ParsedBatch(files=[parser_pb2.ParseResponse.FromString(a) for a in answers]
                                            ).SerializeToString()
    assert [bytes(v) for v in wire.repeated(framed, 1)] == answers
    for a in answers:  # in pieces, joined once: the same bytes
        assert b"".join(wire.framed(1, [a[:3], memoryview(a)[3:]])) == wire.field(1, a)


@given(st.integers(min_value=0, max_value=2**63))
def test_varints_are_protobufs(n):
    encoded = common_pb2.Definition(start_line=n % 2**32).SerializeToString()
    if n % 2**32:
        assert encoded == b"\x20" + wire.varint(n % 2**32)  # start_line is field 4, a varint
    assert wire._varint_at(wire.varint(n), 0) == (n, len(wire.varint(n)))


def test_what_is_not_a_message_of_length_delimited_fields_is_refused():
    with pytest.raises(ValueError):
        wire.repeated(b"\x08\x01", 1)  # a varint field
    with pytest.raises(ValueError):
        wire.repeated(b"\x0a\x05ab", 1)  # longer than what is left
    with pytest.raises(ValueError):
        wire.repeated(b"\x0a\x80", 1)  # a truncated length


def test_a_record_with_the_parsers_answer_is_the_record_with_its_chunks():
    answer = parse_response("a.py", ["def a(): pass", "def b(): pass"])
    vecs = np.arange(8, dtype=np.float32).reshape(2, 4)
    raw = memoryview(wire.field(1, answer.SerializeToString()))[2:]  # a view into a larger answer, as split
    record = FileRecord("a.py", "fh", [], vecs, "", "m", parsed=raw)
    sent = store_pb2.FileRecord.FromString(b"".join(record.serialized()))
    assert sent == record.to_pb()
    assert sent.parsed == answer and not sent.chunks
    assert np.array_equal(np.frombuffer(sent.vectors, "<f4").reshape(2, 4), vecs)
    back = FileRecord.from_pb(sent, messages=True)
    assert [c.id for c in back.chunks] == ["a.py#0", "a.py#1"] and back.rows == 2
    assert np.array_equal(back.vectors, vecs)
    skipped = FileRecord("b.bin", "fh", [], np.empty((0, 4), np.float32), "binary", "m")
    assert store_pb2.FileRecord.FromString(b"".join(skipped.serialized())) == skipped.to_pb()


def test_results_done_together_come_in_one_list():
    async def go():
        gate = asyncio.Event()

        async def work(n):
            if n < 6:
                await gate.wait()  # the first six finish together
            return n

        async def requests():
            for n in range(8):
                yield n
            gate.set()

        return [r async for r in map_unordered_ready(requests(), work, max_in_flight=8, most=4)]

    lists = asyncio.run(go())
    assert sorted(n for batch in lists for n in batch) == list(range(8))
    assert max(len(b) for b in lists) == 4 and len(lists) < 8
