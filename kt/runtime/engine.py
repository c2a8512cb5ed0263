"""The engine: a loaded model and tokenizer, prefill + decode, sampling, streaming text.

One request at a time for now; the scheduler of the runtime issue turns `generate`
into steps over a batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from kt.gguf.reader import GGUFFile
from kt.gguf.tokenizer import Tokenizer
from kt.models import load_model
from kt.ops import kernels
from kt.ops.attention import AttentionBatch, SequenceKVCache
from kt.ops.fused import fused_decoder
from kt.runtime.request import FinishReason, SamplingParams, TokenEvent
from kt.runtime.sampler import Sampler
from kt.runtime.stop import StopTextStream


@dataclass(frozen=True)
class EngineConfig:
    chunk_size: int = 512  # most prompt tokens in one forward; bounds activation memory
    threads: int | None = None  # CPU threads for kernels and torch; None: physical cores / torch's default
    reference: bool = False  # dequantize-then-matmul in float32 instead of the native kernels (tests)
    optimize_config: str | None = "auto"  # optimize rules (kt.optimize): a YAML file, "auto", or None

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}")


class Engine:
    def __init__(self, model, tokenizer: Tokenizer, config: EngineConfig = EngineConfig()):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        if config.threads and kernels.available():
            kernels.set_threads(config.threads)
        # The fused native forward when the model has one (all weights in kernel formats); else torch.
        self.fused = None if config.reference else fused_decoder(model)
        # torch only samples when the fused forward runs: one thread, so that its idle OpenMP
        # workers never spin against the kernels' pool; else it does the compute and gets the cores.
        torch.set_num_threads(1 if self.fused else (config.threads or kernels.default_threads()))

    @classmethod
    def from_path(cls, path: str | Path, config: EngineConfig = EngineConfig()) -> "Engine":
        gguf = GGUFFile(path)
        return cls(load_model(gguf, config.reference, config.optimize_config), Tokenizer.from_metadata(gguf.metadata),
                   config)

    @property
    def context_length(self) -> int:
        return self.model.config.context_length

    def new_cache(self):
        """An empty key/value cache for one sequence, of the kind the forward in use wants."""
        return self.fused.new_sequence() if self.fused else SequenceKVCache(self.model.config.n_layers)

    @torch.inference_mode()
    def _forward(self, ids: list[int], cache, start: int, all_logits: bool) -> torch.Tensor:
        """Run `ids` (positions start..) through the model in chunks; logits of every token or the last."""
        outs = []
        for i in range(0, len(ids), self.config.chunk_size):
            chunk = ids[i:i + self.config.chunk_size]
            if self.fused:
                rows = range(len(chunk)) if all_logits else [len(chunk) - 1]
                logits = self.fused.forward(self.model.model.embed_tokens(torch.tensor(chunk)), [cache], [len(chunk)], rows)
                outs.append(logits)
                continue
            positions = torch.arange(start + i, start + i + len(chunk))
            hidden = self.model(torch.tensor(chunk), AttentionBatch(positions, cache))  # [T, dim]
            outs.append(self.model.logits(hidden if all_logits else hidden[-1:]))
        return torch.cat(outs) if all_logits else outs[-1][0]

    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """Teacher-forced logits at every position: [len, vocab] float32."""
        self._check_ids(token_ids)
        return self._forward(list(token_ids), self.new_cache(), 0, all_logits=True)

    def _check_ids(self, ids: list[int]) -> None:
        vocab = self.model.config.vocab_size
        if not ids:
            raise ValueError("the prompt is empty")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        if len(ids) >= self.context_length:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit the context of {self.context_length}")

    def generate(self, prompt_ids: list[int], params: SamplingParams,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[TokenEvent]:
        """Stream one request: a TokenEvent per generated token, the last one with its finish reason."""
        self._check_ids(prompt_ids)
        cache = self.new_cache()
        sampler, text = Sampler(params), StopTextStream(self.tokenizer, params.stop)
        logits = self._forward(list(prompt_ids), cache, 0, all_logits=False)
        budget = min(params.max_tokens, self.context_length - len(prompt_ids))
        for n in range(1, budget + 1):
            token = sampler(logits)
            if not params.ignore_eos and token in self.tokenizer.eog_ids:
                yield TokenEvent(token, text.finish().text, FinishReason.STOP)
                return
            delta = text.add(token)
            if delta.stopped:
                yield TokenEvent(token, delta.text, FinishReason.STOP)
                return
            if n == budget:
                yield TokenEvent(token, delta.text + text.finish().text, FinishReason.LENGTH)
                return
            if cancelled():
                yield TokenEvent(token, delta.text, FinishReason.ABORT)
                return
            yield TokenEvent(token, delta.text)
            logits = self._forward([token], cache, len(prompt_ids) + n - 1, all_logits=False)
