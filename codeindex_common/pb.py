"""The generated stubs, in one place (generated into ``protos/`` by
``make protos``)."""

from protos import common_pb2, embed_pb2, embed_pb2_grpc  # noqa: F401
from protos import orchestrator_pb2, orchestrator_pb2_grpc  # noqa: F401
from protos import parser_pb2, parser_pb2_grpc, store_pb2, store_pb2_grpc  # noqa: F401
