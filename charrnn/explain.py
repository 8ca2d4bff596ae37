"""What a model makes of a text, character by character: its surprise at each one, one unit's
gates (an LSTM's, a GRU's) or hidden state (a plain RNN's) along the way, and the units that
follow a simple pattern of the text. (Its loss over the whole text is
``charrnn.scoring.score``, what ``charrnn eval`` prints.)

A text is read (``scoring.read``) from a zero state, left to right, one character after
another. Characters the model never saw cannot be fed to it: they are refused by name, or
(``skip_unknown``) left out of what the model reads, so the characters after them are predicted
as if they were not there; they are still shown, unscored.

Gates come from ``GateLSTM.forward_with_gates``; a model trained with torch's nn.LSTM core has
its weights loaded into a GateLSTM (same names, shapes and gate order), which computes the same
numbers gate by gate. The names a user picks are the lesson's (see cells.py)::

    learn   -> "ignore"   i, the learn gate's ignore factor in [0, 1]: how much of the new
                          candidate N gets into the long-term memory (the gate's output is N * i;
                          i is shown because it is the learn gate's decision, in [0, 1] like f, o)
    ignore  -> "ignore"   the same i, by the lesson's name for the factor
    combine -> "combine"  N = tanh(...) in [-1, 1], the learn gate's new candidate memory
    learnt  -> "learnt"   N * i in [-1, 1], the learn gate's output: what is added to c
    forget  -> "forget"   f in [0, 1]: how much of the long-term memory is kept
    kept    -> "kept"     c_{t-1} * f, the forget gate's output: what is kept of c
    remember -> "cell"    the remember gate's output is the new long-term memory c_t (below)
    use     -> "use"      o in [0, 1]: how much of the long-term memory becomes the output
    cell    -> "cell"     c_t, the long-term memory itself (unbounded)
    hidden  -> "hidden"   h_t = o * tanh(c_t) in [-1, 1], the short-term memory and output

torch's names (input, candidate, output gate) are refused with the lesson's name to use instead,
so that "output" is not mistaken for the hidden state (the output) or the use gate.

A GRU's gates come from ``GateGRU.forward_with_gates`` the same way (an nn.GRU's weights loaded
into it), by cells.py's names: reset r and update z in [0, 1], the candidate n and the hidden
state h_t (its one memory) in [-1, 1]. A plain RNN has no gates: its hidden state is shown
(``hidden``, every layer's), through ``StepRNN`` the same way.

Interpretable units (Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent
Networks", 2015): a unit "follows" a pattern when its activity after each character correlates
with a simple property of the text there (inside quotes, just read a newline, position in the
line). The ranking uses Pearson's correlation, so a unit that is low inside quotes counts too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from charrnn import scoring
from charrnn.cells import LSTM_GATE_KEYS, GateGRU, GateLSTM, StepRNN
from charrnn.corpus import Vocabulary, describe_char
from charrnn.errors import ConfigError, CorpusError
from charrnn.model import CharModel
from charrnn.scoring import Reading, bits_per_char, char_loss, evaluation_mode

# The name a user gives -> the key the gate-level twin records (cells.LSTM_GATE_KEYS or
# GRU_GATE_KEYS), for each family of cell (cell_kinds' `gates`). An LSTM's are the lesson's.
GATES = {
    "lstm": {"learn": "ignore", "ignore": "ignore", "combine": "combine", "learnt": "learnt",
             "forget": "forget", "kept": "kept", "remember": "cell", "use": "use",
             "cell": "cell", "hidden": "hidden"},
    # The lesson calls a GRU's reset gate its "combine" gate (an LSTM's combine is N).
    "gru": {"reset": "reset", "combine": "reset", "update": "update", "candidate": "candidate",
            "hidden": "hidden"},
    "rnn": {"hidden": "hidden"},  # no gates: its memory alone, fed back beside each input
}  # fmt: skip
DEFAULT_GATES = {"lstm": "cell", "gru": "hidden", "rnn": "hidden"}  # each family's memory
# The step-level core that records a family's gates (a plain RNN's: every layer's hidden state).
TWINS = {"lstm": GateLSTM, "gru": GateGRU, "rnn": StepRNN}
# A view's title, by the name asked for (a GRU's own where the same name means another gate).
GATE_TITLES = {
    "learn": "learn gate (its ignore factor i)",
    "ignore": "learn gate's ignore factor i",
    "combine": "learn gate's combine vector N (the new candidate memory)",
    "learnt": "learn gate's output N * i (what is added to the cell state)",
    "forget": "forget gate (forget factor f)",
    "kept": "forget gate's output c_{t-1} * f (what is kept of the cell state)",
    "remember": "remember gate (its output: the cell state c_t)",
    "use": "use gate (use factor o)",
    "cell": "cell",
    "hidden": "hidden",
    "reset": "reset gate r (how much of the memory the candidate sees)",
    "update": "update gate z (how much of the old memory is kept)",
    "candidate": "candidate n (the new memory the update gate blends in)",
}
GRU_TITLES = {"combine": "reset gate r, the lesson's combine gate (how much of the memory the "
              "candidate sees)"}  # fmt: skip
# torch's names for the same gates: "output" could be read as the hidden state, so these are
# refused with the lesson's name rather than guessed.
TORCH_GATES = {"input": "learn", "candidate": "combine", "output": "use"}
PATTERNS = ("quotes", "newline", "line-position")
QUOTE_MARKS = {'"': None, "\u201c": True, "\u201d": False}  # None: opens or closes (toggles)


# --------------------------------------------------------------------------- one value per char


@dataclass(frozen=True)
class Scale:
    """How a value becomes a colour: white at `low` to red at `high`, or (diverging) blue at
    `low`, white in the middle, red at `high`. Values outside are clipped."""

    low: float
    high: float
    diverging: bool = False

    def rgb(self, value: float) -> tuple[int, int, int]:
        share = (value - self.low) / (self.high - self.low) if self.high > self.low else 0.5
        share = min(max(share, 0.0), 1.0)
        if self.diverging:
            strength, colour = abs(2 * share - 1), RED if share >= 0.5 else BLUE
        else:
            strength, colour = share, RED
        return tuple(round(255 + (c - 255) * strength) for c in colour)  # type: ignore[return-value]


RED, BLUE = (214, 39, 40), (31, 119, 180)


@dataclass(frozen=True)
class CharValues:
    """One value per character of the text (None: not scored), a note on each, and a scale."""

    text: str
    values: list[float | None]
    notes: list[str]
    scale: Scale
    title: str  # what the values are, e.g. "surprise (nats)" or "layer 0 unit 3: forget gate"
    # Why a character has no value: the surprise's first one and unknown ones are "not scored";
    # a gate view has a value for every character it read, so its gaps are "not read".
    missing: str = "not read"

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "text": self.text,
            "chars": list(self.text),
            "values": self.values,
            "notes": self.notes,
            "scale": {"low": self.scale.low, "high": self.scale.high},
        }


CHUNK_BYTES = 32 << 20  # activations of one pass of the model


def chunk_length(model: CharModel, gates: bool = False) -> int:
    """Characters the model reads per pass: as many as fit in CHUNK_BYTES, so the memory of a
    pass does not grow with the text (the state carries over from one chunk to the next)."""
    per_char = scoring.pass_bytes(model, 1)
    if gates:  # and every recorded gate of every unit (fp32), for each character
        per_char += 4 * len(LSTM_GATE_KEYS) * model.config.hidden_size * model.config.num_layers
    return max(16, min(4096, CHUNK_BYTES // per_char))


def surprise(model: CharModel, vocab: Vocabulary, reading: Reading) -> CharValues:
    """The model's loss on each character given the ones before it (nats). The first character
    read has nothing before it, so it is not scored; nor are skipped unknown characters."""
    ids = reading.ids.long()  # (N,)
    losses, best, best_log_prob = [], [], []
    step, state = chunk_length(model), None
    with evaluation_mode(model):
        for start in range(0, len(ids) - 1, step):  # position t predicts character t + 1
            targets = ids[start + 1 : start + step + 1].unsqueeze(0)  # (1, n)
            logits, state = model(ids[start : start + targets.shape[1]].unsqueeze(0), state)
            losses.append(char_loss(logits, targets, reduction="none"))  # (n,)
            # The character the model expected most, and how sure it was.
            most, expected = torch.log_softmax(logits[0].float(), dim=-1).max(dim=-1)
            best_log_prob.append(most)
            best.append(expected)
    losses_list, best_list, log_probs = (torch.cat(parts).tolist() if parts else []
                                         for parts in (losses, best, best_log_prob))  # fmt: skip
    values: list[float | None] = [None] * len(reading.text)
    notes = ["not in the model's vocabulary: not read, not scored"] * len(reading.text)
    positions = reading.positions.tolist()
    notes[positions[0]] = "first character: nothing before it to predict it"
    for k, position in enumerate(positions[1:]):
        loss = losses_list[k]
        values[position] = loss
        notes[position] = (
            f"{describe_char(reading.text[position])}: {loss:.2f} nats "
            f"({bits_per_char(loss):.2f} bits, p={math.exp(-loss):.2f}); most expected "
            f"{describe_char(vocab.chars[best_list[k]])} (p={math.exp(log_probs[k]):.2f})"
        )
    # Full red at the loss of a uniform guess over the vocabulary: anything that surprising
    # means the model learnt nothing that helps here.
    return CharValues(reading.text, values, notes, Scale(0.0, math.log(len(vocab))),
                      "surprise (nats per character)", missing="not scored")  # fmt: skip


def gate_chunks(model: CharModel, reading: Reading) -> Iterator[dict[str, torch.Tensor]]:
    """Every gate of every unit, a chunk of characters at a time: key (as in
    cells.LSTM_GATE_KEYS or GRU_GATE_KEYS) -> (num_layers, n, hidden_size). The state carries
    over from chunk to chunk, so memory stays that of one chunk however long the text.

    A plain RNN has no gates: its chunks hold its hidden state alone.
    """
    core, twin_class = model.core, TWINS[gate_family(model)]
    if not isinstance(core, twin_class):
        # torch's fused nn.LSTM, nn.GRU and nn.RNN do not expose their gates (nn.RNN not even
        # every layer's hidden state); the twin takes their weights (same names and shapes).
        extra = {"nonlinearity": core.nonlinearity} if twin_class is StepRNN else {}
        twin = twin_class(core.input_size, core.hidden_size, core.num_layers, core.bias,
                          batch_first=True, **extra)  # fmt: skip
        twin.load_state_dict(core.state_dict())
        core = twin.to(model.head.weight.device)
    ids, step, state = reading.ids.long(), chunk_length(model, gates=True), None
    with evaluation_mode(model):
        core.eval()
        for start in range(0, len(ids), step):
            inputs = model.encode_input(ids[start : start + step].unsqueeze(0))  # (1, n, E)
            _, state, gates = core.forward_with_gates(inputs, state)  # each (L, 1, n, H)
            yield {key: value[:, 0] for key, value in gates.items()}


def gate_activity(model: CharModel, reading: Reading) -> dict[str, torch.Tensor]:
    """Every gate of every unit after each character read: key -> (num_layers, N, hidden_size).

    Keys as in cells.LSTM_GATE_KEYS or GRU_GATE_KEYS. Memory grows with the text: the
    commands use ``gate_chunks``, which keeps one chunk at a time.
    """
    chunks = list(gate_chunks(model, reading))
    return {key: torch.cat([chunk[key] for chunk in chunks], dim=1) for key in chunks[0]}


def gate_family(model: CharModel) -> str:
    """What explain can show of the model: an "lstm"'s or a "gru"'s gates, an "rnn"'s hidden
    state (cell_kinds)."""
    return model.kind.gates


def default_gate(model: CharModel) -> str:
    """The gate shown when none is named: the model's memory (cell for an LSTM, else hidden)."""
    return DEFAULT_GATES[gate_family(model)]


