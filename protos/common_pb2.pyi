from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
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
    CHUNK_KIND_IMPL: _ClassVar[ChunkKind]

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
CHUNK_KIND_IMPL: ChunkKind
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_VECTOR: SearchMode
SEARCH_MODE_KEYWORD: SearchMode
SEARCH_MODE_HYBRID: SearchMode

class Chunk(_message.Message):
    __slots__ = ("id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line", "end_line", "start_byte", "end_byte", "text", "embed_text", "content_hash", "docstring", "signature", "definitions", "kw_names", "kw_body", "kw_format")
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
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    KW_NAMES_FIELD_NUMBER: _ClassVar[int]
    KW_BODY_FIELD_NUMBER: _ClassVar[int]
    KW_FORMAT_FIELD_NUMBER: _ClassVar[int]
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
    definitions: _containers.RepeatedCompositeFieldContainer[Definition]
    kw_names: str
    kw_body: str
    kw_format: int
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., language: _Optional[str] = ..., kind: _Optional[_Union[ChunkKind, str]] = ..., symbol: _Optional[str] = ..., qualified_name: _Optional[str] = ..., parent_id: _Optional[str] = ..., start_line: _Optional[int] = ..., end_line: _Optional[int] = ..., start_byte: _Optional[int] = ..., end_byte: _Optional[int] = ..., text: _Optional[str] = ..., embed_text: _Optional[str] = ..., content_hash: _Optional[str] = ..., docstring: _Optional[str] = ..., signature: _Optional[str] = ..., definitions: _Optional[_Iterable[_Union[Definition, _Mapping]]] = ..., kw_names: _Optional[str] = ..., kw_body: _Optional[str] = ..., kw_format: _Optional[int] = ...) -> None: ...

class Definition(_message.Message):
    __slots__ = ("symbol", "qualified_name", "kind", "start_line", "end_line")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_LINE_FIELD_NUMBER: _ClassVar[int]
    END_LINE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    qualified_name: str
    kind: ChunkKind
    start_line: int
    end_line: int
    def __init__(self, symbol: _Optional[str] = ..., qualified_name: _Optional[str] = ..., kind: _Optional[_Union[ChunkKind, str]] = ..., start_line: _Optional[int] = ..., end_line: _Optional[int] = ...) -> None: ...

class FindSymbolRequest(_message.Message):
    __slots__ = ("name", "language", "kind", "path_glob", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_GLOB_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    language: str
    kind: str
    path_glob: str
    limit: int
    def __init__(self, name: _Optional[str] = ..., language: _Optional[str] = ..., kind: _Optional[str] = ..., path_glob: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SymbolDefinition(_message.Message):
    __slots__ = ("path", "language", "definition", "signature", "chunk_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    language: str
    definition: Definition
    signature: str
    chunk_id: str
    def __init__(self, path: _Optional[str] = ..., language: _Optional[str] = ..., definition: _Optional[_Union[Definition, _Mapping]] = ..., signature: _Optional[str] = ..., chunk_id: _Optional[str] = ...) -> None: ...

class FindSymbolResponse(_message.Message):
    __slots__ = ("definitions",)
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    definitions: _containers.RepeatedCompositeFieldContainer[SymbolDefinition]
    def __init__(self, definitions: _Optional[_Iterable[_Union[SymbolDefinition, _Mapping]]] = ...) -> None: ...
