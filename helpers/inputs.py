"""What amap accepts as one item of a batch, checked before anything is sent, and how it is stored.

An item is one of:

* a string — sent as one user message;
* a message list — LangChain messages (``HumanMessage``, ``SystemMessage``, ``AIMessage`` with
  tool calls, ``ToolMessage``, ...) or OpenAI-style dicts ``{"role": ..., "content": ...}``;
* a ``PromptValue`` (what a prompt template's ``invoke`` returns);
* a dict of template variables, when the model is a chain that starts with a prompt template
  (``prompt | model``): a chat model itself takes no dict.

``as_record(item)`` is the JSON-ready form kept in ``Outcome.prompt`` and the checkpoint file: a
string stays a string; messages and chat prompt values become OpenAI-style dicts
(``convert_to_openai_messages``); a dict of variables stays a dict. ``record_key`` is the stable
text a checkpoint matches items by.

Example::

    >>> as_record([{"role": "user", "content": "你好"}])
    [{'role': 'user', 'content': '你好'}]
    >>> record_key("hi") == record_key(as_record("hi"))
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages, convert_to_openai_messages
from langchain_core.prompt_values import PromptValue, StringPromptValue

PromptRecord = str | list[dict[str, Any]] | dict[str, Any]
KINDS = (
    "a string, a list of messages (LangChain messages or {'role': ..., 'content': ...} dicts) "
    "or a PromptValue"
)


def _check_message_list(index: int, messages: Sequence[Any]) -> None:
    if not messages:
        raise ValueError(f"prompts[{index}] is an empty message list; give it at least one message.")
    for position, message in enumerate(messages):
        where = f"prompts[{index}][{position}]"
        if isinstance(message, BaseMessage):
            continue
        if not isinstance(message, Mapping):
            raise TypeError(
                f"{where} is {type(message).__name__} ({message!r:.60}); a message is a LangChain "
                "message or a dict such as {'role': 'user', 'content': '...'}."
            )
        if not isinstance(message.get("role"), str) or not (
            "content" in message or message.get("tool_calls")
        ):
            raise ValueError(
                f"{where} is a dict without 'role' and 'content' ({dict(message)!r:.80}); write it "
                "as {'role': 'user', 'content': '...'} (roles: system, user, assistant, tool)."
            )
        try:
            convert_to_messages([message])
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ValueError(f"{where} is not a valid message: {exc}") from None


def check_item(index: int, item: Any, *, takes_variables: bool) -> None:
    """Raise TypeError/ValueError, naming ``prompts[index]`` and what to change, for a bad item."""
    if isinstance(item, str):
        if not item.strip():
            raise ValueError(
                f"prompts[{index}] is empty or only whitespace; remove it or give it some text "
                "(the model would answer an empty message with noise)."
            )
        return
    if isinstance(item, PromptValue):
        return
    if isinstance(item, Mapping):
        if takes_variables:
            return
        hint = (
            "; a conversation is a list of messages: wrap it, [{'role': 'user', 'content': ...}]"
            if "role" in item
            else "; a dict of template variables needs a chain that starts with a prompt template "
            "(prompt | model)"
        )
        raise TypeError(f"prompts[{index}] is a dict ({dict(item)!r:.60}), not a prompt{hint}.")
    if isinstance(item, (list, tuple)):
        _check_message_list(index, item)
        return
    variables = ", or a dict of the prompt template's variables" if takes_variables else ""
    raise TypeError(
        f"prompts[{index}] is {type(item).__name__} ({item!r:.60}); each item must be {KINDS}"
        f"{variables}. A string is sent as one user message: convert it with str(...) or fix the "
        "input list."
    )


def checked_items(items: Sequence[Any], *, takes_variables: bool) -> list[Any]:
    """``items`` as a list, each checked (see :func:`check_item`)."""
    if isinstance(items, (str, bytes)):
        raise TypeError(
            "prompts must be a list of prompts, got a single string; wrap it: amap(model, [prompt])."
        )
    if isinstance(items, (PromptValue, Mapping)):
        raise TypeError(
            f"prompts must be a list of prompts, got a single {type(items).__name__}; wrap it: "
            "amap(model, [prompt])."
        )
    try:
        item_list = list(items)
    except TypeError:
        raise TypeError(f"prompts must be a list of prompts, got {type(items).__name__}.") from None
    for index, item in enumerate(item_list):
        check_item(index, item, takes_variables=takes_variables)
    return item_list


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def as_record(item: Any) -> PromptRecord:
    """The JSON-ready form of an item, as stored in ``Outcome.prompt`` (see the module docstring)."""
    if isinstance(item, str):
        return item
    if isinstance(item, StringPromptValue):
        return item.text
    if isinstance(item, PromptValue):
        return _jsonable(convert_to_openai_messages(item.to_messages()))
    if isinstance(item, Mapping):
        return _jsonable(dict(item))
    return _jsonable(convert_to_openai_messages(list(item)))


def record_key(record: PromptRecord) -> str:
    """Stable text for a record: equal for the same prompt, whatever the order of its keys."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
