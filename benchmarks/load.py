"""Load test of the real server: Gunicorn (deploy/gunicorn.conf.py) on loopback, with and without micro-batching.

Two servers serve the same model (default: random weights of bert-base-chinese's shape,
int8, exported by the project's own export; see common.py) — one with server-side
micro-batching, one calling the model once per request. For each concurrency level
(closed loop: each client sends its next request when the last answer arrives) both
servers take turns, so both see the same machine load. Every level is bounded by a
request count and a time limit.

A third server serves a student of the same shape (``--student-layers``, default 4: bert-base's layer,
4 of them, as ``lawclf distill`` makes it) with micro-batching; goal: >= 2x the 12-layer model's
predictions/s at 16 clients.

Reports throughput (predictions/s), p50/p95/p99 latency (ms, client side, HTTP included)
and errors, then checks the goal: >= 45 predictions/s at 16 concurrent clients with
p95 <= 400 ms and no error (2 cores, bert-base shape, micro-batching on), micro-batching ahead of one call
per request.

    nice -n 10 python benchmarks/load.py                          # bert-base shape, 1/4/16 clients
    python benchmarks/load.py --shape tiny --requests 40 --json out.json

The machine may be shared: run it at a quiet moment and compare only rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_header, exported_model, text_of_tokens  # noqa: E402
from lawclf_dev.server import BackgroundServer, load_test  # noqa: E402

GOAL = {"concurrency": 16, "throughput_rps": 45.0, "p95_ms": 400.0}
MODES = {"micro-batching": "true", "one call per request": "false"}


def question_texts(n: int = 64, min_tokens: int = 20, max_tokens: int = 60) -> list[str]:
    """Texts of 20-60 tokens (a typical forum question), lengths spread evenly."""
    span = max_tokens - min_tokens
    return [text_of_tokens(min_tokens + (i * 7919) % (span + 1), offset=i * 37) for i in range(n)]


def run(model_dir: Path, levels: list[int], requests: dict[int, int], time_limit: float, log_dir: Path,
        student_dir: Path | None = None, student_mode: str = "") -> list[dict]:
    """Each server in turn at each level; ``student_dir`` adds a third (the student, micro-batching on)."""
    texts = question_texts()
    plan = {mode: (model_dir, flag) for mode, flag in MODES.items()}
    if student_dir is not None:
        plan[student_mode] = (student_dir, "true")
    servers = {}
    try:
        for mode, (served, flag) in plan.items():
            env = {"LAWCLF_MICROBATCH": flag, "LAWCLF_LOG_LEVEL": "INFO"}
            servers[mode] = BackgroundServer(served, env=env, startup_timeout=180,
                                             log_path=log_dir / f"load-{mode.replace(' ', '-')}.log").start()
            load_test(servers[mode].url, texts, concurrency=2, n_requests=10)  # warm-up
        rows = []
        for level in levels:
            for mode, srv in servers.items():
                stats = load_test(srv.url, texts, concurrency=level, n_requests=requests[level],
                                  time_limit_s=time_limit)
                stats["mode"] = mode
                rows.append(stats)
                print(f"[load] {mode:>20} x{level:<3} {stats['throughput_rps']:7.1f} pred/s  "
                      f"p50 {stats['p50_ms']:7.1f}  p95 {stats['p95_ms']:7.1f}  p99 {stats['p99_ms']:7.1f} ms  "
                      f"errors {stats['errors']}{'  (time limit)' if stats['timed_out'] else ''}", flush=True)
        return rows
    finally:
        for srv in servers.values():
            srv.stop()


def markdown(rows: list[dict]) -> str:
    lines = ["| server | clients | requests | errors | predictions/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['errors']} | "
                     f"{r['throughput_rps']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="bert-base", choices=["bert-base", "tiny"])
    parser.add_argument("--model-dir", default="", help="serve this exported ONNX folder instead of a random model")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level and server (0 = 15 x clients, at least 60)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level and server")
    parser.add_argument("--student-layers", type=int, default=4,
                        help="also serve a student of --shape with this many layers (`lawclf distill`), micro-batching "
                             "on, taking turns with the others (0 = none)")
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args(argv)

    model_dir = Path(args.model_dir) if args.model_dir else exported_model(args.shape)
    requests = {lv: args.requests or max(60, 15 * lv) for lv in args.levels}
    cores = len(os.sched_getaffinity(0))
    print(f"[load] model {model_dir} ({args.shape if not args.model_dir else 'given'}), {cpu_header()}, "
          f"levels {args.levels}", flush=True)
    print(f"[load] load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "lawclf-load"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    student_dir = exported_model(f"{args.shape}-L{args.student_layers}") if args.student_layers else None
    student_mode = f"{args.student_layers}-layer student, micro-batching"
    rows = run(model_dir, args.levels, requests, args.time_limit, log_dir, student_dir, student_mode)
    print()
    print(markdown(rows))
    goal_row = next((r for r in rows if r["mode"] == "micro-batching" and r["concurrency"] == GOAL["concurrency"]), None)
    if goal_row:
        ok = goal_row["throughput_rps"] >= GOAL["throughput_rps"] and goal_row["p95_ms"] <= GOAL["p95_ms"] \
            and goal_row["errors"] == 0
        print(f"\ngoal (micro-batching, {GOAL['concurrency']} clients): >= {GOAL['throughput_rps']:.0f} pred/s "
              f"with p95 <= {GOAL['p95_ms']:.0f} ms -> {goal_row['throughput_rps']:.1f} pred/s, "
              f"p95 {goal_row['p95_ms']:.0f} ms: {'met' if ok else 'NOT met'}")
        single = next((r for r in rows if r["mode"] == "one call per request"
                       and r["concurrency"] == GOAL["concurrency"]), None)
        if single:
            ratio = goal_row["throughput_rps"] / max(single["throughput_rps"], 1e-9)
            print(f"micro-batching / one call per request at {GOAL['concurrency']} clients: {ratio:.2f}x "
                  f"({'ahead' if ratio > 1 else 'NOT ahead'})")
    pupil = next((r for r in rows if r["mode"] == student_mode and r["concurrency"] == GOAL["concurrency"]), None)
    if goal_row and pupil:
        ratio = pupil["throughput_rps"] / max(goal_row["throughput_rps"], 1e-9)
        print(f"{student_mode} / the {args.shape} model at {GOAL['concurrency']} clients: {ratio:.2f}x "
              f"predictions/s (goal >= 2x: {'met' if ratio >= 2 else 'NOT met'})")
    print(f"[load] done in {time.perf_counter() - t0:.0f}s; load average after: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; server logs in {log_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "shape": args.shape, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
