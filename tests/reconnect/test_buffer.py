"""EventBuffer: bounded, refuses rather than evicts, copies out."""

from __future__ import annotations

import pytest

from enclave_stream.reconnect import EventBuffer


def test_bounded_and_ordered() -> None:
    buffer: EventBuffer[int] = EventBuffer(max_size=3)
    assert [buffer.add(i) for i in range(5)] == [True, True, True, False, False]
    assert buffer.is_full()
    assert len(buffer) == 3
    assert buffer.get_all() == [0, 1, 2]
    assert buffer.drain() == [0, 1, 2]
    assert len(buffer) == 0
    assert not buffer.is_full()
    assert buffer.max_size == 3


def test_default_size() -> None:
    buffer: EventBuffer[object] = EventBuffer()
    assert buffer.max_size == 1000


def test_get_all_and_drain_return_copies() -> None:
    buffer: EventBuffer[str] = EventBuffer()
    buffer.add("a")
    buffer.get_all().append("x")
    drained = buffer.drain()
    buffer.add("b")
    assert drained == ["a"]
    assert buffer.get_all() == ["b"]


def test_clear() -> None:
    buffer: EventBuffer[str] = EventBuffer(1)
    buffer.add("a")
    buffer.clear()
    assert buffer.add("b")
    assert buffer.get_all() == ["b"]


@pytest.mark.parametrize("max_size", [-1, 1.5, None, True])
def test_max_size_is_validated(max_size: object) -> None:
    with pytest.raises(ValueError, match="max_size"):
        EventBuffer(max_size)  # type: ignore[arg-type]
