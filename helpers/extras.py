"""Optional parts of the kit (pip extras) and a clear error when one is missing.

The client (``helpers.chat``, ``.endpoint``, ``.concurrency``, ``.streaming``, ``.loop``) needs only
the package's own dependencies; the simulator, the benchmark engine and the notebooks need the
``sim``, ``bench`` and ``notebooks`` extras, a fleet behind vllm-router and Ray batch jobs ``scale``
(``all`` has everything).

Example:
    >>> require_extra("sim", ["uvicorn"], needed_for="the embedded simulator")  # doctest: +SKIP
    ImportError: the embedded simulator needs the 'sim' extra of qwen-async-kit, which is not
    installed (no module uvicorn). Install it with:
        pip install 'starlette<2,>=1.0' 'uvicorn<1,>=0.50' ...
"""

from __future__ import annotations

import importlib.util
import shlex
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DISTRIBUTION = "qwen-async-kit"


def require_extra(name: str, modules: list[str], *, needed_for: str = "") -> None:
    """Raise ``ImportError`` with the pip command to run when one of ``modules`` cannot be imported.

    ``name`` is the extra that provides them (``sim``, ``bench``, ``notebooks``, ``scale``);
    ``needed_for`` says what the user was doing, e.g. ``"the embedded simulator (no QWEN_BASE_URL set)"``.
    """
    missing = [module for module in modules if not _importable(module)]
    if not missing:
        return
    what = f"{needed_for} needs" if needed_for else "this needs"
    raise ImportError(
        f"{what} the '{name}' extra of {DISTRIBUTION}, which is not installed (no module "
        f"{', '.join(missing)}): pip install '{DISTRIBUTION}[{name}]' (from a clone of the kit: "
        f"pip install -e '.[{name}]') adds it. Its packages alone: Install it with:\n"
        f"    {install_command(name)}",
        name=missing[0],
    )


def install_command(extra: str) -> str:
    """The ``pip install`` command that adds ``extra``'s packages to this environment.

    The requirements come from the installed distribution's metadata (those that apply to this
    platform), so the command works wherever the kit was installed from; without that metadata
    (``helpers/`` copied into a project) it is the kit's full environment, ``requirements.txt``.
    """
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requirements = []
    selected = extra_requirements(requirements, extra)
    if not selected:
        return "pip install -r requirements.txt  # the kit's environment, from its repository"
    return "pip install " + " ".join(shlex.quote(requirement) for requirement in selected)


def extra_requirements(requirements: list[str], extra: str) -> list[str]:
    """The ``name<spec`` requirements that ``extra`` adds here, the kit's own extras expanded.

    ``requirements`` are ``Requires-Dist`` lines, e.g. ``'uvloop<1,>=0.21; sys_platform != "win32"
    and extra == "sim"'`` (kept on Linux, dropped on Windows).
    """
    selected: list[str] = []
    for line in requirements:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or not marker.evaluate({"extra": extra}) or marker.evaluate({"extra": ""}):
            continue  # not part of this extra (a base dependency is installed already)
        if canonicalize_name(requirement.name) == DISTRIBUTION:
            for inner in sorted(requirement.extras):
                selected += extra_requirements(requirements, inner)
        else:
            selected.append(f"{requirement.name}{requirement.specifier}")
    return list(dict.fromkeys(selected))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package of a dotted name is missing
        return False
