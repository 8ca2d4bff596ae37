"""The token cache: built once, hit after, rebuilt when stale or damaged, one builder at a time,
read through a memory map (the ids are the file's pages, not the process's own memory)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn import rundir, token_files, tokens
from charrnn.corpus import load_data
from charrnn.errors import CorpusError
from charrnn.scoring import sample_windows
from charrnn.sources import find
from charrnn.vocab import Vocabulary
from tests.conftest import TINY_FLAGS, run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own, so hits and misses are this test's."""
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))


def entries(kind: str = "tokens") -> list[Path]:
    return sorted(p for p in tokens.folder().iterdir() if p.name.endswith(f".{kind}"))


def test_a_second_load_is_a_hit_without_reading_the_sources_again(corpus_file, monkeypatch):
    first = load_data(str(corpus_file), 0.1)
    assert first.built
    text = corpus_file.read_text()
    assert first.vocab.decode(first.train) + first.vocab.decode(first.val) == text

    def no_reading(*args):
        raise AssertionError("a hit must not read the sources")

    monkeypatch.setattr(tokens, "_read", no_reading)
    second = load_data(str(corpus_file), 0.1)
    assert not second.built and torch.equal(second.train, first.train)
    header = tokens.read_header(entries()[0])
    assert header["count"] == len(text) and header["dtype"] == "uint8"
    assert header["fingerprint"] == first.fingerprint == header["sources"][0]["sha256"]


def test_the_ids_are_pages_of_the_token_file(corpus_file):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc (Linux)")
    data = load_data(str(corpus_file), 0.1)
    pointer = data.train.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, stop = (int(x, 16) for x in fields[0].split("-"))
        if start <= pointer < stop:
            assert fields[-1].endswith(".tokens"), line
            return
    pytest.fail("the train ids are in no mapping")


def test_an_edited_source_gets_a_new_entry_and_the_old_one_is_listed_stale(corpus_file):
    load_data(str(corpus_file), 0.1)
    os.utime(corpus_file, ns=(0, 1_000_000_000))  # same bytes, another time: another key
    again = load_data(str(corpus_file), 0.1)
    assert again.built and len(entries()) == 2
    states = {item.path.name: item.state for item in token_files.list_cache()
              if item.kind == "tokens"}  # fmt: skip
    assert sorted(states.values()) == ["ok", "stale"]
    result = run_cli("cache", "clear", "--stale")
    assert result.exit_code == 0 and "removed 2 file(s)" in result.stderr  # tokens and scan
    assert [p.name for p in entries()] == [n for n, s in states.items() if s == "ok"]
    listed = json.loads(run_cli("cache", "list", "--json").stdout)
    assert {f["state"] for f in listed["files"]} == {"ok"}
    assert run_cli("cache", "clear").exit_code == 0 and entries() == []


def test_the_list_shows_entries_not_locks_and_clear_keeps_a_held_lock(corpus_file):
    """A build's lock file is no entry; `cache clear` removes the locks no build holds, and
    leaves a held one where it is: unlinked, its holder would lock a file nobody else can
    open, and a second build of the entry could start beside it."""
    load_data(str(corpus_file), 0.1)
    entry = entries()[0]
    locks = entries("lock")
    assert len(locks) == 2  # the scan's and the entry's, both left behind by the build
    listed = json.loads(run_cli("cache", "list", "--json").stdout)["files"]
    assert sorted(f["kind"] for f in listed) == ["scan", "tokens"]
    table = run_cli("cache", "list")
    rows = table.stdout.splitlines()[2:]  # after the folder and the column names
    assert [row.split()[1] for row in rows] == ["tokens", "scan"], table.stdout
    assert "2 file(s)" in table.stderr

    held = entry.with_name(entry.name.split(".", 1)[0] + ".lock")
    with tokens._locked(entry):  # a build of that entry, now
        assert tokens.is_locked(held)
        inode = held.stat().st_ino
        cleared = run_cli("cache", "clear")
        assert cleared.exit_code == 0
        assert "removed 2 file(s)" in cleared.stderr  # what the list showed: locks uncounted
        assert held.exists() and held.stat().st_ino == inode
    assert [p.name for p in tokens.folder().iterdir()] == [held.name]  # the rest is gone
    assert run_cli("cache", "clear").exit_code == 0  # released: now it goes too
    assert list(tokens.folder().iterdir()) == []


