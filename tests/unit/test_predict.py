"""The ONNX Runtime predictor and the batch CLI (lawclf.predict)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lawclf import config
from lawclf.config import ExportConfig, RunPaths
from lawclf.modeling import TinySpec
from lawclf.predict import (
    ModelLoadError,
    Predictor,
    parse_line,
    predict_file,
    with_prediction,
)
from lawclf.predict_cli import cli

MAX_LEN = 20


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    """An exported random tiny model (max_len 20, threshold 0.41)."""
    from lawclf.export import export
    from lawclf_dev.bench import save_random_model

    run_dir = tmp_path_factory.mktemp("predict") / "run"
    save_random_model(RunPaths(run_dir).model, TinySpec(layers=1, hidden=32, heads=2, vocab_size=3000),
                      max_len=MAX_LEN, version="v-predict")
    config.write_model_meta(RunPaths(run_dir).model, threshold=0.41)
    export(ExportConfig(run_dir=str(run_dir)))
    return RunPaths(run_dir).onnx


@pytest.fixture(scope="module")
def predictor(onnx_dir) -> Predictor:
    return Predictor(onnx_dir, threads=1)


class Recorder:
    """Wraps Predictor.logits to record the shape of every batch fed to ONNX Runtime."""

    def __init__(self, predictor: Predictor):
        self.shapes: list[tuple[int, int]] = []
        self._inner = predictor.logits

    def __call__(self, batch):
        self.shapes.append(batch["input_ids"].shape)
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
        return self._inner(batch)


def test_result_shape_and_threshold(predictor):
    one = predictor.predict("公司拖欠工资怎么办")
    assert set(one) == {"label", "is_legal", "score", "threshold"}
    assert one["label"] in ("legal", "non_legal") and one["is_legal"] == (one["label"] == "legal")
    assert 0.0 <= one["score"] <= 1.0 and one["threshold"] == pytest.approx(0.41)
    assert one["is_legal"] == (one["score"] >= 0.41)
    many = predictor.predict(["公司拖欠工资怎么办", "今天吃什么"])
    assert isinstance(many, list) and len(many) == 2
    # int8 dynamic quantisation scales activations per batch: a score moves slightly with its batch mates
    assert many[0]["score"] == pytest.approx(one["score"], abs=1e-3)
    assert predictor.predict([]) == []
    assert predictor.version == "v-predict" and predictor.model_path.name == "model.int8.onnx"


def test_batch_padded_to_longest_not_512(predictor, monkeypatch):
    rec = Recorder(predictor)
    monkeypatch.setattr(predictor, "logits", rec)
    monkeypatch.setattr(predictor, "pad_ratio", float("inf"))  # one batch whatever the lengths
    predictor.predict_proba(["一二三", "一二三四五六七八九十"])
    assert rec.shapes == [(2, 12)]  # 10 characters + [CLS] + [SEP]


def test_length_groups_cut_by_size_and_by_length_ratio():
    from lawclf.predict import length_groups

    assert length_groups([], 4, 1.25) == []
    assert length_groups([10, 10, 11, 12, 12], 4, 1.25) == [slice(0, 4), slice(4, 5)]  # size cap
    assert length_groups([10, 12, 13, 20, 24, 40], 32, 1.25) == [slice(0, 2), slice(2, 3), slice(3, 5), slice(5, 6)]
    assert length_groups([5, 50], 32, float("inf")) == [slice(0, 2)]


def test_mixed_lengths_go_to_the_model_in_similar_length_batches(predictor, monkeypatch):
    rec = Recorder(predictor)
    monkeypatch.setattr(predictor, "logits", rec)
    short, long_ = ["一二三"] * 3, ["一二三四五六七八九十" * 3] * 2
    scores = predictor.predict_proba(short + long_)
    assert sorted(rec.shapes) == [(2, MAX_LEN), (3, 5)]  # not one batch of 5 padded to MAX_LEN
    assert len(scores) == 5


def test_truncates_at_max_len(predictor, monkeypatch):
    assert len(predictor.encode(["法" * 300])[0]) == MAX_LEN
    rec = Recorder(predictor)
    monkeypatch.setattr(predictor, "logits", rec)
    monkeypatch.setattr(predictor, "pad_ratio", float("inf"))
    predictor.predict_proba(["法" * 300, "短"])
    assert rec.shapes == [(2, MAX_LEN)]


def test_length_sorting_keeps_input_order(predictor, monkeypatch):
    """Batches are formed by length, scores come back in input order."""
    texts = ["法" * n + "律问题" for n in (15, 1, 9, 3, 12, 0, 7)]
    shapes = []

    def logits_from_length(batch):  # logit(legal) = number of real tokens: the score encodes the length
        shapes.append(batch["input_ids"].shape)
        n = batch["attention_mask"].sum(axis=1).astype(np.float32)
        return np.stack([np.zeros_like(n), n / 10], axis=1)

    monkeypatch.setattr(predictor, "logits", logits_from_length)
    monkeypatch.setattr(predictor, "pad_ratio", float("inf"))  # batches cut by size only
    scores = predictor.predict_proba(texts, batch_size=3)
    expected = 1 / (1 + np.exp(-np.array([len(t) + 2 for t in texts]) / 10))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert [s[0] for s in shapes] == [3, 3, 1]
    assert [s[1] for s in shapes] == [3 + 3 + 2, 12 + 3 + 2, 15 + 3 + 2]  # each batch padded to its own longest


def test_batching_matches_one_by_one(onnx_dir):
    fp32 = Predictor(onnx_dir, model_file="model.onnx", threads=1)
    texts = ["法" * n + "律问题" for n in (15, 1, 9, 3, 12, 0, 7)]
    alone = np.array([fp32.predict_proba([t])[0] for t in texts])
    np.testing.assert_allclose(fp32.predict_proba(texts, batch_size=3), alone, atol=1e-6)


def test_bad_text_type(predictor):
    with pytest.raises(TypeError, match="text #1"):
        predictor.predict(["ok", None])


def test_fp32_and_int8_close(onnx_dir):
    texts = ["房东不退押金怎么办", "周末去哪里玩", "交通事故对方不赔钱"]
    fp32 = Predictor(onnx_dir, model_file="model.onnx").predict_proba(texts)
    int8 = Predictor(onnx_dir).predict_proba(texts)
    assert np.abs(fp32 - int8).max() < 0.05


def test_meta_round_trip(onnx_dir, tmp_path):
    """Sidecar wins; without it the copy stored in the ONNX metadata_props is used."""
    copy = shutil.copytree(onnx_dir, tmp_path / "onnx")
    config.write_model_meta(copy, threshold=0.9)
    assert Predictor(copy).threshold == pytest.approx(0.9)
    (copy / "lawclf_meta.json").unlink()
    p = Predictor(copy)
    assert p.threshold == pytest.approx(0.41) and p.max_len == MAX_LEN and p.version == "v-predict"


def test_run_folder_is_accepted(onnx_dir):
    assert Predictor(onnx_dir.parent).model_dir == onnx_dir


@pytest.mark.parametrize("breakage,match", [
    ("no_dir", "does not exist"),
    ("no_model", "ONNX model file not found"),
    ("corrupt_model", "not a loadable ONNX model"),
    ("no_tokenizer", "tokenizer file not found"),
    ("corrupt_meta", "unreadable model metadata"),
])
def test_model_load_errors(onnx_dir, tmp_path, breakage, match):
    copy = shutil.copytree(onnx_dir, tmp_path / "onnx")
    if breakage == "no_dir":
        copy = tmp_path / "missing"
    elif breakage == "no_model":
        (copy / "model.onnx").unlink()
        (copy / "model.int8.onnx").unlink()
    elif breakage == "corrupt_model":
        (copy / "model.int8.onnx").write_bytes(b"this is not protobuf" * 10)
    elif breakage == "no_tokenizer":
        (copy / "tokenizer.json").unlink()
    elif breakage == "corrupt_meta":
        (copy / "lawclf_meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=match):
        Predictor(copy)


def test_import_is_torch_free():
    code = ("import sys, lawclf.predict, lawclf.cli; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_predictor_is_torch_free(onnx_dir):
    code = (f"import sys; from lawclf.predict import Predictor; p = Predictor({str(onnx_dir)!r}); "
            "p.predict(['合同纠纷', '天气']); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- batch files / CLI
def test_parse_line():
    assert parse_line(b'{"text": "hi", "id": 1}', "text") == ({"text": "hi", "id": 1}, None)
    assert "bad JSON" in parse_line(b'{"text": ', "text")[1]
    assert "missing field 'text'" in parse_line(b'{"body": "x"}', "text")[1]
    assert "expected a string" in parse_line(b'{"text": 5}', "text")[1]
    assert "empty" in parse_line(b'{"text": "  "}', "text")[1]
    assert "JSON object" in parse_line(b'["text"]', "text")[1]
    assert "UTF-8" in parse_line(b'{"text": "\xff"}', "text")[1]


def test_with_prediction_keeps_colliding_fields():
    out = with_prediction({"text": "x", "label": 1, "id": 7}, {"label": "legal", "score": 0.8, "is_legal": True})
    assert out == {"text": "x", "label_input": 1, "id": 7, "label": "legal", "score": 0.8, "is_legal": True}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_good_file(onnx_dir, tmp_path, capsys):
    src = _write(tmp_path / "posts.jsonl", [json.dumps({"id": i, "text": t, "extra": {"k": i}}, ensure_ascii=False)
                                            for i, t in enumerate(["合同纠纷怎么办", "今天天气不错", "离婚财产分割"])])
    out = tmp_path / "pred.jsonl"
    assert cli(["--model", str(onnx_dir), "--input", str(src), "--output", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2] and rows[2]["extra"] == {"k": 2}
    expected = Predictor(onnx_dir).predict(["合同纠纷怎么办", "今天天气不错", "离婚财产分割"])
    for row, exp in zip(rows, expected):
        assert row["label"] == exp["label"] and row["is_legal"] == exp["is_legal"]
        assert row["score"] == pytest.approx(exp["score"], abs=1e-5)
    assert (tmp_path / "pred.errors.jsonl").read_text(encoding="utf-8") == ""
    assert "3 classified" in capsys.readouterr().err


def test_cli_bad_lines_reported_and_kept(onnx_dir, tmp_path, capsys):
    lines = ['{"text": "合同纠纷怎么办"}', '{"text": "broken', "", '{"content": "无文本字段"}',
             '{"text": 42}', '{"text": "还有一个好的"}']
    src = _write(tmp_path / "posts.jsonl", lines)
    out, err = tmp_path / "pred.jsonl", tmp_path / "bad.jsonl"
    rc = cli(["--model", str(onnx_dir), "--input", str(src), "--output", str(out), "--errors", str(err),
              "--no-progress"])
    assert rc == 1
    good = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g["text"] for g in good] == ["合同纠纷怎么办", "还有一个好的"]
    errors = [json.loads(line) for line in err.read_text(encoding="utf-8").splitlines()]
    assert [e["line"] for e in errors] == [2, 4, 5]
    assert [e["raw"] for e in errors] == [lines[1], lines[3], lines[4]]
    assert "bad JSON" in errors[0]["error"] and "missing field" in errors[1]["error"]
    stderr = capsys.readouterr().err
    assert f"{src}:2:" in stderr and f"{src}:5:" in stderr and "1 blank" in stderr


def test_cli_text_and_custom_field(onnx_dir, tmp_path, capsys):
    assert cli(["--model", str(onnx_dir), "--text", "合同纠纷", "--text", "天气"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["text"] for p in printed] == ["合同纠纷", "天气"] and all("score" in p for p in printed)
    src = _write(tmp_path / "in.jsonl", ['{"body": "合同纠纷"}'])
    assert cli(["--model", str(onnx_dir), "--input", str(src), "--output", str(tmp_path / "o.jsonl"),
                "--text-field", "body", "--no-progress"]) == 0


def test_cli_missing_model_exits_2(tmp_path, capsys):
    assert cli(["--model", str(tmp_path / "nothing"), "--text", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_file_streams(predictor, tmp_path):
    """Output is written chunk by chunk while the input is still being read (bounded memory)."""
    n = 100_000
    src = tmp_path / "big.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": "问" if i % 2 else "答"}, ensure_ascii=False) + "\n")
    out = tmp_path / "big.out.jsonl"
    seen_sizes, pending_sizes = [], []
    real = predictor.predict_proba

    def spy(texts, batch_size=None):
        seen_sizes.append(out.stat().st_size if out.exists() else 0)
        pending_sizes.append(len(texts))
        return real(texts, batch_size)

    predictor.predict_proba = spy
    try:
        counts = predict_file(predictor, src, out, tmp_path / "e.jsonl", chunk_size=5000, progress=False)
    finally:
        del predictor.predict_proba
    assert counts["predicted"] == n and counts["errors"] == 0
    assert max(pending_sizes) <= 5000  # never more than one chunk in memory
    assert seen_sizes[0] == 0 and all(b > a for a, b in zip(seen_sizes, seen_sizes[1:]))  # written as it goes
    with out.open(encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert json.loads(lines[-1])["id"] == n - 1


def test_cli_subprocess_exit_codes(onnx_dir, tmp_path):
    """Through the real entry point: 1 when a line failed, 2 when the model folder is unusable."""
    src = _write(tmp_path / "posts.jsonl", ['{"text": "合同纠纷"}', "not json"])
    cmd = [sys.executable, "-m", "lawclf", "predict", "--model", str(onnx_dir), "--input", str(src),
           "--output", str(tmp_path / "out.jsonl"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert f"{src}:2: bad JSON" in proc.stderr
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    proc = subprocess.run(cmd[:5] + [str(tmp_path / "nope")] + cmd[6:], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
