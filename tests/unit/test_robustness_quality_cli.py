"""benchmarks/quality.py pieces that need no corpus and no training."""

import importlib.util
import json
from pathlib import Path

import pytest

from lawclf_dev import CHECKOUT as REPO_ROOT


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skips_with_a_clear_message_without_corpus(quality, tmp_path, capsys):
    assert quality.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 0
    assert "skipped: corpus not found" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_locate_m3e_returns_a_model_dir_or_none(quality):
    path = quality.locate_m3e()
    if path is not None:  # installed only where benchmarks run (research-only weights, never shipped)
        assert (Path(path) / "config.json").exists()


def test_configs_parse_and_unknown_recipes_are_refused(quality):
    assert quality.parse_configs("tiny:robust, m3e") == [("tiny", "robust"), ("m3e", "plain")]
    with pytest.raises(SystemExit, match="unknown recipe"):
        quality.parse_configs("tiny:magic")


def test_each_row_is_the_product_cli_with_its_flags(quality, tmp_path):
    args = quality.build_parser().parse_args(["--data-dir", "d", "--tiny-negatives", "500"])
    data_cfg, train_cfg, eval_cfg, export_cfg = quality.stage_configs(args, "tiny", "robust", tmp_path / "r", "smile")
    assert (train_cfg.recipe, train_cfg.recipe_negatives, train_cfg.model_name) == ("robust", 500, "tiny")
    assert data_cfg.holdout_sources == "smile" and eval_cfg.threshold_strategy == "fpr_cap"
    line = quality.cli_command("train", train_cfg)
    assert line.startswith(f"lawclf train --run-dir {tmp_path / 'r'}") and "--recipe robust" in line
    assert "--recipe-negatives 500" in line and "--batch-size" in line and "--loss" not in line  # defaults left out
    assert quality.cli_command("export", export_cfg) == f"lawclf export --run-dir {tmp_path / 'r'}"
    assert "--holdout-sources smile" in quality.cli_command("prepare", data_cfg)


def test_baselines_report_their_thresholds_and_worst_source(quality):
    train = [{"text": f"公司拖欠工资怎么办{i}", "label": 1, "source": "o/law:q.json"} for i in range(30)]
    train += [{"text": f"周末去哪里玩比较好{i}", "label": 0, "source": "o/x:a.json"} for i in range(30)]
    train += [{"text": f"这家酒店干净吗{i}", "label": 0, "source": "o/y:b.json"} for i in range(30)]
    rows = quality.run_baselines(train, train, train, max_fpr=0.03, seed=1)
    assert [r["name"] for r in rows] == ["keyword-filter", "tfidf-char-lr"]
    assert set(rows[0]["thresholds"]) == {"rule"} and set(rows[1]["thresholds"]) == {"max_f1", "fpr_cap"}
    m = rows[1]["thresholds"]["fpr_cap"]
    assert m["f1"] > 0.9 and m["worst_source"] in {"x:a", "y:b"} and m["per_source"]["law:q"]["recall"] > 0.9


def test_goals_judge_the_best_int8_row_against_the_baselines_best_threshold(quality):
    def metrics(f1, pr_auc, worst=0.01, per_source=None):
        return {"f1": f1, "pr_auc": pr_auc, "max_source_fpr": worst, "per_source": per_source or {}}

    tfidf = {"name": "tfidf-char-lr", "kind": "baseline",
             "thresholds": {"max_f1": metrics(0.93, 0.981), "fpr_cap": metrics(0.91, 0.981)}}
    weak = {"kind": "model", "model": "tiny", "recipe": "plain", "holdout": "",
            "engines": {"torch": metrics(0.99, 0.99), "onnx-int8": metrics(0.90, 0.97)}}
    strong = {"kind": "model", "model": "m3e", "recipe": "robust", "holdout": "",
              "engines": {"torch": metrics(0.93, 0.99), "onnx-int8": metrics(0.92, 0.987, worst=0.04)}}
    smile = {"smile": {"n": 10, "positives": 0, "false_positives": 2, "false_negatives": 0}}
    law = {"LawBench:zero_shot": {"n": 20, "positives": 20, "false_positives": 0, "false_negatives": 1},
           "smile": {"n": 5, "positives": 0, "false_positives": 0, "false_negatives": 0}}
    held = [{"kind": "model", "model": "m3e", "recipe": "robust", "holdout": "smile",
             "engines": {"onnx-int8": metrics(0.9, 0.9, per_source=smile)}},
            {"kind": "baseline", "name": "tfidf-char-lr -smile", "holdout": "smile",
             "thresholds": {"fpr_cap": metrics(0.9, 0.95, per_source=smile)}},
            {"kind": "model", "model": "m3e", "recipe": "robust", "holdout": "LawBench",
             "engines": {"onnx-int8": metrics(0.9, 0.97, per_source=law)}},
            {"kind": "baseline", "name": "tfidf-char-lr -LawBench", "holdout": "LawBench",
             "thresholds": {"fpr_cap": metrics(0.9, 0.96, per_source=law)}}]
    goals = quality._goals([tfidf, weak, strong], held, max_fpr=0.03)
    assert goals["best_model"] == "m3e:robust (onnx-int8)"  # judged on the int8 row, not torch
    assert goals["f1>=0.95"] == (0.92, False)
    assert goals["pr_auc>=0.98"] == (0.987, True)
    assert goals["every source fpr<=0.03"] == (0.04, False)
    # Left-out groups: a non-legal one by its FPR (2/10 > 5 %), a legal one by its recall (19/20).
    assert goals["every left-out non-legal group fpr<=0.05"] == ("0.2000 (smile)", False)
    assert goals["every left-out legal group recall>=0.9"] == ("0.9500 (LawBench)", True)
    assert goals["pr_auc ahead of tfidf on every left-out row"] == ("smile", False)  # 0.90 vs 0.95
    loo = {r["left_out"]: r for r in quality.leave_one_out_rows([tfidf, weak, strong], held)}
    assert loo["smile"]["side"] == "non-legal" and loo["smile"]["tfidf"] == 0.2
    assert loo["LawBench"]["side"] == "legal" and loo["LawBench"]["recall"] == 0.95 and loo["LawBench"]["fpr"] is None
    # 0.92 beats the baseline's fpr_cap F1 (0.91) but not its best threshold (0.93): not ahead.
    assert goals["beats tfidf f1"] == (0.93, False)
    assert goals["beats tfidf pr_auc"] == (0.981, True)
    assert quality._goals([tfidf], [], 0.03) == {"note": "no model trained"}
    no_baseline = quality._goals([weak, strong], [], 0.03)  # --no-baselines: model rows only
    assert no_baseline["beats tfidf f1"] == (None, None) and no_baseline["best_model"].startswith("m3e:robust")
    table = quality.leave_one_out_markdown(quality.leave_one_out_rows([tfidf, weak, strong], held)).splitlines()
    assert len(table) == 2 + 2 + 2  # header, two in-distribution rows, two left-out rows
    # served, model part, n-gram part (none recorded here), TF-IDF, keyword, PR-AUC served / model part / TF-IDF
    assert table[-2] == "| m3e:robust | smile | non-legal | 10 | FPR | 0.200 | – | – | 0.200 | – | 0.900 | – | 0.950 | no |"
    assert "| LawBench | legal | 20 | recall | 0.950 |" in table[-1] and table[-1].endswith("| yes |")  # PR-AUC 0.97 > 0.96