def check_gate_name(gate: str) -> None:
    """Refuse, before a model is loaded, a gate name that no kind of cell has (whether this
    model's kind has it, and torch's names, are `gate_name`'s to say once it is known)."""
    if gate not in TORCH_GATES and not any(gate in names for names in GATES.values()):
        known = "; ".join(
            f"{family.upper()}: {', '.join(names)}" for family, names in GATES.items()
        )
        raise ConfigError(f"gate must be one of an LSTM's or a GRU's ({known}); got {gate!r}")


def gate_name(gate: str, family: str) -> str:
    """The key the twin records for a user's gate name: one of GATES[family]."""
    names = GATES[family]
    if gate in names:
        return names[gate]
    hint = ""
    if family == "lstm" and gate in TORCH_GATES:
        lesson = TORCH_GATES[gate]
        hint = f" (torch's {gate} gate is the {GATE_TITLES[lesson]}: use --gate {lesson})"
    elif family == "gru" and gate in GATES["lstm"]:
        hint = (" (an LSTM's gate: a GRU's update gate does the work of the learn and forget "
                "gates, and its hidden state is its only memory)")  # fmt: skip
    elif family == "lstm" and gate in GATES["gru"]:
        hint = " (a GRU's gate)"
    elif family == "rnn":
        hint = (" (a plain RNN has no gates: it feeds its hidden state back beside each input, "
                "and --gate hidden shows it)")  # fmt: skip
    raise ConfigError(
        f"gate must be one of {', '.join(names)} for this {family.upper()}; got {gate!r}{hint}"
    )


