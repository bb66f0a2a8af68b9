"""Export collected posts to the two-file JSONL layout the data stage reads.

``<out_dir>/legal.jsonl`` and ``<out_dir>/nonlegal.jsonl``, one object a line:
``{"text": ..., "label": 1 | 0, "source": ...}``. The text is the title and the body
joined, with HTML and markdown stripped and whitespace collapsed; texts outside the
length bounds and exact duplicates are left out and counted, never silently.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from lawclf.collect import store

FILES = {1: "legal.jsonl", 0: "nonlegal.jsonl"}

_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/h\d|/tr)\b[^>]*>", re.I)
_TAGS = re.compile(r"<[^>]+>")
_FENCED_CODE = re.compile(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", re.S | re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_LINE_MARKUP = re.compile(r"^\s{0,3}(#{1,6}\s+|>+\s?|[-*+]\s+|\d+[.)]\s+)", re.M)
_RULE = re.compile(r"^\s*([-*_=]\s*){3,}$", re.M)
_EMPHASIS = re.compile(r"(\*\*|__|~~|\*|`)")
_WHITESPACE = re.compile(r"\s+")


def clean_text(title: str, body: str = "") -> str:
    """Title and body as one line of plain text: no HTML, no markdown, single spaces.

    Fenced code blocks and bare URLs are dropped (they say nothing about the question);
    link and image texts are kept without their targets.
    """
    parts = []
    for text in (title, body):
        text = _BLOCKS.sub(" ", text or "")
        text = _BREAKS.sub("\n", text)
        text = _TAGS.sub(" ", text)
        text = html.unescape(text)
        text = _FENCED_CODE.sub(" ", text)
        text = _IMAGE.sub(r"\1", text)
        text = _LINK.sub(r"\1", text)
        text = _URL.sub(" ", text)
        text = _RULE.sub(" ", text)
        text = _LINE_MARKUP.sub("", text)
        text = _EMPHASIS.sub("", text)
        text = _WHITESPACE.sub(" ", text).strip()
        if text:
            parts.append(text)
    return " ".join(parts)


def export_jsonl(engine: Engine, out_dir: str | os.PathLike[str], min_chars: int = 10,
                 max_chars: int = 512) -> dict[str, Any]:
    """Write ``legal.jsonl`` and ``nonlegal.jsonl`` under ``out_dir``; returns the counts.

    A text present under both labels is a contradiction no classifier can learn: it is
    left out of both files and counted as ``conflicts``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts: dict[int, dict[str, str]] = {1: {}, 0: {}}  # label -> text -> source (insertion ordered)
    counts: dict[str, Any] = {"read": 0, "too_short": 0, "too_long": 0, "duplicates": 0, "conflicts": 0}
    for post in store.iter_posts(engine):
        counts["read"] += 1
        label = int(post["label"])
        if label not in FILES:
            raise ValueError(f"post {post['source']}:{post['external_id']} has label {label}; expected 0 or 1")
        text = clean_text(post["title"], post["body"])
        if len(text) < min_chars:
            counts["too_short"] += 1
        elif max_chars and len(text) > max_chars:
            counts["too_long"] += 1
        elif text in texts[label]:
            counts["duplicates"] += 1
        else:
            texts[label][text] = post["source"]
    conflicts = texts[0].keys() & texts[1].keys()
    counts["conflicts"] = len(conflicts)
    for label, name in FILES.items():
        rows = [(t, s) for t, s in texts[label].items() if t not in conflicts]
        with (out / name).open("w", encoding="utf-8") as fh:
            for text, source in rows:
                fh.write(json.dumps({"text": text, "label": label, "source": source}, ensure_ascii=False) + "\n")
        counts[name.split(".")[0]] = len(rows)
    counts["out_dir"] = str(out)
    return counts
