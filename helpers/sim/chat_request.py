"""Parse and validate a POST /v1/chat/completions body the way vLLM 0.32 does, errors included."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson

from helpers.sim.wire import error_body

KNOWN_FIELDS = frozenset(
    (
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "stop_token_ids",
        "n",
        "stream",
        "stream_options",
        "chat_template_kwargs",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "tools",
        "tool_choice",
        "response_format",
        "ignore_eos",
        "min_tokens",
        "skip_special_tokens",
        "include_stop_str_in_output",
        "parallel_tool_calls",
        "echo",
        "add_generation_prompt",
        "continue_final_message",
        "chat_template",
        "documents",
        "priority",
        "request_id",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
        "prompt_logprobs",
        "spaces_between_special_tokens",
        "truncate_prompt_tokens",
        "structured_outputs",
        "length_penalty",
        "use_beam_search",
        "bad_words",
        "allowed_token_ids",
        "cache_salt",
        "kv_transfer_params",
        "vllm_xargs",
        "return_tokens_as_token_ids",
        "return_token_ids",
        "mm_processor_kwargs",
    )
)


class ApiError(Exception):
    """An HTTP error response, vLLM-shaped."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.decode(errors="replace"))
        self.status = status
        self.body = body
        self.headers = headers or {}


def bad_request(message: str, param: str | None, value: object = None) -> ApiError:
    shown = float(value) if isinstance(value, (int, float)) and param in _FLOAT_PARAMS else value
    text = f"{message} (parameter={param}, value={shown})" if param else message
    return ApiError(400, error_body(text, "BadRequestError", param, 400))


_FLOAT_PARAMS = {"temperature", "top_p"}


def vllm_validation_error(message: str, param: str | None = None) -> ApiError:
    """A 400 from one of vLLM's request validators (`VLLMValidationError` without a value)."""
    text = f"{message} (parameter={param})" if param else message
    return ApiError(400, error_body(text, "BadRequestError", param, 400))


def validation_error(kind: str, loc: str, msg: str, value: object, ctx: dict | None = None) -> ApiError:
    """A pydantic-style 400, as FastAPI's request validation sends it in vLLM."""
    detail = {"type": kind, "loc": loc, "msg": msg, "input": _summarise(value)}
    if ctx is not None:
        detail["ctx"] = ctx
    message = f"1 validation error:\n  {detail!r}"
    return ApiError(400, error_body(message, "Bad Request", loc, 400))


def _summarise(value: object) -> object:
    if isinstance(value, dict):
        return f"<dict of {len(value)} items>"
    if isinstance(value, list):
        return f"<list of {len(value)} items>"
    return value


@dataclass
class ChatRequest:
    model: str | None
    messages: list[dict]
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    enable_thinking: bool
    ignore_eos: bool
    min_tokens: int
    n: int
    unknown_fields: list[str] = field(default_factory=list)


def parse_body(raw: bytes) -> dict:
    """Decode JSON or raise the 400 vLLM sends for malformed JSON."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise validation_error(
                "json_invalid", f"body.{exc.pos}", "JSON decode error", {}, {"error": exc.msg}
            ) from None
        except UnicodeDecodeError:
            raise validation_error(
                "json_invalid", "body.0", "JSON decode error", {}, {"error": "Invalid UTF-8"}
            ) from None
    if not isinstance(body, dict):
        raise validation_error(
            "model_attributes_type",
            "body",
            "Input should be a valid dictionary or object to extract fields from",
            body,
        )
    return body


def to_chat_request(body: dict) -> ChatRequest:
    """Check types the way pydantic would; sampling limits are checked by `check_limits`."""
    if "messages" not in body:
        raise validation_error("missing", "body.messages", "Field required", body)
    messages = body["messages"]
    if not isinstance(messages, list):
        raise validation_error("list_type", "body.messages", "Input should be a valid list", messages)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise validation_error(
                "missing",
                f"body.messages.{index}.role",
                "Field required",
                message,
            )
    stream_options = body.get("stream_options") or {}
    template_kwargs = body.get("chat_template_kwargs") or {}
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise validation_error("string_type", "body.stop", "Input should be a valid string", stop)
    max_tokens_name = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    return ChatRequest(
        model=_typed(body, "model", str),
        messages=messages,
        max_tokens=_typed(body, max_tokens_name, int),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        seed=_typed(body, "seed", int),
        stop=stop,
        stream=bool(_typed(body, "stream", bool) or False),
        include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
        enable_thinking=bool(
            template_kwargs.get("enable_thinking", True) if isinstance(template_kwargs, dict) else True
        ),
        ignore_eos=bool(_typed(body, "ignore_eos", bool) or False),
        min_tokens=_typed(body, "min_tokens", int) or 0,
        n=1 if body.get("n") is None else _typed(body, "n", int),
        unknown_fields=sorted(k for k in body if k not in KNOWN_FIELDS),
    )


def _typed(body: dict, name: str, kind: type) -> object:
    value = body.get(name)
    if value is None:
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    names = {
        int: ("int_parsing", "Input should be a valid integer"),
        bool: ("bool_parsing", "Input should be a valid boolean"),
        str: ("string_type", "Input should be a valid string"),
    }
    kind_name, msg = names[kind]
    raise validation_error(kind_name, f"body.{name}", msg, value)


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise validation_error("float_parsing", f"body.{name}", "Input should be a valid number", value)
    return float(value)


def check_limits(request: ChatRequest, max_model_len: int) -> None:
    """The sampling-parameter checks vLLM makes after parsing."""
    if request.n != 1:
        raise bad_request(
            f"n={request.n} is not supported: the simulator returns exactly one choice per "
            "request. Leave n out (or send n=1) and send several requests instead.",
            "n",
            request.n,
        )
    if request.temperature is not None and request.temperature < 0:
        raise bad_request(
            f"temperature must be non-negative, got {request.temperature}.",
            "temperature",
            request.temperature,
        )
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise bad_request(f"top_p must be in (0, 1], got {request.top_p}.", "top_p", request.top_p)
    if request.max_tokens is not None:
        if request.max_tokens < 1:
            raise bad_request(
                f"max_tokens must be at least 1, got {request.max_tokens}.",
                "max_tokens",
                request.max_tokens,
            )
        if request.max_tokens > max_model_len:
            raise bad_request(
                f"max_tokens={request.max_tokens} cannot be greater than "
                f"max_model_len={max_model_len}. Please request fewer output tokens.",
                "max_tokens",
                request.max_tokens,
            )
    if not request.messages:
        raise bad_request(
            'messages must hold at least one message, e.g. [{"role": "user", "content": "Hello"}].',
            "messages",
            [],
        )


def check_prompt_length(prompt_tokens: int, max_model_len: int) -> None:
    if prompt_tokens >= max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"prompt contains at least {prompt_tokens} input tokens, which exceeds this limit "
            "even without any output tokens. Please reduce the length of the input prompt.",
            "input_tokens",
            prompt_tokens,
        )


def unknown_model(name: str, served: list[str]) -> ApiError:
    body = error_body(
        f"The model `{name}` does not exist. Valid aliases: {', '.join(served)}.",
        "NotFoundError",
        "model",
        404,
    )
    return ApiError(404, body)