def check_unit(model: CharModel, layer: int, unit: int) -> None:
    """Refuse a layer or unit the model does not have."""
    layers, units = model.config.num_layers, model.config.hidden_size
    if not 0 <= layer < layers:
        raise ConfigError(f"layer must be 0 to {layers - 1} (the model has {layers}), got {layer}")
    if not 0 <= unit < units:
        raise ConfigError(f"unit must be 0 to {units - 1} (a layer has {units}), got {unit}")


def unit_trace(model: CharModel, reading: Reading, gate: str, layer: int, unit: int) -> CharValues:
    """One unit's gate value (or cell / hidden state) after each character it read."""
    key = gate_name(gate, gate_family(model))
    check_unit(model, layer, unit)
    trace = torch.cat([chunk[key][layer, :, unit] for chunk in gate_chunks(model, reading)])
    titles = GATE_TITLES | (GRU_TITLES if gate_family(model) == "gru" else {})
    title = f"layer {layer} unit {unit}: {titles[gate]}"
    # A relu RNN's hidden state is unbounded above, like the cell state.
    relu = model.config.cell == "rnn" and model.config.nonlinearity == "relu"
    unbounded = key in ("cell", "kept") or (relu and key == "hidden")
    return _values_at(reading, trace.tolist(), title, key, unbounded)


