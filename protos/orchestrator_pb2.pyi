from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexRequest(_message.Message):
    __slots__ = ("path", "reindex")
    PATH_FIELD_NUMBER: _ClassVar[int]
    REINDEX_FIELD_NUMBER: _ClassVar[int]
    path: str
    reindex: bool
    def __init__(self, path: _Optional[str] = ..., reindex: _Optional[bool] = ...) -> None: ...

class IndexSummary(_message.Message):
    __slots__ = ("files_seen", "files_indexed", "files_unchanged", "files_removed", "files_skipped", "chunks_total", "chunks_embedded", "chunks_reused", "seconds", "files_hashed", "index_chunks", "index_files", "model_id")
    class FilesSkippedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FILES_SEEN_FIELD_NUMBER: _ClassVar[int]
    FILES_INDEXED_FIELD_NUMBER: _ClassVar[int]
    FILES_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    FILES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_REUSED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FILES_HASHED_FIELD_NUMBER: _ClassVar[int]
    INDEX_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FILES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    files_seen: int
    files_indexed: int
    files_unchanged: int
    files_removed: int
    files_skipped: _containers.ScalarMap[str, int]
    chunks_total: int
    chunks_embedded: int
    chunks_reused: int
    seconds: float
    files_hashed: int
    index_chunks: int
    index_files: int
    model_id: str
    def __init__(self, files_seen: _Optional[int] = ..., files_indexed: _Optional[int] = ..., files_unchanged: _Optional[int] = ..., files_removed: _Optional[int] = ..., files_skipped: _Optional[_Mapping[str, int]] = ..., chunks_total: _Optional[int] = ..., chunks_embedded: _Optional[int] = ..., chunks_reused: _Optional[int] = ..., seconds: _Optional[float] = ..., files_hashed: _Optional[int] = ..., index_chunks: _Optional[int] = ..., index_files: _Optional[int] = ..., model_id: _Optional[str] = ...) -> None: ...

class IndexProgress(_message.Message):
    __slots__ = ("files_done", "files_total", "chunks_done", "done", "summary")
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    files_done: int
    files_total: int
    chunks_done: int
    done: bool
    summary: IndexSummary
    def __init__(self, files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., chunks_done: _Optional[int] = ..., done: _Optional[bool] = ..., summary: _Optional[_Union[IndexSummary, _Mapping]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("query", "k", "language", "mode", "path_glob", "kind", "symbol", "min_score")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PATH_GLOB_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    query: str
    k: int
    language: str
    mode: _common_pb2.SearchMode
    path_glob: str
    kind: str
    symbol: str
    min_score: float
    def __init__(self, query: _Optional[str] = ..., k: _Optional[int] = ..., language: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.SearchMode, str]] = ..., path_glob: _Optional[str] = ..., kind: _Optional[str] = ..., symbol: _Optional[str] = ..., min_score: _Optional[float] = ...) -> None: ...

class QueryHit(_message.Message):
    __slots__ = ("path", "start_line", "end_line", "symbol", "qualified_name", "kind", "language", "score", "text", "snippet", "similarity", "snippet_line", "signature", "docstring", "id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    START_LINE_FIELD_NUMBER: _ClassVar[int]
    END_LINE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_LINE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DOCSTRING_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    start_line: int
    end_line: int
    symbol: str
    qualified_name: str
    kind: _common_pb2.ChunkKind
    language: str
    score: float
    text: str
    snippet: str
    similarity: float
    snippet_line: int
    signature: str
    docstring: str
    id: str
    def __init__(self, path: _Optional[str] = ..., start_line: _Optional[int] = ..., end_line: _Optional[int] = ..., symbol: _Optional[str] = ..., qualified_name: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ChunkKind, str]] = ..., language: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., snippet: _Optional[str] = ..., similarity: _Optional[float] = ..., snippet_line: _Optional[int] = ..., signature: _Optional[str] = ..., docstring: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[QueryHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[QueryHit, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("chunks", "files", "model_id", "dim", "index_uri", "services", "versions", "vector_index", "last_run_at", "unindexed_rows", "resident_rows")
    class ServicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    INDEX_URI_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_AT_FIELD_NUMBER: _ClassVar[int]
    UNINDEXED_ROWS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ROWS_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    files: int
    model_id: str
    dim: int
    index_uri: str
    services: _containers.ScalarMap[str, str]
    versions: int
    vector_index: str
    last_run_at: float
    unindexed_rows: int
    resident_rows: int
    def __init__(self, chunks: _Optional[int] = ..., files: _Optional[int] = ..., model_id: _Optional[str] = ..., dim: _Optional[int] = ..., index_uri: _Optional[str] = ..., services: _Optional[_Mapping[str, str]] = ..., versions: _Optional[int] = ..., vector_index: _Optional[str] = ..., last_run_at: _Optional[float] = ..., unindexed_rows: _Optional[int] = ..., resident_rows: _Optional[int] = ...) -> None: ...
