"""The embedded sample data set: ``data/sample/legal.jsonl`` and ``data/sample/nonlegal.jsonl``.

Every text here was written for this project (hand-written sentence templates and slot
fillers in ``resources/sample_templates.json``, combined with a fixed seed), so the sample
can ship under the project's own licence. It is the default data of every command when no
data path is given (:func:`sample_data_dir`).

The non-legal side deliberately contains many everyday questions that use words frequent
in legal questions (借钱, 我想咨询下, 怎么办, 请问, 合同 ...): a model that learns
"mentions money / is a question" instead of "is a legal matter" fails on them. The
packaged probe questions (``resources/probes.jsonl``) are kept out of the sample, so they
stay an out-of-sample check.

    lawclf sample                 # rewrite data/sample/*.jsonl (byte-identical for a seed)
    lawclf sample --out-dir /tmp/sample --seed 7
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from lawclf import __version__
from lawclf.probes import load_probes
from lawclf.text import dedup_key

SAMPLE_SEED = 20240601

#: The templates and slot fillers, a package resource (``resources/sample_templates.json``).
TEMPLATES_RESOURCE = "sample_templates.json"


@dataclass(frozen=True)
class Genre:
    """One kind of text: its source name, label, how many rows, templates and own slots."""

    source: str
    label: int
    count: int
    templates: tuple[str, ...]
    slots: Optional[dict[str, list[str]]] = None


def _load_templates() -> tuple[dict[str, list[str]], tuple[Genre, ...]]:
    data = json.loads(resources.files("lawclf.resources").joinpath(TEMPLATES_RESOURCE).read_text(encoding="utf-8"))
    genres = tuple(Genre(g["source"], g["label"], g["count"],
                         tuple(t for group in g["templates"] for t in group["templates"]), g.get("slots"))
                   for g in data["genres"])
    return data["slots"], genres


#: Shared slot fillers (a template names them as ``{slot}``) and the genres, in generation order.
SLOTS, GENRES = _load_templates()


def genre(source: str) -> Genre:
    """The genre whose rows carry ``source`` (e.g. ``sample/legal-plain-words``)."""
    for g in GENRES:
        if g.source == source:
            return g
    raise KeyError(f"no sample genre {source!r}; genres: {[g.source for g in GENRES]}")


#: Rows filed under the wrong label, as real collections have them (a legal question in the non-legal
#: dump and the other way round). Their source is that of the file they landed in.
MISFILED_PER_FILE = 10
#: Deliberate duplicates: the same post again with other spacing (an exact duplicate after
#: normalisation) or other punctuation (a near duplicate), which notebook 01 finds and drops.
EXACT_DUPLICATES = 4
NEAR_DUPLICATES = 4

_SLOT = re.compile(r"\{([^{}]+)\}")


def _fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    return _SLOT.sub(lambda m: rng.choice(slots[m.group(1)]), template)


def _variants(template: str, slots: dict[str, list[str]]) -> int:
    """How many distinct fillings a template has (caps how often it is tried)."""
    n = 1
    for name in _SLOT.findall(template):
        n *= len(slots[name])
    return n


def generate_genre(genre: Genre, rng: random.Random, exclude: set[str]) -> list[dict]:
    """``genre.count`` distinct rows; texts whose de-duplication key is in ``exclude`` are skipped
    (and the accepted keys are added to it, so genres never share a text)."""
    slots = {**SLOTS, **(genre.slots or {})}
    rows: list[dict] = []
    # Round-robin over templates so every template is used before any repeats. A template
    # retires once all its fillings are used or it keeps colliding with texts already taken.
    left = {t: _variants(t, slots) for t in genre.templates}
    misses = dict.fromkeys(genre.templates, 0)
    while len(rows) < genre.count:
        live = [t for t in genre.templates if left[t] > 0 and misses[t] < 30]
        if not live:
            raise RuntimeError(f"{genre.source}: templates yield only {len(rows)} of {genre.count} distinct texts")
        for template in live:
            text = _fill(template, slots, rng).strip("，, ")
            key = dedup_key(text)
            if key in exclude:
                misses[template] += 1
                continue
            exclude.add(key)
            left[template] -= 1
            misses[template] = 0
            rows.append({"text": text, "label": genre.label, "source": genre.source})
            if len(rows) == genre.count:
                break
    return rows


def generate(seed: int = SAMPLE_SEED) -> dict[str, list[dict]]:
    """All sample rows, keyed by file (``legal`` / ``nonlegal``), shuffled with ``seed``: the genres,
    then :data:`MISFILED_PER_FILE` rows moved to the other file and the deliberate duplicates."""
    return _generate(seed)[0]


def misfiled(seed: int = SAMPLE_SEED) -> list[dict]:
    """The rows :func:`generate` filed under the wrong label: ``{"text", "label" (as filed), "true_label"}``.
    The answer key notebook 04 uses to tell a model's mistake from a label's."""
    return _generate(seed)[1]


def _generate(seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    rng = random.Random(seed)
    exclude = {dedup_key(p["text"]) for p in load_probes()}
    out: dict[str, list[dict]] = {"legal": [], "nonlegal": []}
    for genre in GENRES:
        out["legal" if genre.label == 1 else "nonlegal"].extend(generate_genre(genre, rng, exclude))
    for rows in out.values():
        rng.shuffle(rows)
    moved: dict[str, list[dict]] = {}
    for name, other in (("legal", "nonlegal"), ("nonlegal", "legal")):
        landing_source = out[other][0]["source"]  # the source of the file the row lands in
        moved[other] = [{"text": r["text"], "label": 1 - r["label"], "source": landing_source}
                        for r in out[name][:MISFILED_PER_FILE]]
        out[name] = out[name][MISFILED_PER_FILE:]
    key = [{"text": r["text"], "label": r["label"], "true_label": 1 - r["label"]} for rows in moved.values() for r in rows]
    for name, rows in moved.items():
        out[name].extend(rows)
    for rows in out.values():
        # the half-width forms of ，？ are the same text after NFKC: an exact duplicate once normalised;
        # other end punctuation is a near duplicate (the same de-duplication key, another text)
        punctuated = [r for r in rows[:60] if "，" in r["text"] or "？" in r["text"]]
        for i, row in enumerate(punctuated[:(EXACT_DUPLICATES + NEAR_DUPLICATES) // 2]):
            text = row["text"]
            copy = (text.replace("，", ",").replace("？", "?") if i % 2 == 0
                    else text.rstrip("？?！!。，, ") + "！")
            rows.append({**row, "text": copy})
        rng.shuffle(rows)
    return out, key


#: A small labelled file with one line of each kind the data stage rejects, drops or excludes
#: (``dirty.jsonl``): notebook 01 reads it in lenient mode to show every rejection on screen.
DIRTY_LINES: tuple[str, ...] = (
    '{"text": "公司拖欠了我两个月工资，可以去劳动仲裁吗？", "label": 1}',
    '{"text": "周末想去爬山，北京周边有什么推荐？", "label": 0}',
    '{"text": "房东不退押金，我该怎么要回来", "label": 1',                     # cut off: bad JSON
    '["一行", "不是对象"]',                                                 # a list, not an object
    '{"content": "字段名写成了 content", "label": 0}',                        # no "text" field
    '{"text": 20240601, "label": 0}',                                       # text is a number
    '{"text": "标签写成了一个看不懂的词", "label": "maybe"}',                   # unknown label
    '{"text": "老板说试用期不用签劳动合同，对吗？"}',                            # no label in a labelled file
    '',                                                                     # a blank line: counted, not an error
    '{"text": "太短", "label": 0}',                                          # under min_chars
    '{"text": "' + "很长的一段话，" * 80 + '", "label": 0}',                  # over max_chars
    '{"text": "公司拖欠了我两个月工资，可以去劳动仲裁吗？", "label": 1}',          # exact duplicate of line 1
    '{"text": "公司拖欠了我两个月工资 可以去劳动仲裁吗!!", "label": 1}',          # near duplicate of line 1
    '{"text": "朋友借了我五千块钱不还，我能怎么办？", "label": 1}',               # the same text under both labels:
    '{"text": "朋友借了我五千块钱不还，我能怎么办？", "label": 0}',               # a conflict, both excluded
    '{"text": "大家平时用什么记账软件？", "label": 0}',
)


#: ``data/sample`` of the checkout the package runs from (an editable install), if it is one.
CHECKOUT_SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"


def sample_data_dir() -> Path:
    """The folder the embedded sample is read from when no data path is given.

    Run from a checkout, that is its ``data/sample``: the committed files, which readers open and
    ``lawclf sample`` rewrites. An installed wheel has no checkout, so the same files are written once,
    from the packaged templates, into ``$LAWCLF_CACHE_DIR`` (default ``~/.cache/lawclf``), in a folder
    named after the templates' hash, the version and the seed (a changed template gets a new folder).
    """
    if (CHECKOUT_SAMPLE_DIR / "legal.jsonl").is_file():
        return CHECKOUT_SAMPLE_DIR
    templates = resources.files("lawclf.resources").joinpath(TEMPLATES_RESOURCE).read_bytes()
    digest = hashlib.sha256(templates).hexdigest()[:12]
    cache = Path(os.environ.get("LAWCLF_CACHE_DIR") or Path.home() / ".cache" / "lawclf")
    target = cache / f"sample-{__version__}-{SAMPLE_SEED}-{digest}"
    if not (target / "legal.jsonl").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed into place: a second process never reads a half-written sample.
        scratch = Path(tempfile.mkdtemp(prefix=".sample-", dir=cache))
        write_sample(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process won the race: its copy is the same bytes
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def write_sample(out_dir: str | os.PathLike[str], seed: int = SAMPLE_SEED) -> dict[str, Path]:
    """Write ``legal.jsonl``, ``nonlegal.jsonl`` and the teaching file ``dirty.jsonl`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in generate(seed).items():
        path = out / f"{name}.jsonl"
        # newline="\n" keeps the files byte-identical on every platform.
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths[name] = path
    paths["dirty"] = out / "dirty.jsonl"
    paths["dirty"].write_text("\n".join(DIRTY_LINES) + "\n", encoding="utf-8", newline="\n")
    return paths


def cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lawclf sample", description="Write the embedded sample data set.")
    # In a checkout its data/sample; installed from a wheel, data/sample under the current folder.
    default_out = CHECKOUT_SAMPLE_DIR if CHECKOUT_SAMPLE_DIR.parent.is_dir() else Path("data") / "sample"
    parser.add_argument("--out-dir", default=str(default_out), help="(default: data/sample in the checkout)")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help=f"(default: {SAMPLE_SEED})")
    args = parser.parse_args(argv)
    for name, path in write_sample(args.out_dir, args.seed).items():
        n = sum(1 for _ in path.open(encoding="utf-8"))
        print(f"{path}: {n} rows ({name})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli())
