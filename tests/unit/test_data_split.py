"""Normalisation, de-duplication, label conflicts, stratified and leak-free splitting."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lawclf.config import DataConfig
from lawclf.data import (
    SPLITS,
    DataError,
    Record,
    cap_per_class,
    clean,
    dedup_key,
    length_stats,
    load_split,
    load_summary,
    normalise_text,
    prepare,
    read_jsonl,
    row_id,
    split_overlap,
    stratified_split,
)


def rec(text: str, label: int = 1, line: int = 1, source: str = "s") -> Record:
    return Record(text=text, label=label, source=source, file="f.jsonl", line=line)


def test_normalise_text():
    assert normalise_text("  Ｈｅｌｌｏ，　世界！\t\n  ＡＢＣ１２３ ") == "Hello, 世界! ABC123"
    assert normalise_text("借钱\u3000不还\r\n怎么办") == "借钱 不还 怎么办"


@given(st.text())
def test_normalise_and_dedup_key_are_idempotent(text):
    norm = normalise_text(text)
    assert normalise_text(norm) == norm
    assert dedup_key(dedup_key(text)) == dedup_key(text) == dedup_key(norm)
    assert norm == norm.strip() and "  " not in norm


def test_dedup_key_ignores_case_spaces_punctuation_width():
    assert dedup_key("借钱不还，怎么办？") == dedup_key("借钱 不还怎么办") == dedup_key("借钱不还!!怎么办")
    assert dedup_key("Ｗｉｆｉ 密码") == dedup_key("wifi密码")
    assert dedup_key("借钱不还") != dedup_key("借钱还不")


def test_length_filter_counts_and_reports():
    kept, dropped, _, counts = clean([rec("短"), rec("这一句的长度刚好合适"), rec("长" * 30)], min_chars=5, max_chars=20)
    assert [r.text for r in kept] == ["这一句的长度刚好合适"]
    assert counts["too_short"] == 1 and counts["too_long"] == 1
    assert sorted(d["reason"] for d in dropped) == ["too_long", "too_short"]


def test_exact_and_normalised_duplicates_are_dropped_and_reported():
    records = [rec("借钱不还怎么办？", line=1), rec("借钱不还怎么办？", line=2),  # exact
               rec("借钱 不还，怎么办", line=3), rec("借钱不還怎么办", line=4),  # normalised; 還 stays distinct
               rec("  借钱不还怎么办？ ", line=5)]  # exact after whitespace normalisation
    kept, dropped, conflicts, counts = clean(records, min_chars=1, max_chars=0)
    assert [r.line for r in kept] == [1, 4]  # first occurrence kept
    assert counts["exact_duplicate"] == 2 and counts["near_duplicate"] == 1
    assert {d["line"]: d["reason"] for d in dropped} == {2: "exact_duplicate", 3: "near_duplicate",
                                                         5: "exact_duplicate"}
    assert all(d["duplicate_of"] == {"file": "f.jsonl", "line": 1} for d in dropped)
    assert conflicts == []


def test_texts_under_both_labels_are_conflicts_and_excluded():
    records = [rec("朋友借钱不还怎么办", 1, 1), rec("朋友借钱不还，怎么办", 0, 2), rec("朋友借钱不还怎么办", 1, 3),
               rec("请问去机场怎么走", 0, 4)]
    kept, _, conflicts, counts = clean(records, min_chars=1, max_chars=0)
    assert [r.text for r in kept] == ["请问去机场怎么走"]
    assert counts["conflict_texts"] == 1 and counts["conflict_rows"] == 3
    assert sorted(c["line"] for c in conflicts) == [1, 2, 3]


def make_records(n_legal: int, n_other: int) -> list[Record]:
    return ([rec(f"法律问题第{i}号", 1, i) for i in range(n_legal)]
            + [rec(f"日常问题第{i}号", 0, i) for i in range(n_other)])


def test_stratified_split_keeps_class_proportions():
    splits = stratified_split(make_records(200, 800), val_fraction=0.1, test_fraction=0.2, seed=1)
    assert {s: len(v) for s, v in splits.items()} == {"train": 700, "validation": 100, "test": 200}
    for rows in splits.values():
        assert sum(r.label for r in rows) / len(rows) == pytest.approx(0.2)


def test_split_is_reproducible_with_seed_and_changes_with_another():
    def ids(seed):
        return {s: [r.text for r in v] for s, v in stratified_split(make_records(50, 70), 0.1, 0.1, seed).items()}
    assert ids(3) == ids(3)
    assert ids(3) != ids(4)


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_bad_fractions(val, test):
    with pytest.raises(DataError, match="must be in"):
        stratified_split(make_records(5, 5), val, test, 0)


def test_cap_per_class():
    capped, left_out = cap_per_class(make_records(30, 100), 40, seed=0)
    assert Counter(r.label for r in capped) == {1: 30, 0: 40}
    assert left_out == {0: 60}
    assert cap_per_class(make_records(3, 3), 0, 0)[0] == make_records(3, 3)


def test_length_stats():
    stats = length_stats(list(range(1, 101)))
    assert stats["count"] == 100 and stats["min"] == 1 and stats["max"] == 100 and stats["p50"] in (50, 51)
    assert length_stats([]) == {"count": 0}


@pytest.fixture
def dup_corpus(tmp_path) -> Path:
    """A corpus full of duplicate groups (each text 3×, in exact and punctuation variants)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, label, stem in (("legal", 1, "老板拖欠工资第{}个月怎么办"), ("nonlegal", 0, "请问第{}路公交车几点发车")):
        lines = []
        for i in range(60):
            text = stem.format(i)
            lines += [text, text, text.replace("怎么办", "，怎么办？").replace("几点", " 几点")]
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t in lines), encoding="utf-8")
    return folder


