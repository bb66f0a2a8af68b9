"""Shared helpers for the benchmarks: random-weight models of a given shape, exported like a real one.

Speed depends on a model's shape, not on its weights, so a randomly initialised BERT of
bert-base-chinese's shape (12 layers, hidden 768, 12 heads, vocabulary 21128) times like
the real thing without downloading it. Both shapes go through the project's own export
(``lawclf.export.export``: eager attention, optimiser, int8), so the benchmarks measure
exactly what ``lawclf predict`` and the server load.

    from common import exported_model, text_of_tokens
    onnx_dir = exported_model("bert-base")      # cached under /tmp/lawclf-bench/bert-base
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lawclf.config import ExportConfig, RunPaths
from lawclf.modeling import TinySpec

#: name -> (architecture, embedding rows). "tiny" is TrainConfig's default tiny model.
SHAPES: dict[str, tuple[TinySpec, int]] = {
    "bert-base": (TinySpec(layers=12, hidden=768, heads=12, vocab_size=6000, max_positions=512), 21128),
    "tiny": (TinySpec(layers=2, hidden=128, heads=2, vocab_size=6000, max_positions=512), 0),
}


def shape_spec(shape: str) -> tuple[TinySpec, int]:
    """``SHAPES[shape]``; ``<shape>-L<n>`` is that shape with ``n`` layers (a student of ``lawclf distill``:
    the same layer, fewer of them), e.g. ``bert-base-L4``."""
    import dataclasses
    import re

    m = re.fullmatch(r"(.+)-L(\d+)", shape)
    if m and m.group(1) in SHAPES:
        spec, vocab = SHAPES[m.group(1)]
        return dataclasses.replace(spec, layers=int(m.group(2))), vocab
    return SHAPES[shape]
DEFAULT_WORK_DIR = Path(os.environ.get("LAWCLF_BENCH_DIR", "/tmp/lawclf-bench"))
#: The model's longest input; the "original recipe" pads every request to it.
MAX_LEN = 512


def model_dir(shape: str, work_dir: Path = DEFAULT_WORK_DIR) -> Path:
    """A save_pretrained folder with random weights of ``shape`` (built once, then reused)."""
    from lawclf_dev.bench import save_random_model

    spec, vocab = shape_spec(shape)
    path = RunPaths(work_dir / shape).model
    if not (path / "model.safetensors").exists():
        save_random_model(path, spec, vocab_size=vocab, max_len=MAX_LEN, version=f"random-{shape}")
    return path


def exported_model(shape: str, work_dir: Path = DEFAULT_WORK_DIR, log=print) -> Path:
    """The ONNX folder (model.onnx, model.int8.onnx, tokenizer, meta) for ``shape``, exported once."""
    from lawclf.export import export

    run_dir = work_dir / shape
    onnx_dir = RunPaths(run_dir).onnx
    if not (onnx_dir / "model.int8.onnx").exists() or not (onnx_dir / "lawclf_meta.json").exists():
        t0 = time.perf_counter()
        model_dir(shape, work_dir)
        log(f"[bench] exporting a random {shape} model to {onnx_dir} (once; cached) ...")
        export(ExportConfig(run_dir=str(run_dir), parity_max_texts=0))
        log(f"[bench] exported in {time.perf_counter() - t0:.0f}s")
    return onnx_dir


def combined_model(shape: str, work_dir: Path = DEFAULT_WORK_DIR) -> Path:
    """:func:`exported_model`'s folder plus an n-gram part (fitted on the embedded sample) and
    ``combine: mean 0.5``: the served combined model of that shape (``ngram.npz`` beside the graph)."""
    import shutil

    from lawclf import config
    from lawclf.baselines import TfidfCharLR
    from lawclf.ngram import NGRAM_FILE
    from lawclf.sample import generate

    onnx_dir = exported_model(shape, work_dir)
    out = work_dir / f"{shape}-combined" / "onnx"
    if not (out / NGRAM_FILE).exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(onnx_dir, out)
        rows = [r for part in generate().values() for r in part]
        part = TfidfCharLR().fit([r["text"] for r in rows], [int(r["label"]) for r in rows]).to_ngram_model()
        part.save(out / NGRAM_FILE)
        config.write_model_meta(out, ngram=part.describe(), combine={"method": "mean", "weight": 0.5})
    return out


def text_of_tokens(n_tokens: int, offset: int = 0) -> str:
    """A Chinese text that tokenizes to exactly ``n_tokens`` ids ([CLS] + characters + [SEP])."""
    return "".join(chr(0x4E00 + (offset + i) % 2900) for i in range(max(0, n_tokens - 2)))


def cpu_header() -> str:
    """CPU model, usable cores and the vector features int8 speed depends on (AVX-512 VNNI or AVX2 only)."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    vector = ("AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2 only" if "avx2" in flags
              else "no AVX2" if flags else "features unknown")
    return f"{name}, {len(os.sched_getaffinity(0))} cores, {vector}"
