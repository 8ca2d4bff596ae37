"""`charrnn eval` and `charrnn explain`: losses, per-character surprise, gates, units, HTML."""

from __future__ import annotations

import json
import math
import shutil
from html.parser import HTMLParser

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn import explain, files, scoring
from charrnn.cells import GRU_GATE_KEYS, LSTM_GATE_KEYS
from charrnn.config import ModelConfig
from charrnn.corpus import read_start
from charrnn.errors import ConfigError, CorpusError, OutputError
from charrnn.model import CharModel
from charrnn.scoring import evaluate
from tests.conftest import TINY_FLAGS, run_cli

SCENE = "ROMEO:\nWhat light through yonder window breaks?\n\nJULIET:\nAy me!\n"


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return ckpt.restore_model(ckpt.load(tiny_run / "last.pt"))


def json_of(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- eval


def test_eval_on_the_val_split_matches_the_runs_own_evaluation(tiny_run):
    corpus = tiny_run.parent / "corpus.txt"
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    # At the precision training used (auto), the final evaluation is reproduced exactly.
    same = json_of(run_cli("eval", tiny_run / "last.pt", "--corpus", corpus, "--split", "val",
                           "--precision", "auto", "--json"))  # fmt: skip
    assert same["loss"] == pytest.approx(metrics[-1]["val_loss"], rel=1e-9)
    assert same["characters"] == int(len(corpus.read_text()) * 0.1) - 1
    assert (same["batch_size"], same["seq_length"]) == (4, 16)  # the run's, by default
    # best.pt (the run directory's default) scores the run's best val loss.
    best = json_of(run_cli("eval", tiny_run, "--corpus", corpus, "--split", "val",
                           "--precision", "auto", "--json"))  # fmt: skip
    assert best["loss"] == pytest.approx(min(line["val_loss"] for line in metrics), rel=1e-9)
    assert best["checkpoint"] == str(tiny_run / "best.pt")


def test_eval_json_agrees_with_evaluate_on_the_checkpoint(tiny_run, loaded):
    model, vocab = loaded
    text = SCENE * 20
    path = tiny_run.parent / "scene.txt"
    path.write_text(text, encoding="utf-8")
    result = json_of(run_cli("eval", tiny_run / "last.pt", "--corpus", path, "--json",
                             "--batch-size", 3, "--seq-length", 7))  # fmt: skip
    loss, count = evaluate(model, vocab.encode(text), 3, 7)
    assert result["loss"] == pytest.approx(loss, rel=1e-9)
    assert result["characters"] == count == len(text) - 1
    assert result["bpc"] == pytest.approx(loss / math.log(2))
    assert result["split"] == "all" and result["skipped"] == 0
    human = run_cli("eval", tiny_run / "last.pt", "--corpus", path, "-b", 3, "-s", 7)
    assert f"{loss:.4f} nats/char" in human.stdout
    per_row = (len(text) - 1) // 3
    assert result["rows"] == 3 and per_row >= 70  # long rows: no hint to read one row
    said = " ".join(human.stdout.split())
    assert f"3 row(s) of ~{per_row:,} characters, each read from a zero state" in said
    assert "--batch-size 1" not in said


def test_eval_says_when_its_rows_are_short(tiny_run):
    """A short text cut into the run's rows is read with little context: the output says how
    it was read, and how to read it as one row."""
    path = tiny_run.parent / "short.txt"
    path.write_text(SCENE[:40], encoding="utf-8")
    rows = run_cli("eval", tiny_run, "--corpus", path, "-b", 8, "-s", 16)
    said = " ".join(rows.stdout.split())
    assert "8 row(s) of ~4 characters" in said and "--batch-size 1 reads it as one row" in said
    one = run_cli("eval", tiny_run, "--corpus", path, "-b", 1, "-s", 16)
    assert "1 row(s) of ~39 characters" in " ".join(one.stdout.split())
    assert "--batch-size 1 reads" not in one.stdout


@pytest.mark.parametrize(
    ("split", "says"),
    [("all", "the text has 1 character(s)"), ("val", "the val split has 0 character(s)")],
)
def test_eval_of_a_text_too_short_to_score_says_which_part(tiny_run, split, says):
    path = tiny_run.parent / "one-character.txt"
    path.write_text("R", encoding="utf-8")
    refused = run_cli("eval", tiny_run, "--corpus", path, "--split", split)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == f"error: {says}; at least 2 are needed"


def test_eval_refuses_unknown_characters_unless_skipped(tiny_run, loaded):
    model, vocab = loaded
    path = tiny_run.parent / "accented.txt"
    path.write_text("ROMEO: café, naïve\n", encoding="utf-8")
    refused = run_cli("eval", tiny_run, "--corpus", path)
    assert refused.exit_code == 1
    assert "'é', 'ï'" in refused.stderr and "--skip-unknown" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    skipped = json_of(run_cli("eval", tiny_run / "last.pt", "--corpus", path, "--skip-unknown",
                              "--json", "-b", 1))  # fmt: skip
    assert skipped["skipped"] == 2
    loss, count = evaluate(model, vocab.encode("ROMEO: caf, nave\n"), 1, 16)
    assert skipped["characters"] == count and skipped["loss"] == pytest.approx(loss, rel=1e-9)


# --------------------------------------------------------------------------- surprise


def test_surprise_is_one_value_per_character_and_sums_to_the_loss(tiny_run, loaded):
    model, vocab = loaded
    view = json_of(run_cli("explain", tiny_run / "last.pt", "--text", SCENE, "--json"))
    assert view["chars"] == list(SCENE) and len(view["values"]) == len(SCENE)
    assert view["values"][0] is None  # nothing before the first character predicts it
    scored = view["values"][1:]
    assert all(value > 0 for value in scored)
    # Read as one row from a zero state, the mean surprise is the stateful loss of the text.
    loss, count = evaluate(model, vocab.encode(SCENE), 1, len(SCENE))
    assert count == len(scored)
    assert sum(scored) / count == pytest.approx(loss, rel=1e-5)


def test_surprise_shows_unknown_characters_unscored(tiny_run, loaded):
    model, vocab = loaded
    refused = run_cli("explain", tiny_run, "--text", "Ay mé!")
    assert refused.exit_code == 1 and "'é'" in refused.stderr
    view = json_of(run_cli("explain", tiny_run / "last.pt", "--text", "Ay mé!",
                           "--skip-unknown", "--json"))  # fmt: skip
    assert view["chars"] == list("Ay mé!") and view["values"][4] is None
    # The characters after it are read as if it were not there.
    plain = explain.surprise(model, vocab, scoring.read(vocab, "Ay m!"))
    assert view["values"][5] == pytest.approx(plain.values[4], rel=1e-6)
    assert view["values"][0] is plain.values[0] is None
    assert view["values"][1:4] == pytest.approx(plain.values[1:4], rel=1e-6)


# --------------------------------------------------------------------------- gates


def test_gate_values_are_in_0_1_and_cell_states_follow_the_forward_pass(loaded, monkeypatch):
    model, vocab = loaded
    reading = scoring.read(vocab, SCENE)
    gates = explain.gate_activity(model, reading)
    for key in ("ignore", "forget", "use"):
        assert gates[key].shape == (1, len(SCENE), 32)
        assert gates[key].min() >= 0 and gates[key].max() <= 1, key
    model.eval()
    with torch.no_grad():
        logits, (h_n, c_n) = model(reading.ids.long().unsqueeze(0))
        # The gate-level twin's memories are nn.LSTM's: the final states and every output.
        torch.testing.assert_close(gates["cell"][:, -1], c_n[:, 0])
        torch.testing.assert_close(gates["hidden"][:, -1], h_n[:, 0])
        torch.testing.assert_close(model.head(gates["hidden"][-1]), logits[0])
    # And obey the lesson's equations; each gate's output is there to see.
    before = torch.cat([torch.zeros(1, 1, 32), gates["cell"][:, :-1]], dim=1)
    torch.testing.assert_close(gates["kept"], before * gates["forget"])  # forget gate's output
    torch.testing.assert_close(gates["learnt"], gates["combine"] * gates["ignore"])  # learn's
    torch.testing.assert_close(gates["cell"], gates["kept"] + gates["learnt"])  # remember gate
    # Read a few characters at a time, the state (c_{t-1} too) carries over between chunks.
    monkeypatch.setattr(explain, "chunk_length", lambda *_, **__: 7)
    chunked = explain.gate_activity(model, reading)
    for key, value in gates.items():
        torch.testing.assert_close(chunked[key], value, msg=key)


@pytest.mark.parametrize("gate", ["learn", "forget", "use"])
def test_explain_gate_gives_one_value_in_0_1_per_character(tiny_run, loaded, gate):
    model, vocab = loaded
    view = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--show", "gate", "--gate", gate,
                           "--layer", 0, "--unit", 5, "--json"))  # fmt: skip
    assert len(view["values"]) == len(SCENE)
    assert all(0 <= value <= 1 for value in view["values"])
    key = explain.GATES["lstm"][gate]
    expected = explain.gate_activity(model, scoring.read(vocab, SCENE))[key][0, :, 5]
    assert view["values"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_show_gates_gives_one_units_whole_step_by_the_lessons_equations(tiny_run, loaded):
    model, vocab = loaded
    steps = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--show", "gates", "--unit", 5,
                            "--json"))  # fmt: skip
    assert steps["chars"] == list(SCENE) and (steps["layer"], steps["unit"]) == (0, 5)
    g = {name: torch.tensor(values) for name, values in steps["gates"].items()}
    assert list(g) == ["learn", "combine", "learnt", "forget", "kept", "remember", "use", "hidden"]
    torch.testing.assert_close(g["learnt"], g["learn"] * g["combine"])
    last = torch.cat([torch.zeros(1), g["remember"][:-1]])
    torch.testing.assert_close(g["kept"], g["forget"] * last)
    torch.testing.assert_close(g["remember"], g["kept"] + g["learnt"])
    torch.testing.assert_close(g["hidden"], g["use"] * torch.tanh(g["remember"]))
    activity = explain.gate_activity(model, scoring.read(vocab, SCENE))
    assert steps["gates"]["forget"] == pytest.approx(activity["forget"][0, :, 5].tolist(), abs=1e-6)


