"""What every task-owning object promises about its ``async with`` block.

The heartbeat monitor, the resumable event stream, the producer's event
stream and the session broker share one lifetime: tested here through each
public class, so a class that stopped keeping a promise shows up by name.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from enclave_stream.producer import EventStream, SessionBroker
from enclave_stream.reconnect import HeartbeatMonitor, open_event_stream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(virtual_backend: Any) -> Any:
    return virtual_backend


@asynccontextmanager
async def silent_connection(from_seq: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
    """A connection that stays open and sends nothing: the reader task waits on it."""

    async def chunks() -> AsyncIterator[bytes]:
        await anyio.sleep_forever()
        yield b""  # never reached

    yield chunks()


def fail(message: str) -> None:
    raise LookupError(message)


@dataclass(frozen=True)
class Owner:
    name: str
    make: Callable[[], AbstractAsyncContextManager[Any]]
    once: bool  # can be entered only once in all


OWNERS = [
    Owner("HeartbeatMonitor", lambda: HeartbeatMonitor(1000, lambda: None), once=False),
    Owner(
        "ResumableEventStream",
        lambda: open_event_stream(silent_connection, heartbeat_timeout_ms=None),
        once=True,
    ),
    Owner("EventStream", lambda: EventStream(heartbeat_interval_ms=1000), once=True),
    Owner("SessionBroker", SessionBroker, once=False),
]


@pytest.fixture(params=OWNERS, ids=[owner.name for owner in OWNERS])
def owner(request: pytest.FixtureRequest) -> Owner:
    return request.param  # type: ignore[no-any-return]


async def test_entering_it_again_inside_its_block_is_refused(owner: Owner) -> None:
    it = owner.make()
    async with it:
        refused = f"{owner.name} (is already running|can be entered only once)"
        with pytest.raises(RuntimeError, match=refused):
            async with it:
                pass
        await anyio.sleep(0.5)  # still running: the refused entry changed nothing


async def test_after_its_block_it_enters_again_unless_it_is_once_only(owner: Owner) -> None:
    it = owner.make()
    async with it:
        pass
    if owner.once:
        with pytest.raises(RuntimeError, match=f"{owner.name} can be entered only once"):
            async with it:
                pass
    else:
        async with it:
            pass


async def test_leaving_without_entering_is_refused(owner: Owner) -> None:
    it = owner.make()
    with pytest.raises(RuntimeError, match=rf"{owner.name}\.__aexit__ called without __aenter__"):
        await it.__aexit__(None, None, None)
    async with it:
        pass
    with pytest.raises(RuntimeError, match="without __aenter__"):
        await it.__aexit__(None, None, None)


async def test_the_blocks_exception_leaves_as_it_was_raised(owner: Owner) -> None:
    error = LookupError("the consumer's own")

    async def fail_inside() -> None:
        async with owner.make():
            await anyio.sleep(0.5)
            raise error

    with pytest.raises(LookupError) as caught:
        await fail_inside()
    # Itself, not an ExceptionGroup around it, and nothing chained to it.
    assert caught.value is error
    assert caught.value.__context__ is None


async def test_a_cancelled_block_is_cancelled(owner: Owner) -> None:
    reached_the_end = False
    with anyio.move_on_after(2) as scope:
        async with owner.make():
            await anyio.sleep_forever()
        reached_the_end = True
    assert scope.cancelled_caught
    assert not reached_the_end


async def test_cancellation_leaves_the_block_as_the_backends_own_exception(owner: Owner) -> None:
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        try:
            async with owner.make():
                scope.cancel()
                await anyio.sleep_forever()
        except BaseException as exc:
            caught.append(exc)
            raise
    assert scope.cancelled_caught
    assert len(caught) == 1
    assert isinstance(caught[0], anyio.get_cancelled_exc_class())


@pytest.mark.parametrize("ending", ["normally", "by an error", "by cancellation"])
async def test_no_task_outlives_the_block(owner: Owner, ending: str) -> None:
    tasks_before = {task.id for task in anyio.get_running_tasks()}
    during: set[int] = set()
    with anyio.CancelScope() as scope:
        try:
            async with owner.make():
                await anyio.sleep(0.5)
                during = {task.id for task in anyio.get_running_tasks()}
                if ending == "by an error":
                    fail("ends the block")
                if ending == "by cancellation":
                    scope.cancel()
                    await anyio.sleep_forever()
        except LookupError:
            pass
    assert {task.id for task in anyio.get_running_tasks()} == tasks_before
    if owner.name != "SessionBroker":  # it starts a task per session only
        assert during > tasks_before  # it did own a task


async def test_a_failing_task_and_a_failing_block_are_both_reported() -> None:
    """Regression (fixed): the block's error vanished when a task had failed too."""

    def timed_out() -> None:
        raise LookupError("the task")

    async def block() -> None:
        async with HeartbeatMonitor(1000, timed_out):
            try:
                await anyio.sleep(5)  # the monitor's task fails at 1 s and cancels this
            finally:
                raise ValueError("the block")

    with pytest.raises(BaseExceptionGroup) as info:
        await block()
    leaves = []
    pending: list[BaseException] = [info.value]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    assert sorted(repr(error) for error in leaves) == [
        "LookupError('the task')",
        "ValueError('the block')",
    ]
