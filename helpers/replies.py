"""Read what a chat model or a chain returned: the answer, the parsed object, or why it is unusable.

A reply can come back complete and still be of no use. ``read_reply`` turns a result into a
:class:`ReplyContent` or raises one of the :class:`ReplyProblem` kinds amap reports per prompt:

* :class:`Truncated` — cut by ``max_tokens`` (``finish_reason`` "length"); the partial answer
  and reasoning are kept on the exception. With thinking on, a cut often falls in the thinking
  and leaves no answer at all.
* :class:`InvalidOutput` — a structured-output chain could not parse the reply (LangChain's
  ``OutputParserException``, pydantic's ``ValidationError``, a JSON decode error, an
  ``include_raw=True`` result whose ``parsing_error`` is set, or a chain that returned None).
* :class:`MalformedToolCall` — a model bound to tools wrote a ``<tool_call>`` the server's
  parser gave up on, so the raw text came back in ``content`` (vLLM's hermes parser does this),
  or LangChain could not read a call's arguments (``invalid_tool_calls``).

``ReplyWatcher`` is a callback handler that records the last chat model result inside a chain,
so that a parse error can be told apart from a cut (the finish_reason is on the raw message).

Example::

    >>> from langchain_core.messages import AIMessage
    >>> reply = read_reply(AIMessage("4", response_metadata={"finish_reason": "stop"}))
    >>> (reply.answer, reply.finish_reason)
    ('4', 'stop')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import openai
import pydantic
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config

from helpers.reasoning import reasoning_field

TOOL_CALL_TAG = "<tool_call>"
PARSE_ERRORS = (OutputParserException, pydantic.ValidationError, json.JSONDecodeError)
RAW_PREVIEW_CHARS = 200
MESSAGE_PREVIEW_CHARS = 300
RETRY_HINT = "not retried (pass retry_invalid=True to retry it: a sampled model may get it right next time)"


@dataclass
class ReplyContent:
    """A usable reply: the answer text and what came with it."""

    answer: str
    reasoning: str | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    parsed: Any = None


class ReplyProblem(Exception):
    """A reply came back but cannot be used as an answer; what it had is kept."""

    kind = "ReplyProblem"

    def __init__(
        self,
        message: str,
        *,
        answer: str | None = None,
        reasoning: str | None = None,
        usage: dict[str, int] | None = None,
        finish_reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.answer = answer
        self.reasoning = reasoning
        self.usage = usage
        self.finish_reason = finish_reason


class Truncated(ReplyProblem):
    """The reply was cut by ``max_tokens`` (``finish_reason`` "length")."""

    kind = "Truncated"


class InvalidOutput(ReplyProblem):
    """The reply does not parse as the structured output the chain asked for."""

    kind = "InvalidOutput"


class MalformedToolCall(ReplyProblem):
    """The model wrote a tool call that could not be read; the raw text is in ``answer``."""

    kind = "MalformedToolCall"


class ReplyWatcher(BaseCallbackHandler):
    """Records the last chat model message of a run (callbacks reach models inside chains)."""

    run_inline = True  # called on the event loop, in order, not in a thread

    def __init__(self) -> None:
        self.message: BaseMessage | None = None

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        generations = response.generations[0] if response.generations else []
        if generations and isinstance(generations[0], ChatGeneration):
            message = generations[0].message
            info = generations[0].generation_info or {}
            if info.get("finish_reason") and not finish_reason(message):
                message.response_metadata = {**message.response_metadata, **info}
            self.message = message


def watched(config: RunnableConfig | None, watcher: ReplyWatcher) -> RunnableConfig:
    """``config`` with ``watcher`` added to its callbacks (a list or a callback manager)."""
    config = ensure_config(config)
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [watcher]
    elif isinstance(callbacks, list):
        config["callbacks"] = [*callbacks, watcher]
    else:
        manager = callbacks.copy()
        manager.add_handler(watcher, inherit=True)
        config["callbacks"] = manager
    return config


def reasoning(message: BaseMessage) -> str | None:
    """Reasoning from ``additional_kwargs`` (``reasoning_content``/``reasoning``) or reasoning blocks."""
    for key in ("reasoning_content", "reasoning"):
        value = message.additional_kwargs.get(key)
        if isinstance(value, str) and value:
            return value
    if isinstance(message.content, list):
        blocks = [
            str(block.get("reasoning") or block.get("text") or "")
            for block in message.content
            if isinstance(block, dict) and block.get("type") in ("reasoning", "thinking")
        ]
        return "".join(blocks) or None
    return None


def usage(message: BaseMessage) -> dict[str, int] | None:
    """``prompt_tokens``, ``completion_tokens``, ``reasoning_tokens`` from ``usage_metadata``."""
    metadata = getattr(message, "usage_metadata", None)
    if not metadata:
        return None
    counts = {
        "prompt_tokens": metadata.get("input_tokens"),
        "completion_tokens": metadata.get("output_tokens"),
        "reasoning_tokens": (metadata.get("output_token_details") or {}).get("reasoning"),
    }
    return {key: value for key, value in counts.items() if value is not None}


def finish_reason(message: BaseMessage) -> str | None:
    metadata = message.response_metadata or {}
    return metadata.get("finish_reason") or metadata.get("stop_reason")


def _preview(text: str | None, limit: int = RAW_PREVIEW_CHARS) -> str:
    text = text or ""
    return repr(text[:limit]) + (" ..." if len(text) > limit else "")


def _truncated(answer: str | None, thought: str | None, tokens: int | None, structured: bool) -> Truncated:
    after = f" after {tokens} tokens" if tokens else ""
    if structured:
        where = f"so the structured reply is incomplete (not valid output); it starts {_preview(answer)}"
    elif not answer and thought:
        where = "inside the thinking: no answer was written yet (the thinking is in .reasoning)"
    else:
        where = "in the answer (the partial text is in .answer)"
    return Truncated(
        f"the reply was cut by max_tokens (finish_reason 'length'){after}, {where}. To fix: raise "
        "max_tokens, turn thinking off (make_chat_model(thinking=False)) so the tokens go to the "
        "answer, or pass accept_truncated=True to keep cut replies as answers.",
        answer=answer,
        reasoning=thought,
        finish_reason="length",
    )


def _message_problem(
    message: BaseMessage, *, tools_bound: bool, accept_truncated: bool, structured: bool
) -> None:
    """Raise Truncated or MalformedToolCall for a raw chat model message, if it is one."""
    text = str(message.text)
    if finish_reason(message) == "length" and not accept_truncated:
        problem = _truncated(
            text, reasoning(message), (usage(message) or {}).get("completion_tokens"), structured
        )
        problem.usage = usage(message)
        raise problem
    invalid = getattr(message, "invalid_tool_calls", None) or []
    raw_call = tools_bound and TOOL_CALL_TAG in text and not getattr(message, "tool_calls", None)
    if invalid or raw_call:
        what = (
            f"LangChain could not read the arguments of {invalid[0].get('name')!r}: "
            f"{invalid[0].get('error') or 'not JSON'} (arguments {_preview(invalid[0].get('args'))})"
            if invalid
            else "the server's tool parser gave up on it, so the raw text came back in content "
            f"instead of tool_calls: {_preview(text)}"
        )
        raise MalformedToolCall(
            f"the model wrote a malformed tool call; {what}. Small models do this now and then; "
            f"{RETRY_HINT}, or force a valid call with tool_choice='required' or a named tool.",
            answer=text,
            reasoning=reasoning(message),
            usage=usage(message),
            finish_reason=finish_reason(message),
        )


def _as_json_text(value: Any) -> str:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    return json.dumps(pydantic.TypeAdapter(Any).dump_python(value, mode="json"), ensure_ascii=False)


def read_reply(
    result: Any,
    *,
    raw: BaseMessage | None = None,
    tools_bound: bool = False,
    accept_truncated: bool = False,
) -> ReplyContent:
    """A :class:`ReplyContent` from what ``ainvoke`` returned, or raise a :class:`ReplyProblem`.

    ``raw`` is the chat model message seen inside a chain (``ReplyWatcher.message``), used when
    ``result`` is not a message itself.
    """
    if isinstance(result, BaseMessage):
        _message_problem(result, tools_bound=tools_bound, accept_truncated=accept_truncated, structured=False)
        calls = list(getattr(result, "tool_calls", None) or [])
        return ReplyContent(
            answer=str(result.text),
            reasoning=reasoning(result),
            usage=usage(result),
            finish_reason=finish_reason(result),
            parsed=calls or None,
        )
    if _is_raw_and_parsed(result):  # with_structured_output(..., include_raw=True)
        raw = result["raw"]
        error = result.get("parsing_error")
        if error is not None:
            raise problem_from_error(
                error, raw, tools_bound=tools_bound, accept_truncated=accept_truncated, parsing=True
            )
        result = result.get("parsed")  # a streamed result has no "parsed" key when it is None
    if raw is not None:
        _message_problem(raw, tools_bound=tools_bound, accept_truncated=accept_truncated, structured=True)
    if result is None:
        raise InvalidOutput(
            "the chain returned None: the reply did not contain the structured output asked for "
            f"(e.g. no tool call); raw text {_preview(raw.text if raw else None)}; {RETRY_HINT}.",
            **_kept(raw),
        )
    kept = _kept(raw)
    if isinstance(result, str):
        return ReplyContent(
            answer=result,
            reasoning=kept["reasoning"],
            usage=kept["usage"],
            finish_reason=kept["finish_reason"],
        )
    return ReplyContent(
        answer=_as_json_text(result),
        reasoning=kept["reasoning"],
        usage=kept["usage"],
        finish_reason=kept["finish_reason"],
        parsed=result,
    )


def _is_raw_and_parsed(result: Any) -> bool:
    return (
        isinstance(result, dict)
        and isinstance(result.get("raw"), BaseMessage)
        and set(result) <= {"raw", "parsed", "parsing_error"}
    )


def _kept(raw: BaseMessage | None) -> dict[str, Any]:
    if raw is None:
        return {"answer": None, "reasoning": None, "usage": None, "finish_reason": None}
    return {
        "answer": str(raw.text),
        "reasoning": reasoning(raw),
        "usage": usage(raw),
        "finish_reason": finish_reason(raw),
    }


def _input_of(exc: BaseException) -> str | None:
    """The text a pydantic ValidationError was given (raised inside the model call, e.g. by parse())."""
    if isinstance(exc, pydantic.ValidationError):
        inputs = [error.get("input") for error in exc.errors()]
        return next((value for value in inputs if isinstance(value, str)), None)
    return None


def completion_problem(exc: openai.LengthFinishReasonError) -> Truncated:
    """The openai SDK's ``parse()`` refuses a cut structured reply; keep what it had."""
    choices = exc.completion.choices or []
    message = choices[0].message.model_dump() if choices else {}
    tokens = exc.completion.usage.completion_tokens if exc.completion.usage else None
    return _truncated(message.get("content"), reasoning_field(message), tokens, structured=True)


