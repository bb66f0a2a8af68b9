"""``lawclf predict``: classify texts or JSONL files with the exported ONNX model (no torch).

One text (``--text``) or a file (``--input/--output``), scored in this process
(:func:`lawclf.predict.predict_file`) or on a Ray cluster (:mod:`lawclf.ray_predict`,
``--engine ray``); both share the batch-scoring core :func:`lawclf.predict.score_lines`.

    lawclf predict --model runs/sample/onnx --input posts.jsonl --output predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence, cast

from lawclf.predict import FP32_FILE, INT8_FILE, ModelLoadError, Predictor, predict_file
from lawclf.ray_predict import (  # flags only: ray itself is imported on use
    add_ray_args,
    run_from_args,
)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf predict``: one text (``--text``) or a JSONL file (``--input/--output``).

    Exit codes: 0 all lines classified, 1 some input lines failed (see the error file),
    2 usage or model-loading error.
    """
    parser = argparse.ArgumentParser(
        prog="lawclf predict", description="Classify texts with the exported ONNX model (no torch needed).",
        epilog="example: lawclf predict --model runs/sample/onnx --input posts.jsonl --output predictions.jsonl")
    parser.add_argument("--model", required=True, help="ONNX folder (runs/<name>/onnx) or its run folder")
    parser.add_argument("--model-file", default=None, help=f"file in the folder (default {INT8_FILE}, else {FP32_FILE})")
    parser.add_argument("--text", action="append", help="a text to classify (repeatable); prints JSON lines")
    parser.add_argument("--input", help="JSONL file, one object a line with a text field")
    parser.add_argument("--output", help="JSONL file to write: every input field + label, score, is_legal")
    parser.add_argument("--errors", help="JSONL file for bad input lines (default: <output>.errors.jsonl)")
    parser.add_argument("--text-field", default="text", help="name of the text field (default: text)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per ONNX Runtime call")
    parser.add_argument("--chunk-size", type=int, default=1024, help="lines read before each write (memory bound)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = CPUs available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process (default); ray: an actor pool on Ray Data, also for "
                             "Parquet, folders and globs in --input (lawclf.ray_predict)")

    add_ray_args(parser)
    args = parser.parse_args(argv)
    if not args.text and not args.input:
        parser.error("give --text TEXT or --input FILE --output FILE")
    if args.input and not args.output:
        parser.error("--input needs --output")
    try:
        predictor = Predictor(args.model, model_file=args.model_file, threads=args.threads,
                              batch_size=args.batch_size)
    except ModelLoadError as exc:
        print(f"lawclf predict: {exc}", file=sys.stderr)
        return 2
    if args.text:
        results = cast(list, predictor.predict(list(args.text)))  # a list in, a list out
        for text, result in zip(args.text, results):
            print(json.dumps({"text": text, **result}, ensure_ascii=False))
    if args.input:
        output = Path(args.output)
        errors = Path(args.errors) if args.errors else output.with_name(output.stem + ".errors.jsonl")
        try:
            if args.engine == "ray":
                counts = run_from_args(args, [args.input], output, errors)
            else:
                counts = predict_file(predictor, args.input, output, errors, text_field=args.text_field,
                                      chunk_size=args.chunk_size, progress=False if args.no_progress else None)
        except (FileNotFoundError, ImportError) as exc:
            print(f"lawclf predict: {exc}", file=sys.stderr)
            return 2
        print(f"{counts['predicted']} classified ({counts['legal']} legal) -> {output}; "
              f"{counts['errors']} bad lines -> {errors}; {counts['blank']} blank lines skipped", file=sys.stderr)
        return 1 if counts["errors"] else 0
    return 0


__all__ = ["cli"]
