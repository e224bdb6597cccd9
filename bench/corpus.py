"""The benchmark corpus: source distributions of well-known projects at
pinned versions, fetched from PyPI's simple index (checked against the
sha256 the index publishes) and cached in bench/.cache between runs.
Never committed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

CACHE = Path(os.environ.get("CODEINDEX_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))
INDEX = os.environ.get("CODEINDEX_BENCH_INDEX", "https://pypi.org/simple")

# (name, version): Python (requests, click, httpx, rich) plus C (msgpack, tree-sitter),
# with their docs and tests: about 480 files and 7,000 chunks.
FULL = [("requests", "2.32.3"), ("click", "8.1.7"), ("httpx", "0.28.1"), ("rich", "13.9.4"),
        ("msgpack", "1.1.0"), ("tree-sitter", "0.23.2")]
# QUICK=1: about 130 files and 1,300 chunks
QUICK = [("requests", "2.32.3"), ("msgpack", "1.1.0")]


def _norm(name: str) -> str:
    return name.replace("-", "_").lower()


def _download(name: str, version: str) -> bytes:
    req = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        listing = json.load(resp)
    wanted = _norm(f"{name}-{version}.tar.gz")
    for f in listing["files"]:
        if _norm(f["filename"]) == wanted:
            with urllib.request.urlopen(f["url"], timeout=300) as resp:
                data = resp.read()
            digest = hashlib.sha256(data).hexdigest()
            if digest != f["hashes"]["sha256"]:
                raise RuntimeError(f"{f['filename']}: sha256 {digest} != {f['hashes']['sha256']}")
            return data
    raise RuntimeError(f"no source distribution {wanted} on {INDEX}")


def fetch(projects: list[tuple[str, str]], dest: Path) -> Path:
    """Extract every project into ``dest/<name>-<version>/`` (from the cache
    when possible) and return ``dest``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    for name, version in projects:
        archive = CACHE / f"{_norm(name)}-{version}.tar.gz"
        if not archive.exists():
            tmp = archive.with_suffix(".part")
            tmp.write_bytes(_download(name, version))
            tmp.rename(archive)
        target = dest / f"{_norm(name)}-{version}"
        if target.exists():
            continue
        with tarfile.open(archive) as tf:
            tf.extractall(dest / ".extract", filter="data")
        top = next((dest / ".extract").iterdir())
        shutil.move(str(top), target)
        shutil.rmtree(dest / ".extract")
    return dest


def corpus(quick: bool, dest: Path) -> tuple[Path, list[str]]:
    projects = QUICK if quick else FULL
    return fetch(projects, dest), [f"{n}=={v}" for n, v in projects]
