"""A corpus of several files or folders: which files, in which order, what is skipped and why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charrnn import config
from charrnn.corpus import load_data
from charrnn.errors import CorpusError
from charrnn.sources import SEPARATOR, find
from tests.conftest import TINY_FLAGS, run_cli


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """A folder with text at several depths and everything a folder walk must skip."""
    root = tmp_path / "docs"
    write(root / "b.txt", "bee\n")
    write(root / "a.txt", "ay\n")
    write(root / "notes" / "c.md", "sea\n")
    write(root / "notes" / "deep" / "d.txt", "dee\n")
    write(root / "a.txt.d" / "e.txt", "ee\n")  # sorts after a.txt, before b.txt
    write(root / ".git" / "config", "hidden folder\n")
    write(root / ".hidden.txt", "hidden file\n")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")  # a NUL byte
    write(root / "latin1.txt", "caf\u00e9".encode("latin-1"))  # invalid UTF-8 at once
    write(root / "empty.txt", "")
    os.symlink(root, root / "notes" / "loop")  # back to the top: a loop
    os.symlink(root / "a.txt", root / "same-as-a.txt")  # a second path to a.txt
    os.mkfifo(root / "pipe")
    return root


def relative(sources, root: Path) -> list[str]:
    return [str(f.path.relative_to(root)) for f in sources.files]


def test_a_folder_is_read_recursively_in_sorted_path_order_and_skips_are_counted(tree):
    sources = find(str(tree))
    assert relative(sources, tree) == [
        "a.txt", "a.txt.d/e.txt", "b.txt", "notes/c.md", "notes/deep/d.txt"]  # fmt: skip
    assert dict(sources.skipped) == {
        "hidden": 2, "binary": 2, "empty": 1, "symlink loop": 1, "duplicate": 1,
        "not a regular file": 1,
    }  # fmt: skip
    assert sources.skipped_text() == (
        "2 binary, 1 duplicate, 1 empty, 2 hidden, 1 not a regular file, 1 symlink loop"
    )


def test_documents_are_joined_with_one_newline(tree, tmp_path):
    data = load_data(str(tree), 0.1, include=("*.txt",))
    text = data.vocab.decode(data.train) + data.vocab.decode(data.val)
    assert SEPARATOR == "\n"
    assert text == "ay\n" + "\n" + "bee\n"  # a.txt, the separator, b.txt


# The tree's 9 regular files seen by the walk: a, b, e, c.md, d, image.png, latin1, empty and
# same-as-a (the globs are matched first: an excluded file is not even opened).
@pytest.mark.parametrize(
    ("include", "exclude", "expected", "excluded"),
    [
        (("*.txt",), (), ["a.txt", "b.txt"], 4),  # * stays within the folder
        (("**/*.txt",), (), ["a.txt", "a.txt.d/e.txt", "b.txt", "notes/deep/d.txt"], 2),
        (("notes/**",), (), ["notes/c.md", "notes/deep/d.txt"], 7),
        # a.txt excluded: its second path is no longer a duplicate
        ((), ("**/deep/**", "?.txt"), ["a.txt.d/e.txt", "notes/c.md", "same-as-a.txt"], 3),
        (("**/[ab].txt",), (), ["a.txt", "b.txt"], 7),
        (("**/[!ab].*",), (), ["a.txt.d/e.txt", "notes/c.md", "notes/deep/d.txt"], 6),
    ],
)
def test_include_and_exclude_globs_match_the_path_relative_to_the_folder(
    tree, include, exclude, expected, excluded
):
    sources = find(str(tree), include, exclude)
    assert relative(sources, tree) == expected
    assert sources.skipped["excluded by --include/--exclude"] == excluded


def test_several_corpora_keep_the_order_given(tree, tmp_path):
    extra = write(tmp_path / "extra.txt", "extra\n")
    sources = find([str(extra), str(tree / "a.txt.d"), "shakespeare", str(tree / "b.txt")])
    names = [f.path.name for f in sources.files]
    assert names == ["extra.txt", "e.txt", "shakespeare.txt", "b.txt"]


def test_a_named_device_or_fifo_is_refused_not_read(tree):
    with pytest.raises(CorpusError, match="not a regular file"):
        find("/dev/zero")
    with pytest.raises(CorpusError, match="not a regular file"):
        find(str(tree / "pipe"))


def test_a_folder_without_text_is_refused_with_what_was_skipped(tmp_path):
    write(tmp_path / "only" / "x.bin", b"\0\0")
    with pytest.raises(CorpusError, match="no text files to read \\(skipped: 1 binary\\)"):
        find(str(tmp_path / "only"))


def test_a_named_file_is_never_skipped_but_invalid_utf8_is_refused_with_its_offset(tmp_path):
    late = write(tmp_path / "late.txt", b"a" * 10_000 + b"\xff")  # beyond the first 8 KiB
    with pytest.raises(CorpusError, match="byte 10000 \\(0xff\\)"):
        load_data(str(late), 0.1)
    assert [f.path for f in find(str(tmp_path)).files] == [late]  # its start looks like text


def test_the_corpus_setting_is_a_list_from_toml_flags_and_old_strings(tmp_path):
    toml = write(tmp_path / "c.toml", '[train]\ncorpus = ["a.txt", "notes/"]\n'
                 'include = ["**/*.txt"]\n')  # fmt: skip
    _, train = config.resolve(str(toml), {})
    assert train.corpus == ("a.txt", "notes/") and train.include == ("**/*.txt",)
    assert config.from_saved(config.TrainConfig, {"corpus": "shakespeare"}).corpus == (
        "shakespeare",
    )  # a checkpoint of an older version
    assert 'corpus = ["a.txt", "notes/"]' in config.to_toml(config.ModelConfig(), train)
    with pytest.raises(config.ConfigError, match="corpus must be str, got int 1"):
        config.build(config.TrainConfig, {"corpus": [1]})
    with pytest.raises(CorpusError, match="no corpus given"):
        find([])


def test_train_takes_corpus_repeated_and_a_folder_and_says_what_it_skipped(tree, tmp_path):
    text = "".join(f"line {i} of a longer document, with words.\n" for i in range(400))
    write(tree / "long.txt", text)
    corpora = ("--corpus", tree, "--corpus", tree / "a.txt", "--exclude", "notes/**")
    result = run_cli("train", *TINY_FLAGS, *corpora, "--out", tmp_path / "run", "--max-steps", 3)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())  # rich wraps long lines
    assert (
        "skipped 2 binary, 2 duplicate, 1 empty, 2 excluded by --include/--exclude, 2 hidden, "
        "1 not a regular file, 1 symlink loop"
    ) in said
    assert "4 file(s) read" in said  # a, a.txt.d/e, b, long (a.txt named again: a duplicate)
    saved = (tmp_path / "run" / "config.toml").read_text()
    assert f'corpus = ["{tree}", "{tree / "a.txt"}"]' in saved
    assert 'exclude = ["notes/**"]' in saved


def saved_run(tmp_path, corpus: Path, edit) -> Path:
    """A tiny run whose last.pt is then edited by `edit(checkpoint)`."""
    from charrnn import checkpoint as ckpt

    run = tmp_path / "run"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", run, "--max-steps", 2)
    assert result.exit_code == 0, result.output
    checkpoint = ckpt.load(run / "last.pt")
    edit(checkpoint)
    ckpt.save(checkpoint, run / "last.pt")
    return run


def test_a_checkpoint_whose_corpus_now_is_a_device_is_refused(tmp_path, corpus_file):
    run = saved_run(tmp_path, corpus_file, lambda c: c.update(corpus_sources=["/dev/zero"]))
    result = run_cli("train", "--resume", run, "--max-steps", 4)
    assert (
        result.exit_code == 1
        and "'/dev/zero' is a character device, not a regular file" in result.stderr
    )


def test_an_older_checkpoint_with_one_corpus_string_still_resumes(tmp_path, corpus_file):
    def older(checkpoint):
        for key in ("corpus_sources", "corpus_files", "corpus_fingerprint", "init_from"):
            checkpoint.pop(key)
        checkpoint["train_config"]["corpus"] = str(corpus_file)  # a string, as they wrote it

    run = saved_run(tmp_path, corpus_file, older)
    result = run_cli("train", "--resume", run, "--max-steps", 4)
    assert result.exit_code == 0, result.output
