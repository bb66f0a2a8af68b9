"""Notebook 01 runs under papermill: on the embedded sample, and leniently on a file with bad lines."""

from __future__ import annotations

import json

import pytest

from lawclf.config import RunPaths, read_results
from lawclf.data import SPLITS, load_split, read_jsonl
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def _errors(executed) -> list:
    nb = json.loads(executed.read_text(encoding="utf-8"))
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def test_notebook_01_on_embedded_sample(tmp_path):
    run = tmp_path / "run"
    executed = run_notebook("01_data_prep", run, {"SEED": 7, "TEST_FRACTION": 0.2})
    assert not _errors(executed)

    paths = RunPaths(run)
    results = read_results(run, "01_data_prep")
    sizes = {s: len(load_split(run, s)) for s in SPLITS}
    assert results["splits"] == sizes
    assert results["counts"]["kept"] == sum(sizes.values()) >= 700
    assert results["counts"]["rejected"] == 0
    assert results["split_overlap"] == {"train&validation": 0, "train&test": 0, "validation&test": 0}
    # the sample's template fillings are grouped: no near-twin (trigram overlap >= 0.8) straddles two splits
    assert results["near_duplicate_groups"]["groups"] > 0
    assert results["split_near_duplicates"] == {"train&validation": 0, "train&test": 0, "validation&test": 0}
    assert sizes["test"] == pytest.approx(0.2 * results["counts"]["kept"], abs=2)
    assert results["per_label_kept"]["legal"] >= 350 and results["per_label_kept"]["non_legal"] >= 350
    for name in ("summary.json", "rejected.jsonl", "dropped.jsonl", "conflicts.jsonl", "class_balance.png",
                 "length_distribution.png"):
        assert (paths.splits / name).is_file(), name
    # the sample's deliberate duplicates are found, and the dirty file shows every kind of rejected line
    assert results["counts"]["exact_duplicates"] == results["counts"]["near_duplicates"] == 4
    nb = json.loads(executed.read_text(encoding="utf-8"))
    shown = "".join("".join(o.get("text", "")) for c in nb["cells"] if c.get("id") == "01-dirty" for o in c["outputs"])
    for reason in ("bad_json", "not_object", "missing_text", "non_string_text", "unknown_label", "missing_label",
                   "too_short", "too_long", "exact_duplicate", "near_duplicate"):
        assert reason in shown, reason
    assert "标签 1:" in shown and "标签 0:" in shown  # the conflict, both rows


def test_notebook_01_lenient_on_bad_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()

    def line(obj) -> str:
        return json.dumps(obj, ensure_ascii=False) + "\n"

    legal = [line({"content": f"公司拖欠我第{i}个月的工资，可以去劳动仲裁吗"}) for i in range(30)]
    legal.insert(10, "{broken\n")                                  # line 11: bad JSON
    legal.append(line({"text": "这一行的文本放错了字段"}))          # line 32: no "content"
    legal.append(line({"content": "公司拖欠我第0个月的工资,可以去劳动仲裁吗?"}))  # near duplicate of line 1
    other = [line({"content": f"请问第{i}路公交车几点发车"}) for i in range(30)] + [line({"content": 42})]
    (data / "legal.jsonl").write_text("".join(legal), encoding="utf-8")
    (data / "nonlegal.jsonl").write_text("".join(other), encoding="utf-8")

    run = tmp_path / "run"
    executed = run_notebook("01_data_prep", run, {"DATA_DIR": str(data), "TEXT_FIELD": "content", "LENIENT": True})
    assert not _errors(executed)
    results = read_results(run, "01_data_prep")
    assert results["rejected_by_reason"] == {"bad_json": 1, "missing_text": 1, "non_string_text": 1}
    assert results["counts"]["near_duplicates"] == 1
    assert results["counts"]["kept"] == 60
    rejected = read_jsonl(RunPaths(run).splits / "rejected.jsonl")
    assert sorted((r["file"].rsplit("/", 1)[-1], r["line"], r["reason"]) for r in rejected) == [
        ("legal.jsonl", 11, "bad_json"), ("legal.jsonl", 32, "missing_text"), ("nonlegal.jsonl", 31, "non_string_text")]


def test_notebook_01_strict_stops_with_file_and_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "legal.jsonl").write_text('{"text": "公司拖欠工资怎么办"}\n{broken\n', encoding="utf-8")
    (data / "nonlegal.jsonl").write_text('{"text": "请问去机场怎么走"}\n', encoding="utf-8")
    with pytest.raises(Exception, match=r"legal.jsonl:2: bad JSON"):
        run_notebook("01_data_prep", tmp_path / "run", {"DATA_DIR": str(data)})
