"""Build a more varied research pool from public GitHub snapshots, outside the repository.

    python benchmarks/build_pool.py --mirror-dir ../.mirror --out ~/.cache/lawclf/pool

The shared corpus has eight non-legal genres; real forums have hundreds. This script turns
snapshots of public repositories (brought onto the machine with the tool library's ``fetch``,
one git directory per repository under ``--mirror-dir``) into the project's two-file layout
(``legal.jsonl`` / ``nonlegal.jsonl``, one ``{"text", "label", "source"}`` a line) plus
``manifest.json``: repository, files, commit, licence, genre, rows read and kept, and the
checks each file went through. ``benchmarks/quality.py --pool-dir`` (or ``LAWCLF_POOL_DIR``)
reads it beside the shared corpus and prints the manifest's totals.

Rules it keeps (issue 14):

* the pool is written to ``--out`` (default ``$LAWCLF_POOL_DIR`` or ``~/.cache/lawclf/pool``),
  never into the repository; every licence here is research-only or unstated, so the pool is
  research-only too;
* the data sets reserved for acceptance checks are refused by name (:data:`REFUSED_REPOS`),
  and so is every file whose texts overlap the shared corpus by more than
  ``--max-shared-overlap`` (a copy of LCQMC, BQ, ATEC, a review set …: many repositories carry
  one); single overlapping rows are dropped. The check and its figures go in the manifest;
* a source missing from ``--mirror-dir`` is reported and skipped, never fatal.

Which files are used, and how each is read, is the table :data:`SOURCES`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from lawclf.metrics import source_group
from lawclf.text import dedup_key, normalise_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = os.environ.get("LAWCLF_MIRROR_DIR", str(REPO_ROOT.parent / ".mirror"))
DEFAULT_POOL = os.environ.get("LAWCLF_POOL_DIR", str(Path.home() / ".cache" / "lawclf" / "pool"))
DEFAULT_SHARED = os.environ.get("LAWCLF_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))
MIN_CHARS, MAX_CHARS = 5, 512

#: Data sets that hold rows reserved for acceptance checks: never read, from any repository.
REFUSED_REPOS = {
    "Toyhom/Chinese-medical-dialogue-data", "siatnlp/LegalQA", "FudanDISC/DISC-LawLLM", "thu-coai/PsyQA",
    "liuhuanyong/CrimeKgAssitant", "open-compass/LawBench",
}
#: Data sets the shared corpus already samples: no further rows of them, whoever carries a copy.
#: (afqmc is ATEC under its CLUE name.) A file whose path names one of these is refused.
REFUSED_DATASETS = ("lcqmc", "bq_corpus", "atec", "afqmc", "chnsenticorp", "waimai_10k", "online_shopping_10_cats",
                    "smile", "psyqa", "v2ex")


# --------------------------------------------------------------------------- readers: bytes -> texts


def jsonl_fields(*fields: str) -> Callable[[bytes], Iterator[str]]:
    """Every non-empty ``field`` of every JSON line."""
    def read(raw: bytes) -> Iterator[str]:
        for line in raw.decode("utf-8").split("\n"):  # not splitlines(): texts hold U+2028
            if line.strip():
                obj = json.loads(line)
                for f in fields:
                    if obj.get(f):
                        yield str(obj[f])
    return read


_OPTION = re.compile(r"^\s*[A-D][.．、]")


EXAM_MIN_CHARS = 30


def exam_stems(raw: bytes) -> Iterator[str]:
    """lawyer-llama's bar-exam questions: the question stem, without 'Question:' and the A–D options.

    Only stems of at least :data:`EXAM_MIN_CHARS` characters: those describe a case (甲与乙签订…
    应如何认定?), which is what a person asking a lawyer writes; a bare "关于缓刑，下列说法正确的是"
    is an exam formula, not a consultation."""
    for item in json.loads(raw.decode("utf-8")):
        lines = [ln for ln in str(item.get("input", "")).splitlines() if ln.strip() and not _OPTION.match(ln)]
        stem = re.sub(r"^\s*Question:\s*", "", " ".join(lines))
        if len(stem) >= EXAM_MIN_CHARS:
            yield stem


def cmrc_questions(raw: bytes) -> Iterator[str]:
    """CMRC 2018 reading-comprehension questions (about Wikipedia passages)."""
    for doc in json.loads(raw.decode("utf-8")):
        for qa in doc.get("qas", []):
            yield str(qa.get("query_text", ""))


def kdconv_user_turns(raw: bytes) -> Iterator[str]:
    """KdConv: the turns of the side that opens each conversation (even turns), mostly questions."""
    for dialogue in json.loads(raw.decode("utf-8")):
        for i, msg in enumerate(dialogue.get("messages", [])):
            if i % 2 == 0:
                yield str(msg.get("message", ""))


def covid_consultations(raw: bytes) -> Iterator[str]:
    """COVID-Dialogue (haodf.com): each patient's written consultation — the 病情描述 and
    希望获得的帮助 lines of its Description block (the doctor's replies are not used)."""
    for block in raw.decode("utf-8").split("\nid="):
        desc = block.split("Description", 1)[-1].split("Dialogue", 1)[0]
        parts = []
        for line in desc.splitlines():
            for key in ("病情描述", "希望获得的帮助"):
                if line.strip().startswith(key):
                    parts.append(line.split("：", 1)[-1].split(":", 1)[-1].strip())
        text = " ".join(p for p in parts if p)
        if text:
            yield text


@dataclass(frozen=True)
class Source:
    repo: str
    paths: tuple[str, ...]
    label: int
    genre: str
    licence: str
    read: Callable[[bytes], Iterable[str]]
    cap: int = 5000


CLUE = "none stated in the repository (CLUE benchmark data, research use)"
#: What the pool is made of. Each row's ``source`` is ``owner/repo:path@commit`` (see
#: :func:`lawclf.metrics.source_group`: one group per data set, for leave-one-out).
SOURCES: tuple[Source, ...] = (
    Source("CLUEbenchmark/FewCLUE", ("datasets/tnews/unlabeled.json",), 0, "news headlines (Toutiao, TNEWS)",
           CLUE, jsonl_fields("sentence")),
    Source("CLUEbenchmark/FewCLUE", ("datasets/bustm/unlabeled.json",), 0,
           "voice-assistant chat utterances (OPPO Xiaobu, BUSTM)", CLUE, jsonl_fields("sentence1", "sentence2")),
    Source("CLUEbenchmark/FewCLUE", ("datasets/iflytek/test_public.json",), 0, "app descriptions (IFLYTEK)",
           CLUE, jsonl_fields("sentence")),
    Source("CLUEbenchmark/FewCLUE", ("datasets/ocnli/test_public.json",), 0,
           "everyday sentences of five genres: phone talk, fiction, news, government, TV (OCNLI)",
           CLUE, jsonl_fields("sentence1", "sentence2")),
    Source("CLUEbenchmark/DataCLUE", ("datasets/cic/test_public.json",), 0,
           "e-commerce customer-service questions (CIC)", CLUE, jsonl_fields("sentence")),
    Source("ymcui/cmrc2018", ("data/cmrc2018_dev.json",), 0, "knowledge questions about Wikipedia passages",
           "CC BY-SA 4.0", cmrc_questions),
    Source("UCSD-AI4H/COVID-Dialogue", ("COVID-Dialogue-Dataset-Chinese.txt",), 0,
           "patients' written medical consultations (haodf.com)", "none stated (research data set)",
           covid_consultations),
    Source("thu-coai/KdConv", ("data/travel/dev.json", "data/travel/test.json"), 0,
           "travel chat: questions about places", "Apache-2.0", kdconv_user_turns),
    Source("AndrewZhe/lawyer-llama", ("data/fakao_gpt4.json",), 1,
           "legal case questions (bar-exam case descriptions)", "Apache-2.0 repo; README: academic research only",
           exam_stems),
)


# --------------------------------------------------------------------------- snapshots


def git_dir(mirror: Path, repo: str) -> Optional[Path]:
    """The git directory of ``repo``'s snapshot under ``mirror`` (``owner+name/repo[/.git]``)."""
    base = mirror / repo.replace("/", "+") / "repo"
    for candidate in (base / ".git", base):
        if (candidate / "HEAD").exists():
            return candidate
    return None


def git(gdir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={gdir}", *args], check=True, capture_output=True).stdout


# --------------------------------------------------------------------------- building


def clean_text(text: str) -> str:
    """What the shared corpus did: NFKC (``normalise_text``) and whitespace collapsed."""
    return re.sub(r"\s+", " ", normalise_text(text)).strip()


def shared_keys(shared_dir: Path) -> set[str]:
    """``dedup_key`` of every text of the shared corpus (to find copies of it)."""
    keys: set[str] = set()
    for name in ("legal.jsonl", "nonlegal.jsonl"):
        path = shared_dir / name
        if path.exists():
            with path.open(encoding="utf-8") as fh:
                keys.update(dedup_key(json.loads(line)["text"]) for line in fh if line.strip())
    return keys


def build(sources: Sequence[Source], mirror: Path, out: Path, shared: set[str], max_shared_overlap: float,
          seed: int) -> dict:
    """Write ``legal.jsonl``, ``nonlegal.jsonl`` and ``manifest.json`` to ``out``; return the manifest."""
    seen: set[str] = set(shared)
    rows: dict[int, list[dict]] = {0: [], 1: []}
    entries = []
    for src in sources:
        entry: dict = {"repo": src.repo, "files": list(src.paths), "genre": src.genre, "licence": src.licence,
                       "side": "legal" if src.label else "non-legal", "cap": src.cap}
        entries.append(entry)
        if src.repo in REFUSED_REPOS or any(d in (src.repo + "/" + p).lower() for p in src.paths
                                            for d in REFUSED_DATASETS):
            entry.update(status="refused: reserved or already sampled data set", rows_kept=0)
            continue
        gdir = git_dir(mirror, src.repo)
        if gdir is None:
            entry.update(status=f"missing: no snapshot under {mirror} (fetch github:{src.repo})", rows_kept=0)
            continue
        commit = git(gdir, "rev-parse", "HEAD").decode().strip()
        entry["commit"] = commit
        texts: list[tuple[str, str]] = []
        for path in src.paths:
            raw = git(gdir, "show", f"HEAD:{path}")
            texts += [(clean_text(t), f"{src.repo}:{path}@{commit}") for t in src.read(raw)]
        read = len(texts)
        in_range = [(t, s) for t, s in texts if MIN_CHARS <= len(t) <= MAX_CHARS]
        keys = [dedup_key(t) for t, _ in in_range]
        overlap = sum(k in shared for k in keys)
        entry["checks"] = {"rows_read": read, "outside_length_range": read - len(in_range),
                           "overlap_with_shared_corpus": overlap,
                           "overlap_fraction": round(overlap / max(len(in_range), 1), 4),
                           "max_shared_overlap": max_shared_overlap}
        if overlap / max(len(in_range), 1) > max_shared_overlap:
            entry.update(status="refused: overlaps the shared corpus (a copy of a data set it samples)", rows_kept=0)
            continue
        unique: list[dict] = []
        duplicates = 0
        for (text, source), key in zip(in_range, keys):
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            unique.append({"text": text, "label": src.label, "source": source})
        entry["checks"]["duplicates_dropped"] = duplicates
        if src.cap and len(unique) > src.cap:
            unique = random.Random(seed).sample(unique, src.cap)
        rows[src.label].extend(unique)
        entry.update(status="used", rows_kept=len(unique), group=source_group(unique[0]["source"]) if unique else "")
    out.mkdir(parents=True, exist_ok=True)
    for label, name in ((1, "legal.jsonl"), (0, "nonlegal.jsonl")):
        with (out / name).open("w", encoding="utf-8") as fh:
            for r in rows[label]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    manifest = {
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rules": "research use only; never copied into the lawclf repository",
        "totals": {"legal": len(rows[1]), "non-legal": len(rows[0]),
                   "sources_used": sum(e["status"] == "used" for e in entries), "sources_listed": len(entries)},
        "sources": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return manifest


def print_manifest(manifest: dict, file=sys.stdout) -> None:
    t = manifest["totals"]
    print(f"pool built {manifest['built']}: {t['legal']:,} legal + {t['non-legal']:,} non-legal rows from "
          f"{t['sources_used']} of {t['sources_listed']} sources ({manifest['rules']})", file=file)
    for e in manifest["sources"]:
        checks = e.get("checks", {})
        print(f"  {e['side']:<9} {e.get('rows_kept', 0):>6,}  {e['repo']}:{','.join(e['files'])}"
              f"@{e.get('commit', '?')[:12]}  [{e['licence']}]  {e['status']}; shared-corpus overlap "
              f"{checks.get('overlap_with_shared_corpus', '–')}, duplicates {checks.get('duplicates_dropped', '–')}",
              file=file)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mirror-dir", default=DEFAULT_MIRROR, help="folder of fetched snapshots (owner+name/repo)")
    p.add_argument("--out", default=DEFAULT_POOL, help="where the pool is written (outside the repository)")
    p.add_argument("--shared-dir", default=DEFAULT_SHARED, help="the shared corpus, to refuse copies of it")
    p.add_argument("--max-shared-overlap", type=float, default=0.01,
                   help="refuse a file when more than this fraction of its texts is in the shared corpus")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    if REPO_ROOT in (out, *out.parents):
        raise SystemExit(f"--out {out} is inside the repository: the pool must stay outside it")
    manifest = build(SOURCES, Path(args.mirror_dir), out, shared_keys(Path(args.shared_dir)),
                     args.max_shared_overlap, args.seed)
    print_manifest(manifest)
    print(f"wrote {out}/legal.jsonl, nonlegal.jsonl, manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
