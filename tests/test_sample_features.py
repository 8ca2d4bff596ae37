"""Sampling for people and scripts: stop strings, a prime file of any length, JSON lines.

Expected values are computed directly beside the code under test: the text cut at its first
stop string by plain `str.find`, the state after a prime by one forward pass over all of it,
the mean log-probability by the model reading prime and text in one pass.
"""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest
import torch

from charrnn import config, load_model, use_config
from charrnn.cli import settings
from charrnn.errors import ConfigError, CorpusError
from charrnn.model import CharModel
from charrnn.priming import PRIME_CHUNK, READ_BYTES, read_file
from tests.conftest import run_cli

PRIME = "ROMEO:\n"


@pytest.fixture(scope="module")
def generator(tiny_run):
    return load_model(str(tiny_run), device="cpu", int8=False)


def cut_at_first_stop(text: str, stops: list[str]) -> str:
    ends = [text.find(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


def new_text(generator, length=120, **options) -> list[str]:
    """The new text of each sample (every sample draws at every step, stopped or not, so a
    sample's text with stop strings is a prefix of the same sample's text without)."""
    texts = generator.generate(PRIME, length, **options)
    return [t[len(PRIME) :] for t in ([texts] if isinstance(texts, str) else texts)]


# ---------------------------------------------------------------------------- stop strings


def test_a_stop_string_ends_the_text_and_is_kept(generator):
    (free,) = new_text(generator, seed=5)
    stop = free[40:42]  # two characters the sample writes, somewhere after its start
    (stopped,) = new_text(generator, seed=5, stop=[stop])
    assert stopped == cut_at_first_stop(free, [stop])
    assert stopped.endswith(stop) and len(stopped) <= 42


def test_each_of_three_samples_stops_on_its_own(generator):
    free = new_text(generator, seed=8, num_samples=3)
    stops = [free[0][30:33], "e\n"]
    priming = generator.read_prime(PRIME)
    generation = generator.generation(priming.read(), 120, seed=8, num_samples=3, stop=stops)
    steps = sum(1 for _ in generation)
    samples = generation.samples()
    for sample, text in zip(samples, free, strict=True):
        assert sample.text == cut_at_first_stop(text, stops)
        assert sample.stopped == ("stop" if sample.text != text else "length")
    assert samples[0].stopped == "stop"
    assert len({len(s.text) for s in samples}) > 1  # they ended at different places
    assert steps == max(len(s.text) for s in samples)  # the batch ends with its last sample


def test_the_batch_ends_when_every_sample_has_stopped(generator):
    generation = generator.generation(generator.read_prime(PRIME).read(), 10_000, seed=1,
                                      num_samples=4, stop=["e", "a", "o", "\n"])  # fmt: skip
    steps = sum(1 for _ in generation)
    assert steps < 200 and all(s.stopped == "stop" for s in generation.samples())


def test_a_stop_string_is_looked_for_in_the_new_text_only(generator):
    (free,) = new_text(generator, seed=2, length=30)
    (stopped,) = new_text(generator, seed=2, length=30, stop=["ROMEO:"])  # in the prime only
    assert stopped == cut_at_first_stop(free, ["ROMEO:"])


def test_cli_stop_is_repeatable_and_keeps_the_stop(tiny_run, generator):
    (free,) = new_text(generator, seed=4, length=200)
    stops = [free[50:52], free[90:93]]
    result = run_cli("sample", tiny_run, "-p", PRIME, "-n", 200, "--seed", 4, "--exact",
                     "--stop", stops[0], "--stop", stops[1])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == PRIME + cut_at_first_stop(free, stops) + "\n"


def test_a_stop_string_the_model_can_never_write_gets_a_note(tiny_run, generator):
    never = next(chr(c) for c in range(0x4E00, 0x9FFF) if chr(c) not in generator.vocab)
    result = run_cli("sample", tiny_run, "-n", 20, "--seed", 4, "--stop", "x" + never,
                     "--stop", "e")  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: --stop {'x' + never!r} can never match: the model never writes {never!r}"
    ]  # fmt: skip  (the stop it can write gets no note)


def test_stop_is_declared_once_as_a_repeatable_sampling_setting():
    assert use_config.SampleConfig().stop == ()
    assert config.check_value("stop", ["a", "\n\n"], use_config.SampleConfig) == ("a", "\n\n")
    with pytest.raises(ConfigError, match="stop must be a list of str"):
        config.check_value("stop", "a", use_config.SampleConfig)
    with pytest.raises(ConfigError, match="stop must be str, got int 3"):
        config.check_value("stop", ["a", 3], use_config.SampleConfig)
    assert settings.as_flags({"stop": ("a", "b")}) == ["--stop", "a", "--stop", "b"]


# ---------------------------------------------------------------------------- prime files


def vocabulary_text(generator, chars: int, seed: int = 0) -> str:
    """Text of the model's own characters (generated quickly, not by the model)."""
    rng = random.Random(seed)
    return "".join(rng.choices(generator.vocab.chars, k=chars))


def test_a_prime_read_in_chunks_ends_where_one_pass_over_it_ends(generator):
    text = vocabulary_text(generator, 5_000)
    priming = generator.read_prime(text, chunk_chars=700)
    pieces = list(priming)
    assert "".join(pieces) == text and max(map(len, pieces)) == 700
    chunked = priming.context
    ids = torch.tensor([generator.vocab.chars.index(c) for c in text])
    with torch.no_grad():
        logits, state = generator.model(ids[None])  # the whole prime in one forward pass
    torch.testing.assert_close(chunked.logits, logits[:, -1], rtol=1e-4, atol=1e-4)
    for a, b in zip(chunked.state, state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def peak_while_priming(generator, path, chunk_chars: int) -> tuple[int, int]:
    """(Python's peak memory, the longest sequence given to the model) while reading a prime."""
    longest = [0]
    forward = CharModel.forward

    def spy(model, ids, state=None):
        longest[0] = max(longest[0], ids.shape[1])
        return forward(model, ids, state)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CharModel, "forward", spy)
        tracemalloc.start()
        try:
            generator.read_prime(path=path, chunk_chars=chunk_chars).read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak, longest[0]


def test_memory_does_not_grow_with_the_prime_file(generator, tmp_path):
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(vocabulary_text(generator, 40_000), encoding="utf-8")
    large.write_text(vocabulary_text(generator, 400_000), encoding="utf-8")
    small_peak, small_longest = peak_while_priming(generator, small, 4096)
    large_peak, large_longest = peak_while_priming(generator, large, 4096)
    assert small_longest == large_longest == 4096  # the model never sees more than a chunk
    # Ten times the text, about the same memory (what differs: a 64 KiB block read from the
    # file against the whole 40 kB one); the 400 kB file is never held whole.
    assert large_peak < small_peak + 100_000 and large_peak < 400_000, (small_peak, large_peak)


@pytest.mark.slow
def test_cli_two_megabyte_prime_file(tiny_run, generator, tmp_path):
    path, tenth = tmp_path / "prime.txt", tmp_path / "tenth.txt"
    path.write_text(vocabulary_text(generator, 2_000_000, seed=1), encoding="utf-8")
    tenth.write_text(vocabulary_text(generator, 200_000, seed=1), encoding="utf-8")
    peak, longest = peak_while_priming(generator, path, PRIME_CHUNK)
    tenth_peak, _ = peak_while_priming(generator, tenth, PRIME_CHUNK)
    assert longest == PRIME_CHUNK  # the model never reads more than a chunk at a time
    assert peak < tenth_peak + 100_000 and peak < 2_000_000, (tenth_peak, peak)
    result = run_cli("sample", tiny_run, "--prime-file", path, "--no-echo", "-n", 40,
                     "--seed", 3, "--exact")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 41 and result.stdout.endswith("\n")


def test_cli_prime_file_is_echoed_and_continued_like_the_same_prime(tiny_run, tmp_path):
    text = "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n" * 3
    path = tmp_path / "prime.txt"
    path.write_text(text, encoding="utf-8")
    from_file = run_cli("sample", tiny_run, "--prime-file", path, "-n", 60, "--seed", 6)
    from_text = run_cli("sample", tiny_run, "--prime", text, "-n", 60, "--seed", 6)
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == from_text.stdout and from_file.stdout.startswith(text)
    quiet = run_cli("sample", tiny_run, "--prime-file", path, "-n", 60, "--seed", 6, "--no-echo")
    assert text + quiet.stdout == from_file.stdout
    several = run_cli("sample", tiny_run, "--prime-file", path, "-n", 20, "-m", 2, "--seed", 1,
                      "--out-dir", tmp_path / "out")  # fmt: skip
    assert several.exit_code == 0, several.output
    out = tmp_path / "out"
    assert several.stderr.strip() == f"wrote {out / 'sample-1.txt'} .. sample-2.txt (seed 1)"
    assert several.stdout == ""
    for n in (1, 2):
        written = (tmp_path / "out" / f"sample-{n}.txt").read_text(encoding="utf-8")
        assert written.startswith(text) and len(written) == len(text) + 20


def test_a_file_is_decoded_across_block_boundaries_and_bad_bytes_are_located(tmp_path):
    text = "a" * (READ_BYTES - 1) + "東京" + "b" * 10  # 東 straddles the first block's end
    path = tmp_path / "prime.txt"
    path.write_text(text, encoding="utf-8")
    assert "".join(read_file(path)) == text
    path.write_bytes(b"x" * (READ_BYTES + 5) + b"\xff" + b"y")
    with pytest.raises(CorpusError, match=f"not valid UTF-8 at byte {READ_BYTES + 5}"):
        list(read_file(path))
    path.write_bytes("abc東".encode()[:-1])  # ends inside a character
    with pytest.raises(CorpusError, match="not valid UTF-8 at byte 3"):
        list(read_file(path))


# ---------------------------------------------------------------------------- JSON lines


def json_lines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def direct_mean_log_prob(generator, prime: str, text: str) -> float:
    """The model reads prime + text in one pass; the mean log-softmax of the text's characters."""
    index = {c: i for i, c in enumerate(generator.vocab.chars)}
    ids = torch.tensor([index[c] for c in prime + text])
    with torch.no_grad():
        logits, _ = generator.model(ids[None, :-1])
    log_probs = torch.log_softmax(logits[0].double(), dim=-1)
    new = range(len(prime) - 1, len(ids) - 1)  # the positions that predict the new characters
    return float(sum(log_probs[t, ids[t + 1]] for t in new) / len(text))


def test_json_has_every_field_and_only_json_on_stdout(tiny_run):
    lines = json_lines(run_cli("sample", tiny_run, "--json", "-m", 3, "-n", 50, "-p", PRIME,
                               "--seed", 12, "--stop", "e", "-t", 0.9))  # fmt: skip
    assert len(lines) == 3
    for line in lines:
        assert set(line) == {"text", "prime", "seed", "settings", "mean_log_prob", "stopped"}
        assert line["prime"] == PRIME and line["seed"] == 12
        assert line["stopped"] in ("stop", "length")
        assert line["text"].endswith("e") == (line["stopped"] == "stop")
        assert line["settings"] == {"length": 50, "temperature": 0.9, "top_k": 0, "top_p": 1.0,
                                    "greedy": False, "seed": 12, "num_samples": 3,
                                    "stop": ["e"], "int8": False,
                                    "sampler": "exact"}  # fmt: skip
    quiet = json_lines(run_cli("sample", tiny_run, "--json", "-n", 5, "--no-echo"))
    assert quiet[0]["prime"] is None and len(quiet[0]["text"]) == 5


def test_json_seed_reproduces_the_samples(tiny_run):
    first = json_lines(run_cli("sample", tiny_run, "--json", "-m", 2, "-n", 40))
    seed = first[0]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**63
    again = json_lines(run_cli("sample", tiny_run, "--json", "-m", 2, "-n", 40, "--seed", seed))
    assert [line["text"] for line in again] == [line["text"] for line in first]
    plain = run_cli("sample", tiny_run, "-n", 40, "--seed", seed, "-m", 2)
    assert first[1]["text"] in plain.stdout


def test_mean_log_prob_is_the_models_own_at_temperature_one(tiny_run, generator):
    lines = json_lines(run_cli("sample", tiny_run, "--json", "-m", 2, "-n", 80, "-p", PRIME,
                               "--seed", 3, "--temperature", 0.5, "--top-k", 5, "--exact",
                               "--stop", "\n\n"))  # fmt: skip
    for line in lines:
        expected = direct_mean_log_prob(generator, PRIME, line["text"])
        assert line["mean_log_prob"] == pytest.approx(expected, abs=1e-4)
    empty = json_lines(run_cli("sample", tiny_run, "--json", "-n", 0))
    assert empty[0]["mean_log_prob"] is None and empty[0]["text"] == ""


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "args, message",
    [
        (("--stop", ""), "a stop string cannot be empty"),
        (("--prime", "x", "--prime-file", "{tmp}/p.txt"), "give --prime or --prime-file, not both"),
        (("--prime-file", "{tmp}/missing.txt"), "cannot read the prime file"),
        (("--prime-file", "{tmp}"), "cannot read the prime file"),
        (("--prime-file", "{tmp}/bad.txt"), "is not valid UTF-8 at byte 3"),
        (("--prime-file", "{tmp}/empty.txt"), "is empty"),
        (("--prime-file", "{tmp}/unknown.txt"), "never saw: 'ü', 'ß'"),
        (("--json", "--out-dir", "{tmp}/out"), "--json writes to stdout; leave out --out-dir"),
        (("--interactive", "-m", "2"), "leave out --num-samples"),
        (("--interactive", "--json", "--prime", "x"), "leave out --prime, --json"),
        (
            ("--greedy", "-t", "0.5"),
            "--greedy always writes the most likely character, so "
            "--temperature would do nothing; leave out --greedy or --temperature",
        ),
        (("--top-p", "0.9", "--greedy", "--top-k", "3"), "so --top-k, --top-p would do nothing"),
        (("--greedy", "--seed", "3"), "so --seed would do nothing; leave out --greedy or --seed"),
        (("--greedy", "-m", "3"), "--greedy writes the same text every time, so --num-samples 3"),
        (("--force",), "without --out-dir it would do nothing; add --out-dir or leave out --force"),
        (
            ("--prime-file", "{tmp}/sample-2.txt", "-m", "2", "--out-dir", "{tmp}", "--force"),
            "--out-dir's '{tmp}/sample-2.txt' is the --prime-file being read",
        ),
    ],
)
def test_cli_refusals_are_one_line_and_exit_1(tiny_run, tmp_path, args, message):
    (tmp_path / "p.txt").write_text("ROMEO", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"abc\xffdef")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "unknown.txt").write_text("Grüße", encoding="utf-8")
    (tmp_path / "sample-2.txt").write_text("ROMEO", encoding="utf-8")
    result = run_cli("sample", tiny_run, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == 1, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.stderr and result.stdout == ""
    assert (tmp_path / "sample-2.txt").read_text(encoding="utf-8") == "ROMEO"  # never replaced
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
