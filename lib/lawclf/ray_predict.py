"""Batch scoring of large files on Ray Data (``lawclf predict --engine ray``; extra ``ray``).

The same :class:`~lawclf.predict.Predictor`, the same line parsing and the same output
records as the single-process batch CLI (:func:`lawclf.predict.predict_file`), spread over
a pool of Ray actors, on this machine or on a cluster (``--ray-address``)::

    lawclf predict --engine ray --model runs/sample/onnx \\
        --input posts-*.jsonl --output predictions.jsonl --errors bad-lines.jsonl

How it runs:

1. The driver plans *chunks*: for a JSONL file, byte ranges of ``rows_per_block`` lines
   found by one fast scan for newlines (so each chunk knows the number of its first
   line); for a Parquet file, its row groups. Line numbers are therefore exact whatever
   order Ray runs things in, and one large file is read by many tasks in parallel.
2. Ray tasks read the chunks (``flat_map``) into rows ``{file, line, raw}``; a Parquet
   row becomes ``raw`` = the row as JSON, ``line`` = its 1-based row number.
3. ``map_batches`` over an actor pool: each actor loads the ONNX model once and parses,
   validates and scores its batches. ``threads_per_actor`` ONNX Runtime threads and
   ``num_cpus=threads_per_actor`` per actor, so actors x threads never exceed the cores.
4. Results stream back in input order (``preserve_order``); good lines go to the output
   file, bad ones to the error file with their file, line, reason and raw text. Every
   input line ends up in exactly one of them, or is counted as blank.

Inputs must be readable by the driver and every node at the same path (a shared file
system, or object storage such as ``s3://`` through pyarrow's file systems); outputs are
written by the driver.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterable, Optional, Sequence, Union

from lawclf.predict import Predictor, ScoredLine, score_lines, write_scored

#: Statuses of a scored row.
#: Rows per block after the lines are cut out, so one file feeds every actor.
ROWS_PER_BLOCK = 2048
#: Input extensions read as Parquet (anything else is JSONL).
PARQUET_SUFFIXES = (".parquet", ".pq")


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("the Ray engine needs the `ray` extra: pip install 'lawclf[ray]'") from exc
    return ray


def expand_inputs(inputs: Union[str, os.PathLike[str], Sequence[Union[str, os.PathLike[str]]]]) -> list[str]:
    """Files to read: each entry is a file, a folder (its ``*.jsonl``/``*.parquet``) or a glob.

    Remote URIs (``s3://...``) pass through unchanged for Ray to read.
    """
    entries = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[str] = []
    for entry in map(str, entries):
        if "://" in entry:
            files.append(entry)
        elif any(ch in entry for ch in "*?["):
            matched = sorted(glob.glob(entry))
            if not matched:
                raise FileNotFoundError(f"{entry}: no input file matches")
            files.extend(matched)
        elif os.path.isdir(entry):
            found = sorted(p for p in glob.glob(os.path.join(entry, "*"))
                           if p.endswith((".jsonl", *PARQUET_SUFFIXES)))
            if not found:
                raise FileNotFoundError(f"{entry}: folder holds no .jsonl or .parquet file")
            files.extend(found)
        elif os.path.isfile(entry):
            files.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: input file not found")
    return [os.path.abspath(f) if "://" not in f else f for f in files]


def _filesystem(path: str):
    """``(pyarrow file system, path inside it)`` for a local path or a URI such as ``s3://bucket/x``."""
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def plan_chunks(files: Sequence[str], rows_per_block: int = ROWS_PER_BLOCK,
                scan_bytes: int = 8 << 20) -> list[dict[str, Any]]:
    """Cut the inputs into chunks of about ``rows_per_block`` lines, each knowing its first line number.

    JSONL: one streaming pass counts newlines (numpy, ~GB/s) and records the byte offset
    after every ``rows_per_block``-th one. Parquet: one chunk per row group (metadata only).
    """
    import numpy as np
    import pyarrow.parquet as pq

    chunks: list[dict[str, Any]] = []
    for path in files:
        fs, inner = _filesystem(path)
        if path.endswith(PARQUET_SUFFIXES):
            try:
                with fs.open_input_file(inner) as fh:
                    meta = pq.ParquetFile(fh).metadata
            except Exception as exc:
                raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
            first = 1
            for group in range(meta.num_row_groups):
                chunks.append({"file": path, "kind": "parquet", "start": group, "stop": group + 1,
                               "first_line": first})
                first += meta.row_group(group).num_rows
            continue
        size = fs.get_file_info(inner).size
        start, first, lines, offset = 0, 1, 0, 0
        with fs.open_input_stream(inner) as fh:
            while True:
                buf = fh.read(scan_bytes)
                if not buf:
                    break
                newlines = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
                # positions (1-based line count) at which a chunk ends within this buffer
                ends = np.arange(rows_per_block - lines % rows_per_block, len(newlines) + 1, rows_per_block)
                for k in ends:
                    stop = offset + int(newlines[k - 1]) + 1
                    chunks.append({"file": path, "kind": "jsonl", "start": start, "stop": stop, "first_line": first})
                    start, first = stop, first + rows_per_block
                lines += len(newlines)
                offset += len(buf)
        if start < size:
            chunks.append({"file": path, "kind": "jsonl", "start": start, "stop": size, "first_line": first})
    return chunks


def split_lines(data: bytes) -> list[bytes]:
    """JSONL lines as a file iterator sees them: split on ``\\n`` only, ``\\r`` stripped, no phantom last line."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line does not start another
    return [line.rstrip(b"\r") for line in lines]


def read_chunk(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """One planned chunk -> rows ``{file, line, raw}`` (runs in a Ray task)."""
    path, first = chunk["file"], int(chunk["first_line"])
    fs, inner = _filesystem(path)
    with fs.open_input_file(inner) as fh:
        if chunk["kind"] == "parquet":
            import pyarrow.parquet as pq

            records = pq.ParquetFile(fh).read_row_group(int(chunk["start"])).to_pylist()
            raws = [json.dumps(rec, ensure_ascii=False, default=str).encode("utf-8") for rec in records]
        else:
            raws = split_lines(fh.read_at(int(chunk["stop"]) - int(chunk["start"]), int(chunk["start"])))
    return [{"file": path, "line": first + i, "raw": raw} for i, raw in enumerate(raws)]


class ScoreBatch:
    """A Ray actor: loads the model once, then parses, validates and scores batches of rows.

    Each output row keeps ``file`` and ``line`` and adds ``status`` (ok / error / blank),
    ``is_legal``, ``error`` (the reason, for an error) and ``json``: the output line, either the scored record (as the
    single-process CLI writes it) or the error record.
    """

    def __init__(self, model_dir: str, model_file: Optional[str], threads: int, batch_size: int,
                 text_field: str):
        self.predictor = Predictor(model_dir, model_file=model_file, threads=threads, batch_size=batch_size)
        self.text_field = text_field

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        files, numbers = [str(f) for f in batch["file"]], [int(n) for n in batch["line"]]
        results = [ScoredLine("")] * len(files)
        for file in dict.fromkeys(files):  # score_lines takes one file's lines at a time
            idx = [i for i, f in enumerate(files) if f == file]
            scored = score_lines(self.predictor, file, [(numbers[i], bytes(batch["raw"][i])) for i in idx],
                                 self.text_field)
            for i, result in zip(idx, scored):
                results[i] = result
        return {"file": files, "line": numbers, "status": [r.status for r in results],
                "json": [r.payload for r in results], "is_legal": [r.is_legal for r in results],
                "error": [r.error for r in results]}


def plan_actors(total_cpus: float, threads_per_actor: int = 1, num_actors: int = 0) -> tuple[int, int]:
    """``(actors, threads per actor)`` so that actors x threads fit in ``total_cpus``.

    One ONNX Runtime thread per actor is the default: on CPU, separate single-threaded
    sessions give more texts per second per core than one session with many threads.
    """
    threads = max(1, int(threads_per_actor))
    cpus = max(1, int(total_cpus))
    if threads > cpus:
        raise ValueError(f"threads_per_actor={threads} is more than the {cpus} CPUs Ray has")
    fit = max(1, cpus // threads)
    if num_actors and num_actors > fit:
        raise ValueError(f"{num_actors} actors x {threads} threads need {num_actors * threads} CPUs; "
                         f"Ray has {cpus}")
    return (num_actors or fit), threads


def predict_files_ray(model_dir: Union[str, os.PathLike[str]], inputs: Union[str, Sequence[str]],
                      output_path: Union[str, os.PathLike[str]], errors_path: Union[str, os.PathLike[str]],
                      *, text_field: str = "text", model_file: Optional[str] = None,
                      num_actors: int = 0, threads_per_actor: int = 1, batch_size: int = 256,
                      ray_address: Optional[str] = None, num_cpus: Optional[int] = None,
                      rows_per_block: int = ROWS_PER_BLOCK, log: Optional[IO[str]] = None,
                      max_logged_errors: int = 20) -> dict[str, int]:
    """Score JSONL / Parquet files on Ray; same outputs and counts as :func:`lawclf.predict.predict_file`.

    Args:
        inputs: files, folders or globs (see :func:`expand_inputs`).
        num_actors: actors in the pool; 0 = as many as fit in the cluster's CPUs.
        threads_per_actor: ONNX Runtime threads in each actor (each actor reserves that many CPUs).
        batch_size: rows per ``map_batches`` call (the Predictor sorts them by length inside).
        ray_address: ``ray://host:10001`` or ``auto`` for a cluster; None = start a local Ray
            (with ``num_cpus`` CPUs, default all) unless one is already initialised here.
            A Ray started here is shut down at the end.
        rows_per_block: lines per chunk (one Ray read task and block each); smaller chunks
            spread a small file over more actors.

    Error records are ``{"file", "line", "error", "raw"}``; the model folder must be
    readable at the same path on every node.
    """
    ray = _import_ray()
    log = log or sys.stderr
    files = expand_inputs(inputs)
    model_dir = str(Path(model_dir).resolve())
    Predictor(model_dir, model_file=model_file, threads=1)  # fail here, clearly, not in every actor
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address, num_cpus=None if ray_address else num_cpus,
                 include_dashboard=False, log_to_driver=False)
    try:
        return _run(ray, model_dir, files, Path(output_path), Path(errors_path), text_field=text_field,
                    model_file=model_file, num_actors=num_actors, threads_per_actor=threads_per_actor,
                    batch_size=batch_size, rows_per_block=rows_per_block, log=log,
                    max_logged_errors=max_logged_errors)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray: Any, model_dir: str, files: list[str], output_path: Path, errors_path: Path, *, text_field: str,
         model_file: Optional[str], num_actors: int, threads_per_actor: int, batch_size: int,
         rows_per_block: int, log: IO[str], max_logged_errors: int) -> dict[str, int]:
    actors, threads = plan_actors(ray.cluster_resources().get("CPU", 1), threads_per_actor, num_actors)

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # output lines in input order, like predict_file
    ctx.enable_progress_bars = False
    counts = {"lines": 0, "predicted": 0, "errors": 0, "blank": 0, "legal": 0, "files": len(files),
              "actors": actors, "threads_per_actor": threads}
    chunks = plan_chunks(files, rows_per_block)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    errors_path.parent.mkdir(parents=True, exist_ok=True)
    if not chunks:  # only empty files: nothing to start actors for
        output_path.write_text("", encoding="utf-8")
        errors_path.write_text("", encoding="utf-8")
        return counts
    # One block per chunk, so the chunks spread over the actors. Reading is light: 0 CPUs
    # reserved, so the actor pool can hold every core without starving the tasks feeding it;
    # and a fixed number of readers, since 0-CPU tasks would otherwise each get a worker process.
    readers = max(2, actors // 4)
    ds = (ray.data.from_items(chunks, override_num_blocks=len(chunks))
          .flat_map(read_chunk, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=readers))
          .map_batches(ScoreBatch, batch_size=batch_size, batch_format="numpy", num_cpus=threads,
                       compute=ray.data.ActorPoolStrategy(size=actors),
                       fn_constructor_kwargs=dict(model_dir=model_dir, model_file=model_file,
                                                  threads=threads, batch_size=min(batch_size, 64),
                                                  text_field=text_field)))

    with output_path.open("w", encoding="utf-8") as out, errors_path.open("w", encoding="utf-8") as err:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            _write_batch(batch, out, err, counts, log, max_logged_errors)
    if counts["errors"] > max_logged_errors:
        print(f"... {counts['errors'] - max_logged_errors} more bad lines, see {errors_path}", file=log)
    return counts


def _write_batch(batch: dict[str, Any], out: IO[str], err: IO[str], counts: dict[str, int],
                 log: IO[str], max_logged_errors: int) -> None:
    results = [ScoredLine(str(s), str(j), bool(legal), str(e))
               for s, j, legal, e in zip(batch["status"], batch["json"], batch["is_legal"], batch["error"])]
    write_scored(results, list(zip(batch["file"], batch["line"])), out, err, counts, log, max_logged_errors)


def add_ray_args(parser: Any) -> None:
    """The ``--engine ray`` options of ``lawclf predict``."""
    group = parser.add_argument_group("Ray engine (--engine ray; needs the `ray` extra)")
    group.add_argument("--ray-address", default=None,
                       help="Ray cluster to join (ray://HOST:10001 or auto); default: start Ray on this machine")
    group.add_argument("--ray-actors", type=int, default=0,
                       help="model replicas (actors); 0 = as many as fit in the CPUs")
    group.add_argument("--ray-threads-per-actor", type=int, default=1,
                       help="ONNX Runtime threads per actor (actors x threads <= CPUs)")


def run_from_args(args: Any, inputs: Iterable[str], output: Path, errors: Path) -> dict[str, int]:
    """``lawclf predict --engine ray`` after the CLI has parsed its flags."""
    return predict_files_ray(args.model, list(inputs), output, errors, text_field=args.text_field,
                             model_file=args.model_file, num_actors=args.ray_actors,
                             threads_per_actor=args.ray_threads_per_actor,
                             batch_size=max(args.batch_size, 1) * 8, ray_address=args.ray_address)


__all__ = ["predict_files_ray", "expand_inputs", "plan_chunks", "read_chunk", "split_lines", "ScoreBatch", "plan_actors", "add_ray_args",
           "run_from_args"]
