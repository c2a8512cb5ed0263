"""The Python API that tests, benchmarks and scripts use: `kt.LLM(model)`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kt.gguf.chat_template import ChatTemplate
from kt.runtime.engine import Engine, EngineConfig
from kt.runtime.request import Completion, SamplingParams
from kt.store import resolve


class LLM:
    def __init__(self, model: str | Path | None = None, *, threads: int | None = None, chunk_size: int = 512,
                 reference: bool = False):
        """`reference=True` computes with float32 dequantized weights instead of the native kernels."""
        self.name, self.path = resolve(None if model is None else str(model))
        config = EngineConfig(chunk_size=chunk_size, threads=threads, reference=reference)
        self.engine = Engine.from_path(self.path, config)
        self.tokenizer = self.engine.tokenizer
        self._template: ChatTemplate | None = None

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits at every position: float32 [len, vocab]."""
        return self.engine.logits(list(token_ids)).numpy()

    def generate(self, prompt: str | Sequence[int], *, max_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop: Sequence[str] = (),
                 ignore_eos: bool = False) -> Completion:
        """A string prompt is tokenized as the model expects (BOS added when it wants one)."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=True) if isinstance(prompt, str) else list(prompt)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                seed=seed, stop=tuple(stop), ignore_eos=ignore_eos)
        out = Completion(prompt_token_ids=ids)
        for event in self.engine.generate(ids, params):
            out.token_ids.append(event.token_id)
            out.text += event.text
            out.finish_reason = event.finish_reason
        return out

    def chat(self, messages: list[dict], **kwargs) -> Completion:
        """Render `messages` with the model's chat template, then generate."""
        return self.generate(self.render_chat(messages), **kwargs)

    def render_chat(self, messages: list[dict]) -> list[int]:
        """Prompt token ids for `messages` by the model's chat template (ChatTemplateError if it has none)."""
        if self._template is None:
            self._template = ChatTemplate.from_tokenizer(self.tokenizer)
        return self._template.prompt_ids(self.tokenizer, messages)
