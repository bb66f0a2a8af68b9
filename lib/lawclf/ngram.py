"""The n-gram part of a combined model: char n-gram TF-IDF + logistic regression, served without scikit-learn.

BERT and character n-grams see different things: a truncated long post still has all its n-grams,
and a short knowledge question ("醉驾怎么判") is a handful of telling ones. ``lawclf train`` fits
:class:`NgramModel` on the rows the model is trained on (scikit-learn's ``TfidfVectorizer`` +
``LogisticRegression``, :meth:`lawclf.baselines.TfidfCharLR.to_ngram_model`), and keeps it as plain arrays
(``ngram.npz``: vocabulary, idf, coefficients) that numpy alone scores, so the server image needs
no scikit-learn. ``lawclf evaluate`` chooses how to combine the two scores on validation
(:func:`choose_combination`); the :class:`~lawclf.predict.Predictor` applies the same
:func:`combine_scores`. The arithmetic follows scikit-learn's exactly (checked by the tests):

    x_j = (1 + log tf_j) * idf_j / ||(1 + log tf) * idf||,   P(legal) = sigmoid(x . coef + intercept)

This module imports neither torch nor scikit-learn at import time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

#: File of the n-gram part inside a model folder (``model/`` and ``onnx/``).
NGRAM_FILE = "ngram.npz"
#: Combination methods a model's metadata may name (``combine.method``).
METHODS = ("mean", "stack", "model", "ngram")
_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn's char analyzer collapses runs of whitespace like this


class NgramLoadError(ValueError):
    """``ngram.npz`` or the metadata that describes it is missing or malformed (the message names the file)."""


def char_ngrams(text: str, ngram_range: tuple[int, int], lowercase: bool = True) -> list[str]:
    """The character n-grams scikit-learn's ``TfidfVectorizer(analyzer="char")`` extracts, in its order."""
    if lowercase:
        text = text.lower()
    text = _WHITE_SPACES.sub(" ", text)
    low, high = ngram_range
    out: list[str] = []
    for n in range(low, min(high, len(text)) + 1):
        out.extend(text[i:i + n] for i in range(len(text) - n + 1))
    return out


