"""What a simulated Qwen3 does when it is given tools: which tools it calls, with which
arguments, the Hermes text it writes for them, and its answer once the tool results are back.

Decision rule for `tool_choice` "auto" (and None), deterministic:
- A tool matches when its keywords share one with the last user message's keywords, or when the
  message names the tool ("magic_function(3)", "use the add tool"). Keywords of a text: its
  English words, lower-cased and lightly stemmed (-s/-es/-ies/-ing/-ed), without `_STOPWORDS`,
  plus the topics of `_TOPICS` it mentions in English or Chinese (天气 -> weather, 加/相加/求和
  -> add, "3 + 2" -> add, ...). A tool's keywords come from its name (split on `_`, `-` and
  camelCase) and description. When the message names tools outright, only those match.
- Tools that already have a result in the current turn (messages after the last user message)
  are not called again; the other matching tools are called, in the order of `tools`. None
  left: no call, the model answers in text (`tool_result_answer`), so agent loops end.
- A tool is called once per item when the question asks for several (Qwen3 writes one
  `<tool_call>` each): a string argument whose value is one of a list in the prompt ("北京和上海",
  "Paris, London and Tokyo"; joined by "and", so not "San Francisco, CA") gets one call per
  item; numeric arguments that take the first of several equal groups of the prompt's numbers
  ("2+3 和 4+5") get one call per group.
- `parallel_tool_calls` False: only the first of them (vLLM drops calls after the first).
Other `tool_choice` values: "none" -> no call; a named function -> exactly that call;
"required" -> the calls "auto" would make, else the best-matching tool, else the first tool.

Arguments come from `guided.schema_instance` over the tool's `parameters`: required keys always,
optional ones when the prompt gives a value for them, values taken from the prompt.

Example:
    >>> city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    >>> tools = [{"type": "function", "function": {"name": "get_weather",
    ...           "description": "Current weather for a city", "parameters": city}}]
    >>> calls = plan_tool_calls([{"role": "user", "content": "北京今天天气怎么样?"}], tools, "auto",
    ...                         None, random.Random(0))
    >>> hermes_text(calls)
    '<tool_call>\\n{"name": "get_weather", "arguments": {"city": "北京"}}\\n</tool_call>'
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from helpers.sim.guided import GrammarError, schema_instance
from helpers.sim.prompt_facts import PromptFacts
from helpers.sim.text import _EN_ANSWER_FIRST, _ZH_ANSWER_FIRST
from helpers.sim.tokens import is_chinese, message_text

# topic -> (English keywords, Chinese words or regexes that mention it)
_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "weather": (("weather", "temperature", "forecast", "rain", "sunny"),
                ("天气", "气温", "温度", "下雨", "下雪", "晴", "预报")),
    "add": (("add", "adder", "addition", "sum", "plus", "total"),
            ("加", "相加", "求和", "总和", r"\d\s*和\s*\d", r"\d\s*\+\s*\d")),
    "calculate": (("calculate", "calculator", "calculation", "compute", "math", "arithmetic"),
                  ("计算", "算", "等于", r"\d\s*[-+*/×÷]\s*\d")),
    "multiply": (("multiply", "multiplication", "product", "times"),
                 ("乘", "相乘", "乘以", r"\d\s*[*×]\s*\d")),
    "subtract": (("subtract", "subtraction", "minus", "difference"), ("减", "减去", r"\d\s*-\s*\d")),
    "divide": (("divide", "division", "quotient"), ("除以", "除", r"\d\s*[/÷]\s*\d")),
    "time": (("time", "clock", "date", "today", "now"), ("时间", "几点", "日期", "现在", "今天几号")),
    "search": (("search", "find", "lookup", "look"), ("搜索", "查找", "搜", "查询", "查一下")),
    "translate": (("translate", "translation", "translator"), ("翻译", "译成", "译为")),
    "currency": (("exchange", "currency", "convert", "rate"), ("汇率", "换算", "兑换", "货币")),
    "stock": (("stock", "share", "ticker", "quote"), ("股票", "股价", "股市")),
    "news": (("news", "headline"), ("新闻", "头条")),
    "email": (("email", "mail"), ("邮件", "邮箱", "发信")),
    "map": (("map", "route", "direction", "navigate", "distance"), ("地图", "路线", "导航", "距离")),
}  # fmt: skip
_STOPWORDS = frozenset((
    "a", "an", "the", "of", "for", "to", "in", "on", "at", "by", "with", "and", "or", "is", "are",
    "be", "was", "what", "which", "who", "how", "get", "set", "use", "using", "tool", "tools",
    "function", "value", "current", "given", "input", "return", "returns", "this", "that", "it",
    "from", "me", "my", "you", "your", "please", "can", "could", "would", "will", "do", "does",
    "information", "info", "data", "result", "two", "one", "some", "any", "all", "about", "city",
    "name", "number", "integer", "float", "string", "new", "make", "run", "call",
))  # fmt: skip
_WORD = re.compile(r"[A-Za-z]+")
_MENTION = 10  # score of a tool the message names outright
_AND = re.compile(r"[和与及、&]|\band\b", re.IGNORECASE)


@dataclass(frozen=True)
class PlannedCall:
    """One tool call the simulated model makes."""

    name: str
    arguments: dict


def plan_tool_calls(
    messages: list[dict],
    tools: list[dict],
    tool_choice: str | dict | None,
    parallel_tool_calls: bool | None,
    rng: random.Random,
) -> list[PlannedCall]:
    """The calls the simulated model makes for this request (the rule is in the module docstring)."""
    if not tools or tool_choice == "none":
        return []
    prompt = _last_user_text(messages)
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name")
        tool = next((t for t in tools if _function(t).get("name") == name), None)
        return [] if tool is None else [_call(tool, prompt, rng)]
    answered = _answered_tools(messages)
    scores = [(_score(tool, prompt), tool) for tool in tools]
    if any(score >= _MENTION for score, _ in scores):  # tools named outright beat keyword matches
        scores = [(score if score >= _MENTION else 0, tool) for score, tool in scores]
    chosen = [tool for score, tool in scores if score > 0 and _function(tool).get("name") not in answered]
    if not chosen and tool_choice == "required":
        best_score, best = max(scores, key=lambda item: item[0])  # max keeps the first of equals
        chosen = [best if best_score > 0 else tools[0]]
    calls = [call for tool in chosen for call in _calls_per_item(_call(tool, prompt, rng), prompt)]
    return calls[:1] if parallel_tool_calls is False else calls


def arguments_for(parameters: dict | None, prompt_text: str, rng: random.Random) -> dict:
    """Arguments valid for a tool's `parameters` schema, with values from `prompt_text`.

    >>> arguments_for({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type":
    ...     "integer"}}, "required": ["a", "b"]}, "2 加 3 等于几?", random.Random(0))
    {'a': 2, 'b': 3}
    """
    if not parameters or (not parameters.get("properties") and not parameters.get("required")):
        return {}
    try:
        value = schema_instance(parameters, PromptFacts(prompt_text), rng, optional="prompted")
    except GrammarError:  # no instance exists (e.g. minimum > maximum): nothing valid to write
        return {}
    return value if isinstance(value, dict) else {}


def hermes_text(calls: list[PlannedCall]) -> str:
    """The text Qwen3 writes for `calls`: one `<tool_call>` block per call, joined by newlines."""
    return "\n".join(_hermes_block(json.dumps(_payload(call), ensure_ascii=False)) for call in calls)


def malformed_hermes_text(calls: list[PlannedCall], rng: random.Random) -> str:
    """`hermes_text` with the first call broken so that vLLM's hermes parser gives up on it.

    The breakage, chosen by `rng`: both closing braces missing (as in the transcript
    `hermes-qwen3-tools-auto-malformed`), one closing brace missing, the arguments cut off
    mid-value, or Python-style single quotes. The text inside the first `<tool_call>` never
    parses as JSON.
    """
    if not calls:
        raise ValueError("malformed_hermes_text needs at least one call")
    good = json.dumps(_payload(calls[0]), ensure_ascii=False)
    kind = rng.choice(("unclosed", "missing_brace", "truncated", "single_quotes"))
    if kind == "unclosed":
        broken = good[:-2]
    elif kind == "missing_brace":
        broken = good[:-1]
    elif kind == "truncated":
        arguments = json.dumps(calls[0].arguments, ensure_ascii=False)
        cut = arguments[: max(1, len(arguments) // 2)]
        broken = json.dumps({"name": calls[0].name}, ensure_ascii=False)[:-1] + f', "arguments": {cut}'
    else:
        broken = repr(_payload(calls[0]))
    rest = [json.dumps(_payload(call), ensure_ascii=False) for call in calls[1:]]
    return "\n".join(_hermes_block(text) for text in [broken, *rest])


def tool_result_answer(messages: list[dict]) -> str | None:
    """The model's answer once the conversation ends with tool results, quoting them.

    In the language of the last user message and marked as simulated, e.g.
    "这是 Qwen3-0.6B 模拟器生成的回答（没有运行真实模型）。根据 get_weather 的结果：晴, 21°C。"
    None when the last message is not a tool result.
    """
    results: list[dict] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, message)
    if not results:
        return None
    names = _call_names(messages)
    chinese = is_chinese(_last_user_text(messages))
    parts = []
    for result in results:
        name = names.get(result.get("tool_call_id")) or result.get("name") or "tool"
        content = _short(message_text(result.get("content")))
        if chinese:
            parts.append(f"根据 {name} 的结果：{content}")
        else:
            parts.append(f"According to {name}: {content}")
    if chinese:
        return _ZH_ANSWER_FIRST + "；".join(parts) + "。"
    return _EN_ANSWER_FIRST + " " + " ".join(part + "." for part in parts)


def _hermes_block(inner: str) -> str:
    return f"<tool_call>\n{inner}\n</tool_call>"


def _payload(call: PlannedCall) -> dict:
    return {"name": call.name, "arguments": call.arguments}


def _function(tool: dict) -> dict:
    function = tool.get("function")
    return function if isinstance(function, dict) else {}


def _call(tool: dict, prompt: str, rng: random.Random) -> PlannedCall:
    function = _function(tool)
    return PlannedCall(function.get("name", ""), arguments_for(function.get("parameters"), prompt, rng))


def _calls_per_item(call: PlannedCall, prompt: str) -> list[PlannedCall]:
    """`call` repeated for each item the prompt lists (rule in the module docstring), else [call]."""
    facts = PromptFacts(prompt)
    arguments = call.arguments
    items = facts.list_items
    listed = [key for key, value in arguments.items() if isinstance(value, str) and value in items]
    if len(items) > 1 and len(listed) == 1 and _joined_by_and(prompt, items):
        return [PlannedCall(call.name, {**arguments, listed[0]: item}) for item in items]
    numeric = [
        key
        for key, value in arguments.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    numbers, width = facts.numbers, len(numeric)
    if (
        width
        and len(numbers) > width
        and len(numbers) % width == 0
        and [arguments[key] for key in numeric] == numbers[:width]
    ):
        return [
            PlannedCall(
                call.name, {**arguments, **dict(zip(numeric, numbers[start : start + width], strict=True))}
            )
            for start in range(0, len(numbers), width)
        ]
    return [call]


def _joined_by_and(prompt: str, items: list[str]) -> bool:
    """Items joined by "and" (和/与/及/、/and/&): several asked for, not "San Francisco, CA"."""
    span = prompt[prompt.find(items[0]) : prompt.rfind(items[-1])]
    return bool(_AND.search(span))


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def _current_turn(messages: list[dict]) -> list[dict]:
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return messages[last_user + 1 :]


def _call_names(messages: list[dict]) -> dict[str, str]:
    """tool_call id -> function name, over the assistant messages of the conversation."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id"):
                names[call["id"]] = _function(call).get("name", "")
    return names


