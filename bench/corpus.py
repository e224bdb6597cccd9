"""The benchmark corpus: source distributions of well-known projects at
pinned versions, fetched from PyPI's simple index (checked against the
sha256 the index publishes), npm's registry (checked against the tarball's
published integrity) or Debian's archive (checked against a pinned sha256),
and cached in bench/.cache between runs. Never committed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("CODEINDEX_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))
INDEX = os.environ.get("CODEINDEX_BENCH_INDEX", "https://pypi.org/simple")
NPM = os.environ.get("CODEINDEX_BENCH_NPM", "https://registry.npmjs.org")
DEBIAN = os.environ.get("CODEINDEX_BENCH_DEBIAN", "http://deb.debian.org/debian")

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
    """Extract every PyPI project into ``dest/<name>-<version>/`` (from the cache when possible) and return
    ``dest``."""
    return fetch_sources([Source(f"{_norm(name)}-{version}", "pypi", name, version) for name, version in projects],
                         dest)


def corpus(quick: bool, dest: Path) -> tuple[Path, list[str]]:
    projects = QUICK if quick else FULL
    return fetch(projects, dest), [f"{n}=={v}" for n, v in projects]


# ---------------------------------------------------------------- other registries


@dataclass(frozen=True)
class Source:
    """One project at a pinned version: from PyPI (an sdist), npm (a tarball) or Debian (a binary package
    that carries the project's source, as Debian's Go, Rust and Ruby library packages do: ``pool`` is its
    path in the archive, ``sha256`` its pinned digest). ``root``: the project's directory inside the archive
    (empty: its top directory). The project lands in ``dest/<name>``."""

    name: str
    registry: str  # pypi | npm | debian
    package: str
    version: str
    root: str = ""
    pool: str = ""
    sha256: str = ""
    remove: tuple[str, ...] = ()  # files removed after extraction (paths inside the project)


def _npm(package: str, version: str) -> bytes:
    with urllib.request.urlopen(f"{NPM}/{package.replace('/', '%2F')}/{version}", timeout=60) as resp:
        dist = json.load(resp)["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=300) as resp:
        data = resp.read()
    algo, _, digest = dist["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algo, data).digest()).decode() != digest:
        raise RuntimeError(f"{package}@{version}: the tarball does not match its integrity {dist['integrity']}")
    return data


def _debian(src: Source) -> bytes:
    with urllib.request.urlopen(f"{DEBIAN}/{src.pool}", timeout=300) as resp:
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != src.sha256:
        raise RuntimeError(f"{src.pool}: sha256 {hashlib.sha256(data).hexdigest()} != {src.sha256}")
    return data


def _deb_data(deb: bytes) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ar archive), opened."""
    if not deb.startswith(b"!<arch>\n"):
        raise RuntimeError("not a Debian package")
    pos = 8
    while pos < len(deb):
        name, size = deb[pos:pos + 16].decode().strip().rstrip("/"), int(deb[pos + 48:pos + 58].decode().strip())
        body = deb[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        pos += 60 + size + (size % 2)
    raise RuntimeError("no data.tar in the Debian package")


def _archive(src: Source) -> Path:
    suffix = {"pypi": ".tar.gz", "npm": ".tgz", "debian": ".deb"}[src.registry]
    archive = CACHE / f"{src.registry}-{_norm(src.package).replace('/', '_')}-{src.version}{suffix}"
    if not archive.exists():
        data = {"pypi": lambda: _download(src.package, src.version), "npm": lambda: _npm(src.package, src.version),
                "debian": lambda: _debian(src)}[src.registry]()
        tmp = archive.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.rename(archive)
    return archive


def fetch_sources(sources: list[Source], dest: Path) -> Path:
    """Extract every project into ``dest/<name>/`` (from the cache when possible) and return ``dest``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources:
        target = dest / src.name
        if target.exists():
            continue
        archive = _archive(src)
        scratch = dest / ".extract"
        shutil.rmtree(scratch, ignore_errors=True)
        tf = _deb_data(archive.read_bytes()) if src.registry == "debian" else tarfile.open(archive)
        with tf:
            tf.extractall(scratch, filter="data")
        top = scratch / src.root if src.root else next(scratch.iterdir())
        for rel in src.remove:
            (top / rel).unlink()
        shutil.move(str(top), target)
        shutil.rmtree(scratch)
    return dest
