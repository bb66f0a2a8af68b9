"""Metrics and decision thresholds shared by training, evaluation, export and the benchmarks.

Torch-free (numpy, and scikit-learn for the AUCs and the PR curve). One implementation of
each figure: :func:`binary_metrics` (accuracy/precision/recall/F1/FPR/AUCs),
:func:`choose_threshold` (every threshold strategy), :func:`calibration` (ECE) and
:func:`per_source_metrics` (rows grouped by :func:`source_group`).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from lawclf.config import THRESHOLD_STRATEGIES

logger = logging.getLogger(__name__)


#: Scores or labels: a list or a numpy array.
ArrayLike = Union[Sequence[float], Sequence[int], np.ndarray]

#: Path components that name no data set (generic folders, dates, numbered files).
_GENERIC_PARTS = {"data", "datasets", "dataset", "md", "json", "raw", "corpus"}
_NUMBERED = re.compile(r"^[\d_.\-]+(\.[A-Za-z0-9]+)?$")


def source_group(source: str) -> str:
    """Name the data set a row came from: ``owner/repo:path@commit`` → ``repo`` or ``repo:dataset``.

    The commit, archive members (``!member``), generic folders (``data/``), dates and
    numbered files are dropped, so the 1,200 daily V2EX files become one group and
    LCQMC's train/dev/test files another::

        IceFlameWorm/NLP_Datasets:LCQMC/dev.txt@a22…            → NLP_Datasets:LCQMC
        ghaction/v2ex_hot_daily:data/md/2020/10/28.md@ce1…       → v2ex_hot_daily
        AndrewZhe/lawyer-llama:data/legal_advice.json@abaa…       → lawyer-llama:legal_advice

    A source without ``:`` (e.g. ``sample`` or ``v2ex``) is returned unchanged.
    """
    source = (source or "").strip()
    if ":" not in source:
        return source or "unknown"
    repo, _, path = source.partition(":")
    path = path.split("@", 1)[0].split("!", 1)[0]
    repo_name = repo.rsplit("/", 1)[-1]
    for part in path.split("/"):
        if not part or part.lower() in _GENERIC_PARTS or _NUMBERED.match(part):
            continue
        return f"{repo_name}:{part.rsplit('.', 1)[0] if '.' in part else part}"
    return repo_name


def groups_of(rows: Iterable[Mapping]) -> list[str]:
    """:func:`source_group` of every row's ``source`` field."""
    return [source_group(str(r.get("source") or "")) for r in rows]


# --------------------------------------------------------------------------- metrics at a threshold


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (0 when both are 0)."""
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def binary_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1, FPR at ``threshold`` plus threshold-free ROC-AUC and PR-AUC.

    A text is called legal when its score is ``>= threshold``. AUCs are NaN when only one
    class is present (they are undefined then).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape}) and scores ({s.shape}) differ in shape")
    pred = (s >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = len(np.unique(y)) == 2
    return {
        "accuracy": (tp + tn) / len(y) if len(y) else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1_score(precision, recall),
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, s)) if both else float("nan"),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "threshold": float(threshold), "n": int(len(y)),
    }


# --------------------------------------------------------------------------- thresholds


def source_fpr_floor(labels: ArrayLike, scores: ArrayLike, groups: Sequence[str],
                     max_fpr: float = 0.03, min_rows: int = 20) -> tuple[float, str]:
    """The lowest threshold at which every group's false-positive rate is ``<= max_fpr``.

    Groups with fewer than ``min_rows`` negatives are too small to estimate an FPR and do
    not constrain. Returns ``(floor, binding_group)`` (``(0.0, "")`` when nothing binds).
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(list(groups), dtype=object)
    if not (len(y) == len(s) == len(g)):
        raise ValueError(f"{len(y)} labels, {len(s)} scores and {len(g)} groups: one each per row expected")
    floor, binding = 0.0, ""
    for group in sorted(set(g.tolist())):
        neg = np.sort(s[(g == group) & (y == 0)])
        if len(neg) < min_rows:
            continue
        allowed = int(np.floor(max_fpr * len(neg)))  # false positives this group may have
        # FPR <= cap  <=>  at most `allowed` negatives score >= threshold  <=>  threshold > neg[-allowed-1].
        need = float(np.nextafter(neg[len(neg) - allowed - 1], np.inf))
        if need > floor:
            floor, binding = need, group
    return floor, binding


