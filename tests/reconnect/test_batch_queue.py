"""BatchQueue: order, the two limits, the ends from either side, cancellation."""

from __future__ import annotations

from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from enclave_stream.events import StreamEvent
from enclave_stream.reconnect._follow import BatchQueue

pytestmark = pytest.mark.anyio


def batch(name: str) -> list[StreamEvent]:
    """A stand-in batch: the queue never looks inside."""
    return cast("list[StreamEvent]", [name])


async def settle() -> None:
    """Let every other task run until it blocks."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


async def test_batches_come_out_in_order_then_the_end() -> None:
    queue = BatchQueue(2, 5)
    assert queue.put(batch("a"))
    assert queue.put(batch("b"))
    queue.finish()
    assert await queue.get() == batch("a")
    assert await queue.get() == batch("b")
    assert await queue.get() is None
    assert await queue.get() is None
    assert not queue.closed


async def test_a_waiting_consumer_is_woken_by_a_batch_and_by_the_end() -> None:
    queue = BatchQueue(2, 5)
    got: list[Any] = []

    async def consumer() -> None:
        while (item := await queue.get()) is not None:
            got.append(item)
        got.append("end")

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await settle()
        queue.put(batch("a"))
        await settle()
        assert got == [["a"]]
        queue.finish()
    assert got == [["a"], "end"]


async def test_full_at_limit_for_a_busy_consumer() -> None:
    queue = BatchQueue(2, 5)
    queue.put(batch("a"))
    assert not queue.full
    queue.put(batch("b"))
    assert queue.full
    assert await queue.get() == batch("a")  # taken without waiting: not woken
    assert not queue.full


async def test_a_woken_consumer_that_has_not_run_yet_lets_the_reader_go_on() -> None:
    queue = BatchQueue(2, 5)
    got: list[Any] = []

    async def consumer() -> None:
        got.append(await queue.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await settle()
        # No checkpoint between these puts, as for the chunks of one socket read.
        fullness = []
        for name in "abcde":
            queue.put(batch(name))
            fullness.append(queue.full)
        assert fullness == [False, False, False, False, True]  # full at woken_limit only
        await settle()
    assert got == [["a"]]
    # The consumer has run, and is busy elsewhere now: back to the lower limit.
    assert queue.full
    assert await queue.get() == batch("b")
    assert await queue.get() == batch("c")
    assert queue.full  # two left
    assert await queue.get() == batch("d")
    assert not queue.full


async def test_the_reader_waits_for_room_until_the_consumer_takes_a_batch() -> None:
    queue = BatchQueue(2, 5)
    queue.put(batch("a"))
    queue.put(batch("b"))
    done: list[bool] = []

    async def reader() -> None:
        done.append(await queue.wait_for_room())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await settle()
        assert done == []
        assert await queue.get() == batch("a")
        await settle()
        assert done == [True]


async def test_closing_wakes_and_stops_the_reader() -> None:
    queue = BatchQueue(1, 1)
    queue.put(batch("a"))
    done: list[bool] = []

    async def reader() -> None:
        done.append(await queue.wait_for_room())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await settle()
        queue.close()
    assert done == [False]
    assert queue.closed
    assert not queue.put(batch("b"))
    assert await queue.get() is None  # what was left is dropped


async def test_closing_wakes_a_waiting_consumer_with_the_end() -> None:
    queue = BatchQueue(2, 5)
    got: list[Any] = []

    async def consumer() -> None:
        got.append(await queue.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await settle()
        queue.close()
    assert got == [None]


async def test_a_consumer_cancelled_while_waiting_loses_nothing() -> None:
    queue = BatchQueue(2, 5)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await queue.get()
    assert scope.cancelled_caught
    # The batch goes to the next get, and does not count as waking anyone:
    # nobody waits, so the queue is full at the lower limit.
    queue.put(batch("a"))
    queue.put(batch("b"))
    assert queue.full
    assert await queue.get() == batch("a")
    assert await queue.get() == batch("b")


async def test_one_of_two_waiting_consumers_cancelled_leaves_the_other_waiting() -> None:
    queue = BatchQueue(2, 5)
    got: list[Any] = []
    second_scope = anyio.CancelScope()

    async def first() -> None:
        got.append(await queue.get())

    async def second() -> None:
        with second_scope:
            got.append(await queue.get())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            await settle()
            second_scope.cancel()  # both wait on one event: it must stay
            await settle()
            assert got == []
            queue.put(batch("a"))
    assert got == [["a"]]
    assert second_scope.cancelled_caught


@pytest.mark.parametrize(("limit", "woken_limit"), [(0, 5), (3, 2)])
def test_limits_are_validated(limit: int, woken_limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        BatchQueue(limit, woken_limit)
