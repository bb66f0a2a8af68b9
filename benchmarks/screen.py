"""Screening pass throughput, and whether its cost grows with the new posts or with the database.

Each row is one real ``lawclf.screen.job.run_pass`` (the function ``lawclf screen run`` calls) with
the exported model the server loads (int8 by default), against the local fake V2EX server that
serves ``--new`` new posts through its latest feed and one node's pages (V2EX's 20 a page).
Before the pass the database already holds ``--old`` posts scored by the same model version, in
the same tables (they are scored by a constant stand-in carrying that version, because the
benchmark is about what the pass does with them — nothing — not about scoring them).

    python benchmarks/screen.py                                   # runs/sample/onnx, 2000 new, 1k vs 100k old
    python benchmarks/screen.py --model runs/m3e/onnx --new 1000  # your model
    python benchmarks/screen.py --shape bert-base --new 500       # bert-base-chinese's shape, random weights

Goal (issue: screening job): at least 1,000 new posts a minute on 2 cores with the sample run's
int8 model, and the same time per new post with 1k or 100k posts already stored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import combined_model, cpu_header  # noqa: E402
from lawclf.collect import store as collect_store  # noqa: E402
from lawclf.config import ScreenConfig  # noqa: E402
from lawclf.predict import Predictor  # noqa: E402
from lawclf.sample import sample_data_dir  # noqa: E402
from lawclf.screen import job  # noqa: E402
from lawclf_dev.fake_v2ex import FakeV2EX, topics_from_texts  # noqa: E402

PER_PAGE = 20  # what V2EX's node pages hold


def sample_texts() -> list[str]:
    texts = []
    for name in ("legal.jsonl", "nonlegal.jsonl"):
        with open(sample_data_dir() / name, encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return texts


class Stored:
    """Scores old posts with a constant under the real model's version (see the module docstring)."""

    threshold = 0.5

    def __init__(self, version: str):
        self.version = version

    def predict_proba(self, texts):
        return [0.1] * len(texts)


def prefill(cfg: ScreenConfig, n_old: int, version: str, texts: list[str]) -> float:
    t0 = time.perf_counter()
    engine = job.open_db(cfg.db_url)
    rng = random.Random(0)
    for start in range(0, n_old, 5000):
        rows = [{"source": "v2ex", "external_id": f"old-{i}", "title": rng.choice(texts), "body": "", "node": "old",
                 "created": None, "label": 0} for i in range(start, min(n_old, start + 5000))]
        with engine.begin() as conn:
            collect_store.upsert_posts(conn, rows)
    job.score_new(engine, Stored(version), pass_id=0, chunk=5000, version=version)
    engine.dispose()
    return time.perf_counter() - t0


def one_row(model: Path, n_old: int, n_new: int, work: Path, predictor: Predictor) -> dict:
    texts = sample_texts()
    rng = random.Random(n_old)
    cfg = ScreenConfig(db_url=f"sqlite:///{work}/screen-{n_old}.db", model_dir=str(model), out_dir=str(work / f"out-{n_old}"),
                       nodes="qna", feeds="latest", max_pages=n_new // PER_PAGE + 2, requests_per_hour=3_600_000)
    version = job.scorer_version(predictor)
    prefill_s = prefill(cfg, n_old, version, texts)
    new_topics = topics_from_texts([rng.choice(texts) for _ in range(n_new)], first_id=10_000_000, node="qna")
    stages: dict[str, float] = {}
    last = [time.perf_counter(), ""]

    def on_stage(name: str) -> None:
        now = time.perf_counter()
        if last[1]:
            stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
        last[:] = [now, name]

    with FakeV2EX(nodes={"qna": list(reversed(new_topics))}, per_page=PER_PAGE) as fake:
        cfg = ScreenConfig(**{**cfg.__dict__, "base_url": fake.url})
        t0 = time.perf_counter()
        result = job.run_pass(cfg, predictor, on_stage=on_stage)
        seconds = time.perf_counter() - t0
    on_stage("")
    assert result["new_posts"] == n_new and result["scored"] == n_new, result
    return {"old": n_old, "new": n_new, "seconds": round(seconds, 2), "posts_per_min": round(n_new / seconds * 60),
            "stages": {k: round(v, 2) for k, v in stages.items()}, "prefill_s": round(prefill_s, 1),
            "flagged": result["flagged"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/sample/onnx", help="exported ONNX folder (int8 used when present)")
    parser.add_argument("--shape", choices=("bert-base", "tiny"), default="",
                        help="instead of --model: a random-weight model of this shape with an n-gram part, "
                             "combined as served (speed only; benchmarks/common.py)")
    parser.add_argument("--new", type=int, default=2000, help="new posts per pass")
    parser.add_argument("--old", default="1000,100000", help="comma-separated database sizes to compare")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.shape:
        args.model = str(combined_model(args.shape))
    predictor = Predictor(args.model, threads=args.threads)
    print(f"# {dt.date.today()} · {cpu_header()} · model {predictor.model_path} ({predictor.threads} ORT threads, "
          f"parts {'+'.join(predictor.parts)})")
    with tempfile.TemporaryDirectory(prefix="lawclf-screen-bench-") as tmp:
        predictor.predict_proba(sample_texts()[:64])  # warm-up
        rows = [one_row(Path(args.model), int(n), args.new, Path(tmp), predictor) for n in args.old.split(",")]
    print(f"{'posts stored':>12} {'new':>6} {'pass s':>7} {'new/min':>8}  stages (s)")
    for r in rows:
        print(f"{r['old']:>12} {r['new']:>6} {r['seconds']:>7} {r['posts_per_min']:>8}  "
              + ", ".join(f"{k} {v}" for k, v in r["stages"].items()))
    ratio = rows[-1]["seconds"] / rows[0]["seconds"]
    print(f"pass time with {rows[-1]['old']} stored / with {rows[0]['old']} stored: {ratio:.2f}x "
          f"(1.00 = the cost does not grow with the database)")
    goal = min(r["posts_per_min"] for r in rows) >= 1000
    print(f"goal >= 1000 new posts/min: {'met' if goal else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"date": str(dt.date.today()), "cpu": cpu_header(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