def write_token_file(name: str, **changes) -> Path:
    """A .tokens file with a sound prefix and checksum around the header given, holding 3 ids:
    valid JSON of whatever shape the test wants, which only a check of its fields catches."""
    header = {"format": tokens.FORMAT, "sources": [], "vocab": ["a", "b"], "dtype": "uint8",
              "count": 3, "offset": tokens.ALIGN, **changes}  # fmt: skip
    raw = json.dumps(header).encode()
    data = tokens.PREFIX.pack(tokens.MAGIC, len(raw), hashlib.sha256(raw).digest()) + raw
    path = tokens.folder() / f"{name}.tokens"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.ljust(tokens.ALIGN, b"\0") + bytes(3))
    return path


def write_malformed_entries(tmp_path) -> dict[str, str]:
    """Hand-written cache files of the wrong shape; {file name: words its problem must say}."""
    source = tmp_path / "source.txt"
    source.write_text("abc")
    write_token_file("sources-a-number", sources=5)
    write_token_file("sources-without-sizes", sources=[{"path": str(source)}])
    write_token_file("count-a-text", count="3")
    write_token_file("unknown-dtype", dtype="object")
    scans = {
        "files-a-number": {"files": 5},
        "a-list": [],
        "a-text": "files",
        "record-without-size": {"files": [{"path": str(source)}]},
    }
    for name, value in scans.items():
        (tokens.folder() / f"{name}.scan.json").write_text(json.dumps(value))
    (tokens.folder() / "too-deep.scan.json").write_text("[" * 100_000)  # RecursionError
    return {
        "too-deep.scan.json": "not JSON",
        "sources-a-number.tokens": "sources are not a list",
        "sources-without-sizes.tokens": "not a path with a size and a time",
        "count-a-text.tokens": "count is not a whole number",
        "unknown-dtype.tokens": "dtype is not one of",
        "files-a-number.scan.json": "files are not a list",
        "a-list.scan.json": "holds a list, not a table",
        "a-text.scan.json": "holds a string, not a table",
        "record-without-size.scan.json": "not a path with a size and a time",
    }


@pytest.mark.parametrize("flags", [[], ["--stale"]])
def test_malformed_entries_are_listed_damaged_with_why_and_cleared(tmp_path, flags):
    problems = write_malformed_entries(tmp_path)
    write_token_file("fine")  # the same writer, a sound header: ok, so the rest is the fields
    listed = run_cli("cache", "list", "--json")
    assert listed.exit_code == 0, listed.output
    files = {Path(f["path"]).name: f for f in json.loads(listed.stdout)["files"]}
    assert files.pop("fine.tokens")["state"] == "ok"
    assert {name: f["state"] for name, f in files.items()} == dict.fromkeys(problems, "damaged")
    for name, words in problems.items():
        assert words in files[name]["problem"], files[name]
    table = run_cli("cache", "list")
    assert table.exit_code == 0, table.output
    said = {line.split(":", 1)[0]: line for line in table.stderr.splitlines()}
    for name, words in problems.items():
        assert said[name].startswith(f"{name}: damaged: ") and words in said[name], said

    cleared = run_cli("cache", "clear", *flags)
    assert cleared.exit_code == 0, cleared.output
    assert f"removed {len(problems) + (not flags)} file(s)" in cleared.stderr
    assert sorted(p.name for p in tokens.folder().iterdir()) == ([] if not flags else
                                                                 ["fine.tokens"])  # fmt: skip


def gone_pid() -> int:
    """The id of a process that has exited and been reaped (one reused in these few ms is
    unlikely)."""
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    return gone.pid


def listed_files() -> dict[str, dict]:
    listed = run_cli("cache", "list", "--json")
    assert listed.exit_code == 0, listed.output
    return {Path(f["path"]).name: f for f in json.loads(listed.stdout)["files"]}


