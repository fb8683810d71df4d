"""Middleware for ``langchain.agents.create_agent`` agents on Qwen3 served by vLLM (extra ``agents``).

Two pitfalls of LangChain 1.x agents with a small Qwen3, and the middleware that handles each:

* ``RetryMalformedToolCalls``: when the model's tool call cannot be read, ``create_agent`` ends the
  loop and returns the broken reply as the answer (langchain-ai/langchain#33504). On vLLM this comes
  in three forms: ``invalid_tool_calls`` (streamed arguments that are not JSON, or arguments that
  are no JSON object), raw ``<tool_call>`` text in ``content`` (the hermes parser gave up on it) and
  an empty reply. The middleware sends the same request again (bypassing a client cache, which would
  return the same broken reply), up to ``max_retries`` times, then raises ``MalformedToolCallError``
  instead of ending quietly.
* ``ThinkingOffWhenToolChoiceForced``: a ``response_format`` that LangChain serves with
  ``ToolStrategy`` (every Qwen3 model: LangChain has no profile for it) binds the tools with
  ``tool_choice="any"``, sent as ``"required"``, on every model call (langchain-ai/langchain#35539).
  vLLM accepts that with thinking on, but Qwen3 thinks first: the forced call costs the thinking
  tokens, and when ``max_tokens`` cuts the thinking there is no call, so ``create_agent`` asks again
  with the identical request until ``GraphRecursionError``. The middleware turns thinking off for
  the calls whose tool choice is forced.

``ModelCallLog`` records every model call of an agent run (a callback): time to first token when
the model streams, prompt tokens, the prompt tokens the server's prefix cache served
(``cached_tokens``, sent by vLLM with ``--enable-prompt-tokens-details``), output tokens.

Example::

    from langchain.agents import create_agent
    from helpers.agents import RetryMalformedToolCalls, ThinkingOffWhenToolChoiceForced
    agent = create_agent(make_chat_model(thinking=True), tools=[get_weather], response_format=Weather,
                         middleware=[RetryMalformedToolCalls(), ThinkingOffWhenToolChoiceForced()])
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from helpers.extras import require_extra

require_extra("agents", ["langchain.agents"], needed_for="helpers.agents (middleware for create_agent)")

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse  # noqa: E402
from langchain.agents.structured_output import ProviderStrategy  # noqa: E402
from langchain_core.callbacks import AsyncCallbackHandler  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, LLMResult  # noqa: E402

from helpers.chat import ReasoningChatOpenAI, thinking_extra_body  # noqa: E402

__all__ = [
    "MalformedToolCallError",
    "ModelCall",
    "ModelCallLog",
    "RetryMalformedToolCalls",
    "ThinkingOffWhenToolChoiceForced",
    "tool_call_problem",
    "without_thinking",
]

_RAW_CALL_TAG = "<tool_call>"
_FORCED_CHOICES = ("any", "required")


class MalformedToolCallError(RuntimeError):
    """The model's tool call could not be read, and the retries did not help either."""


def tool_call_problem(message: AIMessage) -> str | None:
    """Why ``message`` cannot continue an agent loop, or None if it can.

    A reply with readable tool calls, or with answer text, is fine. Problems: calls in
    ``invalid_tool_calls``; ``<tool_call>`` text left in ``content`` (vLLM's parser gave up on it);
    nothing at all (no call and no answer, e.g. a streamed call whose name was never complete).
    """
    if message.invalid_tool_calls:
        details = "; ".join(
            f"{call.get('name') or '?'}({call.get('args') or ''}): {call.get('error') or 'unreadable'}"
            for call in message.invalid_tool_calls
        )
        return f"unreadable tool call(s): {details}"
    if message.tool_calls:
        return None
    text = message.text
    if _RAW_CALL_TAG in text:
        return f"tool-call text the server's parser could not read: {text.strip()[:200]!r}"
    if not text.strip():
        finish = message.response_metadata.get("finish_reason")
        return f"an empty reply (no answer, no tool call; finish_reason {finish!r})"
    return None


def _last_ai_message(response: ModelResponse) -> AIMessage | None:
    return next((m for m in reversed(response.result) if isinstance(m, AIMessage)), None)


