"""The kit as a package: declared dependencies and extras, package data, an install that works.

The slow test builds a wheel of a copy of the repository, pip-installs it (not editable) into a
clean venv and uses it from a directory outside the repository. Its dependencies come from this
environment instead of a second trip to the package index: exactly the distributions that the
wheel's declared requirements reach (the core ones first, then the `sim` and `bench` extras) are
linked into the venv, so an import the declarations do not cover fails there as after `pip install`.
"""

from __future__ import annotations

import email
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.extras import extra_requirements, install_command, require_extra

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT_S = 600  # builds and installs offline; minutes only on a very loaded machine
DISTRIBUTION = "qwen-async-kit"
REPO_TOOLING = ("helpers/run_notebooks.py", "helpers/bench/firehose.py")


def pyproject(path: Path = ROOT / "pyproject.toml") -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def requirements_txt() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    parsed = [Requirement(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]
    return {requirement.name: requirement for requirement in parsed}


def test_every_declared_dependency_is_in_the_notebook_environment_with_the_same_range():
    project = pyproject()["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += [line for line in extra if Requirement(line).name != project["name"]]
    declared += pyproject(ROOT / "kit_tools" / "pyproject.toml")["project"]["dependencies"]
    environment = requirements_txt()
    for line in declared:
        requirement = Requirement(line)
        if requirement.name == project["name"]:
            continue
        assert requirement.name in environment, f"{requirement.name} is missing from requirements.txt"
        pinned = environment[requirement.name]
        assert (pinned.specifier, pinned.marker) == (requirement.specifier, requirement.marker), line


def test_extras_cover_simulator_benchmark_notebooks_and_all():
    extras = pyproject()["project"]["optional-dependencies"]
    assert {"sim", "bench", "notebooks", "all"} <= set(extras)
    names = {extra: {Requirement(line).name for line in lines} for extra, lines in extras.items()}
    assert {"starlette", "uvicorn", "orjson", "prometheus-client"} <= names["sim"]
    assert {"numpy", "pandas", "matplotlib", "psutil"} <= names["bench"]
    assert {"jupyterlab", "ipykernel", "ipywidgets"} <= names["notebooks"]


def test_repo_tooling_is_not_in_the_copy_me_package():
    assert not [path for path in REPO_TOOLING if (ROOT / path).exists()]
    from kit_tools.firehose import serve_firehose
    from kit_tools.run_notebooks import run_notebook

    assert callable(serve_firehose) and callable(run_notebook)


@pytest.mark.server
def test_user_results_are_ignored_by_git_but_committed_ones_are_not():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False).returncode == 0

    assert ignored("notebooks/results/04_knee.png")
    assert ignored("results/04_blog.json")
    assert not ignored("data/results/04_blog.json")


def test_require_extra_passes_when_installed_and_names_the_pip_command_when_not():
    require_extra("bench", ["json", "importlib.metadata"])
    with pytest.raises(ImportError, match="'sim' extra") as caught:
        require_extra("sim", ["json", "surely_not_a_module_xyz", "nor_this.sub"], needed_for="the test")
    message = str(caught.value)
    assert message.startswith("the test needs the 'sim' extra")
    assert "surely_not_a_module_xyz, nor_this.sub" in message
    assert "pip install" in message
    assert caught.value.name == "surely_not_a_module_xyz"


def test_extra_requirements_come_from_metadata_with_the_kits_own_extras_expanded():
    requires_dist = [
        "httpx<1,>=0.28",
        'uvicorn<1,>=0.50; extra == "sim"',
        'uvloop<1,>=0.21; sys_platform == "no-such-platform" and extra == "sim"',
        'pandas<4,>=2.2; extra == "bench"',
        'qwen-async-kit[bench,sim]; extra == "notebooks"',
        'jupyterlab<5,>=4.4; extra == "notebooks"',
    ]
    assert extra_requirements(requires_dist, "sim") == ["uvicorn<1,>=0.50"]
    assert extra_requirements(requires_dist, "notebooks") == [
        "pandas<4,>=2.2",
        "uvicorn<1,>=0.50",
        "jupyterlab<5,>=4.4",
    ]
    assert extra_requirements(requires_dist, "nothing") == []
    assert install_command("no-such-extra").startswith("pip install -r requirements.txt")


def copy_of_the_repository(target: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "build", ".pytest_cache", ".ruff_cache", "runs"
    )
    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's ``Requires-Dist`` lines (what pip would resolve)."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name)).get_all("Requires-Dist") or []


def dependency_closure(requires_dist: list[str], extras: set[str]) -> set[str]:
    """The distributions (installed here) that ``requires_dist`` with ``extras`` reaches, transitively."""
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(text, frozenset(extras)) for text in requires_dist]
    while pending:
        text, wanted_extras = pending.pop()
        requirement = Requirement(text)
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *wanted_extras)
        ):
            continue
        name, its_extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, its_extras) in seen:
            continue
        seen.add((name, its_extras))
        if name == DISTRIBUTION:  # the kit's own extras, e.g. notebooks = [qwen-async-kit[sim,bench]]
            pending += [(line, its_extras) for line in requires_dist]
            continue
        found.add(name)
        pending += [(line, its_extras) for line in metadata.requires(name) or []]
    return found


