"""Look inside a LangChain Runnable for its chat models, and swap them for prepared copies.

``model.with_structured_output(Person)``, ``model.bind_tools(tools)`` and ``prompt | model`` are
trees of ``RunnableBinding`` / ``RunnableSequence`` / ``RunnableParallel`` / ``RunnableWithFallbacks``
/ ``RunnableAssign`` whose leaves include the chat model. These are pydantic models, so the tree
is walked through their fields; a chat model called from inside a ``RunnableLambda`` (or any
plain function) is invisible here.

Example::

    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> chain = FakeListChatModel(responses=["hi"]).bind(stop=["###"])
    >>> [type(m).__name__ for m in chat_models(chain)]
    ['FakeListChatModel']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableParallel, RunnableSequence
from langchain_core.runnables.fallbacks import RunnableWithFallbacks
from pydantic import BaseModel


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        yield from value
    elif isinstance(value, Mapping):
        yield from value.values()
    else:
        yield value


def _walk(node: Runnable) -> Iterator[Runnable]:
    """``node`` and every Runnable below it (not below a language model)."""
    yield node
    if isinstance(node, BaseLanguageModel) or not isinstance(node, BaseModel):
        return
    for name in type(node).model_fields:
        for child in _children(getattr(node, name, None)):
            if isinstance(child, Runnable):
                yield from _walk(child)


def chat_models(runnable: Runnable) -> list[BaseLanguageModel]:
    """The language models inside ``runnable`` (itself, if it is one), each once."""
    found: dict[int, BaseLanguageModel] = {}
    for node in _walk(runnable):
        if isinstance(node, BaseLanguageModel):
            found.setdefault(id(node), node)
    return list(found.values())


def binds_tools(runnable: Runnable) -> bool:
    """True if a ``bind_tools`` (a binding with ``tools``) is inside ``runnable``."""
    return any(isinstance(node, RunnableBinding) and node.kwargs.get("tools") for node in _walk(runnable))


def starts_with_language_model(runnable: Runnable) -> bool:
    """True if ``runnable`` hands its input straight to a language model (no prompt template first)."""
    if isinstance(runnable, BaseLanguageModel):
        return True
    if isinstance(runnable, RunnableBinding):
        return starts_with_language_model(runnable.bound)
    if isinstance(runnable, RunnableSequence):
        return starts_with_language_model(runnable.first)
    if isinstance(runnable, RunnableWithFallbacks):
        return starts_with_language_model(runnable.runnable)
    if isinstance(runnable, RunnableParallel):
        return bool(runnable.steps__) and all(
            starts_with_language_model(step) for step in runnable.steps__.values()
        )
    return False


def _swapped_value(value: Any, swap: Callable[[BaseLanguageModel], Runnable]) -> Any:
    if isinstance(value, Runnable):
        return swap_language_models(value, swap)
    if isinstance(value, (list, tuple)):
        items = [_swapped_value(item, swap) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    if isinstance(value, Mapping):
        mapped = {key: _swapped_value(item, swap) for key, item in value.items()}
        return mapped if any(mapped[key] is not value[key] for key in value) else value
    return value


def swap_language_models(runnable: Runnable, swap: Callable[[BaseLanguageModel], Runnable]) -> Runnable:
    """A copy of ``runnable`` with ``swap(model)`` in place of every language model inside it.

    Nodes without a model below them are kept as they are (not copied).
    """
    if isinstance(runnable, BaseLanguageModel):
        return swap(runnable)
    if not isinstance(runnable, BaseModel):
        return runnable
    update = {}
    for name in type(runnable).model_fields:
        value = getattr(runnable, name, None)
        new = _swapped_value(value, swap)
        if new is not value:
            update[name] = new
    return runnable.model_copy(update=update) if update else runnable
