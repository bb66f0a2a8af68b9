"""Notebook 02 runs under papermill on a prepared run and writes the keyword tables, word clouds and figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import copy_run
from lawclf.config import RunPaths, read_results
from lawclf.keywords import FILES, generic_words, in_jieba_dictionary
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_02_writes_keyword_tables_and_word_clouds(prepared_run_dir, cjk_font, tmp_path):
    run = copy_run(prepared_run_dir, tmp_path / "run")
    executed = run_notebook("02_keyword_wordcloud", run, {"TOP_K": 8, "MIN_COUNT": 3})
    import json as _json

    _nb = _json.loads(executed.read_text(encoding="utf-8"))
    _ranks = "".join(str(o.get("data", {}).get("text/plain", "")) for c in _nb["cells"] if c.get("id") == "nb02-19b"
                     for o in c.get("outputs", []))
    assert "本次运行的排名" in _ranks and "借钱" in _ranks  # the prose's word ranks are computed in the run
    by_hand = read_results(run, "02_keyword_wordcloud")["log_odds_by_hand"]
    assert by_hand["delta"] == pytest.approx(by_hand["table_delta"], abs=1e-9)  # the formula worked by hand

    out = RunPaths(run).keywords
    for name in FILES.values():
        assert (out / name).is_file(), name

    results = read_results(run, "02_keyword_wordcloud")
    assert results["font_path"] == str(cjk_font)
    assert len(results["top_legal_words"]) == 8 and len(results["top_non_legal_words"]) == 8
    train = [json.loads(line) for line in RunPaths(run).split_file("train").open(encoding="utf-8")]
    assert results["train_texts"] == {"legal": sum(r["label"] == 1 for r in train),
                                      "non_legal": sum(r["label"] == 0 for r in train)}
    assert results["train_legal_share"] == pytest.approx(results["train_texts"]["legal"] / len(train), abs=1e-4)
    assert 0.5 < results["test_keyword_lean_auc"] <= 1.0
    assert set(results["watch_words_z"]) >= {"借钱", "咨询", "怎么办", "请问"}
    # generic words (说/好/做/到/去 …) no longer top the frequency tables; what jieba made up is listed, and kept
    generic = generic_words()
    assert results["drop_generic_words"] is True
    assert not generic & set(results["top_frequent_words"]["legal"] + results["top_frequent_words"]["non_legal"])
    assert all(not in_jieba_dictionary(w) for w in results["segmentation_artefacts"])
    shown = "".join(str(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", ""))
                    for c in _nb["cells"] if c.get("id") == "02-artefacts" for o in c.get("outputs", []))
    assert "不在 jieba 词典里的词" in shown

    table = pd.read_csv(out / FILES["bias_table"], keep_default_na=False)
    assert len(table) == results["vocabulary"]
    assert table["z"].is_monotonic_decreasing
    assert list(table["word"].head(8)) == results["top_legal_words"][:8]
    assert (table["count_legal"] + table["count_non_legal"] >= 3).all()
    for word, z in results["watch_words_z"].items():  # recorded figures agree with the table
        row = table[table["word"] == word]
        assert (z is None) == row.empty
        if z is not None:
            assert z == pytest.approx(float(row["z"].iloc[0]), abs=1e-3)

    for name in ("wordcloud_legal", "wordcloud_non_legal", "bias_plot"):
        pixels = np.asarray(Image.open(out / FILES[name]).convert("L"))
        assert 0.01 < (pixels < 200).mean() < 0.9, name  # something was drawn, not a blank page

    # The executed copy shows the word clouds inline and has no error outputs.
    nb = json.loads(executed.read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
