"""Data stage: load, validate, normalise, de-duplicate and split (notebook 01, ``lawclf prepare``).

Input, either
  * the two-file layout: ``legal.jsonl`` (label 1) and ``nonlegal.jsonl`` (label 0), one JSON
    object a line with the text under ``text_field`` (a ``label`` there is optional and must
    agree with the file), or
  * one labelled file: JSONL, or CSV with a header row (label values 0/1, legal/non_legal,
    法律/非法律).
No path at all = the embedded sample (``data/sample``; :func:`lawclf.sample.sample_data_dir`).

Output (``<run_dir>/splits/``): ``train/validation/test.jsonl`` with rows
``{"id", "text", "label", "source"}`` (label 0 = non-legal, 1 = legal consultation),
``summary.json``, ``rejected.jsonl`` (bad lines, lenient mode), ``dropped.jsonl`` (length
filter, duplicates), ``conflicts.jsonl`` (texts seen under both labels) and two plots.
Every later stage reads the splits through :func:`load_split`.

Longer than ~400 lines on purpose: one stage, from a raw line to a split row, in the order a row
travels (read and validate, normalise, de-duplicate, hold out, group, split, write), one function a step.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from lawclf.config import (
    LABELS,
    DataConfig,
    RunPaths,
    add_config_args,
    config_from_args,
    to_dict,
)
from lawclf.metrics import source_group
from lawclf.neardup import near_duplicate_groups, near_duplicate_pairs
from lawclf.plots import plot_summary
from lawclf.sample import misfiled, sample_data_dir
from lawclf.text import dedup_key, normalise_text

SPLITS = ("train", "validation", "test")
#: The pairs of splits a leak check reports on (reported as ``"train&test"`` etc.).
SPLIT_PAIRS = tuple((a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:])
LEGAL_FILE, NONLEGAL_FILE = "legal.jsonl", "nonlegal.jsonl"
#: summary.json lists this many sources by name; the rest are summed.
MAX_SOURCES_LISTED = 30

#: Accepted spellings of the two labels (compared after strip + lower-case).
LABEL_VALUES: dict[str, int] = {
    "0": 0, "non_legal": 0, "nonlegal": 0, "non-legal": 0, "not_legal": 0, "非法律": 0, "其他": 0,
    "1": 1, "legal": 1, "法律": 1, "法律咨询": 1,
}


class DataError(ValueError):
    """Bad input data; the message starts with ``path:line:`` so an editor can jump there."""


def parse_label(value: Any) -> Optional[int]:
    """0 or 1 for an accepted label value (0/1, "0"/"1", legal/non_legal, 法律/非法律), else None."""
    if isinstance(value, bool):  # True/False would pass as 1/0 below; refuse the ambiguity
        return None
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        return LABEL_VALUES.get(value.strip().lower())
    return None


# --------------------------------------------------------------------------- loading

@dataclass
class Record:
    """One input row after validation (text not yet normalised)."""

    text: str
    label: int
    source: str
    file: str
    line: int


@dataclass
class InputFile:
    """One file to read: its format and, in the two-file layout, the label it implies."""

    path: Path
    fmt: str  # "jsonl" or "csv"
    file_label: Optional[int] = None  # None: every row carries its own label


class _Rejects:
    """Bad lines: raise at the first one (strict) or keep them with their reason (lenient)."""

    def __init__(self, lenient: bool):
        self.lenient = lenient
        self.rows: list[dict] = []
        self.by_reason: Counter[str] = Counter()

    def add(self, path: Path, line: int, reason: str, message: str, raw: str) -> None:
        if not self.lenient:
            raise DataError(f"{path}:{line}: {message}")
        self.by_reason[reason] += 1
        self.rows.append({"file": str(path), "line": line, "reason": reason, "message": message, "raw": raw})


def resolve_inputs(cfg: DataConfig) -> list[InputFile]:
    """Which files ``cfg`` points at: labelled file, explicit pair, data_dir, or the embedded sample;
    then the pairs of ``extra_data_dirs``."""
    extra = [f for d in cfg.extra_data_dirs.split(",") if d.strip() for f in _pair(Path(d.strip()))]
    if cfg.labelled_path:
        if cfg.legal_path or cfg.nonlegal_path:
            raise DataError("give either labelled_path or legal_path/nonlegal_path, not both")
        path = Path(cfg.labelled_path)
        fmt = "csv" if path.suffix.lower() in {".csv", ".tsv"} else "jsonl"
        return [InputFile(_existing(path), fmt)] + extra
    if cfg.legal_path or cfg.nonlegal_path:
        if not (cfg.legal_path and cfg.nonlegal_path):
            raise DataError("the two-file layout needs both legal_path and nonlegal_path")
        legal, nonlegal = Path(cfg.legal_path), Path(cfg.nonlegal_path)
        return [InputFile(_existing(legal), "jsonl", 1), InputFile(_existing(nonlegal), "jsonl", 0)] + extra
    return _pair(Path(cfg.data_dir) if cfg.data_dir else sample_data_dir()) + extra


def _pair(folder: Path) -> list[InputFile]:
    """The two-file layout of ``folder``: legal.jsonl (label 1) and nonlegal.jsonl (label 0)."""
    return [InputFile(_existing(folder / LEGAL_FILE), "jsonl", 1),
            InputFile(_existing(folder / NONLEGAL_FILE), "jsonl", 0)]


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def _label_of(raw_label: Any, file_label: Optional[int], label_field: str) -> tuple[Optional[int], str, str]:
    """(label, reason, message); label None means reject with reason/message."""
    if file_label is None:
        if raw_label is None:
            return None, "missing_label", f"missing label field {label_field!r}"
        label = parse_label(raw_label)
        if label is None:
            return None, "unknown_label", (f"unknown label {raw_label!r} (expected 0/1, legal/non_legal "
                                           f"or 法律/非法律)")
        return label, "", ""
    if raw_label is None:  # optional in the two-file layout: the file says which class
        return file_label, "", ""
    label = parse_label(raw_label)
    if label is None:
        return None, "unknown_label", f"unknown label {raw_label!r} (expected 0/1, legal/non_legal or 法律/非法律)"
    if label != file_label:
        return None, "label_mismatch", (f"label {raw_label!r} disagrees with the file, which holds "
                                        f"{LABELS[file_label]} texts (label {file_label})")
    return label, "", ""


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str, Any, str]]:
    """(line number, raw line, parsed object or None, JSON error message)."""
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, raw in enumerate(fh, start=1):
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                yield lineno, raw, None, ""
                continue
            try:
                yield lineno, raw, json.loads(raw), ""
            except json.JSONDecodeError as exc:
                yield lineno, raw, None, f"bad JSON ({exc.msg} at column {exc.colno})"


def read_file(inp: InputFile, cfg: DataConfig, rejects: _Rejects, blank: Counter[str]) -> list[Record]:
    """Validated records of one input file; bad lines go to ``rejects``, blank lines are counted."""
    if inp.fmt == "csv":
        return _read_csv(inp, cfg, rejects, blank)
    records = []
    for lineno, raw, obj, err in _iter_jsonl(inp.path):
        if err:
            rejects.add(inp.path, lineno, "bad_json", err, raw)
            continue
        if obj is None:
            blank[str(inp.path)] += 1
            continue
        if not isinstance(obj, dict):
            rejects.add(inp.path, lineno, "not_object", f"expected a JSON object, got {type(obj).__name__}", raw)
            continue
        record = _record(obj, inp, cfg, rejects, lineno, raw)
        if record is not None:
            records.append(record)
    return records


def _read_csv(inp: InputFile, cfg: DataConfig, rejects: _Rejects, blank: Counter[str]) -> list[Record]:
    delimiter = "\t" if inp.path.suffix.lower() == ".tsv" else ","
    records = []
    with inp.path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        columns = reader.fieldnames or []
        needed = [cfg.text_field] + ([cfg.label_field] if inp.file_label is None else [])
        missing = [c for c in needed if c not in columns]
        if missing:  # a file-level problem: no row could be read, lenient or not
            raise DataError(f"{inp.path}:1: missing column {missing[0]!r} (columns: {', '.join(columns) or 'none'})")
        for row in reader:
            # line_num is where the record ends; a quoted field may span several lines.
            start = reader.line_num - sum(v.count("\n") for v in row.values() if isinstance(v, str))
            raw = ",".join("" if v is None else str(v) for v in row.values())
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                blank[str(inp.path)] += 1
                continue
            # DictReader fills missing cells with None; an empty cell is "".
            record = _record(row, inp, cfg, rejects, start, raw)
            if record is not None:
                records.append(record)
    return records


def _record(obj: dict, inp: InputFile, cfg: DataConfig, rejects: _Rejects, lineno: int, raw: str) -> Optional[Record]:
    if cfg.text_field not in obj or obj[cfg.text_field] is None:
        keys = ", ".join(map(str, obj.keys())) or "none"
        rejects.add(inp.path, lineno, "missing_text", f"missing text field {cfg.text_field!r} (fields: {keys})", raw)
        return None
    text = obj[cfg.text_field]
    if not isinstance(text, str):
        rejects.add(inp.path, lineno, "non_string_text",
                    f"text field {cfg.text_field!r} is {type(text).__name__}, not a string", raw)
        return None
    raw_label = obj.get(cfg.label_field)
    if isinstance(raw_label, str) and not raw_label.strip() and inp.file_label is not None:
        raw_label = None  # an empty CSV cell in the two-file layout = no label given
    label, reason, message = _label_of(raw_label, inp.file_label, cfg.label_field)
    if label is None:
        rejects.add(inp.path, lineno, reason, message, raw)
        return None
    source = obj.get(cfg.source_field)
    if not isinstance(source, str) or not source.strip():
        source = inp.path.name
    return Record(text=text, label=label, source=source, file=str(inp.path), line=lineno)


# --------------------------------------------------------------------------- cleaning

def clean(records: list[Record], min_chars: int, max_chars: int) -> tuple[list[Record], list[dict], list[dict], Counter[str]]:
    """Normalise, length-filter and de-duplicate.

    Returns (kept records, dropped rows, conflict rows, counts). Within a group of texts with
    the same :func:`dedup_key` the first occurrence is kept; a group seen under both labels
    is a conflict and is excluded entirely (we cannot know which label is right).
    """
    counts: Counter[str] = Counter()
    dropped: list[dict] = []
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        rec.text = normalise_text(rec.text)
        n = len(rec.text)
        if n < min_chars or (max_chars and n > max_chars):
            reason = "too_short" if n < min_chars else "too_long"
            counts[reason] += 1
            dropped.append({**_where(rec), "reason": reason, "chars": n, "text": rec.text, "label": rec.label})
            continue
        groups[dedup_key(rec.text)].append(rec)

    kept: list[Record] = []
    conflicts: list[dict] = []
    for key, group in groups.items():
        if len({r.label for r in group}) > 1:
            counts["conflict_texts"] += 1
            counts["conflict_rows"] += len(group)
            conflicts.extend({**_where(r), "key": key, "text": r.text, "label": r.label, "source": r.source}
                             for r in group)
            continue
        first = group[0]
        kept.append(first)
        for dup in group[1:]:
            reason = "exact_duplicate" if dup.text == first.text else "near_duplicate"
            counts[reason] += 1
            dropped.append({**_where(dup), "reason": reason, "text": dup.text, "label": dup.label,
                            "duplicate_of": _where(first)})
    return kept, dropped, conflicts, counts


def _where(rec: Record) -> dict:
    return {"file": rec.file, "line": rec.line}


def cap_per_class(records: list[Record], max_per_class: int, seed: int) -> tuple[list[Record], Counter[int]]:
    """At most ``max_per_class`` records per label (a seeded random subset); counts what was left out."""
    if max_per_class <= 0:
        return records, Counter()
    rng = random.Random(seed)
    by_label: dict[int, list[Record]] = defaultdict(list)
    for rec in records:
        by_label[rec.label].append(rec)
    out: list[Record] = []
    left_out: Counter[int] = Counter()
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) > max_per_class:
            left_out[label] = len(group) - max_per_class
            group = rng.sample(group, max_per_class)
        out.extend(group)
    return out, left_out


def stratified_split(records: list[Record], val_fraction: float, test_fraction: float,
                     seed: int, groups: Optional[Sequence[int]] = None) -> dict[str, list[Record]]:
    """Split each label separately with the same fractions, so every split keeps the class balance.

    Run it on de-duplicated records: then each text is one record and can land in one split only.
    ``groups`` (a group id per record, e.g. from :func:`lawclf.neardup.near_duplicate_groups`) keeps
    the members of a group together: a group goes whole to the split its turn falls in, and counts
    under its first member's label. Without groups every record is its own group (the same split
    as before groups existed, for the same seed).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
                        "and sum to less than 1")
    if groups is None:
        groups = range(len(records))
    elif len(groups) != len(records):
        raise ValueError(f"groups has {len(groups)} ids for {len(records)} records")
    members: dict[int, list[Record]] = defaultdict(list)
    for rec, gid in zip(records, groups):
        members[gid].append(rec)
    rng = random.Random(seed)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for label in sorted({r.label for r in records}):
        units = [m for m in members.values() if m[0].label == label]
        rng.shuffle(units)
        size = sum(len(m) for m in units)
        n_test = round(size * test_fraction)
        n_val = round(size * val_fraction)
        taken = 0
        for unit in units:  # fill test, then validation, then train, a whole group at a time
            split = "test" if taken < n_test else "validation" if taken < n_test + n_val else "train"
            out[split].extend(unit)
            taken += len(unit)
    for rows in out.values():
        rng.shuffle(rows)  # mix the labels within each split
    return out


