"""helpers.envcheck: the package report of notebook 00."""

from __future__ import annotations

import platform
import subprocess
import sys
from email.message import Message
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from helpers.envcheck import (
    PACKAGES,
    REQUIREMENTS_FILE,
    check_environment,
    check_package,
    check_python,
    declared_ranges,
    print_environment_report,
    read_requirements,
)


def test_this_environment_passes(capsys) -> None:
    assert print_environment_report()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PACKAGES) + 1
    assert lines[0] == f"[OK]   python {platform.python_version()} (>=3.11)"
    assert f"[OK]   openai {metadata.version('openai')} (<4,>=3.57)" in lines
    assert all(line.startswith("[OK]") for line in lines)


def test_ranges_come_from_requirements_txt() -> None:
    required = read_requirements(REQUIREMENTS_FILE)
    assert required["langchain-openai"] == SpecifierSet(">=1.7,<2")
    assert required["nest-asyncio2"] == SpecifierSet(">=1.7,<2")


def test_missing_package_fails_with_the_fix() -> None:
    status = check_package("surely-not-installed-pkg-xyz")
    assert not status.ok and status.version is None
    assert str(status) == (
        "[FAIL] surely-not-installed-pkg-xyz not installed -> pip install -r requirements.txt"
    )


def test_version_outside_the_range_fails() -> None:
    status = check_package("openai", SpecifierSet("<1"))
    assert not status.ok
    assert str(status).startswith(f"[FAIL] openai {metadata.version('openai')} (<1)")


def not_installed(distribution: str) -> list[str]:
    raise metadata.PackageNotFoundError(distribution)


def test_without_requirements_file_only_presence_is_checked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(metadata, "requires", not_installed)  # helpers/ copied into a project
    statuses = check_environment(("openai", "no-such-pkg-xyz"), tmp_path / "requirements.txt")
    assert [status.ok for status in statuses] == [True, True, False]
    assert statuses[1].required == ""


def test_a_pip_installed_kit_checks_the_ranges_it_declares(tmp_path: Path, monkeypatch) -> None:
    """Installed, the package has no requirements.txt beside it: its metadata has the ranges."""
    declared = {
        "qwen-async-kit": [
            "openai<1,>=0.1",
            'pandas<4,>=2.2; extra == "bench"',
            'uvloop<1,>=0.21; sys_platform == "no-such-platform" and extra == "sim"',
            'qwen-async-kit[bench,sim]; extra == "notebooks"',
        ]
    }
    monkeypatch.setattr(metadata, "requires", lambda name: declared[name])
    headers = Message()
    for extra in ("sim", "bench", "notebooks"):
        headers["Provides-Extra"] = extra
    monkeypatch.setattr(metadata, "metadata", lambda name: headers)
    assert declared_ranges() == {"openai": SpecifierSet("<1,>=0.1"), "pandas": SpecifierSet(">=2.2,<4")}
    statuses = check_environment(("openai", "pandas"), tmp_path / "requirements.txt")
    assert statuses[1].required == "<1,>=0.1" and not statuses[1].ok
    assert statuses[2].required == "<4,>=2.2"


def test_requirements_with_markers_and_comments(tmp_path: Path) -> None:
    file = tmp_path / "requirements.txt"
    file.write_text('# comment\nfoo_bar>=1,<2  # why\nuvloop>=0.21 ; sys_platform == "nt-none"\n')
    assert read_requirements(file) == {"foo-bar": SpecifierSet(">=1,<2")}


def test_python_minimum() -> None:
    assert check_python("3.10").ok
    assert not check_python("99.0").ok


@pytest.mark.server
def test_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "helpers.envcheck"],
        capture_output=True,
        text=True,
        cwd=REQUIREMENTS_FILE.parent,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK]   langchain-deepseek" in done.stdout
