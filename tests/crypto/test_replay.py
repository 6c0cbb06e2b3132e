"""ReplayWindow against a plain model: exact inside the window, bounded memory, LRU prefixes."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_stream.crypto import ReplayWindow


def _nonce(prefix: int, counter: int) -> bytes:
    return bytes([prefix]) * 8 + counter.to_bytes(4, "big")


class Model:
    """The window's specification, written the obvious way (unbounded sets)."""

    def __init__(self, width: int, max_prefixes: int) -> None:
        self.width = width
        self.max_prefixes = max_prefixes
        self.prefixes: OrderedDict[bytes, tuple[int, set[int]]] = OrderedDict()

    def accept(self, nonce: bytes) -> bool:
        prefix, counter = nonce[:8], int.from_bytes(nonce[8:], "big")
        if prefix not in self.prefixes:
            if len(self.prefixes) >= self.max_prefixes:
                self.prefixes.popitem(last=False)
            self.prefixes[prefix] = (counter, {counter})
            return True
        self.prefixes.move_to_end(prefix)
        high, seen = self.prefixes[prefix]
        if counter in seen or counter <= high - self.width:
            return False
        seen.add(counter)
        self.prefixes[prefix] = (max(high, counter), seen)
        return True

    def seen(self, nonce: bytes) -> bool:
        prefix, counter = nonce[:8], int.from_bytes(nonce[8:], "big")
        if prefix not in self.prefixes:
            return False
        high, seen = self.prefixes[prefix]
        return counter in seen or counter <= high - self.width


operations = st.lists(
    st.tuples(
        st.sampled_from(["accept", "seen"]),
        st.integers(0, 3),  # prefix
        st.one_of(st.integers(0, 40), st.integers(2**32 - 6, 2**32 - 1)),  # counter
    ),
    max_size=120,
)


@settings(max_examples=400)
@given(operations, st.integers(1, 20), st.integers(1, 4))
def test_window_matches_the_model(
    ops: list[tuple[str, int, int]], width: int, max_prefixes: int
) -> None:
    window, model = ReplayWindow(width, max_prefixes), Model(width, max_prefixes)
    for op, prefix, counter in ops:
        nonce = _nonce(prefix, counter)
        if op == "accept":
            assert window.accept(nonce) == model.accept(nonce), (op, prefix, counter)
        else:
            assert window.seen(nonce) == model.seen(nonce), (op, prefix, counter)
    assert len(window) == len(model.prefixes)


@settings(max_examples=200)
@given(st.integers(0, 2**32 - 300), st.integers(1, 64), st.integers(1, 256))
def test_in_order_runs_then_replays(start: int, width: int, count: int) -> None:
    """The in-order fast path keeps exact state: every earlier nonce in the window is a replay."""
    window, model = ReplayWindow(width), Model(width, 16)
    nonces = [_nonce(7, start + i) for i in range(count)]
    for nonce in nonces:
        assert window.accept(nonce)
        assert model.accept(nonce)
    for nonce in reversed(nonces):
        assert window.accept(nonce) is False
    assert window.accept(_nonce(7, start + count)) is True


def test_counter_end_does_not_step_into_the_next_prefix() -> None:
    """Counter 2**32 - 1 is a prefix's last nonce; the next prefix's counter 0 is fresh."""
    window = ReplayWindow()
    last = b"\x00" * 7 + b"\x01" + b"\xff\xff\xff\xff"
    assert window.accept(last[:8] + (2**32 - 2).to_bytes(4, "big"))
    assert window.accept(last)
    following = b"\x00" * 7 + b"\x02" + bytes(4)  # = last + 1 as a 96-bit number
    assert window.accept(following)
    assert not window.accept(following)
    assert not window.accept(last)


def test_a_far_older_counter_is_cheap() -> None:
    """Refusing a counter billions below the window must not build a huge bitmap."""
    window = ReplayWindow()
    assert window.accept(_nonce(1, 2**32 - 1))
    assert window.accept(_nonce(1, 0)) is False
    assert window.seen(_nonce(1, 0)) is True


def test_memory_is_bounded() -> None:
    window = ReplayWindow(width=64, max_prefixes=4)
    for prefix in range(100):
        for counter in range(0, 10_000, 97):
            window.accept(_nonce(prefix % 256, counter))
    assert len(window) == 4


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(width=0)
    with pytest.raises(ValueError):
        ReplayWindow(max_prefixes=0)


def test_repr() -> None:
    assert repr(ReplayWindow()) == "<ReplayWindow prefixes=0 width=256>"


def test_refused_replay_of_another_prefix_does_not_misfile_the_next_nonce() -> None:
    """Regression (found by the model test): a refused nonce of prefix B, between
    two in-order nonces of prefix A, made the second A nonce count under B, so
    it could then be accepted twice."""
    window = ReplayWindow(width=1, max_prefixes=2)

    def nonce(prefix: int, counter: int) -> bytes:
        return prefix.to_bytes(8, "big") + counter.to_bytes(4, "big")

    assert window.accept(nonce(2, 0))
    assert window.accept(nonce(0, 4_294_967_291))
    assert not window.accept(nonce(2, 0))  # a replay, refused
    assert window.accept(nonce(0, 4_294_967_292))
    assert window.seen(nonce(0, 4_294_967_292))
    assert not window.accept(nonce(0, 4_294_967_292))
