"""Validation of API request bodies (torch-free, Flask-free): every bad input becomes an :class:`ApiError`
with an HTTP status, a machine-readable code and a message that says what to fix."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

#: Field names accepted for one text and for a list of texts (``content`` is the original contract).
TEXT_FIELDS = ("content", "text")


BATCH_FIELDS = ("texts", "contents")


class ApiError(Exception):
    """A client error: becomes a 4xx JSON response ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Mapping[str, str]] = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


def parse_json_body(mimetype: str, body: bytes) -> Any:
    """Decode a request body that must be JSON; raise :class:`ApiError` (415/400) otherwise."""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        shown = mimetype or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be application/json (got {shown}).")
    if not body.strip():
        raise ApiError(400, "invalid_json", "The request body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "invalid_json", "The JSON body is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {_short(str(exc))}") from None


#: Code points that show nothing on their own, as inclusive ranges, written out for Unicode 14 (not derived
#: from ``unicodedata``: its tables change between Python versions and the spec must not):
#: whitespace, controls (Cc), format characters (Cf: zero-width space and joiners, BOM, bidi marks, tags),
#: the other default-ignorable code points (variation selectors, Hangul fillers, the combining grapheme
#: joiner, the whole tag and variation-selector supplement E0000–E0FFF), and the blank Braille pattern.
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0020), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x1680, 0x1680),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x206F), (0x2800, 0x2800),
    (0x3000, 0x3000), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _class_char(cp: int) -> str:
    # BMP as \uXXXX escapes; beyond it the character itself, which Python's re and ECMA-262 regular
    # expressions in Unicode mode both read as one code point (JSON carries it as a surrogate pair).
    return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)


#: A text with a visible character: one that is not made only of :data:`INVISIBLE_RANGES`. The same
#: string is the ``pattern`` of every text in resources/openapi.json (tests/unit/test_serve_hardening.py
#: checks it), so the spec and the server agree on which texts are empty. Written as "not only invisible
#: characters" (a lookahead over a small class) rather than "some character outside them" (``[^…]``):
#: the negated class over the whole of Unicode is so large that schemathesis' regex engine refuses it
#: once repeated to the 2,000-character limit, and the two mean the same in Python and in ECMA-262.
VISIBLE_PATTERN = "^(?![" + "".join(_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}"
                                    for a, b in INVISIBLE_RANGES) + "]*$)"
_VISIBLE = re.compile(VISIBLE_PATTERN)


def has_visible_character(text: str) -> bool:
    """True when ``text`` matches :data:`VISIBLE_PATTERN`: some character is not whitespace, a control, a
    format character or otherwise invisible (zero-width spaces, joiners, tags, variation selectors,
    fillers and NULs alone are not a text)."""
    return _VISIBLE.match(text) is not None


def validate_text(value: Any, field: str, max_chars: int) -> str:
    """Check one text: a non-empty, well-formed string of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"'{field}' must be a string, got {_json_type(value)}.")
    if not value.strip():
        raise ApiError(400, "empty_text", f"'{field}' is empty; send the text to classify.")
    if not has_visible_character(value):
        raise ApiError(400, "no_visible_text", f"'{field}' has no visible character (only control, format or "
                                               "zero-width characters); send the text to classify.")
    if len(value) > max_chars:
        raise ApiError(400, "text_too_long",
                       f"'{field}' has {len(value)} characters; the limit is {max_chars}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON "\ud800" escapes
        raise ApiError(400, "invalid_text", f"'{field}' contains invalid Unicode (a lone surrogate).") from None
    return value


def _pick_field(payload: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any]:
    present = [n for n in names if n in payload]
    if not present:
        raise ApiError(400, "missing_field", f"Send a JSON object with a '{names[0]}' field "
                                             f"(or '{names[1]}').")
    if len(present) > 1:
        raise ApiError(400, "ambiguous_field", f"Send either '{names[0]}' or '{names[1]}', not both.")
    return present[0], payload[present[0]]


def validate_single(payload: Any, max_chars: int) -> str:
    """The text of a ``POST /predict`` body ``{"content": "..."}`` (or ``{"text": "..."}``)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", f"The body must be a JSON object, got {_json_type(payload)}.")
    field, value = _pick_field(payload, TEXT_FIELDS)
    return validate_text(value, field, max_chars)


def validate_batch(payload: Any, max_chars: int, max_batch: int) -> list[str]:
    """The texts of a ``POST /predict/batch`` body ``{"texts": [...]}`` (or ``{"contents": [...]}``)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", f"The body must be a JSON object, got {_json_type(payload)}.")
    field, value = _pick_field(payload, BATCH_FIELDS)
    if not isinstance(value, list):
        raise ApiError(400, "invalid_field", f"'{field}' must be a list of strings, got {_json_type(value)}.")
    if not value:
        raise ApiError(400, "empty_batch", f"'{field}' is empty; send at least one text.")
    if len(value) > max_batch:
        raise ApiError(400, "batch_too_large", f"'{field}' has {len(value)} texts; the limit is {max_batch}.")
    return [validate_text(item, f"{field}[{i}]", max_chars) for i, item in enumerate(value)]


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"



__all__ = ["ApiError", "TEXT_FIELDS", "BATCH_FIELDS", "parse_json_body", "validate_text", "validate_single",
           "validate_batch"]
