"""The demo itself: a service, a cutting proxy, a client, and the proof at the end.

On 127.0.0.1, uvicorn serves the Starlette broker app
(:func:`enclave_stream.starlette.create_broker_app`) whose sessions run the
simulated program of :mod:`.program`; a :class:`~.loopback.CuttingProxy` in
front of it drops the first two connections mid-line; the client follows the
session through the proxy with :func:`~enclave_stream.open_event_stream`
and :func:`~enclave_stream.reconnect.http.broker_connector`
(encrypted, the server's signing key pinned). At the end, what the client
received is compared with the server's log, event by event.
"""

from __future__ import annotations

__all__ = ["Pace", "cut_schedule", "pace_for", "run_demo"]

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import anyio
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from enclave_stream import StreamEvent
from enclave_stream.crypto import generate_signing_key
from enclave_stream.producer import BrokerConfig, EventStream, SessionRequest
from enclave_stream.reconnect import (
    ConnectionState,
    ReconnectionConfig,
    StreamFailedError,
    open_event_stream,
)
from enclave_stream.reconnect.http import BrokerConnector, broker_connector
from enclave_stream.starlette import create_broker_app

from .loopback import CuttingProxy, serve_loopback
from .options import DemoOptions
from .program import PROGRAM, SessionPlan, dry_run_bytes, session_script
from .summary import Outcome, summarize
from .tap import ConnectionReport, WireTap
from .view import Status, View

_CUT_SEED: Final = 0x5EED  # the cut points draw from seed ^ this, apart from the content


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the demo runs.

    Attributes:
        duration_s: about how long the session takes.
        idle_s: the pause while its tool call runs.
        heartbeat_interval_ms: the service's heartbeat interval (heartbeats fill the pause).
        retries: the client's reconnection backoff.
        heartbeat_timeout_ms: the client's silence limit per connection.
    """

    duration_s: float
    idle_s: float
    heartbeat_interval_ms: int
    retries: ReconnectionConfig
    heartbeat_timeout_ms: float


def pace_for(options: DemoOptions) -> Pace:
    """The demo's pace: about 3 s, or about half a second with ``--fast``."""
    if options.fast:
        return Pace(
            duration_s=0.5,
            idle_s=0.12,
            heartbeat_interval_ms=30,
            retries=ReconnectionConfig(initial_delay_ms=5, max_delay_ms=20),
            heartbeat_timeout_ms=5_000,
        )
    return Pace(
        duration_s=3.0,
        idle_s=0.8,
        heartbeat_interval_ms=200,
        retries=ReconnectionConfig(initial_delay_ms=250, max_delay_ms=1_000),
        heartbeat_timeout_ms=5_000,
    )


def cut_schedule(options: DemoOptions, session_bytes: int) -> list[int]:
    """The response bytes after which the proxy cuts the first two connections.

    The first cut falls 20-40 % into the session, the second 20-35 % of it
    further (plus the replayed part, with ``replay_all``), drawn from the seed.

    >>> cut_schedule(DemoOptions(seed=1, cuts=False), 10_000)
    []
    >>> first, second = cut_schedule(DemoOptions(seed=1), 10_000)
    >>> 2_000 <= first <= 4_000 and 2_000 <= second <= 3_500
    True
    """
    if not options.cuts:
        return []
    rng = random.Random(options.seed ^ _CUT_SEED)
    first = round(session_bytes * rng.uniform(0.2, 0.4))
    second = round(session_bytes * rng.uniform(0.2, 0.35))
    return [first, second + first if options.replay_all else second]


def _fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return hashlib.sha256(point).hexdigest()[:16]


class _Demo:
    """The state of one run, shared by the callbacks."""

    def __init__(
        self, options: DemoOptions, view_factory: Callable[[Callable[[], Status]], View]
    ) -> None:
        self.options = options
        self.pace = pace_for(options)
        self.plan = SessionPlan(
            options.seed, options.events, self.pace.duration_s, self.pace.idle_s
        )
        self.received: list[StreamEvent] = []
        self.reconnects = 0
        self.state = ConnectionState.DISCONNECTED
        self.connector: BrokerConnector | None = None
        self.tap: WireTap | None = None
        self.view = view_factory(self.status)
        self.announced_handshake = False

    def status(self) -> Status:
        tap, connector = self.tap, self.connector
        return Status(
            events=len(self.received),
            reconnects=self.reconnects,
            duplicates=0 if tap is None else tap.duplicates,
            bytes=0 if connector is None else connector.bytes_received,
            state=str(self.state),
        )

    async def runner(self, stream: EventStream, request: SessionRequest) -> None:
        for pause in session_script(stream, self.plan):
            await anyio.sleep(pause)

    def on_state(self, state: ConnectionState) -> None:
        self.state = state
        if state is ConnectionState.RECONNECTING:
            self.reconnects += 1
        self.view.status_changed(str(state))

    def on_open(self, number: int, wanted: int | None) -> None:
        connector = self.connector
        assert connector is not None
        if connector.session_id is None:
            hello = " with a ClientHello" if connector.encrypted else ""
            self.view.line(f"  → POST /sessions{hello}", "cyan")
            return
        stream = f"GET /sessions/{connector.session_id}/stream"
        if self.options.replay_all:
            wants = "" if wanted is None else f"; the client needs seq {wanted} on"
            self.view.line(f"  → {stream}  (no fromSeq, as the reference client{wants})", "cyan")
        else:
            query = "" if wanted is None else f"?fromSeq={wanted}"
            self.view.line(f"  → {stream}{query}", "cyan")

    def on_close(self, report: ConnectionReport) -> None:
        if report.fragment:
            self.view.line(
                f"  ✂ connection {report.number} cut mid-line after {report.lines} lines: "
                f"{report.fragment} bytes of an unfinished line dropped",
                "bold red",
            )
        elif report.error is not None:
            self.view.line(f"  ✗ connection {report.number} failed: {report.error}", "bold red")

    def on_event(self, event: StreamEvent) -> None:
        connector = self.connector
        if not self.announced_handshake and connector is not None and connector.session:
            self.announced_handshake = True
            pinned = "server signature verified against the pinned key"
            self.view.line(
                f"  ✓ handshake complete: P-256 ECDH → HKDF-SHA256 → AES-256-GCM, "
                f"key {connector.session.key_id}; {pinned}",
                "green",
            )
        self.received.append(event)
        self.view.event(event)


