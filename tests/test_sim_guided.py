"""helpers.sim.guided: constrained output valid for its constraint, values from the prompt,
vLLM's grammar errors."""

from __future__ import annotations

import datetime
import enum
import json
import os
import random
import re
import subprocess
import sys
from typing import Literal, Optional

import jsonschema
import pytest
from pydantic import BaseModel, Field, TypeAdapter
from support import load_transcript
from typing_extensions import TypedDict

from helpers.sim.guided import Constraint, GrammarError, constrained_text, validate_constraint

PERSON_PROMPT = "张三, 28 岁, 会 Python 和 SQL。提取成 JSON。"
PROMPTS = (PERSON_PROMPT, "What's the weather in San Francisco?", "评论: 太好用了, 五星! 输出 JSON。", "")


class Address(BaseModel):
    city: str
    country: Optional[str] = None  # noqa: UP045 - the spelling pydantic users write


class Person(BaseModel):
    name: str = Field(description="The person's name")
    age: int = Field(ge=0, le=150)
    skills: list[str]
    role: Literal["admin", "user"] = "user"
    address: Address | None = None
    email: str | None = None


class Team(BaseModel):
    title: str
    members: list[Person] = Field(min_length=1, max_length=3)


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Item(BaseModel):
    color: Color
    tags: list[str] = Field(min_length=1, max_length=2)
    price: float = Field(gt=0, lt=1000)
    code: str = Field(pattern=r"^[A-Z]{3}-\d{2}$")
    day: datetime.date
    at: datetime.datetime
    count: int = Field(default=3, multiple_of=5)


class Node(BaseModel):
    label: str
    children: list[Node] = []
    parent: Node | None = None


class Movie(TypedDict):
    title: str
    year: int


class Joke(BaseModel):
    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")
    rating: Optional[int] = Field(default=None, description="How funny, 1 to 10")  # noqa: UP045


SCHEMAS = {
    "transcript-person": load_transcript("hermes-qwen3-structured-json-schema").request["response_format"][
        "json_schema"
    ]["schema"],
    "transcript-review": load_transcript("hermes-qwen3-structured-json-schema-enum").request[
        "response_format"
    ]["json_schema"]["schema"],
    "pydantic-person": Person.model_json_schema(),
    "pydantic-nested-list": Team.model_json_schema(),
    "pydantic-enum-date-pattern": Item.model_json_schema(),
    "pydantic-joke": Joke.model_json_schema(),
    "typeddict": TypeAdapter(Movie).json_schema(),
    "recursive": Node.model_json_schema(),
    "list-of-models": TypeAdapter(list[Address]).json_schema(),
    "dict-of-int": TypeAdapter(dict[str, int]).json_schema(),
    "tuple": TypeAdapter(tuple[int, str]).json_schema(),
    "type-list": {"type": ["string", "null"], "maxLength": 5},
    "const": {"type": "object", "properties": {"kind": {"const": "person"}}, "required": ["kind"]},
    "oneOf": {"oneOf": [{"type": "integer", "minimum": 10}, {"type": "string", "minLength": 2}]},
    "allOf-one": {"allOf": [{"$ref": "#/definitions/P"}], "definitions": {"P": Address.model_json_schema()}},
    "formats": {
        "type": "object",
        "properties": {
            "date": {"type": "string", "format": "date"},
            "when": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "site": {"type": "string", "format": "uri"},
            "id": {"type": "string", "format": "uuid"},
            "ip": {"type": "string", "format": "ipv4"},
        },
        "required": ["date", "when", "email", "site", "id", "ip"],
    },
    "bounds": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "n": {"type": "integer", "minimum": -5, "maximum": -1},
            "word": {"type": "string", "minLength": 12, "maxLength": 14},
            "short": {"type": "string", "maxLength": 2},
            "list": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 4},
        },
        "required": ["score", "n", "word", "short", "list"],
        "additionalProperties": False,
    },
    "boolean-default": {"type": "object", "properties": {"ok": {"type": "boolean", "default": True}}},
    "empty": {},
    "true": True,
    "array-top": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
    "string-pattern": {"type": "string", "pattern": "^[a-f0-9]{8}$"},
}


def _validator(schema: dict | bool) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _schema(schema: dict | bool) -> Constraint:
    return Constraint("json_schema", schema=schema)


def _text(constraint: Constraint, prompt: str, seed: int = 0) -> str:
    return constrained_text(constraint, prompt_text=prompt, rng=random.Random(seed))


def _json(schema: dict | bool, prompt: str, seed: int = 0) -> object:
    return json.loads(_text(_schema(schema), prompt, seed))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_instance_validates_against_its_schema(name: str) -> None:
    schema = SCHEMAS[name]
    validate_constraint(Constraint("json_schema", schema=schema))
    for prompt in PROMPTS:
        for seed in range(3):
            value = _json(schema, prompt, seed)
            errors = [error.message for error in _validator(schema).iter_errors(value)]
            assert errors == [], (prompt, seed, value)


