"""``python -m bench.gpu``: the whole pipeline on a GPU machine, in one go (issue 20, part 3).

Run by scripts/gpu-run.sh on a lent machine once the bundle (bench/gpu_bundle.py) is unpacked there, or by
``make bench-gpu-dry`` here, on the CPU. It measures, each step within what is left of ``--deadline-s``:

1. the embedder alone: a fresh embedding service (torch; fp16 on CUDA) fed ``copies`` variants of every
   distinct corpus text over 8 streams of 32-text requests, GPU utilisation and memory sampled by
   nvidia-smi every 200 ms during the timed part only; then plain ``SentenceTransformer.encode`` on the same
   texts, for the model's own pace;
2. Triton on the GPU, where the bundle carries a Triton server (this one does not: said so in the results);
3. ``orchestrator index`` end to end, the embedded default (torch on CUDA), on a monorepo made here from the
   corpus the bundle carries: ``copies`` copies under distinct paths, copy ``i`` with ``i`` spaces at the
   end of every line, so that every chunk is a text of its own to the orchestrator and the embedder while
   its tokens (and so the model's work) stay the corpus's own. Wall time, chunks/s, CPU seconds by stage,
   the orchestrator's µs per chunk, peak RSS, and the GPU as above.

Without CUDA (``--dry``, or no GPU found) the same steps run small, on the CPU, to show that the bundle
installs and every step gets as far as it can; the results then say "dry run" and which figures only a
GPU gives. Writes ``gpu.json`` and ``BENCHMARKS-GPU.md`` into ``--out``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_ONLY = ["the embedder's chunks/s with torch fp16 on the GPU, and GPU busy % while it runs",
            "Triton's GPU configuration against the torch backend",
            "orchestrator index end to end on >= 100,000 chunks with the model on the GPU"]


def log(msg: str) -> None:
    print(f"[bench.gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def Nvsmi():
    """bench.run's GpuSampler (nvidia-smi every 200 ms while the block runs), summarised over every sample
    (busy or not, for 'GPU busy %'); nothing where there is no nvidia-smi."""
    from bench.run import GpuSampler

    class AllSamples(GpuSampler):
        def __enter__(self):
            self.util, self.memory_mb = [], 0.0
            return super().__enter__() if shutil.which("nvidia-smi") else self

        def __exit__(self, *exc):
            if hasattr(self, "proc"):
                super().__exit__(*exc)

        def summary(self) -> dict | None:
            if not self.util:
                return None
            return {"util_mean_pct": round(sum(self.util) / len(self.util), 1), "util_max_pct": max(self.util),
                    "memory_max_mb": self.memory_mb, "samples": len(self.util)}

    return AllSamples()


def facts(cuda: bool) -> dict:
    import torch

    out = {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else "none"}
    for name in ("sentence_transformers", "lancedb", "grpc", "google.protobuf", "tokenizers", "onnxruntime"):
        try:
            module = __import__(name, fromlist=["__version__"])
            out[name] = getattr(module, "__version__", "?")
        except ImportError as e:
            out[name] = f"missing: {e}"
    return out


# --------------------------------------------------------------------------- the corpus and its copies


def variant(data: bytes, i: int) -> bytes:
    """Copy ``i`` of a file: ``i`` spaces at the end of every line (tokens unchanged, every chunk new)."""
    return data.replace(b"\n", b" " * i + b"\n") if i else data


def monorepo(corpus_root: Path, dest: Path, copies: int, files: int = 0) -> dict:
    sources = sorted(p for p in corpus_root.rglob("*") if p.is_file())[:files or None]
    shutil.rmtree(dest, ignore_errors=True)
    for i in range(copies):
        for p in sources:
            target = dest / f"team{i:02d}" / p.relative_to(corpus_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(variant(p.read_bytes(), i))
    return {"copies": copies, "files": copies * len(sources), "bytes": sum(p.stat().st_size for p in sources)}


def corpus_texts(corpus_root: Path, copies: int, limit: int = 0) -> list[str]:
    """The distinct texts the pipeline would embed from the corpus, in ``copies`` variants as above."""
    from bench.run import model_limits
    from orchestrator.walker import read, walk
    from parser_svc.chunker import chunk_file

    limits, seen = model_limits(), {}
    for e in walk(str(corpus_root)):
        if not e.skip_reason:
            for c in chunk_file(e.path, read(e), limits=limits).chunks:
                seen.setdefault(c.content_hash, c.embed_text)
    base = list(seen.values())[:limit or None]
    return [f"team{i:02d}/{t}".replace("\n", " " * i + "\n") for i in range(copies) for t in base]


# --------------------------------------------------------------------------- 1. the embedder alone


def embedder_alone(texts: list[str], env: dict[str, str], device: str) -> dict:
    from bench.run import WARM_TEXTS, _embed_all, services

    svc = services(["embed"], Path(os.environ["CODEINDEX_BENCH_WORK"]) / "embed", env)
    try:
        asyncio.run(_embed_all(svc.address("embed"), WARM_TEXTS * 8, 8))
        with Nvsmi() as gpu:
            seconds = asyncio.run(_embed_all(svc.address("embed"), texts, 8))
    finally:
        svc.stop()
    out = {"texts": len(texts), "seconds": round(seconds, 2), "chunks_per_s": round(len(texts) / seconds, 1),
           "backend": env.get("CODEINDEX_EMBED_BACKEND"), "device": device, "gpu": gpu.summary()}
    log(f"embedder alone: {out}")
    return out


def host_side(texts: list[str]) -> dict:
    """The embedder's host side alone on every core (issue 20 part 1): the batcher and the torch backend's
    tokenizing with a model that answers at once (bench/tokenize.py), with 1 and 2 tokenizer threads."""
    from bench.tokenize import through_batcher

    out = {"texts": len(texts), "cores": os.cpu_count()}
    for threads in (1, 2):
        out[f"threads_{threads}_texts_per_s"] = round(len(texts) / through_batcher(texts, threads))
    log(f"host side alone: {out}")
    return out


def plain_encode(texts: list[str], device: str) -> dict:
    from sentence_transformers import SentenceTransformer

    from embed_svc.backends import default_model_path

    model = SentenceTransformer(default_model_path(), device=device)
    if device.startswith("cuda"):
        model.half()
    batch = 256 if device.startswith("cuda") else 32
    model.encode(texts[:512], batch_size=batch)
    started = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    out = {"texts": len(texts), "batch_size": batch, "fp16": device.startswith("cuda"),
           "chunks_per_s": round(len(texts) / seconds, 1)}
    log(f"plain SentenceTransformer.encode: {out}")
    return out


# --------------------------------------------------------------------------- 3. the pipeline


def pipeline(repo: Path, index_dir: Path, env: dict[str, str], timeout: float) -> dict:
    from bench.scale import _index

    shutil.rmtree(index_dir, ignore_errors=True)
    with Nvsmi() as gpu:
        r = _index(repo, index_dir, env, timeout)
    result = {k: r[k] for k in ("wall_s", "seconds", "files_indexed", "chunks_total", "chunks_embedded",
                                "peak_rss_mb", "peak_rss_mb_by_stage", "cpu_s_by_stage",
                                "orchestrator_us_per_chunk")}
    result.update(chunks_per_s=round(r["chunks_embedded"] / max(r["seconds"], 1e-9), 1), gpu=gpu.summary())
    log(f"pipeline: {result}")
    return result


# --------------------------------------------------------------------------- the report


def render(r: dict) -> str:
    f = r["facts"]
    lines = ["# Benchmarks on a GPU", "",
             "Generated by `bench/gpu.py` (scripts/gpu-run.sh on a lent machine, the bundle of "
             "bench/gpu_bundle.py); do not edit by hand.", "",
             f"- Run: {r['when']}, code {r['commit']}, {r['seconds']:.0f} s in all"
             + (" (DRY RUN on a CPU)" if r["dry"] else ""),
             f"- Machine: {f['cores']} cores, GPU: {f['gpu']}, Python {f['python']}, torch {f['torch']}",
             f"- Corpus: {', '.join(r['corpus'])}; {r['copies']} copies (copy i: i spaces ending each line)", ""]
    host = r.get("host") or {}
    rows = [("embedder's host side alone (batcher, tokenizing, instant model), texts/s, 1 tokenizer thread",
             host.get("threads_1_texts_per_s")),
            ("the same, 2 tokenizer threads", host.get("threads_2_texts_per_s")),
            ("embedder alone (torch, 8 streams), chunks/s", r.get("embed", {}).get("chunks_per_s")),
            ("GPU busy while it ran, mean %", (r.get("embed", {}).get("gpu") or {}).get("util_mean_pct")),
            ("plain SentenceTransformer.encode, chunks/s", r.get("plain", {}).get("chunks_per_s")),
            ("orchestrator index, chunks embedded", r.get("pipeline", {}).get("chunks_embedded")),
            ("orchestrator index, chunks/s (run's own seconds)", r.get("pipeline", {}).get("chunks_per_s")),
            ("orchestrator index, wall s", r.get("pipeline", {}).get("wall_s")),
            ("GPU busy during the index, mean %", (r.get("pipeline", {}).get("gpu") or {}).get("util_mean_pct")),
            ("orchestrator's own CPU, µs a chunk", r.get("pipeline", {}).get("orchestrator_us_per_chunk"))]
    lines += ["| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {'-' if v is None else f'{v:,}'} |" for k, v in rows]
    if r.get("pipeline"):
        lines += ["", "CPU seconds by stage during the index: " + ", ".join(
            f"{k} {v}" for k, v in r["pipeline"]["cpu_s_by_stage"].items())
            + f"; peak RSS {r['pipeline']['peak_rss_mb']:,} MB over all processes."]
    if not r["dry"]:
        embed, pipe = r.get("embed") or {}, r.get("pipeline") or {}
        best_host = max([v for k, v in host.items() if k.endswith("_texts_per_s")], default=None)
        goals = [("host side feeds >= 30,000 chunks/s", best_host, 30_000),
                 ("embedder alone >= 20,000 chunks/s", embed.get("chunks_per_s"), 20_000),
                 ("GPU busy >= 50% while it embeds", (embed.get("gpu") or {}).get("util_mean_pct"), 50),
                 ("orchestrator index >= 10,000 chunks/s on >= 100,000 chunks",
                  pipe.get("chunks_per_s") if pipe.get("chunks_total", 0) >= 100_000 else None, 10_000)]
        lines += ["", "Issue 20's goals: " + "; ".join(
            f"{name}: {'not measured' if v is None else ('met' if v >= goal else 'not met')} ({v})"
            for name, v, goal in goals) + "."]
    lines += ["", f"Triton: {r['triton']}"]
    if r["errors"]:
        lines += ["", "Failed in this run:", *[f"- {k}: {v}" for k, v in r["errors"].items()]]
    if r["skipped"]:
        lines += ["", "Not measured in this run:", *[f"- {s}" for s in r["skipped"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="the unpacked bundle (site/, corpus/)")
    ap.add_argument("--manifest", type=Path, help="the bundle's manifest (the code it was made at)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry", action="store_true", help="the CPU dry run: small sizes, no GPU figures")
    ap.add_argument("--copies", type=int, default=10, help="corpus copies in the monorepo (10: ~108,000 chunks)")
    ap.add_argument("--deadline-s", type=float, default=480)
    args = ap.parse_args(argv)
    deadline, started = Deadline(args.deadline_s), time.perf_counter()
    os.environ["CODEINDEX_BENCH_WORK"] = str(args.work)
    os.environ["CODEINDEX_BENCH_CACHE"] = str(args.bundle / "corpus")
    sys.path.insert(0, str(ROOT))
    import torch

    cuda = torch.cuda.is_available() and not args.dry
    dry = not cuda
    copies, files, texts_limit = (args.copies, 0, 0) if cuda else (1, 40, 200)
    device = "cuda" if cuda else "cpu"
    from bench import corpus as corpus_mod
    from bench.common import code_commit

    made_at = json.loads(args.manifest.read_text())["content"]["commit"] if args.manifest else "?"
    # the code that runs is the tree carried with the call (no .git there): GPU_COMMIT names it
    commit = code_commit() if (ROOT / ".git").exists() else os.environ.get("GPU_COMMIT", "not given (GPU_COMMIT)")
    commit += f"; bundle made at {made_at}"
    r = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": commit, "dry": dry,
         "facts": facts(cuda), "copies": copies, "skipped": [] if cuda else list(GPU_ONLY),
         "corpus": [f"{n}=={v}" for n, v in corpus_mod.FULL], "errors": {},
         "triton": "not measured: this bundle carries no Triton server (nvidia-pytriton's is 55 MB, "
                   "a part of its own)"}
    log(f"facts: {r['facts']}")
    save = _saver(r, args.out, started)
    save()
    corpus_root = corpus_mod.fetch(corpus_mod.FULL, args.work / "corpus")
    texts: list[str] = []

    def make_texts() -> int:
        texts.extend(corpus_texts(corpus_root, copies, texts_limit))
        return len(texts)

    step(r, "texts", make_texts, save)
    step(r, "host", lambda: host_side(texts[:30_000]), save)
    env = {"CODEINDEX_EMBED_BACKEND": "torch", "CODEINDEX_EMBED_DEVICE": device}
    step(r, "embed", lambda: embedder_alone(texts, env, device), save)
    repo = args.work / "monorepo"
    step(r, "monorepo", lambda: monorepo(corpus_root, repo, copies, files), save)
    pipe_env = {"CODEINDEX_EMBED_DEVICE": device} if cuda else {}
    step(r, "pipeline", lambda: pipeline(repo, args.work / "index", pipe_env, max(deadline.left() - 60, 30)), save)
    if deadline.left() > 45:
        # sentence-transformers tokenizes in one thread: 20,000 texts are enough for its pace
        step(r, "plain", lambda: plain_encode(texts[:20_000], device), save)
    else:
        r["skipped"].append("plain encode: no time left")
        save()
    return 1 if r["errors"] else 0


def step(r: dict, name: str, run, save) -> None:
    """One measurement: its result under ``name``, or its error under ``errors`` (the next steps still
    run); the results so far written either way."""
    try:
        r[name] = run()
        log(f"{name}: {r[name] if isinstance(r[name], (int, float)) else 'done'}")
    except Exception as e:  # noqa: BLE001 - one failed step must not cost the others' figures
        log(f"{name} failed: {type(e).__name__}: {e}")
        r["errors"][name] = f"{type(e).__name__}: {e}"[-2000:]
    save()


def _saver(r: dict, out: Path, started: float):
    def save() -> None:
        r["seconds"] = round(time.perf_counter() - started, 1)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu.json", json.dumps(r, indent=1)), ("BENCHMARKS-GPU.md", render(r))):
            (out / f".{name}.tmp").write_text(text)
            os.replace(out / f".{name}.tmp", out / name)  # a run killed meanwhile leaves the last whole one
        log(f"wrote {out / 'gpu.json'} and {out / 'BENCHMARKS-GPU.md'} ({r['seconds']}s in)")
    return save


if __name__ == "__main__":
    sys.exit(main())
