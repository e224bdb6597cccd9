"""Domain exceptions. Business code raises these; the interceptor in
:mod:`codeindex_common.server` maps them to gRPC status codes, so no core
class imports grpc and no servicer calls ``context.abort`` itself."""

from __future__ import annotations


class CodeindexError(Exception):
    """Base class; maps to INTERNAL."""

    status = "INTERNAL"


class InvalidArgument(CodeindexError):
    status = "INVALID_ARGUMENT"


class NotFound(CodeindexError):
    status = "NOT_FOUND"


class FailedPrecondition(CodeindexError):
    status = "FAILED_PRECONDITION"


class ResourceExhausted(CodeindexError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(CodeindexError):
    status = "UNAVAILABLE"


class PermissionDenied(CodeindexError):
    status = "PERMISSION_DENIED"
