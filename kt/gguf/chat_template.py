"""A model's Jinja chat template, rendered the way transformers renders it."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kt.gguf.tokenizer import Tokenizer


class ChatTemplateError(ValueError):
    """The template is missing, does not compile, or failed while rendering."""


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' override: Jinja's own tojson HTML-escapes, which corrupts prompts
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    # the template comes from the model file, so it runs sandboxed
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    def __init__(self, source: str, bos_token: str, eos_token: str):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from e

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> ChatTemplate:
        if tokenizer.chat_template is None:
            raise ChatTemplateError("model has no chat template")
        return cls(tokenizer.chat_template, tokenizer.bos_token or "", tokenizer.eos_token or "")

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text for `messages`; `extra` reaches the template as variables
        (tools, documents, enable_thinking, ...)."""
        # transformers passes these as None when absent, and templates test `is not none`
        context = {"tools": None, "documents": None, "bos_token": self.bos_token,
                   "eos_token": self.eos_token, **extra}
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **context)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template failed: {e}") from e
        except Exception as e:  # the template is the model's code: any failure in it is its error
            raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from e

    def prompt_ids(self, tokenizer: Tokenizer, messages: list[dict], **extra: Any) -> list[int]:
        """Render and tokenize with special tokens parsed; BOS is added only when the
        model wants one and the template did not already write it."""
        text = self.render(messages, add_generation_prompt=True, **extra)
        add_bos = not (self.bos_token and text.startswith(self.bos_token))
        return tokenizer.encode(text, add_special_tokens=add_bos, parse_special=True)