def test_show_gates_prints_a_row_a_character_and_the_equations(tiny_run):
    result = run_cli("explain", tiny_run, "--text", "ab c", "--show", "gates")
    assert result.exit_code == 0, result.output
    rows = result.stdout.strip().splitlines()
    assert rows[0].split() == ["char", "learn", "combine", "learnt", "forget", "kept", "remember",
                               "use", "hidden"]  # fmt: skip
    assert [row.split()[0] for row in rows[1:]] == ["a", "b", "\u2423", "c"]  # the space, seen
    assert all(len(row.split()) == 9 for row in rows[1:])
    assert "remember = kept + learnt" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--gate", "forget"), "--show gates shows every gate of the unit, so --gate would do"),
        (("--html", "x.html"), "--html draws one coloured view, and --show gates is a table"),
        (("--unit", 99), "unit must be 0 to 31"),
    ],
)
def test_show_gates_refuses_what_it_cannot_do(tiny_run, tmp_path, flags, message):
    result = run_cli("explain", tiny_run, "--text", "abc", "--show", "gates", *flags)
    assert result.exit_code == 1 and message in result.stderr
    assert not (tmp_path / "x.html").exists()


def test_show_gates_with_find_shows_the_best_units_step(tiny_run):
    found = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--find", "newline",
                            "--show", "gates", "--json"))  # fmt: skip
    best = max(found["units"], key=lambda unit: abs(unit["correlation"]))
    assert (found["layer"], found["unit"]) == (best["layer"], best["unit"])
    assert len(found["gates"]["remember"]) == len(SCENE)


