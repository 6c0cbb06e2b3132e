"""Serve sessions from several processes: logs on Redis, so any replica serves any resume.

``app`` is a broker app whose sessions live on the Redis at ``REDIS_URL``
(``enclave_stream.redis.RedisBackend``): the replica that takes ``POST
/sessions`` owns the session and writes it to Redis; ``GET
/sessions/{id}/stream?fromSeq=N`` works on every replica. Run it with
several workers (and as many replicas behind a load balancer as you like)::

    REDIS_URL=redis://localhost:6379 uvicorn examples.serve_redis:app --workers 3

``SESSION_EVENTS`` (default 20) and ``SESSION_EVENT_DELAY`` (seconds, default
0.01) shape the sessions ``run_session`` produces; ``REDIS_LEASE_SECONDS``
(default 10) is how long readers wait before ending a session whose owner died.

Run as a script (``python examples/serve_redis.py``), it starts a
``redis-server`` of its own (unless ``REDIS_URL`` is set) and two replicas
of ``app`` as separate uvicorn processes, starts an encrypted session on the
first, reads part of it, resumes the rest on the second, and checks that
every event arrived once, in order.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import httpx

from enclave_stream import EventStream, FinalEvent, StreamEvent, open_event_stream
from enclave_stream.producer import SessionRequest
from enclave_stream.reconnect.http import broker_connector, httpx_connector
from enclave_stream.redis import RedisBackend, RedisLimits
from enclave_stream.starlette import create_broker_app

EVENTS = int(os.environ.get("SESSION_EVENTS", "20"))
DELAY = float(os.environ.get("SESSION_EVENT_DELAY", "0.01"))


async def run_session(stream: EventStream, request: SessionRequest) -> None:
    """Each session: ``SESSION_EVENTS`` lines of output, then ``final``."""
    for step in range(1, EVENTS + 1):
        stream.stdout(f"step {step}/{EVENTS} of {request.code}\n")
        await anyio.sleep(DELAY)
    stream.final(True, {"steps": EVENTS})


app = create_broker_app(
    run_session,
    backend=RedisBackend(
        os.environ.get("REDIS_URL", "redis://localhost:6379"),
        limits=RedisLimits(lease_seconds=float(os.environ.get("REDIS_LEASE_SECONDS", "10"))),
    ),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def _process(args: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def _replicas(count: int) -> Iterator[list[str]]:
    """A Redis (unless ``REDIS_URL`` is set) and ``count`` replicas of ``app``; their URLs."""
    with ExitStack() as stack:
        env = {**os.environ, "SESSION_EVENTS": "40", "PYTHONWARNINGS": "ignore"}
        if "REDIS_URL" not in env:
            port = _free_port()
            server = shutil.which("redis-server") or "/usr/bin/redis-server"
            args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            stack.enter_context(_process([*args, "--appendonly", "no"], port, env))
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}"
        urls = []
        for _ in range(count):
            port = _free_port()
            uvicorn = [sys.executable, "-m", "uvicorn", "examples.serve_redis:app"]
            options = ["--port", str(port), "--log-level", "warning"]
            stack.enter_context(_process([*uvicorn, *options], port, env))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls


async def main(first: str, second: str) -> None:
    received: list[StreamEvent] = []
    async with httpx.AsyncClient(trust_env=False) as client:
        connect = broker_connector(client, first, code="demo", encrypt=True)
        async with open_event_stream(connect, session=connect) as events:
            async for event in events:
                received.append(event)
                if event.seq == 10:
                    break  # the client goes away ...
        # ... and comes back through another replica, which reads Redis.
        assert connect.session_id is not None
        resume = httpx_connector(client, f"{second}/sessions/{connect.session_id}/stream")
        async with open_event_stream(resume, session=connect, from_seq=11) as events:
            received.extend([event async for event in events])
    seqs = [event.seq for event in received]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert isinstance(received[-1], FinalEvent)
    print("read seq 1-10 from the first replica, resumed on the second from seq 11")
    print(f"session {connect.session_id}: {len(seqs)} events, each once, in order, decrypted")


if __name__ == "__main__":
    with _replicas(2) as (first_url, second_url):
        anyio.run(main, first_url, second_url)
