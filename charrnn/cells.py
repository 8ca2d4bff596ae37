"""Gate-level LSTM and GRU, written in the lesson's terms and checked number for number
against torch.nn.LSTM / torch.nn.GRU.

The lesson's LSTM carries a long-term memory (the cell state ``c``) and a short-term memory
(the hidden state ``h``) and, at every step, takes an event (the input ``x_t``). All four gates
look at the short-term memory joined with the event, ``[h_{t-1}, x_t]``::

    lesson's gate    what it computes                                   torch.nn.LSTM
    -------------    ------------------------------------------------   -------------------
    learn gate       combine  N = tanh(W_n [h_{t-1}, x_t] + b_n)         g (cell gate)
                     ignore   i = sigmoid(W_i [h_{t-1}, x_t] + b_i)      i (input gate)
                     output   N * i
    forget gate      forget   f = sigmoid(W_f [h_{t-1}, x_t] + b_f)      f (forget gate)
                     output   c_{t-1} * f
    remember gate    c_t = c_{t-1} * f + N * i                           c_t (new cell state)
    use gate         use      o = sigmoid(W_o [h_{t-1}, x_t] + b_o)      o (output gate)
                     output   h_t = o * tanh(c_t)                        h_t (new hidden state)

(The lesson's prose says "tanh of the forget gate's output"; the standard LSTM and nn.LSTM take
tanh of the new long-term memory ``c_t``, and so do we.)

``W [h, x] + b`` is stored the way torch stores it: as ``W_ih x + b_ih + W_hh h + b_hh``, with
the four gates' rows stacked in torch's order i, f, g, o -- that is ignore, forget, combine,
use. ``weight_ih_l{k}`` is (4H, I), ``weight_hh_l{k}`` is (4H, H), ``bias_ih_l{k}`` and
``bias_hh_l{k}`` are (4H,), so ``GateLSTM.load_state_dict(nn.LSTM(...).state_dict())`` works
and gives the same outputs, final states and gradients.

Peepholes (the lesson's alternative, which nn.LSTM does not offer) let the long-term memory take
part in the gate decisions. They are diagonal (one weight per unit, as in Gers & Schmidhuber):
``weight_peep_l{k}`` is (3, H), row 0 for the ignore gate and row 1 for the forget gate (both see
``c_{t-1}``), row 2 for the use gate (it sees ``c_t``)::

    i = sigmoid(W_i [h_{t-1}, x_t] + b_i + p_i * c_{t-1})
    f = sigmoid(W_f [h_{t-1}, x_t] + b_f + p_f * c_{t-1})
    o = sigmoid(W_o [h_{t-1}, x_t] + b_o + p_o * c_t)

They start at zero, so a fresh peephole LSTM computes exactly what a plain one does.

The GRU merges the learn and forget gates into one update gate ``z``, adds a reset gate ``r``
that decides how much of the memory the candidate may see, and keeps a single working memory
``h`` instead of separate long- and short-term memories (torch's formula and r, z, n order)::

    r   = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z   = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n   = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

Speed: the input half ``W_ih x_t + b`` does not depend on the previous step, so each layer
computes it for the whole sequence in one matrix multiply; the time loop then does only the
recurrent ``h_{t-1} @ W_hh^T`` (one ``addmm``) and the element-wise gate math.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Over ~400 lines on purpose: the 50-line docstring above is the lesson's gate table, which the
# README's lesson-to-code table sends readers to; the code itself is about 410 lines.
__all__ = ["GRU_GATE_KEYS", "LSTM_GATE_KEYS", "GateGRU", "GateLSTM", "StepRNN"]

# Keys of the dict that GateLSTM.forward_with_gates returns, in the order _lstm_step yields them.
LSTM_GATE_KEYS = ("ignore", "combine", "learnt", "forget", "kept", "use", "cell", "hidden")
# Keys of the dict that GateGRU.forward_with_gates returns, in the order _gru_step yields them.
GRU_GATE_KEYS = ("reset", "update", "candidate", "hidden")


def _lstm_step(
    x_proj: Tensor, h: Tensor, c: Tensor, weight_hh_t: Tensor, peep: Tensor | None
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """One LSTM time step, gate by gate as the lesson draws it.

    Args:
        x_proj: ``W_ih x_t + b_ih + b_hh`` for this step, (B, 4H), rows in torch's i, f, g, o order.
        h: short-term memory ``h_{t-1}``, (B, H).
        c: long-term memory ``c_{t-1}``, (B, H).
        weight_hh_t: ``W_hh`` transposed, (H, 4H).
        peep: peephole weights (3, H) -- rows for ignore, forget, use -- or None.

    Returns:
        ``(h_t, c_t, (ignore, combine, learnt, forget, kept, use, c_t, h_t))``; the tuple is what
        ``forward_with_gates`` records (it costs nothing: the tensors exist anyway).
    """
    # W [h_{t-1}, x_t] + b for all four gates at once: the input half was precomputed for the
    # whole sequence, so only the recurrent half is multiplied here.
    gates = torch.addmm(x_proj, h, weight_hh_t)  # (B, 4H)
    # unsafe_chunk: plain views without the in-place-safety bookkeeping; nothing here is
    # modified in place, and this runs once per time step.
    pre_ignore, pre_forget, pre_combine, pre_use = gates.unsafe_chunk(4, 1)  # each (B, H)
    if peep is not None:
        # The ignore and forget gates peek at the old long-term memory c_{t-1}.
        pre_ignore = torch.addcmul(pre_ignore, peep[0], c)
        pre_forget = torch.addcmul(pre_forget, peep[1], c)

    # Learn gate: combine the short-term memory and the event into N, then ignore part of it.
    combine = torch.tanh(pre_combine)  # N, (B, H)
    ignore = torch.sigmoid(pre_ignore)  # i, (B, H)
    learnt = combine * ignore  # the learn gate's output, N * i

    # Forget gate: decide how much of the long-term memory to keep.
    forget = torch.sigmoid(pre_forget)  # f, (B, H)
    kept = c * forget  # the forget gate's output, c_{t-1} * f

    # Remember gate: the new long-term memory is what was kept plus what was learnt.
    remember = kept + learnt  # c_t, (B, H)

    # Use gate: the new short-term memory (and output) is a gated view of the new long-term one.
    pre_use = torch.addcmul(pre_use, peep[2], remember) if peep is not None else pre_use
    use = torch.sigmoid(pre_use)  # o, (B, H)
    hidden = use * torch.tanh(remember)  # h_t, (B, H)

    return hidden, remember, (ignore, combine, learnt, forget, kept, use, remember, hidden)


def _gru_step(
    x_proj: Tensor, h: Tensor, weight_hh_t: Tensor, bias_hh: Tensor | None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One GRU time step, gate by gate.

    The update gate z does the work of the LSTM's learn and forget gates together: it blends
    the old working memory with a candidate, keeping z of the old and learning 1 - z of the new.
    The reset gate r decides how much of the old memory the candidate gets to see.

    Args:
        x_proj: ``W_ih x_t + b_ih`` for this step, (B, 3H), rows in torch's r, z, n order.
        h: working memory ``h_{t-1}``, (B, H).
        weight_hh_t: ``W_hh`` transposed, (H, 3H).
        bias_hh: ``b_hh`` (3H,) or None. Not folded into ``x_proj`` because its n part sits
            inside the reset gate's product.

    Returns:
        ``(h_t, (reset, update, candidate, h_t))``.
    """
    h_proj = h @ weight_hh_t if bias_hh is None else torch.addmm(bias_hh, h, weight_hh_t)  # (B, 3H)
    x_reset, x_update, x_candidate = x_proj.unsafe_chunk(3, 1)  # each (B, H)
    h_reset, h_update, h_candidate = h_proj.unsafe_chunk(3, 1)  # each (B, H)

    reset = torch.sigmoid(x_reset + h_reset)  # r, (B, H)
    update = torch.sigmoid(x_update + h_update)  # z, (B, H)
    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): the reset gate scales the memory's part.
    candidate = torch.tanh(torch.addcmul(x_candidate, reset, h_candidate))  # n, (B, H)
    # (1 - z) * n + z * h_{t-1}, written as n + z * (h_{t-1} - n): the same value in one op
    # fewer, and the form ATen's own CPU GRU cell uses.
    hidden = candidate + update * (h - candidate)  # h_t, (B, H)

    return hidden, (reset, update, candidate, hidden)