def test_a_grus_and_a_plain_rnns_steps_are_their_own_gates():
    reading = scoring.Reading("abcdefgh", torch.tensor([1, 4, 2, 6, 0, 3, 3, 5]), torch.arange(8))
    torch.manual_seed(0)
    gru = CharModel(ModelConfig(cell="gru", hidden_size=8, embedding_dim=4), 7).eval()
    steps = explain.unit_steps(gru, reading, 0, 3)
    g = {name: torch.tensor(values) for name, values in steps.columns.items()}
    assert list(g) == ["reset", "update", "candidate", "hidden"]
    last = torch.cat([torch.zeros(1), g["hidden"][:-1]])
    torch.testing.assert_close(g["hidden"], (1 - g["update"]) * g["candidate"] + g["update"] * last)
    rnn = CharModel(ModelConfig(cell="rnn", hidden_size=8, embedding_dim=4), 7).eval()
    steps = explain.unit_steps(rnn, reading, 0, 1)
    assert list(steps.columns) == ["hidden"] and steps.title.endswith("its hidden state")
    assert steps.equations.startswith("hidden = tanh(")
    relu = CharModel(ModelConfig(cell="rnn", hidden_size=8, embedding_dim=4,
                                 nonlinearity="relu"), 7).eval()  # fmt: skip
    assert explain.unit_steps(relu, reading, 0, 1).equations.startswith("hidden = relu(")


def test_show_gates_keeps_a_row_for_a_character_it_did_not_read(tiny_run):
    result = run_cli("explain", tiny_run, "--text", "a\u2603b", "--show", "gates",
                     "--skip-unknown", "--json")  # fmt: skip
    steps = json_of(result)
    assert steps["chars"] == ["a", "\u2603", "b"]
    assert all(values[1] is None and None not in (values[0], values[2])
               for values in steps["gates"].values())  # fmt: skip
    table = run_cli("explain", tiny_run, "--text", "a\u2603b", "--show", "gates", "--skip-unknown")
    assert "never saw, not read" in table.stderr and "\u2603" in table.stdout


