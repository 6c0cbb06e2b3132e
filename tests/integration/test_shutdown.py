"""Graceful shutdown of a real ``uvicorn`` process serving sessions, on SIGINT and SIGTERM.

uvicorn closes its connections before it ends the app's lifespan, so a
streaming session used to keep it waiting forever. The broker app now ends
every running session on the signal (``final``, ``SERVER_SHUTDOWN``), the
bodies end, and uvicorn exits on its own, without a traceback.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.integration.asgi_server import HTTPX_CLOSED_EARLY
from tests.integration.shutdown_app import SHUTDOWN_TIMEOUT_SECONDS

pytestmark = [
    pytest.mark.anyio,
    *HTTPX_CLOSED_EARLY,
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_process(*options: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m uvicorn tests.integration.shutdown_app:app`` on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.integration.shutdown_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", *options]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


async def wait_ready(http: httpx.AsyncClient, url: str) -> None:
    with anyio.fail_after(20):
        while True:
            try:
                if (await http.get(f"{url}/sessions")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.05)


class Lines:
    """The NDJSON lines of a streaming response, read as far as asked."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks: AsyncIterator[bytes] = response.aiter_bytes()
        self._data = b""
        self.ended = False

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._data.split(b"\n") if line.strip()]

    async def read(self, lines: int | None = None) -> None:
        """Read until ``lines`` lines are in, or to the end of the body (None)."""
        async for chunk in self._chunks:
            self._data += chunk
            if lines is not None and self._data.count(b"\n") >= lines:
                return
        self.ended = True


@pytest.mark.parametrize(
    ("signum", "code", "returncode"),
    [
        (signal.SIGINT, "busy", 0),
        # After its graceful shutdown uvicorn re-raises SIGTERM with the
        # default action, so that its parent sees how it ended.
        (signal.SIGTERM, "busy", -signal.SIGTERM),
        (signal.SIGTERM, "stubborn", -signal.SIGTERM),
    ],
    ids=["SIGINT", "SIGTERM", "SIGTERM-stubborn-producer"],
)
async def test_the_server_ends_every_session_and_exits(
    signum: int, code: str, returncode: int
) -> None:
    timeout = httpx.Timeout(10)
    with uvicorn_process() as (process, url):
        async with httpx.AsyncClient(timeout=timeout) as http:
            await wait_ready(http, url)
            async with http.stream("POST", f"{url}/sessions", json={"code": code}) as created:
                session_id = created.headers["x-session-id"]
                first = Lines(created)
                await first.read(2)
                resume = f"{url}/sessions/{session_id}/stream"
                async with http.stream("GET", resume, params={"from": 2}) as resumed:
                    second = Lines(resumed)
                    await second.read(1)
                    signalled = time.monotonic()
                    process.send_signal(signum)
                    with anyio.fail_after(5):
                        await first.read()
                        await second.read()
                    bodies_ended = time.monotonic() - signalled
        # The process ends on its own (no --timeout-graceful-shutdown).
        await anyio.to_thread.run_sync(process.wait, 10)
        exited = time.monotonic() - signalled
        _, stderr = process.communicate(timeout=10)

    for body in (first, second):
        assert body.ended
        final = body.events[-1]
        assert final["type"] == "final"
        assert final["sessionId"] == session_id
        assert final["payload"]["error"] == {
            "message": "The server is shutting down",
            "code": "SERVER_SHUTDOWN",
        }
    assert first.events[-1] == second.events[-1]
    if code == "stubborn":  # the final is forced once the timeout is over
        assert SHUTDOWN_TIMEOUT_SECONDS <= bodies_ended < SHUTDOWN_TIMEOUT_SECONDS + 2
        assert "ignored the shutdown" in stderr
    else:
        assert bodies_ended < 2
    assert exited < 5
    assert process.returncode == returncode
    assert "Traceback" not in stderr
    assert "ERROR" not in stderr
    assert "Finished server process" in stderr


@pytest.mark.parametrize(
    ("signum", "returncode"),
    [(signal.SIGINT, 0), (signal.SIGTERM, -signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM"],
)
async def test_a_client_that_reads_nothing_does_not_hold_the_server(
    signum: int, returncode: int
) -> None:
    # Its response is blocked in a send (the socket buffers are full) and
    # the send timeout (30 s) is far: the shutdown cuts it. uvicorn then
    # closes the connection only once its own buffer is sent, which never
    # happens: its --timeout-graceful-shutdown ends that wait, with none of
    # the app's tasks left to cancel.
    with uvicorn_process("--timeout-graceful-shutdown", "3") as (process, url):
        async with httpx.AsyncClient(timeout=httpx.Timeout(10)) as http:
            await wait_ready(http, url)
        port = int(url.rsplit(":", 1)[1])
        body = b'{"code": "flood"}'
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(
                b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await anyio.sleep(1.5)  # the log fills; the response waits on the socket
            signalled = time.monotonic()
            process.send_signal(signum)
            await anyio.to_thread.run_sync(process.wait, 15)
            exited = time.monotonic() - signalled
    _, stderr = process.communicate(timeout=10)
    assert exited < 3 + 2
    assert "cutting 1 stalled response" in stderr
    assert "Cancel 0 running task(s)" in stderr  # the app had ended its response
    assert process.returncode == returncode
    assert "Traceback" not in stderr
