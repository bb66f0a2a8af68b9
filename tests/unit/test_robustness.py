"""Robustness helpers on small made-up rows (never the real corpus)."""

import numpy as np
import pytest

from lawclf.metrics import (
    choose_threshold,
    per_source_metrics,
    source_group,
    threshold_for_source_fpr,
)
from lawclf.robustness import (
    RECIPES,
    apply_recipe,
    hard_negatives,
    mine_hard_negatives,
    select_training_rows,
    source_balanced_weights,
    suspected_label_noise,
)


@pytest.mark.parametrize("source,group", [
    ("IceFlameWorm/NLP_Datasets:LCQMC/dev.txt@a2203a7", "NLP_Datasets:LCQMC"),
    ("IceFlameWorm/NLP_Datasets:LCQMC/test.txt@a2203a7", "NLP_Datasets:LCQMC"),
    ("ghaction/v2ex_hot_daily:data/md/2020/10/28.md@ce1b66", "v2ex_hot_daily"),
    ("qiuhuachuan/smile:data/14025.json@9f8afc", "smile"),
    ("AndrewZhe/lawyer-llama:data/legal_advice.json@abaa09", "lawyer-llama:legal_advice"),
    ("SophonPlus/ChineseNlpCorpus:datasets/waimai_10k/waimai_10k.csv@a0b7", "ChineseNlpCorpus:waimai_10k"),
    ("o/r:datasets/a.zip!inner.csv@1", "r:a"),
    ("sample", "sample"),
    ("", "unknown"),
])
def test_source_group(source, group):
    assert source_group(source) == group


def _rows(spec):
    """spec: list of (label, source, count) → rows."""
    return [{"text": f"{s}{i}", "label": y, "source": s} for y, s, n in spec for i in range(n)]


def test_source_balanced_weights_flatten_sources_but_keep_class_mass():
    rows = _rows([(0, "big", 90), (0, "small", 10), (1, "legal", 20)])
    w = source_balanced_weights(rows, power=1.0)
    assert w.sum() == pytest.approx(1.0)
    big, small, legal = w[:90].sum(), w[90:100].sum(), w[100:].sum()
    assert big == pytest.approx(small)
    assert big + small == pytest.approx(100 / 120) and legal == pytest.approx(20 / 120)
    natural = source_balanced_weights(rows, power=0.0)
    assert np.allclose(natural, 1 / 120)
    with pytest.raises(ValueError):
        source_balanced_weights(rows, power=2)


def test_mine_hard_negatives_takes_highest_scoring_negatives_only():
    rows = _rows([(0, "a", 4), (1, "l", 2)])
    scores = [0.1, 0.9, 0.5, 0.2, 1.0, 1.0]
    assert mine_hard_negatives(rows, scores, 2) == [1, 2]
    with pytest.raises(ValueError, match="one score per row"):
        mine_hard_negatives(rows, scores[:3], 1)


def test_select_training_rows_balances_and_prioritises_hard_negatives():
    rows = _rows([(0, "big", 200), (0, "small", 10), (0, "mid", 40), (1, "legal", 30)])
    scores = np.zeros(len(rows))
    scores[5] = scores[6] = 0.99  # two hard negatives in "big"
    idx = select_training_rows(rows, n_negatives=60, hard_scores=scores, hard_fraction=0.05, seed=1)
    assert len(idx) == len(set(idx)) == 90
    chosen_neg = [i for i in idx if rows[i]["label"] == 0]
    assert {5, 6} <= set(chosen_neg)
    by_source = {s: sum(rows[i]["source"] == s for i in chosen_neg) for s in ("big", "small", "mid")}
    assert by_source["small"] == 10  # small source taken whole, the rest shared evenly
    assert abs(by_source["mid"] - (by_source["big"] - 2)) <= 1
    assert select_training_rows(rows, 60, hard_scores=scores, hard_fraction=0.05, seed=1) == idx
    again = select_training_rows(rows, 60, exclude=[5, 6], balance_sources=False, seed=1)
    assert 5 not in again and 6 not in again and len(again) == 90


