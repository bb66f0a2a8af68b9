"""Notebook 08 runs under papermill on an exported run: a served student beside its teacher, compared in one table."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from lawclf.config import RunPaths, read_model_meta, read_results
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_08_distils_a_served_student_and_compares_it_with_its_teacher(exported_run_dir, tmp_path):
    run = copy_run(exported_run_dir, tmp_path / "run")
    executed = run_notebook("08_distill", run, {"DISTILL_EPOCHS": 2, "LATENCY_REPS": 3})
    nb = json.loads(executed.read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    said = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "一样吗？ True" in said  # the freshly copied student is the teacher with only those layers
    assert "本次运行：学生的延迟是老师的" in said  # the comparison is stated from this run's measurement

    results = read_results(run, "08_distill")
    student = RunPaths(results["student_run_dir"])
    assert results["student_run_dir"] == f"{run}-student1"
    assert (results["teacher_layers"], results["student_layers"], results["layers_taken"]) == (2, 1, [2])
    assert (student.onnx / "model.int8.onnx").is_file()
    assert read_model_meta(student.onnx)["distilled_from"]["run_dir"] == str(run)
    teacher, pupil = results["comparison"]["老师"], results["comparison"]["学生"]
    assert (teacher["层数"], pupil["层数"]) == (2, 1)
    assert pupil["int8 大小 (MB)"] < teacher["int8 大小 (MB)"]
    assert pupil["PR-AUC"] >= teacher["PR-AUC"] - 0.05