def split_holdout(records: list[Record], holdout_sources: str) -> tuple[list[Record], list[Record]]:
    """``(kept, held_out)``: records whose source group contains one of the comma-separated
    names are held out (they go to the test split only). An unknown name is an error."""
    names = [n.strip() for n in holdout_sources.split(",") if n.strip()]
    if not names:
        return records, []
    groups = [source_group(r.source) for r in records]
    for name in names:
        if not any(name in g for g in groups):
            raise DataError(f"holdout_sources: {name!r} matches no source group; groups: {sorted(set(groups))}")
    held = [any(n in g for n in names) for g in groups]
    return [r for r, h in zip(records, held) if not h], [r for r, h in zip(records, held) if h]


def row_id(text: str) -> str:
    """Stable id of a text: the same text gets the same id in every run."""
    return hashlib.sha1(dedup_key(text).encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- reporting

def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Count, mean and percentiles (5/25/50/75/95/99) of text lengths in characters."""
    if not lengths:
        return {"count": 0}
    xs = sorted(lengths)

    def pct(p: float) -> int:
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    return {"count": len(xs), "mean": round(sum(xs) / len(xs), 1), "min": xs[0],
            **{f"p{p}": pct(p) for p in (5, 25, 50, 75, 95, 99)}, "max": xs[-1]}


def per_source_counts(loaded: Counter[str], kept: Counter[str], top: int = MAX_SOURCES_LISTED) -> dict[str, dict]:
    """Rows loaded and kept per source: the ``top`` largest sources by name, the rest summed
    under ``(other N sources)`` (a corpus may name one source per original file)."""
    ranked = sorted(loaded, key=lambda src: (-loaded[src], src))
    out = {src: {"loaded": loaded[src], "kept": kept[src]} for src in sorted(ranked[:top])}
    rest = ranked[top:]
    if rest:
        out[f"(other {len(rest)} sources)"] = {"loaded": sum(loaded[s] for s in rest), "kept": sum(kept[s] for s in rest)}
    return out


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """All rows of a JSONL file this stage wrote (rejected/dropped/conflicts, splits)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- the stage

def prepare(cfg: DataConfig, plots: bool = True) -> dict:
    """Load → validate → normalise → length filter → de-duplicate → (cap) → split → write.

    Returns the summary also written to ``splits/summary.json``. Raises :class:`DataError`
    (``path:line: reason``) at the first bad line unless ``cfg.lenient``.
    """
    t0 = time.perf_counter()
    if cfg.min_chars < 0 or (cfg.max_chars and cfg.max_chars < cfg.min_chars):
        raise DataError(f"min_chars ({cfg.min_chars}) / max_chars ({cfg.max_chars}) make an empty range")
    inputs = resolve_inputs(cfg)
    rejects = _Rejects(cfg.lenient)
    blank: Counter[str] = Counter()
    records: list[Record] = []
    per_file = []
    for inp in inputs:
        rows = read_file(inp, cfg, rejects, blank)
        per_file.append({"path": str(inp.path), "format": inp.fmt,
                         "label": None if inp.file_label is None else inp.file_label, "valid_rows": len(rows),
                         "blank_lines": blank[str(inp.path)]})
        records.extend(rows)
    loaded_per_label = Counter(r.label for r in records)
    loaded_per_source = Counter(r.source for r in records)

    kept, dropped, conflicts, counts = clean(records, cfg.min_chars, cfg.max_chars)
    kept, left_out = cap_per_class(kept, cfg.max_per_class, cfg.seed)
    if len({r.label for r in kept}) < 2:
        raise DataError("after cleaning, only one class is left "
                        f"({dict(Counter(LABELS[r.label] for r in kept))}): a classifier needs both")
    kept, held_out = split_holdout(kept, cfg.holdout_sources)
    if cfg.holdout_max_rows and len(held_out) > cfg.holdout_max_rows:
        held_out = random.Random(cfg.seed).sample(held_out, cfg.holdout_max_rows)
    groups = (near_duplicate_groups([r.text for r in kept], cfg.near_duplicate_overlap)
              if cfg.near_duplicate_overlap > 0 else None)
    splits = stratified_split(kept, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups)
    splits["test"].extend(held_out)
    group_sizes = Counter(groups or ())

    paths = RunPaths(cfg.run_dir)
    out = paths.splits
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        _write_jsonl(paths.split_file(split),
                     [{"id": row_id(r.text), "text": r.text, "label": r.label, "source": r.source} for r in rows])
    _write_jsonl(out / "rejected.jsonl", rejects.rows)
    _write_jsonl(out / "dropped.jsonl", dropped)
    _write_jsonl(out / "conflicts.jsonl", conflicts)

    kept_rows = [r for s in SPLITS for r in splits[s]]
    summary: dict[str, Any] = {
        "config": to_dict(cfg),
        "inputs": per_file,
        "counts": {
            "rows_read": len(records) + len(rejects.rows),
            "rejected": len(rejects.rows),
            "blank_lines": sum(blank.values()),
            "loaded": len(records),
            "too_short": counts["too_short"],
            "too_long": counts["too_long"],
            "exact_duplicates": counts["exact_duplicate"],
            "near_duplicates": counts["near_duplicate"],
            "conflict_texts": counts["conflict_texts"],
            "conflict_rows": counts["conflict_rows"],
            "capped": sum(left_out.values()),
            "kept": len(kept_rows),
        },
        # Near-duplicate groups (trigram overlap >= near_duplicate_overlap), each kept in one split.
        "near_duplicate_groups": {"groups": sum(1 for n in group_sizes.values() if n > 1),
                                  "rows": sum(n for n in group_sizes.values() if n > 1),
                                  "largest": max(group_sizes.values(), default=0)},
        "rejected_by_reason": dict(sorted(rejects.by_reason.items())),
        "per_label": {
            "loaded": {LABELS[k]: loaded_per_label[k] for k in (0, 1)},
            "kept": {LABELS[k]: sum(r.label == k for r in kept_rows) for k in (0, 1)},
            "capped": {LABELS[k]: left_out[k] for k in (0, 1)},
        },
        "per_source": per_source_counts(loaded_per_source, Counter(r.source for r in kept_rows)),
        "splits": {s: {"total": len(splits[s]), **{LABELS[k]: sum(r.label == k for r in splits[s]) for k in (0, 1)}}
                   for s in SPLITS},
        "length": {LABELS[k]: length_stats([len(r.text) for r in kept_rows if r.label == k]) for k in (0, 1)},
        "files": {"splits": {s: str(paths.split_file(s)) for s in SPLITS},
                  "rejected": str(out / "rejected.jsonl"), "dropped": str(out / "dropped.jsonl"),
                  "conflicts": str(out / "conflicts.jsonl"), "summary": str(out / "summary.json")},
    }
    if plots:
        summary["files"]["plots"] = plot_summary(splits, out)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    return summary


def load_split(run_dir: str | os.PathLike[str], split: str) -> list[dict]:
    """Rows of one split (``train``, ``validation`` or ``test``) written by :func:`prepare`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = RunPaths(run_dir).split_file(split)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the data stage first (notebook 01 or `lawclf prepare`)")
    return read_jsonl(path)


def load_summary(run_dir: str | os.PathLike[str]) -> dict:
    """The ``splits/summary.json`` written by :func:`prepare`."""
    return json.loads((RunPaths(run_dir).splits / "summary.json").read_text(encoding="utf-8"))


def known_misfiled(run_dir: str | os.PathLike[str]) -> dict[str, int]:
    """``{dedup key: true label}`` of the sample's misfiled rows (:func:`lawclf.sample.misfiled`) when
    ``run_dir`` was prepared from the embedded sample with its default seed, else ``{}`` (for your own
    data nobody knows the answer in advance)."""
    cfg = load_summary(run_dir).get("config", {})
    if any(cfg.get(k) for k in ("data_dir", "legal_path", "nonlegal_path", "labelled_path")):
        return {}
    return {dedup_key(m["text"]): m["true_label"] for m in misfiled()}


def split_near_duplicates(run_dir: str | os.PathLike[str], overlap: float = 0.8,
                          examples: int = 5) -> dict[str, Any]:
    """Pairs of texts in two different splits whose trigram overlap is ``>= overlap``, per pair of
    splits, with the closest ``examples``: what a near-twin leak between splits would look like
    (zeros when ``prepare`` grouped near-duplicates at this overlap; held-out test rows are included)."""
    rows = [(s, r["text"]) for s in SPLITS for r in load_split(run_dir, s)]
    pairs = [(score, rows[a], rows[b]) for a, b, score in near_duplicate_pairs([t for _, t in rows], overlap)
             if rows[a][0] != rows[b][0]]
    counts = Counter(tuple(sorted((x[0], y[0]), key=SPLITS.index)) for _, x, y in pairs)
    return {"overlap": overlap,
            "pairs": {f"{a}&{b}": counts[(a, b)] for a, b in SPLIT_PAIRS},
            "examples": [{"overlap": round(score, 3), x[0]: x[1], y[0]: y[1]}
                         for score, x, y in sorted(pairs, key=lambda p: -p[0])[:examples]]}


def split_overlap(run_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Texts shared between two splits (by :func:`dedup_key`), per pair; all zeros = no leakage."""
    keys = {s: {dedup_key(r["text"]) for r in load_split(run_dir, s)} for s in SPLITS}
    return {f"{a}&{b}": len(keys[a] & keys[b]) for a, b in SPLIT_PAIRS}


def cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lawclf prepare",
        description="Load, validate, normalise, de-duplicate and split the data (no path = the embedded sample).")
    add_config_args(parser, DataConfig)
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    args = parser.parse_args(argv)
    cfg = config_from_args(DataConfig, args)
    try:
        summary = prepare(cfg, plots=args.plots)
    except DataError as exc:
        print(f"lawclf prepare: error: {exc}", file=sys.stderr)
        return 2
    c = summary["counts"]
    print(f"read {c['rows_read']} rows: {c['rejected']} rejected, {c['too_short'] + c['too_long']} outside "
          f"[{cfg.min_chars}, {cfg.max_chars}] chars, {c['exact_duplicates'] + c['near_duplicates']} duplicates, "
          f"{c['conflict_rows']} in label conflicts, {c['capped']} over the per-class cap; kept {c['kept']}")
    for split, s in summary["splits"].items():
        print(f"  {split:<10} {s['total']:>7}  (legal {s['legal']}, non_legal {s['non_legal']})")
    print(f"wrote {RunPaths(cfg.run_dir).splits}/ in {summary['seconds']}s")
    if c["rejected"]:
        print(f"rejected lines: {summary['files']['rejected']} {summary['rejected_by_reason']}")
    return 0


__all__ = ["SPLITS", "DataError", "Record", "InputFile", "normalise_text", "dedup_key", "parse_label",
           "resolve_inputs", "read_file", "clean", "cap_per_class", "stratified_split", "row_id", "length_stats",
           "per_source_counts", "read_jsonl", "prepare", "load_split", "load_summary", "split_overlap",
           "split_near_duplicates", "known_misfiled", "cli"]