def test_select_training_rows_caps_positives_across_sources():
    rows = _rows([(1, "x", 50), (1, "y", 5), (0, "n", 20)])
    idx = select_training_rows(rows, n_negatives=10, n_positives=20)
    pos = [rows[i]["source"] for i in idx if rows[i]["label"] == 1]
    assert len(pos) == 20 and pos.count("y") == 5


def test_suspected_label_noise_lists_confident_negatives():
    rows = _rows([(0, "a", 3), (1, "l", 1)])
    assert suspected_label_noise(rows, [0.95, 0.2, 0.99, 0.99], threshold=0.9) == [2, 0]


def test_per_source_metrics_groups_by_source_group():
    rows = [{"text": "t", "label": 0, "source": f"o/smile:data/{i}.json@abc"} for i in range(3)]
    rows += [{"text": "l", "label": 1, "source": "o/lawyer:data/legal_advice.json@abc"}]
    per = per_source_metrics(rows, [0.9, 0.1, 0.1, 0.8], 0.5)
    assert set(per) == {"smile", "lawyer:legal_advice"}  # one group for the three smile files
    assert per["smile"]["n"] == 3 and per["smile"]["fpr"] == pytest.approx(1 / 3)
    assert rows[0]["source"].startswith("o/smile")  # the input rows are untouched


def test_threshold_for_source_fpr_raises_threshold_for_noisy_source():
    rows = _rows([(0, "calm", 50), (0, "tricky", 50), (1, "legal", 50)])
    scores = [0.1] * 50 + [0.1] * 40 + [0.65] * 10 + [0.6] * 10 + [0.9] * 40
    # max-F1 would accept 0.6 (tricky FPR 20 %); a 3 % cap must push the threshold above 0.65.
    t = threshold_for_source_fpr(rows, scores, max_fpr=0.03)
    assert t > 0.65
    flagged = sum(s >= t for s in scores[50:100])
    assert flagged / 50 <= 0.03
    assert threshold_for_source_fpr(rows, scores, max_fpr=0.5) == choose_threshold(
        [r["label"] for r in rows], scores)["threshold"]


def _corpus():
    rows = [{"text": f"法律问题{i}：公司拖欠工资怎么办", "label": 1, "source": "o/law:data/q.json@a"} for i in range(40)]
    rows += [{"text": f"周末去哪里玩{i}", "label": 0, "source": "o/forum:data/f.json@a"} for i in range(120)]
    rows += [{"text": f"这本书好看吗{i}", "label": 0, "source": "o/reviews:data/r.json@a"} for i in range(30)]
    rows += [{"text": f"公司拖欠工资怎么办{i}", "label": 0, "source": "o/forum:data/f.json@a"} for i in range(5)]
    return rows


def test_plain_without_caps_keeps_every_row_in_order():
    rows = _corpus()
    chosen = apply_recipe(rows, "plain")
    assert chosen.indices == list(range(len(rows)))
    assert chosen.report["rows_out"] == len(rows) and chosen.report["suspected_noise_dropped"] == 0


def test_balanced_spreads_negatives_and_the_source_cap_holds():
    rows = _corpus()
    chosen = apply_recipe(rows, "balanced", negatives=60)
    per = chosen.report["negatives_per_group"]
    assert chosen.report["negatives"] == 60 and per["reviews:r"] == 30 and per["forum:f"] == 30
    capped = apply_recipe(rows, "balanced", negatives_per_source=20)
    assert capped.report["negatives_per_group"] == {"forum:f": 20, "reviews:r": 20}
    assert capped.report["negatives_over_source_cap"] == 125 - 20 + 30 - 20


def test_robust_leaves_out_suspected_noise_and_returns_it_for_review():
    rows = _corpus()
    chosen = apply_recipe(rows, "robust", negatives=40, noise_threshold=0.5, oof_folds=3)
    kept = {rows[i]["text"] for i in chosen.indices}
    assert chosen.report["suspected_noise_dropped"] == len(chosen.suspected_noise) > 0
    for row in chosen.suspected_noise:  # the legal-looking non-legal rows, with their out-of-fold score
        assert row["label"] == 0 and row["oof_score"] >= 0.5 and row["text"] not in kept
    assert chosen.report["hard_negatives"] == round(0.3 * 40)
    assert apply_recipe(rows, "robust", negatives=40, noise_threshold=0.5).indices == chosen.indices  # seeded