def test_gate_level_cores_give_their_own_gates_and_other_cores_are_refused():
    vocab_size, text_ids = 7, torch.tensor([1, 4, 2, 6, 0, 3])
    reading = scoring.Reading("abcdef", text_ids, torch.arange(6))
    peephole = CharModel(ModelConfig(cell="peephole-lstm", hidden_size=8, embedding_dim=4,
                                     num_layers=2), vocab_size)  # fmt: skip
    with torch.no_grad():
        peephole.core.weight_peep_l1.uniform_(-0.5, 0.5)
        _, (_, c_n) = peephole.eval()(text_ids.unsqueeze(0))
    gates = explain.gate_activity(peephole, reading)
    assert gates["cell"].shape == (2, 6, 8)
    torch.testing.assert_close(gates["cell"][:, -1], c_n[:, 0])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_a_plain_rnns_hidden_state_is_every_layers_own(nonlinearity, monkeypatch):
    """nn.RNN returns only its last layer's states; each layer's, run on its own, must be the
    one the stacked core computes: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""
    vocab_size, text_ids = 7, torch.tensor([1, 4, 2, 6, 0, 3, 3, 5])
    reading = scoring.Reading("abcdefgh", text_ids, torch.arange(8))
    torch.manual_seed(1)
    rnn = CharModel(ModelConfig(cell="rnn", hidden_size=8, embedding_dim=4, num_layers=2,
                                nonlinearity=nonlinearity, dropout=0.3), vocab_size)  # fmt: skip
    hidden = explain.gate_activity(rnn, reading)["hidden"]  # (2, 8, 8)
    with torch.no_grad():
        logits, (h_n,) = rnn.eval()(text_ids.unsqueeze(0))
        torch.testing.assert_close(hidden[:, -1], h_n[:, 0])  # both layers' last states
        torch.testing.assert_close(rnn.head(hidden[-1]), logits[0])  # the last layer's outputs
        core, x = rnn.core, rnn.encode_input(text_ids.unsqueeze(0))[0]
        act = torch.tanh if nonlinearity == "tanh" else torch.relu
        h = torch.zeros(8)
        for t in range(8):  # layer 0 by the lesson's equation
            h = act(core.weight_ih_l0 @ x[t] + core.bias_ih_l0 + core.weight_hh_l0 @ h
                    + core.bias_hh_l0)  # fmt: skip
            torch.testing.assert_close(hidden[0, t], h)
    monkeypatch.setattr(explain, "chunk_length", lambda *_, **__: 3)  # carried across chunks
    torch.testing.assert_close(explain.gate_activity(rnn, reading)["hidden"], hidden)
    assert explain.default_gate(rnn) == "hidden"
    scale = explain.unit_trace(rnn, reading, "hidden", 1, 2).scale
    reach = hidden[1, :, 2].abs().max().item() if nonlinearity == "relu" else 1.0  # relu: no top
    assert (scale.low, scale.high) == pytest.approx((-reach, reach))
    with pytest.raises(ConfigError, match="for this RNN; got 'forget' \\(a plain RNN has no gates"):
        explain.unit_trace(rnn, reading, "forget", 0, 0)


@pytest.mark.parametrize("cell", ["gru", "gate-gru"])
def test_a_grus_gates_follow_its_forward_pass_and_its_equations(cell, monkeypatch):
    vocab_size, text_ids = 7, torch.tensor([1, 4, 2, 6, 0, 3, 3, 5])
    reading = scoring.Reading("abcdefgh", text_ids, torch.arange(8))
    torch.manual_seed(0)
    gru = CharModel(ModelConfig(cell=cell, hidden_size=8, embedding_dim=4, num_layers=2),
                    vocab_size).eval()  # fmt: skip
    gates = explain.gate_activity(gru, reading)
    assert set(gates) == set(GRU_GATE_KEYS) and gates["hidden"].shape == (2, 8, 8)
    for key in ("reset", "update"):
        assert gates[key].min() >= 0 and gates[key].max() <= 1, key
    with torch.no_grad():
        logits, (h_n,) = gru(text_ids.unsqueeze(0))
    torch.testing.assert_close(gates["hidden"][:, -1], h_n[:, 0])  # the core's own memory
    torch.testing.assert_close(gru.head(gates["hidden"][-1]), logits[0])
    # h_t = (1 - z) * n + z * h_{t-1}: the update gate blends the old memory with the candidate.
    before = torch.cat([torch.zeros(2, 1, 8), gates["hidden"][:, :-1]], dim=1)
    blended = (1 - gates["update"]) * gates["candidate"] + gates["update"] * before
    torch.testing.assert_close(gates["hidden"], blended)
    # Read three characters at a time, the state carries over between chunks.
    monkeypatch.setattr(explain, "chunk_length", lambda *_, **__: 3)
    chunked = explain.gate_activity(gru, reading)
    for key, value in gates.items():
        torch.testing.assert_close(chunked[key], value, msg=key)
    view = explain.unit_trace(gru, reading, "update", 1, 3)
    assert view.values == pytest.approx(gates["update"][1, :, 3].tolist(), abs=1e-6)
    assert view.title == "layer 1 unit 3: update gate z (how much of the old memory is kept)"
    # The lesson's "combine" gate of a GRU is its reset gate (an LSTM's combine is N).
    combine = explain.unit_trace(gru, reading, "combine", 0, 2)
    assert combine.values == pytest.approx(gates["reset"][0, :, 2].tolist(), abs=1e-6)
    assert "reset gate r, the lesson's combine gate" in combine.title
    assert explain.default_gate(gru) == "hidden"
    refused = "combine, update, candidate, hidden for this GRU; got 'forget' \\(an LSTM's gate"
    with pytest.raises(ConfigError, match=refused):
        explain.unit_trace(gru, reading, "forget", 0, 0)


def test_explain_shows_a_trained_grus_gates_and_a_plain_rnns_hidden_state(tmp_path, corpus_file):
    runs = {}
    for cell in ("gru", "rnn"):
        runs[cell] = tmp_path / cell
        trained = run_cli("train", *TINY_FLAGS, "--cell", cell, "--corpus", corpus_file,
                          "--out", runs[cell], "--max-steps", 4)  # fmt: skip
        assert trained.exit_code == 0, trained.output
    memory = json_of(run_cli("explain", runs["gru"], "--text", SCENE, "--show", "gate", "--json"))
    assert memory["title"] == "layer 0 unit 0: hidden" and len(memory["values"]) == len(SCENE)
    found = json_of(run_cli("explain", runs["gru"], "--text", SCENE, "--find", "newline",
                            "--gate", "update", "--json"))  # fmt: skip
    assert {unit["gate"] for unit in found["units"]} == {"update"}
    assert all(0 <= value <= 1 for value in found["values"])
    one_line_refusal(run_cli("explain", runs["gru"], "--text", SCENE, "--show", "gate", "--gate",
                             "forget"), "for this GRU; got 'forget' (an LSTM's gate")  # fmt: skip
    # torch's LSTM names get the LSTM's hint only on an LSTM: a GRU's list is what helps here.
    output = run_cli("explain", runs["gru"], "--text", SCENE, "--show", "gate", "--gate", "output")
    refused = one_line_refusal(output, "candidate, hidden for this GRU; got 'output'")
    assert "--gate use" not in refused
    state = json_of(run_cli("explain", runs["rnn"], "--text", SCENE, "--show", "gate", "--json"))
    assert state["title"] == "layer 0 unit 0: hidden" and len(state["values"]) == len(SCENE)
    assert state["scale"] == {"low": -1.0, "high": 1.0}
    one_line_refusal(run_cli("explain", runs["rnn"], "--text", SCENE, "--show", "gate", "--gate",
                             "use"), "one of hidden for this RNN; got 'use'")  # fmt: skip


def test_the_legend_names_uncoloured_characters_only_where_there_are_some(tiny_run):
    surprise = run_cli("explain", tiny_run, "--text", SCENE)
    assert "(uncoloured: not scored)" in surprise.stderr  # the first character: nothing before
    gate = run_cli("explain", tiny_run, "--text", SCENE, "--show", "gate", "--gate", "forget")
    assert gate.exit_code == 0 and "forget gate" in gate.stderr
    assert "uncoloured" not in gate.stderr  # every character read has its gate value
    unseen = run_cli("explain", tiny_run, "--text", "Ay\u2603 me", "--show", "gate",
                     "--skip-unknown")  # fmt: skip
    assert unseen.exit_code == 0 and "(uncoloured: not read)" in unseen.stderr  # the snowman


def test_explain_refuses_bad_requests_with_one_line(tiny_run):
    for args, message in [
        (("--text", "Ay", "--file", "x.txt"), "exactly one of --text or --file"),
        (("--text", "Ay", "--show", "colour"), "--show must be surprise, gate or gates"),
        (("--text", "Ay", "--show", "gate", "--layer", 1), "layer must be 0 to 0"),
        (("--text", "Ay", "--show", "gate", "--unit", 32), "unit must be 0 to 31"),
        (("--text", "Ay", "--show", "gate", "--gate", "colour"), "gate must be one of"),
        (("--text", "Ay\nme", "--find", "quotes"), "does not vary in quotes"),
        (("--text", "Ay\nme", "--find", "vowels"), "pattern must be one of"),
        (("--text", "Ay", "--force"), "without --html it would do nothing"),
        (("--text", "Ay", "--gate", "colour"), "gate must be one of an LSTM's or a GRU's (LSTM: "),
    ]:
        result = run_cli("explain", tiny_run, *args)
        assert result.exit_code == 1, args
        assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def one_line_refusal(result, *parts: str) -> str:
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.output, result.output
    for part in parts:
        assert part in line, line
    return line


@pytest.mark.parametrize(
    "args",
    [
        ("--layer", 1),  # out of range, and would do nothing: refused either way
        ("--unit", 0),  # in range, but would do nothing
        ("--show", "surprise", "--layer", 0),
        ("--layer", 0, "--unit", 3),
    ],
)
def test_layer_and_unit_without_show_gate_are_refused(tiny_run, args):
    flags = " and ".join(str(a) for a in args if str(a) in ("--layer", "--unit"))
    one_line_refusal(
        run_cli("explain", tiny_run, "--text", SCENE, *args),
        f"without --show gate the view is the surprise at each character, so {flags} would do "
        f"nothing; add --show gate or leave out {flags}",
    )


def test_gate_is_checked_whenever_it_is_given(tiny_run):
    # A good name without --show gate or --find would do nothing; either of those is the fix.
    one_line_refusal(
        run_cli("explain", tiny_run, "--text", SCENE, "--gate", "forget"),
        "so --gate would do nothing; add --show gate or --find or leave out --gate",
    )
    # A bad name is refused as a bad name, whatever it is combined with.
    for extra in ((), ("--find", "newline"), ("--top-units", 2), ("--show", "gate")):
        one_line_refusal(run_cli("explain", tiny_run, "--text", SCENE, "--gate", "fogret", *extra),
                         "gate must be one of", "got 'fogret'")  # fmt: skip
    # With --find the gate is the one ranked, so it is used, not refused.
    found = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--find", "newline", "--gate",
                            "forget", "--json"))  # fmt: skip
    assert {u["gate"] for u in found["units"]} == {"forget"}
    assert found["title"].endswith(": forget gate (forget factor f)")


@pytest.mark.parametrize("picker", [("--find", "newline"), ("--top-units", 2)])
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--unit", 3), "--unit"),
        (("--layer", 0), "--layer"),
        (("--layer", 0, "--unit", 3), "--layer and --unit"),
        (("--show", "surprise"), "--show surprise"),
    ],
)
def test_find_and_top_units_refuse_the_options_they_would_override(tiny_run, picker, args, named):
    one_line_refusal(
        run_cli("explain", tiny_run, "--text", SCENE, *picker, *args),
        f"{picker[0]} picks its own units and shows the best one's gate, so {named} would do "
        f"nothing; leave out {picker[0]} or {named}",
    )


def test_find_with_show_gate_agrees_and_is_accepted(tiny_run):
    # --find shows a gate, so --show gate beside it asks for what is done anyway.
    both = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--find", "newline", "--show",
                           "gate", "--json"))  # fmt: skip
    alone = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--find", "newline", "--json"))
    assert both == alone and both["title"].endswith(": cell")


def test_gate_names_of_the_lesson(tiny_run, loaded):
    model, vocab = loaded
    gates = explain.gate_activity(model, scoring.read(vocab, SCENE))

    def view(gate):
        return json_of(run_cli("explain", tiny_run, "--text", SCENE, "--show", "gate", "--gate",
                               gate, "--unit", 5, "--json"))  # fmt: skip

    # The remember gate's output is the new long-term memory: the cell state.
    remember, cell = view("remember"), view("cell")
    assert remember["values"] == cell["values"]
    assert remember["values"] == pytest.approx(gates["cell"][0, :, 5].tolist(), abs=1e-6)
    assert remember["title"] == "layer 0 unit 5: remember gate (its output: the cell state c_t)"
    # The learn gate's candidate N (tanh: -1 to 1) is named combine, as in the lesson.
    combine = view("combine")
    assert combine["values"] == pytest.approx(gates["combine"][0, :, 5].tolist(), abs=1e-6)
    assert combine["scale"] == {"low": -1.0, "high": 1.0}
    assert "combine vector N" in combine["title"]
    # ignore is the learn gate's factor i, by the lesson's name for it.
    assert view("ignore")["values"] == view("learn")["values"]
    # Every recorded gate has a name, and so do the learn and forget gates' outputs.
    assert set(explain.GATES["lstm"].values()) == {*LSTM_GATE_KEYS, "kept", "learnt"}


@pytest.mark.parametrize(
    ("torch_name", "lesson_name"), [("input", "learn"), ("candidate", "combine"), ("output", "use")]
)
def test_torch_gate_names_are_refused_with_the_lessons_name(tiny_run, torch_name, lesson_name):
    one_line_refusal(run_cli("explain", tiny_run, "--text", SCENE, "--show", "gate", "--gate",
                             torch_name),  # fmt: skip
                     f"got {torch_name!r} (torch's {torch_name} gate is the ",
                     f": use --gate {lesson_name})")  # fmt: skip


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "run directory"])
def test_html_over_the_checkpoint_is_refused_even_with_force(tiny_run, tmp_path, monkeypatch, how):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "best.pt", run / "best.pt")  # a copy: the shared run stays whole
    before = (run / "best.pt").read_bytes()
    checkpoint, page = run / "best.pt", run / "best.pt"
    if how == "relative path":
        monkeypatch.chdir(run)
        page = "best.pt"
    elif how == "symlink":
        page = tmp_path / "view.html"
        page.symlink_to(run / "best.pt")
    elif how == "run directory":
        checkpoint = run
    result = run_cli("explain", checkpoint, "--text", "ROMEO:", "--html", page, "--force")
    one_line_refusal(result, f"--html {str(page)!r} is the checkpoint being read",
                     "name another file")  # fmt: skip
    assert (run / "best.pt").read_bytes() == before


def test_html_over_the_file_read_is_refused_even_with_force(tiny_run, tmp_path):
    scene = tmp_path / "scene.txt"
    scene.write_text(SCENE, encoding="utf-8")
    (tmp_path / "hard-link.txt").hardlink_to(scene)
    for page in (scene, tmp_path / "hard-link.txt", tmp_path / "." / "scene.txt"):
        result = run_cli("explain", tiny_run, "--file", scene, "--html", page, "--force")
        one_line_refusal(result, "is the --file text being read")
        assert scene.read_text(encoding="utf-8") == SCENE
    # Another file is still replaced with --force.
    other = tmp_path / "other.html"
    other.write_text("old")
    assert run_cli("explain", tiny_run, "--file", scene, "--html", other, "--force").exit_code == 0
    assert other.read_text().startswith("<!DOCTYPE html>")


def test_refuse_replacing_inputs_ignores_files_that_do_not_exist(tmp_path):
    # Nothing to replace yet: a new output is not refused, nor is a missing input.
    files.refuse_replacing_inputs(tmp_path / "new.html", "--html", {"x": tmp_path / "a.pt"})
    (tmp_path / "a.pt").write_bytes(b"x")
    with pytest.raises(OutputError, match="is x being read"):
        files.refuse_replacing_inputs(tmp_path / "a.pt", "--html", {"x": tmp_path / "a.pt"})


def test_explain_file_decodes_only_the_characters_shown(tiny_run, tmp_path):
    # A file much longer than --max-chars, whose tail is not UTF-8 at all: decoding the whole
    # file would refuse it, so this passing shows only the prefix is decoded.
    prefix = SCENE[:50]
    long = tmp_path / "long.txt"
    long.write_bytes(prefix.encode() + (SCENE * 5000).encode() + b"\xff\xfe not UTF-8")
    short = tmp_path / "short.txt"
    short.write_text(prefix, encoding="utf-8")
    from_long = run_cli("explain", tiny_run, "--file", long, "--max-chars", 50, "--json")
    assert json_of(from_long) == json_of(
        run_cli("explain", tiny_run, "--file", short, "--max-chars", 50, "--json")
    )
    # Past the characters shown they are counted, not decoded: each bad byte counts as one.
    total = 50 + len(SCENE) * 5000 + 2 + len(" not UTF-8")
    assert f"showing the first 50 of {total:,} characters (--max-chars)" in from_long.stderr
    # Bad bytes right after the characters shown, within the first bytes read, are not decoded.
    right_after = tmp_path / "right-after.txt"
    right_after.write_bytes(prefix.encode() + b"\xff" + SCENE.encode())
    assert json_of(run_cli("explain", tiny_run, "--file", right_after, "--max-chars", 50,
                           "--json"))["text"] == prefix  # fmt: skip
    # But bad bytes among them are refused, with their place in the file.
    refused = run_cli("explain", tiny_run, "--file", right_after, "--max-chars", 51)
    one_line_refusal(refused, "is not valid UTF-8: byte 50 (0xff) cannot be decoded")


@pytest.mark.parametrize("max_chars", [1, 2, 3, 5, 7, 8, 40, 1000])
def test_read_start_cuts_multibyte_text_at_characters(tmp_path, max_chars):
    # 1- to 4-byte characters, so the bytes read (4 per character shown) end inside one.
    text = "a\u00e9\u20ac\U0001d11e" * 9 + "\U0001d11e" * 5 + "z"
    path = tmp_path / "mixed.txt"
    path.write_text(text, encoding="utf-8")
    start = read_start(path, max_chars, "the text")
    assert start.text == text[:max_chars] and start.total_chars == len(text)
    # A file that ends inside a character is refused when that character would be shown.
    cut = tmp_path / "cut.txt"
    cut.write_bytes(text.encode()[:-2])  # "z" and the last byte of the last 4-byte character gone
    if max_chars < len(text) - 1:
        assert read_start(cut, max_chars, "the text").text == text[:max_chars]
    else:
        with pytest.raises(CorpusError, match="is not valid UTF-8"):
            read_start(cut, max_chars, "the text")


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        ("missing", "does not exist; give the path of a UTF-8 text file"),
        ("folder", "is a directory, not a regular file"),
        ("empty", "is empty; give a file with some text in it"),
        (
            "latin1",
            "is not valid UTF-8: byte 3 (0xe9) cannot be decoded; convert the file to UTF-8",
        ),
    ],
)
def test_explain_file_refusals_name_the_file_not_a_corpus(tmp_path, tiny_run, setup, says):
    path = tmp_path / "scene.txt"
    if setup == "folder":
        path.mkdir()
    elif setup == "empty":
        path.write_bytes(b"")
    elif setup == "latin1":
        path.write_bytes("café".encode("latin-1"))
    result = run_cli("explain", tiny_run, "--file", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: the text given with --file {str(path)!r} {says}"


def test_explain_file_is_a_path_not_a_bundled_corpus_name(tmp_path, tiny_run, monkeypatch):
    # A file called like the bundled corpus is that file (the corpus reader would take the
    # bundled one), and with no such file the name is refused rather than read as the corpus.
    monkeypatch.chdir(tmp_path)
    assert "does not exist" in run_cli("explain", tiny_run, "--file", "shakespeare").stderr
    (tmp_path / "shakespeare").write_text(SCENE, encoding="utf-8")
    assert json_of(run_cli("explain", tiny_run, "--file", "shakespeare", "--json"))["text"] == SCENE


def test_top_units_is_bounded_like_max_chars(tiny_run):
    # 0 used to fall back silently to the default of 5; it is refused as --max-chars 0 is.
    refused = run_cli("explain", tiny_run, "--text", SCENE, "--top-units", 0)
    assert refused.exit_code == 2 and "--top-units" in refused.stderr
    one = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--find", "newline",
                          "--top-units", 1, "--json"))  # fmt: skip
    assert len(one["units"]) == 1
    default = json_of(run_cli("explain", tiny_run, "--text", SCENE, "--find", "newline", "--json"))
    assert len(default["units"]) == 5


# --------------------------------------------------------------------------- interpretable units


def test_patterns_of_the_text():
    text = 'a "b c"\nde\n“f”'
    assert explain.pattern_values(text, "quotes") == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]
    assert explain.pattern_values(text, "newline") == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert explain.pattern_values(text, "line-position")[:10] == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2]


def test_correlations_find_a_planted_unit():
    pattern = torch.tensor([0.0, 1, 2, 0, 1, 2, 3])
    activity = torch.stack([torch.ones(7), -3 * pattern + 1, torch.tensor([1.0, 0, 1, 0, 1, 0, 1])],
                           dim=1)  # fmt: skip
    r = explain.correlations(activity, pattern)
    assert r[0] == 0  # a unit that never changes follows nothing
    assert r[1] == pytest.approx(-1.0)
    assert abs(r[2]) < 0.5


def test_top_units_are_ranked_by_how_closely_they_follow(tiny_run, loaded):
    model, vocab = loaded
    text = (tiny_run.parent / "corpus.txt").read_text()[:1500]
    excerpt = tiny_run.parent / "excerpt.txt"
    excerpt.write_text(text, encoding="utf-8")
    result = json_of(run_cli("explain", tiny_run, "--file", excerpt, "--find", "line-position",
                             "--top-units", 4, "--json"))  # fmt: skip
    units = result["units"]
    assert len(units) == 4 and {u["pattern"] for u in units} == {"line-position"}
    strengths = [abs(u["correlation"]) for u in units]
    assert strengths == sorted(strengths, reverse=True)
    # Each correlation is Pearson's r of that unit's cell state with the line position.
    cells = explain.gate_activity(model, scoring.read(vocab, text))["cell"][0]
    position = explain.pattern_values(text, "line-position")
    for u in units:
        trace = cells[:, u["unit"]].double()
        r = torch.corrcoef(torch.stack([trace, torch.tensor(position, dtype=torch.float64)]))
        assert u["correlation"] == pytest.approx(float(r[0, 1]), abs=1e-6)
    # The view shown is the best unit's cell state.
    assert result["title"] == f"layer 0 unit {units[0]['unit']}: cell"
    everything = json_of(run_cli("explain", tiny_run, "--text", text, "--top-units", 2, "--json"))
    assert {u["pattern"] for u in everything["units"]} == {"newline", "line-position"}


# --------------------------------------------------------------------------- HTML


class SpanReader(HTMLParser):
    """The spans inside <pre>: their text and attributes."""

    def __init__(self):
        super().__init__()
        self.in_pre, self.current, self.spans = False, None, []

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self.in_pre = True
        elif tag == "span" and self.in_pre:
            self.current = {"attrs": dict(attrs), "text": ""}

    def handle_endtag(self, tag):
        if tag == "pre":
            self.in_pre = False
        elif tag == "span" and self.current is not None:
            self.spans.append(self.current)
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.current["text"] += data


def test_html_view_has_one_span_per_character(tmp_path, tiny_run):
    text = SCENE + 'é & <b>"'
    page = tmp_path / "view.html"
    result = run_cli("explain", tiny_run, "--text", text, "--skip-unknown", "--html", page,
                     "--json")  # fmt: skip
    view = json_of(result)
    reader = SpanReader()
    reader.feed(page.read_text(encoding="utf-8"))
    reader.close()
    assert len(reader.spans) == len(text)
    for char, span, value in zip(text, reader.spans, view["values"], strict=True):
        assert span["text"] == ("↵\n" if char == "\n" else char)
        assert span["attrs"]["title"]
        if value is None:
            assert "style" not in span["attrs"]
        else:
            assert float(span["attrs"]["data-value"]) == pytest.approx(value, rel=1e-5)
            assert span["attrs"]["style"].startswith("background: rgb(")
    assert reader.spans[0]["attrs"]["title"].startswith("first character")


def test_scales_run_from_white_to_colour():
    sequential = explain.Scale(0.0, 2.0)
    assert sequential.rgb(0.0) == (255, 255, 255) and sequential.rgb(5.0) == explain.RED
    diverging = explain.Scale(-1.0, 1.0, diverging=True)
    assert diverging.rgb(0.0) == (255, 255, 255)
    assert diverging.rgb(-1.0) == explain.BLUE and diverging.rgb(1.0) == explain.RED


def test_reading_refuses_a_text_the_model_cannot_read_at_all(loaded):
    _, vocab = loaded
    with pytest.raises(CorpusError, match="no character"):
        scoring.read(vocab, "ééé", skip_unknown=True)
