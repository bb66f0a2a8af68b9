"""Export stage: ONNX export, parity check, graph optimisation, int8 quantisation (notebook 05).

``export(ExportConfig(run_dir=...))`` turns the trained ``model/`` folder into ``onnx/``::

    onnx/model.onnx        fp32, ONNX Runtime's BERT optimiser applied (fused Attention etc.)
    onnx/model.int8.onnx   the same graph with int8 dynamic quantisation (what serving loads)
    onnx/tokenizer.json    tokenizer files copied from model/
    onnx/lawclf_meta.json  labels, threshold, max_len, version + inputs, opset, files, parity

and ``reports/export.json`` (the parity report). Steps, each checked:

1. load the model with *eager* attention (the SDPA default hides the attention pattern from
   ONNX Runtime's optimiser, which then fuses nothing);
2. ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``: one self-contained file),
   dynamic batch and sequence axes, inputs ``input_ids``, ``attention_mask``,
   ``token_type_ids`` (always all three), output ``logits``;
3. compare ONNX Runtime with PyTorch on real texts of several lengths and batch sizes;
   fail beyond ``cfg.atol``;
4. optimise, compare again; quantise to int8 and report agreement, F1 and size against fp32.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lawclf import config
from lawclf.config import ExportConfig, RunPaths, read_model_meta
from lawclf.metrics import binary_metrics
from lawclf.ngram import NGRAM_FILE
from lawclf.predict import (
    FP32_FILE,
    INPUT_NAMES,
    INT8_FILE,
    ONNX_META_KEY,
    OUTPUT_NAME,
    Predictor,
)
from lawclf.text import normalise_text
from lawclf.truncation import LEGACY_TRUNCATION, check_truncation

#: Tokenizer files copied next to the ONNX model (those that exist).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
RAW_FILE = "model.raw.onnx"  # the unoptimised export, removed once model.onnx is written
REPORT_NAME = "export"

#: Used for the parity checks when the run has no splits (e.g. exporting a bare model folder).
BUILTIN_TEXTS = (
    "公司拖欠了我三个月工资，我该怎么申请劳动仲裁？",
    "今天晚上吃什么好呢",
    "房东不退押金，可以去法院起诉吗？需要准备哪些证据",
    "推荐一款适合编程的机械键盘",
    "离婚时孩子的抚养权一般判给谁？",
    "这部电影的结局我没看懂，有人解释一下吗",
    "网购收到假货，商家拒绝退款，怎么维权",
    "周末去爬山，求推荐北京周边的路线",
    "交通事故对方全责但是不赔钱怎么办",
    "Python 的 asyncio 和多线程有什么区别？",
    "劳动合同到期公司不续签，有没有经济补偿？",
    "猫咪最近不爱吃东西，是生病了吗",
)


# --------------------------------------------------------------------------- steps
def load_for_export(model_dir: str | Path):
    """``(tokenizer, model)`` from a save_pretrained folder, eager attention, eval mode."""
    from lawclf.modeling import load_pretrained

    tokenizer, model = load_pretrained(str(model_dir), attn_implementation="eager")
    model.eval()
    return tokenizer, model


def encode(tokenizer, texts: Sequence[str], max_len: int, truncation: str = LEGACY_TRUNCATION) -> dict[str, np.ndarray]:
    """All three inputs as int64 arrays, padded to the longest text, each cut to ``max_len`` by ``truncation``
    (the training tokenisation, :func:`lawclf.inference.encode`)."""
    from lawclf.inference import encode as encode_unpadded

    rows = encode_unpadded(tokenizer, texts, max_len, truncation)
    width = max(len(r["input_ids"]) for r in rows)
    pad = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
    out = {}
    for name in INPUT_NAMES:
        seqs = [r.get(name) or ([1] * len(r["input_ids"]) if name == "attention_mask" else [0] * len(r["input_ids"]))
                for r in rows]
        out[name] = np.array([list(x) + [pad[name]] * (width - len(x)) for x in seqs], dtype=np.int64)
    return out


def export_onnx(model, tokenizer, path: str | Path, opset: int = 17, max_len: int = 64) -> Path:
    """Write ``model`` to ``path`` with dynamic ``batch``/``sequence`` axes (TorchScript exporter)."""
    import torch

    if opset < 17:
        raise ValueError(f"opset {opset} is too old: LayerNormalization needs opset >= 17")
    sample = encode(tokenizer, BUILTIN_TEXTS[:2], max_len)
    args = tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer warnings
        torch.onnx.export(model, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    import onnx

    graph_inputs = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    if graph_inputs != list(INPUT_NAMES):
        raise RuntimeError(f"exported graph has inputs {graph_inputs}, expected {list(INPUT_NAMES)}")
    return path


def parity_cases(texts: Sequence[str], batch_sizes: Sequence[int] = (1, 4, 16)) -> list[tuple[str, list[str]]]:
    """Named batches covering short, long (truncated) and mixed-length inputs at several batch sizes."""
    by_len = sorted(texts, key=len)
    cases = [("shortest, batch 1", by_len[:1]), ("longest, batch 1", by_len[-1:]),
             # far beyond any max_len: checks truncation and a padded short row beside it
             ("truncated + short, batch 2", ["".join(by_len[-4:]) * 20, by_len[0]])]
    rng = np.random.default_rng(0)
    for bs in batch_sizes:
        if bs > 1 and len(texts) >= 2:
            pick = rng.choice(len(texts), size=min(bs, len(texts)), replace=False)
            cases.append((f"mixed lengths, batch {len(pick)}", [texts[i] for i in pick]))
    return cases


def torch_logits(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()


def check_parity(model, tokenizer, onnx_path: str | Path, texts: Sequence[str], max_len: int,
                 atol: float, truncation: str = LEGACY_TRUNCATION) -> dict[str, Any]:
    """Max |logits_onnx - logits_torch| per case; raises ``AssertionError`` beyond ``atol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    cases: list[dict[str, Any]] = []
    for name, batch_texts in parity_cases(texts):
        batch = encode(tokenizer, batch_texts, max_len, truncation)
        diff = float(np.abs(sess.run([OUTPUT_NAME], batch)[0] - torch_logits(model, batch)).max())
        cases.append({"case": name, "batch": len(batch_texts), "seq_len": int(batch["input_ids"].shape[1]),
                      "max_abs_diff": diff})
    worst = max(float(c["max_abs_diff"]) for c in cases)
    if not worst <= atol:  # also catches NaN
        raise AssertionError(f"{Path(onnx_path).name}: ONNX logits differ from PyTorch by {worst:.3g} "
                             f"(> atol {atol}); cases: {cases}")
    return {"max_abs_diff": worst, "cases": cases}


