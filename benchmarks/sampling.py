"""Sampling speed: charrnn's sampler against bare per-character loops, in one run.

    python -m benchmarks.sampling [--config default] [--length 2000] [--repeats 5]

Speed does not depend on what the weights learned, so a freshly initialised model of the
config's shape is used. Baselines: calling nn.LSTM (or nn.GRU) once per character on a
(1, 1) input, and nn.LSTMCell once per character, each with the same embedding, head and
multinomial sampling. Every sampler is measured on one thread and on every core, and compared
only at equal thread counts (charrnn picks two threads for the default model by itself, which
the bare loops would not get).
"""

from __future__ import annotations

import argparse
import json
import statistics
import string
import time

import torch
import torch.nn.functional as F
from torch import nn

from charrnn import checkpoint as ckpt
from charrnn import config as config_module
from charrnn.corpus import Vocabulary
from charrnn.model import CharModel
from charrnn.sample import (
    Stepper,
    TextGenerator,
    choose_threads,
    sampling_threads,
    step_weight_bytes,
)

VOCAB = Vocabulary.from_text(string.printable[:62] + " \n.")  # 65 characters, like Tiny Shakespeare


def rate(fn, chars: int, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(chars / (time.perf_counter() - start))
    return statistics.median(rates), [min(rates), max(rates)]


@torch.inference_mode()
def bare_loop(model: CharModel, length: int, use_cell: bool) -> None:
    """The straightforward loop a user would write: one module call per character."""
    core = model.core
    cell = None
    if use_cell:
        cell = nn.LSTMCell(core.input_size, core.hidden_size)
        cell.weight_ih.copy_(core.weight_ih_l0)
        cell.weight_hh.copy_(core.weight_hh_l0)
        cell.bias_ih.copy_(core.bias_ih_l0)
        cell.bias_hh.copy_(core.bias_hh_l0)
    x = torch.zeros(1, 1, dtype=torch.long)
    state = model.init_state(1)
    if cell is not None:
        state = (state[0][0], state[1][0])
    for _ in range(length):
        embedded = model.embedding(x)  # (1, 1, E)
        if cell is not None:
            state = cell(embedded[:, 0], state)
            out = state[0]
        else:
            out, state = core(embedded, state)
            out = out[:, 0]
        probabilities = torch.softmax(model.head(out) / 0.8, dim=-1)
        x = torch.multinomial(probabilities, 1)


@torch.inference_mode()
def stepper_loss(stepper: Stepper, model: CharModel, ids: torch.Tensor) -> float:
    """Mean cross-entropy of next-character predictions made one step at a time (batch 1)."""
    state, total = model.init_state(1), 0.0
    for t in range(len(ids) - 1):
        logits, state = stepper(ids[t : t + 1], state)
        total += F.cross_entropy(logits.float(), ids[t + 1 : t + 2]).item()
    return total / (len(ids) - 1)


def measure(
    name: str = "default",
    length: int = 2000,
    repeats: int = 5,
    checkpoint: str | None = None,
    text: str | None = None,
) -> dict:
    """Speeds for a config's shape (or a trained `checkpoint`'s), every sampler at each thread
    count (one thread, and every core), so each comparison is at equal threads; with held-out
    `text`, also the loss that int8 weights cost (teacher-forced, one step at a time)."""
    model_config, _ = config_module.resolve(name, {})
    torch.manual_seed(0)
    if checkpoint:
        model, vocab = ckpt.restore_model(ckpt.load(checkpoint))
        model_config = model.config
    else:
        model, vocab = CharModel(model_config, len(VOCAB)), VOCAB
    model.eval()
    cores = torch.get_num_threads()
    results = {"model": config_module.to_dict(model_config), "length": length,
               "trained_weights": bool(checkpoint), "cores": cores,
               "by_threads": {str(n): at_threads(model, vocab, n, length, repeats)
                              for n in sorted({1, cores})}}  # fmt: skip
    default = TextGenerator(model, vocab, torch.device("cpu"))  # what `charrnn sample` picks
    weights = step_weight_bytes(default.stepper)
    results["default_threads"] = choose_threads(1, weights, torch.device("cpu"))
    results["default_int8"] = default.int8
    results["default_sampler"] = default.sampler
    compiled = TextGenerator(model, vocab, torch.device("cpu"), int8=True)
    results["compiled_why_not"] = compiled.compiled_why_not
    if checkpoint and text:
        steppers = {
            "exact_loss": TextGenerator(model, vocab, torch.device("cpu"), int8=False),
            "int8_loss": TextGenerator(model, vocab, torch.device("cpu"), int8=True,
                                       compiled=False),
        }  # fmt: skip
        if compiled.sampler == "compiled int8":
            steppers["compiled_int8_loss"] = compiled
        ids = vocab.encode(text).long()
        with sampling_threads(1):
            losses = {key: stepper_loss(g.stepper, model, ids) for key, g in steppers.items()}
        results["int8_quality"] = {"characters": len(ids) - 1, **losses}
    batch_length = max(1, length // 4)
    for key, int8 in (("charrnn_batch64", False), ("charrnn_int8_batch64", True)):
        generator = TextGenerator(model, vocab, torch.device("cpu"), int8=int8, threads=cores)
        results[key] = rate(
            lambda g=generator: g.generate("\n", batch_length, num_samples=64, seed=1),
            64 * batch_length, repeats,
        )  # fmt: skip
    return results


def at_threads(model: CharModel, vocab: Vocabulary, threads: int, length: int, repeats: int):
    """Batch-1 speeds of charrnn (exact; int8 as `charrnn sample --int8` runs it, through the
    compiled step where it builds; int8 through torch's step) and of the bare loops, all on
    `threads`."""
    found = {}
    samplers = {"charrnn_batch1": dict(int8=False), "charrnn_int8_batch1": dict(int8=True),
                "charrnn_int8_torch_batch1": dict(int8=True, compiled=False)}  # fmt: skip
    for key, options in samplers.items():
        generator = TextGenerator(model, vocab, torch.device("cpu"), threads=threads, **options)
        found[key] = rate(lambda g=generator: g.generate("\n", length, seed=1), length, repeats)
    short = max(1, length // 4)  # the bare loops are slow: fewer characters, same rate
    if model.config.cell == "lstm":
        with sampling_threads(threads):
            found["bare_nn_lstm_per_char"] = rate(lambda: bare_loop(model, short, False),
                                                  short, repeats)  # fmt: skip
            if model.config.num_layers == 1:
                found["bare_lstmcell_per_char"] = rate(lambda: bare_loop(model, short, True),
                                                       short, repeats)  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.config, args.length, args.repeats), indent=2))


if __name__ == "__main__":
    main()
