"""helpers.loop: run() in a script and inside a running loop, interrupts, advice for loop errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.loop import explain_running_loop_error, in_notebook, run

REPO_ROOT = Path(__file__).resolve().parents[1]


# Python's own Ctrl-C handler: a process started as a shell's background job (`make test &`, a CI
# runner's) inherits SIGINT ignored, and then a test's SIGINT would never arrive.
CTRL_C_HANDLED = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


def run_script(source: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter (a plain script: no loop running), Ctrl-C handled."""
    return subprocess.run(
        [sys.executable, "-c", CTRL_C_HANDLED + textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,  # so that `import helpers` works whether or not the package is installed
    )


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_run_returns_the_result_in_sync_code() -> None:
    assert run(add(2, 3)) == 5


async def test_run_works_inside_a_running_loop() -> None:
    asyncio.get_running_loop()  # precondition: a loop is running here, as in a Jupyter cell
    assert run(add(1, 1)) == 2
    assert run(add(2, 2)) == 4


def test_run_reraises_the_coroutines_exception_with_its_type() -> None:
    async def fails() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        run(fails())


def test_run_uses_one_loop_across_calls() -> None:
    async def current_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert run(current_loop()) is run(current_loop())


def test_coroutine_function_instead_of_coroutine_says_call_it() -> None:
    async def main() -> int:
        return 1

    with pytest.raises(TypeError, match=r"Call it: run\(main\(\)\)"):
        run(main)  # type: ignore[arg-type]


@pytest.mark.parametrize("thing", [None, 42, "text", lambda: None])
def test_non_coroutine_is_a_type_error(thing: object) -> None:
    with pytest.raises(TypeError, match="coroutine"):
        run(thing)  # type: ignore[arg-type]


def test_run_from_the_background_loop_itself_is_refused_not_deadlocked() -> None:
    async def nested() -> int:
        return run(add(1, 2))

    with pytest.raises(RuntimeError, match="use `await` instead"):
        run(nested())


@pytest.mark.server
def test_run_in_a_plain_script_including_exceptions() -> None:
    result = run_script(
        """
        import asyncio
        from helpers.loop import run

        async def double(x):
            await asyncio.sleep(0.01)
            return 2 * x

        async def fails():
            raise ValueError("boom")

        print(run(double(21)), run(double(1)))
        try:
            run(fails())
        except ValueError as exc:
            print("caught", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["42 2", "caught boom"]
    assert "Traceback" not in result.stderr


@pytest.mark.server
def test_keyboard_interrupt_cancels_the_coroutine_and_is_reraised() -> None:
    result = run_script(
        """
        import asyncio, os, signal, threading, time
        from helpers import loop

        cleaned = []

        async def slow():
            try:
                await asyncio.sleep(30)
            finally:
                await asyncio.sleep(0.05)  # clean-up that needs the loop, like closing a socket
                cleaned.append(True)

        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            loop.run(slow())
        except KeyboardInterrupt:
            print("interrupted", round(time.monotonic() - start, 1) < 10, cleaned)  # not the 30 s sleep

        async def pending():
            return len(asyncio.all_tasks()) - 1

        print("pending", loop.run(pending()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["interrupted True [True]", "pending 0"]


@pytest.mark.server
def test_keyboard_interrupt_surfaces_a_cancellation_that_carries_partial_results() -> None:
    result = run_script(
        """
        import asyncio, os, signal, threading
        from helpers import loop

        class Partial(asyncio.CancelledError):
            pass

        async def batch():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise Partial("3 of 10 finished")

        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            loop.run(batch())
        except Partial as exc:
            print("partial:", exc, type(exc.__cause__).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "partial: 3 of 10 finished KeyboardInterrupt"


def test_in_notebook_is_false_outside_jupyter() -> None:
    assert in_notebook() is False


@pytest.mark.server
def test_in_a_real_jupyter_kernel_run_works_and_in_notebook_is_true() -> None:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(REPO_ROOT))
    try:
        code = textwrap.dedent(
            """
            import asyncio
            from helpers.loop import in_notebook, run, explain_running_loop_error

            async def answer():
                await asyncio.sleep(0.01)
                return 42

            try:
                asyncio.run(answer())
            except RuntimeError as exc:
                advice = explain_running_loop_error(exc)
            print(in_notebook(), run(answer()), "top-level `await" in advice)
            """
        )
        reply = client.execute_interactive(code, timeout=60, output_hook=_collect_stdout)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert _collected.pop().strip() == "True 42 True"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


_collected: list[str] = []


def _collect_stdout(message: dict) -> None:
    if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
        _collected.append(message["content"]["text"])


async def test_explains_asyncio_run_inside_a_running_loop() -> None:
    coro = add(1, 2)
    with pytest.raises(RuntimeError) as info:
        asyncio.run(coro)
    coro.close()
    advice = explain_running_loop_error(info.value)
    assert advice is not None
    assert "top-level `await main()`" in advice
    assert "helpers.loop.run(main())" in advice


def test_explains_a_coroutine_function_passed_to_asyncio_run() -> None:
    with pytest.raises(ValueError) as info:
        asyncio.run(add)  # type: ignore[arg-type]
    advice = explain_running_loop_error(info.value)
    assert advice is not None and "asyncio.run(main())" in advice


def test_explains_event_loop_is_closed() -> None:
    advice = explain_running_loop_error(RuntimeError("Event loop is closed"))
    assert advice is not None and "one long-lived loop" in advice


def test_unrelated_errors_get_no_advice() -> None:
    assert explain_running_loop_error(RuntimeError("something else")) is None
    assert explain_running_loop_error(KeyError("x")) is None


@pytest.mark.server
def test_enable_nest_asyncio_lets_library_code_call_asyncio_run_inside_a_loop() -> None:
    result = run_script(
        """
        import asyncio
        from helpers.loop import enable_nest_asyncio

        async def inner():
            return "inner"

        def library_function():  # third-party code we cannot change
            return asyncio.run(inner())

        async def cell():
            enable_nest_asyncio()
            return library_function()

        print(asyncio.run(cell()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "inner"


@pytest.mark.server
def test_enable_nest_asyncio_refuses_uvloop() -> None:
    result = run_script(
        """
        import uvloop
        from helpers.loop import enable_nest_asyncio

        async def cell():
            try:
                enable_nest_asyncio()
            except RuntimeError as exc:
                print(exc)

        uvloop.run(cell())
        """
    )
    assert result.returncode == 0, result.stderr
    assert "cannot patch uvloop" in result.stdout


def test_three_consecutive_asyncio_run_calls_after_run() -> None:
    """run()'s background loop does not interfere with the caller's own asyncio.run() calls."""
    assert run(add(1, 1)) == 2
    assert [asyncio.run(add(i, 1)) for i in range(3)] == [1, 2, 3]
