"""JavaScript's view of JSON text (``String.prototype.trim``, ``JSON.parse``,
``JSON.stringify``), for the lines and values msgspec refuses.

Numbers are doubles (``1.0`` is an integer, ``1e400`` Infinity, integers past
2**53 are rounded), escaped lone surrogates are valid strings, the last of
duplicate keys wins, and nesting is limited by :data:`MAX_DEPTH`, not by the
recursion limit (docs/compatibility.md, N4, N5, N10, N11).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping
from json.decoder import scanstring as _scanstring  # type: ignore[attr-defined]
from typing import Any, cast

import msgspec

__all__ = [
    "JS_WHITESPACE",
    "MAX_DEPTH",
    "JsonSyntaxError",
    "js_blank",
    "js_dumps",
    "js_dumps_bytes",
    "js_loads",
    "js_quote",
    "js_trim",
    "utf16_truncate",
]

# String.prototype.trim strips WhiteSpace and LineTerminator: the ASCII ones,
# U+FEFF, and Unicode's Space_Separator (Zs) set; not U+0085, U+001C-U+001F,
# U+180E or U+200B, which Python's str.strip() treats differently.
JS_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)

_MAX_SAFE = 2**53

MAX_DEPTH = 10_000
"""Deepest nesting accepted. JSON.parse has no such limit, but a line of 16 MiB
of ``[`` would otherwise cost seconds of CPU in the pure-Python parser that
deep documents need (compatibility N10)."""


class JsonSyntaxError(ValueError):
    """The text is not JSON. ``position`` is the 0-based character index."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} (position {position})")


def js_trim(text: str) -> str:
    """``text.trim()`` as JavaScript does it."""
    return text.strip(JS_WHITESPACE)


def js_blank(line: bytes | bytearray | str) -> bool:
    """True if ``line`` (text, or UTF-8 bytes) is empty once trimmed as JavaScript trims."""
    if isinstance(line, str):
        return not js_trim(line)
    stripped = line.strip()  # JavaScript's ASCII white space, without decoding
    # What is left is blank only if it is non-ASCII white space (U+00A0, U+3000 ...).
    return not stripped or (stripped[0] > 0x7F and not js_trim(stripped.decode("utf-8", "replace")))


def utf16_truncate(text: str, limit: int = 100) -> str:
    """Cut ``text`` to ``limit`` UTF-16 code units and append ``...`` if it was longer.

    The count is in UTF-16 code units, as JavaScript's string length is, so a
    cut may split a surrogate pair and leave a lone high surrogate.
    """
    if len(text) * 2 <= limit:
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    if len(units) <= 2 * limit:
        return text
    return units[: 2 * limit].decode("utf-16-le", "surrogatepass") + "..."


# --- parsing -------------------------------------------------------------------


def _js_int(token: str) -> int | float:
    if len(token) < 16:
        return int(token)
    value = float(token)  # a JavaScript number: correctly rounded, inf on overflow
    return int(value) if -_MAX_SAFE <= value <= _MAX_SAFE else value


