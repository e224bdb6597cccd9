"""The domain vocabulary shared by every service, and every conversion between
it and the wire. Core classes speak these types only; servicers and clients
call ``from_pb`` / ``to_pb`` here, so generated types never leak into core
code and each message is converted in exactly one place."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from protos import common_pb2, embed_pb2, orchestrator_pb2, parser_pb2, store_pb2

from . import vectors, wire
from .errors import InvalidArgument

KINDS = ("function", "method", "class", "impl", "module", "block", "section")
_KIND_TO_PB = {k: getattr(common_pb2, f"CHUNK_KIND_{k.upper()}") for k in KINDS}
_PB_TO_KIND = {v: k for k, v in _KIND_TO_PB.items()}


MODES = ("vector", "keyword", "hybrid")
DEFAULT_MODE = "hybrid"


def mode_to_pb(mode: str) -> int:
    return getattr(common_pb2, f"SEARCH_MODE_{mode.upper()}", common_pb2.SEARCH_MODE_UNSPECIFIED)


def mode_from_pb(value: int) -> str:
    """The mode's name; unspecified means the default (hybrid)."""
    if value == common_pb2.SEARCH_MODE_UNSPECIFIED:
        return DEFAULT_MODE
    try:
        return common_pb2.SearchMode.Name(value).removeprefix("SEARCH_MODE_").lower()
    except ValueError:
        raise InvalidArgument(f"unknown search mode {value}") from None


def kind_to_pb(kind: str) -> int:
    return _KIND_TO_PB.get(kind, common_pb2.CHUNK_KIND_UNSPECIFIED)


def kind_from_pb(value: int) -> str:
    return _PB_TO_KIND.get(value, "")


# ---------------------------------------------------------------- skip reasons

SKIP_REASONS: dict[str, str] = {
    "binary": "a NUL byte in the first 8 KiB",
    "empty": "nothing but white space",
    "no_chunks": "nothing but punctuation",
    "too_large": "larger than the size limit",
    "long_lines": "a line longer than the limit (minified code)",
    "generated": "a lock file or generated code",
    "symlink": "a symbolic link (never followed)",
    "not_regular": "not a regular file",
    "unreadable": "could not be read",
    "worker_died": "the parser's worker died on it",
    "timeout": "the parser ran past its per-file timeout",
    "parse_failed": "the parser hit a bug on it",
}
# Skips that say the parser failed, not that the file is unfit: the index does
# not remember them, so the next run tries the file again.
PARSER_FAILURES = frozenset({"worker_died", "timeout", "parse_failed"})


# ---------------------------------------------------------------- chunks and files

# Bumped whenever the parser's chunks change (what a chunk spans, holds or embeds). File hashes are salted
# with it, so the first run after an upgrade parses every file again; a chunk whose text did not change keeps
# its vector. 2: names said in words in the embedded header, doc comments after a blank line, definitions.
# 3: Rust impl blocks and Swift extensions are of kind "impl", named as their type without its arguments.
# 4: the functions in a function longer than its window are chunks of their own; the function, a skeleton.
CHUNKING_VERSION = 4

DEFINITION_KINDS = ("function", "method", "class", "impl")
TYPE_KINDS = ("class", "impl")  # a type's definition, or a block implementing one: the functions in them are methods


@dataclass(frozen=True)
class Definition:
    """One definition in a file, with its own lines (a merged chunk holds several; each piece of a long
    one carries the whole definition's lines)."""

    symbol: str
    qualified_name: str
    kind: str
    start_line: int
    end_line: int

    @classmethod
    def from_pb(cls, pb: common_pb2.Definition) -> Definition:
        return cls(pb.symbol, pb.qualified_name, kind_from_pb(pb.kind), pb.start_line, pb.end_line)

    def to_pb(self) -> common_pb2.Definition:
        return common_pb2.Definition(symbol=self.symbol, qualified_name=self.qualified_name,
                                     kind=kind_to_pb(self.kind), start_line=self.start_line, end_line=self.end_line)


