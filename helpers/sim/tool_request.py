"""`tools`, `tool_choice`, `parallel_tool_calls` and the structured-output fields of a request,
checked the way vLLM 0.32 checks them (protocol.py's validators, then the serving layer's flags).

- `tool_choice` absent with `tools`: "auto"; absent without: "none". A named choice must name a
  tool in `tools`; `tools: []` is refused. Tools are pydantic-checked (`type` "function",
  `function.name` a string, `parameters` an object): errors as vLLM's 400 `1 validation error`.
- Server flags (vLLM's serving code): "auto" needs `--enable-auto-tool-choice` and
  `--tool-call-parser`; "required" and a named tool need `--tool-call-parser`; "none" always works.
- Structured output: `response_format` `json_schema` / `json_object`, or `structured_outputs` with
  one of `json` / `regex` / `choice` (vLLM 0.32 no longer knows the older `guided_json` /
  `guided_regex` / `guided_choice`: they are unknown fields, ignored with a warning, as vLLM does).
  A named tool choice together with `structured_outputs` is refused, as in vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from helpers.sim.chat_request import ApiError, validation_error, vllm_validation_error
from helpers.sim.guided import Constraint, GrammarError, validate_constraint
from helpers.sim.wire import error_body

CORRECT_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


@dataclass(frozen=True)
class ToolRequest:
    """The tools of a request: their function definitions and how the model may use them."""

    functions: tuple[dict, ...]
    tools: tuple[dict, ...]  # as sent, for the prompt's `# Tools` block
    choice: str  # "none", "auto", "required" or "named"
    named: str | None
    parallel: bool

    @property
    def choice_value(self) -> str | dict:
        """`tool_choice` as `plan_tool_calls` takes it."""
        if self.choice == "named":
            return {"type": "function", "function": {"name": self.named}}
        return self.choice


def parse_tools(body: dict) -> ToolRequest | None:
    """The request's tools (None when it has none), or the 400 vLLM sends."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools == []:
        raise vllm_validation_error(
            "`tools` must not be an empty array. "
            "Either provide at least one tool or omit the field entirely.",
            "tools",
        )
    if choice is None:
        choice = "auto" if tools else "none"
    if choice != "none" and tools is None:
        raise vllm_validation_error("When using `tool_choice`, `tools` must be set.", "tool_choice")
    named = _check_choice(choice, tools)
    if tools is None:
        return None
    functions = _check_tools(tools)
    if named is not None and named not in [f["name"] for f in functions]:
        raise vllm_validation_error(
            "The tool specified in `tool_choice` does not match any of the specified `tools`", "tool_choice"
        )
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise validation_error(
            "bool_parsing", "body.parallel_tool_calls", "Input should be a valid boolean", parallel
        )
    return ToolRequest(
        functions=tuple(functions),
        tools=tuple(tools),
        choice="named" if named is not None else choice,
        named=named,
        parallel=parallel is not False,
    )


def _check_choice(choice: object, tools: object) -> str | None:
    """The named function, None for a string choice; 400 for anything else."""
    if choice in ("none", "auto", "required"):
        return None
    if not isinstance(choice, dict):
        raise vllm_validation_error(
            f"Invalid value for `tool_choice`: {choice}! "
            'Only named tools, "none", "auto" or "required" are supported.',
            "tool_choice",
        )
    function = choice.get("function")
    if not isinstance(function, dict):
        raise vllm_validation_error(
            f"Invalid value for `function`: `{function}` in `tool_choice`! {CORRECT_USAGE}",
            "tool_choice.function",
        )
    if "name" not in function:
        raise vllm_validation_error(
            f"Expected field `name` in `function` in `tool_choice`! {CORRECT_USAGE}",
            "tool_choice.function.name",
        )
    name = function["name"]
    if not isinstance(name, str) or not name:
        raise vllm_validation_error(
            f"Invalid `name` in `function`: `{name}` in `tool_choice`! {CORRECT_USAGE}",
            "tool_choice.function.name",
        )
    return name


