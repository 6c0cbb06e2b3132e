"""The upstream TypeScript client (``@enclave-vm/client``'s ``EnclaveClient``), scripted in Python.

No JavaScript runtime runs in CI, so its behaviours on the wire are
reproduced here, each as that client does it (``libs/client/src/client.ts``):

* ``POST {base}/sessions`` with ``{"sessionId", "code"}`` streams the session;
* every event received sets ``lastSequence`` to its ``seq``: no dedupe, no
  order check;
* a heartbeat monitor with a fixed window (30 s) is fed by ``heartbeat``
  events only; when it runs out, the client opens a second stream while it
  goes on reading the first (this is how a busy session once delivered its
  events twice);
* when a stream fails, and when the monitor runs out, it reconnects with
  ``GET {base}/sessions/{id}/stream?from={lastSequence + 1}`` (no parameter
  while ``lastSequence`` is 0), a limited number of times;
* ``final`` ends the session; ``cancel()`` aborts its own request and POSTs
  ``{"reason"}`` to ``{base}/sessions/{id}/cancel``.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from enclave_stream.reconnect import HeartbeatMonitor

__all__ = ["UpstreamClient"]


class UpstreamClient:
    """One ``EnclaveClient`` session against ``base_url`` (see the module docstring).

    ``events`` are the events delivered, in the order received (repeats
    included, as that client keeps them); ``connections`` the requests that
    streamed (``"POST /sessions"``, ``"GET /sessions/{id}/stream?from=N"``);
    ``heartbeat_timeouts`` how often the monitor ran out.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        heartbeat_timeout_ms: float = 30_000,
        max_reconnects: int = 3,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._heartbeat_timeout_ms = heartbeat_timeout_ms
        self._reconnects_left = max_reconnects
        self.events: list[dict[str, Any]] = []
        self.connections: list[str] = []
        self.heartbeat_timeouts = 0
        self.last_sequence = 0
        self.session_id = ""
        self._task_group: TaskGroup | None = None
        self._monitor: HeartbeatMonitor | None = None
        self._done = anyio.Event()

    async def execute(self, code: str, session_id: str) -> list[dict[str, Any]]:
        """Run the session to its ``final`` (or until :meth:`cancel`); return the events."""
        self.session_id = session_id
        async with (
            HeartbeatMonitor(self._heartbeat_timeout_ms, self._on_heartbeat_timeout) as monitor,
            anyio.create_task_group() as task_group,
        ):
            self._monitor = monitor
            self._task_group = task_group
            body = {"sessionId": session_id, "code": code}
            task_group.start_soon(self._read, "POST", f"{self._base}/sessions", body)
            await self._done.wait()
            task_group.cancel_scope.cancel()
        return self.events

    async def cancel(self, reason: str = "Cancelled by the user") -> httpx.Response:
        """Stop reading, then ``POST {base}/sessions/{id}/cancel`` (the upstream ``cancel()``)."""
        self._done.set()
        url = f"{self._base}/sessions/{self.session_id}/cancel"
        return await self._http.post(url, json={"reason": reason})

    def _on_heartbeat_timeout(self) -> None:
        self.heartbeat_timeouts += 1
        self._reconnect()

    def _reconnect(self) -> None:
        if self._reconnects_left <= 0 or self._done.is_set():
            self._done.set()
            return
        self._reconnects_left -= 1
        url = f"{self._base}/sessions/{self.session_id}/stream"
        if self.last_sequence > 0:
            url += f"?from={self.last_sequence + 1}"
        assert self._task_group is not None
        self._task_group.start_soon(self._read, "GET", url, None)

    async def _read(self, method: str, url: str, body: dict[str, Any] | None) -> None:
        self.connections.append(f"{method} {url.removeprefix(self._base)}")
        assert self._monitor is not None
        self._monitor.reset()  # the upstream client starts its monitor on each connect
        pending = b""
        try:
            async with self._http.stream(method, url, json=body) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            self._handle(json.loads(line))
                        if self._done.is_set():
                            return
        except (httpx.TransportError, httpx.HTTPStatusError):
            pass  # the partial line in `pending` is lost, as upstream
        if not self._done.is_set():
            self._reconnect()

    def _handle(self, event: dict[str, Any]) -> None:
        self.last_sequence = event["seq"]
        self.events.append(event)
        if event["type"] == "heartbeat":
            assert self._monitor is not None
            self._monitor.on_heartbeat()
        elif event["type"] == "final":
            self._done.set()