@dataclass(frozen=True)
class Chunk:
    id: str
    path: str
    language: str
    kind: str
    symbol: str
    qualified_name: str
    parent_id: str
    start_line: int
    end_line: int
    start_byte: int
    end_byte: int
    text: str
    embed_text: str
    content_hash: str
    docstring: str = ""
    signature: str = ""
    definitions: tuple[Definition, ...] = ()

    @classmethod
    def from_pb(cls, pb: common_pb2.Chunk) -> Chunk:
        return cls(
            id=pb.id, path=pb.path, language=pb.language, kind=kind_from_pb(pb.kind), symbol=pb.symbol,
            qualified_name=pb.qualified_name, parent_id=pb.parent_id, start_line=pb.start_line,
            end_line=pb.end_line, start_byte=pb.start_byte, end_byte=pb.end_byte, text=pb.text,
            embed_text=pb.embed_text, content_hash=pb.content_hash, docstring=pb.docstring,
            signature=pb.signature, definitions=tuple(map(Definition.from_pb, pb.definitions)),
        )

    def to_pb(self) -> common_pb2.Chunk:
        d = {f: getattr(self, f) for f in _CHUNK_SCALARS}
        return common_pb2.Chunk(**d, kind=kind_to_pb(self.kind), definitions=[x.to_pb() for x in self.definitions])


_CHUNK_SCALARS = [f.name for f in fields(Chunk) if f.name not in ("kind", "definitions")]


@dataclass(frozen=True)
class FileResult:
    """What the parser made of one file: chunks, or a skip with its reason."""

    path: str
    language: str
    chunks: tuple[Chunk, ...] = ()
    skip_reason: str = ""
    detail: str = ""

    @classmethod
    def from_pb(cls, pb: parser_pb2.ParseResponse) -> FileResult:
        return cls(pb.path, pb.language, tuple(map(Chunk.from_pb, pb.chunks)), pb.skip_reason, pb.detail)

    def to_pb(self) -> parser_pb2.ParseResponse:
        return parser_pb2.ParseResponse(path=self.path, language=self.language,
                                        chunks=[c.to_pb() for c in self.chunks], skip_reason=self.skip_reason,
                                        detail=self.detail)


@dataclass
class FileRecord:
    """One file as the store writes it: all its chunks and their vectors. ``chunks`` are ``Chunk``s, or the
    parser's ``common_pb2.Chunk`` messages as the store reads them; or (what the orchestrator sends)
    ``parsed``: the parser's serialized answer for the file, whose chunks they are, passed on as it came."""

    path: str
    file_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray  # (number of chunks, dim) float32
    skip_reason: str = ""
    model_id: str = ""
    parsed: bytes | memoryview = b""  # a serialized parser_pb2.ParseResponse, when ``chunks`` is empty

    @property
    def rows(self) -> int:
        return len(self.vectors) if self.vectors.ndim == 2 else len(self.chunks)

    @classmethod
    def from_pb(cls, pb: store_pb2.FileRecord, messages: bool = False) -> FileRecord:
        """``messages``: keep the chunks as the ``common_pb2.Chunk`` messages they came as (what the store
        writes reads their fields by name, as a ``Chunk``'s; the kinds are enums), instead of 35 µs a chunk
        of making ``Chunk`` objects of them. The chunks are ``parsed``'s when the record has none itself."""
        given = pb.chunks if pb.chunks else pb.parsed.chunks
        chunks = list(given) if messages else [Chunk.from_pb(c) for c in given]
        vecs = (vectors.unpack(pb.vectors, pb.dim, len(chunks)) if chunks
                else np.empty((0, pb.dim or 1), np.float32))
        return cls(pb.path, pb.file_hash, chunks, vecs, pb.skip_reason, pb.model_id)

    def to_pb(self) -> store_pb2.FileRecord:
        pb = store_pb2.FileRecord(
            path=self.path, file_hash=self.file_hash, chunks=_chunks_pb(self.chunks),
            dim=self.vectors.shape[1] if self.vectors.ndim == 2 else 0, vectors=vectors.pack(self.vectors),
            skip_reason=self.skip_reason, model_id=self.model_id)
        if self.parsed:
            pb.parsed.MergeFromString(bytes(self.parsed))
        return pb

    def serialized(self) -> list:
        """``to_pb().SerializeToString()`` in pieces to join (bytes-like), with ``parsed`` as it is rather
        than decoded and encoded again (the orchestrator's way: 8 µs a chunk less)."""
        if not self.parsed:
            return [self.to_pb().SerializeToString()]
        head = store_pb2.FileRecord(path=self.path, file_hash=self.file_hash, dim=self.vectors.shape[1],
                                    skip_reason=self.skip_reason, model_id=self.model_id)
        # the vectors' own memory, not a copy (the fields of a message may come in any order)
        return [head.SerializeToString(), *wire.framed(_VECTORS, [vectors.packed_view(self.vectors)]),
                *wire.framed(_PARSED, [self.parsed])]