def test_json_is_written_like_qwen3_ensure_ascii_false() -> None:
    assert (
        _text(_schema(SCHEMAS["transcript-person"]), PERSON_PROMPT)
        == '{"name": "张三", "age": 28, "skills": ["Python", "SQL"]}'
    )


def test_same_inputs_and_seed_give_the_same_text() -> None:
    for kind, extra in (
        ("json_schema", {"schema": SCHEMAS["pydantic-enum-date-pattern"]}),
        ("regex", {"pattern": r"[a-z]{2,9}\d*"}),
        ("json_object", {}),
    ):
        constraint = Constraint(kind, **extra)
        texts = {_text(constraint, PERSON_PROMPT, 7) for _ in range(3)}
        assert len(texts) == 1


def test_prompt_values_chinese_person() -> None:
    value = _json(Person.model_json_schema(), PERSON_PROMPT)
    assert (value["name"], value["age"], value["skills"]) == ("张三", 28, ["Python", "SQL"])


def test_prompt_values_city_english_and_chinese() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert _json(schema, "What's the weather in San Francisco?") == {"city": "San Francisco"}
    assert _json(schema, "北京今天天气怎么样?") == {"city": "北京"}


def test_prompt_values_enum_by_bilingual_synonyms_and_number_bounds() -> None:
    review = SCHEMAS["transcript-review"]
    assert _json(review, "评论: 太好用了, 五星! 输出 JSON。") == {
        "sentiment": "positive",
        "stars": 5,
        "spam": False,
    }
    assert _json(review, "差评, 1 星, 太难用")["sentiment"] == "negative"
    assert _json(review, "这个产品中性, 3 分")["sentiment"] == "neutral"
    # 200 is outside 1..5: the prompt number is skipped, the value stays in bounds.
    assert _json(review, "review 200 words")["stars"] == 1


def test_choice_takes_the_value_the_prompt_supports_else_the_first() -> None:
    request = load_transcript("hermes-qwen3-structured-choice").request
    choices = tuple(request["structured_outputs"]["choice"])
    prompt = request["messages"][0]["content"]  # 这条评论是正面还是负面: 太好用了!
    constraint = Constraint("choice", choices=choices)
    assert _text(constraint, prompt, 0) == "positive"
    assert _text(constraint, "hello", 0) == "positive"
    assert _text(Constraint("choice", choices=("A", "B")), "pick B", 0) == "B"


def test_placeholders_when_the_prompt_has_nothing_that_fits() -> None:
    value = _json(Person.model_json_schema(), "")
    assert _validator(Person.model_json_schema()).is_valid(value)
    assert value["name"] == "simulated name"
    assert _json(Person.model_json_schema(), "随便写一个")["name"] == "name（模拟值）"


def test_optional_fields_take_a_value_the_prompt_gives_else_null() -> None:
    value = _json(Person.model_json_schema(), "李四住在上海, 30 岁")
    assert value["address"]["city"] == "上海"
    value = _json(Person.model_json_schema(), PERSON_PROMPT)
    assert (value["address"], value["email"], value["role"]) == (None, None, "user")
    assert _json(Person.model_json_schema(), "王五, 邮箱 wang@example.com")["email"] == "wang@example.com"
    assert _json(Joke.model_json_schema(), "Tell me a joke")["rating"] is None
    assert _json(Joke.model_json_schema(), "Tell me a joke, rate it 7")["rating"] == 7


def test_json_object_uses_the_keys_the_prompt_quotes() -> None:
    prompt = (
        "Tell me a joke about cats. Return the result as a JSON with 'setup' and 'punchline' keys. "
        "Return nothing other than JSON."
    )
    value = json.loads(_text(Constraint("json_object"), prompt, 0))
    assert list(value) == ["setup", "punchline"]
    assert all(isinstance(v, str) and v for v in value.values())


def test_json_object_without_keys_collects_the_prompt_facts() -> None:
    value = json.loads(_text(Constraint("json_object"), PERSON_PROMPT, 0))
    assert value == {"name": "张三", "age": 28, "items": ["Python", "SQL"]}
    empty = json.loads(_text(Constraint("json_object"), "", 0))
    assert isinstance(empty, dict) and empty


REGEXES = (
    r"[0-9]{3}-[0-9]{4}",
    r"\d+",
    r"(a|bc)*d+",
    r"[^abc]{3,5}",
    r"\w+@\w+\.(com|org)",
    r"^\s?\S\W?$",
    r"(?i)hello [A-Z]{2}",
    r"[\u4e00-\u9fff]{2,4}",
    r"(yes|no|maybe)",
    r"x{0,1000}y",
    r"(?:ab)+?c",
    r"[a-z]+(?:-[a-z]+)*",
)


@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_output_fullmatches(pattern: str) -> None:
    validate_constraint(Constraint("regex", pattern=pattern))
    for seed in range(10):
        text = _text(Constraint("regex", pattern=pattern), "", seed)
        assert re.fullmatch(pattern, text), (pattern, text)


