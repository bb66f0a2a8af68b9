"""lawclf_meta.json as one checked contract (lawclf.meta): read, written and refused in one place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lawclf.config import read_model_meta, write_model_meta
from lawclf.meta import MODEL_META_FILE, SCHEMA_VERSION, MetaError, ModelMeta

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "meta"


@pytest.mark.parametrize("meta,field", [
    ({"max_len": 100000}, "max_len"),
    ({"max_len": 0}, "max_len"),
    ({"max_len": "64"}, "max_len"),
    ({"labels": ["legal"]}, "labels"),
    ({"labels": ["legal", "legal"]}, "labels"),
    ({"labels": ["a", "b"]}, "labels"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": {}}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"truncation": "middle"}, "truncation"),
    ({"combine": {"method": "mean", "weight": 2}}, "combine"),
    ({"schema": "2"}, "schema"),
])
def test_bad_model_metadata_is_refused_naming_the_file_and_field(meta, field):
    with pytest.raises(MetaError, match=rf"models/x/lawclf_meta.json: .*'{field}'|combine 'mean'"):
        ModelMeta.from_dict(meta, "models/x/lawclf_meta.json")


def test_good_metadata_and_the_defaults():
    meta = ModelMeta.from_dict({"labels": ["non_legal", "legal"], "threshold": 0.42, "max_len": 64, "recipe": {}}, "m")
    assert (meta.labels, meta.threshold, meta.max_len, meta.positive_index) == (["non_legal", "legal"], 0.42, 64, 1)
    assert meta.extra == {"recipe": {}}  # what a stage recorded beyond the typed fields is kept as it is
    empty = ModelMeta.from_dict({}, "m")
    assert (empty.labels, empty.threshold, empty.max_len, empty.truncation, empty.combine) == (
        ["non_legal", "legal"], 0.5, 512, "head", {"method": "model"})
    with pytest.raises(MetaError, match="graph has 3 outputs"):
        ModelMeta.from_dict({}, "m", n_outputs=3)


def test_a_file_from_before_the_schema_loads_and_a_newer_schema_is_refused(tmp_path):
    # schema1_lawclf_meta.json: an exported sample model's metadata as the code before lawclf.meta wrote it
    raw = json.loads((FIXTURES / "schema1_lawclf_meta.json").read_text(encoding="utf-8"))
    assert "schema" not in raw
    meta = ModelMeta.from_dict(raw, "old")
    assert (meta.threshold, meta.max_len, meta.truncation, meta.combine["method"]) == (
        raw["threshold"], raw["max_len"], raw["truncation"], raw["combine"]["method"])
    assert meta.to_dict() == {**raw, "schema": SCHEMA_VERSION}  # nothing lost on the way through
    with pytest.raises(MetaError, match=r"newer lawclf \(metadata schema 99\).*upgrade lawclf"):
        ModelMeta.from_dict({**raw, "schema": 99}, "new")


def test_an_old_model_folder_still_serves(exported_run_dir, tmp_path):
    from lawclf.predict import Predictor

    onnx = tmp_path / "onnx"
    shutil.copytree(exported_run_dir / "onnx", onnx)
    raw = json.loads((onnx / MODEL_META_FILE).read_text(encoding="utf-8"))
    raw.pop("schema")
    (onnx / MODEL_META_FILE).write_text(json.dumps(raw), encoding="utf-8")  # as written before the schema
    assert Predictor(onnx).threshold == pytest.approx(raw["threshold"])


def test_a_stage_cannot_write_what_a_server_would_refuse(tmp_path):
    write_model_meta(tmp_path, threshold=0.3, recipe={"recipe": "plain"})
    assert read_model_meta(tmp_path)["schema"] == SCHEMA_VERSION
    with pytest.raises(MetaError, match="field 'threshold'"):
        write_model_meta(tmp_path, threshold=1.7)
    assert read_model_meta(tmp_path)["threshold"] == 0.3  # the refused update left the file as it was
    assert ModelMeta.read(tmp_path).extra["recipe"] == {"recipe": "plain"}
    with pytest.raises(MetaError, match="not found"):
        ModelMeta.read(tmp_path / "nowhere")