def test_a_pool_is_read_beside_the_corpus_and_its_manifest_printed(quality, tmp_path, capsys):
    args = quality.build_parser().parse_args(["--data-dir", "d", "--pool-dir", str(tmp_path / "pool")])
    data_cfg = quality.stage_configs(args, "tiny", "diverse", tmp_path / "r")[0]
    assert data_cfg.extra_data_dirs == str(tmp_path / "pool")
    assert f"--extra-data-dirs {tmp_path / 'pool'}" in quality.cli_command("prepare", data_cfg)
    assert quality.load_pool("") is None
    with pytest.raises(SystemExit, match="no manifest.json"):
        quality.load_pool(str(tmp_path))
    manifest = {"built": "2026-12-05T00:00:00+00:00", "rules": "research use only",
                "totals": {"legal": 1, "non-legal": 2, "sources_used": 1, "sources_listed": 2},
                "sources": [{"repo": "o/r", "files": ["q.json"], "side": "non-legal", "licence": "MIT",
                             "status": "used", "rows_kept": 2, "commit": "abc",
                             "checks": {"overlap_with_shared_corpus": 0, "duplicates_dropped": 1}},
                            {"repo": "o/gone", "files": ["x.json"], "side": "legal", "licence": "none",
                             "status": "missing: no snapshot", "rows_kept": 0}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert quality.load_pool(str(tmp_path)) == manifest
    out = capsys.readouterr().out
    assert "1 legal + 2 non-legal rows from 1 of 2 sources" in out and "o/r:q.json@abc" in out and "missing" in out


def test_leave_one_out_covers_the_groups_of_every_folder(quality, tmp_path):
    for folder, src in (("a", "o/shared:data/x.json@1"), ("b", "o/pool:news/y.json@2")):
        (tmp_path / folder).mkdir()
        for name in ("legal.jsonl", "nonlegal.jsonl"):
            (tmp_path / folder / name).write_text(json.dumps({"text": "t", "source": src}) + "\n", encoding="utf-8")
    groups = quality.parse_holdouts("all", str(tmp_path / "a"), str(tmp_path / "b"), "")
    assert groups == ["shared:x", "pool:news"]


def test_the_ablation_table_lists_each_part_and_the_served_combination(quality):
    def m(f1, auc, thr):
        return {"f1": f1, "precision": 0.9, "recall": 0.8, "fpr": 0.01, "pr_auc": auc, "threshold": thr}

    res = {"kind": "model", "model": "tiny", "recipe": "diverse", "combine": {"method": "mean", "weight": 0.4},
           "engines": {"onnx-int8": {**m(0.91, 0.99, 0.8), "parts": {"model": m(0.86, 0.98, 0.9),
                                                                    "ngram": m(0.93, 0.985, 0.7)}}}}
    held = {**res, "holdout": "smile"}  # left-out runs are in the leave-one-out table, not here
    table = quality.ablation_markdown([res, held]).splitlines()
    assert len(table) == 2 + 3
    assert table[2] == "| tiny:diverse | model part |  | 0.900 | 0.860 | 0.900 | 0.800 | 0.010 | 0.980 |"
    assert table[4] == "| tiny:diverse | served | mean (n-gram weight 0.6) | 0.800 | 0.910 | 0.900 | 0.800 | 0.010 | 0.990 |"
