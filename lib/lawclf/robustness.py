"""Robustness against the keyword-bias error: the model must learn *is this a legal matter*,
not *is this a question / does it mention money*.

The failure this module attacks: legal questions come from a legal Q&A site, non-legal
texts from forums, reviews and other Q&A sites, so "借钱", "我想咨询下" or a question mark
separate the classes on the training data without meaning anything. The remedies here
are small, tested functions; benchmarks/quality.py measures each recipe:

* :func:`apply_recipe`: the training-set recipes of the product (``TrainConfig.recipe``,
  ``lawclf train --recipe``), built from the pieces below.
* :func:`mine_hard_negatives` / :func:`select_training_rows`: a training subset that keeps
  the non-legal texts that *look* legal (high first-pass score or keyword lean) and
  balances the rest across sources, instead of a random sample dominated by the
  biggest, easiest source.
* :func:`source_balanced_weights`: per-row sampling weights (for a WeightedRandomSampler)
  that give every source of a class a comparable share of the batches.
* :func:`suspected_label_noise`: non-legal rows that an out-of-fold model is sure are
  legal: candidates for review (legal questions hidden in non-legal sources).

Source groups (:func:`lawclf.metrics.source_group`) and the ``fpr_cap`` threshold
(:func:`lawclf.metrics.choose_threshold`) live in :mod:`lawclf.metrics`.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from lawclf.metrics import ArrayLike, groups_of
from lawclf.recipes import RECIPE_TABLE, Recipe

# --------------------------------------------------------------------------- sampling


def source_balanced_weights(rows: Sequence[Mapping], power: float = 0.5) -> np.ndarray:
    """Per-row sampling weights that flatten the source distribution within each class.

    A row of a source with ``n`` rows gets weight ``n ** -power``: ``power=1`` gives every
    source of a class the same total mass, ``0`` keeps the natural mix, ``0.5`` sits between
    (big sources still count more, but a 30k-row forum no longer drowns an 8k-row Q&A
    site). Weights are then rescaled so each class keeps its original total share: this
    balances *sources*, not classes (class balance is the loss's job).
    """
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"power must be in [0, 1], got {power}")
    groups = groups_of(rows)
    labels = [int(r["label"]) for r in rows]
    counts = Counter(zip(labels, groups))
    w = np.array([counts[(y, g)] ** -power for y, g in zip(labels, groups)], dtype=np.float64)
    for label in set(labels):
        mask = np.array([y == label for y in labels])
        w[mask] *= mask.sum() / w[mask].sum()
    return w / w.sum()


def mine_hard_negatives(rows: Sequence[Mapping], scores: ArrayLike, k: int) -> list[int]:
    """Indices of the ``k`` non-legal rows with the highest ``scores`` (most legal-looking).

    ``scores`` can be a first-pass model's out-of-fold P(legal)
    (baselines.out_of_fold_scores), or a keyword-lean score; one score per row.
    """
    if len(scores) != len(rows):
        raise ValueError(f"one score per row expected: {len(scores)} scores for {len(rows)} rows")
    negatives = [i for i, r in enumerate(rows) if int(r["label"]) == 0]
    negatives.sort(key=lambda i: (-float(scores[i]), i))
    return negatives[: max(0, k)]


def hard_negatives(rows: Sequence[Mapping], scores: ArrayLike, exclude: Iterable[int], k: int,
                   spread: bool = False) -> list[int]:
    """:func:`mine_hard_negatives` among the rows not in ``exclude`` (excluded rows rank last).

    ``spread``: draw them from every source group (genre) — equal quotas, water-filled, the
    highest-scored rows of each group — instead of the ``k`` highest overall. The overall top
    tends to come from one or two genres that resemble the legal source; a genre the model
    has never been pushed on is where an unseen one will fool it."""
    excluded = set(exclude)
    if not spread:
        masked = np.asarray(scores, dtype=np.float64).copy()
        masked[list(excluded)] = -np.inf
        return mine_hard_negatives(rows, masked, k)
    groups = groups_of(rows)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i in mine_hard_negatives(rows, scores, len(rows)):  # every negative, most legal-looking first
        if i not in excluded:
            by_group[groups[i]].append(i)
    quota = _even_quota({g: len(m) for g, m in by_group.items()}, max(0, k))
    chosen = [i for g, members in sorted(by_group.items()) for i in members[: quota[g]]]
    return sorted(chosen, key=lambda i: (-float(scores[i]), i))


def select_training_rows(rows: Sequence[Mapping], n_negatives: int, n_positives: int = 0,
                         hard_scores: Optional[ArrayLike] = None, hard_fraction: float = 0.3,
                         balance_sources: bool = True, exclude: Iterable[int] = (),
                         seed: int = 42, spread_hard: bool = False) -> list[int]:
    """Choose a training subset (indices into ``rows``) under a compute budget.

    * positives: all legal rows, or ``n_positives`` of them spread evenly over sources;
    * negatives: first ``hard_fraction`` of ``n_negatives`` from :func:`mine_hard_negatives`
      (when ``hard_scores`` is given; from every source group with ``spread_hard``), the rest
      spread evenly over sources (``balance_sources``) or drawn at random;
    * ``exclude``: indices never to use (e.g. suspected label noise).

    Deterministic for a given ``seed``; the result is shuffled.
    """
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    rng = random.Random(seed)
    excluded = set(exclude)
    groups = groups_of(rows)
    pos = [i for i, r in enumerate(rows) if int(r["label"]) == 1 and i not in excluded]
    neg = [i for i, r in enumerate(rows) if int(r["label"]) == 0 and i not in excluded]

    chosen_pos = pos if not n_positives or n_positives >= len(pos) else _spread(pos, groups, n_positives, rng)
    chosen_neg: list[int] = []
    if hard_scores is not None and hard_fraction > 0:
        chosen_neg = hard_negatives(rows, hard_scores, excluded, int(round(hard_fraction * n_negatives)),
                                    spread=spread_hard)
    taken = set(chosen_neg)
    rest = [i for i in neg if i not in taken]
    need = max(0, min(n_negatives, len(neg)) - len(chosen_neg))
    if balance_sources:
        chosen_neg += _spread(rest, groups, need, rng)
    else:
        chosen_neg += rng.sample(rest, min(need, len(rest)))
    out = list(chosen_pos) + chosen_neg
    rng.shuffle(out)
    return out


def _spread(indices: list[int], groups: Sequence[str], n: int, rng: random.Random) -> list[int]:
    """``n`` indices spread as evenly as possible over groups (small groups are taken whole)."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        by_group[groups[i]].append(i)
    for members in by_group.values():
        rng.shuffle(members)
    quota = _even_quota({g: len(m) for g, m in by_group.items()}, n)
    return [i for g, members in sorted(by_group.items()) for i in members[: quota[g]]]


def _even_quota(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """Water-filling: equal shares, a group smaller than its share gives the rest to others."""
    quota = {g: 0 for g in sizes}
    left, open_groups = min(n, sum(sizes.values())), sorted(sizes, key=lambda g: sizes[g])
    while left > 0 and open_groups:
        share = max(1, left // len(open_groups))
        for g in list(open_groups):
            take = min(share, sizes[g] - quota[g], left)
            quota[g] += take
            left -= take
            if quota[g] >= sizes[g]:
                open_groups.remove(g)
            if left == 0:
                break
    return quota


# --------------------------------------------------------------------------- cleaning


def suspected_label_noise(rows: Sequence[Mapping], oof_scores: ArrayLike,
                          threshold: float = 0.9) -> list[int]:
    """Non-legal rows an out-of-fold model rates legal with P ≥ ``threshold``, most confident first.

    These are where legal questions hide in non-legal sources (a Zhidao question about a
    labour dispute is a legal question whatever its source). Review them; quality.py can
    drop them from *training* only; test labels are never changed.
    """
    if len(oof_scores) != len(rows):
        raise ValueError(f"one score per row expected: {len(oof_scores)} scores for {len(rows)} rows")
    idx = [i for i, r in enumerate(rows) if int(r["label"]) == 0 and float(oof_scores[i]) >= threshold]
    return sorted(idx, key=lambda i: -float(oof_scores[i]))


# --------------------------------------------------------------------------- short forms

#: A sentence: text up to and including its closing punctuation.
_SENTENCE = re.compile(r"[^。！？!?；;…]+[。！？!?；;…]*")
#: Rows at least this long get a short form; short forms are this long (characters).
SHORT_FROM, SHORT_MIN, SHORT_MAX = 40, 6, 30


def _lean_of(table: Mapping[str, float]):
    def lean(text: str) -> float:
        from lawclf.baselines import char_bigrams

        grams = char_bigrams(text)
        return sum(table.get(g, 0.0) for g in grams) / max(1, len(grams))
    return lean


def short_form(text: str, lean, rng: random.Random) -> Optional[str]:
    """The short part of a long text that leans most legal by its words: one of its sentences of
    :data:`SHORT_MIN`..:data:`SHORT_MAX` characters, or, when it has none, one of its windows of a
    random short length. Taking the most legal-looking part on *both* sides keeps a generic
    "请问该怎么办？" out of the legal short forms and makes the non-legal ones hard negatives."""
    parts = [p.strip() for p in _SENTENCE.findall(text)]
    parts = [p for p in parts if SHORT_MIN <= len(p) <= SHORT_MAX]
    if not parts:
        n = rng.randint(2 * SHORT_MIN, SHORT_MAX)
        if len(text) <= n:
            return None
        parts = [text[i:i + n] for i in range(0, len(text) - n + 1, max(1, n // 2))]
    return max(parts, key=lean)


def short_forms(rows: Sequence[Mapping], share: float, seed: int = 42) -> list[dict]:
    """New train rows: a short form (:func:`short_form`) of ``share`` of the rows of at least
    :data:`SHORT_FROM` characters, legal and non-legal alike (so length is no label), each keeping
    its row's label and source (``id`` gets ``#short``). A short form whose text (dedup key) is
    already a row, or turns up under both labels, is not added."""
    from lawclf.baselines import log_odds_table
    from lawclf.text import dedup_key

    if share <= 0 or not rows:
        return []
    labels = [int(r["label"]) for r in rows]
    if len(set(labels)) < 2:
        return []
    lean = _lean_of({w: delta for w, delta, _p, _n in log_odds_table([str(r["text"]) for r in rows], labels)})
    rng = random.Random(seed)
    long = [i for i, r in enumerate(rows) if len(str(r["text"])) >= SHORT_FROM]
    picked = sorted(rng.sample(long, int(round(share * len(long)))))
    seen = {dedup_key(str(r["text"])) for r in rows}
    made: dict[str, list[dict]] = defaultdict(list)
    for i in picked:
        text = short_form(str(rows[i]["text"]), lean, rng)
        key = dedup_key(text) if text else ""
        if key and key not in seen:
            made[key].append({**dict(rows[i]), "id": f"{rows[i].get('id', i)}#short", "text": text})
    return [forms[0] for forms in made.values() if len({int(f["label"]) for f in forms}) == 1]


# --------------------------------------------------------------------------- recipes


#: Training-set recipes by name (:class:`lawclf.recipes.Recipe` says what each does).
RECIPES: dict[str, Recipe] = RECIPE_TABLE
#: Where the suspected label noise a recipe left out is written (under the run's reports/).
SUSPECTED_NOISE_FILE = "suspected_noise.jsonl"


@dataclass
class TrainingSet:
    """What a recipe chose: ``indices`` into the train rows, the report for ``lawclf_meta.json``,
    and the suspected-noise rows it left out (each with its out-of-fold ``oof_score``)."""

    indices: list[int]
    report: dict[str, Any]
    suspected_noise: list[dict] = field(default_factory=list)


def apply_recipe(rows: Sequence[Mapping], recipe: str = "plain", *, negatives: int = 0, positives: int = 0,
                 negatives_per_source: int = 0, hard_fraction: float = 0.3, noise_threshold: float = 0.9,
                 oof_folds: int = 3, seed: int = 42) -> TrainingSet:
    """Choose the rows a model trains on (see :data:`RECIPES`).

    * ``plain``: every row (or a random ``negatives`` / ``positives`` budget);
    * ``balanced``: non-legal rows spread evenly over source groups;
    * ``hardneg``: balanced, with ``hard_fraction`` of the non-legal rows being the most
      legal-looking ones by an out-of-fold TF-IDF model (``oof_folds`` folds);
    * ``robust``: hardneg without the non-legal rows that model rates legal with
      P >= ``noise_threshold`` (suspected label noise, returned for a person to review);
    * ``diverse``: robust with the hard negatives drawn from every source group (genre),
      the most legal-looking of each, instead of the most legal-looking overall.

    ``negatives`` / ``positives`` cap the non-legal / legal rows (0 = all);
    ``negatives_per_source`` caps any one non-legal source group (0 = no cap; a seeded
    random subset of a bigger group is kept). Deterministic for a given ``seed``.
    ``plain`` with no caps returns the rows unchanged, in order.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    chosen = RECIPES[recipe]
    balance, hard, clean, spread_hard = chosen.balance, chosen.hard_negatives, chosen.clean, chosen.spread_hard
    settings: dict[str, Any] = {"negatives": negatives, "positives": positives,
                                "negatives_per_source": negatives_per_source, "seed": seed}
    if hard:
        settings.update(hard_fraction=hard_fraction, oof_folds=oof_folds)
    if clean:
        settings["noise_threshold"] = noise_threshold
    report: dict[str, Any] = {"recipe": recipe, "settings": settings, "rows_in": len(rows)}
    if recipe == "plain" and not (negatives or positives or negatives_per_source):
        indices = list(range(len(rows)))
        return TrainingSet(indices, _recipe_counts(report, rows, indices, hard=[], noise=[], capped=0))

    groups = groups_of(rows)
    capped = _over_source_cap(rows, groups, negatives_per_source, seed) if negatives_per_source else []
    scores: Optional[np.ndarray] = None
    if hard or clean:
        from lawclf.baselines import out_of_fold_scores

        scores = out_of_fold_scores([str(r["text"]) for r in rows], [int(r["label"]) for r in rows],
                                    folds=oof_folds, seed=seed)
    noise = suspected_label_noise(rows, scores, noise_threshold) if clean and scores is not None else []
    excluded = set(capped) | set(noise)
    available = sum(1 for i, r in enumerate(rows) if int(r["label"]) == 0 and i not in excluded)
    n_neg = min(negatives, available) if negatives else available
    indices = select_training_rows(rows, n_negatives=n_neg, n_positives=positives,
                                   hard_scores=scores if hard else None, hard_fraction=hard_fraction if hard else 0.0,
                                   balance_sources=balance, exclude=excluded, seed=seed, spread_hard=spread_hard)
    hard_idx: list[int] = []
    if hard and scores is not None:  # the same hard negatives select_training_rows took first
        hard_idx = hard_negatives(rows, scores, excluded, int(round(hard_fraction * n_neg)), spread=spread_hard)
    noise_rows = [{**dict(rows[i]), "oof_score": float(scores[i])} for i in noise] if scores is not None else []
    return TrainingSet(indices, _recipe_counts(report, rows, indices, hard=hard_idx, noise=noise,
                                               capped=len(capped)), noise_rows)


def _over_source_cap(rows: Sequence[Mapping], groups: Sequence[str], cap: int, seed: int) -> list[int]:
    """Non-legal rows beyond ``cap`` in their source group (a seeded random choice)."""
    rng = random.Random(seed)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if int(r["label"]) == 0:
            by_group[groups[i]].append(i)
    over: list[int] = []
    for g in sorted(by_group):
        members = by_group[g]
        if len(members) > cap:
            rng.shuffle(members)
            over += members[cap:]
    return sorted(over)


def _recipe_counts(report: dict[str, Any], rows: Sequence[Mapping], indices: Sequence[int], *, hard: Sequence[int],
                   noise: Sequence[int], capped: int) -> dict[str, Any]:
    chosen = set(indices)
    groups = groups_of(rows)
    per_group: Counter[str] = Counter(groups[i] for i in indices if int(rows[i]["label"]) == 0)
    report.update(
        rows_out=len(indices),
        positives=sum(1 for i in indices if int(rows[i]["label"]) == 1),
        negatives=sum(1 for i in indices if int(rows[i]["label"]) == 0),
        hard_negatives=sum(1 for i in hard if i in chosen),
        hard_negatives_per_group=dict(sorted(Counter(groups[i] for i in hard if i in chosen).items())),
        suspected_noise_dropped=len(noise),
        negatives_over_source_cap=capped,
        negatives_per_group=dict(sorted(per_group.items())),
    )
    return report


__all__ = ["short_form", "short_forms",
           "source_balanced_weights", "mine_hard_negatives", "hard_negatives", "select_training_rows", "suspected_label_noise",
           "RECIPES", "SUSPECTED_NOISE_FILE", "TrainingSet", "apply_recipe"]
