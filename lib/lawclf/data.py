"""Data stage: load, validate, normalise, de-duplicate and split (notebook 01, ``lawclf prepare``).

Split files are JSONL, one object a line: ``{"id", "text", "label", "source"}`` with
``label`` 0 (non-legal) or 1 (legal consultation). Every later stage reads them
through :func:`load_split`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lawclf.config import RunPaths

SPLITS = ("train", "validation", "test")


def load_split(run_dir: str | os.PathLike[str], split: str) -> list[dict]:
    """Rows of one split (``train``, ``validation`` or ``test``) written by :func:`prepare`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = RunPaths(run_dir).split_file(split)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the data stage first (notebook 01 or `lawclf prepare`)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
