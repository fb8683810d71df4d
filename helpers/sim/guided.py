"""Constrained ("guided") output as vLLM's structured outputs produce it: JSON for a JSON Schema
or any JSON object, a string matching a regex, or one of a list of choices.

`constrained_text` always returns text valid for the constraint, deterministic for the same
inputs and rng state. JSON is written as Qwen3 writes it, `json.dumps(value, ensure_ascii=False)`.

JSON Schema instances (keywords: type incl. lists of types, properties, required,
additionalProperties, enum, const, anyOf/oneOf, allOf, $ref to `#/...` (pydantic's `$defs`,
`definitions`), items/prefixItems, minItems/maxItems, minimum/maximum/exclusive*, multipleOf,
minLength/maxLength, pattern, format, default; description and title are ignored):
- objects write every declared property, in schema order (required and optional alike, as a
  trained model fills the fields it is shown); with `minProperties` and room, extra `field_N` keys.
- a value comes from the prompt where it can (`prompt_facts.PromptFacts`): a property whose name
  (split on `_`/camelCase) is in `_NAME_FACTS` takes that span (name 张三, city 北京, date, email,
  url, phone; query/text/input/question take the last user message); integers and numbers take
  the prompt's numbers in order, within minimum/maximum; enums (and `choice`) take the value the
  prompt mentions, else the first; arrays of strings take the prompt's list items
  ("Python 和 SQL"). Otherwise the schema's `default` if valid (enums too), else a placeholder: booleans
  false, numbers the lowest allowed (1 when unbounded), strings "simulated <name>" /
  "<name>（模拟值）" in the prompt's language (a `format` gets a fixed valid example, a `pattern`
  a generated match), arrays `max(minItems, 1)` items (`minItems` only when nested more than
  `_MAX_DEPTH // 2` deep, so recursive schemas end), null None.
- anyOf/oneOf with a `null` option (pydantic's `Optional[X]`): X when the prompt gives a value
  for it (see `_InstanceBuilder.prompted`), else null; otherwise the first option whose value
  validates.
`json_object`: keys the prompt quotes ('setup', "punchline", `key`, “名字”) with string values;
otherwise an object of the prompt's facts (name, age, city, country, date, email, url, phone,
items); otherwise {"answer": "<simulated text>"}.
Regex: `regex_strings.matching_text` (unbounded repeats kept short, readable characters).

`validate_constraint` raises `GrammarError` for what vLLM rejects; `str(error)` is the text after
"Grammar error: " in vLLM's 400 (for schemas, llguidance's wording, as in the transcript
`hermes-qwen3-structured-bad-schema`: "Invalid type: nonsense").

Example:
    >>> import random
    >>> schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    >>> constrained_text(Constraint("json_schema", schema=schema), prompt_text="北京今天天气怎么样?",
    ...                  rng=random.Random(0))
    '{"city": "北京"}'
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from helpers.sim import regex_strings
from helpers.sim.prompt_facts import PromptFacts

_TYPES = ("null", "boolean", "number", "integer", "string", "array", "object")
# Formats vLLM 0.32 accepts: xgrammar's list, then llguidance's (vLLM falls back from one to the other).
_FORMATS = frozenset(
    ("email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid", "uri",
     "uri-reference", "uri-template", "json-pointer", "relative-json-pointer", "unknown")
)  # fmt: skip
# Keywords neither of vLLM's grammar backends implements: llguidance lists them as unimplemented.
_UNIMPLEMENTED = frozenset(("uniqueItems", "contains", "minContains", "maxContains"))
_FORMAT_EXAMPLES = {
    "date": "2026-01-01",
    "time": "09:00:00Z",
    "date-time": "2026-01-01T09:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "uri-template": "https://example.com/{id}",
    "json-pointer": "/items/0",
    "relative-json-pointer": "0/items",
    "unknown": "",
    "uuid": "3f2b8c1e-4d5a-4b6c-8d7e-9f0a1b2c3d4e",
}
# Property-name words -> the prompt fact a string property takes (see PromptFacts).
_NAME_FACTS = {
    "name": "person_name", "fullname": "person_name", "person": "person_name", "姓名": "person_name",
    "名字": "person_name", "city": "city", "location": "city", "place": "city", "town": "city",
    "城市": "city", "地点": "city", "country": "country", "国家": "country", "date": "date",
    "day": "date", "birthday": "date", "日期": "date", "email": "email", "mail": "email",
    "邮箱": "email", "url": "url", "link": "url", "website": "url", "homepage": "url",
    "phone": "phone", "tel": "phone", "mobile": "phone", "电话": "phone", "query": "message",
    "q": "message", "text": "message", "input": "message", "question": "message",
    "prompt": "message", "sentence": "message", "电话号码": "phone",
}  # fmt: skip
_LIST_NAMES = frozenset(
    ("skills", "skill", "tags", "items", "keywords", "languages", "hobbies", "interests", "list",
     "技能", "标签", "爱好")
)  # fmt: skip
_MAX_DEPTH = 8
_ATTEMPTS = 8


@dataclass(frozen=True)
class Constraint:
    """One structured-output constraint of a request (vLLM's `structured_outputs`)."""

    kind: Literal["json_schema", "json_object", "regex", "choice"]
    schema: dict | None = None  # json_schema
    pattern: str | None = None  # regex
    choices: tuple[str, ...] = ()  # choice


class GrammarError(ValueError):
    """A constraint vLLM rejects; `str(error)` is what vLLM writes after "Grammar error: "."""


def validate_constraint(constraint: Constraint) -> None:
    """Raise `GrammarError` when vLLM 0.32 would refuse `constraint` with a 400 (see module doc)."""
    if constraint.kind == "json_schema":
        _check_schema(constraint.schema)
    elif constraint.kind == "regex":
        _check_regex_pattern(constraint.pattern or "")
    elif constraint.kind == "choice":
        if not constraint.choices:
            raise GrammarError("choice must list at least one string")
    elif constraint.kind != "json_object":
        raise GrammarError(f"unknown constraint kind: {constraint.kind}")
    # A constraint the checks pass but the generator cannot satisfy (e.g. minimum > maximum)
    # is refused too, rather than answered with text that breaks it.
    constrained_text(constraint, prompt_text="", rng=random.Random(0))


def constrained_text(constraint: Constraint, *, prompt_text: str, rng: random.Random) -> str:
    """Text valid for `constraint`, with values taken from `prompt_text` where they fit.

    Raises `GrammarError` only for a constraint `validate_constraint` refuses too.
    """
    try:
        return _constrained_text(constraint, PromptFacts(prompt_text), rng)
    except _Unsatisfiable as error:
        raise GrammarError(f"the simulator cannot produce output for this constraint: {error}") from None


def _constrained_text(constraint: Constraint, facts: PromptFacts, rng: random.Random) -> str:
    if constraint.kind == "choice":
        choice = facts.enum_choice(list(constraint.choices))
        return choice if choice is not None else constraint.choices[0]
    if constraint.kind == "regex":
        return regex_text(constraint.pattern or "", rng)
    if constraint.kind == "json_object":
        return _dumps(_json_object(facts))
    return _dumps(schema_instance(constraint.schema or {}, facts, rng))


def schema_instance(
    schema: dict | bool,
    facts: PromptFacts,
    rng: random.Random,
    *,
    optional: Literal["all", "prompted"] = "all",
) -> Any:
    """A value valid for `schema` (raises a `GrammarError` when none can be found).

    `optional` "all" writes every declared property; "prompted" writes the required ones and
    the optional ones the prompt gives a value for (a name-matched fact, or an enum value it
    mentions) -- what a model calling a tool does: `{"city": "北京"}`, no invented `unit`.
    """
    return _InstanceBuilder(schema, facts, rng, optional=optional).build()


def regex_text(pattern: str, rng: random.Random) -> str:
    """A string that `re.fullmatch(pattern, ...)` accepts (see `regex_strings`)."""
    try:
        return regex_strings.matching_text(pattern, rng)
    except ValueError as error:
        raise _Unsatisfiable(str(error)) from None


class _Unsatisfiable(GrammarError):
    """The generator found no value for a (sub)schema."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- validation ------------------------------------------------------------------------------


def _jsonschema() -> Any:
    """jsonschema, imported on the first guided request, without rfc3987-syntax: Jupyter installs it
    (jsonschema's format-nongpl extra) and jsonschema then builds ~40 lark grammars at import, 2-4 s
    of CPU in every simulator process, for an `iri` format check the simulator never makes."""
    if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # jsonschema skips it
        try:
            import jsonschema
        finally:
            del sys.modules["rfc3987_syntax"]
    import jsonschema

    return jsonschema


def _check_schema(schema: object) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise GrammarError("schema must be an object or boolean")
    _check_node(schema, schema)
    jsonschema = _jsonschema()
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.path)
        raise GrammarError(f"{error.message}" + (f" (at {where})" if where else "")) from None


def _check_node(node: object, root: dict) -> None:
    """llguidance's checks and messages (parser/src/json/schema.rs) for one subschema, recursively."""
    if not isinstance(node, dict):
        if isinstance(node, bool):
            return
        raise GrammarError("schema must be an object or boolean")
    unimplemented = sorted(key for key in node if key in _UNIMPLEMENTED)
    if unimplemented:
        raise GrammarError(f"Unimplemented keys: {json.dumps(unimplemented)}")
    for key in ("enum", "allOf", "anyOf", "oneOf"):
        if key in node and not isinstance(node[key], list):
            raise GrammarError(f"{key} must be an array")
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise GrammarError(f"$ref must be a string, got {_limited(ref)}")
        _resolve(ref, root)
    types = node.get("type")
    if isinstance(types, list):
        for item in types:
            if not isinstance(item, str):
                raise GrammarError("type must be a string")
    elif types is not None and not isinstance(types, str):
        raise GrammarError("type must be a string or array")
    names = [types] if isinstance(types, str) else (types or list(_TYPES))
    for name in names:
        if name not in _TYPES:
            raise GrammarError(f"Invalid type: {name}")
    _check_keyword_types(node, names)
    for child in _children(node):
        _check_node(child, root)


def _check_keyword_types(node: dict, types: list[str]) -> None:
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        value = node.get(key)
        if key in node and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise GrammarError(f"Expected u64 for '{key}', got {_limited(value)}")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        value = node.get(key)
        if key in node and (isinstance(value, bool) and key.startswith("exclusive")):
            continue
        if key in node and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise GrammarError(f"Expected f64 for '{key}', got {_limited(value)}")
    if "string" in types and "format" in node:
        fmt = node["format"]
        if not isinstance(fmt, str):
            raise GrammarError(f"Expected string for 'format', got {_limited(fmt)}")
        if fmt not in _FORMATS:
            raise GrammarError(f"Unknown format: {fmt}")
    if "string" in types and "pattern" in node:
        pattern = node["pattern"]
        if not isinstance(pattern, str):
            raise GrammarError(f"Expected string for 'pattern', got {_limited(pattern)}")
        _check_regex_pattern(pattern)
    if "object" in types:
        if "properties" in node and not isinstance(node["properties"], dict):
            raise GrammarError(f"Expected object for 'properties', got {_limited(node['properties'])}")
        required = node.get("required", [])
        if not isinstance(required, list):
            raise GrammarError(f"Expected array for 'required', got {_limited(required)}")
        for item in required:
            if not isinstance(item, str):
                raise GrammarError(f"Expected string for 'required' item, got {_limited(item)}")


def _children(node: dict) -> list[object]:
    children: list[object] = []
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(node.get(key), dict):
            children.extend(node[key].values())
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "propertyNames"):
        if isinstance(node.get(key), (dict, bool)):
            children.append(node[key])
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        if isinstance(node.get(key), list):
            children.extend(node[key])
    if isinstance(node.get("items"), list):
        children.extend(node["items"])
    return children


def _limited(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 100 else text[:100] + "..."


def _check_regex_pattern(pattern: str) -> None:
    try:
        regex_strings.check(pattern)
    except ValueError as error:
        raise GrammarError(str(error)) from None


def _resolve(ref: str, root: dict) -> dict | bool:
    """The subschema a local `$ref` ("#", "#/$defs/X", "#/definitions/X", any JSON pointer) names."""
    if not ref.startswith("#"):
        raise GrammarError(f"$ref not found: {ref} (only references inside the schema, '#/...', resolve)")
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise GrammarError(f"$ref not found: {ref}")
    if not isinstance(node, (dict, bool)):
        raise GrammarError(f"$ref not found: {ref}")
    return node


# --- JSON instances --------------------------------------------------------------------------


class _InstanceBuilder:
    def __init__(
        self,
        root: dict | bool,
        facts: PromptFacts,
        rng: random.Random,
        optional: Literal["all", "prompted"] = "all",
    ) -> None:
        self.root = root
        self.facts = facts
        self.rng = rng
        self.optional = optional
        jsonschema = _jsonschema()
        self.validator = jsonschema.Draft202012Validator(
            root if isinstance(root, dict) else {}, format_checker=jsonschema.FormatChecker()
        )

    def build(self) -> Any:
        value = self.value(self.root, None, 0)
        if not self.valid(value, self.root):
            raise _Unsatisfiable("the generated value does not validate")
        return value

    def valid(self, value: Any, schema: dict | bool) -> bool:
        return self.validator.evolve(schema=schema).is_valid(value)

    def value(self, schema: dict | bool, name: str | None, depth: int) -> Any:
        if schema is True or schema == {}:
            return self.string({}, name)
        if schema is False:
            raise _Unsatisfiable("schema is false")
        schema = self.flatten(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.enum(schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.alternative(schema, key, name, depth)
        kind = self.type_of(schema)
        if depth > _MAX_DEPTH and kind in ("object", "array"):
            raise _Unsatisfiable("schema nests too deep")
        if kind == "object":
            return self.obj(schema, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind in ("integer", "number"):
            return self.number(schema, kind == "integer", name)
        if kind == "boolean":
            default = schema.get("default")
            return default if isinstance(default, bool) else False
        if kind == "null":
            return None
        return self.string(schema, name)

    def flatten(self, schema: dict) -> dict:
        """`schema` with `$ref` resolved and `allOf` merged into it (siblings kept)."""
        seen = 0
        while "$ref" in schema or "allOf" in schema:
            seen += 1
            if seen > _MAX_DEPTH * 4:
                raise _Unsatisfiable("$ref/allOf chain too long")
            if "$ref" in schema:
                target = _resolve(schema["$ref"], self.root if isinstance(self.root, dict) else {})
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = _merge(target if isinstance(target, dict) else {}, rest)
            else:
                parts = schema["allOf"]
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for part in parts:
                    merged = _merge(merged, part if isinstance(part, dict) else {})
                schema = merged
        return schema

    def type_of(self, schema: dict) -> str:
        types = schema.get("type")
        if isinstance(types, list):
            usable = [t for t in types if t != "null"]
            return usable[0] if usable else "null"
        if isinstance(types, str):
            return types
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return "string"

    def enum(self, schema: dict) -> Any:
        values = [
            v for v in schema["enum"] if self.valid(v, {k: v2 for k, v2 in schema.items() if k != "enum"})
        ]
        if not values:
            raise _Unsatisfiable("no enum value fits")
        chosen = self.facts.enum_choice(values)
        if chosen is None and schema.get("default") in values:
            chosen = schema["default"]
        return chosen if chosen is not None else values[0]

    def alternative(self, schema: dict, key: str, name: str | None, depth: int) -> Any:
        rest = {k: v for k, v in schema.items() if k != key}
        options = [_merge(rest, o) if isinstance(o, dict) else o for o in schema[key]]
        values, nulls = [o for o in options if not _is_null(o)], [o for o in options if _is_null(o)]
        # Optional[X]: X when the prompt gives a value for it, else null (as an extraction would).
        prompted = not nulls or any(self.prompted(o, name or "", depth) for o in values)
        ordered = values + nulls if prompted else nulls + values
        for option in ordered:
            try:
                value = self.value(option, name, depth + 1)
            except _Unsatisfiable:
                continue
            if self.valid(value, schema):
                return value
        raise _Unsatisfiable(f"no {key} option fits")

    def obj(self, schema: dict, depth: int) -> dict:
        properties = schema.get("properties") or {}
        required = schema.get("required", [])
        result: dict[str, Any] = {}
        for key, subschema in properties.items():
            if key in required or self.optional == "all" or self.prompted(subschema, key):
                result[key] = self.value(subschema, key, depth + 1)
        for key in required:
            if key not in result:
                extra = schema.get("additionalProperties", True)
                result[key] = self.value(extra if extra is not False else True, key, depth + 1)
        extra = schema.get("additionalProperties", True)
        index = 1
        while len(result) < schema.get("minProperties", 0) and extra is not False:
            result[f"field_{index}"] = self.value(extra, f"field_{index}", depth + 1)
            index += 1
        return result

    def array(self, schema: dict, name: str | None, depth: int) -> list:
        prefix = schema.get("prefixItems") or (
            schema["items"] if isinstance(schema.get("items"), list) else []
        )
        items = schema.get("items") if isinstance(schema.get("items"), (dict, bool)) else True
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        values = [self.value(s, name, depth + 1) for s in prefix]
        if isinstance(items, dict) and self.type_of(self.flatten(items)) == "string" and "enum" not in items:
            for item in self.facts.list_items if _is_list_name(name) or self.facts.list_items else []:
                if (high is None or len(values) < high) and self.valid(item, items):
                    values.append(item)
        # Deep inside a recursive schema (a tree of pydantic models) optional arrays stay empty.
        wanted = 1 if items is not False and depth < _MAX_DEPTH // 2 else 0
        target = max(low, wanted, len(values))
        if high is not None:
            target = min(target, high)
        while len(values) < target:
            values.append(self.value(items, name, depth + 1))
        return values[: high if high is not None else len(values)]

    def number(self, schema: dict, integer: bool, name: str | None) -> int | float:
        def fits(value: int | float) -> bool:
            if integer and not float(value).is_integer():
                return False
            return self.valid(int(value) if integer else value, {**schema, "type": "number"})

        taken = self.facts.take_number(fits)
        if taken is not None:
            return int(taken) if integer else taken
        default = schema.get("default")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and fits(default):
            return int(default) if integer else default
        for candidate in _number_candidates(schema, integer):
            if fits(candidate):
                return int(candidate) if integer else candidate
        raise _Unsatisfiable("no number fits the bounds")

    def string(self, schema: dict, name: str | None) -> str:
        candidates: list[str] = []
        fact = self.fact_for(name)
        if fact:
            candidates.append(fact)
        default = schema.get("default")
        if isinstance(default, str):
            candidates.append(default)
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
            if fmt == "uuid":
                candidates.append(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
            candidates.append(_FORMAT_EXAMPLES[fmt])
        pattern = schema.get("pattern")
        candidates.append(_placeholder(name, self.facts.chinese))
        for candidate in candidates:
            fitted = _fit_length(candidate, schema)
            if fitted is not None and self.valid(fitted, {**schema, "type": "string"}):
                return fitted
        if isinstance(pattern, str):
            for _ in range(_ATTEMPTS):
                try:
                    text = regex_text(pattern, self.rng)
                except _Unsatisfiable:
                    break
                if self.valid(text, {**schema, "type": "string"}):
                    return text
        raise _Unsatisfiable(f"no string fits {name or 'the schema'}")

    def prompted(self, schema: dict | bool, name: str, depth: int = 0) -> bool:
        """True when the prompt gives a value for this (optional) property: a name-matched fact
        for a string, an enum value it mentions, an unused number for a number, list items for
        an array, a prompted property for an object."""
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return False
        schema = self.flatten(schema)
        if "enum" in schema:
            return self.facts.enum_choice(schema["enum"]) is not None
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return any(self.prompted(o, name, depth + 1) for o in schema[key] if not _is_null(o))
        kind = self.type_of(schema)
        if kind == "object":
            properties = schema.get("properties") or {}
            return any(self.prompted(sub, key, depth + 1) for key, sub in properties.items())
        if kind == "array":
            return bool(self.facts.list_items)
        if kind in ("integer", "number"):
            return self.facts.has_unused_number()
        return kind == "string" and self.fact_for(name) is not None

    def fact_for(self, name: str | None) -> str | None:
        if not name:
            return None
        for word in [name.lower(), *_name_words(name)]:
            fact = _NAME_FACTS.get(word)
            if fact == "message":
                return self.facts.text.strip()[:200] or None
            if fact:
                return getattr(self.facts, fact)
        return None


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if key == "properties" and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        elif key == "required" and isinstance(merged.get(key), list) and isinstance(value, list):
            merged[key] = merged[key] + [k for k in value if k not in merged[key]]
        elif key not in ("title", "description"):
            merged[key] = value
    return merged


def _is_null(schema: object) -> bool:
    return isinstance(schema, dict) and (schema.get("type") == "null" or schema.get("const", 0) is None)


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[\s_\-]+", spaced) if w]


def _is_list_name(name: str | None) -> bool:
    return bool(name) and (name.lower() in _LIST_NAMES or any(w in _LIST_NAMES for w in _name_words(name)))


def _number_candidates(schema: dict, integer: bool) -> list[int | float]:
    """Values near the lower bound, the middle and the upper bound; the caller keeps one that fits."""

    def bound(key: str) -> float | None:
        value = schema.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    low, high = bound("minimum"), bound("maximum")
    xlow, xhigh = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    step = bound("multipleOf") or (1.0 if integer else None)
    lows = [v for v in (low, xlow) if v is not None]
    highs = [v for v in (high, xhigh) if v is not None]
    bottom = max(lows) if lows else None
    top = min(highs) if highs else None
    candidates: list[float] = []
    if bottom is not None:
        candidates += [bottom, bottom + 1]
    if bottom is not None and top is not None:
        candidates.append((bottom + top) / 2)
    if top is not None:
        candidates += [top, top - 1]
    candidates += [1, 0]
    if step:
        candidates = [
            c
            for value in candidates
            for c in (math.ceil(value / step) * step, math.floor(value / step) * step)
        ]
    return [int(c) if float(c).is_integer() else c for c in candidates]


def _fit_length(text: str, schema: dict) -> str | None:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if high is not None and len(text) > high:
        text = text[:high]
    if len(text) < low:
        if not text:
            return None
        text = (text * (low // len(text) + 1))[: max(low, len(text))]
    return text


def _placeholder(name: str | None, chinese: bool) -> str:
    label = " ".join(_name_words(name)) if name else ""
    if chinese:
        return f"{label}（模拟值）" if label else "模拟值"
    return f"simulated {label}" if label else "simulated value"


def _json_object(facts: PromptFacts) -> dict:
    if facts.quoted_keys:
        builder = _InstanceBuilder({}, facts, random.Random(0))
        return {key: builder.string({}, key) for key in facts.quoted_keys}
    found: dict[str, Any] = {}
    for key, value in (
        ("name", facts.person_name),
        ("age", _age(facts)),
        ("city", facts.city),
        ("country", facts.country),
        ("date", facts.date),
        ("email", facts.email),
        ("url", facts.url),
        ("phone", facts.phone),
        ("items", facts.list_items or None),
    ):
        if value is not None:
            found[key] = value
    return found or {"answer": _placeholder("answer", facts.chinese)}


def _age(facts: PromptFacts) -> int | None:
    match = re.search(r"(\d{1,3})\s*(?:岁|years? old|yo\b)", facts.text) or re.search(
        r"(?i:age[d]?|年龄)\s*[:：]?\s*(\d{1,3})", facts.text
    )
    return int(match.group(1)) if match else None
