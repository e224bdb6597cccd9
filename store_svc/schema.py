"""The two tables' names and columns, their indexes, and the conversions
between rows and domain objects (FileRecord -> rows, row -> Chunk)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from lancedb.index import Bitmap, BTree

from codeindex_common.model import Chunk, FileRecord

CHUNKS, FILES = "chunks", "files"
CHUNK_COLUMNS = ["id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line",
                 "end_line", "start_byte", "end_byte", "text", "content_hash", "docstring", "signature"]
ID_ONLY = ["id"]
SCALAR_INDEXES = {"path": BTree, "content_hash": BTree, "id": BTree, "symbol": BTree, "qualified_name": BTree,
                  "language": Bitmap, "kind": Bitmap}


def chunks_schema(dim: int) -> pa.Schema:
    s, i32, i64 = pa.string(), pa.int32(), pa.int64()
    return pa.schema([
        ("id", s), ("path", s), ("language", s), ("kind", s), ("symbol", s), ("qualified_name", s),
        ("parent_id", s), ("start_line", i32), ("end_line", i32), ("start_byte", i64), ("end_byte", i64),
        ("text", s), ("content_hash", s), ("docstring", s), ("signature", s), ("model_id", s),
        ("vector", pa.list_(pa.float32(), dim)),
    ])


FILES_SCHEMA = pa.schema([("path", pa.string()), ("file_hash", pa.string()), ("skip_reason", pa.string()),
                          ("chunks", pa.int32()), ("model_id", pa.string())])

_EMPTY = {name: "" for name in CHUNK_COLUMNS} | {n: 0 for n in ("start_line", "end_line", "start_byte", "end_byte")}


def chunk_from_row(row: dict) -> Chunk:
    """A Chunk from a result row; columns a ranking did not read stay empty."""
    return Chunk(embed_text="", **{name: row.get(name, blank) for name, blank in _EMPTY.items()})


def chunk_rows(records: list[FileRecord], dim: int) -> pa.Table:
    """The chunks rows of these files, with their vectors and model."""
    chunks = [c for r in records for c in r.chunks]
    cols = {name: [getattr(c, name) for c in chunks] for name in CHUNK_COLUMNS}
    cols["model_id"] = [r.model_id for r in records for _ in r.chunks]
    vectors = np.concatenate([np.asarray(r.vectors, dtype=np.float32).reshape(-1, dim) for r in records])
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), dim)
    return pa.table(cols, schema=chunks_schema(dim))


def file_rows(records: list[FileRecord], pending: bool) -> pa.Table:
    """The files rows of these files; a pending row has an empty hash."""
    return pa.table({
        "path": [r.path for r in records], "file_hash": ["" if pending else r.file_hash for r in records],
        "skip_reason": [r.skip_reason for r in records], "chunks": [len(r.chunks) for r in records],
        "model_id": [r.model_id for r in records],
    }, schema=FILES_SCHEMA)


def missing_columns(table) -> set[str]:
    """Columns of today's chunks schema that this chunks table lacks (an older codeindex wrote it)."""
    dim = table.schema.field("vector").type.list_size
    return set(chunks_schema(dim).names) - set(table.schema.names)
