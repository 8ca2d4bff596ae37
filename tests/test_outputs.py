"""Files a person asks for (sample --out-dir, explain --html): refused in one line before any
work when they cannot be written, never replacing a file without --force, and written whole
or not at all, even by a full disk."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from charrnn import files
from charrnn.errors import OutputError
from tests.conftest import run_cli
from tests.killing import ENV


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_sample_out_dir_that_is_a_file_is_one_line(tiny_run, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    line = one_error_line(run_cli("sample", tiny_run, "-n", 5, "--out-dir", a_file))
    assert "notes.txt' is a file, not a folder" in line
    below = one_error_line(run_cli("sample", tiny_run, "-n", 5, "--out-dir", a_file / "deeper"))
    assert "notes.txt' is a file, not a folder" in below
    assert a_file.read_text() == "mine"


def test_existing_samples_are_replaced_only_with_force(tiny_run, tmp_path):
    out = tmp_path / "samples"
    first = run_cli("sample", tiny_run, "-n", 20, "-m", 2, "--seed", 1, "--out-dir", out)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_text() for p in out.iterdir()}
    assert sorted(before) == ["sample-1.txt", "sample-2.txt"]
    line = one_error_line(run_cli("sample", tiny_run, "-n", 20, "-m", 3, "--seed", 2,
                                  "--out-dir", out))  # fmt: skip
    assert "sample-1.txt' already exists; use --force to replace it" in line
    assert {p.name: p.read_text() for p in out.iterdir()} == before  # nothing written
    prime = tmp_path / "prime.txt"
    prime.write_text("ROMEO:\nBut soft")
    forced = run_cli("sample", tiny_run, "-n", 20, "-m", 3, "--seed", 2, "--out-dir", out,
                     "--prime-file", prime, "--force")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    after = {p.name: p.read_text() for p in out.iterdir()}
    assert sorted(after) == ["sample-1.txt", "sample-2.txt", "sample-3.txt"]
    assert after["sample-1.txt"] != before["sample-1.txt"]  # another seed, another text
    assert all(text.startswith("ROMEO:\nBut soft") and len(text) == 15 + 20
               for text in after.values())  # fmt: skip


@pytest.mark.slow  # a process of its own, for its file-size limit
def test_samples_on_a_full_disk_leave_no_file_behind(tiny_run, tmp_path):
    out = tmp_path / "samples"

    def cap_file_size() -> None:  # EFBIG mid-write, as ENOSPC would be on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    done = subprocess.run(
        [sys.executable, "-m", "charrnn", "sample", str(tiny_run), "-n", "5000", "-m", "3",
         "--seed", "1", "--exact", "--out-dir", str(out)],
        capture_output=True, text=True, env=ENV, preexec_fn=cap_file_size, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: cannot write") and "nothing was written" in lines[0]
    assert list(out.iterdir()) == []  # no sample, no temporary


def test_html_into_a_missing_folder_or_over_a_file_is_one_line(tiny_run, tmp_path):
    missing = tmp_path / "no-such-folder" / "view.html"
    line = one_error_line(run_cli("explain", tiny_run, "--text", "ROMEO:", "--html", missing))
    assert "no-such-folder' does not exist" in line
    assert not missing.parent.exists()

    page = tmp_path / "view.html"
    page.write_text("my page")
    line = one_error_line(run_cli("explain", tiny_run, "--text", "ROMEO:", "--html", page))
    assert "view.html' already exists; use --force to replace it" in line
    assert page.read_text() == "my page"
    forced = run_cli("explain", tiny_run, "--text", "ROMEO:", "--html", page, "--force")
    assert forced.exit_code == 0, forced.output
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["view.html"]  # no temporary left


def test_write_texts_is_all_or_nothing(tmp_path, monkeypatch):
    real_open = open
    calls = {"n": 0}

    def second_fails(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", second_fails)
    with pytest.raises(OutputError, match="b.txt': No space left on device; nothing was"):
        files.write_texts({tmp_path / "a.txt": "a", tmp_path / "b.txt": "b"})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
