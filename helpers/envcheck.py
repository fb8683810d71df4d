"""Environment check for notebook 00: one ``[OK]``/``[FAIL]`` line per package, with versions.

Version ranges come from ``requirements.txt`` at the repository root (the one source of truth);
without it, from what the installed kit declares (``pip install``), else (``helpers`` copied into
a project) the check only says whether each package is installed.

Example:
    >>> from helpers.envcheck import print_environment_report
    >>> print_environment_report()        # doctest: +SKIP
    [OK]   python 3.11.7 (>=3.11)
    [OK]   openai 3.54.0 (>=3.50,<4)
    ...
    True
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "requirements.txt"
DISTRIBUTION = "qwen-async-kit"
MIN_PYTHON = "3.11"
# What the notebooks import, in the order a reader meets them.
PACKAGES = (
    "openai",
    "httpx",
    "langchain-core",
    "langchain-openai",
    "langchain-deepseek",
    "pandas",
    "matplotlib",
    "tqdm",
    "ipykernel",
    "ipywidgets",
    "nest-asyncio2",
)


@dataclass(frozen=True)
class PackageStatus:
    """One line of the report."""

    name: str
    version: str | None
    required: str
    ok: bool
    problem: str = ""

    def __str__(self) -> str:
        tag = "[OK]  " if self.ok else "[FAIL]"
        version = self.version or "not installed"
        required = f" ({self.required})" if self.required else ""
        problem = f" -> {self.problem}" if self.problem else ""
        return f"{tag} {self.name} {version}{required}{problem}"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path = REQUIREMENTS_FILE) -> dict[str, SpecifierSet]:
    """``{normalised name: specifier}`` from a requirements file; empty if there is none."""
    if not path.exists():
        return {}
    specifiers: dict[str, SpecifierSet] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate():
            specifiers[_normalise(requirement.name)] = requirement.specifier
    return specifiers


def declared_ranges(distribution: str = DISTRIBUTION) -> dict[str, SpecifierSet]:
    """``{normalised name: specifier}`` the installed kit declares, its extras included (and
    markers for this platform); empty if it is not installed."""
    try:
        lines = metadata.requires(distribution) or []
        extras = ["", *(metadata.metadata(distribution).get_all("Provides-Extra") or [])]
    except metadata.PackageNotFoundError:
        return {}
    specifiers: dict[str, SpecifierSet] = {}
    for line in lines:
        requirement = Requirement(line)
        if _normalise(requirement.name) == _normalise(distribution):
            continue  # an extra naming the kit's other extras
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
            specifiers[_normalise(requirement.name)] = requirement.specifier
    return specifiers


def check_package(name: str, required: SpecifierSet | None = None) -> PackageStatus:
    """Is ``name`` installed, and does its version satisfy ``required``?"""
    spec = str(required or "")
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return PackageStatus(name, None, spec, False, "pip install -r requirements.txt")
    if required is not None and not required.contains(version, prereleases=True):
        return PackageStatus(name, version, spec, False, "pip install -r requirements.txt")
    return PackageStatus(name, version, spec, True)


def check_python(minimum: str = MIN_PYTHON) -> PackageStatus:
    version = platform.python_version()
    ok = sys.version_info >= tuple(int(part) for part in minimum.split("."))
    return PackageStatus("python", version, f">={minimum}", ok, "" if ok else f"use Python {minimum}+")


def check_environment(
    packages: tuple[str, ...] = PACKAGES, requirements_file: Path = REQUIREMENTS_FILE
) -> list[PackageStatus]:
    """Python first, then each package, with the range from ``requirements_file`` if it lists one
    (else the range the installed kit declares)."""
    required = read_requirements(requirements_file) or declared_ranges()
    return [check_python()] + [check_package(name, required.get(_normalise(name))) for name in packages]


def print_environment_report(
    packages: tuple[str, ...] = PACKAGES, requirements_file: Path = REQUIREMENTS_FILE
) -> bool:
    """Print one line per check; return True when everything is OK."""
    statuses = check_environment(packages, requirements_file)
    for status in statuses:
        print(status)
    return all(status.ok for status in statuses)


if __name__ == "__main__":
    sys.exit(0 if print_environment_report() else 1)