class NgramModel:
    """TF-IDF over character n-grams + logistic regression, as arrays: fit with scikit-learn, score with numpy."""

    def __init__(self, vocabulary: Sequence[str], idf: np.ndarray, coef: np.ndarray, intercept: float,
                 ngram_range: tuple[int, int] = (1, 3), lowercase: bool = True, sublinear_tf: bool = True):
        self.vocabulary = list(vocabulary)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        if not (len(self.vocabulary) == len(self.idf) == len(self.coef)):
            raise ValueError(f"vocabulary ({len(self.vocabulary)}), idf ({len(self.idf)}) and coef "
                             f"({len(self.coef)}) differ in length")
        self.intercept = float(intercept)
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.lowercase, self.sublinear_tf = bool(lowercase), bool(sublinear_tf)
        self.index = {gram: i for i, gram in enumerate(self.vocabulary)}
        # idf * coef once: the numerator of each feature's contribution.
        self._weighted = self.idf * self.coef

    # ------------------------------------------------------------------ fitting (scikit-learn)
    @classmethod
    def from_pipeline(cls, pipeline: Any) -> "NgramModel":
        """The arrays of a fitted ``make_pipeline(TfidfVectorizer(analyzer="char"), LogisticRegression())``."""
        vec, lr = pipeline.steps[0][1], pipeline.steps[-1][1]
        if vec.analyzer != "char" or vec.norm != "l2" or not vec.use_idf or len(lr.classes_) != 2:
            raise ValueError("NgramModel reproduces a char analyzer, l2 norm, idf and a binary logistic regression only")
        vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
        return cls(vocab, vec.idf_, lr.coef_[0], float(lr.intercept_[0]), tuple(vec.ngram_range),
                   vec.lowercase, vec.sublinear_tf)

    # ------------------------------------------------------------------ scoring (numpy)
    def decision(self, text: str) -> float:
        """The logistic regression's logit for one text."""
        counts = Counter(g for g in char_ngrams(text, self.ngram_range, self.lowercase) if g in self.index)
        if not counts:
            return self.intercept
        idx = np.fromiter((self.index[g] for g in counts), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear_tf:
            tf = 1.0 + np.log(tf)
        norm = math.sqrt(float(np.sum((tf * self.idf[idx]) ** 2)))
        return self.intercept + (float(tf @ self._weighted[idx]) / norm if norm else 0.0)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(legal) of each text (the texts as the model sees them: normalise raw input first)."""
        z = np.array([self.decision(t) for t in texts], dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """``ngram.npz``: plain arrays (no pickle), loadable with ``np.load(allow_pickle=False)``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(fh, vocabulary=np.array(self.vocabulary, dtype=str),
                                idf=self.idf.astype(np.float32), coef=self.coef.astype(np.float32),
                                intercept=np.float64(self.intercept), ngram_range=np.array(self.ngram_range),
                                flags=np.array([self.lowercase, self.sublinear_tf]))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NgramModel":
        """Read :meth:`save`'s file; :class:`NgramLoadError` naming it when missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise NgramLoadError(f"{path}: n-gram part not found (the metadata says the model has one)")
        try:
            with np.load(path, allow_pickle=False) as z:
                flags = z["flags"]
                return cls(z["vocabulary"].tolist(), z["idf"], z["coef"], float(z["intercept"]),
                           (int(z["ngram_range"][0]), int(z["ngram_range"][1])), bool(flags[0]), bool(flags[1]))
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise NgramLoadError(f"{path}: not a readable n-gram part ({exc})") from exc

    def describe(self) -> dict[str, Any]:
        """What ``lawclf_meta.json`` says of this part (``ngram``)."""
        return {"file": NGRAM_FILE, "features": len(self.vocabulary), "ngram_range": list(self.ngram_range),
                "kind": "tfidf-char-lr"}


# --------------------------------------------------------------------------- combining the two parts


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def combine_scores(model: Optional[np.ndarray], ngram: Optional[np.ndarray],
                   spec: Optional[Mapping[str, Any]]) -> np.ndarray:
    """The served P(legal) from the model's and the n-gram part's, by ``spec`` (``lawclf_meta.json``'s
    ``combine``): ``mean`` = ``weight * model + (1 - weight) * ngram``; ``stack`` = ``sigmoid(a * logit(model)
    + b * logit(ngram) + c)``; ``model`` / ``ngram`` = that part alone. No spec = the model alone."""
    method = "model" if not spec else spec.get("method", "model")
    if method != "model" and ngram is None:
        raise ValueError(f"combine method {method!r} needs the n-gram part's scores")
    if method == "ngram":
        return np.asarray(ngram, dtype=np.float64)
    if model is None:
        raise ValueError(f"combine method {method!r} needs the model's scores")
    model = np.asarray(model, dtype=np.float64)
    if method == "model":
        return model
    ngram = np.asarray(ngram, dtype=np.float64)
    if method == "mean":
        w = float(spec["weight"])  # type: ignore[index]
        return w * model + (1.0 - w) * ngram
    if method == "stack":
        a, b = (float(x) for x in spec["coef"])  # type: ignore[index]
        z = a * _logit(model) + b * _logit(ngram) + float(spec["intercept"])  # type: ignore[index]
        return 1.0 / (1.0 + np.exp(-z))
    raise ValueError(f"unknown combine method {method!r}; expected one of {', '.join(METHODS)}")


def check_combine(spec: object, source: str) -> dict[str, Any]:
    """A valid ``combine`` spec, or ``ValueError`` naming ``source`` and what is wrong."""
    if not isinstance(spec, dict) or spec.get("method") not in METHODS:
        raise ValueError(f"{source}: field 'combine' must be an object whose 'method' is one of "
                         f"{', '.join(METHODS)}, got {spec!r}")

    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    method = spec["method"]
    if method == "mean" and not (number(spec.get("weight")) and 0.0 <= spec["weight"] <= 1.0):
        raise ValueError(f"{source}: combine 'mean' needs a 'weight' in [0, 1], got {spec.get('weight')!r}")
    if method == "stack":
        coef = spec.get("coef")
        if not (isinstance(coef, list) and len(coef) == 2 and all(map(number, coef)) and number(spec.get("intercept"))):
            raise ValueError(f"{source}: combine 'stack' needs 'coef' (two numbers) and 'intercept', got {spec!r}")
    return dict(spec)


def _pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def fit_stack(model: np.ndarray, ngram: np.ndarray, labels: np.ndarray, seed: int = 42) -> dict[str, Any]:
    """``stack`` spec: logistic regression on the two logits."""
    from sklearn.linear_model import LogisticRegression

    x = np.column_stack([_logit(model), _logit(ngram)])
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(x, labels)
    return {"method": "stack", "coef": [float(v) for v in lr.coef_[0]], "intercept": float(lr.intercept_[0])}


def _stack_out_of_fold(model: np.ndarray, ngram: np.ndarray, labels: np.ndarray, seed: int) -> Optional[np.ndarray]:
    """Stacked scores for each validation row from a stack fitted on the other folds (None when too few rows)."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(5, int(labels.sum()), int(len(labels) - labels.sum()))
    if folds < 2:
        return None
    out = np.zeros(len(labels))
    for fit_idx, score_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(model, labels):
        spec = fit_stack(model[fit_idx], ngram[fit_idx], labels[fit_idx], seed)
        out[score_idx] = combine_scores(model[score_idx], ngram[score_idx], spec)
    return out


def choose_combination(method: str, model: Sequence[float] | np.ndarray, ngram: Sequence[float] | np.ndarray,
                       labels: Sequence[int], seed: int = 42) -> dict[str, Any]:
    """The ``combine`` spec for ``method`` (``EvalConfig.combine``), chosen on *validation* scores.

    ``auto`` compares, by validation PR-AUC, the weighted means with weight 0, 0.1, ..., 1 (0 and 1 are the
    parts alone, so the choice is never worse than the better part on validation) and the logistic stack
    (judged on out-of-fold scores, so it is not favoured for being fitted on the same rows). Ties go to the
    weight nearest 0.5. The spec records every candidate's validation PR-AUC (``candidates``).
    """
    m, g, y = (np.asarray(v, dtype=np.float64) for v in (model, ngram, labels))
    y = y.astype(np.int64)
    if method in ("model", "ngram"):
        return {"method": method}
    if method == "mean":
        return {"method": "mean", "weight": 0.5}
    if method == "stack":
        return fit_stack(m, g, y, seed)
    if method != "auto":
        raise ValueError(f"unknown combine method {method!r}")
    candidates: list[dict[str, Any]] = []
    for w in np.round(np.linspace(0.0, 1.0, 11), 2):
        auc = _pr_auc(y, combine_scores(m, g, {"method": "mean", "weight": float(w)}))
        candidates.append({"method": "mean", "weight": float(w), "validation_pr_auc": auc})
    stacked = _stack_out_of_fold(m, g, y, seed)
    if stacked is not None:
        candidates.append({"method": "stack", "validation_pr_auc": _pr_auc(y, stacked)})
    scored = [c for c in candidates if not math.isnan(c["validation_pr_auc"])]
    if not scored:
        return {"method": "mean", "weight": 0.5, "chosen_by": "default (validation holds one class)"}
    best_auc = max(c["validation_pr_auc"] for c in scored)
    best = [c for c in scored if c["validation_pr_auc"] >= best_auc - 1e-9]
    # Prefer a mean (stack only when it is strictly better), the weight nearest 0.5.
    means = [c for c in best if c["method"] == "mean"]
    pick = min(means, key=lambda c: abs(c["weight"] - 0.5)) if means else best[0]
    spec = fit_stack(m, g, y, seed) if pick["method"] == "stack" else {"method": "mean", "weight": pick["weight"]}
    if spec["method"] == "mean" and spec["weight"] in (0.0, 1.0):
        spec = {"method": "model" if spec["weight"] == 1.0 else "ngram"}
    spec["chosen_by"] = "validation PR-AUC"
    spec["validation_pr_auc"] = pick["validation_pr_auc"]
    spec["candidates"] = candidates
    return spec


__all__ = ["NGRAM_FILE", "METHODS", "NgramModel", "NgramLoadError", "char_ngrams", "combine_scores", "check_combine",
           "choose_combination", "fit_stack"]
