"""SessionEncryptionContext: counter nonces, key limits, fork and copy safety.

Byte-level checks against envelopes.json: the ``context`` and ``rotation``
cases record the nonces and ciphertexts the reference produced for a context
with a fixed prefix (the JSON/envelope layer is tested elsewhere).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import sys
import threading
import time
import warnings
from typing import Any

import pytest

from enclave_stream.crypto import (
    AesGcmError,
    AesGcmKey,
    SessionEncryptionContext,
    SessionKeyInfo,
    decrypt,
    from_base64,
)
from enclave_stream.crypto.aesgcm import MAX_MESSAGES_PER_KEY
from enclave_stream.errors import EncryptionErrorCode
from tests.vectors import case_id, cases

KEY = bytes(range(32))
PREFIX = bytes.fromhex("a0a1a2a3a4a5a6a7")


def _info(counter: int = 0, max_nonces: int = MAX_MESSAGES_PER_KEY) -> SessionKeyInfo:
    return SessionKeyInfo("k_test", created_at=0, nonce_counter=counter, max_nonces=max_nonces)


def _ciphertext_of(envelope_line: str) -> tuple[bytes, bytes]:
    payload = json.loads(envelope_line)["payload"]
    return from_base64(payload["ciphertextB64"]), from_base64(payload["nonceB64"])


# --- against the reference's recorded bytes ---------------------------------


@pytest.mark.parametrize("case", cases("envelopes.json", "context"), ids=case_id)
def test_context_matches_reference(case: dict[str, Any]) -> None:
    ctx = SessionEncryptionContext(
        bytes.fromhex(case["key_hex"]),
        SessionKeyInfo(case["key_id"]),
        nonce_prefix=bytes.fromhex(case["nonce_prefix_hex"]),
    )
    assert ctx.nonce_counter == case["start_counter"]
    for step in case["steps"]:
        assert ctx.nonce_counter == step["counter"]
        ciphertext, nonce = ctx.encrypt(from_base64(step["plaintext_b64"]))
        assert nonce.hex() == step["nonce_hex"]
        assert (ciphertext, nonce) == _ciphertext_of(step["envelope_line"])
        assert ctx.decrypt(ciphertext, nonce) == from_base64(step["plaintext_b64"])
    assert ctx.nonce_counter == case["final_counter"]


@pytest.mark.parametrize("case", cases("envelopes.json", "rotation"), ids=case_id)
def test_rotation_matches_reference(case: dict[str, Any]) -> None:
    info = _info(int(case["start_counter"]), int(case["max_nonces"]))
    ctx = SessionEncryptionContext(
        AesGcmKey(bytes.fromhex(case["key_hex"])),
        info,
        nonce_prefix=bytes.fromhex(case["nonce_prefix_hex"]),
    )
    # The inner events are ASCII, so compact json.dumps is JSON.stringify's bytes.
    plaintext = json.dumps(case["inner_event"], separators=(",", ":")).encode()
    for step in case["steps"]:
        counter = int(step["counter"])
        assert ctx.nonce_counter == counter
        if counter >= 2**32:
            # Deliberate deviation: the reference wraps to nonce prefix||00000000,
            # a repeat of counter 0's nonce. We refuse, and say rotation is due.
            assert ctx.needs_rotation() is True
            with pytest.raises(AesGcmError) as refused:
                ctx.encrypt(plaintext)
            assert refused.value.code is EncryptionErrorCode.NONCE_REUSE
            assert ctx.nonce_counter == counter
            continue
        assert ctx.needs_rotation() is step["needs_rotation_before"]
        if "error" in step:
            with pytest.raises(AesGcmError) as info_:
                ctx.encrypt(plaintext)
            assert info_.value.code == step["error"]["code"]
            assert info_.value.message.startswith(step["error"]["message"])
        else:
            ciphertext, nonce = ctx.encrypt(plaintext)
            assert nonce.hex() == step["nonce_hex"]
            assert (ciphertext, nonce) == _ciphertext_of(step["envelope_line"])


def test_rotation_vectors_include_a_wrap() -> None:
    """The deviation branch above is exercised (the counter_wrap case exists)."""
    counters = [int(s["counter"]) for c in cases("envelopes.json", "rotation") for s in c["steps"]]
    assert any(c >= 2**32 for c in counters)


# --- behaviour ---------------------------------------------------------------


def test_fresh_context() -> None:
    before = time.time_ns() // 1_000_000
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    info = ctx.to_key_info()
    assert ctx.key_id == info.key_id == "k_1"
    assert ctx.nonce_counter == info.nonce_counter == 0
    assert info.max_nonces == MAX_MESSAGES_PER_KEY
    assert info.algorithm == "AES-GCM-256"
    assert before <= info.created_at <= time.time_ns() // 1_000_000
    assert not ctx.needs_rotation()


def test_nonces_are_prefix_plus_counter() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    nonces = [ctx.encrypt(b"m")[1] for _ in range(3)]
    prefix = nonces[0][:8]
    assert nonces == [prefix + i.to_bytes(4, "big") for i in range(3)]
    assert ctx.nonce_counter == 3
    # The prefix is random per context.
    other = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    assert other.encrypt(b"m")[1][:8] != prefix


def test_encrypt_decrypt_round_trip() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    ciphertext, nonce = ctx.encrypt(b"hello")
    assert ctx.decrypt(ciphertext, nonce) == b"hello"
    assert decrypt(KEY, ciphertext, nonce) == b"hello"  # plain AES-GCM, no framing
    with pytest.raises(AesGcmError):
        ctx.decrypt(ciphertext, bytes(12))


def test_key_expires_at_max_nonces() -> None:
    ctx = SessionEncryptionContext(KEY, _info(max_nonces=2), nonce_prefix=PREFIX)
    ctx.encrypt(b"1")
    assert not ctx.needs_rotation()
    ctx.encrypt(b"2")
    assert ctx.needs_rotation()
    with pytest.raises(AesGcmError) as info:
        ctx.encrypt(b"3")
    assert info.value.code is EncryptionErrorCode.KEY_EXPIRED
    assert "nonce limit reached" in info.value.message
    assert ctx.nonce_counter == 2  # a refused call consumes nothing


def test_default_limit_is_two_to_the_thirty() -> None:
    ctx = SessionEncryptionContext(KEY, _info(counter=2**30 - 1), nonce_prefix=PREFIX)
    assert ctx.encrypt(b"last")[1] == PREFIX + (2**30 - 1).to_bytes(4, "big")
    with pytest.raises(AesGcmError) as info:
        ctx.encrypt(b"one too many")
    assert info.value.code is EncryptionErrorCode.KEY_EXPIRED


def test_counter_never_wraps_even_with_a_raised_limit() -> None:
    ctx = SessionEncryptionContext(
        KEY, _info(counter=2**32 - 1, max_nonces=2**40), nonce_prefix=PREFIX
    )
    assert not ctx.needs_rotation()
    assert ctx.encrypt(b"x")[1] == PREFIX + b"\xff\xff\xff\xff"
    assert ctx.needs_rotation()
    for _ in range(2):  # stays refused
        with pytest.raises(AesGcmError) as info:
            ctx.encrypt(b"x")
        assert info.value.code is EncryptionErrorCode.NONCE_REUSE
    assert ctx.nonce_counter == 2**32


def test_to_key_info_snapshots_the_counter() -> None:
    info = _info(counter=5)
    ctx = SessionEncryptionContext(KEY, info)
    ctx.encrypt(b"x")
    assert ctx.to_key_info() == SessionKeyInfo("k_test", 0, nonce_counter=6)
    assert info.nonce_counter == 5  # the given info is not mutated
    # A context resumed from the snapshot continues where the first stopped.
    resumed = SessionEncryptionContext(KEY, ctx.to_key_info(), nonce_prefix=PREFIX)
    assert resumed.encrypt(b"y")[1] == PREFIX + (6).to_bytes(4, "big")


def test_key_info_rejects_negative_counter() -> None:
    with pytest.raises(AesGcmError) as info:
        _info(counter=-1)
    assert info.value.code is EncryptionErrorCode.NONCE_REUSE


@pytest.mark.parametrize("length", [0, 7, 9])
def test_fixed_prefix_must_be_8_bytes(length: int) -> None:
    with pytest.raises(AesGcmError) as info:
        SessionEncryptionContext(KEY, _info(), nonce_prefix=bytes(length))
    assert info.value.code is EncryptionErrorCode.NONCE_REUSE


def test_copy_and_pickle_are_refused() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="reuse nonces"):
            duplicate(ctx)


def test_repr_shows_no_key_material() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    assert "k_1" in repr(ctx)
    assert KEY.hex() not in repr(ctx)


def test_threads_never_share_a_nonce() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    seen: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [ctx.encrypt(b"x")[1] for _ in range(2000)]
        with lock:
            seen.extend(mine)

    # Switch threads as often as possible, so that an unguarded
    # read-increment-write of the counter would be interleaved.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(set(seen)) == len(seen) == 16000
    assert ctx.nonce_counter == 16000


# --- fork --------------------------------------------------------------------


def _in_child(ctx: SessionEncryptionContext) -> dict[str, Any]:
    """Run encrypt/decrypt in a forked child; return what happened there."""
    sealed, nonce = ctx.encrypt(b"from parent")  # parent-side message for the child to read
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        report: dict[str, Any] = {}
        try:
            report["decrypted"] = ctx.decrypt(sealed, nonce).decode()
            report["counter"] = ctx.nonce_counter
            report["needs_rotation"] = ctx.needs_rotation()
            try:
                report["nonce"] = ctx.encrypt(b"from child")[1].hex()
            except AesGcmError as exc:
                report["error"] = [str(exc.code), exc.message]
        finally:
            os.write(write_fd, json.dumps(report).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    return result


fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@fork_only
def test_forked_child_draws_a_new_prefix() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_1"))
    child = _in_child(ctx)
    # The parent goes on with the very counter the child used.
    parent_nonce = ctx.encrypt(b"from parent again")[1]
    assert child["decrypted"] == "from parent"
    child_nonce = bytes.fromhex(child["nonce"])
    assert child["counter"] == 1
    # Same counter on both sides; only the re-drawn prefix keeps the nonces apart.
    assert child_nonce[8:] == parent_nonce[8:] == (1).to_bytes(4, "big")
    assert child_nonce[:8] != parent_nonce[:8]


@fork_only
def test_forked_child_refuses_a_fixed_prefix() -> None:
    ctx = SessionEncryptionContext(KEY, _info(), nonce_prefix=PREFIX)
    child = _in_child(ctx)
    assert child["decrypted"] == "from parent"  # decrypting stays possible
    assert child["needs_rotation"] is True
    assert "nonce" not in child
    assert child["error"][0] == "ENCRYPTION_NONCE_REUSE"
    assert "fork()" in child["error"][1]
    # The parent is unaffected.
    assert ctx.encrypt(b"x")[1] == PREFIX + (1).to_bytes(4, "big")
