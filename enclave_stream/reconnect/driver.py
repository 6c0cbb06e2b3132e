"""The anyio driver that gives a :class:`ReconnectionStateMachine` its timer."""

from __future__ import annotations

__all__ = ["drive_reconnection"]

from typing import NoReturn

import anyio
from anyio.abc import TaskStatus

from .machine import ReconnectionStateMachine


async def drive_reconnection(
    machine: ReconnectionStateMachine,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Fire the machine's pending retries when their delays run out; runs until cancelled.

    It sleeps only while a retry is pending, wakes up when the retry is
    cancelled or replaced, and calls
    :meth:`~ReconnectionStateMachine.fire_retry` once the delay of the
    retry it slept for has passed and that retry is still pending. React to
    the ``retry_started`` event (or the ``connecting`` state) to reconnect.

    Start it in a task group and cancel the group's scope to stop it; with
    ``await tg.start(...)`` it is listening before ``start`` returns::

        async with anyio.create_task_group() as tg:
            await tg.start(drive_reconnection, machine)
            ...
            tg.cancel_scope.cancel()
    """
    changed = anyio.Event()

    def wake() -> None:
        changed.set()

    remove = machine.add_retry_listener(wake)
    try:
        task_status.started()
        while True:
            pending = machine.pending_retry
            if pending is None:
                await changed.wait()
            else:
                with anyio.move_on_after(pending.delay_seconds):
                    await changed.wait()
                # Fire only the retry we slept for: if it was cancelled or
                # replaced meanwhile, the next round sleeps for the new one.
                if machine.pending_retry is pending:
                    machine.fire_retry()
            # Events cannot be reset; the listener sets whichever is current.
            changed = anyio.Event()
    finally:
        remove()