_VECTORS = store_pb2.FileRecord.DESCRIPTOR.fields_by_name["vectors"].number
_PARSED = store_pb2.FileRecord.DESCRIPTOR.fields_by_name["parsed"].number


def _chunks_pb(chunks) -> list:
    if chunks and isinstance(chunks[0], common_pb2.Chunk):
        return chunks
    return [c.to_pb() for c in chunks]


@dataclass(frozen=True)
class ManifestEntry:
    """What the index remembers of one file: its content hash ("" while pending) and skip reason."""

    path: str
    file_hash: str
    skip_reason: str = ""


def manifest_to_pb(paths: list[str], hashes: list[str]) -> store_pb2.ManifestResponse:
    """A page of the Manifest RPC's answer: two columns, one position per file (a message per file cost
    0.5 s of decoding at 100,000 files)."""
    return store_pb2.ManifestResponse(paths=paths, file_hashes=hashes)


def manifest_from_pb(pb: store_pb2.ManifestResponse) -> list[tuple[str, str]]:
    """(path, content hash) of a page's files ("" while a file's write is pending)."""
    return list(zip(pb.paths, pb.file_hashes))


@dataclass
class Stats:
    """What an index holds."""

    chunks: int = 0
    files: int = 0
    dim: int = 0
    model_id: str = ""
    uri: str = ""
    versions: int = 0
    vector_index: str = ""
    unindexed_rows: int = 0  # rows some index does not hold yet (read without its help until the upkeep)
    resident_rows: int = 0  # chunks held in memory for search, of the table as it is now (docs/STORE.md)

    @classmethod
    def from_pb(cls, pb: store_pb2.StatsResponse) -> Stats:
        return cls(pb.chunks, pb.files, pb.dim, pb.model_id, pb.uri, pb.versions, pb.vector_index,
                   pb.unindexed_rows, pb.resident_rows)

    def to_pb(self) -> store_pb2.StatsResponse:
        return store_pb2.StatsResponse(**asdict(self))

    def to_status_pb(self, services: dict[str, str], last_run_at: float = 0.0) -> orchestrator_pb2.StatusResponse:
        return orchestrator_pb2.StatusResponse(chunks=self.chunks, files=self.files, model_id=self.model_id,
                                               dim=self.dim, index_uri=self.uri, services=services,
                                               versions=self.versions, vector_index=self.vector_index,
                                               last_run_at=last_run_at, unindexed_rows=self.unindexed_rows,
                                               resident_rows=self.resident_rows)

    @classmethod
    def from_status_pb(cls, pb: orchestrator_pb2.StatusResponse) -> Stats:
        return cls(pb.chunks, pb.files, pb.dim, pb.model_id, pb.index_uri, pb.versions, pb.vector_index,
                   pb.unindexed_rows, pb.resident_rows)

    def to_dict(self) -> dict:
        return {"chunks": self.chunks, "files": self.files, "dim": self.dim, "model_id": self.model_id,
                "index_uri": self.uri, "versions": self.versions,
                "vector_index": self.vector_index or "none (exact)", "unindexed_rows": self.unindexed_rows,
                "resident_rows": self.resident_rows}