def problem_from_error(
    exc: BaseException,
    raw: BaseMessage | None,
    *,
    tools_bound: bool = False,
    accept_truncated: bool = False,
    parsing: bool = False,
) -> ReplyProblem | None:
    """The ReplyProblem an exception from a chain stands for (a cut or a parse error), else None.

    ``parsing``: ``exc`` is known to come from parsing (an ``include_raw`` ``parsing_error``).
    """
    if isinstance(exc, ReplyProblem):  # the kit's model names a cut structured reply itself
        return exc
    if isinstance(exc, openai.LengthFinishReasonError):
        return completion_problem(exc)
    if not parsing and not isinstance(exc, PARSE_ERRORS):
        return None
    if raw is not None:
        try:
            _message_problem(raw, tools_bound=tools_bound, accept_truncated=accept_truncated, structured=True)
        except ReplyProblem as problem:
            return problem
    text = getattr(exc, "llm_output", None) or (raw.text if raw is not None else None) or _input_of(exc)
    message = " ".join(str(exc).split())
    if len(message) > MESSAGE_PREVIEW_CHARS:
        message = message[:MESSAGE_PREVIEW_CHARS] + " ..."
    cut_note = (
        " (it was cut by max_tokens: finish_reason 'length')"
        if raw is not None and finish_reason(raw) == "length"
        else ""
    )
    return InvalidOutput(
        f"the reply does not parse as the structured output asked for{cut_note}: "
        f"{type(exc).__name__}: {message}; raw text {_preview(text)}; {RETRY_HINT}.",
        **{**_kept(raw), "answer": text},
    )
