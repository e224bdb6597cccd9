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

