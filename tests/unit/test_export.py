"""Export: ONNX parity with PyTorch, optimisation, int8 quantisation, metadata (lawclf.export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lawclf import config
from lawclf.config import ExportConfig, RunPaths
from lawclf.modeling import TinySpec

TINY = TinySpec(layers=2, hidden=32, heads=2, vocab_size=3000)


@pytest.fixture(scope="module")
def exported_tiny(tmp_path_factory) -> Path:
    """A run folder with a random tiny model/ (threshold 0.37 as if evaluated) exported to onnx/."""
    from lawclf.export import export
    from lawclf_dev.bench import save_random_model

    run_dir = tmp_path_factory.mktemp("export") / "run"
    save_random_model(RunPaths(run_dir).model, TINY, max_len=24, version="v-test")
    config.write_model_meta(RunPaths(run_dir).model, threshold=0.37)
    export(ExportConfig(run_dir=str(run_dir)))
    return run_dir


def test_export_writes_files_and_report(exported_tiny):
    onnx_dir = RunPaths(exported_tiny).onnx
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json", "lawclf_meta.json"):
        assert (onnx_dir / name).is_file(), name
    assert not (onnx_dir / "model.raw.onnx").exists()
    report = json.loads((RunPaths(exported_tiny).reports / "export.json").read_text(encoding="utf-8"))
    assert report["parity_raw"]["max_abs_diff"] < 1e-4
    assert report["parity_fp32"]["max_abs_diff"] < 1e-4
    cases = {c["case"]: c for c in report["parity_fp32"]["cases"]}
    assert {c["batch"] for c in cases.values()} >= {1, 2, 4}
    assert cases["truncated + short, batch 2"]["seq_len"] == 24  # truncated at max_len, not padded to 512
    # eager attention before export lets the optimiser fuse one Attention per layer
    assert report["fused_ops"].get("Attention") == TINY.layers
    q = report["int8_vs_fp32"]
    assert q["size_mb"]["model.int8.onnx"] < q["size_mb"]["model.onnx"]
    assert 0.0 <= q["argmax_agreement"] <= 1.0 and q["score_max_abs_diff"] < 0.1
    assert report["predictor_vs_torch_max_score_diff"] < 1e-4


def test_graph_inputs_and_dynamic_axes(exported_tiny):
    import onnx

    model = onnx.load(str(RunPaths(exported_tiny).onnx / "model.onnx"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(dims == ["batch", "sequence"] for dims in inputs.values())
    assert [o.name for o in model.graph.output] == ["logits"]
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("batch,length", [(1, 3), (3, 10), (8, 24)])
def test_onnx_matches_torch_on_shapes(exported_tiny, batch, length):
    """fp32 ONNX = PyTorch on random ids of several batch sizes / lengths, with padding in the batch."""
    import onnxruntime as ort

    from lawclf.export import load_for_export, torch_logits

    _, model = load_for_export(RunPaths(exported_tiny).model)
    rng = np.random.default_rng(batch)
    ids = rng.integers(5, 200, size=(batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, max(1, length // 2):] = 0  # one padded row
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    sess = ort.InferenceSession(str(RunPaths(exported_tiny).onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    diff = np.abs(sess.run(["logits"], feeds)[0] - torch_logits(model, feeds)).max()
    assert diff < 1e-4


def test_metadata_sidecar_and_onnx_props(exported_tiny):
    import onnx

    onnx_dir = RunPaths(exported_tiny).onnx
    meta = config.read_model_meta(onnx_dir)
    assert meta["threshold"] == pytest.approx(0.37)  # from the (evaluated) model folder
    assert meta["labels"] == ["non_legal", "legal"] and meta["max_len"] == 24 and meta["version"] == "v-test"
    assert meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and meta["opset"] >= 17
    assert meta["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert "argmax_agreement" in meta["parity"]
    for name in ("model.onnx", "model.int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(onnx_dir / name)).metadata_props}
        embedded = json.loads(props["lawclf_meta"])
        assert embedded["threshold"] == pytest.approx(0.37) and props["max_len"] == "24"


def test_parity_failure_raises(exported_tiny, tmp_path):
    """A graph that does not match the model must fail the check, not pass silently."""
    from lawclf.export import BUILTIN_TEXTS, check_parity, load_for_export

    tokenizer, model = load_for_export(RunPaths(exported_tiny).model)
    import torch

    with torch.no_grad():
        model.classifier.bias += 1.0  # the ONNX file no longer matches this model
    with pytest.raises(AssertionError, match="differ from PyTorch"):
        check_parity(model, tokenizer, RunPaths(exported_tiny).onnx / "model.onnx", BUILTIN_TEXTS, 24, 1e-4)


def test_export_without_model_is_clear(tmp_path):
    from lawclf.export import export

    with pytest.raises(FileNotFoundError, match="not a trained model folder"):
        export(ExportConfig(run_dir=str(tmp_path)))


def test_export_cli_no_quantize(exported_tiny, tmp_path, capsys):
    """`lawclf export --no-quantize --output-dir` writes only fp32 and exits 0."""
    from lawclf.export import cli

    out = tmp_path / "onnx"
    rc = cli(["--run-dir", str(exported_tiny), "--output-dir", str(out), "--no-quantize", "--no-optimize"])
    assert rc == 0
    assert (out / "model.onnx").exists() and not (out / "model.int8.onnx").exists()
    assert json.loads(capsys.readouterr().out)["max_abs_logit_diff"] < 1e-4


def test_the_one_f1_at_a_threshold():
    from lawclf.metrics import binary_metrics

    y = np.array([1, 1, 0, 0])
    assert binary_metrics(y, np.array([0.9, 0.1, 0.2, 0.8]), 0.5)["f1"] == pytest.approx(0.5)
    assert binary_metrics(y, np.zeros(4), 0.5)["f1"] == 0.0


@pytest.mark.slow
def test_int8_agreement_on_trained_model(evaluated_run_dir, tmp_path):
    """On the trained tiny model and the test split, int8 decides like fp32 almost always."""
    from lawclf.export import export

    run_dir = shutil.copytree(evaluated_run_dir, tmp_path / "run")
    report = export(ExportConfig(run_dir=str(run_dir)))
    q = report["int8_vs_fp32"]
    assert report["texts"].endswith("test.jsonl") and q["n_texts"] >= 20
    assert q["argmax_agreement"] >= 0.95 and q["decision_agreement"] >= 0.95
    assert abs(q["f1_diff"]) <= 0.05
    assert config.read_model_meta(RunPaths(run_dir).onnx)["threshold"] == pytest.approx(
        config.read_model_meta(RunPaths(run_dir).model)["threshold"])


def test_latency_comparison_pads_only_when_asked(exported_tiny):
    from lawclf_dev.bench import latency_comparison

    ms = latency_comparison(RunPaths(exported_tiny).onnx, "公司拖欠工资怎么办", reps=3, threads=1)
    assert set(ms) == {"fp32", "int8", "fp32_pad512"} and all(v > 0 for v in ms.values())
    assert ms["fp32_pad512"] > ms["fp32"]  # 512 tokens of work instead of 11


def test_a_parity_failure_says_whether_the_tokenizer_or_the_numerics_differ():
    import numpy as np

    from lawclf.export import explain_mismatch

    torch_scores = np.array([0.10, 0.90])
    # the Predictor's tokens differ: the graph agrees with torch on the training tokenizer's tokens
    message = explain_mismatch(np.array([0.30, 0.90]), torch_scores, np.array([0.1001, 0.9]), 1e-3)
    assert "tokenizer.json or lawclf_meta.json" in message and "0.2" in message
    # the tokens agree, the engines do not
    message = explain_mismatch(np.array([0.12, 0.90]), torch_scores, np.array([0.12, 0.90]), 1e-3)
    assert "numerics differ" in message and "tokenizer agrees" in message


def test_the_export_check_feeds_pytorch_the_text_the_predictor_sees(tmp_path, monkeypatch):
    """The Predictor normalises (NFKC: ，？ become ,?) before tokenising, so the export's Predictor-vs-PyTorch
    check must give PyTorch the normalised text too, or a random-weight model fails it on punctuation alone."""
    import lawclf.export as export_module
    from lawclf.config import ExportConfig, RunPaths
    from lawclf.export import BUILTIN_TEXTS, export
    from lawclf.modeling import TinySpec
    from lawclf.text import normalise_text
    from lawclf_dev.bench import save_random_model

    seen: list[str] = []
    real = export_module._torch_scores

    def recording(model, tokenizer, texts, *args, **kwargs):
        seen.extend(texts)
        return real(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(export_module, "_torch_scores", recording)
    run = tmp_path / "run"
    save_random_model(RunPaths(run).model, TinySpec(layers=2, hidden=64, heads=2, vocab_size=500, max_positions=64),
                      max_len=64)
    assert any("，" in t for t in BUILTIN_TEXTS)  # the built-in texts have full-width punctuation
    report = export(ExportConfig(run_dir=str(run), parity_max_texts=0, quantize=False))
    assert seen == [normalise_text(t) for t in BUILTIN_TEXTS]
    assert report["predictor_vs_torch_max_score_diff"] < 1e-4
