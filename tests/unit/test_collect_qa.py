"""Q&A importer (CSV / JSONL, configurable columns, file:line errors) and the JSONL export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from lawclf.collect import cli, store
from lawclf.collect.jsonl import export_jsonl
from lawclf.collect.qa import QAInputError, import_qa, read_qa

QA_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "v2ex" / "qa_sample.csv"


@pytest.fixture
def engine(tmp_path):
    eng = store.open_db(f"sqlite:///{tmp_path / 'collect.db'}")
    yield eng
    eng.dispose()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def count_posts(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(store.posts)).scalar_one()


def test_import_csv_is_idempotent(engine):
    first = import_qa(engine, QA_CSV)
    assert first["read"] == first["new"] == 22 and first["rejected"] == 0
    again = import_qa(engine, QA_CSV)
    assert again["new"] == 0 and again["updated"] == 22
    assert count_posts(engine) == 22
    with engine.connect() as conn:
        row = conn.execute(sa.select(store.posts).where(store.posts.c.external_id == "q001")).mappings().one()
    assert row["label"] == 1 and row["source"] == "qa" and row["node"] == "合同纠纷"
    assert row["title"] == "房东不退押金怎么办" and "押金" in row["body"]
    assert "示例回答" not in row["body"]  # the answer column is not part of the question


def test_jsonl_with_custom_columns_and_hashed_ids(tmp_path, engine):
    path = write(tmp_path / "dump.jsonl",
                 '{"q": "工资被拖欠怎么办", "detail": "已经两个月了"}\n\n'
                 '{"q": "离婚财产如何分割", "detail": ""}\n')
    rows = list(read_qa(path, title_field="", body_fields=["q", "detail"], id_field="qid", source="lawqa"))
    assert [r["body"] for r in rows] == ["工资被拖欠怎么办\n已经两个月了", "离婚财产如何分割"]
    assert all(r["external_id"].startswith("sha1:") for r in rows)
    import_qa(engine, path, title_field="", body_fields=["q", "detail"], id_field="qid", source="lawqa")
    import_qa(engine, path, title_field="", body_fields=["q", "detail"], id_field="qid", source="lawqa")
    assert count_posts(engine) == 2  # hashed ids keep re-imports idempotent


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"title": "合同纠纷怎么处理"}\n{"title": "缺了括号"\n', r"bad\.jsonl:2: invalid JSON"),
    ("list.jsonl", '{"title": "合同纠纷怎么处理"}\n["不是对象"]\n', r"list\.jsonl:2: expected an object"),
    ("empty.jsonl", '{"title": "合同纠纷怎么处理"}\n{"title": "", "question": null}\n', r"empty\.jsonl:2: empty text"),
    ("cells.csv", 'title,question\n合同纠纷,怎么处理\n"多行\n标题",内容\n太多,列,了\n', r"cells\.csv:5: 3 cells"),
    ("cols.csv", 'name,text\n张三,你好\n', r"cols\.csv:2: none of the text columns"),
    ("dump.xlsx", "x", r"unsupported file type"),
])
def test_bad_lines_name_file_and_line(tmp_path, engine, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(QAInputError, match=message):
        import_qa(engine, path)
    assert count_posts(engine) == 0  # strict mode writes nothing from a bad file


def test_lenient_counts_and_reports_bad_lines(tmp_path, engine):
    path = write(tmp_path / "mixed.jsonl",
                 '{"title": "租房押金不退"}\n{oops\n{"title": "公司不交社保"}\n{"title": ""}\n')
    result = import_qa(engine, path, lenient=True)
    assert result["new"] == 2 and result["rejected"] == 2
    assert result["rejected_lines"][0].startswith(f"{path}:2:")
    assert result["rejected_lines"][1].startswith(f"{path}:4:")


def test_export_writes_the_two_file_layout(tmp_path, engine):
    import_qa(engine, QA_CSV)
    with engine.begin() as conn:
        store.upsert_posts(conn, [
            {"source": "v2ex", "external_id": "1", "title": "键盘推荐", "body": "<p>想买一把**机械键盘**</p>", "label": 0},
            {"source": "v2ex", "external_id": "2", "title": "键盘推荐", "body": "想买一把机械键盘", "label": 0},  # same text
            {"source": "v2ex", "external_id": "3", "title": "短", "body": "", "label": 0},
            {"source": "v2ex", "external_id": "4", "title": "长" * 600, "body": "", "label": 0},
            {"source": "v2ex", "external_id": "5", "title": "房东不退押金怎么办",  # same text as a legal row
             "body": "租房合同到期，房子也按原样交还了，房东一直拖着不退押金，我该怎么维权？", "label": 0},
        ])
    out = tmp_path / "out"
    counts = export_jsonl(engine, out, min_chars=5, max_chars=512)
    assert counts == {"read": 27, "too_short": 1, "too_long": 1, "duplicates": 1, "conflicts": 1,
                      "legal": 21, "nonlegal": 1, "out_dir": str(out)}
    legal = [json.loads(line) for line in (out / "legal.jsonl").read_text(encoding="utf-8").splitlines()]
    nonlegal = [json.loads(line) for line in (out / "nonlegal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert nonlegal == [{"text": "键盘推荐 想买一把机械键盘", "label": 0, "source": "v2ex"}]
    assert all(set(r) == {"text", "label", "source"} and r["label"] == 1 and r["source"] == "qa" for r in legal)
    assert not any(r["text"].startswith("房东不退押金") for r in legal)


def test_cli_import_export_stats_and_errors(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert cli(["import-qa", "--db-url", db, "--qa-path", str(QA_CSV)]) == 0
    assert json.loads(capsys.readouterr().out)["new"] == 22
    assert cli(["export", "--db-url", db, "--out-dir", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["legal"] == 22
    assert cli(["stats", "--db-url", db]) == 0
    assert json.loads(capsys.readouterr().out)["by_source"] == [{"source": "qa", "label": 1, "count": 22}]
    bad = write(tmp_path / "bad.jsonl", "{nope\n")
    assert cli(["import-qa", "--db-url", db, "--qa-path", str(bad)]) == 2
    assert f"{bad}:1: invalid JSON" in capsys.readouterr().err
    assert cli(["import-qa", "--db-url", db]) == 2
