"""Notebook 05 runs under papermill on an evaluated run and leaves the ONNX models, metadata and figures."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from lawclf.config import RunPaths, read_model_meta, read_results
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_05_exports_quantises_and_predicts(evaluated_run_dir, tmp_path):
    run = copy_run(evaluated_run_dir, tmp_path / "run")
    executed = run_notebook("05_export_onnx", run, {"LATENCY_REPS": 3, "THREADS": 1, "PARITY_MAX_TEXTS": 300})
    import json as _json

    _nb = _json.loads(executed.read_text(encoding="utf-8"))
    _said = "".join("".join(o.get("text", "")) for c in _nb["cells"] if c.get("id") == "nb05-16b" for o in c.get("outputs", []))
    assert "本次运行：int8 比 fp32 快" in _said  # the speed-up is stated from this run's measurement

    onnx_dir = RunPaths(run).onnx
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json", "lawclf_meta.json"):
        assert (onnx_dir / name).is_file(), name
    assert (RunPaths(run).reports / "export.json").is_file()

    results = read_results(run, "05_export_onnx")
    assert results["max_abs_logit_diff"] < 1e-4
    assert results["predictor_vs_torch_max_score_diff"] < 1e-3
    assert results["int8_argmax_agreement"] >= 0.95 and results["int8_decision_agreement"] >= 0.95
    assert abs(results["f1_diff"]) <= 0.05
    assert results["size_mb"]["model.int8.onnx"] < results["size_mb"]["model.onnx"]
    assert results["fused_ops"].get("Attention", 0) >= 1
    # the threshold chosen by evaluation (04) is the one the predictor uses
    assert results["threshold"] == pytest.approx(read_model_meta(RunPaths(run).model)["threshold"])
    assert results["probes"] == 40 and 0.0 <= results["probe_accuracy"] <= 1.0
    assert results["demo_counts"] == {"lines": 22, "predicted": 20, "errors": 2, "blank": 0,
                                      "legal": results["demo_counts"]["legal"]}
    assert set(results["latency_ms"]) == {"fp32", "int8", "fp32_pad512"}

    nb = json.loads(executed.read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