@dataclass(frozen=True)
class EmbedInfo:
    """The embedding model an embedder serves."""

    model_id: str
    dim: int
    max_tokens: int
    backend: str = ""
    device: str = ""
    tokenizer_json: bytes = b""  # the model's Hugging Face fast tokenizer, serialized; b"" if none

    @classmethod
    def from_pb(cls, pb: embed_pb2.InfoResponse) -> EmbedInfo:
        return cls(pb.model_id, pb.dim, pb.max_tokens, pb.backend, pb.device, pb.tokenizer_json)

    def to_pb(self) -> embed_pb2.InfoResponse:
        return embed_pb2.InfoResponse(**asdict(self))


# ---------------------------------------------------------------- search

MAX_K = 1000
MAX_QUERY_CHARS = 4096


_QUESTION = re.compile(r"^\s*(?:how (?:does|do|is|are|can|should)|where (?:is|are|does|do)|what (?:happens|is|are|does)"
                       r"|which|when (?:does|is|do)|why (?:does|is))\s+", re.IGNORECASE)


def embedding_text(query: str) -> str:
    """What is embedded of a query: its text without a leading question ("how does the router pick a
    handler?" -> "the router pick a handler"), which the model matches against code a little better
    (measured on the tuning half of bench/quality)."""
    return _QUESTION.sub("", query).rstrip("?").strip() or query


