"""Baselines on small made-up texts (never the real corpus)."""

import numpy as np
import pytest

from lawclf.baselines import (
    KeywordFilter,
    TfidfCharLR,
    char_bigrams,
    log_odds_table,
    out_of_fold_scores,
)

LEGAL = ["老板拖欠工资怎么起诉", "离婚后孩子抚养权归谁", "交通事故对方不赔偿怎么办", "房东不退押金可以起诉吗",
         "公司违法辞退要赔偿吗", "借条过了诉讼时效怎么办", "离婚财产怎么分割", "工伤赔偿标准是多少"] * 3
OTHER = ["这家外卖很好吃送得快", "显卡驱动怎么更新", "今天天气不错去爬山", "酒店房间很干净服务好",
         "推荐一款机械键盘", "花呗额度怎么提升", "考试前很焦虑怎么办", "手机电池不耐用"] * 3


def test_char_bigrams_ignore_whitespace():
    assert char_bigrams("离 婚") == ["离婚"]
    assert char_bigrams("a") == []


def test_log_odds_ranks_legal_words_first():
    table = log_odds_table(LEGAL + OTHER, [1] * len(LEGAL) + [0] * len(OTHER), min_count=3)
    top = [w for w, *_ in table[:10]]
    assert "起诉" in top or "离婚" in top
    assert table[0][1] > 0 > table[-1][1]


def test_log_odds_rejects_single_class_and_length_mismatch():
    with pytest.raises(ValueError, match="both"):
        log_odds_table(LEGAL, [1] * len(LEGAL))
    with pytest.raises(ValueError, match="length"):
        log_odds_table(LEGAL, [1])


def test_keyword_filter_flags_texts_with_learned_words():
    kf = KeywordFilter(top_k=10, min_count=3).fit(LEGAL + OTHER, [1] * len(LEGAL) + [0] * len(OTHER))
    assert kf.keywords and all(k in "".join(LEGAL) for k in kf.keywords)
    assert kf.predict(["我想起诉他"]).tolist() == [1]
    assert kf.predict(["键盘很好用"]).tolist() == [0]
    scores = kf.predict_proba(["我想起诉他", "键盘很好用"])
    assert (scores >= kf.threshold).tolist() == [True, False]


def test_tfidf_separates_and_scores_are_probabilities():
    y = [1] * len(LEGAL) + [0] * len(OTHER)
    model = TfidfCharLR(min_df=1).fit(LEGAL + OTHER, y)
    p = model.predict_proba(["公司拖欠工资怎么起诉", "这家酒店很干净"])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    assert p[0] > 0.5 > p[1]


def test_out_of_fold_scores_cover_every_row():
    y = [1] * len(LEGAL) + [0] * len(OTHER)
    s = out_of_fold_scores(LEGAL + OTHER, y, folds=3, make_model=lambda: TfidfCharLR(min_df=1))
    assert s.shape == (len(y),)
    assert s[: len(LEGAL)].mean() > s[len(LEGAL):].mean()
