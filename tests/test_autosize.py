"""auto_size: the rule (with a stand-in timer), the timing itself, and `charrnn train` with it."""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import sys
from dataclasses import astuple, replace
from types import SimpleNamespace

import pytest
import torch

from charrnn import autosize, config, devices
from charrnn import checkpoint as ckpt
from charrnn import train as train_module
from charrnn.autosize import Candidate, regularisation
from charrnn.train import Trainer
from tests.conftest import run_cli
from tests.test_distributed import TIMEOUT, child_env

VOCAB, TRAIN_CHARS = 65, 1_000_000
# Candidates small enough to time in a test; the real ladder is charrnn.autosize.LADDER.
SMALL_LADDER = (Candidate(16), Candidate(32), Candidate(48, learning_rate=1e-3))
FAST = ("--threads", "1", "--seq-length", "20", "--eval-every", "0")


@pytest.fixture
def small_ladder(monkeypatch):
    monkeypatch.setattr(autosize, "LADDER", SMALL_LADDER)


@pytest.fixture
def brief_fp32_timing(monkeypatch):
    """The real timer, briefly and in fp32 alone (as on a CPU without bf16 instructions): a
    test that is not about the precision then takes the same time on every CPU."""
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(autosize, "time_precisions",
                        functools.partial(autosize.time_precisions, min_seconds=0.05))  # fmt: skip


def configs(**train):
    model, base = config.resolve("default", {})
    return model, replace(base, **train)


def stand_in_timer(speed_times_weights: float, calls: list, fp32_speedup: float = 1.0):
    """A machine where a candidate's speed is inversely proportional to its weights, and fp32
    (amp None) runs `fp32_speedup` times as fast as bf16."""

    def timer(model_config, train_config, amps):
        calls.append((model_config.hidden_size, train_config.batch_size))
        speed = speed_times_weights / autosize.parameters_of(model_config, VOCAB)
        return tuple(speed * (fp32_speedup if amp is None else 1.0) for amp in amps)

    return timer


def per_weight(hidden: int, speed_times_weights: float, seconds: float) -> float:
    """What the rule computes for a rung, written out independently."""
    weights = 4 * hidden * (64 + hidden + 2) + VOCAB * 64 + hidden * VOCAB + VOCAB
    chars = speed_times_weights / weights * seconds * autosize.TRAINING_SHARE
    return chars / weights


# speed x weights: ~8e10 is the 2-core machine of benchmarks/NOTES.md at full speed (1x768)
@pytest.mark.parametrize("machine", [1e9, 3e10, 8e10, 3e11, 1e15])
def test_the_largest_rung_that_reads_enough_per_weight_is_chosen(machine):
    calls: list = []
    model, train = configs(max_time=600.0)
    sizing = autosize.size(model, train, frozenset(), VOCAB, TRAIN_CHARS,
                           stand_in_timer(machine, calls))  # fmt: skip
    fits = [c.hidden_size for c in autosize.LADDER
            if per_weight(c.hidden_size, machine, 600.0) >= autosize.CHARS_PER_WEIGHT]  # fmt: skip
    expected = fits[-1] if fits else autosize.LADDER[0].hidden_size
    assert sizing.model_config.hidden_size == expected
    assert sizing.chosen.chars_per_weight == pytest.approx(
        per_weight(expected, machine, 600.0),
        rel=1e-2,  # less the time spent choosing
    )
    # Timed smallest first, up to the first rung that reads too little, no further.
    timed = [hidden for hidden, _ in calls]
    ladder = [c.hidden_size for c in autosize.LADDER]
    assert timed == ladder[: min(len(fits) + 1, len(ladder))]
    assert sizing.train_config.auto_size is False  # a rerun of the saved config trains this
    # Below 1x768 (slower machines, too few steps at 64) the rungs train, and are timed, at 16.
    assert sizing.train_config.batch_size == (16 if expected < 768 else 64)
    assert all(batch == (16 if hidden < 768 else 64) for hidden, batch in calls)
    # ...at a higher rate (5e-3 won there); 3.5e-3 was tuned for 1x768 at 64.
    rates = {768: 3.5e-3, 1024: 2.5e-3, 1536: 2e-3}
    assert sizing.train_config.learning_rate == (5e-3 if expected < 768 else rates[expected])


