"""The HTTP server: OpenAI chat completions (streamed as SSE or whole), models, health.

It validates, renders the chat template, tokenizes, and hands token ids to an
engine client; it never touches tensors.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from kt.gguf.chat_template import ChatTemplate, ChatTemplateError
from kt.gguf.tokenizer import Tokenizer
from kt.runtime.request import Completion, FinishReason, SamplingParams, TokenEvent
from kt.server import errors
from kt.server.errors import APIError
from kt.server.protocol import ChatCompletionRequest


class EngineClient(Protocol):
    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[TokenEvent]: ...


@dataclass
class ServedModel:
    name: str
    tokenizer: Tokenizer
    engine: EngineClient
    context_length: int
    max_new_tokens: int


def create_app(served: ServedModel) -> FastAPI:
    app = FastAPI(title="kt", docs_url=None, redoc_url=None)
    errors.install(app)
    tok = served.tokenizer
    template = ChatTemplate.from_tokenizer(tok) if tok.chat_template else None  # compiled once
    created = int(time.time())

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": created, "owned_by": "kt"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest):
        prompt_ids = _chat_prompt(req, served, template)
        params = _sampling(req, served, len(prompt_ids))
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = _stream_chunks(served, rid, prompt_ids, params, include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        done = Completion(prompt_token_ids=prompt_ids)
        async for event in served.engine.stream(prompt_ids, params):
            done.token_ids.append(event.token_id)
            done.text += event.text
            done.finish_reason = event.finish_reason
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": served.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "logprobs": None, "finish_reason": done.finish_reason.value}],
            "usage": _usage(len(prompt_ids), len(done.token_ids)),
        })

    return app


def _chat_prompt(req: ChatCompletionRequest, served: ServedModel, template: ChatTemplate | None) -> list[int]:
    if template is None:
        raise APIError(400, f"model {served.name} has no chat template; it is a base model", param="messages")
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    try:
        ids = template.prompt_ids(served.tokenizer, messages)
    except ChatTemplateError as e:
        raise APIError(400, str(e), param="messages") from None
    if len(ids) >= served.context_length:
        raise APIError(400, f"the prompt has {len(ids)} tokens but the model's context holds {served.context_length}",
                       param="messages", code="context_length_exceeded")
    return ids


def _sampling(req: ChatCompletionRequest, served: ServedModel, prompt_len: int) -> SamplingParams:
    wanted = req.requested_max_tokens
    if wanted is not None and wanted > served.context_length:
        raise APIError(400, f"max_tokens {wanted} exceeds the model's context of {served.context_length}",
                       param="max_tokens")
    max_tokens = min(wanted or served.max_new_tokens, served.max_new_tokens, served.context_length - prompt_len)
    return SamplingParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                          seed=req.seed, stop=tuple(req.stop or ()), ignore_eos=req.ignore_eos)


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _stream_chunks(served: ServedModel, rid: str, prompt_ids: list[int], params: SamplingParams,
                         include_usage: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict, finish: FinishReason | None = None, **extra) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": served.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish.value if finish else None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    generated = 0
    try:
        async for event in served.engine.stream(prompt_ids, params):
            generated += 1
            if event.text:
                yield chunk({"content": event.text})
            if event.finish_reason is not None:
                yield chunk({}, event.finish_reason)
    except Exception as e:  # headers are sent: report in-band, as OpenAI does
        err = {"error": {"message": f"generation failed: {e}", "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(err)}\n\n"
    if include_usage:
        usage = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": served.name,
                 "choices": [], "usage": _usage(len(prompt_ids), generated)}
        yield f"data: {json.dumps(usage)}\n\n"
    yield "data: [DONE]\n\n"
