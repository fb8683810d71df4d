"""Run async code from sync code, the same way in a script and in Jupyter.

Jupyter already runs an event loop, so ``asyncio.run(main())`` in a cell fails with
``RuntimeError: asyncio.run() cannot be called from a running event loop``. In a notebook the
simplest fix is top-level ``await main()``. When sync code must call async code (a library
function, a script that is also imported by a notebook), use :func:`run`::

    from helpers.loop import run
    answer = run(model.ainvoke("你好"))   # works in a script and inside a running loop

:func:`run` patches nothing: it submits the coroutine to one long-lived event loop that lives in a
background daemon thread and blocks until the result is back. Because that loop lives as long as
the process, clients that cache pooled connections per loop (langchain-openai's shared
``httpx.AsyncClient``) keep working across calls, instead of failing with
``RuntimeError: Event loop is closed`` as they can after several ``asyncio.run()`` calls.

:func:`enable_nest_asyncio` is the explicit last resort for third-party code that calls
``asyncio.run`` itself; :func:`explain_running_loop_error` turns the classic event-loop errors
into advice.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_CANCEL_GRACE_S = 5.0
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """Return the process-wide background loop, starting its thread on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="helpers.loop", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def _stop_background_loop() -> None:
    """Cancel what is left on the background loop and close it (registered with atexit)."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None
    if loop is None or loop.is_closed():
        return

    async def _cancel_remaining() -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()

    with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
        asyncio.run_coroutine_threadsafe(_cancel_remaining(), loop).result(_CANCEL_GRACE_S)
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(_CANCEL_GRACE_S)
    if not loop.is_running():
        loop.close()


atexit.register(_stop_background_loop)


def _check_coroutine(coro: object) -> None:
    if inspect.iscoroutine(coro):
        return
    if inspect.iscoroutinefunction(coro) or inspect.iscoroutinefunction(
        getattr(coro, "__call__", None)  # noqa: B004 - async callables, not any callable
    ):
        name = getattr(coro, "__name__", "main")
        raise TypeError(
            f"run() needs a coroutine object, but got the coroutine function {name!r}. "
            f"Call it: run({name}()) instead of run({name})."
        )
    if inspect.isawaitable(coro):
        raise TypeError(
            f"run() needs a coroutine object, got the awaitable {type(coro).__name__}; "
            "wrap it: async def main(): return await thing; then run(main())."
        )
    raise TypeError(f"run() needs a coroutine object such as run(main()), got {type(coro).__name__}.")


async def _settled(coro: Coroutine[Any, Any, T], started: list[asyncio.Task[Any]]) -> tuple[bool, Any]:
    """Await ``coro`` and report ``(True, result)`` or ``(False, exception)``.

    The running task is appended to ``started`` so that :func:`run` can cancel it and still
    wait for its clean-up.

    Catching BaseException here is deliberate: the exception is re-raised in the caller's thread
    by :func:`run`, including a cancellation that the coroutine turned into its own
    ``CancelledError`` subclass (such as ``helpers.concurrency.BatchCancelled``).
    """
    task = asyncio.current_task()
    assert task is not None
    started.append(task)
    try:
        return True, await coro
    except BaseException as exc:
        return False, exc


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code and return its result.

    Works in a plain script and inside a running event loop (a Jupyter cell) without patching
    asyncio: the coroutine runs on a long-lived background loop thread. Exceptions raised by the
    coroutine are re-raised here with their traceback.

    On KeyboardInterrupt (Ctrl-C, or the notebook's interrupt button while the cell waits here)
    the coroutine is cancelled and given a few seconds to clean up (close connections); then
    the interrupt is re-raised. If the coroutine turns its cancellation into its own
    ``CancelledError`` subclass that carries partial results (``BatchCancelled`` from
    :func:`helpers.concurrency.amap`), that exception is raised instead, chained to the interrupt.

    Example::

        async def main():
            return await model.ainvoke("2+2=?")

        message = run(main())   # not run(main), not asyncio.run(main()) in Jupyter
    """
    _check_coroutine(coro)
    loop = _background_loop()
    if _thread is threading.current_thread():
        coro.close()
        raise RuntimeError(
            "run() was called from a coroutine that is already running on helpers' background "
            "loop, which would deadlock. Inside async code use `await` instead of run()."
        )
    started: list[asyncio.Task[Any]] = []
    future = asyncio.run_coroutine_threadsafe(_settled(coro, started), loop)
    try:
        ok, value = future.result()
    except KeyboardInterrupt as interrupt:
        if started:
            loop.call_soon_threadsafe(started[0].cancel)
        else:
            future.cancel()
        try:
            ok, value = future.result(_CANCEL_GRACE_S)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
            raise interrupt from None
        if isinstance(value, asyncio.CancelledError) and type(value) is not asyncio.CancelledError:
            raise value from interrupt
        raise
    if ok:
        return value
    raise value


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab), False otherwise.

    Only checks an already-imported IPython, so it never imports IPython itself.
    """
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    shell = ipython_module.get_ipython()
    if shell is None:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell" or "google.colab" in type(shell).__module__


def enable_nest_asyncio() -> None:
    """Opt in to re-entrant event loops with ``nest_asyncio2``: the last resort.

    Use it only for third-party code that calls ``asyncio.run()`` (or
    ``loop.run_until_complete()``) itself and cannot be changed; for your own code prefer
    top-level ``await`` in Jupyter or :func:`run`. Caveats:

    - It monkey-patches asyncio process-wide (``asyncio.run``, the loop's ``run_until_complete``,
      tasks); it cannot be undone for the running loop and can hide real bugs (re-entrancy,
      starvation while a nested call blocks the outer loop).
    - The original ``nest_asyncio`` (erdewit/nest_asyncio) is archived, last release 1.6.0;
      ``nest_asyncio2`` is the maintained fork (fixes for Python 3.12+), which ipykernel >= 7.3
      itself depends on.
    - Neither can patch uvloop; this function refuses a uvloop loop with a clear error.
    """
    import nest_asyncio2

    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None and type(loop).__module__.startswith("uvloop"):
        raise RuntimeError(
            "nest_asyncio2 cannot patch uvloop's event loop. Run the code with a standard "
            "asyncio loop, or call it through helpers.loop.run() instead of patching."
        )
    nest_asyncio2.apply(loop)


_ADVICE_RUNNING_LOOP = (
    "An event loop is already running in this thread (Jupyter runs one for you). "
    "In a notebook cell use top-level `await main()` instead of `asyncio.run(main())`; "
    "from sync code use `helpers.loop.run(main())`. Only if a third-party library calls "
    "asyncio.run() itself, call `helpers.loop.enable_nest_asyncio()` once (last resort)."
)
_ADVICE_LOOP_CLOSED = (
    "A client created under one event loop was used after that loop was closed, typically "
    "after several asyncio.run() calls with one LangChain model (its pooled async HTTP client "
    "belongs to the first loop). Run everything on one long-lived loop: top-level `await` in "
    "Jupyter, or `helpers.loop.run(...)` from sync code, or give each loop a fresh "
    "`http_async_client=`."
)
_ADVICE_NOT_A_COROUTINE = (
    "You passed a coroutine function instead of a coroutine. Call it: `asyncio.run(main())` "
    "or `helpers.loop.run(main())`, not `asyncio.run(main)`."
)


def explain_running_loop_error(exc: BaseException) -> str | None:
    """Advice for the classic event-loop mistakes, or None if ``exc`` is not one of them.

    Example::

        try:
            asyncio.run(main())
        except RuntimeError as exc:
            raise RuntimeError(explain_running_loop_error(exc) or str(exc)) from exc
    """
    message = str(exc)
    if isinstance(exc, RuntimeError):
        if "cannot be called from a running event loop" in message or ("already running" in message):
            return _ADVICE_RUNNING_LOOP
        if "Event loop is closed" in message:
            return _ADVICE_LOOP_CLOSED
    if isinstance(exc, (TypeError, ValueError)) and "coroutine was expected" in message:
        return _ADVICE_NOT_A_COROUTINE
    return None
