"""``python -m bench.cpu_paths``: the candidates for a cheaper vector on a CPU, measured side by side
(docs/EMBEDDING.md, "Making each vector cheaper on a CPU").

Each candidate embeds the same corpus chunks (``--texts``: a file of ``python -m bench.run --save-texts``;
2,000 of them drawn with a fixed seed), in batches of 16 in token-length order as the batcher makes them, on
``--threads`` threads, tokenizing included, each one twice in turn (the better pass counts: this machine is
shared). Against the fp32 export in the same run it reports texts/s, the speed ratio, the minimum and mean
cosine, and the minimum cosine between a text embedded alone and the same text in a batch (16 texts of the
longest, 16 of mixed lengths). Accepted (issue 19): the same vector in any batch (>= 0.99999), min cosine
>= 0.99 to fp32; search quality within 0.01 NDCG@10 is the quality stage's to measure
(``CODEINDEX_EMBED_DTYPE=fp32 make bench STAGE=quality`` beside the default).

Candidates: ONNX Runtime fp32 (the reference), int8 with per-token activation scales (the default), ONNX
Runtime's own dynamic int8 (one scale per tensor), torch fp32, and torch bf16 where the CPU has AMX-BF16.
Writes ``bench/results/cpu_paths.json``."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import code_commit
from bench.run import machine

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "cpu_paths.json"


def log(msg: str) -> None:
    print(f"[cpu_paths {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _dynamic_int8(directory: Path) -> Path:
    """ONNX Runtime's own dynamic quantization of the fp32 export (per-channel int8 weights, one activation
    scale per tensor), as ``--onnx-quantize`` made it before per-token scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = directory.parent / f".{directory.name}-dynamic-int8.onnx"
    if not out.exists():
        quantize_dynamic(directory / "model.onnx", out, op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)
    return out


def candidates(threads: int) -> dict:
    """name -> a backend (tokenize, launch, collect), built lazily."""
    from embed_svc.backends import OnnxBackend, TorchBackend
    from embed_svc.backends.onnx import _session

    # one run on every thread, a batch at a time: the graphs compared as the batcher ran them before the
    # onnx backend's runs side by side (docs/EMBEDDING.md, "Threads"), and a session swapped in is the one run
    def dynamic() -> OnnxBackend:
        b = OnnxBackend(threads=threads, dtype="fp32", runs=1)
        b.session = _session(_dynamic_int8(b.directory), threads)
        b.model_id += " dynamic int8 (not shipped)"
        return b

    made = {
        "onnx fp32": lambda: OnnxBackend(threads=threads, dtype="fp32", runs=1),
        "onnx int8, per-token scales (default)": lambda: OnnxBackend(threads=threads, dtype="int8", runs=1),
        "onnx int8, dynamic per-tensor scales": dynamic,
        "torch fp32": lambda: TorchBackend(device="cpu", threads=threads, dtype="fp32"),
    }
    if _amx_bf16():
        made["torch bf16 (AMX)"] = lambda: TorchBackend(device="cpu", threads=threads, dtype="bf16")
    return made


def _amx_bf16() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def embed_all(backend, texts: list[str], order: list[int], batch: int = 16) -> tuple[np.ndarray, float]:
    out = np.zeros((len(texts), backend.dim), np.float32)
    started = time.perf_counter()
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        out[idx] = backend.collect(backend.launch(backend.tokenize([texts[i] for i in idx])))
    return out, time.perf_counter() - started


def batch_invariance(backend, texts: list[str], order: list[int]) -> float:
    """Min cosine between a text alone and the same text in a batch: 16 of the longest, 16 of mixed lengths."""
    worst = 1.0
    for idx in (order[-16:], order[::max(1, len(order) // 16)][:16]):
        together = backend.encode([texts[i] for i in idx])
        for j, i in enumerate(idx[:8]):
            worst = min(worst, float(backend.encode([texts[i]])[0] @ together[j]))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", required=True, help="a file of `python -m bench.run --save-texts`")
    ap.add_argument("-n", type=int, default=2000, help="chunks drawn from it (default 2,000)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpus = json.loads(Path(args.texts).read_text())["texts"]
    texts = random.Random(0).sample(corpus, min(args.n, len(corpus)))
    made = candidates(args.threads)
    backends = {name: make() for name, make in made.items()}
    reference = backends["onnx fp32"]
    lengths = reference.count_tokens(texts)
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    rates: dict[str, list[float]] = {name: [] for name in backends}
    vectors = {}
    for rep in range(2):
        for name, backend in backends.items():
            vecs, seconds = embed_all(backend, texts, order)
            rates[name].append(len(texts) / seconds)
            vectors[name] = vecs
            log(f"pass {rep + 1}: {name}: {len(texts) / seconds:.1f} texts/s")
    ref = vectors["onnx fp32"]
    results = {}
    for name, backend in backends.items():
        cos = (vectors[name] * ref).sum(axis=1)
        results[name] = {"model_id": backend.model_id, "texts_per_s": round(max(rates[name]), 1),
                         "passes_texts_per_s": [round(r, 1) for r in rates[name]],
                         "speed_vs_onnx_fp32": round(max(rates[name]) / max(rates["onnx fp32"]), 2),
                         "min_cosine_to_fp32": round(float(cos.min()), 5),
                         "mean_cosine_to_fp32": round(float(cos.mean()), 6),
                         "alone_vs_batch_min_cosine": round(batch_invariance(backend, texts, order), 7)}
        log(f"{name}: {results[name]}")
    real = sum(lengths)
    out = {"texts": len(texts), "threads": args.threads, "batch": 16, "tokens": real,
           "machine": machine(), "commit": code_commit(), "candidates": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
