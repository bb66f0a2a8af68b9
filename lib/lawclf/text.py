"""Text normalisation shared by every stage that touches raw text.

The data stage (:mod:`lawclf.data`), the trainer's inference helper, the ONNX
:class:`~lawclf.predict.Predictor` and the server all apply :func:`normalise_text`, so a
text reaches the model in the same form at training and at serving time. This module
imports nothing heavy: the server image can use it without the data stage.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


# Everything that is not a letter or digit: spaces, punctuation, symbols, underscore.
_NOT_WORD = re.compile(r"[\W_]+")


def normalise_text(text: str) -> str:
    """Unicode NFKC (full-width -> half-width, compatibility forms), collapse whitespace, strip."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def dedup_key(text: str) -> str:
    """Key under which two texts count as the same post: NFKC, case-folded, and with
    spaces, punctuation and symbols removed ("借钱不还！" == "借钱 不还")."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())



__all__ = ["normalise_text", "dedup_key"]
