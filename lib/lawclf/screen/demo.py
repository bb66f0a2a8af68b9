"""Notebook 07's offline demo: made-up posts with known labels, and the model's mistakes on them.

``resources/screen_demo_posts.jsonl`` holds 60 posts the project wrote: legal questions,
everyday questions with legal-sounding words (``trap``: 借钱, 我想咨询下, 怎么办 …) and plain
everyday questions, in two batches (the second "arrives" after the first has been reviewed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

DEMO_POSTS = Path(__file__).resolve().parents[1] / "resources" / "screen_demo_posts.jsonl"


def demo_posts(batch: Optional[int] = None) -> list[dict[str, Any]]:
    with DEMO_POSTS.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if batch is None or r["batch"] == batch]


def as_topics(rows: Sequence[dict[str, Any]], node: str = "qna", created: float = 1_767_000_000.0) -> list[dict]:
    """The posts as V2EX topics (for :meth:`lawclf_dev.fake_v2ex.FakeV2EX.publish`)."""
    return [{"id": r["id"], "title": r["title"], "content": "", "node": {"name": node, "title": node},
             "created": int(created) + 60 * (r["id"] % 1000), "replies": 0} for r in rows]


def judged(scorer: Any, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each post with the model's score and verdict, and whether the verdict is wrong."""
    scores = scorer.predict_proba([r["title"] for r in rows])
    out = []
    for r, s in zip(rows, scores):
        predicted = int(float(s) >= scorer.threshold)
        out.append({"title": r["title"], "kind": r["kind"], "label": r["label"], "score": round(float(s), 3),
                    "predicted": predicted, "wrong": predicted != r["label"]})
    return out
