"""Sample text from a model exported by `charrnn export`, with onnxruntime and numpy alone."""

import argparse
import json

import numpy as np
import onnxruntime as ort


def generate(session, prime="\n", length=500, temperature=0.8, seed=None):
    vocab = json.loads(session.get_modelmeta().custom_metadata_map["vocab"])
    index = {char: i for i, char in enumerate(vocab)}
    # The state inputs (h, and c for an LSTM) are [layers, batch, hidden]; start from zeros.
    state = {i.name: np.zeros((i.shape[0], 1, i.shape[2]), np.float32)
             for i in session.get_inputs() if i.name != "ids"}  # fmt: skip

    def step(char):  # read one character: the next character's logits; the state moves on
        logits, *new_state = session.run(None, {"ids": np.array([index[char]], np.int64), **state})
        state.update(zip(list(state), new_state, strict=True))  # h_out, c_out: the next h, c
        return logits[0].astype(np.float64)

    prime = prime or "\n"  # as `charrnn sample`: an empty prime is a newline
    if unknown := sorted(set(prime) - set(index)):
        raise ValueError(f"the model never saw {unknown}; leave them out of the prime")
    for char in prime:
        logits = step(char)
    rng, text = np.random.default_rng(seed), prime
    for _ in range(length):
        p = np.exp((logits - logits.max()) / temperature)  # softmax(logits / temperature)
        text += vocab[rng.choice(len(vocab), p=p / p.sum())]
        logits = step(text[-1])
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument("--prime", default="\n")
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    try:
        print(generate(session, args.prime, args.length, args.temperature, args.seed))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
