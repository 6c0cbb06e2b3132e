"""Encrypted sessions: seal and open against same-run floors; handshakes for information.

Prints JSON with events/s (or handshakes/s) for each path and its ratio to a
floor measured in the same run:

* seal floor: the same work written directly: one reused ``AESGCM``, a counter
  nonce, a reused msgspec ``Encoder`` for the event and for the envelope
  struct, ``base64.b64encode``; ours is ``session.seal_line(e)`` (validating
  the event, checking its session, then the one envelope path: the payload
  and envelope Structs, then the envelope's line, validated);
* open floor: a reused msgspec ``Decoder`` of the event union for the envelope
  line, ``base64.b64decode``, ``AESGCM.decrypt``, the same decoder for the
  inner event; ours is ``session.open(decode_event(line))`` (atob-exact base64,
  replay window, splicing and order checks);
* handshakes (informational, no target): ``ClientHandshake()`` +
  ``accept_client_hello`` + ``complete``, every hello validated and every key
  checked, against both sides' ``ec.generate_private_key`` + ``exchange`` +
  four HKDF-SHA256 derivations ("floor"), and that plus exporting and
  importing the two public points ("floor_wire").

* seal from a dict: ``session.seal(wire_form_dict)`` (the dict validated as
  an event first) against the typed seal floor's steps on the same dict, which
  msgspec writes unchecked.

Events are ``stdout`` events with a 200-byte ASCII chunk; the collector is on
(see ``harness.py``). Targets: seal >= 0.7, seal from a dict >= 0.3, open
>= 0.65 of their floors.

Run: ``python benchmarks/bench_crypto.py [--events N] [--handshakes H] [--repeat R]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Callable
from typing import Any

import cryptography
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from harness import machine, race, ratios

from enclave_stream import EncryptedEnvelope, EventEncoder, ParsedEvent, StdoutEvent
from enclave_stream.codec import decode_event
from enclave_stream.crypto import (
    ClientHandshake,
    EncryptedSession,
    SessionRole,
    accept_client_hello,
)
from enclave_stream.events import EncryptedEnvelopePayload, StdoutPayload

SESSION = "s_0f8fad5b-d9cb-469f-a165-70867728950e"
KEY_ID = "k_9b2c0000-0000-4000-8000-000000000000"
C2S = bytes(range(32))
S2C = bytes(range(32, 64))


def make_events(n: int) -> list[StdoutEvent]:
    """``n`` stdout events with 200-byte chunks (protocol version given explicitly)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 "
    chunk = (alphabet * 6)[:200]
    return [
        StdoutEvent(
            session_id=SESSION, seq=i, payload=StdoutPayload(chunk=chunk), protocol_version=2
        )
        for i in range(n)
    ]


def client_session() -> EncryptedSession:
    return EncryptedSession(SESSION, KEY_ID, SessionRole.CLIENT, send_key=C2S, receive_key=S2C)


def server_session() -> EncryptedSession:
    return EncryptedSession(SESSION, KEY_ID, SessionRole.SERVER, send_key=S2C, receive_key=C2S)