@pytest.mark.skipif(not tokens.can_lock(), reason="needs advisory locks (flock)")
def test_abandoned_temporaries_are_listed_so_and_clear_counts_their_bytes():
    """A cache temporary is building exactly while its entry's lock is held, whatever its
    name's process id says: ids are reused (pid 1 in every container), so a live process with
    that id need not be the writer, and a held lock is a build, however quiet."""
    root = tokens.folder()
    root.mkdir(parents=True)
    hours_ago = time.time() - 2 * 3600

    def temporary(entry: str, pid: object, size: int, old: bool = False) -> Path:
        path = root / f".{entry}.tmp-{pid}"
        path.write_bytes(bytes(size))
        if old:
            os.utime(path, (hours_ago, hours_ago))
        return path

    # Entry "held" is being built (its lock, held.lock, covers its scan and its tokens).
    held_gone = temporary("held.tokens", gone_pid(), 300, old=True)  # writer's id gone, 2 h
    held_odd = temporary("held.scan.json", "unknown", 100, old=True)  # no id, 2 h quiet
    # Entry "free" has a lock file nobody holds; entry "other" has none at all.
    with tokens._locked(root / "free.tokens"):
        pass
    free_mine = temporary("free.tokens", os.getpid(), 700)  # a live id, written just now
    free_one = temporary("free.scan.json", 1, 800)  # a container's first process: alive
    other = temporary("other.tokens", os.getpid(), 0)

    stopped = "no build holds its entry's lock: its build was stopped"
    with tokens._locked(root / "held.tokens"):  # a build of that entry, now
        files = listed_files()
        assert {name: f["state"] for name, f in files.items()} == {
            held_gone.name: "building", held_odd.name: "building", free_mine.name: "abandoned",
            free_one.name: "abandoned", other.name: "abandoned"}  # fmt: skip
        for path in (free_mine, free_one, other):
            assert files[path.name]["problem"] == stopped
        assert files[held_gone.name]["problem"] is None

        cleared = run_cli("cache", "clear")
        assert cleared.exit_code == 0, cleared.output
        assert "removed 3 file(s), 1.5 kB" in cleared.stderr  # 700 + 800 + 0, not the held
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [held_gone.name, held_odd.name, "held.lock"])  # fmt: skip

    # The build is gone (its lock free): what it left will never be finished.
    files = listed_files()
    assert {name: f["state"] for name, f in files.items()} == {
        held_gone.name: "abandoned", held_odd.name: "abandoned"}  # fmt: skip
    cleared = run_cli("cache", "clear", "--stale")
    assert cleared.exit_code == 0, cleared.output
    assert "removed 2 file(s), 400 B" in cleared.stderr
    assert [p.name for p in root.iterdir()] == ["held.lock"]  # --stale keeps the locks


@pytest.mark.skipif(os.name != "posix", reason="needs a probe for whether a process lives")
def test_without_advisory_locks_a_temporary_is_abandoned_by_its_writer_or_its_quiet(
    monkeypatch,
):
    """Windows has no flock: there the writer's id tells, else being quiet for an hour."""
    monkeypatch.setattr(tokens, "fcntl", None)
    gone = gone_pid()
    root = tokens.folder()
    root.mkdir(parents=True)
    killed = root / f".a.tokens.tmp-{gone}"  # its build was killed
    killed.write_bytes(bytes(700))
    paused = root / f".b.tokens.tmp-{os.getpid()}"  # a live writer, quiet for 2 h (Ctrl-Z)
    paused.write_bytes(bytes(100))
    quiet = root / ".e.tokens.tmp-unknown"  # no writer to ask about: quiet for 2 h is enough
    quiet.write_bytes(bytes(800))
    hours_ago = time.time() - 2 * 3600
    for path in (paused, quiet):
        os.utime(path, (hours_ago, hours_ago))
    live = root / f".c.tokens.tmp-{os.getpid()}"  # being written now
    live.write_bytes(bytes(300))
    no_pid = root / ".d.tokens.tmp-99999999999999999999"  # would overflow os.kill
    no_pid.write_bytes(b"")
    zero = root / ".f.scan.json.tmp-0"  # no process has id 0 (kill(0, 0) probes our group)
    zero.write_bytes(bytes(10))

    files = listed_files()
    assert {name: f["state"] for name, f in files.items()} == {
        killed.name: "abandoned", quiet.name: "abandoned", live.name: "building",
        no_pid.name: "abandoned", paused.name: "building", zero.name: "abandoned"}  # fmt: skip
    assert files[killed.name]["problem"] == f"its writer (process {gone}) is gone"
    assert files[zero.name]["problem"] == "its writer (process 0) is gone"
    assert files[quiet.name]["problem"] == "not written to for 120 minutes"
    assert files[live.name]["problem"] is None

    cleared = run_cli("cache", "clear", "--stale")
    assert cleared.exit_code == 0, cleared.output
    assert "removed 4 file(s), 1.5 kB" in cleared.stderr  # 700 + 800 + 0 + 10; not the live
    assert sorted(p.name for p in root.iterdir()) == [paused.name, live.name]


