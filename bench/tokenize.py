"""The embedder's host side: texts tokenized per second, on 1 and 2 cores, and what that projects to on 16.

Two ways to tokenize a batch of the corpus's texts for the default model, each timed in its own process pinned
to the cores it is given (``taskset``; the tokenizers library's Rust thread pool sized to match):

- ``preprocess``: what the torch backend does today, sentence-transformers' ``model.preprocess`` (the Hugging
  Face fast tokenizer called through transformers, padded and truncated, then torch tensors);
- ``fast``: what the ONNX backend does, the model's ``tokenizer.json`` through the tokenizers library's
  ``encode_batch`` (Rust, in parallel over the pool's threads, the GIL released), then the ids and masks
  turned into int64 arrays (Python, under the GIL). Timed as those two parts as well.

Both must give the same ids and masks for every text (checked here: ``same_ids``), so that either keeps the
vectors as they are. The projection to 16 cores scales the Rust part by the speed-up measured from one core to
two (no better than linear) and keeps the Python part as it is on one core, run after it (``serial``) or, with
one batch's conversion beside the next one's encoding, beside it (``overlapped``: the larger of the two).

Then the embedder's own batcher (:func:`through_batcher`): every text through ``Batcher.embed`` in GPU batches,
the torch backend's tokenizing, the model answering at once, with 1 and 2 tokenizer threads: what the service's
host side feeds a GPU, its bookkeeping included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 256  # a GPU batch of the torch backend (preferred_batch on CUDA)
MIN_SECONDS = 3.0  # each configuration tokenizes the texts over and over for at least this long
ROOT = Path(__file__).resolve().parent.parent


def _batches(texts: list[str]) -> list[list[str]]:
    return [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]


def _timed(fn, batches) -> float:
    """Seconds per pass over every batch (passes repeated for at least MIN_SECONDS; one warm-up pass)."""
    for b in batches:
        fn(b)
    passes, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < MIN_SECONDS or passes == 0:
        for b in batches:
            fn(b)
        passes += 1
    return elapsed / passes


def measure(texts: list[str]) -> dict:
    """In this process (pinned by the caller): seconds per pass for each way and part."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from embed_svc.backends import default_model_path

    model = SentenceTransformer(default_model_path(), device="cpu")
    fast = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    fast.enable_truncation(int(model.max_seq_length))
    fast.enable_padding(pad_id=model.tokenizer.pad_token_id, pad_token=model.tokenizer.pad_token)
    batches = _batches(texts)

    def arrays(encodings):
        return (np.array([e.ids for e in encodings], dtype=np.int64),
                np.array([e.attention_mask for e in encodings], dtype=np.int64))

    encoded = [fast.encode_batch(b) for b in batches]
    same = all(np.array_equal(model.preprocess(b)["input_ids"].numpy(), arrays(e)[0])
               and np.array_equal(model.preprocess(b)["attention_mask"].numpy(), arrays(e)[1])
               for b, e in zip(batches, encoded))
    tokens = sum(int(arrays(e)[1].sum()) for e in encoded)
    convert = {id(b): e for b, e in zip(batches, encoded)}
    return {"texts": len(texts), "tokens": tokens, "same_ids": same,
            "preprocess_s": _timed(model.preprocess, batches),
            "fast_s": _timed(lambda b: arrays(fast.encode_batch(b)), batches),
            "fast_encode_s": _timed(fast.encode_batch, batches),
            "fast_convert_s": _timed(lambda b: arrays(convert[id(b)]), batches)}


class _HostOnly:
    """The torch backend as a GPU runs it (its tokenizing: the fast tokenizer then tensors), with a model that
    answers at once: what the embedder's batcher feeds when the model is never the limit."""

    def __init__(self, backend):
        self.dim, self.max_tokens, self.device = backend.dim, backend.max_tokens, "cpu"
        self.name, self.model_id = backend.name, backend.model_id
        self.tokenize, self.count_tokens = backend.tokenize, backend.count_tokens
        self.encode_unpadded = backend.encode_unpadded

    def launch(self, batch):
        return len(batch.texts)

    def collect(self, handle):
        import numpy as np

        return np.zeros((handle, self.dim), np.float32)


