"""Benchmark helpers: random-weight models of a given shape, and fp32 vs int8 latency of one text.

Workshop code (benchmarks, tests, notebook 05's timing cell), not part of the runtime package:
the serving and screening images do not contain :mod:`lawclf_dev`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lawclf import config
from lawclf.export import BUILTIN_TEXTS
from lawclf.predict import FP32_FILE, INT8_FILE, Predictor


def save_random_model(out_dir: str | Path, spec=None, vocab_size: int = 0, max_len: int = 128,
                      version: str = "random", seed: int = 0) -> Path:
    """A save_pretrained folder with random weights and a character vocabulary (benchmarks, tests).

    Latency depends on the shape, not on the weights, so ``TinySpec(layers=12, hidden=768,
    heads=12)`` with ``vocab_size=21128`` times like bert-base-chinese without downloading it.
    """
    from lawclf.modeling import TinySpec, build_tiny

    spec = spec or TinySpec()
    # Common CJK characters + the built-in texts: every Chinese character becomes one token.
    chars = "".join(chr(0x4E00 + i) for i in range(min(spec.vocab_size, 3000)))
    corpus = [chars[i:i + 50] for i in range(0, len(chars), 50)] + list(BUILTIN_TEXTS)
    tokenizer, model = build_tiny(corpus, spec, seed=seed)
    if vocab_size > model.config.vocab_size:
        model.resize_token_embeddings(vocab_size)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    config.write_model_meta(out_dir, labels=list(config.LABELS), max_len=max_len, model_name="random",
                            version=version, threshold=0.5)
    return out_dir


def latency_comparison(onnx_dir: str | Path, text: str, reps: int = 20, threads: int = 0,
                       pad_to: int = 512) -> dict[str, float]:
    """Median milliseconds for one text: fp32 and int8 padded to the text's length, and fp32
    padded to ``pad_to`` tokens (the original recipe: every request padded to 512)."""
    out: dict[str, float] = {}
    for label, name, width in (("fp32", FP32_FILE, 0), ("int8", INT8_FILE, 0), (f"fp32_pad{pad_to}", FP32_FILE, pad_to)):
        if not (Path(onnx_dir) / name).exists():
            continue
        pred = Predictor(onnx_dir, model_file=name, threads=threads)
        batch = pred.pad_batch(pred.encode([text]))
        if width:
            extra = width - batch["input_ids"].shape[1]
            batch = {k: np.pad(v, ((0, 0), (0, max(0, extra))), constant_values=pred.pad_id if k == "input_ids" else 0)
                     for k, v in batch.items()}
        pred.logits(batch)  # warm-up
        times = []
        for _ in range(max(1, reps)):
            t0 = time.perf_counter()
            pred.logits(batch)
            times.append((time.perf_counter() - t0) * 1000)
        out[label] = float(np.median(times))
    return out


__all__ = ["save_random_model", "latency_comparison"]
