"""Ending a broker's sessions when the process is asked to stop (SIGINT, SIGTERM)."""

from __future__ import annotations

__all__ = ["shutdown_on_signals"]

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio

from .._lifetime import owned_task_group

if TYPE_CHECKING:
    from .broker import SessionBroker


@asynccontextmanager
async def shutdown_on_signals(
    broker: SessionBroker, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> AsyncIterator[bool]:
    """While the block runs, ``signals`` shut ``broker`` down, then reach their previous handler.

    An ASGI server (uvicorn, hypercorn) waits for open responses to end
    before it ends the app's lifespan, and a session's response ends only
    with its ``final``: without this, a server asked to stop waits for
    every running session. With it, the signal ends the sessions at once
    (:meth:`SessionBroker.shutdown`) and the server's own handler (which it
    installed before the lifespan started) still runs, so the server shuts
    down as it would have. :func:`enclave_stream.starlette.create_broker_app`
    uses it in its lifespan.

    The signal handler only wakes a task of the block, which calls
    ``shutdown()`` on the event loop (asyncio or trio). It yields True when
    it installed a handler: only in the main thread (the one where Python
    runs signal handlers) and only for a signal that already has a Python
    handler (a server's, or Python's ``KeyboardInterrupt`` for SIGINT); a
    signal left to the system's default action or ignored is not touched.
    On exit, each handler that is still ours is put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    requested = anyio.Event()
    call_soon = _signal_safe_call_soon()
    chained: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has ended
            call_soon(requested.set)
        chained[signum](signum, frame)

    async def shut_down_when_requested() -> None:
        await requested.wait()
        broker.shutdown()

    for signum in signals:
        previous = signal.getsignal(signum)
        if callable(previous):
            chained[signum] = previous
            signal.signal(signum, handler)
    try:
        async with owned_task_group() as task_group:
            task_group.start_soon(shut_down_when_requested)
            yield bool(chained)
    finally:
        for signum, previous in chained.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)


def _signal_safe_call_soon() -> Callable[[Callable[[], None]], object]:
    """The current event loop's way to schedule a call from a signal handler or another thread."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # no asyncio loop: anyio's other backend, trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
