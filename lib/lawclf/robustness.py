"""Robustness against the keyword-bias error: the model must learn *is this a legal matter*,
not *is this a question / does it mention money*.

The failure this module attacks: legal questions come from a legal Q&A site, non-legal
texts from forums, reviews and other Q&A sites, so "借钱", "我想咨询下" or a question mark
separate the classes on the training data without meaning anything. The remedies here
are small, tested functions used by benchmarks/quality.py (which measures each one):

* :func:`source_group`: a corpus row's ``source`` (repository:file@commit) → its data set,
  so results and sampling can be per source.
* :func:`mine_hard_negatives` / :func:`select_training_rows`: a training subset that keeps
  the non-legal texts that *look* legal (high first-pass score or keyword lean) and
  balances the rest across sources, instead of a random sample dominated by the
  biggest, easiest source.
* :func:`source_balanced_weights`: per-row sampling weights (for a WeightedRandomSampler)
  that give every source of a class a comparable share of the batches.
* :func:`suspected_label_noise`: non-legal rows that an out-of-fold model is sure are
  legal: candidates for review (legal questions hidden in non-legal sources).
* :func:`threshold_for_source_fpr`: a decision threshold chosen on *validation* that keeps
  every source's false-positive rate under a cap, instead of one global F1 optimum.
* :func:`by_source_group`: rows relabelled by source group for evaluate.per_source_metrics.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

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
    return [source_group(str(r.get("source", ""))) for r in rows]


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


def mine_hard_negatives(rows: Sequence[Mapping], scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` non-legal rows with the highest ``scores`` (most legal-looking).

    ``scores`` can be a first-pass model's out-of-fold P(legal)
    (baselines.out_of_fold_scores), or a keyword-lean score; one score per row.
    """
    if len(scores) != len(rows):
        raise ValueError(f"one score per row expected: {len(scores)} scores for {len(rows)} rows")
    negatives = [i for i, r in enumerate(rows) if int(r["label"]) == 0]
    negatives.sort(key=lambda i: (-float(scores[i]), i))
    return negatives[: max(0, k)]


def select_training_rows(rows: Sequence[Mapping], n_negatives: int, n_positives: int = 0,
                         hard_scores: Optional[Sequence[float]] = None, hard_fraction: float = 0.3,
                         balance_sources: bool = True, exclude: Iterable[int] = (),
                         seed: int = 42) -> list[int]:
    """Choose a training subset (indices into ``rows``) under a compute budget.

    * positives: all legal rows, or ``n_positives`` of them spread evenly over sources;
    * negatives: first ``hard_fraction`` of ``n_negatives`` from :func:`mine_hard_negatives`
      (when ``hard_scores`` is given), the rest spread evenly over sources
      (``balance_sources``) or drawn at random;
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
        scores = np.asarray(hard_scores, dtype=np.float64).copy()
        scores[list(excluded)] = -np.inf
        chosen_neg = mine_hard_negatives(rows, scores, int(round(hard_fraction * n_negatives)))
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


def suspected_label_noise(rows: Sequence[Mapping], oof_scores: Sequence[float],
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


# --------------------------------------------------------------------------- per-source view and thresholds


def by_source_group(rows: Sequence[Mapping]) -> list[dict]:
    """Copies of ``rows`` whose ``source`` is their :func:`source_group`, for evaluate.per_source_metrics."""
    return [dict(r, source=g) for r, g in zip(rows, groups_of(rows))]


def threshold_for_source_fpr(rows: Sequence[Mapping], scores: Sequence[float], max_fpr: float = 0.03,
                             min_rows: int = 20) -> float:
    """Best-F1 threshold that keeps every non-legal source's FPR ≤ ``max_fpr`` (on these rows).

    Use it on the *validation* split. Sources with fewer than ``min_rows`` negatives are
    too small to estimate an FPR and do not constrain. Returns the max-F1 threshold when
    that already satisfies the cap, else the lowest threshold that does.
    """
    from lawclf.evaluate import choose_threshold

    labels = [int(r["label"]) for r in rows]
    s = np.asarray(scores, dtype=np.float64)
    best = choose_threshold(labels, s, "max_f1")["threshold"]
    groups = groups_of(rows)
    floor = 0.0
    for g in set(groups):
        neg = np.sort(np.array([s[i] for i, gg in enumerate(groups) if gg == g and labels[i] == 0]))
        if len(neg) < min_rows:
            continue
        allowed = int(np.floor(max_fpr * len(neg)))  # false positives this source may have
        # FPR ≤ cap ⇔ at most `allowed` negatives score ≥ threshold ⇔ threshold > neg[-allowed-1].
        floor = max(floor, float(np.nextafter(neg[len(neg) - allowed - 1], np.inf)))
    return max(best, floor)


__all__ = ["source_group", "groups_of", "source_balanced_weights", "mine_hard_negatives",
           "select_training_rows", "suspected_label_noise", "by_source_group", "threshold_for_source_fpr"]
