"""The store service: chunks and their vectors in LanceDB, and the searches over them.

Importing this package first defers the body of ``lance_namespace_urllib3_client``'s ``__init__``.
``import lancedb`` pulls in ``lance_namespace``, which imports the REST client's models; importing a
submodule of the client runs the client package's ``__init__``, which imports its nine API modules, whose
pydantic-validated methods take about 0.8 s to build, on every start of a store. They serve only the
REST namespace client, which the store never uses (it opens a directory or an object store). The
package is registered as it is (its path, so its submodules import as usual) and runs its ``__init__``
the first time anything asks it for a name that is not one of its submodules, so nothing that uses it sees
a difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading

DEFERRED = "lance_namespace_urllib3_client"


def _defer_init(name: str) -> None:
    """Register package ``name`` with its ``__init__`` not run: its submodules import as usual (and a name
    that is a submodule is that submodule, imported), any other name runs the ``__init__`` first, once."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    state = {"ran": False}

    def __getattr__(attr: str) -> object:  # noqa: N807 (PEP 562)
        if not attr.startswith("__") and importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")  # what `from name import submodule` asks
        with lock:
            if not state["ran"]:
                state["ran"] = True
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    state["ran"] = False  # as an import that failed: the next use tries again
                    raise
        try:
            return module.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module


_defer_init(DEFERRED)
