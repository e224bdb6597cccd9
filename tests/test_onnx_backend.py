"""The ONNX Runtime backend with the real model: exported by the CLI, its
vectors agree with the torch backend's, int8 (the default) gets its own model
id and gives a text the same vector whatever its batch, and the export cache
installs atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embed_svc.backends import onnx as onnx_backend
from embed_svc.backends import TorchBackend, default_model_path, make_backend
from embed_svc.backends.onnx import OnnxBackend, PooledRun

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "minilm"
    done = subprocess.run([sys.executable, "-m", "embed_svc.backends.onnx", "export", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model.onnx" in done.stdout and "model-int8.onnx" in done.stdout
    return out


@pytest.fixture(scope="module")
def fp32(export_dir) -> OnnxBackend:
    return OnnxBackend(threads=2, dtype="fp32", cache_dir=str(export_dir))


@pytest.fixture(scope="module")
def int8(export_dir) -> OnnxBackend:
    return OnnxBackend(threads=2, cache_dir=str(export_dir))  # the default: int8, as it agrees with torch


@pytest.fixture(scope="module")
def int8_one_run(export_dir) -> OnnxBackend:
    return OnnxBackend(threads=2, runs=1, cache_dir=str(export_dir))  # one run on both threads


@pytest.fixture(scope="module")
def torch_backend() -> TorchBackend:
    return TorchBackend(device="cpu", threads=2)


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    """About 50 real code chunks: this repository's own embedding and parsing code."""
    from parser_svc.chunker import Limits, chunk_file

    limits = Limits(max_tokens=256, tokenizer=str(Path(default_model_path()) / "tokenizer.json"))
    texts: list[str] = []
    for path in sorted([*ROOT.glob("embed_svc/*.py"), *ROOT.glob("parser_svc/*.py")]):
        result = chunk_file(str(path.relative_to(ROOT)), path.read_bytes(), limits=limits)
        texts += [c.embed_text for c in result.chunks]
    assert len(texts) >= 50
    return texts[::max(1, len(texts) // 50)][:50]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_the_export_holds_both_models_and_records_its_agreement_with_torch(export_dir):
    meta = json.loads((export_dir / "export.json").read_text())
    assert meta["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (meta["dim"], meta["max_tokens"]) == (384, 256)
    assert meta["fp32_min_cosine"] >= 0.9999
    assert meta["int8_matmuls"] == 36  # 6 layers x (query, key, value, attention output, feed-forward in and out)
    assert meta["int8_min_cosine"] >= 0.99 and meta["int8_mean_cosine"] >= 0.995  # measured 0.9909 and 0.9955
    for name in ("model.onnx", "model-int8.onnx", "tokenizer.json", "reference.npy"):
        assert (export_dir / name).stat().st_size > 0, name
    assert not [p for p in export_dir.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_fp32_vectors_agree_with_torch_and_keep_its_model_id(fp32, torch_backend, chunks):
    assert (fp32.name, fp32.device, fp32.dim, fp32.max_tokens) == ("onnx", "cpu", 384, 256)
    assert fp32.model_id == torch_backend.model_id
    got = fp32.encode(chunks)
    assert got.shape == (len(chunks), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = cosines(got, torch_backend.encode(chunks))
    assert cos.mean() >= 0.999 and cos.min() >= 0.999, (cos.mean(), cos.min())


def test_int8_vectors_are_close_to_torch_under_their_own_model_id(int8, fp32, torch_backend, chunks):
    assert (int8.dtype, int8.model_id) == ("int8", torch_backend.model_id + "+int8tok")
    assert int8.model_file.name == "model-int8.onnx" and fp32.model_file.name == "model.onnx"
    got = int8.encode(chunks)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = cosines(got, torch_backend.encode(chunks))
    assert cos.mean() >= 0.995 and cos.min() >= 0.99, (cos.mean(), cos.min())  # measured: 0.998 mean, 0.996 min


def test_an_int8_vector_is_the_same_whatever_its_batch(int8, chunks):
    """Each token's activations have their own scale: a text embedded alone, beside short texts or beside
    long ones gets the same vector (dynamic per-tensor int8 gave cosine 0.984 here)."""
    texts = sorted(chunks, key=len)
    alone = np.concatenate([int8.encode([t]) for t in texts[::7]])
    for batch in (texts[:16], texts[-16:], texts[::3]):
        together = int8.encode(batch)
        for i, t in enumerate(batch):
            if t in texts[::7]:
                assert float(together[i] @ alone[texts[::7].index(t)]) >= 0.99999


def test_the_model_threads_stop_spinning_when_a_run_returns(int8_one_run):
    """ONNX Runtime's threads spin on after a run by default (about 33 ms of CPU in the 0.2 s after one
    query here), which slowed the store's search that follows a query's embedding on 2 cores from 19 to 35
    ms; the session stops them when a run returns (a run on two threads: one thread a run has none to spin)."""
    import time

    idle = []
    for i in range(15):
        int8_one_run.encode([f"where is a failed upload retried {i}"])
        started = time.process_time()
        time.sleep(0.2)
        idle.append(time.process_time() - started)
    assert sorted(idle)[len(idle) // 2] < 0.005, idle


def test_runs_side_by_side_give_the_vectors_of_one_run(int8, int8_one_run, export_dir, chunks):
    """By default each thread runs a batch of its own (one session shared): batches launched together run at
    once and come back with the vectors one run on both threads gives; with more threads than runs, each run
    has a session of its own. The batcher keeps one batch more in flight than the runs."""
    from embed_svc.__main__ import in_flight
    from embed_svc.config import EmbedConfig

    assert (int8.runs, int8_one_run.runs) == (2, 1)
    assert (int8.preferred_batch_tokens, int8_one_run.preferred_batch_tokens) == (512, 1024)
    assert (in_flight(EmbedConfig(), int8), in_flight(EmbedConfig(), int8_one_run)) == (3, 2)
    batches = [chunks[i:i + 4] for i in range(0, 24, 4)]
    expected = [int8_one_run.encode(b) for b in batches]
    pairs = OnnxBackend(threads=4, runs=2, cache_dir=str(export_dir))  # two sessions of two threads
    uneven = OnnxBackend(threads=3, runs=2, cache_dir=str(export_dir))  # sessions of two threads and one
    try:
        assert sessions(int8) == [1, 1] and len({id(x) for x in _sessions(int8)}) == 1  # one session shared
        assert sessions(pairs) == [2, 2] and len({id(x) for x in _sessions(pairs)}) == 2
        assert sorted(sessions(uneven)) == [1, 2]
        for backend in (int8, pairs):
            handles = [backend.launch(backend.tokenize(b)) for b in batches]
            assert all(isinstance(h, PooledRun) for h in handles)
            for handle, want in zip(handles, expected):
                assert np.abs(backend.collect(handle) - want).max() < 1e-6
                assert 0 < handle.seconds < 5  # the model's own time, for the batcher's metrics
    finally:
        pairs.close()
        uneven.close()
    with pytest.raises(RuntimeError):  # closed: the runs' threads are gone
        pairs.launch(pairs.tokenize(["def f(): pass"]))


def _sessions(backend: OnnxBackend) -> list:
    out = [backend._sessions.get() for _ in range(backend.runs)]
    for x in out:
        backend._sessions.put(x)
    return out


def sessions(backend: OnnxBackend) -> list[int]:
    """Each run's session's intra-op threads."""
    return [x.get_session_options().intra_op_num_threads for x in _sessions(backend)]


def test_two_runs_run_at_once(int8, monkeypatch, chunks):
    """Two batches launched together run at the same time: each run waits at a barrier that only two runs
    side by side can pass (one after the other, the first would time out there)."""
    import threading

    from embed_svc.backends import onnx

    barrier = threading.Barrier(2, timeout=10)
    real = onnx._run

    def meeting(session, inputs, output):
        barrier.wait()
        return real(session, inputs, output)

    monkeypatch.setattr(onnx, "_run", meeting)
    handles = [int8.launch(int8.tokenize(chunks[i:i + 2])) for i in (0, 2)]
    assert [int8.collect(h).shape for h in handles] == [(2, 384), (2, 384)]


def test_runs_are_checked(export_dir, caplog):
    with pytest.raises(ValueError, match="runs must be"):
        OnnxBackend(threads=2, runs=-1, cache_dir=str(export_dir))
    with caplog.at_level("WARNING"):
        many = OnnxBackend(threads=2, runs=4, cache_dir=str(export_dir))  # more runs than threads: one each
    try:
        assert many.runs == 2 and "one thread each" in caplog.text
    finally:
        many.close()


def test_the_onnx_backend_runs_what_dtype_asks_and_refuses_what_it_cannot(export_dir, tmp_path, caplog):
    with pytest.raises(ValueError, match="fp16"):
        OnnxBackend(threads=1, dtype="fp16", cache_dir=str(export_dir))
    assert OnnxBackend(threads=1, quantize=True, cache_dir=str(export_dir)).dtype == "int8"  # the older spelling
    # a model whose int8 graph agrees badly with torch runs fp32 under dtype auto, with a warning
    poor = tmp_path / "poor"
    shutil.copytree(export_dir, poor)
    meta = json.loads((poor / "export.json").read_text())
    (poor / "export.json").write_text(json.dumps({**meta, "int8_min_cosine": 0.93}))
    with caplog.at_level(logging.WARNING, logger="codeindex.embed"):
        auto = OnnxBackend(threads=1, cache_dir=str(poor))
    assert (auto.dtype, auto.model_id) == ("fp32", "sentence-transformers/all-MiniLM-L6-v2")
    assert "0.93" in caplog.text and "running fp32" in caplog.text
    # one whose graph could not be rewritten: fp32 under auto, a clear error when int8 is asked for
    (poor / "export.json").write_text(json.dumps({**meta, "int8_error": "ValueError: odd graph",
                                                  "int8_min_cosine": None}))
    (poor / "model-int8.onnx").unlink()
    assert OnnxBackend(threads=1, cache_dir=str(poor)).dtype == "fp32"
    assert not (poor / "model-int8.onnx").exists()  # not tried again at every start
    with pytest.raises(ValueError, match="odd graph"):
        OnnxBackend(threads=1, dtype="int8", cache_dir=str(poor))


def test_token_counts_match_the_tokenizer_the_parser_gets(fp32, torch_backend, chunks):
    from tokenizers import Tokenizer

    assert fp32.tokenizer_json == torch_backend.tokenizer_json  # the parser sizes chunks the same either way
    tokenizer = Tokenizer.from_str(fp32.tokenizer_json.decode())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    texts = chunks[:16]
    lengths = [min(len(e.ids), fp32.max_tokens) for e in tokenizer.encode_batch(texts)]
    batch = fp32.tokenize(texts)
    assert (batch.tokens, batch.padded) == (sum(lengths), len(texts) * max(lengths))
    theirs = torch_backend.tokenize(texts)
    assert (batch.tokens, batch.padded) == (theirs.tokens, theirs.padded)


def test_long_empty_and_no_texts(fp32, torch_backend):
    long = "def f(x):\n    return g(x) + h(x) * 2\n" * 400  # thousands of tokens
    texts = [long, "", "x"]
    batch = fp32.tokenize(texts)
    assert batch.padded == 3 * 256 and batch.tokens == 256 + 2 + 3  # truncated; "" is [CLS] [SEP]
    got = fp32.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, torch_backend.encode(texts)).min() >= 0.999
    assert fp32.encode([]).shape == (0, 384)
    assert fp32.collect(fp32.launch(fp32.tokenize([]))).shape == (0, 384)


def test_make_backend_exports_into_an_empty_cache_on_first_use(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CODEINDEX_ONNX_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="codeindex.embed"):
        backend = make_backend("onnx", threads=2)
    assert isinstance(backend, OnnxBackend)
    assert backend.directory.parent == tmp_path / "cache"
    assert backend.directory == onnx_backend.default_cache_dir(default_model_path())
    assert "exporting" in caplog.text and "exported" in caplog.text
    assert backend.dtype == "int8" and (backend.directory / "model-int8.onnx").is_file()  # the CPU default
    assert backend.encode(["def f(): pass"]).shape == (1, 384)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="codeindex.embed"):
        again = OnnxBackend(threads=1)  # the second time: from the cache
    assert "export" not in caplog.text and again.directory == backend.directory


def test_copies_of_a_model_share_one_export_and_the_exports_of_models_gone_are_removed(tmp_path, monkeypatch,
                                                                                        caplog):
    """Each virtualenv holds its own copy of the packaged model, and the cache is keyed by the model's path:
    a second copy reuses the first one's export (hard links: no second export, no second 140 MB), an
    entry whose model directory is gone is removed, and a model changed in place is exported again."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CODEINDEX_ONNX_CACHE", str(cache))
    a, b, c = (shutil.copytree(default_model_path(), tmp_path / name) for name in "abc")

    def export_of(model: Path) -> tuple[Path, dict]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="codeindex.embed"):
            directory = onnx_backend.ensure_export(str(model))
        return directory, onnx_backend.read_meta(directory)

    first, meta_a = export_of(a)
    assert f"exported {a} to" in caplog.text and meta_a["source_digest"] and meta_a["source_signature"]
    second, meta_b = export_of(b)
    assert second != first and f"exported {b} to" not in caplog.text and "reused" in caplog.text
    assert meta_b["source"] == str(b) and meta_b["source_digest"] == meta_a["source_digest"]
    assert meta_a["model_id"] == str(a) and meta_b["model_id"] == str(b)  # a model given by path: its path
    for name in ("model.onnx", "model-int8.onnx", "tokenizer.json"):
        assert (second / name).stat().st_ino == (first / name).stat().st_ino  # one copy on disk
    assert OnnxBackend(str(b), threads=1).encode(["def f(): pass"]).shape == (1, 384)

    os.utime(b / "config.json")  # touched, or installed again: the same content, no export
    again, meta = export_of(b)
    assert again == second and "export" not in caplog.text
    assert meta["source_signature"] != meta_b["source_signature"]
    assert (second / "model.onnx").stat().st_ino == (first / "model.onnx").stat().st_ino

    shutil.rmtree(a)  # a virtualenv removed: its entry goes when the cache is next written to, once unused a day
    assert onnx_backend.prune_cache(cache) == [] and first.is_dir()  # used just now (its model may lie elsewhere)
    day_ago = time.time() - onnx_backend.PRUNE_AFTER_S - 60
    os.utime(first / "export.json", (day_ago, day_ago))
    third, _ = export_of(c)
    assert "reused" in caplog.text and not first.exists() and second.is_dir() and third.is_dir()
    assert onnx_backend.read_meta(third)["model_id"] == str(c)

    with open(b / "README.md", "a") as f:  # the model at b changed in place: its export is stale
        f.write("\nfine-tuned since\n")
    fresh, meta = export_of(b)
    assert fresh == second and "changed since its export" in caplog.text and f"exported {b} to" in caplog.text
    assert meta["source_digest"] != meta_b["source_digest"]
    assert (second / "model.onnx").stat().st_ino != (third / "model.onnx").stat().st_ino
    assert (third / "model.onnx").is_file() and onnx_backend.read_meta(third)["source"] == str(c)


def test_a_finished_export_is_renamed_into_place_and_a_racing_one_is_dropped(tmp_path):
    def finished(name: str, marker: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "model.onnx").write_text(marker)
        (d / "export.json").write_text(json.dumps({"source": "m"}))
        return d

    out = tmp_path / "out"
    onnx_backend._install(finished("first.tmp", "first"), out, replace=False)
    assert (out / "model.onnx").read_text() == "first"
    second = finished("second.tmp", "second")
    onnx_backend._install(second, out, replace=False)  # lost the race: the winner's export stays
    assert (out / "model.onnx").read_text() == "first"
    onnx_backend._install(second, out, replace=True)  # the CLI exports again: replaced, export.json last
    assert (out / "model.onnx").read_text() == "second"


def test_a_cache_dir_holding_another_models_export_is_refused(tmp_path):
    (tmp_path / "export.json").write_text(json.dumps({"source": "some/other-model"}))
    (tmp_path / "model.onnx").write_text("")
    with pytest.raises(ValueError, match="other-model"):
        OnnxBackend(cache_dir=str(tmp_path))


def test_the_torch_backend_tokenizes_as_preprocess_does_without_it(torch_backend, chunks):
    """The torch backend's fast tokenizing (encode_batch, then arrays) gives exactly model.preprocess's ids,
    masks and token types on real chunks in batches of mixed lengths (one past the window), so its vectors
    are the same, bit for bit."""
    import torch

    from embed_svc.backends.base import Tokenized
    from embed_svc.backends.torch import FastPreprocess

    assert isinstance(torch_backend._preprocess, FastPreprocess)
    texts = [*chunks, "", "y " * 700]
    for batch in (texts[:20], texts[20:], texts):
        want, got = torch_backend.model.preprocess(batch), torch_backend._preprocess(batch)
        assert want.keys() == got.keys()
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(want[key], got[key]), key
    batch = texts[-12:]
    fast = torch_backend.collect(torch_backend.launch(torch_backend.tokenize(batch)))
    slow = torch_backend.collect(torch_backend.launch(Tokenized(batch, torch_backend.model.preprocess(batch), 0, 0)))
    assert np.array_equal(fast, slow)


def test_a_batch_padded_from_the_encodings_that_counted_it_is_the_batch_tokenized_anew(fp32, torch_backend, chunks):
    """The batcher keeps the unpadded encodings it counts bulk texts' tokens with and has the backend pad
    them into the batch (each text encoded once): the model gets exactly the arrays that encoding the batch
    again gives, in both backends (long texts truncated, the empty one, mixed lengths), so vectors stay the same."""
    import torch

    texts = [*chunks[:20], "", "y " * 700, "x"]
    for batch in (texts[:7], texts):
        encodings = fp32.encode_unpadded(batch)
        assert [len(e.ids) for e in encodings] == fp32.count_tokens(batch)
        again, padded = fp32.tokenize(batch), fp32.tokenize(batch, encodings)
        assert again.inputs.keys() == padded.inputs.keys() and (again.tokens, again.padded) == (padded.tokens,
                                                                                                padded.padded)
        for key in again.inputs:
            assert np.array_equal(again.inputs[key], padded.inputs[key]), key
        encodings = torch_backend.encode_unpadded(batch)
        again, padded = torch_backend.tokenize(batch), torch_backend.tokenize(batch, encodings)
        assert again.inputs.keys() == padded.inputs.keys()
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(again.inputs[key], padded.inputs[key]), key
    batch = texts[-12:]
    padded = fp32.tokenize(batch, fp32.encode_unpadded(batch))
    assert np.array_equal(fp32.encode(batch), fp32.collect(fp32.launch(padded)))
    # what a queued text keeps until its batch: its ids at the window at most, not the tokenizer's Encoding with
    # the strings, offsets and overflowing pieces of a long text
    kept = fp32.encode_unpadded(["word " * 3000])[0]
    assert len(kept.ids) == fp32.max_tokens and kept.ids.nbytes + kept.type_ids.nbytes <= 8 * fp32.max_tokens


def test_padded_arrays_pads_on_the_side_the_tokenizer_pads_and_refuses_a_padding_it_cannot_mimic(fp32):
    from tokenizers import Tokenizer

    from embed_svc.backends.base import encoded, padded_arrays

    texts = ["def f(x): return x", "a", "class Router: pass  # pick a handler"]
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    for direction in ("left", "right"):
        tokenizer = Tokenizer.from_str(fp32.tokenizer_json.decode())
        tokenizer.enable_truncation(8)
        tokenizer.enable_padding(direction=direction, pad_id=7, pad_type_id=1, pad_token="[PAD]")
        want = tokenizer.encode_batch(texts)
        unpadded = Tokenizer.from_str(fp32.tokenizer_json.decode())
        unpadded.enable_truncation(8)
        unpadded.no_padding()
        got = padded_arrays(encoded(unpadded.encode_batch(texts)), fields, tokenizer.padding)
        for name, attr in fields.items():
            assert np.array_equal(got[name], np.array([getattr(e, attr) for e in want])), (direction, name)
        tokenizer.enable_padding(length=16)
        assert padded_arrays(encoded(unpadded.encode_batch(texts)), fields, tokenizer.padding) is None
