"""Every path on the command line: directory walks, hidden files, symlinks, odd names, missing paths,
--ext, glob patterns, and a walk that is lazy. (Paths on stdin: test_stdin.py.)

Each test builds its own tree in tmp_path and parses the json/jsonl/csv the CLI prints.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from conftest import parse_records, printed_paths, put

from shufflenet_cli.inputs import paths as inputs_mod
from shufflenet_cli.inputs.paths import WalkOptions, iter_inputs

JPG = frozenset({"jpg"})


@pytest.fixture
def tree(tmp_path) -> Path:
    """root/{b.jpg, a.jpg, B.jpg, .hidden.jpg, notes.txt, sub/{z.jpg, deep/y.jpg}, .cache/x.jpg}"""
    root = tmp_path / "root"
    for i, name in enumerate(["b.jpg", "sub/z.jpg", "a.jpg", "sub/deep/y.jpg", "B.jpg", ".hidden.jpg", ".cache/x.jpg"]):
        put(root / name, seed=i)
    (root / "notes.txt").write_text("not an image")
    return root


def rel(root: Path, paths: list[str]) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


# --- directories -------------------------------------------------------------------------------


def test_directories_are_recursive_and_sorted(run, tree):
    r = run(tree)
    assert r.exit_code == 0, r.stderr
    assert rel(tree, printed_paths(r)) == ["B.jpg", "a.jpg", "b.jpg", "sub/deep/y.jpg", "sub/z.jpg"]


def test_no_recursive_stays_flat(run, tree):
    r = run(tree, "--no-recursive")
    assert r.exit_code == 0, r.stderr
    assert rel(tree, printed_paths(r)) == ["B.jpg", "a.jpg", "b.jpg"]


def test_hidden_files_and_folders_only_with_hidden(run, tree):
    r = run(tree, "--hidden")
    assert r.exit_code == 0, r.stderr
    assert rel(tree, printed_paths(r)) == [
        ".cache/x.jpg",
        ".hidden.jpg",
        "B.jpg",
        "a.jpg",
        "b.jpg",
        "sub/deep/y.jpg",
        "sub/z.jpg",
    ]


def test_explicit_hidden_file_is_taken(run, tree):
    r = run(tree / ".hidden.jpg")
    assert r.exit_code == 0, r.stderr
    assert printed_paths(r) == [str(tree / ".hidden.jpg")]


def test_symlinks_followed_and_a_cycle_walked_once(run, tmp_path):
    root = tmp_path / "root"
    put(root / "a.jpg")
    put(root / "sub" / "b.jpg", seed=1)
    (root / "sub" / "up").symlink_to("..")  # a folder link to its parent: a cycle
    (root / "sub" / "self").symlink_to(".")
    (root / "c.jpg").symlink_to("sub/b.jpg")  # a file link
    elsewhere = tmp_path / "elsewhere"
    put(elsewhere / "e.jpg", seed=2)
    (root / "linked").symlink_to(elsewhere)  # a folder link out of the tree

    found = list(itertools.islice(iter_inputs([str(root)], WalkOptions(), null=False), 1000))
    assert rel(root, [i.path for i in found]) == ["a.jpg", "c.jpg", "linked/e.jpg", "sub/b.jpg"]

    r = run(root)
    assert r.exit_code == 0, r.stderr
    assert rel(root, printed_paths(r)) == ["a.jpg", "c.jpg", "linked/e.jpg", "sub/b.jpg"]


def test_same_file_twice_is_classified_twice_in_input_order(run, tmp_path):
    a, b = put(tmp_path / "a.jpg", seed=1), put(tmp_path / "b.jpg", seed=2)
    r = run(b, a, b, tmp_path, fmt="json")
    assert r.exit_code == 0, r.stderr
    records = parse_records(r, "json")
    assert [rec["path"] for rec in records] == [b, a, b, str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert records[0]["predictions"] == records[2]["predictions"] == records[4]["predictions"]


def test_ext_limits_directories_but_not_explicit_files(run, tmp_path):
    from PIL import Image

    d = tmp_path / "mixed"
    put(d / "a.jpg")
    put(d / "C.JPG")
    Image.new("RGB", (8, 8), "red").save(d / "b.png")
    Image.new("RGB", (8, 8), "blue").save(d / "c.bmp")
    explicit = tmp_path / "d.bmp"
    Image.new("RGB", (8, 8), "green").save(explicit)

    r = run(d, explicit, "--ext", "jpg,.PNG")
    assert r.exit_code == 0, r.stderr
    assert printed_paths(r) == [str(d / "C.JPG"), str(d / "a.jpg"), str(d / "b.png"), str(explicit)]
    everything = run(d)
    assert printed_paths(everything) == [str(d / n) for n in ("C.JPG", "a.jpg", "b.png", "c.bmp")]


# --- odd names (conftest.odd_dir) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_odd_and_non_utf8_names_come_out_intact(run, odd_dir, fmt):
    d, expected = odd_dir
    r = run(d, fmt=fmt)
    assert r.exit_code == 0, r.stderr
    got = printed_paths(r, fmt)
    assert got == expected  # json.loads gives back os.fsdecode(raw bytes), surrogates included


# --- missing paths ------------------------------------------------------------------------------


def test_missing_path_is_an_error_record_in_place(run, tmp_path):
    a, b = put(tmp_path / "a.jpg"), put(tmp_path / "b.jpg", seed=1)
    missing = str(tmp_path / "nope.jpg")
    r = run(a, missing, b)
    assert r.exit_code == 1
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [a, missing, b]
    assert "no such file" in records[1]["error"]
    assert "predictions" in records[0] and "predictions" in records[2]


def test_missing_path_before_the_first_image_still_exit_1(run, tmp_path):
    a = put(tmp_path / "a.jpg")
    missing = [str(tmp_path / f"nope{i}.jpg") for i in range(3)]
    r = run(*missing, a, fmt="csv")
    assert r.exit_code == 1
    assert printed_paths(r, "csv") == [*missing, a]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_only_missing_paths_exit_2_with_empty_stdout(run, tmp_path, fmt):
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "nope.jpg", tmp_path / "empty", fmt=fmt)
    assert r.exit_code == 2
    assert r.stdout_bytes == b""
    assert r.stderr.startswith("Error: ")
    assert "nope.jpg" in r.stderr
    assert "Traceback" not in r.stderr


# --- glob patterns --------------------------------------------------------------------------------

GLOBS = [
    "*",
    "**",
    "**/",
    "**/*.jpg",
    "**/**/*.jpg",
    "*/",
    "s*/**/*.jpg",
    "**/deep/*",
    "**/deep",
    "?.jpg",
    "[ab].jpg",
    "sub/*/y.jpg",
    ".*",
    "**/.*",
    "*.png",
]


def reference_expansion(pattern: str) -> list[str]:
    """What Python's glob matches, folders walked the way `predict FOLDER` walks them (and nothing
    else inside them: `a/**` matches the folder a itself), first sightings."""
    import glob

    found: list[str] = []
    folders: list[str] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        if any(os.path.normpath(match).startswith(os.path.normpath(f) + os.sep) for f in folders):
            continue  # inside a matched folder, which is walked whole
        if os.path.isdir(match):
            folders.append(match)
            found += [i.path for i in inputs_mod.walk(match, WalkOptions(), JPG)]
        else:
            found.append(match)
    return [os.path.normpath(p) for p in dict.fromkeys(os.path.normpath(p) for p in found)]


@pytest.mark.parametrize("pattern", GLOBS)
def test_glob_finds_what_python_glob_finds_each_file_once(tree, pattern):
    pattern = str(tree / pattern)
    found = list(iter_inputs([pattern], WalkOptions(extensions=JPG)))
    expected = reference_expansion(pattern)
    if not expected:
        assert found == [inputs_mod.Input(pattern, error="no file matches this pattern")]
        return
    got = [os.path.normpath(i.path) for i in found]
    assert len(got) == len(set(got)), got  # Python's glob names some files twice, and folders with their files
    assert sorted(got) == sorted(expected)


def test_glob_comes_in_walk_order_with_every_image_once(run, tree):
    walked = rel(tree, printed_paths(run(tree)))
    for pattern in ["**", "**/*.jpg", "*"]:
        r = run(str(tree / pattern))
        paths = rel(tree, printed_paths(r))
        assert [p for p in paths if p.endswith(".jpg")] == walked, pattern
    assert rel(tree, printed_paths(run(str(tree / "*")))) == [*walked[:3], "notes.txt", *walked[3:]]


def test_glob_with_no_match_is_an_error_record(run, tmp_path):
    a = put(tmp_path / "a.jpg")
    pattern = str(tmp_path / "nothing" / "*.jpg")
    r = run(pattern, a)
    assert r.exit_code == 1
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [pattern, a]
    assert records[0]["error"] == "no file matches this pattern"


BOTH = ["a.jpg", "sub/b.jpg"]


@pytest.mark.parametrize(("pattern", "expected"), [("**/*.jpg", BOTH), ("**", BOTH), ("*", BOTH), ("s*", BOTH[1:])])
def test_glob_through_a_symlink_cycle_lists_each_file_once_as_the_walk_does(tmp_path, pattern, expected):
    root = tmp_path / "root"
    put(root / "a.jpg")
    put(root / "sub" / "b.jpg")
    (root / "sub" / "up").symlink_to("..")  # a cycle, reached by `**` and by the walk of a matched folder
    assert rel(root, [i.path for i in iter_inputs([str(root)])]) == BOTH
    got = rel(root, [i.path for i in itertools.islice(iter_inputs([str(root / pattern)]), 100)])
    assert got == expected


def test_glob_that_names_a_link_follows_it_once(tmp_path):
    root = tmp_path / "root"
    put(root / "a.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")
    got = rel(root, [i.path for i in iter_inputs([str(root / "sub" / "up" / "*")])])
    assert got == ["sub/up/a.jpg"]  # sub/up/sub is walked, but not round the cycle again


def test_glob_walks_what_the_folder_walk_walks_beside_and_through_links(tmp_path, monkeypatch):
    """The folders a match is kept out of are those it really lies in: not the current folder when the
    pattern starts with .., nor the folders a pattern's own path went through on its way."""
    put(tmp_path / "dd" / "x" / "in_x.jpg")
    (tmp_path / "dd" / "y").mkdir()
    (tmp_path / "dd" / "y" / "l").symlink_to("../x")
    monkeypatch.chdir(tmp_path / "dd" / "x")
    assert [i.path for i in iter_inputs(["../y*"])] == [i.path for i in iter_inputs(["../y"])] == ["../y/l/in_x.jpg"]

    root = tmp_path / "g"
    put(root / "a.jpg")
    put(root / "sub" / "b.jpg")
    (root / "sub" / "up").symlink_to("..")
    through = root / "sub" / "up"
    walked = rel(through, [i.path for i in iter_inputs([str(through)])])
    assert walked == ["a.jpg", "sub/b.jpg"]
    assert rel(through, [i.path for i in iter_inputs([str(through / "**" / "*.jpg")])]) == walked