# Probes of real runs on session 15's AMX Xeon (bf16, Tiny Shakespeare's 1,003,855 training
# characters), chars/s by hidden size. On 2 threads 1x1024 would read 3.1 characters per
# weight, where it trained to 1.4737 against 1x768's 1.4096; on 1 thread 1x768 would read 4.7,
# where 1x512 at batch 16 beat it by 0.015 (benchmarks/NOTES.md, "Sizing for the machine").
TWO_THREADS = {256: 110_215, 384: 66_824, 512: 35_673, 768: 34_393, 1024: 24_891, 1536: 6_000}
ONE_THREAD = {256: 80_372, 384: 38_589, 512: 20_997, 768: 21_612, 1024: 14_431, 1536: 3_000}


def probe(measured: dict[int, int]):
    """A timer that answers with a real probe's speeds."""
    return lambda model_config, train_config, amps: tuple(
        float(measured[model_config.hidden_size]) for _ in amps
    )


@pytest.mark.parametrize(
    ("measured", "chosen", "too_little"),
    [(TWO_THREADS, 768, (1024, 3.1)), (ONE_THREAD, 512, (768, 4.7))],
)
def test_measured_probes_choose_the_rung_that_won(measured, chosen, too_little):
    model, train = configs(max_time=600.0)
    sizing = autosize.size(model, train, frozenset(), VOCAB, 1_003_855, probe(measured))
    first_short = sizing.measured[-1]  # timing stops at the first rung that reads too little
    assert first_short.candidate.hidden_size == too_little[0]
    assert first_short.chars_per_weight == pytest.approx(too_little[1], abs=0.1)
    assert sizing.model_config.hidden_size == chosen
    assert sizing.train_config.batch_size == (16 if chosen < 768 else 64)


def test_with_averaged_weights_1x768_decays_to_a_higher_floor():
    timer = probe(TWO_THREADS)

    model, train = configs(max_time=600.0)
    assert train.ema > 0 and train.min_lr_fraction == 0.05  # the default config's
    sizing = autosize.size(model, train, frozenset(), VOCAB, 1_003_855, timer)
    assert sizing.model_config.hidden_size == 768
    assert sizing.train_config.min_lr_fraction == 0.2
    assert "; weights averaged, so the rate decays to 0.2 of its peak" in sizing.reason
    # Without the average the config's floor stays, and so does a floor that was given.
    plain = autosize.size(model, replace(train, ema=0.0), frozenset(), VOCAB, 1_003_855, timer)
    assert plain.train_config.min_lr_fraction == 0.05 and "averaged" not in plain.reason
    given = autosize.size(model, replace(train, min_lr_fraction=0.1),
                          frozenset({"min_lr_fraction"}), VOCAB, 1_003_855, timer)  # fmt: skip
    assert given.train_config.min_lr_fraction == 0.1
    # The batch-16 rungs were not screened with it: their floor is the config's.
    slow = autosize.size(model, train, frozenset(), VOCAB, 1_003_855, probe(ONE_THREAD))
    assert slow.model_config.hidden_size == 512 and slow.train_config.min_lr_fraction == 0.05