def test_no_leakage_duplicates_never_straddle_splits(dup_corpus, tmp_path):
    run = tmp_path / "run"
    summary = prepare(DataConfig(data_dir=str(dup_corpus), run_dir=str(run), val_fraction=0.2, test_fraction=0.2,
                                 min_chars=1), plots=False)
    assert summary["counts"]["kept"] == 120
    assert summary["counts"]["exact_duplicates"] == 120 and summary["counts"]["near_duplicates"] == 120
    keys = {s: {dedup_key(r["text"]) for r in load_split(run, s)} for s in SPLITS}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    # every dropped duplicate's key is in exactly one split
    all_keys = keys["train"] | keys["validation"] | keys["test"]
    assert {dedup_key(d["text"]) for d in read_jsonl(run / "splits" / "dropped.jsonl")} <= all_keys
    assert split_overlap(run) == {"train&validation": 0, "train&test": 0, "validation&test": 0}


def test_split_overlap_detects_a_leak(prepared_run_dir, tmp_path):
    run = tmp_path / "leaky"
    (run / "splits").mkdir(parents=True)
    for split in SPLITS:
        (run / "splits" / f"{split}.jsonl").write_bytes((prepared_run_dir / "splits" / f"{split}.jsonl").read_bytes())
    leaked = load_split(run, "train")[0]
    with (run / "splits" / "test.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({**leaked, "text": leaked["text"] + "！！"}, ensure_ascii=False) + "\n")
    assert split_overlap(run) == {"train&validation": 0, "train&test": 1, "validation&test": 0}


def test_prepare_outputs_on_embedded_sample(prepared_run_dir):
    summary = load_summary(prepared_run_dir)
    c = summary["counts"]
    assert c["rows_read"] == c["loaded"] + c["rejected"]
    assert c["kept"] == c["loaded"] - c["too_short"] - c["too_long"] - c["exact_duplicates"] \
        - c["near_duplicates"] - c["conflict_rows"] - c["capped"]
    assert c["kept"] == sum(s["total"] for s in summary["splits"].values()) >= 700
    for split in SPLITS:
        rows = load_split(prepared_run_dir, split)
        assert rows and all(set(r) == {"id", "text", "label", "source"} for r in rows)
        assert {r["label"] for r in rows} == {0, 1}
        assert all(r["id"] == row_id(r["text"]) for r in rows)
    ids = [r["id"] for s in SPLITS for r in load_split(prepared_run_dir, s)]
    assert len(ids) == len(set(ids))
    for plot in summary["files"]["plots"].values():
        assert Path(plot).stat().st_size > 5000  # a real PNG, not an empty figure
    assert "sample/everyday-question" in summary["per_source"]


def test_prepare_is_byte_reproducible(tmp_path):
    a = prepare(DataConfig(run_dir=str(tmp_path / "a")), plots=False)
    b = prepare(DataConfig(run_dir=str(tmp_path / "b")), plots=False)
    for split in SPLITS:
        assert Path(a["files"]["splits"][split]).read_bytes() == Path(b["files"]["splits"][split]).read_bytes()


def test_max_per_class_in_prepare(tmp_path):
    summary = prepare(DataConfig(run_dir=str(tmp_path / "r"), max_per_class=100), plots=False)
    assert summary["per_label"]["kept"] == {"non_legal": 100, "legal": 100}
    c = summary["counts"]
    assert c["capped"] == c["loaded"] - c["exact_duplicates"] - c["near_duplicates"] - 200  # capped after de-duplication


def test_load_split_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        load_split(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="run the data stage first"):
        load_split(tmp_path, "train")
