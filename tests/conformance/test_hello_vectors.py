"""ecdh.json, hello kinds: ClientHello/ServerHello bytes and processing against the reference.

(The key pair, shared secret and public-key import kinds are in
``test_ecdh_vectors.py``.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from enclave_stream import encode_message
from enclave_stream.crypto import (
    EcdhError,
    create_client_hello,
    create_server_hello,
    export_public_key,
    process_client_hello,
    process_server_hello,
)
from enclave_stream.crypto.ecdh import (
    PUBLIC_KEY_LENGTH,
    export_public_key_bytes,
    key_pair_from_private_scalar,
)
from enclave_stream.errors import EncryptionErrorCode, HandshakeError
from enclave_stream.events import ClientHello, ServerHello
from tests.vectors import case_id, cases

FILE = "ecdh.json"

# Deliberate deviation: a hello naming another curve is refused as
# ENCRYPTION_UNSUPPORTED_ALGORITHM when the message is validated; the reference
# only fails later, importing the key, with ENCRYPTION_INVALID_PUBLIC_KEY.
UNSUPPORTED_CURVE = frozenset(
    {"process_server_hello_curve_p384", "process_client_hello_curve_p384"}
)

# Deliberate deviation (as for import_public_key): the reference imports a
# compressed point; we accept only the 65-byte uncompressed form.
COMPRESSED_KEY = frozenset({"process_server_hello_compressed_key"})


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def _forms(value: dict[str, Any], struct_type: type[Any]) -> list[Any]:
    """The same hello as a mapping, JSON text, JSON bytes and a Struct.

    The Struct is built field by field (construction does not validate), so
    that an invalid hello reaches the code under test as a Struct too.
    """
    text = json.dumps(value)
    struct = struct_type(**{_snake(k): v for k, v in value.items()})
    return [value, text, text.encode(), struct]


@pytest.mark.parametrize("case", cases(FILE, "client_hello"), ids=case_id)
def test_client_hello_bytes(case: dict[str, Any]) -> None:
    pair = key_pair_from_private_scalar(bytes.fromhex(case["d_hex"]))
    hello = create_client_hello(pair)
    assert encode_message(hello) == case["json"].encode("utf-8")
    assert json.loads(encode_message(hello)) == case["value"]
    assert hello.client_ephemeral_pub_key_b64 == case["public_raw_b64"]


@pytest.mark.parametrize("case", cases(FILE, "server_hello"), ids=case_id)
def test_server_hello_bytes(case: dict[str, Any]) -> None:
    pair = key_pair_from_private_scalar(bytes.fromhex(case["d_hex"]))
    hello = create_server_hello(pair, case["key_id"])
    assert encode_message(hello) == case["json"].encode("utf-8")
    assert json.loads(encode_message(hello)) == case["value"]


@pytest.mark.parametrize("case", cases(FILE, "process_server_hello"), ids=case_id)
def test_process_server_hello(case: dict[str, Any]) -> None:
    for form in _forms(case["server_hello"], ServerHello):
        if case["id"] in UNSUPPORTED_CURVE:
            assert case["error"]["code"] == "ENCRYPTION_INVALID_PUBLIC_KEY"  # the reference's
            with pytest.raises(HandshakeError) as unsupported:
                process_server_hello(form)
            assert unsupported.value.code is EncryptionErrorCode.UNSUPPORTED_ALGORITHM
        elif case["id"] in COMPRESSED_KEY:
            assert case["accept"] is True  # the reference took it
            with pytest.raises(EcdhError) as refused:
                process_server_hello(form)
            assert refused.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
        elif case["accept"]:
            processed = process_server_hello(form)
            assert processed.key_id == case["key_id"]
            reexport = export_public_key(processed.peer_public_key).public_key_b64
            assert reexport == case["peer_reexport_b64"]
        else:
            with pytest.raises(EcdhError) as refused:
                process_server_hello(form)
            assert refused.value.code == case["error"]["code"]


@pytest.mark.parametrize("case", cases(FILE, "process_client_hello"), ids=case_id)
def test_process_client_hello(case: dict[str, Any]) -> None:
    for form in _forms(case["client_hello"], ClientHello):
        if case["id"] in UNSUPPORTED_CURVE:
            assert case["error"]["code"] == "ENCRYPTION_INVALID_PUBLIC_KEY"  # the reference's
            with pytest.raises(HandshakeError) as unsupported:
                process_client_hello(form)
            assert unsupported.value.code is EncryptionErrorCode.UNSUPPORTED_ALGORITHM
        elif case["accept"]:
            processed = process_client_hello(form)
            hello = processed.server_hello
            wire = json.loads(encode_message(hello))
            assert list(wire) == case["server_hello_keys"]
            for field, value in case["server_hello_fixed_fields"].items():
                assert wire[field] == value
            assert re.fullmatch(case["key_id_pattern"], processed.key_id)
            assert hello.key_id == processed.key_id
            point = export_public_key_bytes(processed.server_key_pair.public_key)
            assert len(point) == case["server_public_key_bytes"] == PUBLIC_KEY_LENGTH
            assert (
                hello.server_ephemeral_pub_key_b64
                == export_public_key(processed.server_key_pair.public_key).public_key_b64
            )
            peer = export_public_key(processed.peer_public_key).public_key_b64
            assert peer == case["client_hello"]["clientEphemeralPubKeyB64"]
        else:
            with pytest.raises(EcdhError) as refused:
                process_client_hello(form)
            assert refused.value.code == case["error"]["code"]


def test_deviation_lists_name_real_cases() -> None:
    processing = cases(FILE, "process_server_hello") + cases(FILE, "process_client_hello")
    ids = {c["id"] for c in processing}
    assert ids >= UNSUPPORTED_CURVE
    assert ids >= COMPRESSED_KEY
    # Exactly the cases whose hello names a curve other than P-256.
    other_curve = {
        c["id"]
        for c in processing
        if (c.get("server_hello") or c["client_hello"])["curve"] != "P-256"
    }
    assert other_curve == UNSUPPORTED_CURVE


def test_every_hello_kind_is_covered() -> None:
    for kind in ("client_hello", "server_hello", "process_client_hello", "process_server_hello"):
        assert cases(FILE, kind), kind