@pytest.mark.parametrize("flags", [[], ["--stale"]])
def test_foreign_files_folders_and_links_are_listed_so_and_never_cleared(tmp_path, flags):
    root = tokens.folder()
    root.mkdir(parents=True)
    hours_ago = time.time() - 2 * 3600
    (root / "notes.txt").write_text("mine")
    (root / ".DS_Store").write_bytes(bytes(10))
    (root / ".notes.txt.tmp-1").write_bytes(bytes(5))  # a temporary of no cache entry
    for name in ("notes.txt", ".DS_Store", ".notes.txt.tmp-1"):
        os.utime(root / name, (hours_ago, hours_ago))  # quiet long enough to look abandoned
    (root / "kept").mkdir()
    (root / "kept" / "x.tokens").write_bytes(b"")
    (root / ".d.tokens.tmp-1").mkdir()  # a folder named like a temporary
    outside = tmp_path / "outside.tokens"
    outside.write_bytes(b"not a token file")  # read through the link, it would be damaged
    (root / "link.tokens").symlink_to(outside)
    foreign = ["notes.txt", ".DS_Store", ".notes.txt.tmp-1", "kept", ".d.tokens.tmp-1",
               "link.tokens"]  # fmt: skip
    write_token_file("fine")

    files = listed_files()
    assert files.pop("fine.tokens")["state"] == "ok"
    assert sorted(files) == sorted(foreign)
    for name, item in files.items():
        assert (item["kind"], item["state"]) == ("other", "foreign"), name
        assert item["problem"] == "not a file of charrnn's cache: left alone"
    table = run_cli("cache", "list")
    assert table.exit_code == 0, table.output
    assert "notes.txt: foreign: not a file of charrnn's cache: left alone" in table.stderr
    assert "1 file(s), 4.1 kB; `charrnn cache clear` removes them; 6 other file(s)" in (
        table.stderr
    )

    cleared = run_cli("cache", "clear", *flags)
    assert cleared.exit_code == 0, cleared.output
    assert f"removed {int(not flags)} file(s)" in cleared.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted(
        foreign + (["fine.tokens"] if flags else []))  # fmt: skip
    assert (root / "kept" / "x.tokens").exists() and outside.exists()
    assert (root / "notes.txt").read_text() == "mine"


def test_clear_never_unlinks_what_became_a_folder_since_it_was_listed(monkeypatch):
    """A file swapped for a folder between the listing and the removal is left alone."""
    entry = write_token_file("swapped", sources=5)  # damaged: cleared even with --stale
    (listed,) = token_files.list_cache()
    assert listed.state == "damaged"
    entry.unlink()
    entry.mkdir()
    monkeypatch.setattr(token_files, "list_cache", lambda: [listed])
    assert token_files.clear_cache(stale_only=True) == (0, 0)
    assert entry.is_dir()


