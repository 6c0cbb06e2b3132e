"""The app that tests/integration/test_shutdown.py runs with ``uvicorn`` in a subprocess.

``code`` ``"busy"``: a session that never ends on its own (output every
20 ms); ``"stubborn"``: one that ignores cancellation for 1.5 s.
"""

from __future__ import annotations

import anyio

from enclave_stream.producer import BrokerConfig, EventStream, SessionRequest
from enclave_stream.starlette import create_broker_app

SHUTDOWN_TIMEOUT_SECONDS = 0.5


async def endless(stream: EventStream, request: SessionRequest) -> None:
    """Produces until cancelled; ``stubborn`` shields itself for 1.5 s first."""
    if request.code == "stubborn":
        stream.stdout("ignoring cancellation\n")
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.5)
        return
    while True:
        stream.stdout("tick\n")
        await anyio.sleep(0.02)


app = create_broker_app(
    endless,
    config=BrokerConfig(
        heartbeat_interval_ms=100, shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS
    ),
)