def _answered_tools(messages: list[dict]) -> set[str]:
    """Names of the tools with a result in the current turn."""
    names = _call_names(messages)
    answered = set()
    for message in _current_turn(messages):
        if message.get("role") == "tool":
            name = names.get(message.get("tool_call_id")) or message.get("name")
            if name:
                answered.add(name)
    return answered


def _score(tool: dict, prompt: str) -> int:
    """How many keywords the tool shares with `prompt`; an explicit mention of its name counts 10."""
    function = _function(tool)
    name = function.get("name", "")
    mention = (
        _MENTION if name and re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", prompt, re.IGNORECASE) else 0
    )
    tool_words = _keywords(_split_name(name) + " " + str(function.get("description") or ""))
    return mention + len(tool_words & _keywords(prompt))


def _split_name(name: str) -> str:
    return re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ")


def _keywords(text: str) -> set[str]:
    words = {_stem(w.lower()) for w in _WORD.findall(text)} - {_stem(w) for w in _STOPWORDS}
    words.discard("")
    topics = set()
    lowered = text.lower()
    for topic, (english, chinese) in _TOPICS.items():
        if words & {_stem(w) for w in english} or any(re.search(p, lowered) for p in chinese):
            topics.add(f"topic:{topic}")
    return words | topics


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split()).rstrip("。.;；")
    return text if len(text) <= limit else text[:limit] + "…"