@pytest.mark.skipif(os.name != "posix", reason="the liveness probe is POSIX's os.kill(pid, 0)")
def test_the_stale_temporary_sweep_takes_odd_names_without_failing(tmp_path):
    from charrnn.files import remove_stale_temporaries, writer_is_gone

    names = {"overflow": ".a.tmp-99999999999999999999", "superscript": ".b.tmp-²",
             "no id": ".c.tmp-", "mine": f".d.tmp-{os.getpid()}",
             "zero": ".e.tmp-0"}  # fmt: skip
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    told = {kind: writer_is_gone(tmp_path / name) for kind, name in names.items()}
    assert told == {"overflow": True, "superscript": None, "no id": None, "mine": False,
                    "zero": True}  # fmt: skip
    assert remove_stale_temporaries(tmp_path) == 2  # the ids no process can have
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[kind] for kind in ("superscript", "no id", "mine"))  # fmt: skip


@pytest.mark.parametrize(
    "damage",
    ["truncated", "a flipped header byte", "not a token file", "an empty file"],
)
def test_a_damaged_entry_is_rebuilt_never_trusted(corpus_file, damage):
    first = load_data(str(corpus_file), 0.1)
    expected = first.train.clone()
    path = entries()[0]
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:-10]
    elif damage == "a flipped header byte":
        data[tokens.PREFIX.size + 20] ^= 0x01
    elif damage == "not a token file":
        data[:8] = b"GARBAGE!"
    else:
        data = bytearray()
    del first  # let the old mapping go before the file is rewritten
    path.write_bytes(bytes(data))
    messages = []
    again = load_data(str(corpus_file), 0.1, log=messages.append)
    assert again.built and torch.equal(again.train, expected)
    assert messages and messages[0].startswith("rebuilding the token cache entry")


def test_a_damaged_scan_is_taken_again(corpus_file):
    first = load_data(str(corpus_file), 0.1)
    entries("json")[0].write_text("{not json")
    assert load_data(str(corpus_file), 0.1).fingerprint == first.fingerprint


