"""The probe questions: short everyday questions with legal-sounding words, and their legal twins.

One reader (:func:`load_probes`) for evaluation (notebook 04), the sample writer (which
keeps probes out of the sample), the benchmarks and the server's demo page; torch-free.
Each line of ``resources/probes.jsonl`` (or a file of your own) is
``{"text", "label", "kind"}``; a bad line stops with ``path:line``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from lawclf.metrics import ArrayLike

PROBES_RESOURCE = "probes.jsonl"


def load_probes(path: Optional[str | os.PathLike[str]] = None) -> list[dict]:
    """The probe questions (``{"text", "label", "kind"}`` per line); [] when the file is absent."""
    if path:
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"probe file {source} not found")
        text = source.read_text(encoding="utf-8")
    else:
        res = resources.files("lawclf").joinpath(f"resources/{PROBES_RESOURCE}")
        if not res.is_file():
            return []
        text = res.read_text(encoding="utf-8")
        source = Path(str(res))
    probes = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            probes.append({"text": str(row["text"]), "label": int(row["label"]), "kind": str(row.get("kind", ""))})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{lineno}: bad probe line ({exc}): {line[:80]!r}") from exc
    return probes


def probe_report(probes: Sequence[Mapping], scores: ArrayLike, threshold: float) -> dict[str, Any]:
    """Each probe with its score and whether the model gets it right; accuracy overall and per kind."""
    items = []
    for p, score in zip(probes, scores):
        pred = int(score >= threshold)
        items.append({**p, "score": float(score), "predicted": pred, "correct": pred == int(p["label"])})
    kinds: dict[str, list[bool]] = {}
    for it in items:
        kinds.setdefault(it["kind"] or "-", []).append(it["correct"])
    return {
        "n": len(items),
        "accuracy": float(np.mean([it["correct"] for it in items])) if items else float("nan"),
        "per_kind": {k: {"n": len(v), "accuracy": float(np.mean(v))} for k, v in sorted(kinds.items())},
        "items": items,
    }



__all__ = ["PROBES_RESOURCE", "load_probes", "probe_report"]