def _values_at(
    reading: Reading, trace: list[float], title: str, key: str, unbounded: bool
) -> CharValues:
    values: list[float | None] = [None] * len(reading.text)
    notes = ["not in the model's vocabulary: not read"] * len(reading.text)
    for position, value in zip(reading.positions.tolist(), trace, strict=True):
        values[position] = value
        notes[position] = f"{describe_char(reading.text[position])}: {value:.3f}"
    return CharValues(reading.text, values, notes, gate_scale(key, trace, unbounded), title)


def gate_scale(key: str, trace: list[float], unbounded: bool) -> Scale:
    """The colours of a gate's values: its function's range, or this text's reach."""
    if unbounded:  # a symmetric scale wide enough for this text
        reach = max((abs(v) for v in trace), default=1.0) or 1.0
        return Scale(-reach, reach, diverging=True)
    if key in ("hidden", "combine", "learnt", "candidate"):  # tanh's range (times [0, 1])
        return Scale(-1.0, 1.0, diverging=True)
    return Scale(0.0, 1.0)  # the gates' sigmoid factors


# `--show gates`: one unit's step, every gate of it, in the order the lesson computes them, by
# family: (the lesson's name, the key the twin records).
STEP_COLUMNS = {
    "lstm": (("learn", "ignore"), ("combine", "combine"), ("learnt", "learnt"),
             ("forget", "forget"), ("kept", "kept"), ("remember", "cell"), ("use", "use"),
             ("hidden", "hidden")),
    "gru": (("reset", "reset"), ("update", "update"), ("candidate", "candidate"),
            ("hidden", "hidden")),
    "rnn": (("hidden", "hidden"),),
}  # fmt: skip
STEP_EQUATIONS = {
    "lstm": "learnt = learn x combine; kept = forget x the last remember; remember = kept + "
    "learnt (the cell state); hidden = use x tanh(remember)",
    "gru": "hidden = (1 - update) x candidate + update x the last hidden; the candidate sees "
    "reset x the last hidden",
    "rnn": "hidden = tanh(W x input + U x the last hidden + b)",
    "rnn-relu": "hidden = relu(W x input + U x the last hidden + b)",
}


