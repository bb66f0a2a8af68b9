"""Two strong, cheap baselines the BERT model has to beat (benchmarks/quality.py).

* :class:`KeywordFilter`: the naive rule a first attempt would ship: "flag a post
  that contains legal-sounding words". The words are learned from the training
  split (smoothed log-odds of a word in legal vs non-legal texts), never typed by hand,
  so it is the fairest version of the idea and shows exactly the keyword-bias error.
* :class:`TfidfCharLR`: TF-IDF over character 1–3-grams + logistic regression. No word
  segmentation, trains in seconds and is hard to beat on in-domain text; it is the bar.

Both expose ``fit(texts, labels)`` and ``predict_proba(texts) -> np.ndarray`` (P(legal)),
the same shape as the neural model's scores, so one metrics function serves all.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from lawclf.ngram import NgramModel

Tokenize = Callable[[str], Iterable[str]]


def char_bigrams(text: str) -> list[str]:
    """Overlapping character bigrams: a segmentation-free 'word' for Chinese."""
    text = "".join(text.split())
    return [text[i:i + 2] for i in range(len(text) - 1)]


def log_odds_table(texts: Sequence[str], labels: Sequence[int], tokenize: Tokenize = char_bigrams,
                   min_count: int = 5, prior_scale: float = 0.1) -> list[tuple[str, float, int, int]]:
    """``(word, log_odds, legal_docs, nonlegal_docs)`` sorted most legal-leaning first.

    Counts are document frequencies (a word repeated in one post counts once); the
    log-odds are the project's one implementation, :func:`lawclf.keywords.log_odds_dirichlet`
    (weighted log-odds with an informative Dirichlet prior), here over those counts.
    """
    from lawclf.keywords import log_odds_dirichlet

    if len(texts) != len(labels):
        raise ValueError(f"texts and labels differ in length: {len(texts)} vs {len(labels)}")
    n_pos = sum(1 for y in labels if int(y) == 1)
    if n_pos == 0 or n_pos == len(labels):
        raise ValueError("log-odds need both legal (1) and non-legal (0) texts")
    pos: Counter[str] = Counter()
    neg: Counter[str] = Counter()
    for text, y in zip(texts, labels):
        (pos if int(y) == 1 else neg).update(set(tokenize(text)))
    stats = log_odds_dirichlet(pos, neg, prior_scale)
    table = [(w, delta, pos[w], neg[w]) for w, (delta, _z) in stats.items() if pos[w] + neg[w] >= min_count]
    table.sort(key=lambda r: (-r[1], r[0]))
    return table


class KeywordFilter:
    """Flag a text when it contains learned legal-leaning keywords.

    ``fit`` keeps the ``top_k`` words with the highest log-odds that appear in at least
    ``min_legal_share`` of legal texts (frequent *and* distinctive, like the words a person
    would pick). The score is the share of those keywords hit, squashed to [0, 1]; the
    filter's own decision is "at least ``min_hits`` keywords" (:meth:`predict`).
    """

    def __init__(self, top_k: int = 50, min_hits: int = 1, tokenize: Tokenize = char_bigrams,
                 min_count: int = 5, min_legal_share: float = 0.01):
        self.top_k, self.min_hits, self.tokenize = top_k, min_hits, tokenize
        self.min_count, self.min_legal_share = min_count, min_legal_share
        self.keywords: list[str] = []

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> "KeywordFilter":
        n_pos = max(1, sum(1 for y in labels if int(y) == 1))
        table = log_odds_table(texts, labels, self.tokenize, self.min_count)
        frequent = [row for row in table if row[1] > 0 and row[2] / n_pos >= self.min_legal_share]
        self.keywords = [row[0] for row in frequent[: self.top_k]]
        if not self.keywords:
            raise ValueError("no legal-leaning keyword passed the filters; lower min_count/min_legal_share")
        return self

    def hits(self, texts: Sequence[str]) -> np.ndarray:
        vocab = set(self.keywords)
        return np.array([len(vocab.intersection(self.tokenize(t))) for t in texts], dtype=np.int64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Monotone score in [0, 1): 1 - 1/(1 + hits); ``min_hits`` hits ↔ 1 - 1/(1 + min_hits)."""
        return 1.0 - 1.0 / (1.0 + self.hits(texts))

    @property
    def threshold(self) -> float:
        """The score at which :meth:`predict_proba` equals the rule "≥ min_hits keywords"."""
        return 1.0 - 1.0 / (1.0 + self.min_hits) - 1e-9

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (self.hits(texts) >= self.min_hits).astype(np.int64)


class TfidfCharLR:
    """TF-IDF on character n-grams + logistic regression (scikit-learn)."""

    def __init__(self, ngram_range: tuple[int, int] = (1, 3), min_df: int = 2, max_features: int = 300_000,
                 C: float = 4.0, class_weight: Optional[str] = "balanced", seed: int = 42):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.pipeline = make_pipeline(
            # analyzer="char" keeps punctuation and spaces: "？" and "我想" are signals too.
            TfidfVectorizer(analyzer="char", ngram_range=ngram_range, min_df=min_df,
                            max_features=max_features, sublinear_tf=True, lowercase=True),
            LogisticRegression(C=C, class_weight=class_weight, max_iter=2000, random_state=seed),
        )

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> "TfidfCharLR":
        self.pipeline.fit(list(texts), np.asarray(labels, dtype=np.int64))
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline.predict_proba(list(texts))[:, 1]

    def to_ngram_model(self) -> "NgramModel":
        """The fitted pipeline as plain arrays the server scores without scikit-learn."""
        from lawclf.ngram import NgramModel

        return NgramModel.from_pipeline(self.pipeline)


def out_of_fold_scores(texts: Sequence[str], labels: Sequence[int], folds: int = 5, seed: int = 42,
                       make_model: Callable[[], Any] = TfidfCharLR) -> np.ndarray:
    """P(legal) for every training text from a model that never saw it (k-fold).

    A non-legal text that a model trained on *other* texts still scores high is a hard
    negative (it looks legal) or a mislabelled legal question; see
    robustness.mine_hard_negatives and robustness.suspected_label_noise.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=np.int64)
    texts = list(texts)
    scores = np.zeros(len(texts), dtype=np.float64)
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, y):
        model = make_model()
        model.fit([texts[i] for i in train_idx], y[train_idx])
        scores[test_idx] = model.predict_proba([texts[i] for i in test_idx])
    return scores


__all__ = ["char_bigrams", "log_odds_table", "KeywordFilter", "TfidfCharLR",
           "out_of_fold_scores"]
