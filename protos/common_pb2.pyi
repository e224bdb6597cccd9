from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChunkKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHUNK_KIND_UNSPECIFIED: _ClassVar[ChunkKind]
    CHUNK_KIND_FUNCTION: _ClassVar[ChunkKind]
    CHUNK_KIND_METHOD: _ClassVar[ChunkKind]
    CHUNK_KIND_CLASS: _ClassVar[ChunkKind]
    CHUNK_KIND_MODULE: _ClassVar[ChunkKind]
    CHUNK_KIND_BLOCK: _ClassVar[ChunkKind]
    CHUNK_KIND_SECTION: _ClassVar[ChunkKind]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_VECTOR: _ClassVar[SearchMode]
    SEARCH_MODE_KEYWORD: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
CHUNK_KIND_UNSPECIFIED: ChunkKind
CHUNK_KIND_FUNCTION: ChunkKind
CHUNK_KIND_METHOD: ChunkKind
CHUNK_KIND_CLASS: ChunkKind
CHUNK_KIND_MODULE: ChunkKind
CHUNK_KIND_BLOCK: ChunkKind
CHUNK_KIND_SECTION: ChunkKind
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_VECTOR: SearchMode
SEARCH_MODE_KEYWORD: SearchMode
SEARCH_MODE_HYBRID: SearchMode

class Chunk(_message.Message):
    __slots__ = ("id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line", "end_line", "start_byte", "end_byte", "text", "embed_text", "content_hash", "docstring", "signature")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_LINE_FIELD_NUMBER: _ClassVar[int]
    END_LINE_FIELD_NUMBER: _ClassVar[int]
    START_BYTE_FIELD_NUMBER: _ClassVar[int]
    END_BYTE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBED_TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    DOCSTRING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    language: str
    kind: ChunkKind
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
    docstring: str
    signature: str
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., language: _Optional[str] = ..., kind: _Optional[_Union[ChunkKind, str]] = ..., symbol: _Optional[str] = ..., qualified_name: _Optional[str] = ..., parent_id: _Optional[str] = ..., start_line: _Optional[int] = ..., end_line: _Optional[int] = ..., start_byte: _Optional[int] = ..., end_byte: _Optional[int] = ..., text: _Optional[str] = ..., embed_text: _Optional[str] = ..., content_hash: _Optional[str] = ..., docstring: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...
