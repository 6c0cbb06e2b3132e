"""Detecting a silent connection: a timeout that every heartbeat pushes back."""

from __future__ import annotations

__all__ = ["HeartbeatMonitor"]

import inspect
import math
from collections.abc import Callable
from types import TracebackType

import anyio
from anyio.abc import TaskGroup


class _Run:
    """The state one run of the monitor task shares with :meth:`HeartbeatMonitor.on_heartbeat`.

    Kept per run so that a task still winding down after ``stop()`` can never
    touch the state of the run that a new ``start()`` began.
    """

    __slots__ = ("rearmed", "scope", "wait_scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.wait_scope: anyio.CancelScope | None = None
        self.rearmed: anyio.Event | None = None


class HeartbeatMonitor:
    """Calls ``on_timeout`` when ``timeout_ms`` pass without :meth:`on_heartbeat`.

    A task waits in a cancel scope whose deadline is "last heartbeat +
    timeout"; a heartbeat moves the deadline, so the task wakes only when the
    time really runs out, never to poll.

    It fires once per silence: after ``on_timeout`` it stays quiet until the
    next :meth:`on_heartbeat` or :meth:`reset`, which re-arms it with a full
    ``timeout_ms`` from that moment (the reference stops for good after
    firing). ``on_timeout`` is a plain function or a coroutine function (an
    awaitable result is awaited); it runs in the monitor's task, and if it
    raises, the exception propagates through the task group (out of the
    ``async with``).

    Use it as a context manager that owns its task::

        async with HeartbeatMonitor(30_000, on_timeout=stream_is_dead) as monitor:
            async for event in events:
                monitor.on_heartbeat()

    or in a task group of your own with :meth:`start` and :meth:`stop`.
    Time is ``anyio.current_time()``, so a virtual clock drives it in tests.
    """

    def __init__(self, timeout_ms: float, on_timeout: Callable[[], object]) -> None:
        if (
            isinstance(timeout_ms, bool)
            or not isinstance(timeout_ms, int | float)
            or not math.isfinite(timeout_ms)
            or timeout_ms <= 0
        ):
            raise ValueError(f"timeout_ms must be a finite number > 0, got {timeout_ms!r}")
        self._timeout_ms = timeout_ms
        self._on_timeout = on_timeout
        self._last_heartbeat: float | None = None
        self._run: _Run | None = None
        self._task_group: TaskGroup | None = None

    @property
    def timeout_ms(self) -> float:
        """The allowed silence, in milliseconds."""
        return self._timeout_ms

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._run is not None

    @property
    def time_since_last_heartbeat_ms(self) -> float:
        """Milliseconds since the last heartbeat (or since :meth:`start`); 0.0 before either."""
        if self._last_heartbeat is None:
            return 0.0
        return (anyio.current_time() - self._last_heartbeat) * 1000

    def on_heartbeat(self) -> None:
        """Record a sign of life: the timeout restarts from now (and re-arms after a timeout)."""
        self._last_heartbeat = anyio.current_time()
        run = self._run
        if run is None:
            return
        if run.wait_scope is not None:
            run.wait_scope.deadline = self._deadline()
        if run.rearmed is not None:
            run.rearmed.set()

    def reset(self) -> None:
        """Restart the timeout from now, e.g. after reconnecting (same as :meth:`on_heartbeat`)."""
        self.on_heartbeat()

    def start(self, task_group: TaskGroup) -> None:
        """Start the monitor task in ``task_group``; the timeout counts from now.

        A stopped monitor may be started again.

        Raises:
            RuntimeError: if it is already running.
        """
        if self._run is not None:
            raise RuntimeError("HeartbeatMonitor is already running")
        run = _Run()
        self._run = run
        self._last_heartbeat = anyio.current_time()
        task_group.start_soon(self._watch, run, name="HeartbeatMonitor")

    def stop(self) -> None:
        """Stop the monitor task (idempotent); ``on_timeout`` will not be called after this."""
        run, self._run = self._run, None
        if run is not None:
            run.scope.cancel()

    async def __aenter__(self) -> HeartbeatMonitor:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            self.start(task_group)
        except BaseException as exc:
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.stop()
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            raise RuntimeError("HeartbeatMonitor.__aexit__ called without __aenter__")
        return await task_group.__aexit__(exc_type, exc, tb)

    def _deadline(self) -> float:
        assert self._last_heartbeat is not None, "set by start()"
        return self._last_heartbeat + self._timeout_ms / 1000

    async def _watch(self, run: _Run) -> None:
        with run.scope:
            while True:
                deadline = self._deadline()
                if anyio.current_time() < deadline:
                    with anyio.CancelScope(deadline=deadline) as wait:
                        run.wait_scope = wait
                        await anyio.sleep_forever()
                    run.wait_scope = None
                    # Check the clock again rather than trusting the wake-up:
                    # a heartbeat may land between the deadline and now.
                    continue
                rearmed = anyio.Event()
                run.rearmed = rearmed
                result = self._on_timeout()
                if inspect.isawaitable(result):
                    await result
                await rearmed.wait()
                run.rearmed = None
