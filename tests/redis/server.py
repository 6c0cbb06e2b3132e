"""A real ``redis-server`` for the tests: a free port on 127.0.0.1, no persistence.

``kill()`` is ``kill -9``; ``start()`` after it brings the server back on the
same port, empty (nothing was saved): Redis restarted without its data.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RedisServer", "free_port", "redis_server_binary", "running_redis"]


def redis_server_binary() -> str:
    """The path of ``redis-server``; fails the test loudly when it is missing."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(
            "redis-server is not installed: .ci/run installs it (apt-get install -y redis-server)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process the test controls."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (empty) and wait until it answers."""
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def kill(self) -> None:
        """``kill -9`` it (idempotent)."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def restart_empty(self) -> None:
        """``kill -9`` it, and start it again on the same port without its data."""
        self.kill()
        self.start()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, killed when the block ends."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()