def test_spread_hard_negatives_come_from_every_group_highest_scored_first():
    rows = _rows([(0, "forum", 10), (0, "reviews", 10), (0, "tiny", 2), (1, "legal", 5)])
    scores = [0.9 - 0.01 * i for i in range(10)] + [0.3 - 0.01 * i for i in range(10)] + [0.05, 0.01] + [0.99] * 5
    overall = hard_negatives(rows, scores, exclude=[], k=6)
    assert overall == list(range(6))  # the global top: all from one genre
    spread = hard_negatives(rows, scores, exclude=[0], k=6)
    assert spread != overall
    spread = hard_negatives(rows, scores, exclude=[0], k=6, spread=True)
    assert sorted(spread) == [1, 2, 10, 11, 20, 21]  # 2 per group, each group's hardest, excluded row skipped
    assert spread == sorted(spread, key=lambda i: -scores[i])
    assert sorted(hard_negatives(rows, scores, exclude=[], k=9, spread=True)) == [0, 1, 2, 3, 10, 11, 12, 20, 21]


def test_diverse_is_robust_with_hard_negatives_from_every_group():
    rows = _corpus()
    robust = apply_recipe(rows, "robust", negatives=40, noise_threshold=0.5, oof_folds=3)
    diverse = apply_recipe(rows, "diverse", negatives=40, noise_threshold=0.5, oof_folds=3)
    assert diverse.report["hard_negatives"] == robust.report["hard_negatives"] == 12
    assert diverse.report["suspected_noise_dropped"] == robust.report["suspected_noise_dropped"]
    assert diverse.report["hard_negatives_per_group"] == {"forum:f": 6, "reviews:r": 6}
    assert robust.report["hard_negatives_per_group"] != diverse.report["hard_negatives_per_group"]
    assert sum(robust.report["hard_negatives_per_group"].values()) == 12


def test_an_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="recipe must be one of"):
        apply_recipe(_corpus(), "magic")
    assert set(RECIPES) == {"plain", "balanced", "hardneg", "robust", "diverse"}


def test_choose_threshold_fpr_cap_needs_sources_and_reports_the_binding_one():
    rows = _rows([(0, "calm", 50), (0, "tricky", 50), (1, "legal", 50)])
    scores = [0.1] * 50 + [0.1] * 40 + [0.65] * 10 + [0.6] * 10 + [0.9] * 40
    labels = [r["label"] for r in rows]
    with pytest.raises(ValueError, match="needs the source"):
        choose_threshold(labels, scores, "fpr_cap")
    info = choose_threshold(labels, scores, "fpr_cap", sources=[r["source"] for r in rows], max_source_fpr=0.03)
    assert info["threshold"] > 0.65 and info["binding_source"] == "tricky"
    assert info["max_f1_threshold"] <= 0.65 and info["strategy"] == "fpr_cap"


def test_the_ngram_part_fits_every_train_row_but_the_suspected_noise():
    from lawclf.config import TrainConfig
    from lawclf.train import _apply_recipe

    rows = _corpus()
    cfg = TrainConfig(recipe="robust", recipe_negatives=40, noise_threshold=0.5, oof_folds=3)
    kept, _, chosen, ngram_rows = _apply_recipe(rows, None, cfg)
    noise = {r["text"] for r in chosen.suspected_noise}
    assert noise and len(kept) < len(ngram_rows) == len(rows) - len(noise)  # the model's budget is not the n-grams'
    assert not noise & {r["text"] for r in ngram_rows}
    same = _apply_recipe(rows, None, TrainConfig(recipe="robust", recipe_negatives=40, noise_threshold=0.5,
                                                  oof_folds=3, ngram_rows="recipe"))
    assert same[3] == same[0] == kept
