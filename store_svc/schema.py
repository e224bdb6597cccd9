"""The two tables' names and columns, their indexes, and the conversions
between rows and domain objects (FileRecord -> rows, row -> Chunk)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from lancedb.index import Bitmap, BTree, LabelList

from codeindex_common.model import DEFINITION_KINDS, Chunk, FileRecord, kind_from_pb

from codeindex_common.keywords import FORMAT as KEYWORDS_FORMAT, body_field, names_field

CHUNKS, FILES = "chunks", "files"
CHUNK_COLUMNS = ["id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line",
                 "end_line", "start_byte", "end_byte", "text", "content_hash", "docstring", "signature"]
# what a symbol lookup reads of each chunk it finds (with the signature and the definitions)
META_COLUMNS = ["id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line", "end_line",
                "names"]
# columns computed from a chunk's others: a table written before they existed gets them in place (upgrade)
DERIVED = ("kw_names", "kw_body", "names", "names_folded", "definitions")
SCALAR_INDEXES = {"path": BTree, "content_hash": BTree, "id": BTree, "symbol": BTree, "qualified_name": BTree,
                  "language": Bitmap, "kind": Bitmap, "names": LabelList, "names_folded": LabelList}
# the full-text indexes every upkeep keeps (one over the raw text is built when a search first asks for it)
FTS_COLUMNS = ("kw_names", "kw_body")


def chunks_schema(dim: int) -> pa.Schema:
    s, i32, i64 = pa.string(), pa.int32(), pa.int64()
    return pa.schema([
        ("id", s), ("path", s), ("language", s), ("kind", s), ("symbol", s), ("qualified_name", s),
        ("parent_id", s), ("start_line", i32), ("end_line", i32), ("start_byte", i64), ("end_byte", i64),
        ("text", s), ("content_hash", s), ("docstring", s), ("signature", s), ("model_id", s),
        ("vector", pa.list_(pa.float32(), dim)), *DERIVED_FIELDS,
    ])


# the identifier-split keyword fields, the definitions' names (as written, for exact lookups, and in lower
# case, for the ranking's name matches) and the definitions themselves (JSON)
DERIVED_FIELDS = [pa.field("kw_names", pa.string()), pa.field("kw_body", pa.string()),
                  pa.field("names", pa.list_(pa.string())), pa.field("names_folded", pa.list_(pa.string())),
                  pa.field("definitions", pa.string())]


def kind_of(c) -> str:
    """A chunk's or definition's kind: a ``Chunk``'s as it is, a message's (as written by the Write RPC,
    which passes the parser's messages on) from its enum."""
    return c.kind if isinstance(c.kind, str) else kind_from_pb(c.kind)


def definitions_of(c: Chunk) -> list[dict]:
    """The definitions a chunk (a ``Chunk`` or a ``common_pb2.Chunk``) holds, as stored (a chunk from before
    definitions were sent stands for one definition per name it carries, with its own lines)."""
    if c.definitions:
        return [{"symbol": d.symbol, "qualified_name": d.qualified_name, "kind": kind_of(d), "start_line": d.start_line,
                 "end_line": d.end_line} for d in c.definitions]  # asdict's copying costs 5x as much
    kind = kind_of(c)
    if kind not in DEFINITION_KINDS or not c.symbol:
        return []
    return [{"symbol": s.strip(), "qualified_name": q.strip(), "kind": kind, "start_line": c.start_line,
             "end_line": c.end_line} for s, q in zip(c.symbol.split(","), c.qualified_name.split(","))]


def names_of(definitions: list[dict]) -> list[str]:
    """Every bare and qualified name of these definitions, as written."""
    return list(dict.fromkeys(n for d in definitions for n in (d["symbol"], d["qualified_name"]) if n))


def derived(c: Chunk) -> dict:
    defs = definitions_of(c)
    names = names_of(defs)
    # a message from the parser brings its keyword fields; a Chunk, a message without them or one whose
    # fields were made by other rules (another version's parser) gets them here
    sent = getattr(c, "kw_format", 0) == KEYWORDS_FORMAT
    return {"kw_names": (sent and c.kw_names) or names_field(c),
            "kw_body": (sent and c.kw_body) or body_field(c),
            "names": names,
            "names_folded": list(dict.fromkeys(n.lower() for n in names)),
            "definitions": json.dumps(defs, separators=(",", ":"))}


FILES_SCHEMA = pa.schema([("path", pa.string()), ("file_hash", pa.string()), ("skip_reason", pa.string()),
                          ("chunks", pa.int32()), ("model_id", pa.string())])

_EMPTY = {name: "" for name in CHUNK_COLUMNS} | {n: 0 for n in ("start_line", "end_line", "start_byte", "end_byte")}


def chunk_from_row(row: dict) -> Chunk:
    """A Chunk from a result row; columns a ranking did not read stay empty."""
    return Chunk(embed_text="", **{name: row.get(name, blank) for name, blank in _EMPTY.items()})


def chunk_rows(records: list[FileRecord], dim: int) -> pa.Table:
    """The chunks rows of these files, with their vectors and model."""
    chunks = [c for r in records for c in r.chunks]
    cols = {name: [getattr(c, name) for c in chunks] for name in CHUNK_COLUMNS if name != "kind"}
    cols["kind"] = [kind_of(c) for c in chunks]
    cols["model_id"] = [r.model_id for r in records for _ in r.chunks]
    extra = [derived(c) for c in chunks]
    for name in DERIVED:
        cols[name] = [e[name] for e in extra]
    vectors = np.concatenate([np.asarray(r.vectors, dtype=np.float32).reshape(-1, dim) for r in records])
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), dim)
    return pa.table(cols, schema=chunks_schema(dim))