def choose_threshold(labels: ArrayLike, scores: ArrayLike, strategy: str = "max_f1",
                     target_precision: float = 0.95, *, sources: Optional[Sequence[str]] = None,
                     max_source_fpr: float = 0.03, min_source_rows: int = 20) -> dict[str, Any]:
    """Pick the decision threshold on *validation* scores.

    ``max_f1``: the threshold with the highest F1 (ties: the higher threshold, fewer false alarms).
    ``target_precision``: the lowest threshold whose precision reaches ``target_precision``
    (so recall is as high as that precision allows); when no threshold reaches it, falls
    back to max F1 and says so (``reached: False``).
    ``fpr_cap``: the max-F1 threshold, raised where needed so that every non-legal source
    group (``sources``, one per row, see :func:`source_group`) with at least
    ``min_source_rows`` negatives has a false-positive rate ``<= max_source_fpr``.

    Returns ``{"threshold", "strategy", "precision", "recall", "f1", ...}`` on these scores.
    """
    from sklearn.metrics import precision_recall_curve

    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"threshold_strategy must be one of {', '.join(THRESHOLD_STRATEGIES)}, got {strategy!r}")
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("choose_threshold needs both classes in the validation labels")
    p, r, t = precision_recall_curve(y, s)
    p, r = p[:-1], r[:-1]  # the last point (recall 0) has no threshold
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    best_f1 = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[-1])
    info: dict[str, Any] = {"strategy": strategy}
    if strategy == "target_precision":
        ok = np.flatnonzero(p >= target_precision)
        info["target_precision"] = target_precision
        info["reached"] = bool(len(ok))
        i = int(ok[0]) if len(ok) else best_f1  # thresholds ascend: the first is the lowest
        if not len(ok):
            logger.warning("no threshold reaches precision %.3f on validation; using max F1", target_precision)
    else:
        i = best_f1
    threshold = float(t[i])
    if strategy == "fpr_cap":
        if sources is None:
            raise ValueError("the fpr_cap threshold needs the source of every validation row (sources=...)")
        floor, binding = source_fpr_floor(y, s, sources, max_source_fpr, min_source_rows)
        info.update(max_source_fpr=max_source_fpr, max_f1_threshold=threshold,
                    binding_source=binding if floor > threshold else "")
        threshold = max(threshold, floor)
    m = binary_metrics(y, s, threshold)
    info.update(threshold=threshold, precision=m["precision"], recall=m["recall"], f1=m["f1"])
    return info


def threshold_for_source_fpr(rows: Sequence[Mapping], scores: ArrayLike, max_fpr: float = 0.03,
                             min_rows: int = 20) -> float:
    """:func:`choose_threshold` with ``fpr_cap`` on labelled rows (their ``source`` gives the group)."""
    return choose_threshold([int(r["label"]) for r in rows], scores, "fpr_cap", sources=groups_of(rows),
                            max_source_fpr=max_fpr, min_source_rows=min_rows)["threshold"]


# --------------------------------------------------------------------------- calibration and per source


