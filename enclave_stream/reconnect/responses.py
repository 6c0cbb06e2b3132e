"""What an HTTP response says about an event stream, whatever the HTTP client.

A connector asks :func:`stream_problem` whether a response is a stream of
events; if not, :func:`refusal` is the connector error to raise: retryable
for 429 and 5xx (with the wait the server asked for, :func:`retry_after`),
fatal otherwise, its message giving the status and the start of the body.
"""

from __future__ import annotations

__all__ = ["ERROR_BODY_LIMIT", "refusal", "retry_after", "stream_problem"]

import datetime
import email.utils
import math
import time
from collections.abc import Mapping
from typing import Final

from ..errors import FatalConnectError, RetryableConnectError
from ..protocol import NDJSON_MEDIA_TYPE

ERROR_BODY_LIMIT: Final = 200
"""How much of a refused response's body goes into the error message (bytes)."""

# Content types a server may label an NDJSON body with. A missing one is
# accepted too; anything else (text/html above all) is not a stream of events.
_NDJSON_MEDIA_TYPES: Final = frozenset(
    {
        NDJSON_MEDIA_TYPE,
        "application/ndjson",
        "application/jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json",
        "application/octet-stream",
        "text/plain",
    }
)


def stream_problem(status: int, content_type: str | None) -> str | None:
    """Why a response is not an event stream ("" for its status alone), or None if it is one."""
    if not 200 <= status < 300:
        return ""
    media_type = (content_type or "").partition(";")[0].strip()
    if media_type and media_type.lower() not in _NDJSON_MEDIA_TYPES:
        return f"not NDJSON but {media_type}"
    return None


def refusal(
    status: int,
    reason_phrase: str,
    headers: Mapping[str, str],
    problem: str,
    body: bytes,
) -> FatalConnectError | RetryableConnectError:
    """The error for a response that is not a stream: retryable for 429 and 5xx, else fatal."""
    reason = f"HTTP {status} {reason_phrase}".rstrip()
    if problem:
        reason = f"{reason}, {problem}"
    text = " ".join(body[:ERROR_BODY_LIMIT].decode("utf-8", "replace").split())
    if text:
        reason = f"{reason}: {text}"
    if status == 429 or status >= 500:
        return RetryableConnectError(reason, status_code=status, retry_after=retry_after(headers))
    return FatalConnectError(reason, status_code=status)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429/503 response asks to wait: ``retry-after-ms``, else ``Retry-After``.

    ``Retry-After`` is delay-seconds or an HTTP date (RFC 9110 section
    10.2.3); ``now`` is the POSIX time a date is measured from (the clock's
    when None). None when neither header is there or readable; never negative.

    >>> retry_after({"retry-after": "3"}), retry_after({"retry-after-ms": "250"})
    (3.0, 0.25)
    >>> retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0)
    10.0
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # an HTTP date is GMT even when it does not say so
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return max(moment.timestamp() - (time.time() if now is None else now), 0.0)
