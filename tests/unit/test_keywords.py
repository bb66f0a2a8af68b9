"""Keyword stage: stop words, segmentation, log-odds, keyword lean, word clouds, the analyse() run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from lawclf import keywords
from lawclf.config import KeywordConfig, RunPaths
from lawclf.fonts import FontNotFoundError, has_cjk_glyphs
from lawclf.keywords import (
    generic_words,
    in_jieba_dictionary,
    keyword_bias_table,
    keyword_lean,
    lean_words,
    load_stopwords,
    log_odds_dirichlet,
    rank_auc,
    render_wordcloud,
    segment,
    segmentation_artefacts,
)

DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"

# Tiny hand-written split (label 1 = legal). Non-legal texts deliberately reuse 借钱 / 咨询 / 怎么办.
LEGAL = ["朋友借钱不还怎么办，可以起诉吗", "公司拖欠工资，请问怎么申请劳动仲裁", "离婚后孩子抚养权归谁，我想咨询下律师",
         "房东不退押金，合同纠纷怎么处理", "借条没有写还款日期，还有效吗", "被人打伤了可以报警起诉吗"]
NON_LEGAL = ["显卡驱动装不上怎么办", "想咨询下大家，买房还是租房好", "借钱给朋友买电脑", "周末去爬山，推荐一下路线",
             "python 代码报错，怎么解决", "手机电池不耐用，换个新的"]


def write_splits(run_dir: Path, repeat: int = 3) -> Path:
    """Split files in the data stage's format ({"id","text","label","source"})."""
    RunPaths(run_dir).splits.mkdir(parents=True, exist_ok=True)
    for split, times in (("train", repeat), ("validation", 1), ("test", 1)):
        rows = [{"id": f"{split}-{lab}-{i}-{k}", "text": text, "label": lab, "source": "unit-test"}
                for k in range(times) for lab, texts in ((1, LEGAL), (0, NON_LEGAL)) for i, text in enumerate(texts)]
        RunPaths(run_dir).split_file(split).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return run_dir


# --------------------------------------------------------------------------- stop words & segmentation

def test_packaged_stopwords_hold_grammar_not_the_shortcut_words():
    stop = load_stopwords()
    assert {"的", "了", "吗", "我", "，", "。", "是", "在"} <= stop
    # The words a reader must see stay out of the list.
    assert not {"借钱", "咨询", "怎么办", "请问", "律师", "起诉", "钱"} & stop


def test_extra_stopword_file_is_added_and_a_missing_one_is_named(tmp_path):
    extra = tmp_path / "mine.txt"
    extra.write_text("# my list\n借条\n  显卡 \n", encoding="utf-8")
    stop = load_stopwords(extra)
    assert {"借条", "显卡", "的"} <= stop and "# my list" not in stop
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_stopwords(tmp_path / "nope.txt")


def test_segment_keeps_content_and_one_character_words_and_drops_grammar():
    words = segment("我想咨询下，借钱不还怎么办？")
    assert {"咨询", "借钱", "怎么办"} <= set(words)
    assert not {"我", "，", "？"} & set(words)
    assert "钱" in segment("我的钱被骗了")  # one-character content words survive
    assert segment("Python 3.11 报错") == ["python", "报错"]  # digits/spaces dropped, Latin lower-cased
    assert segment("") == [] and segment("，。！") == []


def test_segment_is_deterministic():
    text = "公司拖欠工资三个月了，可以去劳动仲裁吗"
    assert segment(text) == segment(text)


def test_generic_words_are_dropped_by_default_and_kept_on_request():
    generic = generic_words()
    assert {"说", "好", "做", "到", "去"} <= generic
    assert not {"借钱", "咨询", "怎么办", "请问", "律师", "起诉", "欠款", "还钱", "问题", "钱"} & generic
    text = "我去找他，他说钱到现在还没还，该怎么办"
    assert not generic & set(segment(text))
    kept = segment(text, load_stopwords(drop_generic_words=False))
    assert {"去", "说"} <= set(kept) and "怎么办" in kept


def test_segmentation_artefacts_are_words_jieba_assembled():
    texts = ["我想咨询下该怎么办", "我想咨询下该找谁"]
    docs = [segment(t) for t in texts]
    words = [w for d in docs for w in d]
    found = {a["word"]: a for a in segmentation_artefacts(words, texts, docs)}
    assert all(not in_jieba_dictionary(w) for w in found) and in_jieba_dictionary("咨询")
    assert "咨询" not in found and "怎么办" not in found  # dictionary words are not artefacts
    if "下该" in words:  # what jieba's HMM makes of 咨询下该怎么办 (version-dependent)
        assert found["下该"]["texts"] == 2 and "下该" in found["下该"]["example"]


def test_custom_stopwords_are_applied():
    assert "借钱" not in segment("借钱不还怎么办", frozenset({"借钱"}))


# --------------------------------------------------------------------------- log-odds

