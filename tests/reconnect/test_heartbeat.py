"""HeartbeatMonitor: timeout, re-arming, reset, stop, callbacks."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from enclave_stream.reconnect import HeartbeatMonitor

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(virtual_backend: Any) -> Any:
    return virtual_backend


def _leaves(exc: BaseException) -> list[BaseException]:
    nested: tuple[BaseException, ...] | None = getattr(exc, "exceptions", None)
    if nested is None:
        return [exc]
    return [leaf for inner in nested for leaf in _leaves(inner)]


class Recorder:
    """A sync on_timeout that records when it was called."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.called = anyio.Event()

    def __call__(self) -> None:
        self.calls.append(anyio.current_time())
        self.called.set()


@pytest.mark.parametrize("timeout_ms", [0, -5, float("nan"), float("inf"), True, "1"])
def test_timeout_is_validated(timeout_ms: Any) -> None:
    with pytest.raises(ValueError, match="timeout_ms"):
        HeartbeatMonitor(timeout_ms, lambda: None)


class TestLifecycle:
    """Firing, re-arming, stopping, errors."""

    async def test_fires_once_after_silence(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            t0 = anyio.current_time()
            await on_timeout.called.wait()
            await anyio.sleep(5.0)
            assert monitor.running
        assert len(on_timeout.calls) == 1
        assert on_timeout.calls[0] - t0 >= 1.0 * 0.99
        assert on_timeout.calls[0] - t0 == pytest.approx(1.0)

    async def test_heartbeat_after_timeout_rearms(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            await on_timeout.called.wait()
            on_timeout.called = anyio.Event()
            monitor.on_heartbeat()
            await on_timeout.called.wait()
        assert len(on_timeout.calls) == 2
        assert on_timeout.calls[1] - on_timeout.calls[0] >= 1.0 * 0.99

    async def test_async_callback_is_awaited(self) -> None:
        done = anyio.Event()

        async def on_timeout() -> None:
            await anyio.lowlevel.checkpoint()
            done.set()

        async with HeartbeatMonitor(1000, on_timeout):
            await done.wait()

    async def test_stop_prevents_the_call_and_ends_the_task(self) -> None:
        on_timeout = Recorder()
        monitor = HeartbeatMonitor(1000, on_timeout)
        tasks_before = len(anyio.get_running_tasks())
        async with anyio.create_task_group() as tg:
            monitor.start(tg)
            assert monitor.running
            await anyio.sleep(0.5)
            monitor.stop()
            monitor.stop()  # idempotent
            assert not monitor.running
            # The group exits without being cancelled: the task ended by itself.
        assert len(anyio.get_running_tasks()) == tasks_before
        await anyio.sleep(2.0)
        assert on_timeout.calls == []

    async def test_callback_errors_propagate(self) -> None:
        def on_timeout() -> None:
            raise LookupError("stale")

        caught: BaseException | None = None
        try:
            async with HeartbeatMonitor(1000, on_timeout):
                await anyio.sleep_forever()
        except BaseException as exc:  # an ExceptionGroup (a backport on 3.10)
            caught = exc
        assert caught is not None
        assert [str(leaf) for leaf in _leaves(caught)] == ["stale"]

    async def test_start_twice_is_refused_and_restart_after_stop_works(self) -> None:
        on_timeout = Recorder()
        monitor = HeartbeatMonitor(1000, on_timeout)
        async with anyio.create_task_group() as tg:
            monitor.start(tg)
            with pytest.raises(RuntimeError, match="already running"):
                monitor.start(tg)
            monitor.stop()
            monitor.start(tg)
            await on_timeout.called.wait()
            monitor.stop()
        assert len(on_timeout.calls) == 1

    async def test_callback_may_stop_the_monitor(self) -> None:
        monitor: HeartbeatMonitor

        def on_timeout() -> None:
            monitor.stop()

        monitor = HeartbeatMonitor(1000, on_timeout)
        with anyio.fail_after(1.0 * 100):
            async with anyio.create_task_group() as tg:
                monitor.start(tg)
        assert not monitor.running


class TestExactTiming:
    """When the callback fires, to the virtual millisecond."""

    async def test_heartbeats_push_the_deadline(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(30_000, on_timeout) as monitor:
            for _ in range(10):
                await anyio.sleep(29.9)
                monitor.on_heartbeat()
            last = anyio.current_time()
            assert on_timeout.calls == []
            await on_timeout.called.wait()
        assert on_timeout.calls == [pytest.approx(last + 30)]

    async def test_reset_restarts_the_timeout(self) -> None:
        on_timeout = Recorder()
        async with HeartbeatMonitor(1000, on_timeout) as monitor:
            await anyio.sleep(0.75)
            monitor.reset()
            t_reset = anyio.current_time()
            await on_timeout.called.wait()
        assert on_timeout.calls == [pytest.approx(t_reset + 1)]

    async def test_time_since_last_heartbeat(self) -> None:
        monitor = HeartbeatMonitor(1000, lambda: None)
        assert monitor.time_since_last_heartbeat_ms == 0.0
        async with monitor:
            await anyio.sleep(0.25)
            assert monitor.time_since_last_heartbeat_ms == pytest.approx(250)
            monitor.on_heartbeat()
            assert monitor.time_since_last_heartbeat_ms == 0.0
            await anyio.sleep(0.1)
            assert monitor.time_since_last_heartbeat_ms == pytest.approx(100)

    async def test_heartbeat_during_a_slow_callback_rearms(self) -> None:
        calls: list[float] = []
        second = anyio.Event()
        monitor: HeartbeatMonitor

        async def on_timeout() -> None:
            calls.append(anyio.current_time())
            if len(calls) == 1:
                await anyio.sleep(0.5)
                monitor.on_heartbeat()  # arrives while the handler still runs
                await anyio.sleep(0.5)
            else:
                second.set()

        monitor = HeartbeatMonitor(1000, on_timeout)
        async with monitor:
            t0 = anyio.current_time()
            await second.wait()
        assert calls == [pytest.approx(t0 + 1), pytest.approx(t0 + 2.5)]
