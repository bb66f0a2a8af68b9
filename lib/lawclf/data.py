"""Data stage: load, validate, normalise, de-duplicate and split (notebook 01, ``lawclf prepare``).

Split files are JSONL, one object a line: ``{"id", "text", "label", "source"}`` with
``label`` 0 (non-legal) or 1 (legal consultation). Every later stage reads them
through :func:`load_split`.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

from lawclf.config import RunPaths

SPLITS = ("train", "validation", "test")

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Unicode NFKC (full-width -> half-width, compatibility forms), collapse whitespace, strip."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def dedup_key(text: str) -> str:
    """Key under which two texts count as the same post: normalised, case-folded, and with
    spaces, punctuation and symbols removed ("借钱不还！" == "借钱 不还")."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in norm if unicodedata.category(ch)[0] not in "PSZC")


def load_split(run_dir: str | os.PathLike[str], split: str) -> list[dict]:
    """Rows of one split (``train``, ``validation`` or ``test``) written by :func:`prepare`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = RunPaths(run_dir).split_file(split)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the data stage first (notebook 01 or `lawclf prepare`)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