def test_regex_unbounded_repeats_stay_short() -> None:
    for seed in range(20):
        text = _text(Constraint("regex", pattern="a*b+"), "", seed)
        assert len(text) <= 7


def test_regex_of_the_transcript_forces_the_exact_tool_call_text() -> None:
    pattern = load_transcript("hermes-qwen3-tools-auto-wellformed").request["structured_outputs"]["regex"]
    text = _text(Constraint("regex", pattern=pattern), "", 0)
    assert text == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>'


def test_grammar_error_of_the_transcript() -> None:
    transcript = load_transcript("hermes-qwen3-structured-bad-schema")
    schema = transcript.request["response_format"]["json_schema"]["schema"]
    with pytest.raises(GrammarError) as caught:
        validate_constraint(Constraint("json_schema", schema=schema))
    assert f"Grammar error: {caught.value}" == transcript.json()["error"]["message"]


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (_schema({"type": 5}), "type must be a string or array"),
        (_schema({"type": ["string", "text"]}), "Invalid type: text"),
        (_schema({"enum": "red"}), "enum must be an array"),
        (_schema({"type": "string", "format": "colour"}), "Unknown format: colour"),
        (_schema({"type": "array", "uniqueItems": True}), 'Unimplemented keys: ["uniqueItems"]'),
        (_schema({"$ref": "#/$defs/Missing"}), "$ref not found: #/$defs/Missing"),
        (_schema({"type": "string", "minLength": -1}), "Expected u64 for 'minLength', got -1"),
        (_schema({"type": "integer", "minimum": "1"}), "Expected f64 for 'minimum', got \"1\""),
        (_schema({"type": "object", "required": "a"}), "Expected array for 'required', got \"a\""),
        (_schema({"properties": {"a": {"type": "nonsense"}}}), "Invalid type: nonsense"),
        (_schema({"type": "integer", "minimum": 5, "maximum": 1}), "simulator cannot"),
        (Constraint("regex", pattern="(abc"), "regex parse error: missing ), unterminated subpattern"),
        (Constraint("regex", pattern="a(?=b)"), "look-around"),
        (Constraint("regex", pattern=r"(a)\1"), "backreferences are not supported"),
        (Constraint("choice", choices=()), "choice must list at least one string"),
    ],
)
def test_invalid_constraints_get_grammar_errors(constraint: Constraint, message: str) -> None:
    with pytest.raises(GrammarError) as caught:
        validate_constraint(constraint)
    assert message in str(caught.value)


def test_annotations_and_json_object_are_accepted() -> None:
    schema = {
        "title": "T",
        "description": "d",
        "type": "object",
        "properties": {"x": {"type": "string", "default": "a", "examples": ["b"], "description": "x"}},
    }
    validate_constraint(Constraint("json_schema", schema=schema))
    validate_constraint(Constraint("json_object"))
    assert _json(schema, "") == {"x": "a"}


@pytest.mark.server
def test_output_does_not_depend_on_the_hash_seed() -> None:
    """The simulator answers from a child process: the same seed must give the same text there."""
    schema = {"type": "object", "properties": {"c": {"enum": ["x", "y"]}, "d": {"format": "date"}}}
    script = (
        "import random; from helpers.sim.guided import Constraint, constrained_text; "
        "print(constrained_text(Constraint('regex', pattern=r'[^abc]{8}\\W\\w{4}'), prompt_text='', "
        "rng=random.Random(1))); "
        f"print(constrained_text(Constraint('json_schema', schema={schema!r}), prompt_text='', "
        "rng=random.Random(1)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().count("\n") == 2


@pytest.mark.server
def test_starting_the_simulator_does_not_import_jsonschema() -> None:
    """Importing jsonschema (with rfc3987-syntax, which Jupyter installs) costs ~1.5 s of CPU: the
    simulator loads it on the first guided request, not at every start."""
    code = "import sys, helpers.sim.app, helpers.sim.cli; print('jsonschema' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_schema_check_imports_jsonschema_without_rfc3987_syntax() -> None:
    """Installed (Jupyter brings it), rfc3987-syntax makes `import jsonschema` build ~40 lark grammars:
    2-4 s of CPU in each simulator process's first structured request. The simulator leaves it out."""
    import importlib.util

    if importlib.util.find_spec("rfc3987_syntax") is None:
        pytest.skip("rfc3987-syntax is not installed: nothing to leave out")
    script = (
        "import sys\n"
        "from helpers.sim.guided import Constraint, GrammarError, validate_constraint\n"
        "validate_constraint(Constraint('json_schema', schema={'type': 'object'}))\n"
        "try:\n"
        "    validate_constraint(Constraint('json_schema', schema={'type': 12}))\n"
        "except GrammarError:\n"
        "    print('refused', 'jsonschema' in sys.modules, 'rfc3987_syntax' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["refused", "True", "False"], result.stderr
