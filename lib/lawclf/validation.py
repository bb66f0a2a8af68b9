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


#: A character that is visible: not whitespace, not a control (Cc) and not a format character (Cf) such as
#: the zero-width space, joiners, the BOM or bidi marks (Unicode 14, the Basic Multilingual Plane). The same
#: string is the ``pattern`` of every text in resources/openapi.json (tests/unit/test_serve.py checks it),
#: so the spec and the server agree on which texts are empty: written out, not derived from ``unicodedata``,
#: because the Unicode tables change between Python versions and the spec must not.
VISIBLE_PATTERN = (r"[^\u0000-\u0020\u007f-\u00a0\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891"
                   r"\u08e2\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000"
                   r"\ufeff\ufff9-\ufffb]")
_VISIBLE = re.compile(VISIBLE_PATTERN)


def has_visible_character(text: str) -> bool:
    """True when some character matches :data:`VISIBLE_PATTERN` (zero-width spaces, joiners, BOMs and
    NULs alone are not a text)."""
    return _VISIBLE.search(text) is not None


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
