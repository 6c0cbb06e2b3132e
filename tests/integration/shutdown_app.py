"""The app that tests/integration/test_shutdown.py runs with ``uvicorn`` in a subprocess.

``code`` ``"busy"``: a session that never ends on its own (output every
20 ms); ``"stubborn"``: one that ignores cancellation for 1.5 s; ``"flood"``:
one that writes as fast as it can until its log is full, then waits.
"""

from __future__ import annotations

import contextlib

import anyio
import anyio.lowlevel

from enclave_stream.producer import BrokerConfig, EventStream, LogFullError, SessionRequest
from enclave_stream.starlette import create_broker_app

SHUTDOWN_TIMEOUT_SECONDS = 0.5


async def endless(stream: EventStream, request: SessionRequest) -> None:
    """Produces until cancelled; ``stubborn`` shields itself for 1.5 s first."""
    if request.code == "stubborn":
        stream.stdout("ignoring cancellation\n")
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.5)
        return
    if request.code == "flood":
        with contextlib.suppress(LogFullError):  # the unread response holds max_bytes
            while True:
                stream.stdout("x" * 4000)
                await anyio.lowlevel.checkpoint()
        await anyio.sleep_forever()
    while True:
        stream.stdout("tick\n")
        await anyio.sleep(0.02)


app = create_broker_app(
    endless,
    config=BrokerConfig(
        heartbeat_interval_ms=100, shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS
    ),
)
