from protos import common_pb2 as _common_pb2
from protos import parser_pb2 as _parser_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("chunks_dropped",)
    CHUNKS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    chunks_dropped: int
    def __init__(self, chunks_dropped: _Optional[int] = ...) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("quiet",)
    QUIET_FIELD_NUMBER: _ClassVar[int]
    quiet: bool
    def __init__(self, quiet: _Optional[bool] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ("seconds", "vector_index", "versions")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    vector_index: str
    versions: int
    def __init__(self, seconds: _Optional[float] = ..., vector_index: _Optional[str] = ..., versions: _Optional[int] = ...) -> None: ...

class FileRecord(_message.Message):
    __slots__ = ("path", "file_hash", "chunks", "dim", "vectors", "skip_reason", "model_id", "parsed")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PARSED_FIELD_NUMBER: _ClassVar[int]
    path: str
    file_hash: str
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Chunk]
    dim: int
    vectors: bytes
    skip_reason: str
    model_id: str
    parsed: _parser_pb2.ParseResponse
    def __init__(self, path: _Optional[str] = ..., file_hash: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.Chunk, _Mapping]]] = ..., dim: _Optional[int] = ..., vectors: _Optional[bytes] = ..., skip_reason: _Optional[str] = ..., model_id: _Optional[str] = ..., parsed: _Optional[_Union[_parser_pb2.ParseResponse, _Mapping]] = ...) -> None: ...

class WriteAck(_message.Message):
    __slots__ = ("path", "rows")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    path: str
    rows: int
    def __init__(self, path: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class FileRecords(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[FileRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[FileRecord, _Mapping]]] = ...) -> None: ...

class WriteAcks(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[WriteAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[WriteAck, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paths: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("files_deleted",)
    FILES_DELETED_FIELD_NUMBER: _ClassVar[int]
    files_deleted: int
    def __init__(self, files_deleted: _Optional[int] = ...) -> None: ...

class ManifestRequest(_message.Message):
    __slots__ = ("after",)
    AFTER_FIELD_NUMBER: _ClassVar[int]
    after: str
    def __init__(self, after: _Optional[str] = ...) -> None: ...

class ManifestResponse(_message.Message):
    __slots__ = ("paths", "file_hashes")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    FILE_HASHES_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    file_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., file_hashes: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupVectorsRequest(_message.Message):
    __slots__ = ("content_hashes",)
    CONTENT_HASHES_FIELD_NUMBER: _ClassVar[int]
    content_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, content_hashes: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupVectorsResponse(_message.Message):
    __slots__ = ("content_hashes", "dim", "vectors")
    CONTENT_HASHES_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    content_hashes: _containers.RepeatedScalarFieldContainer[str]
    dim: int
    vectors: bytes
    def __init__(self, content_hashes: _Optional[_Iterable[str]] = ..., dim: _Optional[int] = ..., vectors: _Optional[bytes] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query_vector", "k", "language", "query_text", "mode", "path_glob", "kind", "symbol", "min_score")
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PATH_GLOB_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    query_vector: bytes
    k: int
    language: str
    query_text: str
    mode: _common_pb2.SearchMode
    path_glob: str
    kind: str
    symbol: str
    min_score: float
    def __init__(self, query_vector: _Optional[bytes] = ..., k: _Optional[int] = ..., language: _Optional[str] = ..., query_text: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.SearchMode, str]] = ..., path_glob: _Optional[str] = ..., kind: _Optional[str] = ..., symbol: _Optional[str] = ..., min_score: _Optional[float] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("chunk", "score", "snippet", "similarity", "snippet_line")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_LINE_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.Chunk
    score: float
    snippet: str
    similarity: float
    snippet_line: int
    def __init__(self, chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ..., score: _Optional[float] = ..., snippet: _Optional[str] = ..., similarity: _Optional[float] = ..., snippet_line: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("chunks", "files", "dim", "model_id", "uri", "versions", "vector_index", "unindexed_rows", "resident_rows")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    UNINDEXED_ROWS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ROWS_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    files: int
    dim: int
    model_id: str
    uri: str
    versions: int
    vector_index: str
    unindexed_rows: int
    resident_rows: int
    def __init__(self, chunks: _Optional[int] = ..., files: _Optional[int] = ..., dim: _Optional[int] = ..., model_id: _Optional[str] = ..., uri: _Optional[str] = ..., versions: _Optional[int] = ..., vector_index: _Optional[str] = ..., unindexed_rows: _Optional[int] = ..., resident_rows: _Optional[int] = ...) -> None: ...