# a row a replace has taken out of search (see VectorStore._replace): no path, no words, no names; the kind no
# chunk has. Searches skip it, and the commit after the replace deletes it.
TOMBSTONE = "~replaced"
IS_TOMBSTONE = f"kind = '{TOMBSTONE}'"


def tombstone_rows(ids: list[str], dim: int) -> pa.Table:
    """Rows that overwrite these chunk ids with tombstones, in the chunks table's schema."""
    n, schema = len(ids), chunks_schema(dim)
    cols: dict = {f.name: [""] * n for f in schema if pa.types.is_string(f.type)}
    cols |= {f.name: [0] * n for f in schema if pa.types.is_integer(f.type)}
    cols |= {"id": list(ids), "kind": [TOMBSTONE] * n, "definitions": ["[]"] * n, "names": [[]] * n,
             "names_folded": [[]] * n}
    unit = np.zeros((n, dim), np.float32)
    unit[:, 0] = 1.0  # any vector will do: searches drop these rows by kind
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(unit.reshape(-1)), dim)
    return pa.table(cols, schema=schema)


def file_rows(records: list[FileRecord], pending: bool) -> pa.Table:
    """The files rows of these files; a pending row has an empty hash."""
    return pa.table({
        "path": [r.path for r in records], "file_hash": ["" if pending else r.file_hash for r in records],
        "skip_reason": [r.skip_reason for r in records], "chunks": [len(r.chunks) for r in records],
        "model_id": [r.model_id for r in records],
    }, schema=FILES_SCHEMA)


def derived_rows(rows: pa.Table) -> pa.Table:
    """The derived columns of stored rows (id plus CHUNK_COLUMNS), to add to a table written before them."""
    chunks = [chunk_from_row(r) for r in rows.to_pylist()]
    extra = [derived(c) for c in chunks]
    return pa.table({"id": [c.id for c in chunks], **{name: [e[name] for e in extra] for name in DERIVED}},
                    schema=pa.schema([pa.field("id", pa.string()), *DERIVED_FIELDS]))


def missing_columns(table) -> set[str]:
    """Columns of today's chunks schema that this chunks table lacks (an older codeindex wrote it)."""
    dim = table.schema.field("vector").type.list_size
    return set(chunks_schema(dim).names) - set(table.schema.names)