@pytest.mark.parametrize("pattern", ["**", "*", "**/*.jpg"])
def test_glob_with_hidden_takes_hidden_names_as_the_walk_does(tree, pattern):
    options = WalkOptions(hidden=True, extensions=JPG)
    walked = [i.path for i in iter_inputs([str(tree)], options)]
    got = [i.path for i in iter_inputs([str(tree / pattern)], options) if i.path.endswith(".jpg")]
    assert rel(tree, got) == rel(tree, walked)
    assert ".hidden.jpg" in rel(tree, got) and ".cache/x.jpg" in rel(tree, got)


# --- streaming: the walk is lazy ------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["", "**/*.jpg"])  # a folder walked, or a glob pattern
def test_walk_yields_before_listing_the_whole_tree(tmp_path, monkeypatch, pattern):
    root = tmp_path / "big"
    for i in range(40):
        put(root / f"d{i:02d}" / "img.jpg")
    listed: list[str] = []
    real_scandir = os.scandir

    def spy(path):
        listed.append(os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)  # the walk's and globbing.py's
    it = iter_inputs([os.path.join(root, pattern) if pattern else str(root)], WalkOptions(extensions=JPG))
    first = next(it)
    assert first.path == str(root / "d00" / "img.jpg")
    assert len(listed) == 2  # the root and its first folder, not the 40 others
    assert len(list(it)) == 39