@dataclass(frozen=True)
class UnitSteps:
    """Every gate of one unit after each character read: the lesson's step, a row a
    character. `columns`: the lesson's name -> one value per character read."""

    layer: int
    unit: int
    family: str
    equations: str
    chars: list[str]  # every character of the text
    columns: dict[str, list[float | None]]  # None: a character the model never saw, not read
    scales: dict[str, Scale]

    @property
    def title(self) -> str:
        what = "its hidden state" if self.family == "rnn" else "every gate of its step"
        return f"layer {self.layer} unit {self.unit}: {what}"

    def to_json(self) -> dict:
        return {"title": self.title, "layer": self.layer, "unit": self.unit,
                "cell": self.family, "equations": self.equations, "chars": self.chars,
                "gates": self.columns}  # fmt: skip


def unit_steps(model: CharModel, reading: Reading, layer: int, unit: int) -> UnitSteps:
    """One unit's every gate (or a plain RNN's hidden state) after each character it read."""
    family = gate_family(model)
    check_unit(model, layer, unit)
    picked: dict[str, list[torch.Tensor]] = {name: [] for name, _ in STEP_COLUMNS[family]}
    for chunk in gate_chunks(model, reading):
        for name, key in STEP_COLUMNS[family]:
            picked[name].append(chunk[key][layer, :, unit])
    read = {name: torch.cat(parts).tolist() for name, parts in picked.items()}
    relu = model.config.cell == "rnn" and model.config.nonlinearity == "relu"
    scales = {
        name: gate_scale(key, read[name], key in ("cell", "kept") or (relu and key == "hidden"))
        for name, key in STEP_COLUMNS[family]
    }
    columns: dict[str, list[float | None]] = {}
    for name, values in read.items():
        columns[name] = [None] * len(reading.text)
        for position, value in zip(reading.positions.tolist(), values, strict=True):
            columns[name][position] = value
    equations = STEP_EQUATIONS["rnn-relu" if relu else family]
    return UnitSteps(layer, unit, family, equations, list(reading.text), columns, scales)


# --------------------------------------------------------------------------- interpretable units


def pattern_values(text: str, pattern: str) -> list[float]:
    """A simple property of the text after each character, as a number.

    quotes: 1 from an opening double quote up to (not including) its closing one, else 0;
    newline: 1 on a newline, else 0; line-position: characters since the last newline.
    """
    if pattern == "quotes":
        inside, values = False, []
        for char in text:
            if char in QUOTE_MARKS:
                opens = QUOTE_MARKS[char]
                inside = (not inside) if opens is None else opens
            values.append(1.0 if inside else 0.0)
        return values
    if pattern == "newline":
        return [1.0 if char == "\n" else 0.0 for char in text]
    if pattern == "line-position":
        position, values = 0, []
        for char in text:
            position = 0 if char == "\n" else position + 1
            values.append(float(position))
        return values
    raise ConfigError(f"pattern must be one of {', '.join(PATTERNS)}; got {pattern!r}")


@dataclass(frozen=True)
class UnitMatch:
    """A unit whose activity follows a pattern, and how closely (Pearson's r, -1 to 1)."""

    pattern: str
    gate: str
    layer: int
    unit: int
    correlation: float

    def to_json(self) -> dict:
        return {"pattern": self.pattern, "gate": self.gate, "layer": self.layer,
                "unit": self.unit, "correlation": self.correlation}  # fmt: skip


class Correlation:
    """Pearson's r of each unit's activity with a pattern, summed a chunk at a time (in float64,
    around the first chunk's means), so that memory does not grow with the text."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sums: list[torch.Tensor] = []  # a, a*a, a*p (per unit), p, p*p

    def add(self, activity: torch.Tensor, pattern: torch.Tensor) -> None:
        """activity (n, U), pattern (n,)."""
        a, p = activity.double(), pattern.double()
        if self.shift is None:
            self.shift = (a.mean(dim=0), p.mean())
        a, p = a - self.shift[0], p - self.shift[1]
        parts = [a.sum(dim=0), (a * a).sum(dim=0), (a * p[:, None]).sum(dim=0), p.sum(), p @ p]
        self.sums = [s + x for s, x in zip(self.sums, parts, strict=True)] if self.sums else parts
        self.count += len(p)

    def result(self) -> torch.Tensor:
        """r per unit; 0 where a unit never changes."""
        n, (a, aa, ap, p, pp) = self.count, self.sums
        spread = ((n * aa - a * a).clamp_min(0) * (n * pp - p * p).clamp_min(0)).sqrt()
        return torch.where(spread > 0, (n * ap - a * p) / spread.clamp_min(1e-300), 0.0)


def correlations(activity: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Pearson's r of each column of `activity` (N, U) with `pattern` (N,); 0 where a unit
    never changes."""
    total = Correlation()
    total.add(activity, pattern)
    return total.result()