def link_distributions(names: set[str], site_packages: Path) -> None:
    """Make ``names`` importable in a venv as installed: their packages and metadata, linked."""
    for name in names:
        dist = metadata.distribution(name)
        for top in {file.parts[0] for file in dist.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            target = site_packages / top
            if not target.exists():
                target.symlink_to(Path(dist.locate_file(top)))


def run(command: list[str], cwd: Path, timeout: float = PIP_TIMEOUT_S) -> str:
    """Run in the clean venv: nothing of this checkout on the path, no results folder chosen."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QWEN_RESULTS_DIR")}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


USE_THE_CLIENT = """
import json
import helpers.chat, helpers.concurrency, helpers.endpoint, helpers.loop, helpers.streaming
from helpers import amap, make_chat_model, run
try:
    import helpers.bench
    bench_error = None
except ImportError as error:
    bench_error = str(error)
from helpers.envcheck import check_environment
from helpers.extras import require_extra
from helpers.prompts import load_prompts

zh = load_prompts("zh")
openai_range = check_environment(("openai",))[1].required
try:
    require_extra("sim", ["starlette", "uvicorn", "orjson", "prometheus_client"])
    sim_error = None
except ImportError as error:
    sim_error = str(error)
print(json.dumps({"zh": zh[0], "count": len(zh), "sim_error": sim_error, "openai_range": openai_range,
                  "bench_error": bench_error}))
"""

USE_THE_SIMULATOR = """
import json
from pathlib import Path

import helpers
from helpers.bench.results import default_results_dir
from helpers.chat import make_chat_model
from helpers.endpoint import Endpoint
from helpers.prompts import load_prompts
from helpers.sim import serve

with serve(time_scale=10, startup_timeout=300) as server:
    endpoint = Endpoint(server.base_url, server.model)
    reply = make_chat_model(endpoint=endpoint, thinking=False, max_tokens=16).invoke(load_prompts("zh")[0])
print(json.dumps({
    "content": reply.content,
    "results_dir": str(default_results_dir()),
    "cwd": str(Path.cwd()),
    "package": helpers.__file__,
}))
"""


@pytest.mark.slow
@pytest.mark.server
def test_pip_install_of_the_repository_works_outside_it(tmp_path):
    source = copy_of_the_repository(tmp_path / "repo")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    wheels = tmp_path / "wheels"
    offline = ["--no-index", "--no-deps", "-q"]
    build = [sys.executable, "-m", "pip", "wheel", *offline, "--no-build-isolation", "-w", str(wheels)]
    run([*build, str(source)], cwd=tmp_path)
    [wheel] = wheels.glob("qwen_async_kit-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, timeout=300)
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", *offline, str(wheel)], cwd=outside)
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             cwd=outside).strip())  # fmt: skip
    requires_dist = wheel_requirements(wheel)

    # the package and its core dependencies: the client imports, the prompt sets are package data
    link_distributions(dependency_closure(requires_dist, set()), site_packages)
    used = json.loads(run([python, "-c", USE_THE_CLIENT], cwd=outside, timeout=300))
    assert used["zh"] == "你是谁?" and used["count"] > 1
    # the environment check knows the declared ranges without the repository's requirements.txt
    assert used["openai_range"] == str(requirements_txt()["openai"].specifier)
    # the simulator is an extra; its absence is a clear error with the command that installs it
    sim_error = used["sim_error"]
    assert sim_error and "'sim' extra" in sim_error, sim_error
    assert "pip install 'qwen-async-kit[sim]'" in sim_error and "pip install -e '.[sim]'" in sim_error
    # so is the benchmark engine's: an ImportError naming its extra, not a bare "No module named numpy"
    assert used["bench_error"] and "'bench' extra" in used["bench_error"], used["bench_error"]
    command = sim_error.split("Install it with:", 1)[1].strip()
    assert command.startswith("pip install ") and "uvicorn" in command, command
    sim_closure = dependency_closure(requires_dist, {"sim"})
    named = {canonicalize_name(Requirement(part).name) for part in shlex.split(command)[2:]}
    assert named and named <= sim_closure, (named, sim_closure)
    # the repository's tooling did not come along
    probe = (
        "import importlib.util as u, pathlib; package = pathlib.Path(u.find_spec('helpers').origin).parent; "
        "print(u.find_spec('kit_tools') is None, *(package.joinpath(p).exists() for p in "
        "('run_notebooks.py', 'bench/firehose.py')))"
    )
    assert run([python, "-c", probe], cwd=outside, timeout=300).split() == ["True", "False", "False"]

    # with the sim and bench extras' dependencies: the simulator runs, results go beside the user
    link_distributions(dependency_closure(requires_dist, {"sim", "bench"}), site_packages)
    used = json.loads(run([python, "-c", USE_THE_SIMULATOR], cwd=outside, timeout=600))
    assert used["content"].strip()
    assert used["results_dir"] == str(outside / "results")
    assert Path(used["package"]).is_relative_to(venv)