def test_two_builds_of_one_entry_at_once_build_it_once(corpus_file, monkeypatch):
    sources = find(str(corpus_file))
    scanned = tokens.scan(sources)
    vocab = Vocabulary(tuple(sorted(scanned.counts)))
    built = []
    real_build = tokens._build

    def slow_build(*args):
        built.append(threading.get_ident())
        time.sleep(0.3)  # long enough for the other builder to arrive and wait
        real_build(*args)

    monkeypatch.setattr(tokens, "_build", slow_build)
    results = []

    def build():
        results.append(tokens.open_entry(sources, scanned, vocab))

    workers = [threading.Thread(target=build) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(built) == 1  # flock excludes every other open file description, threads too
    assert sorted(r.built for r in results) == [False, False, True]
    assert all(np.array_equal(r.ids, results[0].ids) for r in results)


@pytest.mark.slow
def test_two_processes_building_one_entry_build_it_once(tmp_path, shakespeare_text):
    """The same across processes: each child slows its build down and reports whether it
    built; exactly one of them does, and both read the same ids."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text * 20, encoding="utf-8")  # 1.2 MB
    child = (
        "import sys, time, charrnn.tokens as t\n"
        "from charrnn.corpus import load_data\n"
        "real = t._build\n"
        "t._build = lambda *a: (time.sleep(0.5), real(*a))\n"
        "data = load_data(sys.argv[1], 0.1)\n"
        "print(int(data.built), int(data.train.sum()))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", child, str(corpus)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=120)[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sorted(built for built, _ in outputs) == ["0", "1"]
    assert outputs[0][1] == outputs[1][1]


def test_a_separate_validation_text_and_the_vocabulary_of_both(tmp_path, corpus_file):
    held_out = tmp_path / "held-out.txt"
    held_out.write_text("Zebras? Quixotic! ü\n" * 50, encoding="utf-8")
    data = load_data(str(corpus_file), 0.1, val_corpus=str(held_out))
    assert data.vocab.decode(data.val) == held_out.read_text()
    assert data.vocab.decode(data.train) == corpus_file.read_text()  # all of it trains
    assert "ü" in data.vocab and data.val_fingerprint != data.fingerprint


def test_sample_windows_are_evenly_spaced_and_fixed():
    assert sample_windows(2_000_000) is None
    windows = sample_windows(100_000_000)
    assert len(windows) == 20 and windows[0][0] == 0 and windows[-1][1] == 100_000_000
    assert sum(stop - start for start, stop in windows) == 2_000_000
    gaps = {b[0] - a[0] for a, b in zip(windows, windows[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 1


def test_a_large_validation_text_is_scored_through_the_sample_and_says_so(
    tmp_path, corpus_file, monkeypatch
):
    import charrnn.scoring as scoring

    monkeypatch.setattr(scoring, "SAMPLE_CHARS", 1_000)  # the 6,000-character val is "large"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", tmp_path / "run",
                     "--max-steps", 4, "--eval-every", 2)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["val_scope"] for x in lines] == ["sample", "sample"]
    assert len(rundir.read_metrics(tmp_path / "run").entries) == 2  # and read back, not dropped
    said = " ".join(result.stderr.split())
    assert "every evaluation scores a fixed sample of 1,000 of its 5,995 characters" in said
    assert "(on a fixed sample of 1,000 of its 5,995 characters (20 evenly spaced" in said


def test_token_files_widen_with_the_vocabulary(tmp_path):
    """uint16 past 256 characters, uint32 past 65,536; the ids read back are the text's."""
    for size, dtype in ((300, "uint16"), (70_000, "uint32")):
        chars = [chr(c) for c in range(0x4E00, 0x4E00 + size)] if size < 20_000 else [
            chr(c) for c in range(0x20000, 0x20000 + size)]  # fmt: skip
        path = tmp_path / f"wide-{size}.txt"
        path.write_text("".join(chars), encoding="utf-8")
        data = load_data(str(path), 0.5, max_vocab=size)
        assert data.train.dtype == getattr(torch, dtype) and len(data.vocab) == size
        assert data.vocab.decode(data.val[-5:]) == "".join(chars[-5:])


def test_an_unwritable_cache_is_one_line(tmp_path, corpus_file, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CHARRNN_CACHE", str(blocker / "cache"))
    with pytest.raises(CorpusError, match="CHARRNN_CACHE"):
        load_data(str(corpus_file), 0.1)


MEASURE_CHILD = """
import sys, threading, time
from pathlib import Path
import torch
from charrnn.config import ModelConfig, TrainConfig
from charrnn.train import Trainer

def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
peak, done = [rss_anon()], threading.Event()
def watch():
    while not done.wait(0.002):
        peak.append(rss_anon())
threading.Thread(target=watch, daemon=True).start()
before = rss_anon()
model = ModelConfig(hidden_size=32, embedding_dim=16)
train = TrainConfig(corpus=(sys.argv[1],), val_fraction=0.002, batch_size=8, seq_length=32,
                    max_steps=5, eval_every=0, checkpoint_every=0, threads=1)
Trainer(model, train, Path(sys.argv[2])).run()
done.set()
print(max(peak) - before)
"""


@pytest.mark.slow
def test_a_runs_own_memory_does_not_grow_with_the_corpus(tmp_path):
    """RssAnon (the process's own memory, not the file pages it maps) of a short training run
    on 40 MB against the same run on 4 MB: encoding, training and evaluation all stay within
    bounded buffers, so the two differ by far less than the 36 MB between the corpora."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    from charrnn.corpus import read_text

    text = read_text("shakespeare")
    growth = {}
    for megabytes in (4, 40):
        corpus = tmp_path / f"corpus-{megabytes}.txt"
        with open(corpus, "w", encoding="utf-8") as out:
            written = 0
            while written < megabytes * 1_000_000:
                out.write(text[: megabytes * 1_000_000 - written])
                written = out.tell()
        child = subprocess.run(
            [sys.executable, "-c", MEASURE_CHILD, str(corpus), str(tmp_path / f"run-{megabytes}")],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert child.returncode == 0, child.stderr[-2000:]
        growth[megabytes] = int(child.stdout.split()[-1])
    assert abs(growth[40] - growth[4]) < 6_000_000, growth
