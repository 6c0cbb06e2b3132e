"""Broker replicas for the scale-out tests: ``uvicorn examples.serve_redis:app`` processes.

Each replica is its own process (its own memory), on 127.0.0.1 and a free
port, sharing one Redis: what a service with several replicas behind a load
balancer looks like.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.redis.server import RedisServer, free_port, running_redis

__all__ = ["Cluster", "Replica", "cluster", "start_replica"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    """One uvicorn process serving ``examples.serve_redis:app``."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """``kill -9`` it (and its workers)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    """A Redis and the replicas sharing it."""

    redis: RedisServer
    replicas: list[Replica] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]


@contextmanager
def start_replica(redis_url: str, workers: int = 1, **env: str) -> Iterator[Replica]:
    """``uvicorn examples.serve_redis:app --workers N`` with ``REDIS_URL`` (and ``env``)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "examples.serve_redis:app"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONWARNINGS": "ignore", **env},
        start_new_session=True,  # its own process group: its workers are stopped with it
    )
    replica = Replica(port, process)
    try:
        _wait_until_serving(replica, workers)
        yield replica
    finally:
        replica.stop()


def _wait_until_serving(replica: Replica, workers: int) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"the replica exited with {replica.process.returncode}")
        try:
            # Every worker's lifespan ran once a few requests in a row succeed.
            if all(
                httpx.get(f"{replica.url}/sessions", timeout=2).status_code == 200
                for _ in range(workers * 2)
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the replica did not start")


@contextmanager
def cluster(count: int = 2, **env: str) -> Iterator[Cluster]:
    """A Redis of its own and ``count`` single-worker replicas on it."""
    with running_redis() as redis, ExitStack() as stack:
        made = Cluster(redis)
        for _ in range(count):
            made.replicas.append(stack.enter_context(start_replica(redis.url, **env)))
        yield made
