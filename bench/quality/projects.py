"""The projects of the search-quality set, at pinned versions: eight languages,
from PyPI sdists, npm tarballs and Debian's source-carrying library packages.
None of them is one of the ten packages the result is checked on from outside
(requests, flask, rich, aiohttp, fastapi, pydantic, model2vec, express,
@trpc/server, zod). Each is indexed as it ships, tests, docs, examples and
built bundles included, as a user's checkout would have them."""

from __future__ import annotations

import os
from pathlib import Path

from bench.corpus import Source

ROOT = Path(__file__).resolve().parents[2]
# where the sources are extracted and indexed (not committed): beside the speed benchmark's work folder
WORK = Path(os.environ.get("CODEINDEX_BENCH_WORK", ROOT / "bench" / ".cache" / "work")).parent / "quality"
SRC = WORK / "src"

PROJECTS: list[Source] = [
    Source("click", "pypi", "click", "8.1.7"),
    Source("httpx", "pypi", "httpx", "0.28.1"),
    Source("mobx", "npm", "mobx", "6.13.5"),
    Source("immer", "npm", "immer", "10.1.1"),
    Source("commander", "npm", "commander", "12.1.0"),
    Source("cordova-android", "npm", "cordova-android", "13.0.0"),
    Source("gorilla-mux", "debian", "golang-github-gorilla-mux-dev", "1.8.0-1",
           root="usr/share/gocode/src/github.com/gorilla/mux",
           pool="pool/main/g/golang-github-gorilla-mux/golang-github-gorilla-mux-dev_1.8.0-1_all.deb",
           sha256="0880a4019fe68496a0e0a749c2948c029e489f49edd448bed2fedaba33f848c2"),
    Source("cobra", "debian", "golang-github-spf13-cobra-dev", "1.6.1-1",
           root="usr/share/gocode/src/github.com/spf13/cobra",
           pool="pool/main/g/golang-github-spf13-cobra/golang-github-spf13-cobra-dev_1.6.1-1_all.deb",
           sha256="4f5d20855133319beef3c5b49d3c21a0406f270bf94fb4b6f4d406b691283cb2"),
    Source("semver", "debian", "librust-semver-dev", "1.0.14-1",
           root="usr/share/cargo/registry/semver-1.0.14",
           pool="pool/main/r/rust-semver/librust-semver-dev_1.0.14-1_amd64.deb",
           sha256="bf3719b7aac4b7f16f0d68a7037306dbc1532758fe7a5dea01254e85cecaca8c"),
    Source("tiktoken", "pypi", "tiktoken", "0.9.0"),
    # its .gitignore, a packaging template, ignores lib/: where its C sources are, which its git repository
    # tracks all the same (a checkout's index holds them; the sdist has no .git to say so)
    Source("ujson", "pypi", "ujson", "5.10.0", remove=(".gitignore",)),
    Source("rack", "debian", "ruby-rack", "2.2.22-0+deb12u1",
           root="usr/share/rubygems-integration/all/gems/rack-2.2.22",
           pool="pool/main/r/ruby-rack/ruby-rack_2.2.22-0+deb12u1_all.deb",
           sha256="18bab2c3caffa2b1a35cd73d49652d749909e87fd2d5b57dd4a594a02a6ad157"),
]