def through_batcher(texts: list[str], threads: int) -> float:
    """Seconds for the embedder's batcher (GPU batches: 256 texts, 65,536 tokens; no cache) to answer every
    text, tokenized by ``threads`` tokenizer threads, the model instant."""
    import asyncio

    from embed_svc.backends import make_backend
    from embed_svc.batcher import Batcher

    backend = _HostOnly(make_backend("torch", device="cpu"))
    batcher = Batcher(backend, BATCH, BATCH * backend.max_tokens, 5.0, len(texts) + 1, 2, 0, threads)
    batcher.start()

    async def embed_all() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(batcher.embed(texts[i:i + 64]) for i in range(0, len(texts), 64)))
        return time.perf_counter() - started

    try:
        asyncio.run(embed_all())  # warm-up
        return min(asyncio.run(embed_all()) for _ in range(2))
    finally:
        batcher.stop()


def _run(texts_file: Path, cores: int, *args: str) -> dict:
    env = {**os.environ, "RAYON_NUM_THREADS": str(cores), "TOKENIZERS_PARALLELISM": "true",
           "OMP_NUM_THREADS": str(cores), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cpus = ",".join(str(c) for c in range(cores))
    out = subprocess.run(["taskset", "-c", cpus, sys.executable, "-m", "bench.tokenize", *args, str(texts_file)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"tokenizing on {cores} cores failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_tokenize(texts: list[str], log, cores: tuple[int, ...] = (1, 2)) -> dict:
    """Texts per second for each way on each core count, and the projection to 16 cores."""
    cores = tuple(c for c in cores if c <= (os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        runs = {c: _run(texts_file, c) for c in cores}
        # the embedder's batcher with an instant model: what it feeds a GPU, by cores and tokenizer threads
        batcher = {f"{c}x{threads}": {"cores": c, "threads": threads,
                                      "seconds": _run(texts_file, c, "--batcher", str(threads))["seconds"]}
                   for c in cores for threads in (1, 2) if threads <= c}
    n = len(texts)
    out: dict = {"texts": n, "batch": BATCH, "tokens": runs[cores[0]]["tokens"],
                 "same_ids": all(r["same_ids"] for r in runs.values()), "by_cores": {}}
    for c, r in runs.items():
        out["by_cores"][str(c)] = {k.removesuffix("_s") + "_texts_per_s": round(n / r[k])
                                   for k in ("preprocess_s", "fast_s", "fast_encode_s", "fast_convert_s")}
        log(f"tokenize on {c} core(s): preprocess {n / r['preprocess_s']:.0f} texts/s, fast {n / r['fast_s']:.0f} "
            f"(encode {n / r['fast_encode_s']:.0f}, convert {n / r['fast_convert_s']:.0f})")
    out["batcher"] = {key: {"cores": b["cores"], "threads": b["threads"], "texts_per_s": round(n / b["seconds"])}
                      for key, b in batcher.items()}
    log(f"through the batcher (instant model): {out['batcher']}")
    if 1 in runs and 2 in runs:
        one, two = runs[1], runs[2]
        speedup = min(2.0, one["fast_encode_s"] / two["fast_encode_s"])
        encode16 = one["fast_encode_s"] / (16 * speedup / 2)
        out["encode_speedup_1_to_2"] = round(one["fast_encode_s"] / two["fast_encode_s"], 2)
        out["projected_16_cores"] = {
            "serial_texts_per_s": round(n / (encode16 + one["fast_convert_s"])),
            "overlapped_texts_per_s": round(n / max(encode16, one["fast_convert_s"]))}
        log(f"tokenize projected to 16 cores: {out['projected_16_cores']}")
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--batcher":  # --batcher THREADS FILE
        texts = json.loads(Path(sys.argv[3]).read_text())
        print(json.dumps({"seconds": through_batcher(texts, int(sys.argv[2]))}))
    else:
        print(json.dumps(measure(json.loads(Path(sys.argv[1]).read_text()))))