class _GateRNNBase(nn.Module):
    """What GateLSTM and GateGRU share: torch's parameters, input and state handling,
    stacking of layers with dropout between them. Subclasses scan one layer over time."""

    gate_count: int  # gates stacked in the weights: 4 for the LSTM, 3 for the GRU
    state_count: int  # tensors in the recurrent state: 2 (h, c) for the LSTM, 1 for the GRU
    gate_keys: tuple[str, ...]  # what forward_with_gates records

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}"
            )
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            # Same warning as torch: dropout only acts between layers, so here it does nothing.
            warnings.warn(
                f"dropout={dropout} has no effect with num_layers=1: dropout is applied "
                "between recurrent layers, not after the last one",
                stacklevel=3,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)

        gate_size = self.gate_count * hidden_size
        # Registered layer by layer in torch's order, so state_dict keys line up with nn.LSTM's.
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(gate_size, layer_input_size))
            )
            self.register_parameter(
                f"weight_hh_l{layer}", nn.Parameter(torch.empty(gate_size, hidden_size))
            )
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(gate_size)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(gate_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's RNN init: every weight and bias uniform(-1/sqrt(H), 1/sqrt(H));
        peephole weights zero, so a peephole LSTM starts out as a plain one."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.startswith("weight_peep"):
                    param.zero_()
                else:
                    param.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text

    def _layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        weight_ih = getattr(self, f"weight_ih_l{layer}")
        weight_hh = getattr(self, f"weight_hh_l{layer}")
        if not self.bias:
            return weight_ih, weight_hh, None, None
        return (
            weight_ih,
            weight_hh,
            getattr(self, f"bias_ih_l{layer}"),
            getattr(self, f"bias_hh_l{layer}"),
        )

    def _scan_layer(
        self, layer: int, inputs: Tensor, state: tuple[Tensor, ...], record: list | None
    ) -> tuple[list[Tensor], tuple[Tensor, ...]]:
        """Run one layer over time: inputs (T, B, in) -> per-step outputs and final state.
        When ``record`` is a list, append each step's gate tuple to it."""
        raise NotImplementedError

    def _run(
        self, x: Tensor, hx: tuple[Tensor, ...] | None, record: bool
    ) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
        """The shared forward: normalise the layout, scan the layers, shape the results."""
        if x.dim() not in (2, 3):
            raise ValueError(f"expected a 2-D (unbatched) or 3-D input, got shape {tuple(x.shape)}")
        if x.size(-1) != self.input_size:
            raise ValueError(f"expected input of size {self.input_size}, got {x.size(-1)}")
        unbatched = x.dim() == 2
        # Work time-major inside: the loop walks dim 0, and x[t] is one step for the whole batch.
        if unbatched:
            x = x.unsqueeze(1)  # (T, 1, I)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I), a view
        states = self._initial_states(x, hx, unbatched)  # each (L, B, H)

        finals: list[tuple[Tensor, ...]] = []
        records: list[list[tuple[Tensor, ...]]] = []
        layer_input = x
        for layer in range(self.num_layers):
            record_steps: list | None = [] if record else None
            outputs, final = self._scan_layer(
                layer, layer_input, tuple(s[layer] for s in states), record_steps
            )
            finals.append(final)
            if record_steps is not None:
                records.append(record_steps)
            last = layer == self.num_layers - 1
            # The last layer is stacked straight into the caller's layout (no transpose copy).
            stack_dim = 1 if last and self.batch_first and not unbatched else 0
            layer_input = torch.stack(outputs, dim=stack_dim)  # (T, B, H) or (B, T, H)
            if not last and self.dropout > 0:
                # Between layers only, as torch does; F.dropout is the identity in eval mode.
                layer_input = F.dropout(layer_input, self.dropout, self.training)

        out = layer_input.squeeze(1) if unbatched else layer_input
        # finals[layer] is (h, c) or (h,); regroup into one (L, B, H) tensor per state.
        final_states = tuple(torch.stack(layers) for layers in zip(*finals, strict=True))
        if unbatched:
            final_states = tuple(s.squeeze(1) for s in final_states)  # (L, H)

        return out, final_states, self._gates(records, unbatched) if record else None

    def _initial_states(
        self, x: Tensor, hx: tuple[Tensor, ...] | None, unbatched: bool
    ) -> tuple[Tensor, ...]:
        """The given state, checked, or zeros; each (L, B, H) for the time-major input x."""
        expected = (self.num_layers, x.size(1), self.hidden_size)
        if hx is None:
            # new_zeros: the state follows the input's device and dtype.
            return tuple(x.new_zeros(expected) for _ in range(self.state_count))
        if not isinstance(hx, (tuple, list)) or len(hx) != self.state_count:
            raise ValueError(f"expected the state as {self.state_count} tensor(s)")
        wanted = (self.num_layers, self.hidden_size) if unbatched else expected
        for s in hx:
            if tuple(s.shape) != wanted:
                raise ValueError(f"expected state of shape {wanted}, got {tuple(s.shape)}")
        return tuple(s.unsqueeze(1) if unbatched else s for s in hx)

    def _gates(self, records: list[list[tuple[Tensor, ...]]], unbatched: bool) -> dict[str, Tensor]:
        """records[layer][t][k] is gate k at step t, (B, H); gathered into key -> (L, B, T, H)."""
        gates = {}
        for k, key in enumerate(self.gate_keys):
            value = torch.stack(
                [torch.stack([step[k] for step in steps], dim=1) for steps in records]
            )
            gates[key] = value.squeeze(1) if unbatched else value
        return gates


class GateLSTM(_GateRNNBase):
    """An LSTM written gate by gate (learn, forget, remember, use), a drop-in for nn.LSTM.

    Called like nn.LSTM: ``out, (h_n, c_n) = lstm(x, (h_0, c_0))``, the state optional (zeros).
    ``x`` is (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I); states are
    (num_layers, B, H), or (num_layers, H) for unbatched input; ``out`` is (T, B, H) or
    (B, T, H). Parameters have nn.LSTM's names, shapes, gate order and initialisation, so
    state dicts move between the two. Bidirectional and proj_size are not supported.

    Args:
        input_size: features per input step, I.
        hidden_size: units per layer, H.
        num_layers: stacked LSTM layers.
        bias: whether to use ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
        batch_first: input and output are (B, T, feature) instead of (T, B, feature).
        dropout: dropout probability on each layer's output except the last, in training.
        peephole: add diagonal peephole weights ``weight_peep_l{k}`` (3, H), zero at start.
    """

    gate_count = 4
    state_count = 2
    gate_keys = LSTM_GATE_KEYS

    def __init__(self, *args, peephole: bool = False, **kwargs) -> None:
        # The shared arguments are _GateRNNBase's (as nn.LSTM's); peephole is the LSTM's own.
        super().__init__(*args, **kwargs)
        self.peephole = peephole
        if peephole:
            for layer in range(self.num_layers):
                # Zero: a fresh peephole LSTM equals a plain one until training moves these.
                self.register_parameter(
                    f"weight_peep_l{layer}", nn.Parameter(torch.zeros(3, self.hidden_size))
                )

    def extra_repr(self) -> str:
        return super().extra_repr() + (", peephole=True" if self.peephole else "")

    def _scan_layer(
        self, layer: int, inputs: Tensor, state: tuple[Tensor, ...], record: list | None
    ) -> tuple[list[Tensor], tuple[Tensor, ...]]:
        weight_ih, weight_hh, bias_ih, bias_hh = self._layer_weights(layer)
        peep = getattr(self, f"weight_peep_l{layer}") if self.peephole else None
        # Both biases enter every gate the same way, so add them once, not once per step.
        bias = None if bias_ih is None else bias_ih + bias_hh  # (4H,)
        # The input half of W [h, x] + b for every step at once: one matrix multiply.
        x_proj = F.linear(inputs, weight_ih, bias)  # (T, B, 4H)
        weight_hh_t = weight_hh.t()  # (H, 4H), a view
        h, c = state  # (B, H) each
        outputs = []
        for x_proj_t in x_proj.unbind(0):  # (B, 4H) per step
            h, c, step_gates = _lstm_step(x_proj_t, h, c, weight_hh_t, peep)
            outputs.append(h)
            if record is not None:
                record.append(step_gates)
        return outputs, (h, c)

    def forward(
        self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``out, (h_n, c_n) = lstm(x, (h_0, c_0))``; see the class docstring for shapes."""
        out, (h_n, c_n), _ = self._run(x, hx, record=False)
        return out, (h_n, c_n)

    def forward_with_gates(
        self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor], dict[str, Tensor]]:
        """Like forward, and also every gate's activation at every step, for explanations.

        Returns ``(out, (h_n, c_n), gates)`` where ``gates`` maps "ignore" (i), "combine" (N),
        "learnt" (N * i), "forget" (f), "kept" (c_{t-1} * f), "use" (o), "cell" (c_t) and
        "hidden" (h_t) to tensors of shape
        (num_layers, B, T, H) -- batch-first whatever ``batch_first`` is, for analysis --
        or (num_layers, T, H) for unbatched input. It runs the same step code as forward.
        Slower and heavier than forward (it keeps every step); wrap it in ``torch.no_grad()``
        when only reading.
        """
        out, (h_n, c_n), gates = self._run(x, hx, record=True)
        return out, (h_n, c_n), gates


class GateGRU(_GateRNNBase):
    """A GRU written gate by gate (reset, update, candidate), a drop-in for nn.GRU.

    Called like nn.GRU: ``out, h_n = gru(x, h_0)``, the state optional (zeros). Shapes as for
    GateLSTM; parameters have nn.GRU's names, shapes (3H rows, in torch's r, z, n order) and
    initialisation. Bidirectional is not supported. Arguments as GateLSTM's (nn.GRU's), without
    peepholes.
    """

    gate_count = 3
    state_count = 1
    gate_keys = GRU_GATE_KEYS

    def _scan_layer(
        self, layer: int, inputs: Tensor, state: tuple[Tensor, ...], record: list | None
    ) -> tuple[list[Tensor], tuple[Tensor, ...]]:
        weight_ih, weight_hh, bias_ih, bias_hh = self._layer_weights(layer)
        # The input half of every gate for every step at once: one matrix multiply.
        x_proj = F.linear(inputs, weight_ih, bias_ih)  # (T, B, 3H)
        weight_hh_t = weight_hh.t()  # (H, 3H), a view
        (h,) = state  # (B, H)
        outputs = []
        for x_proj_t in x_proj.unbind(0):  # (B, 3H) per step
            h, step_gates = _gru_step(x_proj_t, h, weight_hh_t, bias_hh)
            outputs.append(h)
            if record is not None:
                record.append(step_gates)
        return outputs, (h,)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``out, h_n = gru(x, h_0)``; see the class docstring for shapes."""
        out, (h_n,), _ = self._run(x, None if hx is None else (hx,), record=False)
        return out, h_n

    def forward_with_gates(
        self, x: Tensor, hx: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Like forward, and also "reset" (r), "update" (z), "candidate" (n) and "hidden" (h_t)
        at every step, each (num_layers, B, T, H) (batch-first, for analysis)."""
        out, (h_n,), gates = self._run(x, None if hx is None else (hx,), record=True)
        return out, h_n, gates


class StepRNN(_GateRNNBase):
    """A plain RNN written step by step, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``:
    nn.RNN's names, shapes and initialisation, so it takes an nn.RNN's weights. It has no gates;
    ``forward_with_gates`` records every layer's "hidden" state, which nn.RNN keeps only for
    its last layer (``charrnn explain`` shows them)."""

    gate_count = 1
    state_count = 1
    gate_keys = ("hidden",)

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be tanh or relu, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def _scan_layer(
        self, layer: int, inputs: Tensor, state: tuple[Tensor, ...], record: list | None
    ) -> tuple[list[Tensor], tuple[Tensor, ...]]:
        weight_ih, weight_hh, bias_ih, bias_hh = self._layer_weights(layer)
        x_proj = F.linear(inputs, weight_ih, bias_ih)  # (T, B, H): the input half, at once
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        (h,) = state
        outputs = []
        for x_proj_t in x_proj.unbind(0):
            h = act(F.linear(h, weight_hh, bias_hh) + x_proj_t)
            outputs.append(h)
            if record is not None:
                record.append((h,))
        return outputs, (h,)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``out, h_n = rnn(x, h_0)``, as nn.RNN."""
        out, (h_n,), _ = self._run(x, None if hx is None else (hx,), record=False)
        return out, h_n

    def forward_with_gates(
        self, x: Tensor, hx: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Like forward, and also "hidden" (h_t) of every layer at every step,
        (num_layers, B, T, H)."""
        out, (h_n,), gates = self._run(x, None if hx is None else (hx,), record=True)
        return out, h_n, gates
