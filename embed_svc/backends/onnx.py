"""ONNX Runtime embedding backend, the CPU default: the same sentence-transformers
model, exported to ONNX once, run by ONNX Runtime on the CPU. No torch at run
time (only the export needs it). No grpc here.

The export (``python -m embed_svc.backends.onnx export``, or automatically on
first use) traces the model's Hugging Face transformer with its pooling and
any later modules (Dense, Normalize) into one graph whose output is the
sentence embedding, with dynamic batch and sequence axes, and writes beside it
``model-int8.onnx``: the same graph with its weight products in int8, one
activation scale per token (:mod:`.quantize`). Both are checked against the
torch model on a few reference texts, and the agreement is recorded in
``export.json``.

``dtype`` picks the graph: ``auto`` (the default) runs int8 where it agrees
with torch to a cosine of at least 0.99 on the reference texts with content
(MiniLM: 0.991), else fp32; ``int8`` and ``fp32`` ask for one. int8's vectors are
within 0.996 cosine of fp32's on real code chunks and do not depend on the
batch, but they are not fp32's, so its model id is the source's plus
``+int8tok``: an index never mixes the two (an index built in fp32 is refused
until ``--reindex``). On 2 CPU threads and real code chunks in length-sorted
batches, int8 ran 1.6x as fast as fp32 (docs/EMBEDDING.md has the figures).

An export directory holds ``model.onnx`` and ``model-int8.onnx``,
``tokenizer.json`` (the fast tokenizer, byte for byte what the torch backend
hands the parser), ``reference.npy`` (the torch vectors of the reference
texts) and ``export.json``, written last: a directory without it is not an
export. Exports are built in a temporary directory beside the target and
renamed into place, so processes racing to export the same model do no harm.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoded, Steps, Tokenized, TokenCounter, normalize, padded_arrays, resolve_model

log = logging.getLogger("codeindex.embed")

FORMAT = 2  # bump when the export's layout or graph changes: old caches are then ignored (2: per-token int8)
OPSET = 17
FP32_ID_MIN_COSINE = 0.9999  # the fp32 export keeps the source's model id when it agrees this well
BROKEN_MIN_COSINE = 0.99  # an export agreeing worse than this is an error, not a model
INT8_MIN_COSINE = 0.99  # dtype auto runs int8 only where it agrees with torch at least this well
INT8_SUFFIX = "+int8tok"  # int8's model id: the source's plus this (per-token activation scales)
ONNX_DTYPES = ("auto", "int8", "fp32")
INPUTS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}  # model: tokenizers
MODEL_FILE, INT8_FILE, META_FILE, TOKENIZER_FILE, REFERENCE_FILE = (
    "model.onnx", "model-int8.onnx", "export.json", "tokenizer.json", "reference.npy")

# Texts the export is checked with: code of several shapes, an empty text, and one past the model's window.
REFERENCE_TEXTS = [
    "",
    "x",
    "def add(a, b):\n    return a + b\n",
    "src/server.py\nclass Server:\n    def __init__(self, host: str, port: int = 8080):\n"
    "        self.host, self.port = host, port\n",
    "pkg/util.go\nfunc Max(a, b int) int {\n\tif a > b {\n\t\treturn a\n\t}\n\treturn b\n}\n",
    "README.md\n# Installation\n\nRun `pip install codeindex` and then `orchestrator index .` in your repository.",
    "lib/parse.rs\n" + "fn parse_line(line: &str) -> Option<(String, u32)> {\n"
    "    let (k, v) = line.split_once('=')?;\n    Some((k.trim().to_string(), v.trim().parse().ok()?))\n}\n" * 12,
    "SELECT u.id, count(*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id HAVING count(*) > 3;",
]


def cache_root() -> Path:
    """``$CODEINDEX_ONNX_CACHE``, else ``~/.cache/codeindex/onnx``."""
    return Path(os.environ.get("CODEINDEX_ONNX_CACHE") or Path.home() / ".cache" / "codeindex" / "onnx")


def default_cache_dir(source: str) -> Path:
    """The export directory of a model (its path or hub name, as ``resolve_model`` gives it)."""
    key = hashlib.sha256(f"{FORMAT}\0{source}".encode()).hexdigest()[:16]
    return cache_root() / key


def _model_files(source: str) -> list[tuple[str, Path]]:
    """The files of a model directory (hidden ones left out), by path relative to it, in order."""
    root = Path(source)
    files = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*")]
    return sorted((rel, p) for rel, p in files if p.is_file() and not any(s.startswith(".") for s in rel.split("/")))


def source_signature(source: str) -> str | None:
    """What a model directory looks like (each file's name, size and modification time): cheap enough for
    every start, to notice a model changed in place since its export. None for a hub name."""
    if not os.path.isdir(source):
        return None
    h = hashlib.sha256()
    for rel, p in _model_files(source):
        st = p.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def source_digest(source: str) -> str | None:
    """What a model directory holds (each file's name and content hash): the same for any copy of the
    model, wherever it lies (each virtualenv holds its own copy of the packaged model). None for a hub
    name. Read whole, so only when an export is made or its signature changed."""
    if not os.path.isdir(source):
        return None
    h = hashlib.sha256()
    for rel, p in _model_files(source):
        with open(p, "rb") as f:
            h.update(f"{rel}\0{hashlib.file_digest(f, 'sha256').hexdigest()}\n".encode())
    return h.hexdigest()


def _source_identity(source: str) -> dict[str, str]:
    signature, digest = source_signature(source), source_digest(source)
    return {"source_signature": signature, "source_digest": digest} if signature and digest else {}


def read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / META_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(normalize(a) * normalize(b), axis=1)


# ---------------------------------------------------------------- export (needs torch)


def export(model: str = "", out: str | os.PathLike[str] = "", quantize: bool = True, replace: bool = True) -> Path:
    """Export ``model`` (empty: the packaged all-MiniLM-L6-v2) into ``out`` (empty: its cache
    directory), with its int8 graph unless ``quantize`` is false, and return the directory. An export
    already there is replaced, or with ``replace`` false kept (this one is dropped: another process got
    there first)."""
    source, model_id = resolve_model(model)
    if os.path.isdir(source):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub
    out = Path(out) if out else default_cache_dir(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would follow the rename
        started = time.perf_counter()
        identity = _source_identity(source)  # before reading the model: a change meanwhile shows next time
        meta = _export_fp32(source, model_id, tmp)
        meta.update(identity)
        if quantize:
            meta.update(_quantize_or_note(tmp, meta))
        meta["export_seconds"] = round(time.perf_counter() - started, 2)
        _write_json(tmp / META_FILE, meta)
        _install(tmp, out, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _install(tmp: Path, out: Path, replace: bool) -> None:
    """Move a finished export from ``tmp`` to ``out``: one rename when ``out`` is missing or empty,
    else file by file with ``export.json`` last (a reader sees the old export or the new one)."""
    try:
        os.rename(tmp, out)
        return
    except OSError:
        if not out.is_dir():
            raise
    if not replace and read_meta(out) is not None and (out / MODEL_FILE).is_file():
        return
    new = {f.name for f in tmp.iterdir()}
    for f in sorted(tmp.iterdir(), key=lambda f: f.name == META_FILE):
        os.replace(f, out / f.name)
    if INT8_FILE not in new:
        (out / INT8_FILE).unlink(missing_ok=True)  # an int8 model of the old export, which the new one lacks


def _export_fp32(source: str, model_id: str, directory: Path) -> dict[str, Any]:
    """Trace ``source`` into ``directory`` (``model.onnx``, ``tokenizer.json``, ``reference.npy``) and check
    it against torch; the fields of ``export.json``."""
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    # eager attention traces to plain MatMul/Softmax, which ONNX Runtime fuses into its Attention kernel
    st = SentenceTransformer(source, device="cpu", model_kwargs={"attn_implementation": "eager"})
    st.eval()
    input_names = _exportable_inputs(st, source)
    hf_tokenizer = st.tokenizer
    tokenizer_json = hf_tokenizer.backend_tokenizer.to_str()
    (directory / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "model_id": model_id,
        "dim": int(st.get_embedding_dimension()),
        "max_tokens": int(st.max_seq_length or 512),
        "inputs": input_names,
        "output": "sentence_embedding",
        "pad_id": int(hf_tokenizer.pad_token_id or 0),
        "pad_token": str(hf_tokenizer.pad_token or ""),
        "padding_side": str(getattr(hf_tokenizer, "padding_side", "right")),
        "truncation_side": str(getattr(hf_tokenizer, "truncation_side", "right")),
        "opset": OPSET,
        "modules": [type(m).__name__ for m in st],
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    tokenizer = _tokenizer(tokenizer_json, meta)
    reference = _trace(st, input_names, tokenizer, directory / MODEL_FILE)
    np.save(directory / REFERENCE_FILE, reference)
    meta["reference_texts"] = REFERENCE_TEXTS
    cos = _agreement(directory / MODEL_FILE, tokenizer, meta, reference)
    meta.update(fp32_mean_cosine=round(float(cos.mean()), 7), fp32_min_cosine=round(float(cos.min()), 7))
    if cos.min() < BROKEN_MIN_COSINE:
        raise RuntimeError(f"{source}: the ONNX export does not reproduce the model (min cosine {cos.min():.4f})")
    return meta


def _exportable_inputs(st: Any, source: str) -> list[str]:
    """The transformer's input names, once the model is checked to be one this export can trace: a Hugging
    Face transformer with a fast tokenizer first, then only pooling, dense and normalisation modules."""
    first, rest = st[0], [st[i] for i in range(1, len(st))]
    auto_model = getattr(first, "auto_model", None)
    hf_tokenizer = getattr(st, "tokenizer", None)
    backend_tokenizer = getattr(hf_tokenizer, "backend_tokenizer", None)
    if auto_model is None or backend_tokenizer is None:
        raise ValueError(f"{source}: the onnx backend needs a Hugging Face transformer with a fast tokenizer "
                         f"as the first module, not {type(first).__name__}")
    for module in rest:
        if type(module).__name__ not in ("Pooling", "Dense", "Normalize", "LayerNorm", "Dropout"):
            raise ValueError(f"{source}: the onnx backend cannot export a {type(module).__name__} module")
    accepted = set(inspect.signature(auto_model.forward).parameters)
    input_names = [n for n in hf_tokenizer.model_input_names if n in accepted and n in INPUTS]
    if "input_ids" not in input_names or "attention_mask" not in input_names:
        raise ValueError(f"{source}: the model takes {input_names}, not input_ids and attention_mask")
    return input_names


def _trace(st: Any, input_names: list[str], tokenizer: Any, model_file: Path) -> np.ndarray:
    """Write the ONNX graph of ``st`` (token ids to sentence embeddings, dynamic batch and sequence axes)
    to ``model_file``; the torch vectors of the reference texts."""
    import torch

    auto_model, rest = st[0].auto_model, [st[i] for i in range(1, len(st))]

    class Graph(torch.nn.Module):
        """Token ids to sentence embeddings: the transformer, then the sentence-transformers modules."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = auto_model
            self.rest = torch.nn.ModuleList(rest)

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            named = dict(zip(input_names, inputs))
            hidden = self.transformer(**named, return_dict=True).last_hidden_state
            features: dict[str, Any] = {"token_embeddings": hidden, "attention_mask": named["attention_mask"]}
            for module in self.rest:
                features = module(features)
            return features["sentence_embedding"]

    sample = _encode_inputs(tokenizer, ["def f(x):\n    return x", "a longer text, so that the batch has padding"],
                            input_names)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks that hold for any input
        torch.onnx.export(
            Graph().eval(), tuple(torch.from_numpy(sample[n]) for n in input_names), str(model_file),
            dynamo=False, opset_version=OPSET, input_names=input_names, output_names=["sentence_embedding"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in input_names}, "sentence_embedding": {0: "batch"}},
            do_constant_folding=True)
        return st.encode(REFERENCE_TEXTS, batch_size=len(REFERENCE_TEXTS), convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False).astype(np.float32)


def _quantize_or_note(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """:func:`_quantize`, or where the graph cannot be rewritten, a note of why in ``export.json``: the
    backend then runs fp32 (dtype auto) or says why it cannot run int8, and does not try again."""
    try:
        return _quantize(directory, meta)
    except Exception as e:  # noqa: BLE001 - any model the rewrite cannot handle still runs in fp32
        log.warning("onnx: no int8 graph for %s: %s", meta.get("source"), e)
        return {"int8_error": f"{type(e).__name__}: {e}"}


def _quantize(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``model-int8.onnx`` beside ``model.onnx`` (atomically); the int8 fields of ``export.json``."""
    from .quantize import SCHEME, quantize_per_token

    tmp = directory / f".{INT8_FILE}.{os.getpid()}.tmp"
    try:
        rewritten = quantize_per_token(directory / MODEL_FILE, tmp)
        reference = np.load(directory / REFERENCE_FILE)
        cos = _agreement(tmp, _tokenizer((directory / TOKENIZER_FILE).read_text(encoding="utf-8"), meta),
                         meta, reference)
        os.replace(tmp, directory / INT8_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    # The empty text (two special tokens, 0.986 for MiniLM) is no chunk and no query: every chunk's text
    # starts with its path, and an empty query is refused. The texts with content decide.
    content = np.array([bool(t) for t in meta["reference_texts"]])
    return {"int8_scheme": SCHEME, "int8_matmuls": rewritten, "int8_mean_cosine": round(float(cos.mean()), 7),
            "int8_min_cosine": round(float(cos[content].min()), 7),
            "int8_empty_text_cosine": round(float(cos[~content].min()), 7) if (~content).any() else None}


def _agreement(model_file: Path, tokenizer: Any, meta: dict[str, Any], reference: np.ndarray) -> np.ndarray:
    """Cosines of the ONNX vectors of the reference texts (one batch, then one by one) against torch's."""
    session = _session(model_file, 0)
    texts = meta["reference_texts"]
    batch = _run(session, _encode_inputs(tokenizer, texts, meta["inputs"]), meta["output"])
    single = np.concatenate([_run(session, _encode_inputs(tokenizer, [t], meta["inputs"]), meta["output"])
                             for t in texts])
    return np.minimum(_cosines(batch, reference), _cosines(single, reference))


# ---------------------------------------------------------------- run time (onnxruntime, tokenizers, numpy)


def _tokenizer(tokenizer_json: str, meta: dict[str, Any]) -> Any:
    """The model's fast tokenizer, truncating to its window and padding to the batch's longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(meta["max_tokens"], direction=meta["truncation_side"])
    tokenizer.enable_padding(direction=meta["padding_side"], pad_id=meta["pad_id"], pad_token=meta["pad_token"])
    return tokenizer


def _encode_inputs(tokenizer: Any, texts: list[str], input_names: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {n: np.array([getattr(e, INPUTS[n]) for e in encodings], dtype=np.int64) for n in input_names}


def _session(model_file: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads > 0 else _cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # the intra-op threads spin while a run is on (as by default) but stop when it returns, instead of spinning
    # on for a while: that kept both cores of a 2-core machine busy after a search's query was embedded, and the
    # store's search right after took 35 ms instead of 19 (docs/EMBEDDING.md, "Threads")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def _run(session: Any, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    return session.run([output], inputs)[0]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ensure_export(model: str = "", cache_dir: str | os.PathLike[str] = "", quantize: bool = True) -> Path:
    """The export directory of ``model``, exporting (or quantizing) first if what is asked for is missing."""
    source, model_id = resolve_model(model)
    directory = Path(cache_dir) if cache_dir else default_cache_dir(source)
    meta = read_meta(directory)
    if meta is not None and meta.get("source") != source:
        raise ValueError(f"{directory} holds an ONNX export of {meta.get('source')}, not of {source}")
    stale = False
    if meta is not None and (directory / MODEL_FILE).is_file():
        meta = _check_source(source, directory, meta)
        stale = meta is None
    if meta is None or not (directory / MODEL_FILE).is_file():
        if not cache_dir and _reuse_export(source, model_id, directory, replace=stale):
            meta = read_meta(directory)
        else:
            if not stale:
                log.info("onnx: no export of %s in %s yet; exporting it (once)", source, directory)
            started = time.perf_counter()
            export(model, directory, quantize, replace=stale)
            log.info("onnx: exported %s to %s in %.1f s", source, directory, time.perf_counter() - started)
            meta = read_meta(directory)
        if not cache_dir:
            prune_cache(directory.parent)
    elif not cache_dir:
        _mark_used(directory)
    if meta is not None and quantize and not (directory / INT8_FILE).is_file() and "int8_error" not in meta:
        log.info("onnx: quantizing the export of %s in %s to int8 (once)", source, directory)
        meta.update(_quantize_or_note(directory, meta))
        _write_json(directory / META_FILE, meta)
    return directory


def _check_source(source: str, directory: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """``meta``, or None when the model directory's content changed since this export (it is stale). A
    changed signature with the same content (the model installed again, or touched) is recorded."""
    signature = source_signature(source)
    if signature is None or meta.get("source_signature") == signature:
        return meta
    digest = source_digest(source)
    if meta.get("source_digest") not in (None, digest):
        log.warning("onnx: %s changed since its export in %s; exporting it again", source, directory)
        return None
    meta.update(source_signature=signature, source_digest=digest)  # an export from before these were kept
    _write_json(directory / META_FILE, meta)
    return meta


def _entry_meta(entry: Path) -> dict[str, Any] | None:
    """Another cache entry's ``export.json``, or None if it has none or it cannot be read (unreadable, cut
    short, being replaced): a scan of the cache skips such an entry rather than fail."""
    try:
        return read_meta(entry)
    except (OSError, ValueError):
        return None


def _reuse_export(source: str, model_id: str, directory: Path, replace: bool = False) -> bool:
    """Fill ``directory`` with another cache entry's export of the same model content (another copy of
    the model: another virtualenv's packaged model), its files hard-linked: no second export, no second
    copy on disk. An entry that changes or goes while it is linked (another process pruning or replacing
    it) is not used. False when the cache holds none to use."""
    digest = source_digest(source)
    if digest is None or not directory.parent.is_dir():
        return False
    for other in sorted(directory.parent.iterdir()):
        if other == directory or other.name.startswith("."):
            continue
        meta = _entry_meta(other)
        if meta is None or meta.get("format") != FORMAT or meta.get("source_digest") != digest:
            continue
        needed = {MODEL_FILE, TOKENIZER_FILE, REFERENCE_FILE} | ({INT8_FILE} if "int8_scheme" in meta else set())
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        try:
            tmp.chmod(0o755)
            for f in other.iterdir():
                if f.name != META_FILE and not f.name.startswith("."):
                    try:
                        os.link(f, tmp / f.name)
                    except FileNotFoundError:
                        break
                    except OSError:  # no hard links here: a copy
                        shutil.copy2(f, tmp / f.name)
            if not needed <= {f.name for f in tmp.iterdir()} or _entry_meta(other) != meta:
                continue  # a file went meanwhile, or the entry was replaced: not a whole export
            meta.update(source=source, model_id=model_id, source_signature=source_signature(source),
                        reused_from=other.name)
            _write_json(tmp / META_FILE, meta)
            _install(tmp, directory, replace)
        except FileNotFoundError:  # the other entry went meanwhile
            continue
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("onnx: %s is the same model as the one exported in %s: that export is reused", source, other)
        return True
    return False


PRUNE_AFTER_S = 24 * 3600  # an entry whose model is gone is removed once it was not used for this long


def _mark_used(directory: Path) -> None:
    """Note that the export was used now (its export.json's modification time), for :func:`prune_cache`;
    nothing if the cache cannot be written to (a read-only volume)."""
    with contextlib.suppress(OSError):
        os.utime(directory / META_FILE)


def prune_cache(root: Path, unused_s: float = PRUNE_AFTER_S) -> list[Path]:
    """Remove the cache entries (of any format) whose model directory is gone and which no process used
    for ``unused_s``: an export per copy of the packaged model, 140 MB each, would otherwise pile up as
    virtualenvs come and go. The wait spares an entry in use where its model lies elsewhere (a cache on a
    volume that several hosts or containers share). Entries of hub names and unfinished ones are kept.
    What was removed."""
    removed = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        meta = _entry_meta(entry) if not entry.name.startswith(".") else None
        source = str((meta or {}).get("source") or "")
        if not source or not os.path.isabs(source) or os.path.exists(source):
            continue
        try:
            if time.time() - (entry / META_FILE).stat().st_mtime < unused_s:
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("onnx: removed %s from the cache: its model %s is gone", entry, source)
        removed.append(entry)
    return removed


@dataclass(eq=False)
class PooledRun:
    """A batch handed to a run's thread: its vectors when done, and the seconds the model took on it (not its
    wait for a free run), which the batcher's metrics take instead of the time from launch to collect."""

    future: Future | None = None
    seconds: float | None = None

    def add_done_callback(self, fn) -> None:
        """``fn()`` once the run has ended (at once if it has): the batcher then collects it."""
        assert self.future is not None
        self.future.add_done_callback(lambda _future: fn())


class OnnxBackend(Steps):
    """The sentence-transformers model exported to ONNX, on ONNX Runtime's CPU provider (ONNX Runtime
    releases the GIL while it runs, so the batcher tokenizes the next batch meanwhile).

    ``runs`` batches run at once, each on ``threads / runs`` threads (0: one run per thread). With one
    thread a run, the runs share one session, each on a thread of its own (``launch`` hands the batch to
    that pool and ``collect`` waits for it); with more, each run has a session of its own. On 2 cores two
    runs of one thread embedded 1.15-1.2x the texts of one run on both (docs/EMBEDDING.md): a run's
    many small steps (adds, softmax, row scales) are passes over memory that two threads split at a cost,
    where two runs side by side each keep a core busy. With one run, ``launch`` runs the model itself."""

    name = "onnx"
    device = "cpu"
    preferred_batch = 16  # 2 CPU threads, length-sorted code chunks: 16 ran 5-8% faster than 32 (fp32 and int8)
    # a batch's activations (attention grows with texts x length^2) stay in ONNX Runtime's arena at their
    # peak: 1,024 tokens (4 texts of 256) held the process at about 305 MB where 4,096 held it at 490,
    # at the same texts/s within the host's noise (docs/EMBEDDING.md)
    preferred_batch_tokens = 1024
    runs_batch_tokens = 512  # several runs at once: 2 runs of 1 thread, 800 corpus texts: 110.8 texts/s at 512,
    # 105.8 at 1,024 (and 239 against 356 MB peak), 112-116 at 256-384 in more, smaller batches

    def __init__(self, model: str = "", threads: int = 0, dtype: str = "auto", cache_dir: str = "",
                 quantize: bool = False, runs: int = 0):
        """``dtype``: auto (int8 where it agrees with torch, else fp32), int8 or fp32; ``quantize`` is the
        older spelling of int8. ``threads``: CPU threads in all (0: one per core); ``runs``: batches run at
        once (0: one per thread)."""
        if quantize and dtype == "auto":
            dtype = "int8"
        if dtype not in ONNX_DTYPES:
            raise ValueError(f"the onnx backend runs {', '.join(ONNX_DTYPES)}, not {dtype!r}")
        self.directory = ensure_export(model, cache_dir, quantize=dtype != "fp32")
        meta = read_meta(self.directory)
        assert meta is not None
        self.meta = meta
        if dtype == "auto":
            agreement = meta.get("int8_min_cosine") or 0.0
            dtype = "int8" if agreement >= INT8_MIN_COSINE else "fp32"
            if dtype == "fp32":
                log.warning("onnx: int8 agrees with %s only to cosine %s on the reference texts (%s); running fp32",
                            meta["model_id"], agreement, meta.get("int8_error", f"below {INT8_MIN_COSINE}"))
        elif dtype == "int8" and "int8_error" in meta:
            raise ValueError(f"no int8 graph for {meta['source']}: {meta['int8_error']} (run it in fp32)")
        self.dtype = dtype
        self.quantized = dtype == "int8"
        self.model_file = self.directory / (INT8_FILE if self.quantized else MODEL_FILE)
        self.dim = int(meta["dim"])
        self.max_tokens = int(meta["max_tokens"])
        self.model_id = meta["model_id"]
        if self.quantized:
            self.model_id += INT8_SUFFIX
        elif meta.get("fp32_min_cosine", 0.0) < FP32_ID_MIN_COSINE:
            log.warning("onnx: the export of %s agrees with torch only to cosine %s; model id %s+onnx",
                        self.model_id, meta.get("fp32_min_cosine"), self.model_id)
            self.model_id += "+onnx"
        tokenizer_json = (self.directory / TOKENIZER_FILE).read_text(encoding="utf-8")
        self.tokenizer_json = tokenizer_json.encode("utf-8")
        self._tokenizer = _tokenizer(tokenizer_json, meta)
        self._counter = TokenCounter(tokenizer_json, self.max_tokens, meta["truncation_side"])
        self._inputs: list[str] = meta["inputs"]
        self._output: str = meta["output"]
        self.threads = threads if threads > 0 else _cores()
        if runs < 0:
            raise ValueError(f"runs must be 0 (one per thread) or more, not {runs}")
        if runs > self.threads:
            log.warning("onnx: %d runs at once on %d threads: %d runs, one thread each", runs, self.threads,
                        self.threads)
        self.runs = min(runs, self.threads) if runs > 0 else self.threads
        # each run's threads: the threads shared out, the first runs taking one more where they do not divide
        shares = [self.threads // self.runs + (i < self.threads % self.runs) for i in range(self.runs)]
        self.session = _session(self.model_file, shares[0])
        self._pool: ThreadPoolExecutor | None = None
        if self.runs > 1:
            self.preferred_batch_tokens = self.runs_batch_tokens
            self._sessions: queue.SimpleQueue = queue.SimpleQueue()  # a session free for the next run
            for i, share in enumerate(shares):  # one thread a run: one session, its weights shared by the runs
                self._sessions.put(self.session if i == 0 or max(shares) == 1 else _session(self.model_file, share))
            self._pool = ThreadPoolExecutor(self.runs, thread_name_prefix="onnx-run")

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self._counter(texts)

    def encode_unpadded(self, texts: list[str]) -> list[Encoded]:
        return self._counter.encode(texts)

    def tokenize(self, texts: list[str], encodings: list[Encoded] | None = None) -> Tokenized:
        if not texts:
            return Tokenized(texts, None, 0, 0)
        inputs = None
        if encodings is not None:  # encoded when the batcher counted their tokens: padded, not encoded again
            inputs = padded_arrays(encodings, {n: INPUTS[n] for n in self._inputs}, self._tokenizer.padding)
        if inputs is None:
            inputs = _encode_inputs(self._tokenizer, texts, self._inputs)
        mask = inputs["attention_mask"]
        return Tokenized(texts, inputs, int(mask.sum()), int(mask.size))

    def launch(self, batch: Tokenized) -> Any:
        if batch.inputs is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._pool is None:
            return _run(self.session, batch.inputs, self._output)
        run = PooledRun()
        run.future = self._pool.submit(self._run_pooled, batch.inputs, run)
        return run

    def _run_pooled(self, inputs: dict[str, np.ndarray], run: PooledRun) -> np.ndarray:
        session = self._sessions.get()
        started = time.perf_counter()
        try:
            return _run(session, inputs, self._output)
        finally:
            run.seconds = time.perf_counter() - started
            self._sessions.put(session)

    def collect(self, handle: Any) -> np.ndarray:
        if isinstance(handle, PooledRun):
            handle = handle.future.result()
        return normalize(handle)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


# ---------------------------------------------------------------- CLI


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embed_svc.backends.onnx",
                                     description="export a sentence-transformers model to ONNX for the onnx backend")
    commands = parser.add_subparsers(dest="command", required=True)
    exp = commands.add_parser("export", help="export (again) into the cache or --out, checked against torch")
    exp.add_argument("--model", default="", help="model path or name (default: the packaged all-MiniLM-L6-v2)")
    exp.add_argument("--fp32-only", action="store_true", help="skip model-int8.onnx (the int8 graph)")
    exp.add_argument("--out", default="", help="directory to write (default: the backend's cache directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # quiet: onnxruntime.quantization, ...
    log.setLevel(logging.INFO)
    directory = export(args.model, args.out, quantize=not args.fp32_only)
    meta = read_meta(directory) or {}
    files = [f for f in (MODEL_FILE, INT8_FILE) if (directory / f).is_file()]
    print(f"exported {meta['source']} to {directory} in {meta['export_seconds']} s: "
          + ", ".join(f"{f} {_size(directory / f)}" for f in files))
    summary = {k: v for k, v in meta.items() if k not in ("reference_texts", "source")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
