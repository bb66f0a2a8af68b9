"""Evaluation stage: judge the trained model honestly (notebook 04, ``lawclf evaluate``).

* The **test split** gives every reported number and chooses nothing.
* The **validation split** chooses the decision threshold (maximum F1, or the lowest
  threshold that reaches a target precision); it is stored in the model's
  ``lawclf_meta.json`` so export, prediction and serving use the same one.
* Beyond accuracy/precision/recall/F1: ROC-AUC and PR-AUC (threshold-free), a
  confusion matrix, the PR curve, calibration (reliability curve and ECE), metrics per
  source, the worst false positives / false negatives, and a probe of short everyday
  questions ("借钱", "我想咨询下", "怎么办") — the kind the original model got wrong.

Everything lands in ``reports/metrics.json`` (read by later notebooks, the README and
tests) and a few PNGs beside it. The metric helpers here are torch-free.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from lawclf.config import (
    EvalConfig,
    RunPaths,
    add_config_args,
    config_from_args,
    read_model_meta,
    to_dict,
    write_model_meta,
)
from lawclf.fonts import chinese_labels
from lawclf.metrics import (
    ArrayLike,
    binary_metrics,
    calibration,
    choose_threshold,
    groups_of,
    per_length_metrics,
    per_source_metrics,
    worst_source_fpr,
)
from lawclf.ngram import choose_combination, combine_scores
from lawclf.plots import (
    plot_confusion,
    plot_pr_curve,
    plot_reliability,
    plot_score_hist,
)
from lawclf.probes import load_probes, probe_report
from lawclf.text import normalise_text
from lawclf.truncation import LEGACY_TRUNCATION

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.json"


# --------------------------------------------------------------------------- metrics


def worst_errors(rows: Sequence[Mapping], scores: ArrayLike, threshold: float, n: int = 20) -> dict[str, list]:
    """The most confident mistakes: false positives by highest score, false negatives by lowest."""
    s = np.asarray(scores, dtype=np.float64)
    fp = [i for i, r in enumerate(rows) if int(r["label"]) == 0 and s[i] >= threshold]
    fn = [i for i, r in enumerate(rows) if int(r["label"]) == 1 and s[i] < threshold]

    def table(ids: list[int]) -> list[dict]:
        return [{"id": rows[i].get("id"), "text": rows[i]["text"], "label": int(rows[i]["label"]),
                 "source": rows[i].get("source"), "score": float(s[i])} for i in ids[:n]]

    return {"false_positives": table(sorted(fp, key=lambda i: -s[i])),
            "false_negatives": table(sorted(fn, key=lambda i: s[i]))}


# --------------------------------------------------------------------------- the stage


def _jsonable(obj: Any) -> Any:
    """NaN → None so metrics.json stays strict JSON."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Score validation (threshold) and test (every reported number); write metrics.json and plots."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import torch

    from lawclf.data import load_split
    from lawclf.inference import predict_proba
    from lawclf.modeling import load_pretrained

    paths = RunPaths(cfg.run_dir)
    if not (paths.model / "config.json").exists():
        raise FileNotFoundError(f"{paths.model} holds no trained model: run training first "
                                "(notebook 03 or `lawclf train`)")
    meta = read_model_meta(paths.model)
    max_len = int(meta.get("max_len") or 128)
    truncation = str(meta.get("truncation") or LEGACY_TRUNCATION)
    ngram_part = _ngram_part(paths, meta, cfg.combine)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, model = load_pretrained(str(paths.model))
    model.to(device).eval()

    def score_parts(texts: Sequence[str]) -> dict[str, np.ndarray]:
        """P(legal) of each part: the model, and the n-gram part when the model has one."""
        parts = {"model": predict_proba(model, tokenizer, texts, batch_size=cfg.eval_batch_size, max_len=max_len,
                                        device=device, truncation=truncation)}
        if ngram_part is not None:
            parts["ngram"] = ngram_part.predict_proba([normalise_text(t) for t in texts])
        return parts

    val_rows, test_rows = load_split(cfg.run_dir, "validation"), load_split(cfg.run_dir, "test")
    val_y = [int(r["label"]) for r in val_rows]
    val_parts = score_parts([r["text"] for r in val_rows])
    combine = (choose_combination(cfg.combine, val_parts["model"], val_parts["ngram"], val_y)
               if ngram_part is not None else {"method": "model"})

    def served(parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return combine_scores(parts["model"], parts.get("ngram"), combine)

    def pick_threshold(scores: np.ndarray) -> dict[str, Any]:
        return choose_threshold(val_y, scores, cfg.threshold_strategy, cfg.target_precision,
                                sources=groups_of(val_rows), max_source_fpr=cfg.max_source_fpr,
                                min_source_rows=cfg.min_source_rows)

    val_s = served(val_parts)
    chosen = pick_threshold(val_s)
    threshold = chosen["threshold"]

    test_y = np.array([int(r["label"]) for r in test_rows])
    test_parts = score_parts([r["text"] for r in test_rows])
    test_s = served(test_parts)
    test = binary_metrics(test_y, test_s, threshold)
    cal = calibration(test_y, test_s, cfg.calibration_bins)
    probes = load_probes(cfg.probes_path or None)
    probe = probe_report(probes, served(score_parts([p["text"] for p in probes])), threshold) if probes else None
    # The ablation: each part alone (its own threshold, same strategy, on validation) beside the served score.
    ablation: dict[str, Any] = {}
    for name in [*test_parts, "combined"] if ngram_part is not None else ["model"]:
        v, t = (val_s, test_s) if name == "combined" else (val_parts[name], test_parts[name])
        thr = threshold if name == "combined" else pick_threshold(v)["threshold"]
        m = binary_metrics(test_y, t, thr)
        ablation[name] = {**{k: m[k] for k in ("f1", "precision", "recall", "fpr", "pr_auc", "roc_auc")},
                          "threshold": thr, "per_length": per_length_metrics(test_rows, t, thr),
                          "per_source": per_source_metrics(test_rows, t, thr)}

    paths.reports.mkdir(parents=True, exist_ok=True)
    chinese = chinese_labels()
    plots = {
        "confusion_matrix": plot_confusion(test, paths.reports / "confusion_matrix.png", chinese),
        "pr_curve": plot_pr_curve(test_y, test_s, threshold, paths.reports / "pr_curve.png", chinese),
        "reliability": plot_reliability(cal, paths.reports / "reliability.png", chinese),
        "score_histogram": plot_score_hist(test_y, test_s, threshold, paths.reports / "score_histogram.png", chinese),
    }

    per_source = per_source_metrics(test_rows, test_s, threshold)
    worst = worst_source_fpr(per_source)
    headline = {k: test[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")}
    results = {
        **headline,
        "split": "test",
        "n_test": len(test_rows),
        "n_validation": len(val_rows),
        "threshold": threshold,
        "threshold_choice": {**chosen, "chosen_on": "validation"},
        "test": test,
        "test_at_0_5": binary_metrics(test_y, test_s, 0.5),
        "validation": binary_metrics(val_y, val_s, threshold),
        "confusion_matrix": [[test["tn"], test["fp"]], [test["fn"], test["tp"]]],
        "calibration": cal,
        "per_source": per_source,
        "per_length": per_length_metrics(test_rows, test_s, threshold),
        "combine": combine,
        "truncation": truncation,
        "ablation": ablation,
        "max_source_fpr": worst[0],
        "worst_source": worst[1],
        "errors": worst_errors(test_rows, test_s, threshold, cfg.n_errors),
        "probes": probe,
        "plots": {k: str(v) for k, v in plots.items()},
        "model_dir": str(paths.model),
        "model_name": meta.get("model_name"),
        "max_len": max_len,
        "eval_config": to_dict(cfg),
    }
    results = _jsonable(results)
    (paths.reports / METRICS_FILE).write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    # The raw scores, so a reader can redo the threshold sweep and the calibration by hand (notebook 04).
    # ``scores`` are the served (combined) ones; ``parts`` each part's, for the ablation by hand.
    def rounded(x: np.ndarray) -> list[float]:
        return [round(float(v), 6) for v in x]

    (paths.reports / SCORES_FILE).write_text(json.dumps({
        "validation": {"labels": val_y, "scores": rounded(val_s), "parts": {k: rounded(v) for k, v in val_parts.items()}},
        "test": {"labels": test_y.tolist(), "scores": rounded(test_s),
                 "parts": {k: rounded(v) for k, v in test_parts.items()}}}), encoding="utf-8")
    write_model_meta(paths.model, threshold=threshold, threshold_choice=results["threshold_choice"],
                     combine=results["combine"], test_metrics=_jsonable(headline),
                     eval_config={k: v for k, v in to_dict(cfg).items() if k != "run_dir"})
    return results


def _ngram_part(paths: RunPaths, meta: Mapping[str, Any], combine: str):
    """The model's n-gram part (:class:`lawclf.ngram.NgramModel`), or None when it has none or ``combine``
    is ``model``. A combination that needs the part, asked of a model without one, fails naming the setting."""
    from lawclf.ngram import NGRAM_FILE, NgramModel

    if combine == "model":
        return None
    if not meta.get("ngram"):
        if combine == "auto":
            return None
        raise ValueError(f"EvalConfig.combine={combine!r} needs the n-gram part, and {paths.model} has none "
                         "(train with --ngram, or evaluate with --combine model)")
    return NgramModel.load(paths.model / NGRAM_FILE)


def read_scores(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, list]]:
    """``reports/scores.json``: ``{"validation"|"test": {"labels", "scores"}}`` from the last :func:`evaluate`."""
    return json.loads((RunPaths(run_dir).reports / SCORES_FILE).read_text(encoding="utf-8"))


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``reports/metrics.json`` written by :func:`evaluate`."""
    return json.loads((RunPaths(run_dir).reports / METRICS_FILE).read_text(encoding="utf-8"))


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf evaluate``: the same parameters as notebook 04."""
    parser = argparse.ArgumentParser(prog="lawclf evaluate",
                                     description="Evaluate on the test split; choose the threshold on validation.")
    add_config_args(parser, EvalConfig)
    cfg = config_from_args(EvalConfig, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = evaluate(cfg)
    keys = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "threshold")
    print(json.dumps({k: results[k] for k in keys}, indent=2))
    print(f"wrote {RunPaths(cfg.run_dir).reports / METRICS_FILE}")
    return 0


__all__ = [
    "binary_metrics", "choose_threshold", "calibration", "per_source_metrics", "worst_errors", "load_probes",
    "probe_report", "evaluate", "read_metrics", "read_scores", "cli",
]