async def run_demo(
    options: DemoOptions, view_factory: Callable[[Callable[[], Status]], View]
) -> int:
    """Run the demo; returns 0 when every event arrived exactly once (and decrypted), else 1.

    ``view_factory(status)`` makes the view, given the function that returns
    the current :class:`~.view.Status`. Runs on asyncio (uvicorn's loop).
    """
    demo = _Demo(options, view_factory)
    view = demo.view
    signing_key = generate_signing_key()
    # With --impostor the service signs with a key the client does not know.
    service_key = generate_signing_key() if options.impostor else signing_key
    # The client names its session, so that a lost POST answer is followed, not re-sent.
    config = BrokerConfig(
        heartbeat_interval_ms=demo.pace.heartbeat_interval_ms, client_session_ids=True
    )
    app = create_broker_app(demo.runner, config=config, signing_key=service_key)
    cuts = cut_schedule(options, dry_run_bytes(demo.plan, encrypted=options.encrypt))
    started = anyio.current_time()
    with view:
        async with (
            serve_loopback(app) as port,
            CuttingProxy(port, cuts) as proxy,
            httpx.AsyncClient(trust_env=False) as http,
        ):
            _header(demo, port, proxy.port, cuts, signing_key.public_key())
            connector = demo.connector = broker_connector(
                http,
                f"http://127.0.0.1:{proxy.port}",
                code=PROGRAM,
                encrypt=options.encrypt,
                signing_public_key=signing_key.public_key() if options.encrypt else None,
            )
            tap = demo.tap = WireTap(
                connector,
                replay_all=options.replay_all,
                on_open=demo.on_open,
                on_close=demo.on_close,
            )
            try:
                async with open_event_stream(
                    tap,
                    session=connector if options.encrypt else None,
                    config=demo.pace.retries,
                    heartbeat_timeout_ms=demo.pace.heartbeat_timeout_ms,
                    on_state=demo.on_state,
                ) as events:
                    async for event in events:
                        demo.on_event(event)
            except StreamFailedError as exc:
                view.line("")
                view.line(f"FAILED: the stream stopped: {exc}", "bold red")
                if options.impostor:
                    view.line(
                        "(as it must: with --impostor the service is not the one whose key "
                        "the client pinned)",
                        "yellow",
                    )
                return 1
            assert connector.session_id is not None, "set once an event arrived"
            produced = [
                entry.event for entry in app.state.broker.get(connector.session_id).store.read(0)
            ]
            summary = summarize(
                options,
                Outcome(
                    received=demo.received,
                    produced=produced,
                    tap=tap,
                    connector=connector,
                    cuts=len(proxy.cuts),
                    reconnects=demo.reconnects,
                    elapsed_s=anyio.current_time() - started,
                ),
            )
    view.summary(summary.rows, summary.verdict, summary.ok)
    return 0 if summary.ok else 1


def _header(
    demo: _Demo, port: int, proxy_port: int, cuts: list[int], key: ec.EllipticCurvePublicKey
) -> None:
    options, view = demo.options, demo.view
    view.line(
        f"enclave-stream demo · seed {options.seed} · about {options.events} events "
        f"over ~{demo.pace.duration_s:g} s",
        "bold",
    )
    view.line(f"  service  uvicorn + create_broker_app on 127.0.0.1:{port}, running `{PROGRAM}`")
    if cuts:
        budget = " and ".join(f"{cut:,}" for cut in cuts)
        view.line(
            f"  proxy    127.0.0.1:{proxy_port}, cuts the first two responses after ~{budget} bytes"
        )
    else:
        view.line(f"  proxy    127.0.0.1:{proxy_port}, cuts nothing (--no-cuts)")
    if options.encrypt:
        view.line(
            f"  client   open_event_stream + broker_connector, end-to-end encrypted, "
            f"server key pinned (sha256 {_fingerprint(key)}…)"
        )
    else:
        view.line("  client   open_event_stream + broker_connector, plaintext (--plain)")
    view.line("")
