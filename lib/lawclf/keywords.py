"""Keyword statistics and word clouds (notebook 02, ``lawclf keywords``).

What a reader gets from one call to :func:`analyse`, under ``RunPaths(run_dir).keywords``:

- ``top_words_legal.csv`` / ``top_words_non_legal.csv``: the most frequent words per class;
- ``keyword_bias.csv``: every word seen at least ``min_count`` times, with its counts per class,
  P(legal | word) and its weighted log-odds ratio with an informative Dirichlet prior
  (Monroe, Colaresi & Quinn 2008, "Fightin' Words") and z-score — the words whose
  frequency most separates the classes, i.e. the shortcuts a classifier can learn;
- ``wordcloud_legal.png`` / ``wordcloud_non_legal.png`` and ``keyword_bias.png`` (bar chart);
- ``keyword_lean_test.csv``: how strongly each test text's words lean legal (:func:`keyword_lean`);
- ``summary.json``: the key figures and file names.

Statistics come from the train split only; the test split is used to show that the
keyword table alone already predicts labels — and where it misleads.

A little over ~400 lines: one stage (segmentation, word lists, log-odds, the word clouds), one
function a step; its figures other than the clouds are in :mod:`lawclf.plots`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import unicodedata
from collections import Counter
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence, Union

from lawclf.config import (
    LABELS,
    KeywordConfig,
    RunPaths,
    add_config_args,
    config_from_args,
)
from lawclf.fonts import FontNotFoundError, find_cjk_font
from lawclf.plots import plot_bias_bars

if TYPE_CHECKING:  # pandas is imported lazily: `lawclf --help` should stay fast
    import pandas as pd

STOPWORDS_RESOURCE = "stopwords_zh.txt"
#: Verbs, adjectives and time words every genre uses (说/好/做/到/去 …), dropped with the stop words
#: unless ``KeywordConfig.drop_generic_words`` is False: they would top both classes' tables.
GENERIC_WORDS_RESOURCE = "generic_words_zh.txt"
#: Output file names (relative to RunPaths.keywords).
FILES = {
    "bias_table": "keyword_bias.csv",
    "top_legal": "top_words_legal.csv",
    "top_non_legal": "top_words_non_legal.csv",
    "wordcloud_legal": "wordcloud_legal.png",
    "wordcloud_non_legal": "wordcloud_non_legal.png",
    "bias_plot": "keyword_bias.png",
    "lean_test": "keyword_lean_test.csv",
    "summary": "summary.json",
}

_jieba = None


def _get_jieba():
    """jieba, initialised once and quietly (it logs its dictionary loading to stderr)."""
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    return _jieba


# --------------------------------------------------------------------------- stop words & segmentation

def _read_word_list(lines: Iterable[str]) -> set[str]:
    return {w.strip().lower() for w in lines if w.strip() and not w.lstrip().startswith("#")}


@lru_cache(maxsize=2)
def _packaged_words(resource: str) -> frozenset[str]:
    text = resources.files("lawclf.resources").joinpath(resource).read_text(encoding="utf-8")
    return frozenset(_read_word_list(text.splitlines()))


def generic_words() -> frozenset[str]:
    """The packaged generic words (``resources/generic_words_zh.txt``)."""
    return _packaged_words(GENERIC_WORDS_RESOURCE)


def load_stopwords(extra_path: str | os.PathLike[str] = "", *, drop_generic_words: bool = True) -> frozenset[str]:
    """The packaged stop-word list, the packaged generic words unless ``drop_generic_words`` is
    False, and optionally a user file (one word per line, ``#`` comments)."""
    words = set(_packaged_words(STOPWORDS_RESOURCE))
    if drop_generic_words:
        words |= generic_words()
    if extra_path:
        path = Path(extra_path)
        if not path.is_file():
            raise FileNotFoundError(f"stop-word file {path} does not exist (stopwords_path / STOPWORDS_PATH)")
        words |= _read_word_list(path.read_text(encoding="utf-8").splitlines())
    return frozenset(words)


def _is_wordlike(token: str) -> bool:
    """True when the token has at least one letter or CJK ideograph (not just digits/punctuation/space)."""
    return any(unicodedata.category(ch).startswith("L") for ch in token)


def segment(text: str, stopwords: Optional[frozenset[str]] = None) -> list[str]:
    """Split a Chinese text into words with jieba (accurate mode), dropping stop words.

    Latin words are lower-cased; tokens without any letter or CJK character (punctuation,
    digits, spaces) are dropped. One-character words such as 钱 or 房 are kept.
    """
    stop = load_stopwords() if stopwords is None else stopwords
    words = []
    for token in _get_jieba().lcut(text):
        token = token.strip().lower()
        if token and token not in stop and _is_wordlike(token):
            words.append(token)
    return words


# --------------------------------------------------------------------------- counting

def count_words(docs: Iterable[Sequence[str]]) -> tuple[Counter, Counter]:
    """(token counts, document counts) over segmented documents."""
    tokens: Counter = Counter()
    doc_freq: Counter = Counter()
    for words in docs:
        tokens.update(words)
        doc_freq.update(set(words))
    return tokens, doc_freq


def top_words(tokens: Counter, doc_freq: Counter, n_docs: int, k: int) -> "pd.DataFrame":
    """The ``k`` most frequent words of one class: count, share of all words, share of texts containing it."""
    import pandas as pd

    total = sum(tokens.values()) or 1
    # Ties broken by the word itself so the table is the same on every run.
    ranked = sorted(tokens.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return pd.DataFrame(
        [{"rank": i + 1, "word": w, "count": c, "share_of_words": c / total,
          "share_of_texts": doc_freq[w] / max(n_docs, 1)} for i, (w, c) in enumerate(ranked)],
        columns=["rank", "word", "count", "share_of_words", "share_of_texts"])


def log_odds_dirichlet(counts_a: Mapping[str, int], counts_b: Mapping[str, int],
                       prior_scale: float = 0.1) -> dict[str, tuple[float, float]]:
    """Weighted log-odds ratio of every word, class a vs. class b, with an informative Dirichlet prior.

    Monroe, Colaresi & Quinn (2008), eq. 16–22. The prior counts are the pooled counts of
    both classes times ``prior_scale`` (so α_w = prior_scale·(y_aw + y_bw), α_0 = Σ α_w)::

        δ_w = log((y_aw+α_w) / (n_a+α_0−y_aw−α_w)) − log((y_bw+α_w) / (n_b+α_0−y_bw−α_w))
        σ²_w ≈ 1/(y_aw+α_w) + 1/(y_bw+α_w),   z_w = δ_w / σ_w

    Positive δ: the word is more typical of class a. The prior keeps a word seen once from
    looking as decisive as one seen fifty times, and z grows with the evidence. Swapping
    a and b flips every sign exactly. Returns ``{word: (delta, z)}``.
    """
    if prior_scale <= 0:
        raise ValueError(f"prior_scale must be > 0, got {prior_scale}")
    vocab = set(counts_a) | set(counts_b)
    n_a, n_b = sum(counts_a.values()), sum(counts_b.values())
    alpha = {w: prior_scale * (counts_a.get(w, 0) + counts_b.get(w, 0)) for w in vocab}
    alpha_0 = sum(alpha.values())
    out = {}
    for w in vocab:
        y_a, y_b, a_w = counts_a.get(w, 0), counts_b.get(w, 0), alpha[w]
        delta = (math.log((y_a + a_w) / (n_a + alpha_0 - y_a - a_w))
                 - math.log((y_b + a_w) / (n_b + alpha_0 - y_b - a_w)))
        var = 1.0 / (y_a + a_w) + 1.0 / (y_b + a_w)
        out[w] = (delta, delta / math.sqrt(var))
    return out


def keyword_bias_table(docs: Sequence[Sequence[str]], labels: Sequence[int], min_count: int = 3,
                       prior_scale: float = 0.1) -> "pd.DataFrame":
    """One row per word seen at least ``min_count`` times, sorted from most legal- to most non-legal-leaning.

    Columns: ``word``, ``count_legal``, ``count_non_legal`` (token counts), ``docs_legal``,
    ``docs_non_legal`` (texts containing the word), ``p_legal`` = P(legal | text contains the word)
    in this data, ``log_odds`` (δ, legal vs. non-legal), ``z`` and ``lean`` (``legal``/``non_legal``).
    """
    import pandas as pd

    if len(docs) != len(labels):
        raise ValueError(f"{len(docs)} documents but {len(labels)} labels")
    tok = {lab: count_words(d for d, y in zip(docs, labels) if y == lab) for lab in (0, 1)}
    for lab in (0, 1):
        if not tok[lab][0]:
            raise ValueError(f"no words in texts with label {lab} ({LABELS[lab]}): both classes are needed")
    scores = log_odds_dirichlet(tok[1][0], tok[0][0], prior_scale=prior_scale)
    rows = []
    for word, (delta, z) in scores.items():
        c1, c0 = tok[1][0][word], tok[0][0][word]
        if c1 + c0 < min_count:
            continue
        d1, d0 = tok[1][1][word], tok[0][1][word]
        rows.append({"word": word, "count_legal": c1, "count_non_legal": c0, "docs_legal": d1,
                     "docs_non_legal": d0, "p_legal": d1 / (d1 + d0), "log_odds": delta, "z": z,
                     "lean": LABELS[1] if z > 0 else LABELS[0]})
    columns = ["word", "count_legal", "count_non_legal", "docs_legal", "docs_non_legal", "p_legal",
               "log_odds", "z", "lean"]
    dtypes = {"count_legal": int, "count_non_legal": int, "docs_legal": int, "docs_non_legal": int,
              "p_legal": float, "log_odds": float, "z": float}
    table = pd.DataFrame(rows, columns=columns).astype(dtypes)  # typed even when empty
    return table.sort_values(["z", "word"], ascending=[False, True], ignore_index=True)


TableLike = Union["pd.DataFrame", Mapping[str, float]]


def _score_map(table: TableLike, column: str) -> dict[str, float]:
    if isinstance(table, Mapping):
        return {str(k): float(v) for k, v in table.items()}
    return dict(zip(table["word"].astype(str), table[column].astype(float)))


def keyword_lean(texts: Iterable[str], table: TableLike, *, column: str = "log_odds",
                 stopwords: Optional[frozenset[str]] = None) -> list[float]:
    """How strongly each text's words lean legal, by the keyword-bias table alone.

    The score of a text is the mean of ``column`` (default δ, the log-odds) over its
    content words, counting words absent from the table as 0; texts with no content word
    score 0. > 0 leans legal, < 0 non-legal; a text *full of* strongly legal-leaning words
    scores high, one that mentions a single such word among many neutral ones less so.

    Use it to find hard negatives: non-legal texts with a high lean are the ones a model
    that learned keyword shortcuts will call legal. ``table`` is a :func:`keyword_bias_table`
    DataFrame (or ``keyword_bias.csv`` read back) or a plain ``{word: score}`` mapping.
    """
    scores = _score_map(table, column)
    stop = load_stopwords() if stopwords is None else stopwords
    return [_mean_score(segment(text, stop), scores) for text in texts]


def lean_words(text: str, table: TableLike, *, column: str = "log_odds", k: int = 5,
               stopwords: Optional[frozenset[str]] = None) -> list[tuple[str, float]]:
    """The ``k`` words of ``text`` that push its lean most towards legal (largest scores first)."""
    words = segment(text, load_stopwords() if stopwords is None else stopwords)
    return _strongest_words(words, _score_map(table, column), k)


def _mean_score(words: Sequence[str], scores: Mapping[str, float]) -> float:
    return sum(scores.get(w, 0.0) for w in words) / len(words) if words else 0.0


def _strongest_words(words: Iterable[str], scores: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    found = sorted(((w, scores[w]) for w in set(words) if w in scores), key=lambda ws: (-ws[1], ws[0]))
    return found[:k]


def rank_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC of ``scores`` for ``labels`` (1 = positive), via the Mann–Whitney rank sum (ties averaged)."""
    import pandas as pd

    ranks = pd.Series(list(scores), dtype=float).rank(method="average").to_numpy()
    pos = [r for r, y in zip(ranks, labels) if y == 1]
    n_pos, n_neg = len(pos), len(labels) - len(pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((sum(pos) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --------------------------------------------------------------------------- pictures

def render_wordcloud(frequencies: Mapping[str, float], font_path: str | os.PathLike[str],
                     out_path: str | os.PathLike[str], *, max_words: int = 150, colormap: str = "viridis",
                     seed: int = 42, width: int = 900, height: int = 450) -> Path:
    """Draw a word cloud from our own frequencies with a CJK font and save it as PNG.

    ``generate_from_frequencies`` is used instead of ``generate(text)`` on purpose: wordcloud's
    own tokenizer splits on spaces (Chinese has none) and its default regexp keeps only
    words of 2+ characters, which would silently drop 钱, 房, 债 and friends.
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from wordcloud import WordCloud

    # Only the darker 45–100 % of the colour map: the palest shades are unreadable on white.
    palette = ListedColormap(colormaps[colormap](np.linspace(0.45, 1.0, 64)))
    freqs = {w: float(c) for w, c in frequencies.items() if c > 0}
    if not freqs:
        raise ValueError(f"no words to draw for {out_path}: every frequency is zero")
    path = find_cjk_font(str(font_path))  # re-checked: a wrong font would draw boxes
    cloud = WordCloud(font_path=str(path), width=width, height=height, background_color="white",
                      max_words=max_words, colormap=palette, random_state=seed, prefer_horizontal=1.0)
    cloud.generate_from_frequencies(freqs)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cloud.to_file(str(out))
    return out


# --------------------------------------------------------------------------- the stage

def _word_rows(table: "pd.DataFrame", words: Iterable[str]) -> dict[str, Optional[dict]]:
    indexed = table.set_index("word")
    out: dict[str, Optional[dict]] = {}
    for w in words:
        if w in indexed.index:
            row = indexed.loc[w]
            out[w] = {"count_legal": int(row["count_legal"]), "count_non_legal": int(row["count_non_legal"]),
                      "p_legal": round(float(row["p_legal"]), 4), "log_odds": round(float(row["log_odds"]), 4),
                      "z": round(float(row["z"]), 3), "rank_legal": int(indexed.index.get_loc(w)) + 1}
        else:
            out[w] = None  # below min_count or never seen: said explicitly, not dropped
    return out


def in_jieba_dictionary(word: str) -> bool:
    """True when ``word`` is an entry of jieba's dictionary (not a word its HMM assembled)."""
    return bool(_get_jieba().dt.FREQ.get(word))


def segmentation_artefacts(words: Iterable[str], texts: Sequence[str], docs: Sequence[Sequence[str]],
                           context: int = 8) -> list[dict]:
    """Chinese words of two or more characters among ``words`` that jieba's dictionary lacks, with
    the first text that produced each: words jieba's HMM assembled from characters it had no entry
    for. Some are real words the dictionary misses, some are artefacts that glue two words' pieces
    (下该 from 咨询下该怎么办 = 咨询 / 下 / 该 / 怎么办); :func:`analyse` keeps them, and notebook 02 shows them."""
    out = []
    for word in dict.fromkeys(words):
        if len(word) < 2 or not all("\u4e00" <= ch <= "\u9fff" for ch in word) or in_jieba_dictionary(word):
            continue
        example = next((t for t, d in zip(texts, docs) if word in d), "")
        at = example.find(word)
        snippet = example[max(0, at - context):at + len(word) + context] if at >= 0 else example[:2 * context]
        out.append({"word": word, "texts": sum(1 for d in docs if word in d), "example": snippet})
    return out


def _top_biased(table: "pd.DataFrame", k: int, legal: bool) -> list[dict]:
    part = table.nlargest(k, "z") if legal else table.nsmallest(k, "z")
    part = part[part["z"] > 0] if legal else part[part["z"] < 0]
    return [{"word": r.word, "z": round(float(r.z), 3), "p_legal": round(float(r.p_legal), 4),
             "count_legal": int(r.count_legal), "count_non_legal": int(r.count_non_legal)}
            for r in part.itertuples()]


def analyse(cfg: KeywordConfig) -> dict:
    """Run the keyword stage on ``cfg.run_dir`` (needs ``splits/`` from the data stage); return the summary.

    Raises :class:`~lawclf.fonts.FontNotFoundError` before any work when no CJK font is
    available, so no picture with empty boxes is ever written.
    """
    from lawclf.data import load_split

    font = find_cjk_font(cfg.font_path)
    stop = load_stopwords(cfg.stopwords_path, drop_generic_words=cfg.drop_generic_words)
    paths = RunPaths(cfg.run_dir)
    train = load_split(cfg.run_dir, "train")
    test = load_split(cfg.run_dir, "test")
    out_dir = paths.keywords
    out_dir.mkdir(parents=True, exist_ok=True)

    docs = [segment(r["text"], stop) for r in train]
    labels = [int(r["label"]) for r in train]
    if set(labels) != {0, 1}:
        raise ValueError(f"{paths.split_file('train')}: needs texts of both labels 0 and 1, found {sorted(set(labels))}")

    table = keyword_bias_table(docs, labels, min_count=cfg.min_count, prior_scale=cfg.prior_scale)
    if table.empty:
        raise ValueError(f"{paths.split_file('train')}: no word occurs at least min_count={cfg.min_count} times; "
                         "lower min_count (MIN_COUNT / --min-count)")
    table.to_csv(out_dir / FILES["bias_table"], index=False, encoding="utf-8")

    per_class = {}
    shown: list[str] = []  # every word a table or word cloud puts in front of the reader
    for lab, name in ((1, "legal"), (0, "non_legal")):
        tokens, doc_freq = count_words(d for d, y in zip(docs, labels) if y == lab)
        n_docs = labels.count(lab)
        top = top_words(tokens, doc_freq, n_docs, cfg.top_k)
        top.to_csv(out_dir / FILES[f"top_{name}"], index=False, encoding="utf-8")
        shown += list(top["word"])
        render_wordcloud(tokens, font, out_dir / FILES[f"wordcloud_{name}"], max_words=cfg.wordcloud_max_words,
                         colormap="Reds" if lab == 1 else "Blues", seed=cfg.seed)
        per_class[name] = {"texts": n_docs, "words": sum(tokens.values()), "distinct_words": len(tokens)}
    plot_bias_bars(table, out_dir / FILES["bias_plot"], top_k=cfg.top_k, font_path=str(font))

    # The table from train, applied to unseen test texts: how far do keywords alone get?
    scores = _score_map(table, "log_odds")
    test_docs = [segment(r["text"], stop) for r in test]  # segmented once: same as keyword_lean(texts)
    lean = [_mean_score(words, scores) for words in test_docs]
    _write_lean_table(test, test_docs, lean, scores, out_dir / FILES["lean_test"])
    test_labels = [int(r["label"]) for r in test]
    non_legal_lean = sorted(((s, r) for s, r in zip(lean, test) if int(r["label"]) == 0), key=lambda x: -x[0])

    watch = [w.strip() for w in cfg.watch_words.split(",") if w.strip()]
    top_legal, top_non_legal = (_top_biased(table, cfg.top_k, legal=side) for side in (True, False))
    shown += [w["word"] for w in top_legal + top_non_legal]
    summary = {
        "run_dir": str(cfg.run_dir),
        "font_path": str(font),
        "train": per_class,
        # Compare every p_legal with this: P(legal) over all train texts.
        "train_legal_share": round(labels.count(1) / len(labels), 4),
        "vocabulary": int(len(table)),
        "min_count": cfg.min_count,
        "prior_scale": cfg.prior_scale,
        "drop_generic_words": cfg.drop_generic_words,
        "top_legal_words": top_legal,
        "top_non_legal_words": top_non_legal,
        "watch_words": _word_rows(table, watch),
        # Words in the tables above that jieba's HMM assembled (not in its dictionary): kept, shown in 02.
        "segmentation_artefacts": segmentation_artefacts(shown, [r["text"] for r in train], docs),
        "test_keyword_lean_auc": round(rank_auc(lean, test_labels), 4),
        "test_non_legal_leaning_legal": sum(1 for s, _ in non_legal_lean if s > 0),
        "test_non_legal": len(non_legal_lean),
        "hard_negative_ids": [r["id"] for _, r in non_legal_lean[:10]],
        "files": {k: v for k, v in FILES.items()},
        "out_dir": str(out_dir),
    }
    (out_dir / FILES["summary"]).write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    return summary


def _write_lean_table(rows: Sequence[dict], docs: Sequence[Sequence[str]], lean: Sequence[float],
                      scores: Mapping[str, float], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({
        "id": [r["id"] for r in rows],
        "label": [int(r["label"]) for r in rows],
        "keyword_lean": lean,
        "legal_words": [" ".join(w for w, s in _strongest_words(words, scores, 5) if s > 0) for words in docs],
        "text": [r["text"] for r in rows],
    })
    frame.sort_values(["keyword_lean", "id"], ascending=[False, True]).to_csv(path, index=False, encoding="utf-8")


def load_bias_table(run_dir: str | os.PathLike[str]) -> "pd.DataFrame":
    """``keyword_bias.csv`` of a run, as written by :func:`analyse` (for :func:`keyword_lean` in later stages)."""
    import pandas as pd

    path = RunPaths(run_dir).keywords / FILES["bias_table"]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the keyword stage first (notebook 02 or `lawclf keywords`)")
    return pd.read_csv(path, encoding="utf-8", keep_default_na=False, dtype={"word": str})


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf keywords --run-dir runs/sample [--font-path ...]``."""
    parser = argparse.ArgumentParser(prog="lawclf keywords", description=__doc__.split("\n\n")[0])
    add_config_args(parser, KeywordConfig)
    cfg = config_from_args(KeywordConfig, parser.parse_args(argv))
    try:
        summary = analyse(cfg)
    except (FontNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"lawclf keywords: {exc}", file=sys.stderr)
        return 1
    legal = ", ".join(w["word"] for w in summary["top_legal_words"][:10])
    non_legal = ", ".join(w["word"] for w in summary["top_non_legal_words"][:10])
    print(f"legal-leaning words:     {legal}\nnon-legal-leaning words: {non_legal}\n"
          f"keyword-only AUC on test: {summary['test_keyword_lean_auc']}\nwritten to {summary['out_dir']}")
    return 0


__all__ = ["load_stopwords", "generic_words", "in_jieba_dictionary", "segmentation_artefacts", "segment",
           "count_words", "top_words", "log_odds_dirichlet", "keyword_bias_table",
           "keyword_lean", "lean_words", "rank_auc", "render_wordcloud", "analyse",
           "load_bias_table", "cli", "FILES"]