def _check_filters(obj, kind: str, fields_: tuple[str, ...]) -> None:
    """InvalidArgument for an unknown kind, or a NUL byte in any of ``fields_`` (what a search and a symbol
    lookup both refuse)."""
    if kind and kind not in KINDS:
        raise InvalidArgument(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    for name in fields_:
        if "\0" in getattr(obj, name):
            raise InvalidArgument(f"{name} contains a NUL byte")


@dataclass(frozen=True)
class Query:
    """What a search asks for: ranking mode, how many, and filters. Filter
    values are matched literally (the store quotes them), never interpreted.
    A Query is checked once, when it is made (at a front door: the CLI, a
    servicer), so every core function can trust the one it is given."""

    text: str = ""
    k: int = 10
    mode: str = DEFAULT_MODE
    language: str = ""
    path_glob: str = ""
    kind: str = ""
    symbol: str = ""
    min_score: float | None = None  # minimum cosine similarity (vector and hybrid modes)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """InvalidArgument, saying what to send, unless this is a query the store can answer."""
        if not 1 <= self.k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.mode not in MODES:
            raise InvalidArgument(f"unknown search mode {self.mode!r}; one of {', '.join(MODES)}")
        if len(self.text) > MAX_QUERY_CHARS:
            raise InvalidArgument(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if self.mode in ("keyword", "hybrid") and not self.text.strip():
            raise InvalidArgument(f"{self.mode} search needs the query text")
        if self.min_score is not None:
            if self.mode == "keyword":
                raise InvalidArgument("min_score is a cosine similarity: keyword mode has none")
            if not -1.0 <= self.min_score <= 1.0:
                raise InvalidArgument(f"min_score is a cosine similarity in [-1, 1], got {self.min_score}")
        _check_filters(self, self.kind, ("text", "language", "path_glob", "kind", "symbol"))

    def _filters(self) -> dict:
        return {"k": self.k, "language": self.language, "path_glob": self.path_glob, "kind": self.kind,
                "symbol": self.symbol, "min_score": self.min_score, "mode": mode_to_pb(self.mode)}

    @classmethod
    def from_query_pb(cls, pb: orchestrator_pb2.QueryRequest) -> Query:
        """From the public API's QueryRequest (an unspecified mode is hybrid)."""
        return cls(text=pb.query, k=pb.k or 10, mode=mode_from_pb(pb.mode), language=pb.language,
                   path_glob=pb.path_glob, kind=pb.kind, symbol=pb.symbol,
                   min_score=pb.min_score if pb.HasField("min_score") else None)

    def to_query_pb(self) -> orchestrator_pb2.QueryRequest:
        return orchestrator_pb2.QueryRequest(query=self.text, **self._filters())

    @classmethod
    def from_search_pb(cls, pb: store_pb2.SearchRequest, dim: int) -> tuple[Query, np.ndarray | None]:
        """From the store's SearchRequest: the query and its vector (read as ``dim`` floats). An
        unspecified mode is whatever the request carries: both forms hybrid, else the one given."""
        if pb.mode == common_pb2.SEARCH_MODE_UNSPECIFIED:
            mode = "hybrid" if pb.query_vector and pb.query_text else ("keyword" if pb.query_text else "vector")
        else:
            mode = mode_from_pb(pb.mode)
        query = cls(text=pb.query_text, k=pb.k or 10, mode=mode, language=pb.language, path_glob=pb.path_glob,
                    kind=pb.kind, symbol=pb.symbol, min_score=pb.min_score if pb.HasField("min_score") else None)
        vector = vectors.unpack(pb.query_vector, dim, 1)[0] if pb.query_vector and dim else None
        return query, vector

    def to_search_pb(self, vector: np.ndarray | None) -> store_pb2.SearchRequest:
        return store_pb2.SearchRequest(query_vector=vectors.pack(vector) if vector is not None else b"",
                                       query_text=self.text, **self._filters())


@dataclass(frozen=True)
class SymbolQuery:
    """Every definition of a name: bare ("save") or qualified ("InvoiceRepository.save"; "::", "#" and "->"
    read as "."), matched exactly, with the search filters. Checked when it is made."""

    name: str
    language: str = ""
    kind: str = ""
    path_glob: str = ""
    limit: int = 100

    def __post_init__(self) -> None:
        name = re.sub(r"::|#|->", ".", self.name.strip())
        object.__setattr__(self, "name", name)
        if not name:
            raise InvalidArgument("a symbol lookup needs the name")
        if len(name) > 1000:
            raise InvalidArgument("the name is longer than 1000 characters")
        if not 1 <= self.limit <= MAX_K:
            raise InvalidArgument(f"limit must be between 1 and {MAX_K}, got {self.limit}")
        _check_filters(self, self.kind, ("name", "language", "kind", "path_glob"))

    @classmethod
    def from_pb(cls, pb: common_pb2.FindSymbolRequest) -> SymbolQuery:
        return cls(pb.name, pb.language, pb.kind, pb.path_glob, pb.limit or 100)

    def to_pb(self) -> common_pb2.FindSymbolRequest:
        return common_pb2.FindSymbolRequest(name=self.name, language=self.language, kind=self.kind,
                                            path_glob=self.path_glob, limit=self.limit)


@dataclass(frozen=True)
class SymbolHit:
    """One definition found by name, and where: the chunk's path and language, its signature."""

    path: str
    language: str
    definition: Definition
    signature: str = ""
    chunk_id: str = ""

    @classmethod
    def from_pb(cls, pb: common_pb2.SymbolDefinition) -> SymbolHit:
        return cls(pb.path, pb.language, Definition.from_pb(pb.definition), pb.signature, pb.chunk_id)

    def to_pb(self) -> common_pb2.SymbolDefinition:
        return common_pb2.SymbolDefinition(path=self.path, language=self.language,
                                           definition=self.definition.to_pb(), signature=self.signature,
                                           chunk_id=self.chunk_id)

    def to_dict(self) -> dict:
        d = self.definition
        return {"path": self.path, "start_line": d.start_line, "end_line": d.end_line, "kind": d.kind,
                "symbol": d.symbol, "qualified_name": d.qualified_name, "language": self.language,
                "signature": self.signature}


@dataclass
class Hit:
    """One search result: a chunk, its score (0 to 1, higher is better), a few lines of it (``snippet``,
    from file line ``snippet_line``) and, when known, its vector's cosine similarity to the query's."""

    chunk: Chunk
    score: float
    snippet: str = ""
    similarity: float | None = None
    snippet_line: int = 0

    @classmethod
    def from_pb(cls, pb: store_pb2.SearchHit) -> Hit:
        return cls(Chunk.from_pb(pb.chunk), pb.score, pb.snippet,
                   pb.similarity if pb.HasField("similarity") else None, pb.snippet_line)

    def to_pb(self) -> store_pb2.SearchHit:
        return store_pb2.SearchHit(chunk=self.chunk.to_pb(), score=self.score, snippet=self.snippet,
                                   similarity=self.similarity, snippet_line=self.snippet_line)

    @classmethod
    def from_query_hit_pb(cls, pb: orchestrator_pb2.QueryHit) -> Hit:
        chunk = Chunk(pb.id, pb.path, pb.language, kind_from_pb(pb.kind), pb.symbol, pb.qualified_name, "",
                      pb.start_line, pb.end_line, 0, 0, pb.text, "", "", pb.docstring, pb.signature)
        return cls(chunk, pb.score, pb.snippet, pb.similarity if pb.HasField("similarity") else None,
                   pb.snippet_line)

    def to_query_hit_pb(self) -> orchestrator_pb2.QueryHit:
        c = self.chunk
        return orchestrator_pb2.QueryHit(path=c.path, start_line=c.start_line, end_line=c.end_line, symbol=c.symbol,
                                         qualified_name=c.qualified_name, kind=kind_to_pb(c.kind),
                                         language=c.language, score=self.score, text=c.text, snippet=self.snippet,
                                         similarity=self.similarity, snippet_line=self.snippet_line,
                                         signature=c.signature, docstring=c.docstring, id=c.id)

    def to_dict(self) -> dict:
        """What `orchestrator search --json` prints of a hit: every field."""
        c = self.chunk
        return {"path": c.path, "start_line": c.start_line, "end_line": c.end_line, "symbol": c.symbol,
                "qualified_name": c.qualified_name, "kind": c.kind, "language": c.language,
                "score": round(self.score, 4),
                "similarity": None if self.similarity is None else round(self.similarity, 4),
                "snippet": self.snippet, "snippet_line": self.snippet_line, "signature": c.signature,
                "docstring": c.docstring, "text": c.text, "id": c.id, "parent_id": c.parent_id}


# ---------------------------------------------------------------- index runs


@dataclass
class IndexSummary:
    """What an index run did (`orchestrator index --json`, the public Index's last message)."""

    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: dict[str, int] = field(default_factory=dict)
    files_hashed: int = 0  # read and hashed; the others' stat was the one the stat cache recorded
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    index_chunks: int = 0
    index_files: int = 0
    model_id: str = ""

    def skip(self, reason: str) -> None:
        self.files_skipped[reason] = self.files_skipped.get(reason, 0) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d

    def to_pb(self) -> orchestrator_pb2.IndexSummary:
        return orchestrator_pb2.IndexSummary(
            files_seen=self.files_seen, files_indexed=self.files_indexed, files_unchanged=self.files_unchanged,
            files_removed=self.files_removed, files_skipped=self.files_skipped, chunks_total=self.chunks_total,
            chunks_embedded=self.chunks_embedded, chunks_reused=self.chunks_reused, seconds=self.seconds,
            files_hashed=self.files_hashed)

    @classmethod
    def from_pb(cls, pb: orchestrator_pb2.IndexSummary) -> IndexSummary:
        return cls(files_seen=pb.files_seen, files_indexed=pb.files_indexed, files_unchanged=pb.files_unchanged,
                   files_removed=pb.files_removed, files_skipped=dict(pb.files_skipped),
                   chunks_total=pb.chunks_total, chunks_embedded=pb.chunks_embedded,
                   chunks_reused=pb.chunks_reused, seconds=pb.seconds, files_hashed=pb.files_hashed)


@dataclass(frozen=True)
class ProgressUpdate:
    """How far an index run is: files done of the files it has to write, chunks written."""

    files_done: int = 0
    files_total: int = 0
    chunks_done: int = 0

    @classmethod
    def from_pb(cls, pb: orchestrator_pb2.IndexProgress) -> ProgressUpdate:
        return cls(pb.files_done, pb.files_total, pb.chunks_done)

    def to_pb(self, summary: IndexSummary | None = None) -> orchestrator_pb2.IndexProgress:
        """The public Index's message; with ``summary``, the run's last one."""
        pb = orchestrator_pb2.IndexProgress(files_done=self.files_done, files_total=self.files_total,
                                            chunks_done=self.chunks_done)
        if summary is not None:
            pb.done = True
            pb.summary.CopyFrom(summary.to_pb())
        return pb
