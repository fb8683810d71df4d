"""Execute a notebook against a live server and report what went wrong, cell by cell.

A notebook fails on an error cell (except cells tagged `raises-exception`, the deliberate ones) and on
any printed `CHECK FAILED` (the kit's check convention, helpers.checks.check). The executed copy goes
to a scratch folder, never into the repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from kit_tools import vllm_cpu

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _printed(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") in ("execute_result", "display_data"):
        return str(output.get("data", {}).get("text/plain", ""))
    return ""


def failed_checks(notebook: nbformat.NotebookNode) -> list[str]:
    """`CHECK FAILED: ...` lines with their cell numbers."""
    found = []
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            found += [
                f"cell {number}: {line}" for line in _printed(output).splitlines() if "CHECK FAILED" in line
            ]
    return found


def run_against(name: str, server: vllm_cpu.Server, out_dir: Path, timeout: int = 600) -> list[str]:
    """Run notebooks/<name>.ipynb against `server`; return the problems found (empty: it passed)."""
    path = NOTEBOOKS / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    env = {
        "QWEN_BASE_URL": server.base_url,
        "QWEN_MODEL": vllm_cpu.SERVED_NAMES[0],
        "QWEN_RESULTS_DIR": str(out_dir / "results"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # Only the simulated parts (06's fleets, comparisons) run on the faster clock, as in make test.
        "QWEN_SIM_TIME_SCALE": "10",
    }
    if server.api_key:
        env["QWEN_API_KEY"] = server.api_key
    saved = {key: os.environ.get(key) for key in [*env, "QWEN_API_KEY", "OPENAI_API_KEY"]}
    os.environ.update(env)
    for key in ("OPENAI_API_KEY",) + (() if server.api_key else ("QWEN_API_KEY",)):
        os.environ.pop(key, None)
    problems: list[str] = []
    try:
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        )
        client.execute()
    except CellExecutionError as error:
        problems.append(f"error cell: {str(error)[-3000:]}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out_dir / path.name)
    problems += failed_checks(notebook)
    if problems:
        print(f"{path.name} against {server.base_url} ({' '.join(server.args)}):", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
    return problems
