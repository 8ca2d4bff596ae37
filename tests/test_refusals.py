"""Every refusal of `charrnn train`, through the real CLI: one line, exit 1, nothing touched.

Each row runs against a workspace holding runs: one killed in its first moments (config.toml
only, so `--out` may reuse it), one killed before its first periodic checkpoint (best.pt and
metrics.jsonl, no last.pt: no new run may write there), finished ones (which `--resume`
continues) and runs whose corpus changed since. Whatever is refused, every file of the
workspace must be byte for byte what it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from charrnn.machine import available_cores
from tests.conftest import TINY_FLAGS, run_cli


def workspace_state(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shakespeare_text) -> Path:
    root = tmp_path_factory.mktemp("refusals")
    (root / "corpus.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    (root / "other.txt").write_text(shakespeare_text[:20_000] + "ü", encoding="utf-8")
    (root / "edited.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    for name in ("done", "partial", "killed", "moved", "edited"):
        corpus = root / ({"moved": "other.txt", "edited": "edited.txt"}.get(name, "corpus.txt"))
        result = run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", root / name,
                         "--max-steps", 20, "--eval-every", 10)  # fmt: skip
        assert result.exit_code == 0, result.output
    # Killed in its first moments: only config.toml (and the lock file); --out may reuse it.
    for leftover in ("last.pt", "best.pt", "metrics.jsonl"):
        (root / "partial" / leftover).unlink()
    # Killed before its first periodic save: no last.pt, but another run's best.pt and metrics.
    (root / "killed" / "last.pt").unlink()
    # The corpus of "moved" changed since (a character more): resuming it must be refused.
    (root / "other.txt").write_text(shakespeare_text[:20_000] + "üß", encoding="utf-8")
    # The corpus of "edited" changed without a new character: its fingerprint tells.
    edited = shakespeare_text[:20_000].replace("Romeo", "Remoo", 1)
    assert edited != shakespeare_text[:20_000]
    (root / "edited.txt").write_text(edited, encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "latin1.txt").write_bytes("Fran\u00e7ais, na\u00efve".encode("latin-1") * 300)
    (root / "short.txt").write_text("To be, or not to be" * 3, encoding="utf-8")
    (root / "a-directory").mkdir()
    (root / "a-file").write_text("not a directory")
    configs = {
        "unknown-key": "[model]\nhiden_size = 64\n",
        "unknown-table": "[optimiser]\nlr = 1\n",
        "wrong-type": '[model]\nembedding_dim = "big"\n',
        "bool-for-int": "[model]\nnum_layers = true\n",
        "out-of-range": "[model]\ndropout = 1.0\n",
        "huge-float": "[train]\nlearning_rate = " + "9" * 400 + "\n",
        "huge-int": "[model]\nhidden_size = " + "9" * 5000 + "\n",
        "not-toml": "[model\nhidden_size = 3\n",
        "bidirectional": "[model]\nbidirectional = true\n",
        "no-corpus": "[train]\ncorpus = []\n",
    }
    for name, text in configs.items():
        (root / f"{name}.toml").write_text(text, encoding="utf-8")
    (root / "not-utf8.toml").write_bytes(b"[model]\n# \xff\xfe\n")
    return root


def new(*extra: str) -> list[str]:
    """A new run on the good corpus (unless `extra` names another: --corpus adds up) into the
    partial run's directory, then `extra` (later flags win). Configs below avoid the keys the
    tiny flags set, which would override them."""
    corpus = [] if "--corpus" in extra else ["--corpus", "{root}/corpus.txt"]
    return [*TINY_FLAGS, *corpus, "--out", "{root}/partial", *extra]


# (id, arguments after `charrnn train` with {root} the workspace, what the one line must say)
ROWS = [
    # Corpora.
    ("empty corpus", new("--corpus", "{root}/empty.txt"), "is empty"),
    ("missing corpus", new("--corpus", "{root}/nope.txt"), "neither a file nor a bundled"),
    ("folder without text", new("--corpus", "{root}/a-directory"), "has no text files to read"),
    ("a device as corpus", new("--corpus", "/dev/zero"), "character device, not a regular file"),
    ("invalid UTF-8", new("--corpus", "{root}/latin1.txt"), "not valid UTF-8: byte 4"),
    ("too short for one step", new("--corpus", "{root}/short.txt"), "too short for one step"),
    ("no validation text", new("--val-fraction", "0"), "validation split has 0"),
    ("an empty corpus name (it would read the current folder)", new("--corpus", ""),
     "corpus must not hold an empty name, got ''"),
    ("an empty corpus list", [*TINY_FLAGS, "--config", "{root}/no-corpus.toml", "--out",
                              "{root}/partial"], "corpus must name at least one"),
    # Config files.
    ("unknown config key", new("--config", "{root}/unknown-key.toml"), "unknown key 'hiden_size'"),
    ("unknown config table", new("--config", "{root}/unknown-table.toml"), "unknown table"),
    ("wrong type", new("--config", "{root}/wrong-type.toml"), "embedding_dim must be int"),
    ("bool for an int", new("--config", "{root}/bool-for-int.toml"), "num_layers must be int"),
    ("out of range", new("--config", "{root}/out-of-range.toml"), "dropout must be less than"),
    ("400-digit float", new("--config", "{root}/huge-float.toml"), "must be a finite"),
    ("5000-digit int", new("--config", "{root}/huge-int.toml"), "not valid TOML"),
    ("invalid TOML", new("--config", "{root}/not-toml.toml"), "not valid TOML"),
    ("config not UTF-8", new("--config", "{root}/not-utf8.toml"), "cannot read config"),
    ("missing config", new("--config", "{root}/nope.toml"), "neither a file nor a bundled"),
    ("bidirectional in a config", new("--config", "{root}/bidirectional.toml"),
     "bidirectional must be false"),
    # Flags.
    ("unknown cell", new("--cell", "transformer"), "cell must be one of"),
    ("unknown optimizer", new("--optimizer", "sgd"), "optimizer must be one of"),
    ("zero hidden size", new("--hidden-size", "0"), "hidden_size must be at least 1"),
    ("dropout above 1", new("--dropout", "1.5"), "dropout must be less than 1.0"),
    ("weight drop 1", new("--weight-drop", "1"), "weight_drop must be less than 1.0"),
    ("threads beyond 4 per core", new("--threads", str(4 * available_cores() + 1)),
     f"threads must be at most {4 * available_cores()} (4 x the"),
    ("NaN validation fraction", new("--val-fraction", "nan"), "val_fraction must be a finite"),
    ("no init timeout", new("--init-timeout", "0"), "--init-timeout must be a positive"),
    ("zero learning rate", new("--learning-rate", "0"), "learning_rate must be greater than 0"),
    ("infinite learning rate", new("--learning-rate", "inf"), "must be a finite number"),
    ("validation fraction 1", new("--val-fraction", "1"), "val_fraction must be less than"),
    ("negative steps", new("--max-steps", "-1"), "max_steps must be at least 0"),
    ("more steps than a run may record", new("--max-steps", str(10**15 + 1)),
     "max_steps must be at most 1000000000000000"),
    ("seed beyond 32 bits", new("--seed", str(2**40)), "seed must be at most"),
    ("fp16 on the CPU", new("--device", "cpu", "--precision", "fp16"), "fp16 autocast"),
    ("a model no memory holds", new("--hidden-size", str(10**13)), "cannot build the model"),
    ("run directory under a file", new("--out", "{root}/a-file/run"), "cannot write to the run"),
    # Runs that exist.
    ("--out of a finished run", new("--out", "{root}/done"), "already holds a run"),
    ("--out of a run killed before last.pt", new("--out", "{root}/killed"),
     "already holds a run (best.pt, metrics.jsonl); it never wrote last.pt"),
    ("resume a missing run", ["--resume", "{root}/nope"], "does not exist"),
    ("resume changing the model", ["--resume", "{root}/done", "--hidden-size", "64"],
     "cannot change hidden_size"),
    ("resume with --config", ["--resume", "{root}/done", "--config", "tiny"], "--config cannot"),
    ("resume elsewhere", ["--resume", "{root}/done", "--out", "{root}/elsewhere"], "--out cannot"),
    ("resume with bad run control", ["--resume", "{root}/done", "--eval-every", "-5"],
     "eval_every must be at least 0"),
    ("resume on an unknown device", ["--resume", "{root}/done", "--device", "tpu"],
     "device must be one of"),
    ("resume a changed corpus", ["--resume", "{root}/moved", "--max-steps", "40"],
     "outside the run's vocabulary ('ß')"),
    ("resume an edited corpus", ["--resume", "{root}/edited", "--max-steps", "40"],
     "is not the text the run was trained on (changed: "),
    # Both files exist: the message names which one the run read, not a "gone" file.
    ("resume with another text", ["--resume", "{root}/done", "--corpus", "{root}/edited.txt"],
     "is not the text the run was trained on (trained on, not given now: "),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_refusals_are_one_line_and_touch_nothing(workspace, args, message):
    args = [a.format(root=workspace) for a in args]
    before = workspace_state(workspace)
    result = run_cli("train", *args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == "" and "Traceback" not in result.output
    assert workspace_state(workspace) == before
    assert not (workspace / "elsewhere").exists()
