"""Frozen config dataclasses, read from CLI flags and environment variables.

Each service declares one frozen dataclass. Every field has a docstring (the
string literal right under it) that names its environment variable,
``CODEINDEX_<SERVICE>_<FIELD>``; :func:`load` builds an argparse parser from
the fields (the docstring is the flag's help) and resolves each value as
flag > environment variable > default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import typing
from typing import Any, TypeVar
from collections.abc import Mapping, Sequence

from .errors import InvalidArgument

T = TypeVar("T")


def env_var(prefix: str, field_name: str) -> str:
    return f"CODEINDEX_{prefix.upper()}_{field_name.upper()}"


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
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


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str) -> None:
    """Add one ``--flag`` per field of ``cls`` (default None: unset)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{docs.get(f.name, '')} (default: {f.default!r})".replace("%", "%%")  # argparse formats help
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
            kwargs[f.name] = _convert(hints[f.name], flag_value, "--" + f.name.replace("_", "-"))
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
