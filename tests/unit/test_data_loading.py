"""Loading and validation: every bad-input case names its file and line; lenient mode keeps count."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lawclf.config import DataConfig
from lawclf.data import DataError, cli, parse_label, prepare, read_jsonl, resolve_inputs
from lawclf.sample import sample_data_dir

N_GOOD = 12


def rows(label: int, n: int = N_GOOD, field: str = "text") -> list[str]:
    """n distinct valid JSONL lines for one class."""
    stem = "请问公司拖欠工资第{}个月了能起诉吗" if label else "请问今天去第{}个景点怎么走比较快"
    return [json.dumps({field: stem.format(i)}, ensure_ascii=False) for i in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def pair(tmp_path) -> Path:
    """A valid two-file data folder; tests overwrite one file with a bad line in it."""
    write_lines(tmp_path / "legal.jsonl", rows(1))
    write_lines(tmp_path / "nonlegal.jsonl", rows(0))
    return tmp_path


def cfg_for(folder: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(data_dir=str(folder), run_dir=str(tmp_path / "run"), **kw)


BAD_LINES = {
    "bad_json": ('{"text": "借钱不还", ', "bad JSON"),
    "not_object": ('["借钱不还怎么办"]', "expected a JSON object, got list"),
    "missing_text": ('{"content": "借钱不还怎么办"}', "missing text field 'text' (fields: content)"),
    "null_text": ('{"text": null}', "missing text field 'text'"),
    "non_string_text": ('{"text": 12345}', "text field 'text' is int, not a string"),
    "unknown_label": ('{"text": "欠钱不还能起诉吗", "label": "maybe"}', "unknown label 'maybe'"),
    "label_mismatch": ('{"text": "欠钱不还能起诉吗", "label": 0}', "disagrees with the file"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_names_file_and_line(pair, tmp_path, case):
    bad, message = BAD_LINES[case]
    lines = rows(1)
    lines.insert(3, bad)  # line 4
    path = write_lines(pair / "legal.jsonl", lines)
    with pytest.raises(DataError) as err:
        prepare(cfg_for(pair, tmp_path), plots=False)
    assert str(err.value).startswith(f"{path}:4: ")
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_lenient_skips_counts_and_writes_rejected(pair, tmp_path):
    lines = rows(1)
    bad = [BAD_LINES[c][0] for c in sorted(BAD_LINES)]
    path = write_lines(pair / "legal.jsonl", lines[:2] + bad + lines[2:])
    summary = prepare(cfg_for(pair, tmp_path, lenient=True), plots=False)

    assert summary["counts"]["rejected"] == len(BAD_LINES)
    assert summary["counts"]["loaded"] == 2 * N_GOOD
    assert summary["counts"]["rows_read"] == 2 * N_GOOD + len(BAD_LINES)
    assert summary["rejected_by_reason"] == {"bad_json": 1, "label_mismatch": 1, "missing_text": 2,
                                             "non_string_text": 1, "not_object": 1, "unknown_label": 1}
    rejected = read_jsonl(summary["files"]["rejected"])
    assert [r["line"] for r in rejected] == list(range(3, 3 + len(BAD_LINES)))
    assert all(r["file"] == str(path) for r in rejected)
    assert [r["raw"] for r in rejected] == bad  # the original line, to fix and re-add
    assert all(r["reason"] and r["message"] for r in rejected)


def test_strict_mode_rejects_nothing_silently_on_clean_data(pair, tmp_path):
    summary = prepare(cfg_for(pair, tmp_path), plots=False)
    assert summary["counts"]["rejected"] == 0
    assert read_jsonl(summary["files"]["rejected"]) == []
    assert summary["counts"]["kept"] == 2 * N_GOOD


def test_blank_lines_are_counted_not_rejected(pair, tmp_path):
    write_lines(pair / "legal.jsonl", rows(1)[:5] + ["", "   "] + rows(1)[5:])
    summary = prepare(cfg_for(pair, tmp_path), plots=False)
    assert summary["counts"]["blank_lines"] == 2
    assert summary["counts"]["loaded"] == 2 * N_GOOD


def test_label_in_two_file_layout_is_optional_but_checked(pair, tmp_path):
    lines = [json.dumps({"text": f"欠钱不还第{i}次了能起诉吗", "label": lab}, ensure_ascii=False)
             for i, lab in enumerate([1, "1", "legal", "法律"])]
    write_lines(pair / "legal.jsonl", rows(1) + lines)
    summary = prepare(cfg_for(pair, tmp_path), plots=False)
    assert summary["per_label"]["loaded"]["legal"] == N_GOOD + 4


def test_custom_text_field(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_lines(folder / "legal.jsonl", rows(1, field="content"))
    write_lines(folder / "nonlegal.jsonl", rows(0, field="content"))
    with pytest.raises(DataError, match=r"legal.jsonl:1: missing text field 'text' \(fields: content\)"):
        prepare(cfg_for(folder, tmp_path), plots=False)
    summary = prepare(cfg_for(folder, tmp_path, text_field="content"), plots=False)
    assert summary["counts"]["kept"] == 2 * N_GOOD


def test_explicit_paths_override_data_dir(pair, tmp_path):
    cfg = DataConfig(legal_path=str(pair / "legal.jsonl"), nonlegal_path=str(pair / "nonlegal.jsonl"),
                     data_dir="/nonexistent", run_dir=str(tmp_path / "run"))
    assert prepare(cfg, plots=False)["counts"]["kept"] == 2 * N_GOOD


def test_extra_data_dirs_add_their_rows_and_bad_lines_name_their_file(pair, tmp_path):
    extra = tmp_path / "pool"
    extra.mkdir()
    write_lines(extra / "legal.jsonl", [json.dumps({"text": "试用期被辞退有没有赔偿", "source": "pool:a"},
                                                   ensure_ascii=False)])
    write_lines(extra / "nonlegal.jsonl", [json.dumps({"text": "孩子晚上总是哭闹怎么办", "source": "pool:b"},
                                                      ensure_ascii=False)])
    summary = prepare(cfg_for(pair, tmp_path, extra_data_dirs=f" {extra} "), plots=False)
    assert summary["counts"]["kept"] == 2 * N_GOOD + 2
    assert [i["path"] for i in summary["inputs"]][2:] == [str(extra / "legal.jsonl"), str(extra / "nonlegal.jsonl")]
    texts = {r["text"]: r["label"] for s in ("train", "validation", "test") for r in read_jsonl(
        Path(summary["files"]["splits"][s]))}
    assert texts["试用期被辞退有没有赔偿"] == 1 and texts["孩子晚上总是哭闹怎么办"] == 0
    write_lines(extra / "nonlegal.jsonl", ['{"text": "孩子晚上总是哭闹怎么办", '])
    with pytest.raises(DataError, match=rf"{extra / 'nonlegal.jsonl'}:1: bad JSON"):
        prepare(cfg_for(pair, tmp_path, extra_data_dirs=str(extra)), plots=False)
    with pytest.raises(DataError, match=r"nowhere/legal.jsonl: file not found"):
        resolve_inputs(cfg_for(pair, tmp_path, extra_data_dirs=str(tmp_path / "nowhere")))


def test_single_labelled_jsonl_accepts_all_label_spellings(tmp_path):
    spellings = [0, 1, "0", "1", "legal", "non_legal", "法律", "非法律", "Legal ", "nonlegal"]
    lines = [json.dumps({"text": f"第{i}条示例文本内容", "label": lab}, ensure_ascii=False)
             for i, lab in enumerate(spellings)]
    path = write_lines(tmp_path / "all.jsonl", lines)
    summary = prepare(DataConfig(labelled_path=str(path), run_dir=str(tmp_path / "run"),
                                 val_fraction=0, test_fraction=0), plots=False)
    assert summary["per_label"]["loaded"] == {"non_legal": 5, "legal": 5}


def test_single_labelled_jsonl_missing_label(tmp_path):
    path = write_lines(tmp_path / "all.jsonl", ['{"text": "借钱不还能起诉吗", "label": 1}', '{"text": "请问去机场怎么走"}'])
    with pytest.raises(DataError, match=r"all.jsonl:2: missing label field 'label'"):
        prepare(DataConfig(labelled_path=str(path), run_dir=str(tmp_path / "run")), plots=False)


def write_csv(path: Path, header: list[str], body: list[list]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:  # with a BOM, as Excel writes it
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(body)
    return path


def test_single_labelled_csv(tmp_path):
    body = [[f"请问公司拖欠工资第{i}个月了能起诉吗", "法律"] for i in range(N_GOOD)]
    body += [[f"请问去第{i}个景点怎么走,\n多谢", "0"] for i in range(N_GOOD)]  # quoted multi-line cells
    path = write_csv(tmp_path / "data.csv", ["text", "label"], body)
    summary = prepare(DataConfig(labelled_path=str(path), run_dir=str(tmp_path / "run")), plots=False)
    assert summary["per_label"]["kept"] == {"non_legal": N_GOOD, "legal": N_GOOD}
    assert summary["per_source"] == {"data.csv": {"loaded": 2 * N_GOOD, "kept": 2 * N_GOOD}}


def test_csv_missing_column(tmp_path):
    path = write_csv(tmp_path / "data.csv", ["content", "label"], [["请问去机场怎么走", "0"]])
    with pytest.raises(DataError, match=r"data.csv:1: missing column 'text' \(columns: content, label\)"):
        prepare(DataConfig(labelled_path=str(path), run_dir=str(tmp_path / "run")), plots=False)
    # lenient mode cannot fix a file without the column: still an error
    with pytest.raises(DataError, match="missing column"):
        prepare(DataConfig(labelled_path=str(path), run_dir=str(tmp_path / "run"), lenient=True), plots=False)


def test_csv_bad_label_line_number_counts_multiline_cells(tmp_path):
    body = [["第一行\n跨两行的文本", "1"], ["请问去机场怎么走", "maybe"]]
    path = write_csv(tmp_path / "data.csv", ["text", "label"], body)
    # header = line 1, first record = lines 2-3, second record = line 4
    with pytest.raises(DataError, match=r"data.csv:4: unknown label 'maybe'"):
        prepare(DataConfig(labelled_path=str(path), run_dir=str(tmp_path / "run")), plots=False)


def test_missing_file_and_ambiguous_inputs(tmp_path):
    with pytest.raises(DataError, match=r"legal.jsonl: file not found"):
        prepare(cfg_for(tmp_path / "nowhere", tmp_path), plots=False)
    with pytest.raises(DataError, match="both legal_path and nonlegal_path"):
        resolve_inputs(DataConfig(legal_path=str(tmp_path / "a.jsonl")))
    with pytest.raises(DataError, match="not both"):
        resolve_inputs(DataConfig(labelled_path="x.csv", legal_path="a", nonlegal_path="b"))


def test_default_is_the_embedded_sample():
    paths = [inp.path for inp in resolve_inputs(DataConfig())]
    assert paths == [sample_data_dir() / "legal.jsonl", sample_data_dir() / "nonlegal.jsonl"]


def test_one_class_left_is_an_error(pair, tmp_path):
    write_lines(pair / "nonlegal.jsonl", ['{"text": "短"}'])
    with pytest.raises(DataError, match="only one class"):
        prepare(cfg_for(pair, tmp_path), plots=False)


@pytest.mark.parametrize("value, expected", [
    (0, 0), (1, 1), (1.0, 1), ("1", 1), (" 0 ", 0), ("LEGAL", 1), ("non-legal", 0), ("法律咨询", 1), ("非法律", 0),
    (2, None), ("yes", None), (True, None), (None, None), ([1], None),
])
def test_parse_label(value, expected):
    assert parse_label(value) == expected


def test_cli_exit_code_2_with_file_line(pair, tmp_path, capsys):
    path = write_lines(pair / "nonlegal.jsonl", rows(0)[:3] + ["{oops"])
    code = cli(["--data-dir", str(pair), "--run-dir", str(tmp_path / "run"), "--no-plots"])
    assert code == 2
    assert f"{path}:4: bad JSON" in capsys.readouterr().err


def test_cli_lenient_succeeds(pair, tmp_path, capsys):
    write_lines(pair / "nonlegal.jsonl", rows(0) + ["{oops"])
    code = cli(["--data-dir", str(pair), "--run-dir", str(tmp_path / "run"), "--lenient", "--no-plots"])
    assert code == 0
    out = capsys.readouterr().out
    assert "1 rejected" in out and "rejected.jsonl" in out
