"""The Ray Data engine gives the single-process batch CLI's results, bad lines included.

One local Ray instance with 2 CPUs for the whole module (start-up costs seconds). The
input is made up here: good lines, every kind of bad line, blank lines, a Parquet file.
Small chunks spread it over both actors, so output order is really tested.

Exact score comparisons use the fp32 model: the int8 model's dynamic quantisation takes
each activation scale from the whole batch, so a text's int8 score moves slightly
(~1e-4..1e-3) with the other texts in its batch, and the two engines batch differently.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from lawclf import predict, predict_cli  # noqa: E402
from lawclf.config import RunPaths  # noqa: E402
from lawclf.ray_predict import (  # noqa: E402
    expand_inputs,
    plan_actors,
    plan_chunks,
    predict_files_ray,
    read_chunk,
    split_lines,
)

pytestmark = pytest.mark.integration

TEXTS = ["公司拖欠工资三个月，我可以申请劳动仲裁吗？", "周末去哪里爬山比较好？", "租房合同到期房东不退押金怎么办",
         "推荐几本好看的科幻小说", "离婚后孩子的抚养权归谁", "这款手机的电池续航怎么样",
         "交通事故对方全责但拒绝赔偿，该怎么起诉", "今天晚饭做什么菜"]
#: (raw line, expected reason fragment) for every kind of bad line the CLI reports.
BAD_LINES = [
    (b'{"text": "unterminated', "bad JSON"),
    (b'["a list", "not an object"]', "expected a JSON object"),
    (b'{"body": "no text field"}', "missing field 'text'"),
    (b'{"text": 42}', "expected a string"),
    (b'{"text": "   "}', "is empty"),
    ('{"text": "不是UTF-8"}'.encode("gbk"), "not UTF-8"),
]


def _write_jsonl(path: Path, n_good: int = 60) -> Path:
    lines = []
    for i in range(n_good):
        record = {"id": f"p{i}", "text": f"{TEXTS[i % len(TEXTS)]}（第{i}条）"}
        if i == 3:
            record["label"] = "kept"  # collides with an output field: kept as label_input
        lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        if i % 10 == 5:  # bad and blank lines scattered through the file
            lines.append(BAD_LINES[(i // 10) % len(BAD_LINES)][0])
        if i % 17 == 0:
            lines.append(b"")
    lines += [raw for raw, _ in BAD_LINES]
    path.write_bytes(b"\n".join(lines) + b"\r\n")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(exported_run_dir) -> Path:
    return RunPaths(exported_run_dir).onnx


@pytest.mark.slow
def test_ray_output_matches_the_single_process_cli(local_ray, model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "posts.jsonl")
    local = predict.predict_file(predict.Predictor(model_dir, model_file=predict.FP32_FILE), src, tmp_path / "local.jsonl",
                                 tmp_path / "local.err.jsonl", progress=False, log=io.StringIO())
    log = io.StringIO()
    counts = predict_files_ray(model_dir, src, tmp_path / "ray.jsonl", tmp_path / "ray.err.jsonl",
                               model_file=predict.FP32_FILE, num_actors=2, batch_size=16, rows_per_block=8,
                               log=log)

    assert counts["actors"] == 2 and counts["threads_per_actor"] == 1
    for key in ("lines", "predicted", "errors", "blank", "legal"):
        assert counts[key] == local[key], key
    assert counts["predicted"] == 60 and counts["errors"] == 6 + len(BAD_LINES)

    want, got = _read(tmp_path / "local.jsonl"), _read(tmp_path / "ray.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want]  # same order, nothing lost
    for a, b in zip(want, got):
        assert b["label"] == a["label"] and b["is_legal"] == a["is_legal"]
        assert b["score"] == pytest.approx(a["score"], abs=1e-6)
        assert {k: v for k, v in b.items() if k != "score"} == {k: v for k, v in a.items() if k != "score"}
    assert got[3]["label_input"] == "kept"

    want_err, got_err = _read(tmp_path / "local.err.jsonl"), _read(tmp_path / "ray.err.jsonl")
    assert [(e["line"], e["error"], e["raw"]) for e in got_err] == [(e["line"], e["error"], e["raw"])
                                                                   for e in want_err]
    assert {e["file"] for e in got_err} == {str(src)}
    for (_raw, reason), err in zip(BAD_LINES, got_err[-len(BAD_LINES):]):
        assert reason in err["error"]
    # The first bad lines are also reported on the log as file:line: reason.
    first = got_err[0]
    assert f"{src}:{first['line']}: {first['error']}" in log.getvalue()


@pytest.mark.slow
def test_parquet_and_several_files_keep_their_origin(local_ray, model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "公司拖欠工资怎么办"}\n{"text": 1}\n', encoding="utf-8")
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["离婚后孩子的抚养权归谁", None, "今天晚饭做什么菜"]}), parquet)

    counts = predict_files_ray(model_dir, str(tmp_path / "*.*"), tmp_path / "out" / "p.jsonl",
                               tmp_path / "out" / "e.jsonl", model_file=predict.FP32_FILE, num_actors=1,
                               log=io.StringIO())
    assert (counts["files"], counts["lines"], counts["predicted"], counts["errors"]) == (2, 5, 3, 2)
    out = _read(tmp_path / "out" / "p.jsonl")
    assert [r["text"] for r in out] == ["公司拖欠工资怎么办", "离婚后孩子的抚养权归谁", "今天晚饭做什么菜"]
    assert [r.get("id") for r in out] == [None, 1, 3]
    errors = _read(tmp_path / "out" / "e.jsonl")
    assert [(Path(e["file"]).name, e["line"]) for e in errors] == [("a.jsonl", 2), ("b.parquet", 2)]
    expected = predict.Predictor(model_dir, model_file=predict.FP32_FILE).predict_proba([r["text"] for r in out])
    assert [r["score"] for r in out] == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.slow
def test_cli_engine_ray_with_the_int8_model(local_ray, model_dir, tmp_path, capsys):
    src = _write_jsonl(tmp_path / "in.jsonl", n_good=20)
    common = ["--model", str(model_dir), "--input", str(src), "--no-progress"]
    assert predict_cli.cli(common + ["--output", str(tmp_path / "l.jsonl"), "--errors", str(tmp_path / "le.jsonl")]) == 1
    code = predict_cli.cli(common + ["--output", str(tmp_path / "r.jsonl"), "--errors", str(tmp_path / "re.jsonl"),
                                 "--engine", "ray", "--ray-actors", "2"])
    assert code == 1  # bad lines: exit 1, as the local engine does
    assert "20 classified" in capsys.readouterr().err
    local, ray_out = _read(tmp_path / "l.jsonl"), _read(tmp_path / "r.jsonl")
    assert [r["id"] for r in ray_out] == [r["id"] for r in local]
    threshold = predict.Predictor(model_dir).threshold
    for a, b in zip(local, ray_out):
        assert b["score"] == pytest.approx(a["score"], abs=2e-3)  # int8: batch-dependent, see above
        if abs(a["score"] - threshold) > 2e-3:
            assert b["label"] == a["label"]
    assert [e["line"] for e in _read(tmp_path / "re.jsonl")] == [e["line"] for e in _read(tmp_path / "le.jsonl")]


def test_chunks_number_lines_like_a_file_iterator(tmp_path):
    data = b'{"a":1}\r\n\n{"b":2}\n' * 5 + b'{"c":3}'
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    expected = [(n, raw.rstrip(b"\r\n")) for n, raw in enumerate(io.BytesIO(data), start=1)]
    for rows_per_block in (1, 2, 3, 16, 100):
        chunks = plan_chunks([str(path)], rows_per_block, scan_bytes=7)  # chunks cut across scan buffers
        rows = [r for chunk in chunks for r in read_chunk(chunk)]
        assert [(r["line"], r["raw"]) for r in rows] == expected, rows_per_block
        assert all(len(read_chunk(c)) <= rows_per_block for c in chunks)
    assert split_lines(b"") == [] and split_lines(b"a\nb\n") == [b"a", b"b"]


def test_plan_actors_fits_the_cores():
    assert plan_actors(2) == (2, 1)
    assert plan_actors(16, threads_per_actor=4) == (4, 4)
    assert plan_actors(16, threads_per_actor=2, num_actors=3) == (3, 2)
    with pytest.raises(ValueError, match="need 6 CPUs"):
        plan_actors(4, threads_per_actor=2, num_actors=3)
    with pytest.raises(ValueError):
        plan_actors(2, threads_per_actor=4)


def test_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        expand_inputs(str(tmp_path / "nope.jsonl"))