def test_every_rank_chooses_from_rank_0s_clock(monkeypatch):
    # A short budget, where the seconds already spent change how much the chosen rung reads
    # and so its regularisation. Rank 1's clock runs 3.5 s ahead at each reading; given
    # rank 0's readings it still comes to rank 0's choice, and times the same rungs (each
    # timing is a collective the ranks must all join).
    model, train = configs(max_time=4.0)
    machine, text = 4e9, 10_000  # the smallest rung, ~4 epochs: regularisation at half strength
    readings: list[float] = []  # rank 0's clock, as it shares it

    def rank_0_shares(compute):
        readings.append(compute())
        return readings[-1]

    rank_0 = autosize.size(model, train, frozenset(), VOCAB, text,
                           stand_in_timer(machine, calls_0 := []), rank_0_shares)  # fmt: skip
    assert len(readings) == len(calls_0) + 1  # before each timing, and the total
    clock_ahead = (3.5 * reading for reading in itertools.count())  # 3.5 s between readings
    monkeypatch.setattr(autosize, "time", SimpleNamespace(perf_counter=lambda: next(clock_ahead)))
    alone = autosize.size(model, train, frozenset(), VOCAB, text, stand_in_timer(machine, []))
    rank_1 = autosize.size(model, train, frozenset(), VOCAB, text,
                           stand_in_timer(machine, calls_1 := []),
                           lambda compute: readings.pop(0))  # fmt: skip
    assert calls_1 == calls_0 and not readings
    assert (rank_1.model_config, rank_1.train_config) == (rank_0.model_config, rank_0.train_config)
    assert rank_1.probe_seconds == rank_0.probe_seconds
    # The check has teeth: on its own clock, rank 1 would have chosen otherwise.
    assert (alone.model_config, alone.train_config) != (rank_0.model_config, rank_0.train_config)


def test_regularisation_grows_with_the_epochs_read():
    assert astuple(regularisation(0.3)) == astuple(regularisation(1.0)) == (0.0, 0.0, 0.0)
    assert astuple(regularisation(4.0)) == (0.07, 0.1, 0.15)  # half strength, rounded
    assert astuple(regularisation(16.0)) == astuple(regularisation(500.0)) == (0.15, 0.2, 0.3)
    strengths = [astuple(regularisation(e)) for e in (1, 2, 3, 5, 8, 12, 16)]
    assert strengths == sorted(strengths)


def test_the_chosen_rungs_epochs_set_its_regularisation():
    model, train = configs(max_time=600.0)
    sizing = autosize.size(model, train, frozenset(), VOCAB, 50_000, stand_in_timer(3e13, []))
    assert sizing.chosen.epochs > 16  # a small text read many times over: full strength
    assert (sizing.model_config.dropout, sizing.model_config.weight_drop) == (0.15, 0.2)
    assert sizing.train_config.weight_decay == 0.3
    assert "weight decay 0.3" in sizing.reason
    large = autosize.size(model, train, frozenset(), VOCAB, 10**10, stand_in_timer(3e13, []))
    assert large.chosen.epochs < 1
    assert (large.model_config.dropout, large.model_config.weight_drop) == (0.0, 0.0)
    assert large.train_config.weight_decay == 0.0


def test_no_rung_reads_enough_so_the_smallest_is_taken():
    calls: list = []
    model, train = configs(max_time=1.0)
    sizing = autosize.size(model, train, frozenset(), VOCAB, TRAIN_CHARS,
                           stand_in_timer(1e9, calls))  # fmt: skip
    assert sizing.model_config.hidden_size == autosize.LADDER[0].hidden_size
    assert len(calls) == 1
    assert "the smallest" in sizing.reason


def test_a_given_shape_is_kept_and_only_it_is_timed():
    calls: list = []
    model, train = configs(max_time=600.0)
    model = replace(model, hidden_size=100, num_layers=2)
    sizing = autosize.size(model, train, frozenset({"hidden_size"}), VOCAB, TRAIN_CHARS,
                           stand_in_timer(3e13, calls))  # fmt: skip
    assert calls == [(100, 64)]
    assert (sizing.model_config.hidden_size, sizing.model_config.num_layers) == (100, 2)
    assert "the shape was given" in sizing.reason
    assert sizing.model_config.dropout == regularisation(sizing.chosen.epochs).dropout


