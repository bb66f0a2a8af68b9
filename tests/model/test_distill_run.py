"""``lawclf distill`` on a trained tiny run: a served student that names its teacher and scores like it."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from lawclf.cli import main
from lawclf.config import DistillConfig, RunPaths, read_model_meta
from lawclf.distill import distill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student(exported_run_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    teacher = copy_run(exported_run_dir, base / "teacher")
    test_rows = RunPaths(teacher).split_file("test").read_text(encoding="utf-8").splitlines()
    unlabelled = base / "posts.jsonl"  # one new text and one that is in the test split: that one is left out
    unlabelled.write_text(json.dumps({"text": "我家的猫不吃饭怎么办"}, ensure_ascii=False) + "\n"
                          + test_rows[0] + "\n", encoding="utf-8")
    summary = distill(DistillConfig(run_dir=str(teacher), distill_epochs=2, unlabelled_paths=str(unlabelled)))
    return teacher, summary


def test_the_student_is_a_served_run_that_names_its_teacher(student):
    teacher, summary = student
    run = RunPaths(summary["student_run_dir"])
    assert summary["student_run_dir"] == f"{teacher}-student1"  # 0 = a third of the tiny teacher's 2 layers
    meta = read_model_meta(run.model)
    assert meta["distilled_from"]["run_dir"] == str(teacher)
    assert (meta["distilled_from"]["teacher_layers"], meta["distilled_from"]["student_layers"]) == (2, 1)
    assert json.loads((run.model / "config.json").read_text())["num_hidden_layers"] == 1
    assert meta["distill_rows"]["unlabelled"] == 1 and meta["distill_rows"]["unlabelled_files"]["in_splits"] == 1
    for split in ("train", "validation", "test"):  # the teacher's splits: the same test scores both
        assert run.split_file(split).read_bytes() == RunPaths(teacher).split_file(split).read_bytes()
    assert (run.model / "ngram.npz").read_bytes() == (RunPaths(teacher).model / "ngram.npz").read_bytes()
    teacher_meta = read_model_meta(RunPaths(teacher).model)
    assert meta["threshold_choice"]["strategy"] == teacher_meta["eval_config"]["threshold_strategy"]
    assert (run.onnx / "model.int8.onnx").stat().st_size < (RunPaths(teacher).onnx / "model.int8.onnx").stat().st_size


def test_the_served_student_scores_close_to_its_teacher(student):
    from lawclf.data import load_split
    from lawclf.metrics import binary_metrics
    from lawclf.predict import Predictor

    teacher, summary = student
    test = load_split(str(teacher), "test")
    y = [int(r["label"]) for r in test]
    scored = {}
    for name, run in (("teacher", teacher), ("student", summary["student_run_dir"])):
        predictor = Predictor(RunPaths(run).onnx)
        assert predictor.threshold == pytest.approx(read_model_meta(RunPaths(run).model)["threshold"])
        scored[name] = binary_metrics(y, predictor.predict_proba([r["text"] for r in test]), predictor.threshold)
    assert scored["student"]["pr_auc"] >= scored["teacher"]["pr_auc"] - 0.05
    assert scored["student"]["f1"] >= scored["teacher"]["f1"] - 0.1


def test_bad_requests_fail_in_one_line_naming_what_to_do(exported_run_dir, tmp_path, capsys):
    assert main(["distill", "--run-dir", str(exported_run_dir), "--student-layers", "2",
                 "--no-evaluate-and-export"]) == 2
    assert "fewer than the teacher's 2 layers, got 2" in capsys.readouterr().err
    assert main(["distill", "--run-dir", str(tmp_path / "none")]) == 2
    assert "train the teacher first" in capsys.readouterr().err
    assert main(["distill", "--run-dir", str(exported_run_dir), "--student-run-dir", str(exported_run_dir)]) == 2
    assert "must differ from run_dir" in capsys.readouterr().err
    assert main(["distill", "--soft-weight", "2"]) == 2
    assert "DistillConfig.soft_weight" in capsys.readouterr().err