def test_log_odds_hand_checked_value():
    # a={w:3, v:1}, b={w:1, v:3}, prior_scale=1 -> α_w=α_v=4, α_0=8, n_a=n_b=4
    # δ_w = log(7/5) - log(5/7) = 2·log 1.4;  σ² = 1/7 + 1/5
    scores = log_odds_dirichlet({"w": 3, "v": 1}, {"w": 1, "v": 3}, prior_scale=1.0)
    delta, z = scores["w"]
    assert delta == pytest.approx(2 * math.log(1.4))
    assert z == pytest.approx(2 * math.log(1.4) / math.sqrt(1 / 7 + 1 / 5))
    assert scores["v"][0] == pytest.approx(-delta)


def test_log_odds_direction_ordering_and_one_sided_words():
    a = {"起诉": 20, "律师": 5, "问题": 10, "电脑": 1}
    b = {"起诉": 1, "律师": 1, "问题": 10, "电脑": 20, "显卡": 6}
    s = log_odds_dirichlet(a, b)
    assert s["起诉"][1] > s["律师"][1] > 0  # more evidence, stronger z on the same side
    assert s["电脑"][1] < 0 and s["显卡"][1] < 0  # 显卡 only in b: ranks on b's side, finite
    assert math.isfinite(s["显卡"][0])
    assert abs(s["问题"][1]) < abs(s["律师"][1])  # equally frequent on both sides: near zero
    ranked = sorted(s, key=lambda w: -s[w][1])
    assert ranked[0] == "起诉" and ranked[-1] == "电脑"


def test_log_odds_swap_flips_sign_exactly():
    a = {"x": 7, "y": 2, "z": 1}
    b = {"x": 1, "y": 4, "w": 3}
    ab, ba = log_odds_dirichlet(a, b), log_odds_dirichlet(b, a)
    for word in ab:
        assert ab[word][0] == pytest.approx(-ba[word][0])
        assert ab[word][1] == pytest.approx(-ba[word][1])


def test_log_odds_rejects_a_non_positive_prior():
    with pytest.raises(ValueError, match="prior_scale"):
        log_odds_dirichlet({"a": 1}, {"a": 1}, prior_scale=0)


def test_bias_table_columns_counts_and_p_legal():
    docs = [["借钱", "起诉"], ["借钱", "起诉", "起诉"], ["借钱", "电脑"], ["电脑"], ["罕见"]]
    labels = [1, 1, 0, 0, 1]
    table = keyword_bias_table(docs, labels, min_count=2)
    assert list(table["word"]) == ["起诉", "借钱", "电脑"]  # sorted legal -> non-legal; 罕见 below min_count
    row = table.set_index("word").loc["借钱"]
    assert (row.count_legal, row.count_non_legal, row.docs_legal, row.docs_non_legal) == (2, 1, 2, 1)
    assert row.p_legal == pytest.approx(2 / 3)
    assert table.set_index("word").loc["起诉", "count_legal"] == 3
    assert table.set_index("word").loc["电脑", "lean"] == "non_legal"
    with pytest.raises(ValueError, match="labels"):
        keyword_bias_table(docs, labels[:2])


# --------------------------------------------------------------------------- keyword lean

def test_keyword_lean_orders_texts_by_legal_keyword_density():
    table = {"借钱": 1.0, "起诉": 3.0, "律师": 2.0, "电脑": -2.0}
    texts = ["借钱不还，找律师起诉", "借钱买电脑", "电脑坏了", "今天天气", ""]
    lean = keyword_lean(texts, table)
    assert lean[0] > lean[1] > lean[2]
    assert lean[3] == 0.0 and lean[4] == 0.0
    assert lean[2] < 0


def test_keyword_lean_reads_a_bias_table_and_names_the_words():
    table = pd.DataFrame({"word": ["起诉", "电脑"], "log_odds": [2.0, -1.5], "z": [4.0, -3.0]})
    assert keyword_lean(["起诉电脑"], table) == [pytest.approx(0.25)]
    assert keyword_lean(["起诉电脑"], table, column="z") == [pytest.approx(0.5)]
    assert lean_words("朋友借钱不还可以起诉吗，电脑", table) == [("起诉", 2.0), ("电脑", -1.5)]


def test_rank_auc():
    assert rank_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert rank_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert rank_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert math.isnan(rank_auc([0.1, 0.2], [1, 1]))


# --------------------------------------------------------------------------- pictures

def _render(font_path: Path, text: str, size: int = 48) -> np.ndarray:
    font = ImageFont.truetype(str(font_path), size)
    img = Image.new("L", (size * (len(text) + 1), size * 2), 255)
    ImageDraw.Draw(img).text((4, 4), text, font=font, fill=0)
    return np.asarray(img)


def test_glyph_check_tells_a_real_glyph_from_the_missing_glyph_box(cjk_font):
    """Rendered pixels agree with the cmap check: DejaVu draws 法 as its .notdef box, the CJK font does not."""
    notdef = "\ue000"  # private-use code point: no font maps it, so it renders as .notdef
    assert np.array_equal(_render(DEJAVU, "法"), _render(DEJAVU, notdef))
    assert not np.array_equal(_render(cjk_font, "法"), _render(cjk_font, notdef))
    assert has_cjk_glyphs(cjk_font) and not has_cjk_glyphs(DEJAVU)