def test_given_batch_rate_and_regularisation_are_kept():
    calls: list = []
    model, train = configs(max_time=600.0, batch_size=16, learning_rate=1e-4, weight_decay=0.05)
    model = replace(model, dropout=0.45)
    given = frozenset({"batch_size", "learning_rate", "dropout", "weight_decay"})
    sizing = autosize.size(model, train, given, VOCAB, TRAIN_CHARS, stand_in_timer(3e13, calls))
    assert {batch for _, batch in calls} == {16}  # timed at the batch it will train with
    assert sizing.train_config.batch_size == 16
    assert sizing.train_config.learning_rate == 1e-4
    assert sizing.model_config.dropout == 0.45
    assert sizing.train_config.weight_decay == 0.05
    assert sizing.model_config.weight_drop == regularisation(sizing.chosen.epochs).weight_drop


@pytest.mark.parametrize(
    ("fp32_speedup", "faster", "said"),
    [(1.3, "fp32", "fp32, 1.30x bf16"), (0.6, "bf16", "bf16, 1.67x fp32")],
)
def test_with_two_precisions_each_rung_is_timed_in_both_and_trains_in_the_faster(
    fp32_speedup, faster, said
):
    model, train = configs(max_time=600.0)
    both = (torch.bfloat16, None)
    sizing = autosize.size(model, train, frozenset(), VOCAB, TRAIN_CHARS,
                           stand_in_timer(8e10, [], fp32_speedup), amps=both)  # fmt: skip
    assert sizing.amp == (None if faster == "fp32" else torch.bfloat16)
    assert sizing.train_config.precision == faster  # saved by name: a rerun trains in it
    assert all(m.precision.name == faster for m in sizing.measured)
    assert all(set(m.precision.speeds) == {"bf16", "fp32"} for m in sizing.measured)
    assert sizing.chosen.chars_per_second == sizing.chosen.precision.speeds[faster]
    assert sizing.reason.endswith(f"; in {said}")
    # A rung reads what its faster precision reads: against bf16 alone, 1.3x or the same.
    bf16 = stand_in_timer(8e10, [], fp32_speedup)
    alone = autosize.size(model, train, frozenset(), VOCAB, TRAIN_CHARS, bf16,
                          amps=(torch.bfloat16,))  # fmt: skip
    assert alone.train_config.precision == "auto"  # one precision: nothing chosen, kept as given
    ratio = sizing.measured[0].chars / alone.measured[0].chars
    assert ratio == pytest.approx(max(fp32_speedup, 1.0), rel=1e-3)


def test_a_budget_in_steps_or_epochs_needs_no_timing():
    def never(model_config, train_config, amps):
        raise AssertionError("timed a candidate the budget did not need")

    model, train = configs(max_time=0.0, max_steps=3000)
    sizing = autosize.size(model, train, frozenset(), VOCAB, TRAIN_CHARS, never)
    assert sizing.chosen.chars == 3000 * 64 * 100
    assert sizing.chosen.chars_per_second is None
    by_epochs = autosize.size(model, replace(train, max_steps=0, max_epochs=2.0), frozenset(),
                              VOCAB, TRAIN_CHARS, never)  # fmt: skip
    assert by_epochs.chosen.chars == 2 * TRAIN_CHARS


