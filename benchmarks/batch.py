"""Batch scoring throughput: the single-process CLI engine vs the Ray Data engine, same file, one run.

Writes one JSONL file of made-up posts (``--lines``, default 100 000; a few bad lines
mixed in, as in real exports), then scores it with

* ``local``  :func:`lawclf.predict.predict_file`: one process, one ONNX Runtime session
             with all the cores as intra-op threads (what ``lawclf predict`` does);
* ``ray``    :func:`lawclf.ray_predict.predict_files_ray`: Ray Data, an actor pool of
             Predictors (``--ray-actors`` x ``--ray-threads-per-actor`` = the cores).

It reports lines/s for scoring alone and for the whole command (Ray's start-up
included), and checks the two engines agree line for line.

    nice -n 10 python benchmarks/batch.py                      # tiny model, 100k lines
    python benchmarks/batch.py --shape bert-base --lines 2000  # bert-base shape (slow on CPU)
    python benchmarks/batch.py --model runs/sample/onnx        # your own exported model

Model shapes come from benchmarks/common.py (random weights: speed depends on the shape
only). On a shared machine compare only numbers from the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_WORK_DIR, exported_model  # noqa: E402

# Made-up posts: a subject, a situation and a question, half of them legal-sounding.
_WHO = ["我", "我朋友", "我妈", "我们公司", "邻居", "房东", "同事", "我老公", "表哥", "室友"]
_LEGAL = ["拖欠了三个月工资", "不退租房押金", "借钱不还还拉黑了我", "签了合同又反悔", "在网上买到假货商家不认",
          "开车追尾对方要我全赔", "离婚时不同意分财产", "被公司无故辞退", "装修款付了却停工", "遗产分配有争议"]
_EVERYDAY = ["想周末去爬山", "最近在学做饭", "准备换一部手机", "家里的猫不爱吃饭", "想给孩子报兴趣班",
             "打算去成都旅游", "晚上总是睡不着", "想学吉他", "电脑开机很慢", "在考虑买电动车"]
_ASK_LEGAL = ["该怎么维权？", "可以起诉吗？", "需要准备哪些证据？", "能申请仲裁吗？", "法律上怎么规定的？"]
_ASK_EVERYDAY = ["有什么推荐吗？", "大家怎么看？", "求建议。", "哪个比较好？", "有经验的说说。"]
_BAD = [b'{"text": "unterminated', b'{"body": "no text field"}', b'{"text": null}', b'["not", "an object"]']


def write_posts(path: Path, lines: int, seed: int = 0, bad_every: int = 997) -> Path:
    """``lines`` JSONL lines of made-up posts; every ``bad_every``-th line is a bad one."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for i in range(1, lines + 1):
            if bad_every and i % bad_every == 0:
                fh.write(_BAD[i % len(_BAD)] + b"\n")
                continue
            legal = rng.random() < 0.5
            text = rng.choice(_WHO) + rng.choice(_LEGAL if legal else _EVERYDAY) + "，" + \
                rng.choice(_ASK_LEGAL if legal else _ASK_EVERYDAY)
            fh.write(json.dumps({"id": i, "text": text}, ensure_ascii=False).encode("utf-8") + b"\n")
    return path


def run_local(model: Path, src: Path, out_dir: Path, threads: int) -> dict:
    from lawclf.predict import Predictor, predict_file

    t0 = time.perf_counter()
    predictor = Predictor(model, threads=threads)
    t1 = time.perf_counter()
    counts = predict_file(predictor, src, out_dir / "local.jsonl", out_dir / "local.errors.jsonl",
                          progress=False, log=io.StringIO())
    t2 = time.perf_counter()
    return {"engine": "local", "setup_s": t1 - t0, "score_s": t2 - t1, "total_s": t2 - t0,
            "layout": f"1 process x {predictor.threads} threads", **counts}


def run_ray(model: Path, src: Path, out_dir: Path, cpus: int, actors: int, threads: int, batch_size: int) -> dict:
    import ray

    from lawclf.ray_predict import predict_files_ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t1 = time.perf_counter()
    try:
        counts = predict_files_ray(model, src, out_dir / "ray.jsonl", out_dir / "ray.errors.jsonl",
                                   num_actors=actors, threads_per_actor=threads, batch_size=batch_size,
                                   log=io.StringIO())
    finally:
        t2 = time.perf_counter()
        ray.shutdown()
    return {"engine": "ray", "setup_s": t1 - t0, "score_s": t2 - t1, "total_s": t2 - t0,
            "layout": f"{counts['actors']} actors x {counts['threads_per_actor']} thread(s)", **counts}


def agreement(out_dir: Path) -> dict:
    """Lines, labels and the largest score difference between the two engines' outputs."""
    with (out_dir / "local.jsonl").open(encoding="utf-8") as a, (out_dir / "ray.jsonl").open(encoding="utf-8") as b:
        pairs = [(json.loads(x), json.loads(y)) for x, y in zip(a, b)]
    return {"compared": len(pairs), "same_id": all(x["id"] == y["id"] for x, y in pairs),
            "same_label": all(x["label"] == y["label"] for x, y in pairs),
            "max_score_diff": max((abs(x["score"] - y["score"]) for x, y in pairs), default=0.0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--shape", choices=("tiny", "bert-base"), default="tiny",
                        help="random-weight model of this shape (ignored with --model)")
    parser.add_argument("--model", type=Path, default=None, help="an exported ONNX folder instead")
    parser.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)), help="cores to use")
    parser.add_argument("--ray-actors", type=int, default=0, help="0 = cpus / threads per actor")
    parser.add_argument("--ray-threads-per-actor", type=int, default=1)
    parser.add_argument("--ray-batch-size", type=int, default=256)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR / "batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    model = args.model or exported_model(args.shape)
    src = write_posts(args.work_dir / f"posts-{args.lines}.jsonl", args.lines)
    results = [run_local(model, src, args.work_dir, threads=args.cpus)]
    print(f"[bench] local: {results[0]}", flush=True)
    results.append(run_ray(model, src, args.work_dir, args.cpus, args.ray_actors, args.ray_threads_per_actor,
                           args.ray_batch_size))
    check = agreement(args.work_dir)
    local = results[0]
    print(f"{args.lines} lines, model {args.model or args.shape}, {args.cpus} cores, "
          f"{platform.processor() or platform.machine()}, {dt.date.today()}")
    print("| engine | layout | lines/s (scoring) | lines/s (whole command) | start-up s | scoring s | bad lines |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['layout']} | {r['lines'] / r['score_s']:,.0f} | "
              f"{r['lines'] / r['total_s']:,.0f} | {r['setup_s']:.1f} | {r['score_s']:.1f} | {r['errors']} |")
    ray_r = results[1]
    print(f"ray / local, scoring only: {local['score_s'] / ray_r['score_s']:.2f}x; whole command: "
          f"{local['total_s'] / ray_r['total_s']:.2f}x. Agreement: {check}")
    if args.json:
        args.json.write_text(json.dumps({"lines": args.lines, "cpus": args.cpus, "date": str(dt.date.today()),
                                         "results": results, "agreement": check}, indent=2))
    ok = (check["same_id"] and check["same_label"] and check["compared"] == local["predicted"]
          and ray_r["errors"] == local["errors"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
