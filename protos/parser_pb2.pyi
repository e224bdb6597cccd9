from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParseRequest(_message.Message):
    __slots__ = ("path", "content", "language", "options")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    language: str
    options: ChunkOptions
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ..., language: _Optional[str] = ..., options: _Optional[_Union[ChunkOptions, _Mapping]] = ...) -> None: ...

class ParseBatch(_message.Message):
    __slots__ = ("files", "options")
    FILES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[ParseRequest]
    options: ChunkOptions
    def __init__(self, files: _Optional[_Iterable[_Union[ParseRequest, _Mapping]]] = ..., options: _Optional[_Union[ChunkOptions, _Mapping]] = ...) -> None: ...

class ParsedBatch(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[ParseResponse]
    def __init__(self, files: _Optional[_Iterable[_Union[ParseResponse, _Mapping]]] = ...) -> None: ...

class ChunkOptions(_message.Message):
    __slots__ = ("max_tokens", "tokenizer_json")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_JSON_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    tokenizer_json: bytes
    def __init__(self, max_tokens: _Optional[int] = ..., tokenizer_json: _Optional[bytes] = ...) -> None: ...

class ParseResponse(_message.Message):
    __slots__ = ("path", "language", "chunks", "skip_reason", "detail")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    path: str
    language: str
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Chunk]
    skip_reason: str
    detail: str
    def __init__(self, path: _Optional[str] = ..., language: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.Chunk, _Mapping]]] = ..., skip_reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