def calibration(labels: ArrayLike, scores: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Reliability table and Expected Calibration Error of P(legal).

    Scores fall in ``n_bins`` equal-width bins over [0, 1]; in each bin compare the mean
    predicted probability with the observed fraction of legal texts. ECE is the
    size-weighted mean of |observed - predicted|: 0 means "70 % sure" is right 70 % of the time.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    # Bin k holds scores in [k/n, (k+1)/n); a score of exactly 1.0 goes into the last bin.
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    bins, ece = [], 0.0
    for k in range(n_bins):
        mask = idx == k
        n = int(mask.sum())
        if not n:
            continue
        conf, frac = float(s[mask].mean()), float(y[mask].mean())
        ece += n / len(s) * abs(frac - conf)
        bins.append({"lower": k / n_bins, "upper": (k + 1) / n_bins, "n": n,
                     "mean_score": conf, "fraction_legal": frac})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def per_source_metrics(rows: Sequence[Mapping], scores: ArrayLike, threshold: float) -> dict[str, dict]:
    """Metrics per source group (:func:`source_group` of each row's ``source``; {} for a single group).

    A source usually holds one class only, so what matters there is its false-positive
    rate (non-legal sources) or its recall (legal sources); precision and F1 are given
    only for sources holding both classes, and undefined rates are None. Evaluation and
    the benchmarks both report through this function, so their groups are the same.
    """
    sources = groups_of(rows)
    if len(set(sources)) < 2:
        return {}
    return _metrics_by(rows, scores, threshold, sources, sorted(set(sources)))


def _metrics_by(rows: Sequence[Mapping], scores: ArrayLike, threshold: float, keys: Sequence[str],
                order: Sequence[str]) -> dict[str, dict]:
    """Rates per key (one key per row), in ``order``: recall and FPR where defined, precision/F1 where both classes are."""
    out = {}
    for key in order:
        idx = [i for i, x in enumerate(keys) if x == key]
        if not idx:
            continue
        m = binary_metrics([rows[i]["label"] for i in idx], [scores[i] for i in idx], threshold)
        positives, negatives = m["tp"] + m["fn"], m["fp"] + m["tn"]
        out[key] = {
            "n": m["n"], "positives": positives, "accuracy": m["accuracy"],
            "recall": m["recall"] if positives else None, "fpr": m["fpr"] if negatives else None,
            "false_positives": m["fp"], "false_negatives": m["fn"],
        }
        if positives and negatives:
            out[key].update(precision=m["precision"], f1=m["f1"])
    return out


#: Character-length buckets of :func:`per_length_metrics` (upper bounds, exclusive): short knowledge questions,
#: one-sentence questions, short posts, posts, and long posts that MAX_LEN 64 truncates.
LENGTH_EDGES: tuple[int, ...] = (15, 30, 60, 120)


def length_bucket(n_chars: int, edges: Sequence[int] = LENGTH_EDGES) -> str:
    """``"<15"``, ``"15-29"``, ..., ``">=120"`` for a text of ``n_chars`` characters."""
    if n_chars < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:]):
        if n_chars < high:
            return f"{low}-{high - 1}"
    return f">={edges[-1]}"


def per_length_metrics(rows: Sequence[Mapping], scores: ArrayLike, threshold: float,
                       edges: Sequence[int] = LENGTH_EDGES) -> dict[str, dict]:
    """Recall and FPR per character-length bucket (:func:`length_bucket`), shortest first."""
    keys = [length_bucket(len(str(r["text"])), edges) for r in rows]
    order = [length_bucket(0, edges)] + [length_bucket(e, edges) for e in edges]
    return _metrics_by(rows, scores, threshold, keys, order)



def worst_source_fpr(per_source: Mapping[str, Mapping[str, Any]]) -> tuple[float, str]:
    """``(highest false-positive rate, its group)`` over :func:`per_source_metrics` (``(0.0, "")`` if none)."""
    fprs = [(float(v["fpr"]), g) for g, v in per_source.items() if v.get("fpr") is not None]
    return max(fprs) if fprs else (0.0, "")


__all__ = ["THRESHOLD_STRATEGIES", "source_group", "groups_of", "f1_score", "binary_metrics", "source_fpr_floor",
           "choose_threshold", "threshold_for_source_fpr", "calibration", "per_source_metrics", "worst_source_fpr",
           "LENGTH_EDGES", "length_bucket", "per_length_metrics"]
