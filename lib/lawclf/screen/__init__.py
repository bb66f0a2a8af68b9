"""The screening job the original tool existed for (``lawclf screen``, notebook 07).

* ``run``             one pass: collect new posts, score them with the exported model, write the
                      digest of new legal questions, notify webhooks. Idempotent, safe to kill;
                      run it from cron, a systemd timer or a Kubernetes CronJob.
* ``status``          the last passes, counts, failed notifications; exit 1 while the last pass failed
                      or was partial, a notification is given up or a node walk is still open
* ``notify``          deliver every queued notification now; ``--retry-failed`` the given-up ones too
* ``review``          the review page: flagged and uncertain posts, 是法律咨询 / 不是
* ``export-reviews``  reviewed posts as legal.jsonl + nonlegal.jsonl for ``lawclf prepare``

::

    lawclf screen run --nodes career,law --webhooks "wecom=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"
    lawclf screen review                      # http://127.0.0.1:8010
    lawclf screen export-reviews --merge-data-dir data/sample
    lawclf prepare --data-dir runs/screen/reviews

Every setting can also be given as ``LAWCLF_SCREEN_<FIELD>`` or in ``--config FILE.yaml``
(flags > environment > file > defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from lawclf.config import SCREEN_ENV_PREFIX as ENV_PREFIX
from lawclf.config import ScreenConfig, add_config_args, config_from_args

__all__ = ["cli", "ENV_PREFIX"]


def cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lawclf screen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"run": "one screening pass (collect, score, digest, notify)",
             "status": "the last passes and what the database holds",
             "notify": "deliver every queued notification now (--retry-failed: the given-up ones too)",
             "review": "serve the review page", "export-reviews": "write reviewed posts for `lawclf prepare`"}
    for name, help_ in helps.items():
        p = sub.add_parser(name, help=help_)
        add_config_args(p, ScreenConfig)
        if name == "status":
            p.add_argument("--last", type=int, default=10, help="passes to list (default 10)")
        if name == "notify":
            p.add_argument("--retry-failed", action="store_true",
                           help="queue the deliveries given up (older than notify_max_age_h) again first")
    args = parser.parse_args(argv)
    try:  # flags > LAWCLF_SCREEN_* variables > --config file > defaults, as every stage
        cfg = config_from_args(ScreenConfig, args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lawclf screen {args.command}: {exc}", file=sys.stderr)
        return 2
    from lawclf.collect.store import redact_url

    print(f"[screen] database: {redact_url(cfg.db_url)}", file=sys.stderr)
    if args.command == "review":
        from lawclf.screen.review import create_review_app

        try:
            app = create_review_app(cfg)  # refuses (ConfigError) to serve off loopback without a token
        except ValueError as exc:  # ConfigError, DatabaseError: one line naming the setting
            print(f"lawclf screen review: {exc}", file=sys.stderr)
            return 2
        print(f"[screen] review page on http://{cfg.review_host}:{cfg.review_port}/", file=sys.stderr)
        app.run(host=cfg.review_host, port=cfg.review_port)
        return 0
    try:
        if args.command == "run":
            from lawclf.predict import ModelLoadError
            from lawclf.screen.job import run_pass

            try:
                result = run_pass(cfg, on_stage=lambda s: print(f"[screen] {s}", file=sys.stderr))
            except ModelLoadError as exc:
                print(f"lawclf screen run: {exc}", file=sys.stderr)
                return 2
        elif args.command == "status":
            from lawclf.screen.job import status

            result = status(cfg, last=args.last)
        elif args.command == "notify":
            from lawclf.screen.job import notify_pending

            result = notify_pending(cfg, retry_failed=args.retry_failed)
        else:
            from lawclf.screen.review import export_reviews

            result = export_reviews(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lawclf screen {args.command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    if args.command == "run":
        return 0 if result["status"] == "ok" else 1
    if args.command == "status":  # for monitoring: cron mail, systemd, a Kubernetes alert
        for problem in result["problems"]:
            print(f"[screen] not healthy: {problem}", file=sys.stderr)
        return 0 if result["healthy"] else 1
    if args.command == "notify":
        return 0 if not (result["failed"] or result["retrying"]) else 1
    return 0