@pytest.mark.parametrize("pattern", ["", "**/*.jpg", "**"])  # a folder walked, or a glob pattern
def test_a_tree_deeper_than_pythons_recursion_limit_is_walked_in_order(tmp_path, pattern):
    """1,200 folders, one in another (short names: the deepest path stays under PATH_MAX), an image
    every 100 levels: a recursive walk or glob ended in RecursionError (exit 70, no output)."""
    root = tmp_path / "r"
    folders, expected = [str(root)], []
    try:
        for level in range(1200):
            os.mkdir(folders[-1])
            if level % 100 == 0:
                expected.append(os.path.join(folders[-1], "a.jpg"))
                Path(expected[-1]).write_bytes(b"")
            folders.append(os.path.join(folders[-1], "d"))
        got = list(iter_inputs([os.path.join(root, pattern) if pattern else str(root)], WalkOptions(extensions=JPG)))
    finally:  # removed here, bottom up: pytest's own clean-up (shutil.rmtree) recurses, and would fail on it
        for path in expected:
            os.unlink(path)
        for folder in reversed(folders[:-1]):
            os.rmdir(folder)
    assert [(i.path, i.error) for i in got] == [(p, None) for p in expected]


def test_walk_of_an_endless_tree_starts_at_once(monkeypatch):
    """A fake tree with no bottom: only a lazy walk can hand out its first files."""

    class Entry:
        def __init__(self, name: str, is_dir: bool) -> None:
            self.name, self._dir = name, is_dir

        def is_dir(self) -> bool:
            return self._dir

    class Listing(list):
        def __enter__(self):
            return iter(self)

        def __exit__(self, *exc):
            return False

    depth = {"n": 0}

    def fake_scandir(path):
        depth["n"] += 1
        return Listing([Entry("a.jpg", False), Entry("deeper", True), Entry("z.jpg", False)])

    def fake_stat(path):
        return os.stat_result((0o40755, depth["n"], 1, 1, 0, 0, 0, 0, 0, 0))  # a new inode each level

    with monkeypatch.context() as m:
        m.setattr(inputs_mod.os, "scandir", fake_scandir)
        m.setattr(inputs_mod.os, "stat", fake_stat)
        m.setattr(inputs_mod.os.path, "isdir", lambda p: True)
        first = list(itertools.islice(iter_inputs(["root"], WalkOptions(extensions=JPG)), 5))
    assert [i.path for i in first] == [
        os.path.join("root", "a.jpg"),
        os.path.join("root", "deeper", "a.jpg"),
        os.path.join("root", "deeper", "deeper", "a.jpg"),
        os.path.join("root", "deeper", "deeper", "deeper", "a.jpg"),
        os.path.join("root", "deeper", "deeper", "deeper", "deeper", "a.jpg"),
    ]
    assert depth["n"] == 5


def test_heic_in_a_folder_is_an_error_record_naming_the_format(run, tmp_path):
    """A phone's HEIC photo is taken from the folder even without a plugin, and named in its error."""
    d = tmp_path / "phone"
    put(d / "a.jpg")
    (d / "b.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    r = run(d, fmt="json")
    records = parse_records(r, "json")
    assert [Path(rec["path"]).name for rec in records] == ["a.jpg", "b.heic"]
    assert "HEIF" in records[1]["error"]
    assert r.exit_code == 1


def test_a_file_behind_a_folder_that_cannot_be_entered_says_permission_denied(tmp_path, monkeypatch):
    """os.path.lexists is False there too; the record must not say the file does not exist. (As root
    no folder is closed, so the refusal is simulated where the file system would give it.)"""
    from shufflenet_cli.inputs.paths import iter_inputs

    closed = str(tmp_path / "closed" / "x.jpg")
    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):
        if os.fspath(path) == closed:
            raise PermissionError(13, "Permission denied", closed)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    got, missing = list(iter_inputs([closed, str(tmp_path / "nothing.jpg")]))
    assert got.error == "permission denied: a folder on the way to it cannot be entered"
    assert missing.error == "no such file or directory"
