"""helpers.checks.check: one printed line per check, in the form the real-vLLM tier counts."""

from __future__ import annotations

import doctest

import numpy as np

import helpers.checks
from helpers.checks import check


def test_a_passing_check_prints_passed_and_returns_true(capsys):
    assert check("8 outcomes, in input order", True) is True
    assert capsys.readouterr().out == "check passed: 8 outcomes, in input order\n"


def test_a_failing_check_prints_failed_in_capitals_and_returns_false(capsys):
    assert check("every reply parsed", False) is False
    assert capsys.readouterr().out == "CHECK FAILED: every reply parsed\n"


def test_truthiness_of_numpy_and_containers_is_read_as_bool(capsys):
    assert check("numpy true", np.bool_(True)) is True
    assert check("empty list", []) is False
    assert capsys.readouterr().out.splitlines() == ["check passed: numpy true", "CHECK FAILED: empty list"]


def test_the_module_example_runs():
    assert doctest.testmod(helpers.checks).failed == 0
