"""The simulated session: a sandboxed program that analyses a sales file.

:func:`session_script` appends the session's events to an
:class:`~enclave_stream.producer.EventStream` and yields the pauses between
them, so the same script drives the live service (which sleeps the pauses,
and sends heartbeats during the long one) and a dry run (which does not)::

    for pause in session_script(stream, plan):
        await anyio.sleep(pause)

The content is drawn from ``plan.seed``: the same seed gives the same
events (heartbeats and timings aside).
"""

from __future__ import annotations

__all__ = ["PROGRAM", "SessionPlan", "dry_run_bytes", "session_script"]

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from enclave_stream import ClientHandshake, accept_client_hello
from enclave_stream.producer import EventStream

PROGRAM: Final = "node analyze-sales.js --input sales-2025.csv --currency EUR"
"""The command the simulated session runs (sent as the session's ``code``)."""

_REGIONS: Final = ("north", "south", "east", "west", "central")
_FIXED_EVENTS: Final = 21  # events besides the batch lines and their logs, final included
_LOG_RATE: Final = 0.12  # the share of batch lines followed by a log line
_SKIPPED_REASONS: Final = (
    "date '2025-13-01' is out of range",
    "amount 'n/a' is not a number",
    "currency 'XBT' is not supported",
    "customer id is empty",
)


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """What the simulated session produces, and at what pace.

    Attributes:
        seed: draws the content.
        events: about how many events, heartbeats aside.
        duration_s: about how long the session takes, its idle pause included.
        idle_s: the pause while the tool call runs (heartbeats fill it).
    """

    seed: int
    events: int
    duration_s: float
    idle_s: float


def session_script(stream: EventStream, plan: SessionPlan) -> Iterator[float]:
    """Append the session's events to ``stream``; yield the pause (seconds) after each step."""
    rng = random.Random(plan.seed)
    rows = rng.randrange(40_000, 90_000)
    batches = max(8, round((plan.events - _FIXED_EVENTS) / (1 + _LOG_RATE)))
    busy_s = max(plan.duration_s - plan.idle_s, 0.0)
    step = busy_s / (batches + 12)

    stream.log("info", "sandbox ready", {"runtime": "enclave-vm", "memoryMb": 256})
    stream.stdout(f"$ {PROGRAM}\n")
    stream.stdout(f"loading sales-2025.csv … {rows:,} rows, 11 columns\n")
    yield step

    per_batch = -(-rows // batches)
    tool_at = batches * 2 // 5
    skipped = 0
    for index in range(batches):
        first, last = index * per_batch + 1, min(rows, (index + 1) * per_batch)
        took = rng.uniform(0.8, 14.0)
        stream.stdout(
            f"batch {index + 1:03d}/{batches:03d}  rows {first:>6,}-{last:>6,}  {took:5.1f} ms  ✓\n"
        )
        if rng.random() < _LOG_RATE:
            if rng.random() < 0.4:
                skipped += 1
                row = rng.randint(first, last)
                reason = rng.choice(_SKIPPED_REASONS)
                stream.log("warn", f"row {row:,} skipped: {reason}", {"row": row})
            else:
                stream.log(
                    "debug", "checkpoint", {"batch": index + 1, "heapMb": rng.randint(40, 90)}
                )
        yield step
        if index == tool_at:
            yield from _tool_call(stream, plan, rng, step)

    revenue = {region: round(rng.uniform(80_000, 900_000), 2) for region in _REGIONS}
    stream.stdout(f"aggregated {rows - skipped:,} rows ({skipped} skipped) into 5 regions\n")
    for position, (region, amount) in enumerate(revenue.items()):
        orders = rng.randint(900, 9_000)
        stream.partial_result(
            ["regions", region],
            {"revenueEur": amount, "orders": orders},
            has_next=position < len(revenue) - 1,
        )
        yield step
    top = max(revenue, key=revenue.__getitem__)
    total = round(sum(revenue.values()), 2)
    stream.stdout(f"top region: {top} (€{revenue[top]:,.2f} of €{total:,.2f})\n")
    stream.log(
        "info", "report written", {"path": "/out/report.json", "bytes": rng.randint(2_000, 9_000)}
    )
    stream.stdout("done.\n")
    yield step
    stream.final(
        True,
        {
            "rows": rows,
            "skipped": skipped,
            "regions": len(revenue),
            "topRegion": top,
            "totalEur": total,
        },
    )


def _tool_call(
    stream: EventStream, plan: SessionPlan, rng: random.Random, step: float
) -> Iterator[float]:
    """A currency-rate lookup: the call, its progress, a long wait (heartbeats), the result."""
    stream.stdout("converting to EUR: fetching today's rates …\n")
    call_id = stream.tool_call(
        "currency.rates", {"base": "EUR", "symbols": ["USD", "GBP", "JPY", "CHF"]}
    )
    stream.tool_progress(call_id, "connecting", elapsed_ms=rng.uniform(3, 9))
    yield step
    stream.tool_progress(call_id, "sending", elapsed_ms=rng.uniform(10, 20))
    yield plan.idle_s  # the tool is slow: the stream sends heartbeats meanwhile
    size = rng.randint(1_500, 4_000)
    stream.tool_progress(
        call_id,
        "receiving",
        elapsed_ms=rng.uniform(400, 900),
        bytes_received=size,
        total_bytes=size,
    )
    stream.tool_result_applied(call_id)
    rate = rng.uniform(1.05, 1.15)
    stream.stdout(f"rates received: 1 EUR = {rate:.4f} USD (and 3 more)\n")
    yield step


def dry_run_bytes(plan: SessionPlan, *, encrypted: bool) -> int:
    """The bytes of NDJSON the session sends (heartbeats aside), from a run without pauses."""
    session_id = "s_dry-run"
    session = None
    if encrypted:
        session = accept_client_hello(ClientHandshake().client_hello, session_id)[1]
    stream = EventStream(session_id, session=session, heartbeat_interval_ms=None)
    for _ in session_script(stream, plan):
        pass
    return sum(len(entry.line) for entry in stream.store.read(0))