def optimize_onnx(src: str | Path, dst: str | Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's BERT optimiser (fuses Attention, LayerNorm, Gelu); returns fused-op counts."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    opt.save_model_to_file(str(dst))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """int8 dynamic quantisation of MatMul/Gemm weights (activations quantised at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The optimiser's fused nodes have no type information for some weights; without
    # DefaultTensorType quantize_dynamic fails with "Unable to find data type for weight_name".
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # hides "consider pre-processing": that advice is for static quantisation
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    return Path(dst)


def set_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Store the serving metadata inside the ONNX file too (``metadata_props``)."""
    import onnx

    model = onnx.load(str(path))
    props = {ONNX_META_KEY: json.dumps(meta, ensure_ascii=False),
             "labels": ",".join(meta["labels"]), "threshold": str(meta["threshold"]),
             "max_len": str(meta["max_len"]), "version": str(meta.get("version", ""))}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def compare_files(onnx_dir: str | Path, texts: Sequence[str], labels: Optional[Sequence[int]],
                  reference: str = FP32_FILE, candidate: str = INT8_FILE, threads: int = 0) -> dict[str, Any]:
    """Candidate vs reference through the real :class:`Predictor`: agreement, F1 of each, score diff, sizes."""
    onnx_dir = Path(onnx_dir)
    ref, cand = (Predictor(onnx_dir, model_file=f, threads=threads) for f in (reference, candidate))
    t0 = time.perf_counter()
    p_ref = ref.predict_proba(texts)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_cand = cand.predict_proba(texts)
    t_cand = time.perf_counter() - t0
    thr = ref.threshold
    report: dict[str, Any] = {
        "n_texts": len(texts),
        "argmax_agreement": float(np.mean((p_ref >= 0.5) == (p_cand >= 0.5))),
        "decision_agreement": float(np.mean((p_ref >= thr) == (p_cand >= thr))),
        "threshold": thr,
        "score_max_abs_diff": float(np.abs(p_ref - p_cand).max()),
        "score_mean_abs_diff": float(np.abs(p_ref - p_cand).mean()),
        "size_mb": {reference: _mb(onnx_dir / reference), candidate: _mb(onnx_dir / candidate)},
        "seconds": {reference: round(t_ref, 3), candidate: round(t_cand, 3)},
    }
    report["size_ratio"] = round(report["size_mb"][reference] / max(report["size_mb"][candidate], 1e-9), 2)
    if labels is not None:
        y = np.asarray(labels, dtype=int)
        f1_ref, f1_cand = binary_metrics(y, p_ref, thr)["f1"], binary_metrics(y, p_cand, thr)["f1"]
        report.update(f1={reference: f1_ref, candidate: f1_cand}, f1_diff=f1_cand - f1_ref)
    return report


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 3)


def parity_texts(run_dir: str | Path, limit: int = 0) -> tuple[list[str], Optional[list[int]], str]:
    """``(texts, labels, source)``: the test split when the run has one, else built-in strings."""
    path = RunPaths(run_dir).split_file("test")
    if path.exists():
        from lawclf.data import load_split

        rows = load_split(run_dir, "test")
        if limit:
            rows = rows[:limit]
        if rows:
            return [r["text"] for r in rows], [int(r["label"]) for r in rows], str(path)
    return list(BUILTIN_TEXTS), None, "built-in texts"


# --------------------------------------------------------------------------- the stage
def export(cfg: ExportConfig) -> dict[str, Any]:
    """Export, validate, optimise and quantise a trained model; returns the report (also reports/export.json)."""
    paths = RunPaths(cfg.run_dir)
    model_dir = Path(cfg.model_dir) if cfg.model_dir else paths.model
    out_dir = Path(cfg.output_dir) if cfg.output_dir else paths.onnx
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a trained model folder (no config.json): "
                                "train first (notebook 03 or `lawclf train`)")
    meta = read_model_meta(model_dir)
    tokenizer, model = load_for_export(model_dir)
    max_len = int(meta.get("max_len") or tokenizer.model_max_length or 512)
    max_len = min(max_len, int(model.config.max_position_embeddings))
    truncation = check_truncation(meta.get("truncation", LEGACY_TRUNCATION), str(model_dir / config.MODEL_META_FILE))
    if meta.get("ngram") and not (model_dir / NGRAM_FILE).is_file():  # before any work
        raise FileNotFoundError(f"{model_dir / config.MODEL_META_FILE} names an n-gram part but "
                                f"{model_dir / NGRAM_FILE} is missing: train again (lawclf train)")
    texts, labels, source = parity_texts(cfg.run_dir, cfg.parity_max_texts)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (FP32_FILE, INT8_FILE, RAW_FILE, NGRAM_FILE, config.MODEL_META_FILE):  # nothing left from an older export
        (out_dir / stale).unlink(missing_ok=True)

    t0 = time.perf_counter()
    raw = export_onnx(model, tokenizer, out_dir / RAW_FILE, opset=cfg.opset, max_len=max_len)
    report: dict[str, Any] = {"model_dir": str(model_dir), "onnx_dir": str(out_dir), "texts": source,
                              "export_seconds": round(time.perf_counter() - t0, 2)}
    report["parity_raw"] = check_parity(model, tokenizer, raw, texts, max_len, cfg.atol, truncation)
    if cfg.optimize:
        report["fused_ops"] = optimize_onnx(raw, out_dir / FP32_FILE, model.config.num_attention_heads,
                                            model.config.hidden_size)
        raw.unlink()
        report["parity_fp32"] = check_parity(model, tokenizer, out_dir / FP32_FILE, texts, max_len, cfg.atol,
                                             truncation)
    else:
        raw.rename(out_dir / FP32_FILE)
        report["parity_fp32"] = report.pop("parity_raw")
    files = {"fp32": FP32_FILE}
    if cfg.quantize:
        quantize_int8(out_dir / FP32_FILE, out_dir / INT8_FILE)
        files["int8"] = INT8_FILE

    for name in TOKENIZER_FILES:
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, out_dir / name)
    if meta.get("ngram"):  # the n-gram part travels as it is: plain arrays, scored with numpy
        shutil.copy2(model_dir / NGRAM_FILE, out_dir / NGRAM_FILE)
    onnx_meta = {
        "labels": list(meta.get("labels") or config.LABELS),
        "threshold": float(meta.get("threshold", 0.5)),
        "max_len": max_len,
        "truncation": truncation,
        # How the served score is made, so the graph's own copy of the metadata serves it the same way.
        **{k: meta[k] for k in ("combine", "ngram") if meta.get(k)},
        "model_name": meta.get("model_name", ""),
        "version": meta.get("version", ""),
        "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
        "input_note": "int64 [batch, sequence]; pad each batch to its longest text; token_type_ids all 0",
        "opset": cfg.opset, "files": files, "default_file": files.get("int8", FP32_FILE),
        "exporter": "torch.onnx.export (TorchScript, dynamo=False), eager attention",
        "optimized": cfg.optimize, "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for f in files.values():
        set_onnx_metadata(out_dir / f, onnx_meta)
    # Sidecar = model meta + ONNX facts; parity figures are added once measured below.
    sidecar = {**meta, **onnx_meta}
    config.write_model_meta(out_dir, **sidecar)

    # The serving path end to end: Predictor (tokenizers + ORT) against PyTorch probabilities. The
    # Predictor normalises each text first (NFKC: full-width ，？ become ,?), so PyTorch gets the same
    # normalised text: otherwise a text with full-width punctuation differs by its tokens, not by the export.
    normalised = [normalise_text(t) for t in texts]
    pt_scores = _torch_scores(model, tokenizer, normalised, max_len, sidecar["labels"], truncation)
    served = Predictor(out_dir, model_file=FP32_FILE).predict_parts(texts)["model"]
    report["predictor_vs_torch_max_score_diff"] = float(np.abs(served - pt_scores).max())
    # Scores are probabilities: 10x the logit tolerance leaves room for a softmax near 0.5 (slope 1/4) and for
    # the deeper graphs of a random-weight bert-base, whose fp32 kernels differ in summation order by CPU.
    tolerance = max(cfg.atol, 1e-4) * 10
    if report["predictor_vs_torch_max_score_diff"] > tolerance:
        raise AssertionError(explain_mismatch(served, pt_scores, _onnx_scores(
            out_dir / FP32_FILE, tokenizer, normalised, max_len, sidecar["labels"], truncation), tolerance))
    if cfg.quantize:
        report["int8_vs_fp32"] = compare_files(out_dir, texts, labels)
    report["size_mb"] = {f: _mb(out_dir / f) for f in files.values()}
    report.update(max_len=max_len, opset=cfg.opset, files=files, threshold=sidecar["threshold"],
                  seconds=round(time.perf_counter() - t0, 2))
    parity = {"max_abs_logit_diff_fp32": report["parity_fp32"]["max_abs_diff"], "size_mb": report["size_mb"]}
    if "int8_vs_fp32" in report:
        q = report["int8_vs_fp32"]
        parity.update({k: q[k] for k in ("argmax_agreement", "decision_agreement", "score_max_abs_diff",
                                          "f1", "f1_diff") if k in q}, texts=source)
    config.write_model_meta(out_dir, parity=parity)
    report_path = paths.reports / f"{REPORT_NAME}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return report


def _onnx_scores(path: Path, tokenizer, texts: Sequence[str], max_len: int, labels: Sequence[str],
                 truncation: str = LEGACY_TRUNCATION) -> np.ndarray:
    """P(legal) from the ONNX graph fed by the training tokenizer (not the Predictor's): splits a
    Predictor-vs-PyTorch mismatch into its tokenizer part and its numerics part."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pos = list(labels).index(config.LABELS[1])
    out = []
    for start in range(0, len(texts), 32):
        logits = sess.run([OUTPUT_NAME], encode(tokenizer, texts[start:start + 32], max_len,
                                                truncation))[0].astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e[:, pos] / e.sum(axis=1))
    return np.concatenate(out)


def explain_mismatch(served: np.ndarray, torch_scores: np.ndarray, onnx_scores: np.ndarray, tolerance: float) -> str:
    """Which part of the serving path disagrees with PyTorch: the Predictor's tokenizer/metadata, or the numerics."""
    total = float(np.abs(served - torch_scores).max())
    tokenizing = float(np.abs(served - onnx_scores).max())  # same graph, different tokenizers
    numerics = float(np.abs(onnx_scores - torch_scores).max())  # same tokens, different engines
    head = f"Predictor (tokenizers + ONNX Runtime) disagrees with PyTorch by {total:.3g} (tolerance {tolerance:.3g}): "
    if tokenizing > tolerance:
        return head + (f"the Predictor's tokenizer.json or lawclf_meta.json (max_len, labels) is off: with the training "
                       f"tokenizer the same graph differs by only {numerics:.3g}, with the Predictor's by {tokenizing:.3g}")
    return head + (f"the numerics differ (ONNX Runtime vs PyTorch on the same tokens: {numerics:.3g}); the tokenizer "
                   f"agrees ({tokenizing:.3g}). Check the graph optimisation and the CPU's kernels, not the tokenizer")


def _torch_scores(model, tokenizer, texts: Sequence[str], max_len: int, labels: Sequence[str],
                  truncation: str = LEGACY_TRUNCATION, batch_size: int = 32) -> np.ndarray:
    pos = list(labels).index(config.LABELS[1])
    out = []
    for start in range(0, len(texts), batch_size):
        logits = torch_logits(model, encode(tokenizer, texts[start:start + batch_size], max_len,
                                            truncation)).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e[:, pos] / e.sum(axis=1))
    return np.concatenate(out)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf export --run-dir RUN``: writes RUN/onnx and RUN/reports/export.json."""
    parser = argparse.ArgumentParser(prog="lawclf export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_config_args(parser, ExportConfig)
    cfg = config.config_from_args(ExportConfig, parser.parse_args(argv))
    try:
        report = export(cfg)
    except (FileNotFoundError, AssertionError) as exc:
        print(f"lawclf export: {exc}", file=sys.stderr)
        return 1
    summary = {"onnx_dir": report["onnx_dir"], "max_abs_logit_diff": report["parity_fp32"]["max_abs_diff"],
               "size_mb": report["size_mb"]}
    if "int8_vs_fp32" in report:
        summary["int8_vs_fp32"] = {k: report["int8_vs_fp32"].get(k) for k in
                                   ("argmax_agreement", "decision_agreement", "f1", "f1_diff")}
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


__all__ = ["export", "export_onnx", "check_parity", "optimize_onnx", "quantize_int8", "set_onnx_metadata",
           "compare_files", "parity_texts", "load_for_export", "BUILTIN_TEXTS", "cli"]