def top_units(
    model: CharModel,
    reading: Reading,
    patterns: tuple[str, ...] = PATTERNS,
    gate: str | None = None,
    count: int = 5,
) -> dict[str, list[UnitMatch]]:
    """For each pattern, the `count` units whose `gate` activity follows it most closely.

    A pattern that does not vary over the text (no quotes in it, say) cannot be followed: it is
    left out, and refused when it was the only one asked for.
    """
    if count < 1:
        raise ConfigError(f"the number of units to list must be at least 1, got {count}")
    unknown = [pattern for pattern in patterns if pattern not in PATTERNS]
    if unknown:
        raise ConfigError(f"pattern must be one of {', '.join(PATTERNS)}; got {unknown[0]!r}")
    gate = default_gate(model) if gate is None else gate
    key, units = gate_name(gate, gate_family(model)), model.config.hidden_size
    values = {pattern: torch.tensor(pattern_values(reading.text, pattern))[reading.positions]
              for pattern in patterns}  # fmt: skip
    varying = [p for p, v in values.items() if len(v) >= 2 and not bool((v == v[0]).all())]
    if not varying:
        raise CorpusError(
            f"the text does not vary in {' or '.join(patterns)} (no quotes or no newlines in it?),"
            " so no unit can follow it; give a longer or more varied text"
        )
    sums, start = {pattern: Correlation() for pattern in varying}, 0
    for chunk in gate_chunks(model, reading):
        layers, steps, _ = chunk[key].shape
        per_unit = chunk[key].permute(1, 0, 2).reshape(steps, layers * units)  # (n, L*H)
        for pattern in varying:
            sums[pattern].add(per_unit, values[pattern][start : start + steps])
        start += steps
    matches: dict[str, list[UnitMatch]] = {}
    for pattern in varying:
        r = sums[pattern].result()
        best = r.abs().argsort(descending=True)[:count].tolist()
        matches[pattern] = [
            UnitMatch(pattern, gate, index // units, index % units, float(r[index]))
            for index in best
        ]
    return matches


def best_match(matches: dict[str, list[UnitMatch]]) -> UnitMatch:
    """The unit that follows its pattern most closely, of all patterns' best."""
    return max((found[0] for found in matches.values()), key=lambda m: abs(m.correlation))


# --------------------------------------------------------------------------- sharing as HTML

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
pre {{ font-family: ui-monospace, monospace; font-size: 15px; line-height: 1.5;
       white-space: pre-wrap; word-wrap: break-word; }}
pre span {{ color: #000; }}
.legend {{ display: inline-block; width: 16em; height: 1em; vertical-align: middle;
           background: linear-gradient(to right, {low_colour}, {mid_colour}, {high_colour}); }}
.key {{ margin: 1em 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{subtitle}</p>
<div class="key">{low} <div class="legend"></div> {high}; characters without colour are not
scored. Hover over a character for its value.</div>
<pre>{body}</pre>
</body>
</html>
"""


def to_html(view: CharValues, subtitle: str = "") -> str:
    """A self-contained page: one <span> per character, its value as the background colour and
    a tooltip (title), and the exact value in data-value."""
    spans = []
    for char, value, note in zip(view.text, view.values, view.notes, strict=True):
        # A newline gets a visible mark before the line break, so its colour can be seen.
        shown = html.escape("\u21b5\n" if char == "\n" else char)
        if value is None:
            spans.append(f'<span title="{html.escape(note)}">{shown}</span>')
        else:
            red, green, blue = view.scale.rgb(value)
            spans.append(
                f'<span style="background: rgb({red}, {green}, {blue})" data-value="{value:.6g}" '
                f'title="{html.escape(note)}">{shown}</span>'
            )
    scale = view.scale
    middle = (scale.low + scale.high) / 2
    return PAGE.format(
        title=html.escape(view.title),
        subtitle=html.escape(subtitle),
        low=f"{scale.low:.3g}",
        high=f"{scale.high:.3g}",
        low_colour="rgb({}, {}, {})".format(*scale.rgb(scale.low)),
        mid_colour="rgb({}, {}, {})".format(*scale.rgb(middle)),
        high_colour="rgb({}, {}, {})".format(*scale.rgb(scale.high)),
        body="".join(spans),
    )
