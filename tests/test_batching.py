"""The lesson's cyclic loader: its worked example exactly, and properties over random shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from charrnn.batching import CyclicBatches, epoch_offset, evaluation_chunks
from charrnn.corpus import Vocabulary
from charrnn.errors import CorpusError


def test_lesson_example_exactly():
    batches = CyclicBatches(torch.arange(1, 13), batch_size=2, seq_length=3)
    assert batches.n_batches == 2
    (x1, y1), (x2, y2) = list(batches)
    assert x1.tolist() == [[1, 2, 3], [7, 8, 9]]
    assert y1.tolist() == [[2, 3, 4], [8, 9, 10]]
    assert x2.tolist() == [[4, 5, 6], [10, 11, 12]]
    assert y2.tolist() == [[5, 6, 7], [11, 12, 1]]
    assert batches.used == 12 and batches.dropped == 0
    # The rows the lesson first cuts the text into, which the steps then read in order.
    assert [batches.row(r).tolist() for r in range(2)] == [
        [1, 2, 3, 4, 5, 6],
        [7, 8, 9, 10, 11, 12],
    ]
    assert torch.equal(batches.row(1), torch.cat([x1[1], x2[1]]))
    assert batches.row(0, 4).tolist() == [1, 2, 3, 4]
    rotated = CyclicBatches(torch.arange(1, 13), 2, 3, offset=2)
    assert rotated.row(1).tolist() == [9, 10, 11, 12, 1, 2]  # along the cycle


def test_leftover_characters_are_dropped_at_the_end_but_remain_targets():
    batches = CyclicBatches(torch.arange(1, 15), batch_size=2, seq_length=3)  # 14 characters
    assert batches.used == 12 and batches.dropped == 2
    x2, y2 = batches[1]
    assert x2.tolist() == [[4, 5, 6], [10, 11, 12]]
    assert y2.tolist() == [[5, 6, 7], [11, 12, 13]]  # 12 is followed by 13 in this text


def test_offset_rotates_along_the_cycle():
    x, y = CyclicBatches(torch.arange(1, 13), 2, 3, offset=2)[0]
    assert x.tolist() == [[3, 4, 5], [9, 10, 11]]
    assert y.tolist() == [[4, 5, 6], [10, 11, 12]]
    x, y = CyclicBatches(torch.arange(1, 13), 2, 3, offset=2)[1]
    assert x.tolist() == [[6, 7, 8], [12, 1, 2]]
    assert y.tolist() == [[7, 8, 9], [1, 2, 3]]


def test_epoch_offsets_are_deterministic_and_vary():
    offsets = [epoch_offset(e, 100, seed=7) for e in range(20)]
    assert offsets[0] == 0
    assert offsets == [epoch_offset(e, 100, seed=7) for e in range(20)]
    assert len(set(offsets)) > 5 and all(0 <= o < 100 for o in offsets)


shapes = st.tuples(
    st.integers(1, 400),  # text length
    st.integers(1, 8),  # batch_size
    st.integers(1, 12),  # seq_length
    st.integers(0, 1000),  # offset
).filter(lambda s: s[0] // s[1] // s[2] >= 1)


@settings(max_examples=150, deadline=None)
@given(shapes)
def test_properties_of_an_epoch(shape):
    n, batch_size, seq_length, offset = shape
    data = torch.randint(0, 50, (n,))
    batches = CyclicBatches(data, batch_size, seq_length, offset)
    positions = []
    previous = None
    for step, (x, y) in enumerate(batches):
        assert x.shape == y.shape == (batch_size, seq_length)
        # Where every input sits in the text, computed independently of the loader.
        start = offset + torch.arange(batch_size) * batches.row_length + step * seq_length
        where = (start.unsqueeze(1) + torch.arange(seq_length)) % n
        assert torch.equal(x, data[where])
        # Every target is the next character of the text, cyclically.
        assert torch.equal(y, data[(where + 1) % n])
        if previous is not None:  # rows continue from one step to the next
            assert torch.equal((previous[:, -1] + 1) % n, where[:, 0])
        previous = where
        positions.append(where.flatten())
    kept = torch.cat(positions)
    # Every kept character is an input exactly once per epoch.
    assert len(kept) == len(set(kept.tolist())) == batches.used


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 300), st.integers(1, 9), st.integers(1, 13))
def test_evaluation_scores_every_character_once_in_order(n, batch_size, seq_length):
    data = torch.arange(n)
    chunks = evaluation_chunks(data, batch_size, seq_length)
    main = [c for c in chunks if c.continues_row is None]
    rows = torch.cat([c.inputs for c in main], dim=1) if main else None
    scored = [] if rows is None else rows.flatten().tolist()
    for chunk in chunks:
        assert torch.equal(chunk.targets, chunk.inputs + 1)
    tails = [c for c in chunks if c.continues_row is not None]
    for tail in tails:
        assert tail.inputs[0, 0].item() == rows[tail.continues_row, -1].item() + 1
        scored += tail.inputs.flatten().tolist()
    assert scored == list(range(n - 1))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(-2, 20), st.integers(-2, 20), st.integers(-(10**9), 10**9))
def test_any_shape_is_a_layout_or_a_corpus_error(n, batch_size, seq_length, offset):
    data = torch.arange(n)
    if batch_size < 1 or seq_length < 1 or n // batch_size // seq_length < 1:
        with pytest.raises(CorpusError):
            CyclicBatches(data, batch_size, seq_length, offset)
    else:
        batches = CyclicBatches(data, batch_size, seq_length, offset)
        assert len(batches) == n // batch_size // seq_length and 0 <= batches.offset < n
        x, y = batches[len(batches) - 1]
        assert x.shape == y.shape == (batch_size, seq_length)
    if batch_size < 1 or seq_length < 1 or n < 2:
        with pytest.raises(CorpusError):
            evaluation_chunks(data, batch_size, seq_length)
    else:
        chunks = evaluation_chunks(data, batch_size, seq_length)
        assert sum(c.targets.numel() for c in chunks) == n - 1


@settings(max_examples=150, deadline=None)
@given(
    st.text(st.characters(exclude_categories=()), min_size=2, max_size=400),
    st.integers(1, 6),
    st.integers(1, 9),
    st.integers(0, 1000),
)
def test_any_unicode_text_is_cut_into_its_own_cyclic_windows(text, batch_size, seq_length, offset):
    assume(len(text) // batch_size // seq_length >= 1)
    vocab = Vocabulary.from_text(text)
    batches = CyclicBatches(vocab.encode(text), batch_size, seq_length, offset)
    cycle = text * 3  # an offset and a window together wrap around the end at most once
    for inputs, targets in batches:
        for row_inputs, row_targets in zip(inputs, targets, strict=True):
            window, shifted = vocab.decode(row_inputs), vocab.decode(row_targets)
            assert window[1:] == shifted[:-1]  # each target is the next character
            assert window + shifted[-1] in cycle
