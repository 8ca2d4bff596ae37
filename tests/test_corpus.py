"""Reading corpora and the character vocabulary."""

from __future__ import annotations

import tracemalloc
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.corpus import (
    Vocabulary,
    bundled_corpora,
    describe_char,
    read_text,
    split_train_val,
)
from charrnn.errors import CorpusError


def test_round_trip_non_ascii():
    text = "naïve — 東京 🙂\nnaïve"
    vocab = Vocabulary.from_text(text)
    assert vocab.chars == tuple(sorted(set(text)))
    assert "🙂" in vocab and len(vocab) == len(set(text))
    assert vocab.decode(vocab.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_round_trip_any_unicode(text):
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    assert ids.dim() == 1 and len(ids) == len(text)
    assert vocab.decode(ids) == text
    assert Vocabulary.from_list(vocab.to_list()) == vocab


def test_compact_dtype():
    assert Vocabulary.from_text("abc").encode("abc").dtype == torch.uint8
    wide = "".join(chr(0x4E00 + i) for i in range(300))
    assert Vocabulary.from_text(wide).encode(wide).dtype == torch.int32


def test_unknown_characters_are_named():
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(CorpusError, match="'z'"):
        vocab.encode("abz")


def test_from_list_keeps_the_order_and_refuses_malformed():
    # A fine-tuned run's vocabulary is its start's with new characters appended: not sorted.
    assert Vocabulary.from_list(["b", "a"]).encode("ab").tolist() == [1, 0]
    with pytest.raises(CorpusError):
        Vocabulary.from_list(["a", "b", "a"])
    with pytest.raises(CorpusError):
        Vocabulary.from_list(["ab"])


def test_split_is_contiguous():
    ids = torch.arange(100)
    train, val = split_train_val(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_the_bundled_corpus_encodes_exactly_in_memory_bounded_by_the_chunk(monkeypatch):
    """A 4.8 MB corpus encodes to the right ids with only chunk-sized temporaries beside them.

    Not a speed test (speed belongs in benchmarks/data_scale.py): a per-character Python loop
    or a whole-text conversion would both show up here as memory, whatever the machine's load.
    """
    import charrnn.vocab as corpus

    text = read_text("shakespeare")
    vocab = Vocabulary.from_text(text)
    monkeypatch.setattr(corpus, "ENCODE_CHUNK", 1 << 16)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc, so they count here too
    try:
        ids = vocab.encode(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == len(text) == 4_846_381 and ids.dtype == torch.uint8
    # The result (1 byte a character) plus, per chunk, its text, its bytes and an int64 lookup
    # (~11 bytes a character): a list of ids would take 8 bytes a character of the whole text,
    # a whole-text UTF-32 copy 4.
    assert peak < len(text) + 24 * corpus.ENCODE_CHUNK + 1_000_000
    # Every character became its own id: counted directly, without the encoder.
    counts = Counter(text)
    assert torch.bincount(ids.long(), minlength=len(vocab)).tolist() == [
        counts[char] for char in vocab.chars
    ]
    assert vocab.decode(ids[:5000]) == text[:5000] and vocab.decode(ids[-5000:]) == text[-5000:]


def test_bundled_default_exists_and_is_real_text():
    corpora = bundled_corpora()
    assert "shakespeare" in corpora
    size = corpora["shakespeare"].stat().st_size
    assert 1_000_000 <= size <= 5_000_000
    text = read_text("shakespeare")
    assert "ROMEO" in text or "Romeo" in text


def test_bad_corpora(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        read_text(str(empty))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(CorpusError, match="byte 6"):
        read_text(str(bad))
    with pytest.raises(CorpusError, match="directory"):
        read_text(str(tmp_path))
    with pytest.raises(CorpusError, match="bundled: .*shakespeare"):
        read_text("no-such-corpus")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_round_trip_across_encode_chunks(text):
    import charrnn.vocab as corpus

    before = corpus.ENCODE_CHUNK
    corpus.ENCODE_CHUNK = 4  # ASCII and non-ASCII chunks side by side
    try:
        vocab = Vocabulary.from_text(text + "abc")
        assert vocab.decode(vocab.encode(text)) == text
    finally:
        corpus.ENCODE_CHUNK = before


# Every code point, lone surrogates included (a str may hold them: surrogateescape'd argv).
ANY_CHAR = st.characters(exclude_categories=())


@settings(max_examples=200, deadline=None)
@given(st.text(ANY_CHAR, min_size=1, max_size=300), st.text(ANY_CHAR, max_size=60))
def test_encode_refuses_exactly_the_characters_it_does_not_know(known, other):
    vocab = Vocabulary.from_text(known)
    unknown = [c for c in dict.fromkeys(other) if c not in set(known)]
    if not unknown:
        ids = vocab.encode(other)
        assert vocab.decode(ids) == other
        assert all(0 <= i < len(vocab) for i in ids.tolist())
        return
    with pytest.raises(CorpusError) as refused:
        vocab.encode(other)
    assert describe_char(unknown[0]) in str(refused.value)


@settings(max_examples=60, deadline=None)
@given(st.sets(ANY_CHAR, min_size=1, max_size=700), st.randoms(use_true_random=False))
def test_vocabularies_of_any_size_round_trip(chars, rng):
    text = list(chars) * 2
    rng.shuffle(text)
    text = "".join(text)
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    assert ids.dtype == (torch.uint8 if len(chars) <= 256 else torch.int32)
    assert vocab.decode(ids) == text
    assert Vocabulary.from_list(vocab.to_list()) == vocab


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(ANY_CHAR, max_size=2), st.integers(), st.none()), max_size=8))
def test_from_list_takes_only_distinct_single_characters(items):
    well_formed = all(isinstance(c, str) and len(c) == 1 for c in items) and len(set(items)) == len(
        items
    )
    if well_formed:
        assert Vocabulary.from_list(items).to_list() == items
    else:
        with pytest.raises(CorpusError):
            Vocabulary.from_list(items)
