"""Serving one session to many clients: the producer side under load, over loopback HTTP.

A service process (uvicorn + ``enclave_stream.starlette.create_broker_app``)
starts one session per run; this process is the clients: ``--clients``
concurrent httpx streams (the ``POST /sessions`` that starts it, plus
``GET /sessions/{id}/stream`` for the others), each parsing every event and
checking that it got ``seq`` 1, 2, 3, ... to ``final``, each exactly once.

Modes (each in a fresh service process):

* ``live``: every client is connected and waiting before the session
  produces its ``--events`` events; the service fans each one out.
* ``replay``: the session is over before the clients connect; the service
  serves it from its replay log.
* ``live-encrypted``: as ``live``, with the session encrypted (each event
  sealed once, the same envelope bytes for every client).
* ``big-replay``: as ``replay`` with ``--big-clients`` (20) clients replaying a
  session of ``--big-events`` (200,000) events: how the replay log's cost per
  event holds up for a long session (``service_cpu_us_per_event``).

Prints JSON per mode: events/s served (all clients' events over the wall
time from the first client connecting to the last one finishing), MB/s,
the service's CPU time and the events/s that CPU time alone would allow
(the clients share the machine), and the service's peak RSS (``VmHWM``)
before the session and after it.

Run: ``python benchmarks/bench_serve.py [--clients N] [--events N] [--modes live big-replay]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from enclave_stream import ClientHandshake, encode_message, parse_ndjson_stream
from enclave_stream.producer import BrokerConfig, EventStream, SessionRequest
from enclave_stream.starlette import create_broker_app

MODES = ("live", "replay", "live-encrypted", "big-replay")


# --- the service (child process) -------------------------------------------------


def _peak_rss_kib() -> float:
    # VmHWM is this process's own peak: ru_maxrss would also count what the
    # parent had resident when it started this process (Linux keeps it across exec).
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform == "darwin" else float(rss)


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_kib": _peak_rss_kib(), "cpu_s": usage.ru_utime + usage.ru_stime}


async def _run_session(stream: EventStream, request: SessionRequest) -> None:
    plan = json.loads(request.code)
    store = stream.store
    # live: wait until every client is there (polled: nothing signals it)
    while store.waiting < plan["readers"]:  # noqa: ASYNC110
        await anyio.sleep(0.001)
    chunk = "x" * plan["chunk"]
    for index in range(plan["events"]):
        stream.stdout(f"{index} {chunk}\n")
        if index % 64 == 63:
            await anyio.lowlevel.checkpoint()
    stream.final(True, {"events": plan["events"]})


def _service(events: int, port_to: Connection) -> None:
    # Every session is held whole; the memory budget is not what is measured.
    config = BrokerConfig(
        heartbeat_interval_ms=None,
        max_events=events + 10,
        max_bytes=1 << 30,
        max_total_bytes=1 << 40,
    )
    app = create_broker_app(_run_session, config=config)

    async def usage(request: Request) -> JSONResponse:
        return JSONResponse(_usage())

    app.router.routes.append(Route("/_usage", usage))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_to.send((sock.getsockname()[1], _usage()))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            http="h11",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            backlog=4096,
        )
    )
    server.run(sockets=[sock])


# --- the clients (this process) -------------------------------------------------


async def _read(response: httpx.Response, expected: int) -> int:
    seqs = [event.seq async for event in parse_ndjson_stream(response.aiter_bytes(), strict=True)]
    if seqs != list(range(1, expected + 1)):
        raise AssertionError(f"a client got {len(seqs)} events, not 1..{expected} once each")
    return len(seqs)


async def _measure(url: str, mode: str, clients: int, events: int, chunk: int) -> dict[str, Any]:
    expected = events + 2  # session_init, the stdout events, final
    live = not mode.endswith("replay")
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(60, read=None)
    request: dict[str, Any] = {
        "code": json.dumps({"events": events, "readers": clients if live else 0, "chunk": chunk})
    }
    if mode.endswith("encrypted"):
        request["encryption"] = {
            "mode": "required",
            "clientHello": json.loads(encode_message(ClientHandshake().client_hello)),
        }
    received = [0]
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        before = (await http.get(f"{url}/_usage")).json()
        start = time.perf_counter()
        cpu_start = time.process_time()
        async with http.stream("POST", f"{url}/sessions", json=request) as first:
            session_id = first.headers["x-session-id"]
            stream_url = f"{url}/sessions/{session_id}/stream"
            if not live:
                count = await _read(first, expected)
                received[0] += count
                start = time.perf_counter()  # replay: only the serving counts

            async def client() -> None:
                async with http.stream("GET", stream_url) as response:
                    count = await _read(response, expected)  # before the +=: tasks interleave
                    received[0] += count

            async with anyio.create_task_group() as tg:
                if live:
                    tg.start_soon(_consume, first, expected, received)
                for _ in range(clients - 1):
                    tg.start_soon(client)
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - cpu_start
        after = (await http.get(f"{url}/_usage")).json()
    if received[0] != clients * expected:
        raise AssertionError(f"{received[0]} events delivered, {clients * expected} expected")
    served = received[0]
    server_cpu = after["cpu_s"] - before["cpu_s"]
    line_bytes = 110 + chunk if not mode.endswith("encrypted") else 250 + chunk * 4 // 3
    return {
        "mode": mode,
        "clients": clients,
        "events_per_client": expected,
        "events_served": served,
        "wall_s": round(elapsed, 3),
        "events_per_s": round(served / elapsed),
        "approx_mb_per_s": round(served * line_bytes / elapsed / 1e6, 1),
        "service_cpu_s": round(server_cpu, 3),
        "service_cpu_us_per_event": round(server_cpu / served * 1e6, 3),
        "events_per_service_cpu_s": round(served / server_cpu) if server_cpu else None,
        "client_cpu_s": round(client_cpu, 3),
        "service_peak_rss_mib_before": round(before["peak_rss_kib"] / 1024, 1),
        "service_peak_rss_mib_after": round(after["peak_rss_kib"] / 1024, 1),
    }


async def _consume(response: httpx.Response, expected: int, received: list[int]) -> None:
    count = await _read(response, expected)
    received[0] += count


def _one_mode(mode: str, clients: int, events: int, chunk: int) -> dict[str, Any]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_service, args=(events, child), daemon=True
    )
    process.start()
    try:
        port, _ = parent.recv()
        url = f"http://127.0.0.1:{port}"

        async def ready() -> None:
            async with httpx.AsyncClient() as http:
                with anyio.fail_after(20):
                    while True:
                        try:
                            await http.get(f"{url}/_usage")
                            return
                        except httpx.TransportError:
                            await anyio.sleep(0.05)

        anyio.run(ready)
        return anyio.run(_measure, url, mode, clients, events, chunk)
    finally:
        process.terminate()
        process.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=40, help="extra characters per stdout line")
    parser.add_argument("--big-clients", type=int, default=20)
    parser.add_argument("--big-events", type=int, default=200_000)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": multiprocessing.cpu_count(),
            "platform": platform.platform(),
        },
        "runs": [
            _one_mode(mode, args.big_clients, args.big_events, args.chunk)
            if mode == "big-replay"
            else _one_mode(mode, args.clients, args.events, args.chunk)
            for mode in args.modes
        ],
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
