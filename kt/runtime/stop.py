"""Turn generated tokens into text for streaming: whole UTF-8 characters only, and
user stop strings cut out, holding back any tail that might still become one."""
from __future__ import annotations

from dataclasses import dataclass

from kt.gguf.detokenizer import IncrementalDetokenizer


@dataclass(frozen=True)
class TextDelta:
    text: str
    stopped: bool  # a stop string was completed; `text` ends just before it


class StopTextStream:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stop = stop
        self.pending = ""  # decoded text not yet released

    def add(self, token_id: int) -> TextDelta:
        self.pending += self.detok.add(token_id)
        return self._release(final=False)

    def finish(self) -> TextDelta:
        self.pending += self.detok.flush()
        return self._release(final=True)

    def _release(self, final: bool) -> TextDelta:
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return TextDelta(out, stopped=True)
        keep = 0 if final else self._longest_stop_prefix_suffix()
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return TextDelta(out, stopped=False)

    def _longest_stop_prefix_suffix(self) -> int:
        """Length of the longest tail of `pending` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(s[:n]):
                    best = n
                    break
        return best
