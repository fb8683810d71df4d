"""The simulator's options are documented once, on SimConfig's fields; serve(), the CLI and the table in
docs/simulator.md are made from them and must stay equal to them."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from helpers.sim import SimConfig, serve
from helpers.sim.cli import build_parser, config_from_args
from helpers.sim.options import markdown_table, options, replace_table

OPTIONS_DOC = Path(__file__).resolve().parent.parent / "docs" / "simulator.md"


def test_every_simconfig_field_is_a_documented_option() -> None:
    names = [option.name for option in options()]
    assert names == list(SimConfig.__dataclass_fields__)
    assert all(option.doc.strip() for option in options())


def test_the_documented_table_is_the_generated_one() -> None:
    text = OPTIONS_DOC.read_text(encoding="utf-8")
    assert markdown_table() in text, "run `python -m helpers.sim.options_doc --write docs/simulator.md`"
    assert replace_table(text) == text


def test_each_cli_flag_is_an_option_with_its_documentation_and_default(monkeypatch) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    actions = {action.dest: action for action in build_parser()._actions}
    for option in options():
        action = actions[option.name]
        assert option.flag in action.option_strings
        assert action.help == option.summary.replace("`", "'").replace("%", "%%")
        assert action.default == option.default, option.name


def test_serve_takes_exactly_the_options_and_its_own_arguments() -> None:
    parameters = inspect.signature(serve).parameters
    names = [option.name for option in options()]
    assert list(parameters)[: len(names)] == names
    assert list(parameters)[len(names) :] == ["startup_timeout", "log_level", "log_file"]
    assert parameters["port"].default == 0  # serve() takes any free port; the CLI defaults to 8000
    assert all(option.name in serve.__doc__ for option in options())
    with pytest.raises(TypeError, match=r"unknown option.*no_such_option"):
        serve(no_such_option=1)


def test_settings_survive_the_trip_from_serve_to_the_cli() -> None:
    config = SimConfig(
        profile="instant",
        time_scale=3.0,
        served_model_name=["a", "b"],
        max_num_seqs=7,
        latency_spike_rate=0.25,
        enable_auto_tool_choice=True,
        tool_call_parser="hermes",
        reasoning_parser="none",
    )
    parsed = config_from_args(build_parser().parse_args(config.to_args()))
    assert parsed.public_dict() == config.public_dict()


def test_a_switch_can_be_turned_either_way() -> None:
    parser = build_parser()
    assert parser.parse_args(["--enable-auto-tool-choice"]).enable_auto_tool_choice is True
    assert parser.parse_args(["--no-enable-auto-tool-choice"]).enable_auto_tool_choice is False
    on = SimConfig(enable_auto_tool_choice=True, tool_call_parser="hermes")
    assert config_from_args(parser.parse_args(on.to_args())).enable_auto_tool_choice is True


def test_the_old_latency_spike_flag_still_works() -> None:
    args = build_parser().parse_args(["--latency-spike", "0.5"])
    assert isinstance(args, argparse.Namespace) and args.latency_spike_rate == 0.5