def _check_tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise validation_error("list_type", "body.tools", "Input should be a valid list", tools)
    functions = []
    for index, tool in enumerate(tools):
        loc = f"body.tools.{index}"
        if not isinstance(tool, dict):
            raise validation_error(
                "model_attributes_type",
                loc,
                "Input should be a valid dictionary or object to extract fields from",
                tool,
            )
        if tool.get("type", "function") != "function":
            raise validation_error(
                "literal_error",
                f"{loc}.type",
                "Input should be 'function'",
                tool["type"],
                {"expected": "'function'"},
            )
        function = tool.get("function")
        if function is None and "function" not in tool:
            raise validation_error("missing", f"{loc}.function", "Field required", tool)
        if not isinstance(function, dict):
            raise validation_error(
                "model_attributes_type",
                f"{loc}.function",
                "Input should be a valid dictionary or object to extract fields from",
                function,
            )
        if "name" not in function:
            raise validation_error("missing", f"{loc}.function.name", "Field required", function)
        if not isinstance(function["name"], str):
            raise validation_error(
                "string_type", f"{loc}.function.name", "Input should be a valid string", function["name"]
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise validation_error(
                "dict_type", f"{loc}.function.parameters", "Input should be a valid dictionary", parameters
            )
        functions.append(function)
    return functions


def check_tool_flags(
    tools: ToolRequest | None, *, enable_auto_tool_choice: bool, tool_call_parser: str | None
) -> None:
    """The 400s vLLM's serving layer sends when the server's tool flags do not allow the choice."""
    if tools is None or tools.choice == "none":
        return
    if tools.choice == "auto" and not (enable_auto_tool_choice and tool_call_parser):
        raise server_error(
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        )
    if tool_call_parser:
        return
    if tools.choice == "required":
        raise server_error('tool_choice="required" requires --tool-call-parser to be set')
    if tools.choice == "named":
        raise server_error(f'tool_choice=function "{tools.named}" requires --tool-call-parser to be set')


def parse_constraint(body: dict, tools: ToolRequest | None) -> Constraint | None:
    """The structured-output constraint of a request (None: free text), checked for a valid grammar
    (a named tool's parameters too: vLLM guides its arguments with them)."""
    constraint = _structured_outputs(body.get("structured_outputs"))
    if tools is not None and tools.choice == "named":
        if constraint is not None:
            raise vllm_validation_error(
                "You can only either use constraints for structured outputs or tools, not both."
            )
        function = next(f for f in tools.functions if f["name"] == tools.named)
        check_grammar(Constraint("json_schema", schema=function.get("parameters") or {"type": "object"}))
    if constraint is None:
        constraint = _response_format(body.get("response_format"))
    if constraint is not None:
        check_grammar(constraint)
    return constraint


def check_grammar(constraint: Constraint) -> None:
    try:
        validate_constraint(constraint)
    except GrammarError as error:
        raise server_error(f"Grammar error: {error}") from None


def _structured_outputs(value: object) -> Constraint | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise validation_error(
            "dict_type", "body.structured_outputs", "Input should be a valid dictionary", value
        )
    present = [key for key in ("json", "regex", "choice") if value.get(key) is not None]
    if len(present) > 1:
        raise vllm_validation_error(
            "You can only use one kind of constraints for structured outputs ('json', 'regex' or 'choice')."
        )
    if not present:
        return None
    kind = present[0]
    item = value[kind]
    if kind == "json":
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except json.JSONDecodeError as exc:
                raise server_error(f"Grammar error: invalid JSON schema: {exc.msg}") from None
        if not isinstance(item, dict):
            raise validation_error(
                "dict_type", "body.structured_outputs.json", "Input should be a valid dictionary", item
            )
        return Constraint("json_schema", schema=item)
    if kind == "regex":
        if not isinstance(item, str):
            raise validation_error(
                "string_type", "body.structured_outputs.regex", "Input should be a valid string", item
            )
        return Constraint("regex", pattern=item)
    if not (isinstance(item, list) and item and all(isinstance(c, str) for c in item)):
        raise validation_error(
            "list_type", "body.structured_outputs.choice", "Input should be a valid list", item
        )
    return Constraint("choice", choices=tuple(item))


def _response_format(value: object) -> Constraint | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise validation_error(
            "model_attributes_type",
            "body.response_format",
            "Input should be a valid dictionary or object to extract fields from",
            value,
        )
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if spec is None:
            raise vllm_validation_error(
                "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
                "response_format",
            )
        if not isinstance(spec, dict):
            raise validation_error(
                "model_attributes_type",
                "body.response_format.json_schema",
                "Input should be a valid dictionary or object to extract fields from",
                spec,
            )
        schema = spec.get("schema")
        if schema is None:  # vLLM passes `json=None` on: no constraint
            return None
        if not isinstance(schema, dict):
            raise validation_error(
                "dict_type",
                "body.response_format.json_schema.schema",
                "Input should be a valid dictionary",
                schema,
            )
        return Constraint("json_schema", schema=schema)
    raise validation_error(
        "union_tag_invalid",
        "body.response_format",
        "Input tag '{tag}' found using 'type' does not match any of the expected tags: "
        "'json_schema', 'json_object', 'structural_tag', 'text'".replace("{tag}", str(kind)),
        value,
        {
            "discriminator": "'type'",
            "tag": str(kind),
            "expected_tags": "'json_schema', 'json_object', 'structural_tag', 'text'",
        },
    )


def server_error(message: str) -> ApiError:
    """A 400 from vLLM's serving layer (`BadRequestError`, no parameter)."""
    return ApiError(400, error_body(message, "BadRequestError", None, 400))
