"""Answer text as ``vlmtune predict`` prints it, cut at stop strings, and the same text handed out piece by piece."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def final_text(decoded: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``(answer, stopped)``: ``decoded`` stripped as ``predict`` strips it, cut before the first stop string."""
    text = decoded.strip()
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut].rstrip(), True


class IncrementalText:
    """Turns the growing decoded answer into pieces whose concatenation is exactly :func:`final_text`'s answer.

    Leading and trailing whitespace is held back (the final answer is stripped), so is a tail that could begin a
    stop string or is an incomplete UTF-8 character (decoded as U+FFFD).
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str]):
        self.decode, self.stops = decode, [s for s in stops if s]
        self.tokens: list[int] = []
        self.sent = 0
        self.stopped = False

    def add(self, tokens: Sequence[int]) -> str:
        """The next piece after ``tokens`` were generated ('' when nothing new can be shown yet)."""
        if self.stopped:
            return ""
        self.tokens.extend(tokens)
        text, stopped = final_text(self.decode(self.tokens), self.stops)
        if stopped:
            self.stopped = True
            return self._emit(text)
        hold = max((len(s) - 1 for s in self.stops), default=0)
        safe = len(text) - hold if hold else len(text)
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        return self._emit(text[:max(safe, self.sent)])

    def finish(self) -> str:
        """What is left once generation ended."""
        if self.stopped:
            return ""
        text, _ = final_text(self.decode(self.tokens), self.stops)
        return self._emit(text)

    def _emit(self, upto: str) -> str:
        piece = upto[self.sent:]
        self.sent = len(upto)
        return piece