def test_wordcloud_is_written_non_blank_with_cjk_font(cjk_font, tmp_path):
    out = render_wordcloud({"借钱": 10, "起诉": 8, "钱": 6, "律师": 5}, cjk_font, tmp_path / "wc.png",
                           width=400, height=200)
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape == (200, 400, 3)
    ink = (np.abs(pixels - 255).sum(axis=2) > 60).mean()  # share of clearly non-white pixels
    assert 0.02 < ink < 0.9


def test_wordcloud_refuses_a_font_without_cjk_glyphs(tmp_path):
    with pytest.raises(FontNotFoundError, match="no glyphs"):
        render_wordcloud({"借钱": 3}, DEJAVU, tmp_path / "wc.png")
    assert not (tmp_path / "wc.png").exists()


def test_wordcloud_needs_some_words(cjk_font, tmp_path):
    with pytest.raises(ValueError, match="no words"):
        render_wordcloud({"借钱": 0}, cjk_font, tmp_path / "wc.png")


# --------------------------------------------------------------------------- the stage

def test_analyse_writes_tables_pictures_and_summary(cjk_font, tmp_path):
    run = write_splits(tmp_path / "run")
    summary = keywords.analyse(KeywordConfig(run_dir=str(run), min_count=2, top_k=5))
    out = RunPaths(run).keywords
    for name in keywords.FILES.values():
        assert (out / name).is_file(), name
    table = keywords.load_bias_table(run)
    assert {"word", "count_legal", "count_non_legal", "p_legal", "log_odds", "z"} <= set(table.columns)
    assert (table["count_legal"] + table["count_non_legal"] >= 2).all()
    assert table["z"].is_monotonic_decreasing
    top_legal = [w["word"] for w in summary["top_legal_words"]]
    assert "起诉" in top_legal and len(top_legal) <= 5
    assert all(w["z"] > 0 for w in summary["top_legal_words"])
    assert all(w["z"] < 0 for w in summary["top_non_legal_words"])
    # 借钱 occurs on both sides (3 legal, 3 non-legal texts): reported, and not a strong signal.
    jie = summary["watch_words"]["借钱"]
    assert jie["count_legal"] == 3 and jie["count_non_legal"] == 3 and jie["p_legal"] == 0.5
    assert summary["watch_words"]["欠款"] is None  # never seen: reported as missing, not dropped
    assert summary["train"]["legal"]["texts"] == 18 and summary["train"]["non_legal"]["texts"] == 18
    assert summary["train_legal_share"] == 0.5
    assert 0.5 < summary["test_keyword_lean_auc"] <= 1.0
    assert summary["font_path"] == str(cjk_font)
    top = pd.read_csv(out / "top_words_legal.csv")
    assert len(top) == 5 and list(top["rank"]) == [1, 2, 3, 4, 5]
    lean = pd.read_csv(out / "keyword_lean_test.csv")
    assert len(lean) == 12 and lean["keyword_lean"].is_monotonic_decreasing
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary


def test_analyse_fails_before_writing_when_the_font_is_wrong(tmp_path):
    run = write_splits(tmp_path / "run")
    with pytest.raises(FontNotFoundError, match="fonts-wqy-microhei"):
        keywords.analyse(KeywordConfig(run_dir=str(run), font_path=str(DEJAVU)))
    assert not RunPaths(run).keywords.exists()


def test_bias_table_is_typed_even_when_empty():
    table = keyword_bias_table([["借钱"], ["电脑"]], [1, 0], min_count=5)
    assert table.empty and table["z"].dtype == float
    with pytest.raises(ValueError, match="label 0"):
        keyword_bias_table([["借钱"]], [1])


def test_analyse_with_too_high_min_count_says_what_to_change(cjk_font, tmp_path):
    run = write_splits(tmp_path / "run")
    with pytest.raises(ValueError, match="min_count=1000"):
        keywords.analyse(KeywordConfig(run_dir=str(run), min_count=1000))


def test_analyse_needs_both_labels(cjk_font, tmp_path):
    run = write_splits(tmp_path / "run")
    train = RunPaths(run).split_file("train")
    rows = [line for line in train.read_text(encoding="utf-8").splitlines() if '"label": 1' in line]
    train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="both labels"):
        keywords.analyse(KeywordConfig(run_dir=str(run)))


def test_analyse_without_splits_says_which_file_is_missing(cjk_font, tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        keywords.analyse(KeywordConfig(run_dir=str(tmp_path / "empty")))


def test_cli(cjk_font, tmp_path, capsys):
    run = write_splits(tmp_path / "run")
    assert keywords.cli(["--run-dir", str(run), "--min-count", "2", "--top-k", "5"]) == 0
    assert "legal-leaning words" in capsys.readouterr().out
    assert keywords.cli(["--run-dir", str(run), "--font-path", str(tmp_path / "none.ttf")]) == 1
    assert "none.ttf" in capsys.readouterr().err