def test_timing_leaves_the_seeded_random_stream_alone():
    model, train = configs(batch_size=4, seq_length=10)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    speeds = autosize.time_precisions(replace(model, hidden_size=16), train, VOCAB,
                                      torch.device("cpu"), (torch.bfloat16, None),
                                      min_seconds=0.05)  # fmt: skip
    assert len(speeds) == 2 and all(speed > 0 for speed in speeds)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_sized_run_trains_the_same_weights_as_its_choice_given_outright(
    small_ladder, tmp_path, corpus_file
):
    # A constant rate: the schedule then does not follow the clock, so both runs take the very
    # same steps; only the timing could tell them apart, by drawing from the seeded stream.
    settings = dict(corpus=(str(corpus_file),), threads=1, seq_length=20, eval_every=0,
                    max_steps=6, max_time=1000.0, lr_schedule="constant", warmup_steps=0,
                    precision="fp32")  # fmt: skip
    model, train = configs(**settings)
    sized = Trainer(model, train, tmp_path / "sized")
    assert sized.sizing is not None and sized.progress.seconds >= sized.sizing.probe_seconds
    sized.run()
    outright = Trainer(sized.model_config, sized.config, tmp_path / "outright")
    assert outright.sizing is None
    outright.run()
    a = ckpt.load(tmp_path / "sized" / "last.pt")["model"]
    b = ckpt.load(tmp_path / "outright" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_timed_shape_gives_its_memory_back(
    small_ladder, brief_fp32_timing, monkeypatch, tmp_path, corpus_file
):
    released = []
    monkeypatch.setattr(train_module, "release_freed_memory", lambda: released.append(True))
    model, train = configs(corpus=(str(corpus_file),), threads=1, seq_length=20, max_time=1000.0)
    sized = Trainer(model, train, tmp_path / "sized")
    assert len(sized.sizing.measured) > 1
    assert len(released) == len(sized.sizing.measured)  # once after each shape it timed


def test_dry_run_shows_the_choice_and_writes_nothing(
    small_ladder, brief_fp32_timing, tmp_path, corpus_file
):
    out = tmp_path / "run"
    result = run_cli("train", *FAST, "--corpus", corpus_file, "--max-time", 30, "--out", out,
                     "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "auto_size (timed in" in result.stderr
    assert "auto_size: 1x" in result.stderr and "chosen" in result.stderr
    assert f"dry run: nothing trained, nothing written to {out};" in result.stderr
    assert not out.exists()


def test_the_run_saves_its_choice_and_rerunning_its_config_trains_it(
    small_ladder, brief_fp32_timing, tmp_path, corpus_file
):
    run = tmp_path / "run"
    result = run_cli("train", *FAST, "--corpus", corpus_file, "--max-time", 2, "--out", run)
    assert result.exit_code == 0, result.output
    saved = (run / "config.toml").read_text()
    assert saved.startswith("# auto_size chose: 1x")
    assert "auto_size = false" in saved
    checkpoint = ckpt.load(run / "last.pt")
    model, train = config.resolve(str(run / "config.toml"), {})
    assert config.to_dict(model) == checkpoint["model_config"]
    assert config.to_dict(train) == checkpoint["train_config"]
    assert model.hidden_size in {c.hidden_size for c in SMALL_LADDER}
    again = run_cli("train", "--config", run / "config.toml", "--out", tmp_path / "again",
                    "--dry-run")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "auto_size:" not in again.stderr  # nothing to choose: the same model again


def test_a_shape_given_as_a_flag_wins(small_ladder, brief_fp32_timing, tmp_path, corpus_file):
    result = run_cli("train", *FAST, "--corpus", corpus_file, "--max-time", 30,
                     "--hidden-size", 24, "--dropout", 0.05, "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "auto_size: 1x24: the shape was given" in result.stderr
    assert "dropout 0.05" in result.stderr


def test_with_every_choice_given_nothing_is_timed(
    small_ladder, brief_fp32_timing, tmp_path, corpus_file
):
    result = run_cli("train", *FAST, "--corpus", corpus_file, "--max-time", 30, "--hidden-size",
                     24, "--num-layers", 1, "--batch-size", 8, "--lr", 0.01, "--dropout", 0,
                     "--weight-drop", 0, "--weight-decay", 0, "--min-lr-fraction", 0.05,
                     "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "auto_size (timed" not in result.stderr and "auto_size:" not in result.stderr


def test_off_it_times_nothing(small_ladder, brief_fp32_timing, tmp_path, corpus_file):
    result = run_cli("train", *FAST, "--corpus", corpus_file, "--max-time", 30,
                     "--no-auto-size", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "auto_size (timed" not in result.stderr and "auto_size:" not in result.stderr


@pytest.fixture
def fp32_times_faster(monkeypatch):
    """A CPU with bf16 instructions on which fp32 times 1.3x as fast (a stand-in timing);
    returns the precisions each timing was asked for."""
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    asked: list = []

    def time_precisions(model_config, train_config, vocab_size, device, amps):
        asked.append(amps)
        return tuple(1000.0 * (1.3 if amp is None else 1.0) for amp in amps)

    monkeypatch.setattr(autosize, "time_precisions", time_precisions)
    return asked


SHAPE = ("--hidden-size", 16, "--batch-size", 4, "--no-auto-size")


def test_a_run_with_a_time_limit_trains_in_the_precision_that_timed_faster(
    fp32_times_faster, tmp_path, corpus_file
):
    run = tmp_path / "run"
    result = run_cli("train", *FAST, *SHAPE, "--corpus", corpus_file, "--max-time", 30,
                     "--max-steps", 3, "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert fp32_times_faster == [(torch.bfloat16, None)]  # timed once, both precisions
    assert ("precision: fp32, 1.30x bf16, as timed here (1,000 chars/s in bf16, 1,300 in fp32)"
            in result.stderr)  # fmt: skip
    # Saved by name, so a rerun or a resume trains in it without timing again.
    assert 'precision = "fp32"' in (run / "config.toml").read_text()
    checkpoint = ckpt.load(run / "last.pt")
    assert checkpoint["train_config"]["precision"] == "fp32"
    assert checkpoint["progress"]["best_precision"] in (None, "fp32")
    resumed = run_cli("train", "--resume", run, "--max-steps", 5)
    assert resumed.exit_code == 0, resumed.output
    assert len(fp32_times_faster) == 1 and "precision: " not in resumed.stderr
    # `charrnn eval --precision auto` scores as the run trained (fp32), not as the CPU's bf16
    # instructions would have it.
    losses = {}
    for precision in ("auto", "fp32", "bf16"):
        scored = run_cli("eval", run, "--corpus", corpus_file, "--split", "val", "--precision",
                         precision, "--json")  # fmt: skip
        assert scored.exit_code == 0, scored.output
        losses[precision] = json.loads(scored.stdout)["loss"]
    assert losses["auto"] == losses["fp32"] != losses["bf16"]


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-time", 0, "--max-steps", 3),
        ("--max-time", 30, "--max-steps", 3, "--precision", "bf16"),
    ],  # fmt: skip
    ids=["bounded-by-steps", "precision-given"],
)
def test_a_run_bounded_by_steps_or_with_a_precision_given_times_none(
    fp32_times_faster, tmp_path, corpus_file, flags
):
    run = tmp_path / "run"
    result = run_cli("train", *FAST, *SHAPE, "--corpus", corpus_file, *flags, "--out", run)
    assert result.exit_code == 0, result.output
    assert fp32_times_faster == [] and "precision: " not in result.stderr
    assert ckpt.load(run / "last.pt")["train_config"]["precision"] in ("auto", "bf16")


def test_auto_size_shows_the_precision_each_rung_timed_faster_in(
    fp32_times_faster, small_ladder, tmp_path, corpus_file
):
    result = run_cli("train", *FAST, "--corpus", corpus_file, "--max-time", 30, "--dry-run")
    assert result.exit_code == 0, result.output
    assert all(amps == (torch.bfloat16, None) for amps in fp32_times_faster)
    assert len(fp32_times_faster) >= 1
    assert " precision " in result.stderr.splitlines()[1]  # the table's column
    assert " epochs; in fp32, 1.30x bf16\n" in result.stderr  # the reason line
    assert "precision         fp32" in result.stderr  # the settings table: what it will train in


@pytest.mark.slow
def test_two_processes_take_rank_0s_choice(tmp_path, corpus_file):
    # The real ladder: on this small text and a 3 s budget the smallest rung is taken after
    # timing it; every rank must come to the same settings (the run refuses otherwise).
    run = tmp_path / "run"
    command = [sys.executable, "-m", "charrnn", "train", "--nproc", "2", "--corpus",
               str(corpus_file), "--max-time", "3", "--out", str(run),
               "--eval-every", "0"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=child_env(),
                            timeout=TIMEOUT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("auto_size: 1x") == 1  # rank 0 speaks for both
    assert f"hidden_size = {autosize.LADDER[0].hidden_size}" in (run / "config.toml").read_text()
