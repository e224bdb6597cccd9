import os

from orchestrator.walker import walk


def write(root, rel, text="x = 1\n"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_nested_gitignore_negation_and_skipped_dirs(tmp_path):
    write(tmp_path, ".gitignore", "*.log\nbuild/\n!keep.log\n")
    for rel in ["a.py", "debug.log", "keep.log", "build/out.py", "src/build/gen.py", "src/m.py",
                "src/.gitignore", "src/secret.py", "src/sub/secret.py", "src/sub/b.py", ".git/config",
                ".codeindex/x", "docs/.gitignore", "docs/readme.md"]:
        write(tmp_path, rel)
    (tmp_path / "src/.gitignore").write_text("secret.py\n")
    (tmp_path / "docs/.gitignore").write_text("!*.log\n")
    write(tmp_path, "docs/trace.log")
    paths = {e.path for e in walk(str(tmp_path))}
    assert paths == {".gitignore", "a.py", "keep.log", "src/.gitignore", "src/m.py", "src/sub/b.py",
                     "docs/.gitignore", "docs/readme.md", "docs/trace.log"}


def test_symlinks_are_not_followed(tmp_path):
    write(tmp_path, "real/a.py")
    os.symlink(tmp_path, tmp_path / "real" / "loop")  # a directory loop
    os.symlink(tmp_path / "real" / "a.py", tmp_path / "link.py")
    entries = {e.path: e for e in walk(str(tmp_path))}
    assert entries["real/a.py"].skip_reason == ""
    assert entries["real/loop"].skip_reason == "symlink"
    assert entries["link.py"].skip_reason == "symlink"


def test_the_walk_comes_in_path_order(tmp_path):
    """Git's index order: a directory's files sort where its name and "/" do, so that the walk merges with
    lists sorted by path (the stat cache, the store's manifest) without being held."""
    for rel in ("a.txt", "a/b.py", "a0", "a-b/c", "b/x/y.py", "b/x.py", "b.py", "a/z/q", "A", "a/\u00e9.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    walked = [e.path for e in walk(str(tmp_path))]
    assert walked == sorted(walked) and len(walked) == 10



def test_cache_directories_and_the_index_directory_are_not_entered(tmp_path):
    from orchestrator.owner import IndexLock
    from orchestrator.walker import IgnoreCache, select

    write(tmp_path, "src/a.py")
    write(tmp_path, "out/index/lancedb/x.json")  # an index put inside the repository with --index-dir
    IndexLock(str(tmp_path / "out" / "index"))  # every index directory is tagged when its lock is made
    write(tmp_path, ".pytest_cache/v/cache/nodeids")
    (tmp_path / ".pytest_cache" / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    write(tmp_path, "notes/CACHEDIR.TAG", "not the signature\n")  # a file of that name alone is not a tag
    assert {e.path for e in walk(str(tmp_path))} == {"src/a.py", "notes/CACHEDIR.TAG"}
    # watch events inside them are skipped too
    found, gone = select(str(tmp_path), {"out/index/lancedb/x.json", "src/a.py", "out/index/gone.txt"},
                         IgnoreCache(str(tmp_path)))
    assert [e.path for e in found] == ["src/a.py"] and gone == set()
    # a tag that is a link is not followed, and the tag is never written through one
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "CACHEDIR.TAG").symlink_to(victim)
    IndexLock(str(tmp_path / "linked"))
    assert victim.read_text() == "precious\n"
    assert "linked/CACHEDIR.TAG" in {e.path for e in walk(str(tmp_path))}  # not a tag: the folder is walked
    # a path through a linked folder is not looked at behind the link (the walk lists the link alone)
    (tmp_path / "alias").symlink_to(tmp_path / "src")
    found, _ = select(str(tmp_path), {"alias/a.py", "alias"}, IgnoreCache(str(tmp_path)))
    assert [(e.path, e.skip_reason) for e in found] == [("alias", "symlink")]


def test_a_name_that_is_not_utf8_is_listed_as_a_skip_under_a_readable_name(tmp_path):
    from orchestrator.walker import IgnoreCache, select

    root = os.fsencode(tmp_path)
    (tmp_path / "ok.py").write_text("x = 1\n")
    with open(os.path.join(root, b"caf\xe9.py"), "wb") as fh:
        fh.write(b"y = 2\n")
    os.mkdir(os.path.join(root, b"d\xff"))
    with open(os.path.join(root, b"d\xff", b"inner.py"), "wb") as fh:
        fh.write(b"z = 3\n")
    entries = {e.path: e.skip_reason for e in walk(str(tmp_path))}
    assert entries == {"caf\\xe9.py": "bad_name", "d\\xff": "bad_name", "ok.py": ""}
    assert all(p.encode("utf-8") for p in entries)  # every path can be sent and stored
    found, _ = select(str(tmp_path), {os.fsdecode(b"caf\xe9.py")}, IgnoreCache(str(tmp_path)))
    assert [(e.path, e.skip_reason) for e in found] == [("caf\\xe9.py", "bad_name")]