class RetryMalformedToolCalls(AgentMiddleware):
    """Retry a model call whose tool call cannot be read; raise if it stays unreadable.

    Args:
        max_retries: further attempts after the first (each one is a new sample of a sampling
            model; a client cache is bypassed for them).
    """

    def __init__(self, max_retries: int = 2) -> None:
        super().__init__()
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        self.retries = 0  # retries made so far, over all runs of the agent

    def _retry_request(self, request: ModelRequest) -> ModelRequest:
        model = request.model
        if getattr(model, "cache", False) is not False:
            model = model.model_copy(update={"cache": False})
        return request.override(model=model)

    def _give_up(self, problem: str) -> MalformedToolCallError:
        return MalformedToolCallError(
            f"the model's reply had {problem}, after {self.max_retries + 1} attempt(s). To fix: raise "
            "max_tokens if the reply was cut (finish_reason 'length'), turn thinking off for tool calls, "
            "or allow more retries (RetryMalformedToolCalls(max_retries=...))."
        )

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        response = handler(request)
        for _ in range(self.max_retries):
            message = _last_ai_message(response)
            if message is None or tool_call_problem(message) is None:
                return response
            self.retries += 1
            response = handler(self._retry_request(request))
        message = _last_ai_message(response)
        if message is not None and (problem := tool_call_problem(message)):
            raise self._give_up(problem)
        return response

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        response = await handler(request)
        for _ in range(self.max_retries):
            message = _last_ai_message(response)
            if message is None or tool_call_problem(message) is None:
                return response
            self.retries += 1
            response = await handler(self._retry_request(request))
        message = _last_ai_message(response)
        if message is not None and (problem := tool_call_problem(message)):
            raise self._give_up(problem)
        return response


def without_thinking(model: BaseChatModel) -> BaseChatModel:
    """A copy of a ``make_chat_model`` model with Qwen3's thinking off (other models unchanged)."""
    if not isinstance(model, ReasoningChatOpenAI) or model.thinking is False:
        return model
    return model.model_copy(update={"extra_body": thinking_extra_body(False, model.extra_body)})


def tool_choice_forced(request: ModelRequest) -> bool:
    """True if this model call will force a tool call: a ``tool_choice`` of "any"/"required"/a
    tool name, or a ``response_format`` served by ``ToolStrategy`` (which binds ``"any"``).

    A bare schema counts as ``ToolStrategy``: that is what LangChain picks for models it has no
    profile for, Qwen3 on vLLM among them.
    """
    choice = request.tool_choice
    if (
        choice in _FORCED_CHOICES
        or isinstance(choice, dict)
        or (isinstance(choice, str) and choice not in ("auto", "none"))
    ):
        return True
    return request.response_format is not None and not isinstance(request.response_format, ProviderStrategy)


class ThinkingOffWhenToolChoiceForced(AgentMiddleware):
    """Send the model calls whose tool choice is forced with Qwen3's thinking off."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_switched = 0  # model calls sent with thinking off by this middleware

    def _prepared(self, request: ModelRequest) -> ModelRequest:
        if not tool_choice_forced(request):
            return request
        model = without_thinking(request.model)
        if model is request.model:
            return request
        self.calls_switched += 1
        return request.override(model=model)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        return handler(self._prepared(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        return await handler(self._prepared(request))


@dataclass
class ModelCall:
    """One model call of an agent run, as the client saw it."""

    started: float  # time.perf_counter() when the call started
    messages: int  # messages sent (the system prompt included)
    ttft_s: float | None  # time to the first streamed token (None: not streamed)
    duration_s: float
    prompt_tokens: int | None
    cached_tokens: int | None  # served by the server's prefix cache (None: not reported)
    output_tokens: int | None
    tool_calls: int
    finish_reason: str | None


class ModelCallLog(AsyncCallbackHandler):
    """A callback that records each chat-model call (``config={"callbacks": [log]}``) in ``calls``.

    Time to first token needs a streamed call: ``make_chat_model(streaming=True)``, or an agent
    run with ``stream_mode="messages"``. ``cached_tokens`` comes from the usage's
    ``input_token_details.cache_read`` (vLLM's ``prompt_tokens_details.cached_tokens``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ModelCall] = []
        self._open: dict[UUID, tuple[float, int, list[float]]] = {}

    async def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        sent = len(messages[0]) if messages else 0
        self._open[run_id] = (time.perf_counter(), sent, [])

    async def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        opened = self._open.get(run_id)
        if opened is not None and not opened[2]:
            opened[2].append(time.perf_counter())

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        opened = self._open.pop(run_id, None)
        if opened is None:
            return
        started, sent, first_token = opened
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        message = generation.message if isinstance(generation, ChatGeneration) else None
        usage = getattr(message, "usage_metadata", None) or {}
        details = usage.get("input_token_details") or {}
        self.calls.append(
            ModelCall(
                started=started,
                messages=sent,
                ttft_s=first_token[0] - started if first_token else None,
                duration_s=time.perf_counter() - started,
                prompt_tokens=usage.get("input_tokens"),
                cached_tokens=details.get("cache_read"),
                output_tokens=usage.get("output_tokens"),
                tool_calls=len(getattr(message, "tool_calls", None) or []),
                finish_reason=(message.response_metadata.get("finish_reason") if message else None),
            )
        )

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._open.pop(run_id, None)