def js_float(token: str) -> int | float:
    value = float(token)
    # JavaScript has one number type: an integral value is an integer.
    if value.is_integer() and -_MAX_SAFE <= value <= _MAX_SAFE:
        return int(value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Unexpected token {name!r}, not valid JSON")


_decoder = json.JSONDecoder(
    parse_int=_js_int, parse_float=js_float, parse_constant=_reject_constant
)


def js_loads(text: str) -> Any:
    """Parse ``text`` like ``JSON.parse``; raise :class:`JsonSyntaxError` if it is not JSON."""
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(exc.msg, exc.pos) from None
    except ValueError as exc:  # NaN / Infinity
        raise JsonSyntaxError(str(exc), _constant_position(text)) from None
    except RecursionError:
        return _loads_deep(text)


def _constant_position(text: str) -> int:
    match = re.search(r"NaN|-?Infinity", text)
    return match.start() if match else 0


_WS = re.compile(r"[ \t\n\r]*")
_scan: Callable[[str, int, bool], tuple[str, int]] = _scanstring


def _skip_ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = (("true", True), ("false", False), ("null", None))


def _loads_deep(text: str) -> Any:
    """An iterative parser for documents nested deeper than the recursion limit."""
    end = len(text)
    # Each open container with the key its next value goes to (None in arrays).
    stack: list[tuple[dict[str, Any] | list[Any], list[str | None]]] = []
    i = _skip_ws(text, 0)
    while True:
        char = text[i : i + 1]
        value: Any
        if char in ("{", "[") and len(stack) >= MAX_DEPTH:
            raise JsonSyntaxError(f"Nesting deeper than {MAX_DEPTH} levels", i)
        if char == "{":
            i = _skip_ws(text, i + 1)
            if text[i : i + 1] == "}":
                value, i = {}, i + 1
            else:
                key, i = _read_key(text, i)
                stack.append(({}, [key]))
                continue
        elif char == "[":
            i = _skip_ws(text, i + 1)
            if text[i : i + 1] == "]":
                value, i = [], i + 1
            else:
                stack.append(([], [None]))
                continue
        elif char == '"':
            value, i = _read_string(text, i + 1)
        elif char and char in "-0123456789":
            match = _NUMBER.match(text, i)
            if match is None:
                raise JsonSyntaxError("Invalid number", i)
            token = match.group()
            value = js_float(token) if match.group(1) or match.group(2) else _js_int(token)
            i = match.end()
        else:
            for word, literal in _LITERALS:
                if text.startswith(word, i):
                    value, i = literal, i + len(word)
                    break
            else:
                raise JsonSyntaxError("Unexpected token", i)
        # A value is complete: attach it, closing every container it completes.
        while True:
            i = _skip_ws(text, i)
            if not stack:
                if i != end:
                    raise JsonSyntaxError("Unexpected non-whitespace character after JSON", i)
                return value
            container, slot = stack[-1]
            if isinstance(container, dict):
                container[cast(str, slot[0])] = value
                closer = "}"
            else:
                container.append(value)
                closer = "]"
            char = text[i : i + 1]
            if char == ",":
                i = _skip_ws(text, i + 1)
                if isinstance(container, dict):
                    slot[0], i = _read_key(text, i)
                break
            if char == closer:
                stack.pop()
                value, i = container, i + 1
                continue
            raise JsonSyntaxError(f"Expected ',' or '{closer}'", i)


def _read_string(text: str, start: int) -> tuple[str, int]:
    try:
        return _scan(text, start, True)
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(exc.msg, exc.pos) from None


def _read_key(text: str, i: int) -> tuple[str, int]:
    if text[i : i + 1] != '"':
        raise JsonSyntaxError("Expected double-quoted property name", i)
    key, i = _read_string(text, i + 1)
    i = _skip_ws(text, i)
    if text[i : i + 1] != ":":
        raise JsonSyntaxError("Expected ':' after property name", i)
    return key, _skip_ws(text, i + 1)


# --- writing -------------------------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
# Characters JSON.stringify escapes: quote, backslash, C0 controls, and (since
# ES2019, "well-formed JSON.stringify") lone surrogates.
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def js_quote(text: str) -> str:
    """A JSON string literal for ``text``, escaped exactly as ``JSON.stringify`` does."""
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def js_number(value: float) -> str:
    """``String(value)`` for a finite double, ``null`` for NaN and infinities."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac = mantissa.partition(".")
    if frac == "0":
        frac = ""
    significant = (int_part + frac).lstrip("0")
    stripped = significant.rstrip("0")
    # ECMAScript's Number::toString: value = stripped * 10**(n - k)
    k = len(stripped)
    n = int(exp_text or 0) - len(frac) + (len(significant) - k) + k
    if k <= n <= 21:
        body = stripped + "0" * (n - k)
    elif 0 < n <= 21:
        body = stripped[:n] + "." + stripped[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + stripped
    else:
        e = n - 1
        body = stripped[0] + ("." + stripped[1:] if k > 1 else "") + ("e+" if e >= 0 else "e-")
        body += str(abs(e))
    return sign + body


def _struct_items(obj: msgspec.Struct) -> list[tuple[str, Any]]:
    config = obj.__struct_config__
    items: list[tuple[str, Any]] = []
    if isinstance(config.tag_field, str) and config.tag is not None:
        items.append((config.tag_field, config.tag))
    for name, wire in zip(obj.__struct_fields__, obj.__struct_encode_fields__, strict=True):
        value = getattr(obj, name)
        if value is not msgspec.UNSET:
            items.append((wire, value))
    return items


def js_dumps(value: Any) -> str:
    """Write ``value`` as compact JSON the way ``JSON.stringify`` would.

    Handles msgspec Structs (wire names, ``UNSET`` omitted), enums, mappings and
    sequences without recursion, so any nesting depth works.
    """
    out: list[str] = []
    # Work items: a value to write, or a literal string (punctuation) to emit.
    todo: list[tuple[bool, Any]] = [(False, value)]
    while todo:
        is_text, item = todo.pop()
        if is_text:
            out.append(item)
            continue
        if isinstance(item, enum.Enum):
            item = item.value
        if item is None:
            out.append("null")
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif isinstance(item, str):
            out.append(js_quote(item))
        elif isinstance(item, int):
            out.append(str(item))
        elif isinstance(item, float):
            out.append(js_number(item))
        else:
            pairs: list[tuple[str, Any]] | None = None
            if isinstance(item, msgspec.Struct):
                pairs = _struct_items(item)
            elif isinstance(item, Mapping):
                pairs = [(str(k), v) for k, v in item.items() if v is not msgspec.UNSET]
            if pairs is not None:
                todo.append((True, "}"))
                for index in range(len(pairs) - 1, -1, -1):
                    key, child = pairs[index]
                    todo.append((False, child))
                    todo.append((True, ("," if index else "") + js_quote(key) + ":"))
                out.append("{")
            elif isinstance(item, (list, tuple)):
                todo.append((True, "]"))
                for index in range(len(item) - 1, -1, -1):
                    todo.append((False, item[index]))
                    if index:
                        todo.append((True, ","))
                out.append("[")
            else:
                raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")
    return "".join(out)


def js_dumps_bytes(value: Any) -> bytes:
    """``js_dumps(value)`` as UTF-8: the same bytes, usually without writing them in Python.

    Raises:
        TypeError: as :func:`js_dumps`, for a value JSON has no form for.
    """
    # msgspec writes a JSON-native value (dicts, lists, str, int, bool, None,
    # plain floats) exactly as JSON.stringify does. It also writes values JSON
    # has no form for (datetimes, tuples, sets, bytes, Structs, int keys ...),
    # but those never read back equal to what was written, so reading the
    # bytes back and comparing tells the two kinds apart (in C). Floats are the
    # exception: only a fraction in plain notation is spelled alike (msgspec
    # writes 1.0 and 1e21 where JavaScript writes 1 and 1e+21), so any other
    # float literal sends the value to js_dumps.
    try:
        data = _native_encode(value)
        if _native_read(data) == value:
            return data
    except _NOT_NATIVE:
        pass
    return js_dumps(value).encode("utf-8")


def _plain_fraction(literal: str) -> float:
    if "e" in literal or "E" in literal or literal.endswith(".0"):
        raise ValueError(literal)
    return float(literal)


_native_encode = msgspec.json.Encoder().encode
_native_read = msgspec.json.Decoder(float_hook=_plain_fraction).decode
_NOT_NATIVE = (
    TypeError,
    ValueError,  # msgspec's DecodeError and ValidationError too
    OverflowError,
    RecursionError,
)
