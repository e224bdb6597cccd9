"""The protobuf wire format, for the few places that frame messages already serialized instead of decoding
and encoding them again (a message in a repeated field of another is its bytes behind a key and a length)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a base-128 varint."""
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, bytes or a string) numbered ``number``, holding ``payload``."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def framed(number: int, pieces: list) -> list:
    """:func:`field` of the pieces (bytes-like) joined, as pieces: nothing is copied until the whole
    message is joined once."""
    return [varint(number << 3 | 2) + varint(sum(map(len, pieces))), *pieces]


def repeated(data: bytes, number: int) -> list[memoryview]:
    """The payloads of field ``number`` in ``data``, a serialized message whose fields are all
    length-delimited (a ParsedBatch: its one field a repeated message), as views of ``data`` (not copied);
    raises ValueError on anything else."""
    out: list = []
    view, pos, end = memoryview(data), 0, len(data)
    while pos < end:
        key, pos = _varint_at(data, pos)
        size, pos = _varint_at(data, pos)
        if key & 7 != 2 or pos + size > end:
            raise ValueError(f"not a message of length-delimited fields (key {key} at byte {pos})")
        if key >> 3 == number:
            out.append(view[pos:pos + size])
        pos += size
    return out


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos``, and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("a truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
