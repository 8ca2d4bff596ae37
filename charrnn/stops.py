"""Stop strings: generation ends at the first occurrence of any of them, which is kept.

The text is checked as it grows, one piece at a time, so the cost per generated character is
bounded by the longest stop string (only the tail that could still complete one is kept).
"""

from __future__ import annotations

from charrnn.errors import ConfigError


class StopStrings:
    """Watches a growing text for the first occurrence of any stop string.

    >>> stops = StopStrings(["\\n\\n", "END"])
    >>> [stops.feed(c) for c in "ab\\nE\\n\\nx"]
    [None, None, None, None, None, 1, 0]

    ``feed(piece)`` returns None while no stop string has appeared, else how many characters of
    `piece` to keep (up to and including the end of the first stop string); after that every
    call returns 0.
    """

    def __init__(self, stops: list[str] | tuple[str, ...] = ()):
        if any(stop == "" for stop in stops):
            raise ConfigError("a stop string cannot be empty")
        self.stops = tuple(stops)
        self._keep = max((len(stop) for stop in self.stops), default=1) - 1
        self._tail = ""
        self.stopped = False

    def feed(self, piece: str) -> int | None:
        if self.stopped:
            return 0
        if not self.stops:
            return None
        text = self._tail + piece
        ends = [text.find(stop) + len(stop) for stop in self.stops if stop in text]
        if ends:
            self.stopped = True
            return min(ends) - len(self._tail)
        self._tail = text[-self._keep :] if self._keep else ""
        return None
