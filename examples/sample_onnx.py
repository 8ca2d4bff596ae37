"""Sample text from a model exported by `charrnn export`, with onnxruntime and numpy alone."""

import argparse
import json

import numpy as np
import onnxruntime as ort


def generate(session, prime="\n", length=500, temperature=0.8, seed=None):
    meta = session.get_modelmeta().custom_metadata_map
    vocab = json.loads(meta["vocab"])
    index = {char: i for i, char in enumerate(vocab)}
    # The state inputs (h, and c for an LSTM) are [layers, batch, hidden]; start from zeros.
    state = {i.name: np.zeros((i.shape[0], 1, i.shape[2]), np.float32)
             for i in session.get_inputs() if i.name != "ids"}  # fmt: skip

    def step(char):  # read one character: the next character's logits; the state moves on
        logits, *new_state = session.run(None, {"ids": np.array([index[char]], np.int64), **state})
        state.update(zip(list(state), new_state, strict=True))  # h_out, c_out: the next h, c
        return logits[0].astype(np.float64)

    prime = read = prime or "\n"  # as `charrnn sample`: an empty prime is a newline
    if "unknown" in meta:  # trained with --max-vocab: what it never saw reads as U+FFFD
        read = "".join(char if char in index else meta["unknown"] for char in prime)
    if unknown := sorted(set(read) - set(index)):
        raise ValueError(f"the model never saw {unknown}; leave them out of the prime")
    for char in read:
        logits = step(char)
    rng, text = np.random.default_rng(seed), prime
    for _ in range(length):
        p = np.exp((logits - logits.max()) / temperature)  # softmax(logits / temperature)
        text += vocab[rng.choice(len(vocab), p=p / p.sum())]
        logits = step(text[-1])
    return text


def at_least(low, kind):  # an argparse type: a number of `kind`, refused below `low`
    def parse(text):
        value = kind(text)
        if not value >= low:  # also NaN
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="the .onnx file `charrnn export` wrote")
    parser.add_argument("--prime", default="\n", help="text to start from (default: a newline)")
    parser.add_argument("--length", type=at_least(0, int), default=500,
                        help="characters to write (default: 500)")  # fmt: skip
    parser.add_argument("--temperature", type=at_least(1e-3, float), default=0.8,
                        help="below 1: safer text; above 1: wilder (default: 0.8)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="the same seed writes the same text")
    args = parser.parse_args()
    try:
        session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        if "vocab" not in session.get_modelmeta().custom_metadata_map:
            raise ValueError("it holds no charrnn vocabulary; export it with `charrnn export`")
    except Exception as error:  # onnxruntime's errors are long and of many types
        first = str(error).strip().splitlines()[0][:200]
        raise SystemExit(f"error: cannot read {args.model!r} as a charrnn model: {first}") from None
    try:
        print(generate(session, args.prime, args.length, args.temperature, args.seed))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
