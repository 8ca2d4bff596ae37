"""Stop strings end generation at their first occurrence, found across pieces of any size."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.errors import ConfigError
from charrnn.stops import StopStrings


def cut_at_first_stop(text: str, stops: list[str]) -> str:
    """The reference: the text up to and including the earliest-ending stop string."""
    ends = [text.find(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


@given(
    text=st.text(alphabet="ab\n", max_size=40),
    stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=1, max_value=5), max_size=40),
)
def test_feeding_pieces_keeps_exactly_the_text_up_to_the_first_stop(text, stops, cuts):
    watcher, kept, position = StopStrings(stops), "", 0
    sizes = iter(cuts)
    while position < len(text):
        piece = text[position : position + next(sizes, 1)]
        position += len(piece)
        keep = watcher.feed(piece)
        kept += piece if keep is None else piece[:keep]
        if keep is not None:
            break
    assert kept == cut_at_first_stop(text, stops)
    assert watcher.stopped == any(s in text for s in stops)


def test_after_a_stop_nothing_more_is_kept():
    watcher = StopStrings(["."])
    assert watcher.feed("a.b") == 2
    assert watcher.feed("more") == 0


def test_an_empty_stop_string_is_refused():
    with pytest.raises(ConfigError, match="cannot be empty"):
        StopStrings(["x", ""])
