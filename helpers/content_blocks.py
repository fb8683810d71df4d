"""Qwen3's reasoning in LangChain's standard content blocks: ``reply.content_blocks`` starts with a
``{"type": "reasoning", ...}`` block, as LangChain's own providers (Groq, DeepSeek, Ollama) show it.

The kit's replies carry ``response_metadata["model_provider"] = "vllm"``; the translator registered
for it here (LangChain's ``register_translator``, the route for integrations outside
langchain-core) is OpenAI's chat-completions translator with the reasoning kept in
``additional_kwargs["reasoning_content"]`` put first, for messages and (merged) streamed chunks.

Example:
    >>> from langchain_core.messages import AIMessage
    >>> reply = AIMessage("4", additional_kwargs={"reasoning_content": "2+2"},
    ...                   response_metadata={"model_provider": MODEL_PROVIDER})
    >>> [block["type"] for block in reply.content_blocks]
    ['reasoning', 'text']
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages import content as types
from langchain_core.messages.block_translators import get_translator, register_translator
from langchain_core.messages.block_translators.openai import translate_content, translate_content_chunk

from helpers.reasoning import REASONING_KEY

MODEL_PROVIDER = "vllm"
REASONING_BLOCK_INDEX = "lc_reasoning"  # LangChain keeps an "lc_" index as it is when merging chunks


def _with_reasoning(
    message: AIMessage, blocks: list[types.ContentBlock], **index: str
) -> list[types.ContentBlock]:
    reasoning = message.additional_kwargs.get(REASONING_KEY)
    if not isinstance(reasoning, str) or not reasoning or any(b.get("type") == "reasoning" for b in blocks):
        return blocks
    return [{"type": "reasoning", "reasoning": reasoning, **index}, *blocks]  # type: ignore[typeddict-item]


def translate_reply(message: AIMessage) -> list[types.ContentBlock]:
    """OpenAI's blocks for ``message``, after a reasoning block if it has reasoning."""
    return _with_reasoning(message, translate_content(message))


def translate_reply_chunk(message: AIMessageChunk) -> list[types.ContentBlock]:
    """The same for a streamed chunk (or chunks merged with ``+``). The reasoning block has an index
    of its own, so that with ``output_version="v1"`` (content made of these blocks) the chunks'
    reasoning merges into one block, apart from the text and tool-call blocks LangChain numbers."""
    return _with_reasoning(message, translate_content_chunk(message), index=REASONING_BLOCK_INDEX)


if get_translator(MODEL_PROVIDER) is None:  # a LangChain that knows vLLM itself keeps its own
    register_translator(MODEL_PROVIDER, translate_reply, translate_reply_chunk)