def bench_records(events: list[StdoutEvent], repeat: int) -> dict[str, float]:
    """Seconds for sealing and opening ``events``, ours and floors."""
    encoder = EventEncoder()
    sender = client_session()
    lines = [encoder.encode(sender.seal(e)) for e in events]

    plain_encoder = msgspec.json.Encoder()
    plain_decoder = msgspec.json.Decoder(ParsedEvent)
    aead = AESGCM(C2S)
    b64encode, b64decode = base64.b64encode, base64.b64decode

    seqs = [event.seq for event in events]

    def floor_seal(values: list[Any], as_line: bool) -> list[Any]:
        """The envelopes of ``values`` written directly; lines or Structs."""
        encode = plain_encoder.encode
        encrypt = aead.encrypt
        prefix = os.urandom(8)
        out = []
        for counter, (value, seq) in enumerate(zip(values, seqs, strict=True)):
            nonce = prefix + counter.to_bytes(4, "big")
            ciphertext = encrypt(nonce, encode(value), None)
            payload = EncryptedEnvelopePayload(
                kid=KEY_ID,
                nonce_b64=b64encode(nonce).decode(),
                ciphertext_b64=b64encode(ciphertext).decode(),
            )
            envelope = EncryptedEnvelope(
                session_id=SESSION, seq=seq, payload=payload, protocol_version=2
            )
            out.append(encode(envelope) if as_line else envelope)
        return out

    def seal_floor() -> None:
        assert len(floor_seal(events, as_line=True)) == len(events)

    def seal_ours() -> None:
        session = client_session()
        seal_line = session.seal_line
        out = [seal_line(event) for event in events]
        assert len(out) == len(events)

    wire_events = [msgspec.to_builtins(e) for e in events]

    def seal_dict_floor() -> None:
        # The same envelope from the wire-form dict, which msgspec writes
        # unchecked; Structs, as seal() returns.
        assert len(floor_seal(wire_events, as_line=False)) == len(events)

    def seal_dict_ours() -> None:
        seal = client_session().seal
        out = [seal(event) for event in wire_events]
        assert len(out) == len(events)

    def open_floor() -> None:
        decode = plain_decoder.decode
        decrypt = aead.decrypt
        out = []
        for line in lines:
            envelope = decode(line)
            payload = envelope.payload
            plaintext = decrypt(
                b64decode(payload.nonce_b64), b64decode(payload.ciphertext_b64), None
            )
            out.append(decode(plaintext))
        assert len(out) == len(lines)

    def open_ours() -> None:
        session = server_session()
        open_ = session.open
        out = [open_(decode_event(line)) for line in lines]  # type: ignore[arg-type]
        assert len(out) == len(lines)
        assert out[-1] == events[-1]

    return race(
        repeat,
        {
            "seal_floor": seal_floor,
            "seal": seal_ours,
            "seal_dict_floor": seal_dict_floor,
            "seal_dict": seal_dict_ours,
            "open_floor": open_floor,
            "open": open_ours,
        },
    )


def bench_handshakes(n: int, repeat: int) -> dict[str, float]:
    """Seconds for ``n`` complete handshakes (both sides), ours and floors."""
    curve = ec.SECP256R1()
    salt = SESSION.encode()

    def hkdf(secret: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)

    def floor(wire: bool) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                client = ec.generate_private_key(curve)
                server = ec.generate_private_key(curve)
                client_pub, server_pub = client.public_key(), server.public_key()
                if wire:
                    raw_c = client_pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
                    raw_s = server_pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
                    client_pub = ec.EllipticCurvePublicKey.from_encoded_point(curve, raw_c)
                    server_pub = ec.EllipticCurvePublicKey.from_encoded_point(curve, raw_s)
                server_secret = server.exchange(ec.ECDH(), client_pub)
                hkdf(server_secret, b"enclavejs-c2s-enc")
                hkdf(server_secret, b"enclavejs-s2c-enc")
                client_secret = client.exchange(ec.ECDH(), server_pub)
                hkdf(client_secret, b"enclavejs-c2s-enc")
                hkdf(client_secret, b"enclavejs-s2c-enc")

        return run

    def ours() -> None:
        for _ in range(n):
            handshake = ClientHandshake()
            server_hello, _server = accept_client_hello(handshake.client_hello, SESSION)
            handshake.complete(server_hello, SESSION)

    return race(
        repeat,
        {
            "handshake_floor": floor(wire=False),
            "handshake_floor_wire": floor(wire=True),
            "handshake": ours,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--handshakes", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    events = make_events(args.events)
    records = bench_records(events, args.repeat)
    handshakes = bench_handshakes(args.handshakes, args.repeat)

    results: dict[str, Any] = {
        "machine": machine(msgspec=msgspec.__version__, cryptography=cryptography.__version__),
        "events": args.events,
        "chunk_bytes": 200,
        "handshakes": args.handshakes,
    }
    for name, seconds in records.items():
        results[name] = {"events_per_s": round(args.events / seconds)}
    for name, seconds in handshakes.items():
        results[name] = {"handshakes_per_s": round(args.handshakes / seconds)}
    timings = {**records, **handshakes}
    results["ratios"] = ratios(
        timings,
        {
            "seal": ("seal_floor", 0.7),
            "seal_dict": ("seal_dict_floor", 0.3),
            "open": ("open_floor", 0.65),
        },
    )
    results["ratios"]["handshake"] = {
        "ratio": round(timings["handshake_floor"] / timings["handshake"], 3),
        "note": "informational, no target: every hello validated, every key checked",
    }
    results["ratios"]["handshake_vs_floor_wire"] = {
        "ratio": round(timings["handshake_floor_wire"] / timings["handshake"], 3),
        "note": "informational: the floor plus exporting/importing both public points",
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
