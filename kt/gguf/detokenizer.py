"""Streaming detokenization: text out as tokens arrive, never half a character."""
from __future__ import annotations

import codecs

from kt.gguf.tokenizer import Tokenizer


class IncrementalDetokenizer:
    """Turns one sequence's tokens into text piece by piece.

    A character may span several byte tokens (or byte-level BPE tokens), so bytes
    are held back until they complete a character. The pieces joined equal
    `tokenizer.decode(ids)`, because Python's incremental UTF-8 decoder replaces
    invalid bytes exactly where the one-shot decoder does."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """The text this token completes; "" while a character is still partial."""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id, self.skip_special_tokens))

    def flush(self) -> str:
        """The end of the sequence: a trailing partial character becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)
