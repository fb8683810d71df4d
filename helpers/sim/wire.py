"""vLLM 0.32's JSON bodies, key for key (see tests/fixtures/vllm-0.32/)."""

from __future__ import annotations

import os
import time
from typing import ClassVar

import orjson

VLLM_VERSION = "0.32.0"
SIM_VERSION = f"{VLLM_VERSION}+qwen-sim"
SYSTEM_FINGERPRINT = f"vllm-{VLLM_VERSION}-sim"
MODEL_ROOT = "Qwen/Qwen3-0.6B"
DONE = b"data: [DONE]\n\n"


def new_completion_id() -> str:
    return "chatcmpl-" + os.urandom(8).hex()


def error_body(message: str, type_: str, param: str | None, code: int) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def models_body(names: list[str], max_model_len: int) -> bytes:
    created = int(time.time())
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": MODEL_ROOT,
                    "parent": None,
                    "max_model_len": max_model_len,
                    "permission": [
                        {
                            "id": "modelperm-" + os.urandom(8).hex(),
                            "object": "model_permission",
                            "created": created,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
                for name in names
            ],
        }
    )


def usage(
    prompt_tokens: int,
    completion_tokens: int,
    reasoning_tokens: int | None,
    *,
    stream: bool,
    prompt_details: tuple[int, int] | None = None,
) -> dict:
    """vLLM's usage; `prompt_details` (cached, created cache tokens) with --enable-prompt-tokens-details."""
    body: dict = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    details = None if reasoning_tokens is None else {"reasoning_tokens": reasoning_tokens}
    prompt = None
    if prompt_details is not None:
        prompt = {"cached_tokens": prompt_details[0], "created_cache_tokens": prompt_details[1]}
        if not stream:
            prompt["multimodal_tokens"] = None
    if stream:
        if prompt is not None:
            body["prompt_tokens_details"] = prompt
        if details is not None:
            body["completion_tokens_details"] = details
    else:
        body["prompt_tokens_details"] = prompt
        body["completion_tokens_details"] = details
    return body


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    reasoning_field: str,
    reasoning: str | None,
    content: str | None,
    finish_reason: str,
    stop_reason: str | None,
    usage_body: dict,
    tool_calls: list[dict] | None = None,
) -> bytes:
    """A chat.completion body; `tool_calls` sits before the reasoning and is absent when empty."""
    message = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    message[reasoning_field] = reasoning
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": stop_reason,
                    "token_ids": None,
                    "routed_experts": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": usage_body,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    )


class ChunkWriter:
    """Pre-serialised SSE events of one streamed completion.

    Only the delta's text is serialised per token; everything around it is bytes built once.
    """

    _text_cache: ClassVar[dict[str, bytes]] = {}

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self._head = orjson.dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        )[:-1]
        self._delta_prefix: dict[str, bytes] = {}
        self._tail = b'},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'

    def role(self) -> bytes:
        return (
            b"data: " + self._head + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}\n\n'
        )

    def token(self, field: str, text: str) -> bytes:
        prefix = self._delta_prefix.get(field)
        if prefix is None:
            prefix = b"data: " + self._head + b',"choices":[{"index":0,"delta":{"' + field.encode() + b'":'
            self._delta_prefix[field] = prefix
        encoded = self._text_cache.get(text)
        if encoded is None:
            encoded = orjson.dumps(text)
            if len(self._text_cache) < 100_000:
                self._text_cache[text] = encoded
        return prefix + encoded + self._tail

    def delta(self, delta: dict) -> bytes:
        """A chunk with any delta (e.g. `{"content": null, "tool_calls": [...]}`)."""
        return (
            b"data: "
            + self._head
            + b',"choices":[{"index":0,"delta":'
            + orjson.dumps(delta)[:-1]
            + self._tail
        )

    def last_token(
        self,
        delta: dict,
        finish_reason: str,
        stop_reason: str | None,
        fingerprint: bool,
    ) -> bytes:
        """The chunk with `finish_reason` (its delta is `{}` for the end-of-sequence token); it
        carries `system_fingerprint` unless a usage chunk follows (then the usage chunk does), as
        in vLLM."""
        return (
            b"data: "
            + self._head
            + b',"choices":[{"index":0,"delta":'
            + orjson.dumps(delta)
            + b',"logprobs":null,"finish_reason":'
            + orjson.dumps(finish_reason)
            + b',"stop_reason":'
            + orjson.dumps(stop_reason)
            + b',"token_ids":null}]'
            + (b',"system_fingerprint":' + orjson.dumps(SYSTEM_FINGERPRINT) if fingerprint else b"")
            + b"}\n\n"
        )

    def usage(self, usage_body: dict) -> bytes:
        return (
            b"data: "
            + self._head
            + b',"choices":[],"usage":'
            + orjson.dumps(usage_body)
            + b',"system_fingerprint":'
            + orjson.dumps(SYSTEM_FINGERPRINT)
            + b"}\n\n"
        )
