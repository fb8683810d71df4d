"""What the kit's chat model repairs on the way back: tool arguments that are JSON but no object,
vLLM's refusal of tools (which flags to add), a structured reply cut by ``max_tokens``, and a
structured reply the server filed as reasoning.

Example:
    >>> reply = {"choices": [{"message": {"tool_calls": [
    ...     {"id": "c1", "function": {"name": "f", "arguments": "true"}}]}}]}
    >>> pop_calls_without_object_arguments(reply)[0][0]["error"]
    'the arguments are bool JSON, not a JSON object'
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import openai
from langchain_core.messages.tool import invalid_tool_call
from langchain_openai.chat_models.base import OpenAIInvalidRequestError
from pydantic import TypeAdapter

from helpers.errors import TOOLS_HINT, tool_flags_missing
from helpers.replies import completion_problem


class ToolFlagsMissingError(OpenAIInvalidRequestError):
    """vLLM refused a request with tools: it was started without ``--enable-auto-tool-choice
    --tool-call-parser hermes``. The message ends with the ``vllm serve`` command to use.

    An ``openai.BadRequestError`` (HTTP 400, never retried) and LangChain's
    ``ModelInvalidRequestError``, like the error it replaces.
    """


@contextmanager
def errors_explained() -> Iterator[None]:
    """Re-raise vLLM's refusal of tools as ``ToolFlagsMissingError`` saying which flags to add, and
    the SDK's ``LengthFinishReasonError`` (a structured reply cut by ``max_tokens``) as the kit's
    ``helpers.replies.Truncated``, with its advice and the partial text."""
    try:
        yield
    except openai.LengthFinishReasonError as exc:
        raise completion_problem(exc) from exc
    except openai.BadRequestError as exc:
        if isinstance(exc, ToolFlagsMissingError) or not tool_flags_missing(exc):
            raise
        message = f"{exc.message.rstrip('.')}. To fix: {TOOLS_HINT}"
        raise ToolFlagsMissingError(message=message, response=exc.response, body=exc.body) from exc


def pop_calls_without_object_arguments(response: dict) -> dict[int, list]:
    """Remove tool calls whose arguments are valid JSON but no object (a small model writes
    ``true``); LangChain would fail on them. Returns them as invalid tool calls, per choice index.
    """
    popped: dict[int, list] = {}
    for index, choice in enumerate(response.get("choices") or []):
        calls = (choice.get("message") or {}).get("tool_calls")
        if not calls:
            continue
        kept = []
        for call in calls:
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except (TypeError, ValueError):  # not JSON: LangChain reports it as invalid itself
                arguments = {}
            if isinstance(arguments, dict):
                kept.append(call)
                continue
            error = f"the arguments are {type(arguments).__name__} JSON, not a JSON object"
            popped.setdefault(index, []).append(
                invalid_tool_call(
                    name=function.get("name"), args=function.get("arguments"), id=call.get("id"), error=error
                )
            )
        if index in popped:
            choice["message"]["tool_calls"] = kept or None
    return popped


def structured_answer(response_format: object, response: object, answer: str) -> object | None:
    """The structured-output value of ``answer`` when the SDK's ``parse()`` had no content to parse.

    vLLM's ``deepseek_r1`` reasoning parser files a thinking-off reply as ``reasoning`` with
    ``content: null``, so ``parsed`` stays None and LangChain would find no 'parsed' field; the
    kit's answer (the reasoning moved back, ``helpers.reasoning``) is parsed against the request's
    ``response_format`` type instead. None when that is no type (a dict schema: LangChain parses
    the answer itself), the response was parsed already, or refused. Invalid JSON raises pydantic's
    ``ValidationError``, as the SDK's own parse does.
    """
    choices = getattr(response, "choices", None)
    if not isinstance(response_format, type) or not choices or not answer:
        return None
    message = choices[0].message
    if getattr(message, "parsed", None) is not None or message.content or getattr(message, "refusal", None):
        return None
    return TypeAdapter(response_format).validate_json(answer)
