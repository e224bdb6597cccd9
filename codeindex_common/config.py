"""Frozen config dataclasses, read from CLI flags and environment variables.

Each service declares one frozen dataclass; the settings every server shares
come from :class:`ServerSettings`, which a service's class extends (giving
other defaults where it needs them). Every field has a docstring (the string
literal right under it, inherited when a subclass only changes the default).
Its environment variable is generated, ``CODEINDEX_<SERVICE>_<FIELD>``:
:func:`add_arguments` adds one ``--flag`` per field, whose help is the
docstring with the variable and the default; :func:`from_namespace` resolves
each value as flag > environment variable > default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from collections.abc import Iterable, Mapping, Sequence

from .errors import InvalidArgument
from .tls import Security

T = TypeVar("T")


@dataclass(frozen=True)
class ServerSettings:
    """What every service's server takes (each service's config extends it)."""

    listen: str = "127.0.0.1:0"
    """gRPC address: host:port (port 0 lets the OS pick) or unix:PATH."""
    metrics_port: int = 0
    """Prometheus HTTP port (0 lets the OS pick)."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds."""
    ready_file: str = ""
    """Write {address, metrics_port, pid} as JSON here once serving."""
    grace_seconds: float = 10.0
    """Shutdown grace period for in-flight calls."""
    max_concurrent_rpcs: int = 256
    """Calls served at once (streams included); more get RESOURCE_EXHAUSTED."""
    tls_cert: str = ""
    """The server's TLS certificate (PEM file); with --tls-key the server speaks TLS only (a stage started
    apart from the orchestrator then needs the orchestrator's --internal-tls-ca)."""
    tls_key: str = ""
    """The server's private key (PEM file, read from the file; never give key material on the command line)."""
    tls_client_ca: str = ""
    """Mutual TLS: clients must present a certificate signed by this CA (PEM file); others fail the handshake."""

    def security(self) -> Security:
        """The server's TLS files (a subclass may add a bearer token)."""
        return Security(self.tls_cert, self.tls_key, self.tls_client_ca)


def flag_of(field_name: str) -> str:
    """The command-line flag of a setting: ``--max-file-bytes`` for ``max_file_bytes``."""
    return "--" + field_name.replace("_", "-")


def env_var(prefix: str, field_name: str) -> str:
    return f"CODEINDEX_{prefix.upper()}_{field_name.upper()}"


@cache
def _own_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings written in ``cls`` itself, read from its source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    body = ast.parse(textwrap.dedent(source)).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its bases (the nearest class that documents a field wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_docs(klass))
    return docs


def field_help(cls: type, prefix: str) -> dict[str, str]:
    """Each field's help: its docstring, then its generated variable and its default."""
    docs = field_docs(cls)
    return {f.name: f"{docs.get(f.name, '')} [{env_var(prefix, f.name)}; default: {f.default!r}]"
            for f in dataclasses.fields(cls)}


def _convert(kind: Any, raw: str, name: str) -> Any:
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        raise InvalidArgument(f"{name}: cannot read {raw!r} as {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, prefix: str,
                  names: Iterable[str] | None = None) -> None:
    """Add one ``--flag`` per field of ``cls`` (only ``names``, when given; default None: unset)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls, prefix)
    wanted = None if names is None else set(names)
    for f in dataclasses.fields(cls):
        if wanted is not None and f.name not in wanted:
            continue
        flag = flag_of(f.name)
        help_ = helps[f.name].replace("%", "%%")  # argparse formats help
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_, metavar=f.name.upper())


def from_namespace(cls: type[T], prefix: str, ns: argparse.Namespace | Mapping[str, Any] | None,
                   environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls``: a set flag beats ``CODEINDEX_<PREFIX>_<FIELD>``, which beats the default."""
    environ = os.environ if environ is None else environ
    values = vars(ns) if isinstance(ns, argparse.Namespace) else dict(ns or {})
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        var = env_var(prefix, f.name)
        flag_value = values.get(f.name)
        if isinstance(flag_value, str):
            kwargs[f.name] = _convert(hints[f.name], flag_value, flag_of(f.name))
        elif flag_value is not None:
            kwargs[f.name] = flag_value
        elif var in environ:
            kwargs[f.name] = _convert(hints[f.name], environ[var], var)
    return cls(**kwargs)


def load(cls: type[T], prefix: str, argv: Sequence[str] | None = None, description: str = "",
         environ: Mapping[str, str] | None = None) -> T:
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser, cls, prefix)
    return from_namespace(cls, prefix, parser.parse_args(argv), environ)
