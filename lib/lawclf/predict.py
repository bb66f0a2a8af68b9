"""The one predictor: ONNX Runtime + the fast tokenizer, no torch (notebook 05, the CLI, the server).

A model folder (``runs/<name>/onnx``, written by :func:`lawclf.export.export`) holds::

    model.onnx        fp32 graph (optimised)        inputs: input_ids, attention_mask,
    model.int8.onnx   int8 dynamic quantisation             token_type_ids (int64, [batch, seq])
    tokenizer.json    the fast tokenizer (``tokenizers`` library format)
    lawclf_meta.json  labels, threshold, max_len, version, ... (also in the ONNX metadata_props)

    >>> p = Predictor("runs/sample/onnx")
    >>> p.predict("公司拖欠工资怎么办？")
    {'label': 'legal', 'is_legal': True, 'score': 0.97, 'threshold': 0.42}

Batch screening of a JSONL file (bounded memory, every input field kept) is
:func:`predict_file`; the ``lawclf predict`` command is :mod:`lawclf.predict_cli`.

This module must never import torch or transformers: the server image has neither.

A little over ~400 lines: the one predictor and batch scoring over it; the CLI is :mod:`lawclf.predict_cli`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from lawclf.meta import MODEL_META_FILE, POSITIVE_LABEL, MetaError, ModelMeta
from lawclf.ngram import NGRAM_FILE, NgramLoadError, NgramModel, combine_scores
from lawclf.text import normalise_text
from lawclf.truncation import truncate_ids

#: Graph inputs, always fed all three (int64, shape [batch, sequence]). token_type_ids is all
#: zeros for one text, but BERT adds its segment embedding, so it is part of the interface.
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: Key under which the model metadata is also stored in the ONNX file's metadata_props.
ONNX_META_KEY = "lawclf_meta"


class ModelLoadError(RuntimeError):
    """The model folder is missing, incomplete or corrupt (the message says which file and why)."""


def default_threads() -> int:
    """ONNX Runtime intra-op threads when none are asked for.

    ``LAWCLF_ORT_THREADS`` or ``OMP_NUM_THREADS`` when set, else the CPUs this process may
    use (a container's CPU set, not the host's core count).
    """
    for name in ("LAWCLF_ORT_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_model_dir(model_dir: Union[str, os.PathLike[str]]) -> Path:
    """Accept the ONNX folder itself or a run folder that has one (``runs/x`` -> ``runs/x/onnx``)."""
    path = Path(model_dir).expanduser()
    if not (path / FP32_FILE).exists() and not (path / INT8_FILE).exists() and (path / "onnx").is_dir():
        return path / "onnx"
    return path


def length_groups(sorted_lengths: Sequence[int], max_size: int, pad_ratio: float) -> list[slice]:
    """Cut lengths sorted ascending into batches of at most ``max_size`` whose longest member is at
    most ``pad_ratio`` times their shortest.

    Each batch is padded to its longest text, so mixing 20- and 60-token texts computes a third
    of the batch on padding; on CPU a batch of similar lengths costs about the same per text as a
    bigger mixed one, so cutting by length wins (benchmarks/load.py, docs/benchmarks.md).
    """
    groups, start = [], 0
    for i in range(1, len(sorted_lengths) + 1):
        if (i == len(sorted_lengths) or i - start >= max_size
                or sorted_lengths[i] > sorted_lengths[start] * pad_ratio):
            groups.append(slice(start, i))
            start = i
    return groups


class Predictor:
    """Classify texts with an exported ONNX model.

    Args:
        model_dir: the ONNX folder (or a run folder containing ``onnx/``).
        model_file: file name inside it; default ``model.int8.onnx`` when present, else ``model.onnx``.
        threads: ONNX Runtime intra-op threads; 0 = :func:`default_threads`.
        batch_size: texts per ONNX Runtime call in :meth:`predict_proba`.

    Raises:
        ModelLoadError: the folder, the model file, the tokenizer or the metadata is missing or unreadable.
    """

    def __init__(self, model_dir: Union[str, os.PathLike[str]], model_file: Optional[str] = None,
                 threads: int = 0, batch_size: int = 32, pad_ratio: float = 1.25):
        import onnxruntime as ort  # imported here so `import lawclf.predict` stays cheap
        from tokenizers import Tokenizer

        self.model_dir = resolve_model_dir(model_dir)
        if not self.model_dir.is_dir():
            raise ModelLoadError(f"model folder {self.model_dir} does not exist "
                                 "(export one with notebook 05 or `lawclf export --run-dir RUN`)")
        if model_file is None:
            model_file = INT8_FILE if (self.model_dir / INT8_FILE).exists() else FP32_FILE
        self.model_path = self.model_dir / model_file
        if not self.model_path.is_file():
            raise ModelLoadError(f"{self.model_path}: ONNX model file not found "
                                 f"(expected {INT8_FILE} or {FP32_FILE} in {self.model_dir})")
        tok_path = self.model_dir / TOKENIZER_FILE
        if not tok_path.is_file():
            raise ModelLoadError(f"{tok_path}: tokenizer file not found")

        self.threads = int(threads) if threads and threads > 0 else default_threads()
        self.batch_size = max(1, int(batch_size))
        #: A batch's longest text is at most this many times its shortest (see :func:`length_groups`).
        self.pad_ratio = max(1.0, float(pad_ratio))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad protobufs
            raise ModelLoadError(f"{self.model_path}: not a loadable ONNX model ({exc})") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - set(INPUT_NAMES)
        if unknown:
            raise ModelLoadError(f"{self.model_path}: unexpected graph inputs {sorted(unknown)}; "
                                 f"this predictor feeds {list(INPUT_NAMES)}")

        self.meta = self._load_meta()
        outputs = self.session.get_outputs()
        width = outputs[0].shape[-1] if outputs and outputs[0].shape else None
        try:  # the one check of the metadata (lawclf.meta): labels, threshold, max_len, truncation, combine
            checked = ModelMeta.from_dict(self.meta, self._meta_source,
                                          n_outputs=width if isinstance(width, int) else None)
        except MetaError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.labels, self.threshold, self.max_len = checked.labels, checked.threshold, checked.max_len
        self.positive_index = checked.positive_index
        #: How a text over max_len tokens is cut (lawclf.truncation; models from before it: head).
        self.truncation = checked.truncation
        #: How the n-gram part joins the model's score (lawclf.ngram.combine_scores; none = the model alone).
        self.combine = checked.combine
        self.ngram: Optional[NgramModel] = None
        if self.combine["method"] != "model":
            try:
                self.ngram = NgramModel.load(self.model_dir / NGRAM_FILE)
            except NgramLoadError as exc:
                raise ModelLoadError(str(exc)) from exc

        try:
            self.tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:
            raise ModelLoadError(f"{tok_path}: not a readable tokenizers file ({exc})") from exc
        # Padding is done per batch below; truncation (lawclf.truncation) keeps [CLS] ... [SEP] within max_len.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else int(pad_id)

    # ------------------------------------------------------------------ metadata
    def _load_meta(self) -> dict[str, Any]:
        """The sidecar ``lawclf_meta.json``; falls back to the copy in the ONNX metadata_props."""
        path = self.model_dir / MODEL_META_FILE
        self._meta_source = str(path)
        if path.exists():
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{path}: unreadable model metadata ({exc})") from exc
            if not isinstance(meta, dict):
                raise ModelLoadError(f"{path}: expected a JSON object")
            return meta
        props = self.session.get_modelmeta().custom_metadata_map
        self._meta_source = f"{self.model_path} ({ONNX_META_KEY})"
        if ONNX_META_KEY in props:
            try:
                return json.loads(props[ONNX_META_KEY])
            except ValueError as exc:
                raise ModelLoadError(f"{self.model_path}: bad {ONNX_META_KEY} metadata ({exc})") from exc
        raise ModelLoadError(f"{path} not found and {self.model_path.name} carries no {ONNX_META_KEY!r} "
                             "metadata: labels and threshold are unknown")

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    @property
    def parts(self) -> list[str]:
        """The parts whose scores make the served one: ``["model"]``, ``["model", "ngram"]`` or ``["ngram"]``."""
        method = self.combine["method"]
        return [method] if method in ("model", "ngram") else ["model", "ngram"]

    # ------------------------------------------------------------------ inference
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, cut to ``max_len`` by the model's truncation strategy (special tokens
        included; :func:`lawclf.truncation.truncate_ids`, as in training), not padded.

        Each text first gets the data stage's normalisation (NFKC, whitespace), exactly as the
        training texts did: otherwise full-width punctuation typed by a user would reach the
        model as tokens it never saw in training.
        """
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is {type(t).__name__}, expected str")
        return [truncate_ids(enc.ids, self.max_len, self.truncation)
                for enc in self.tokenizer.encode_batch([normalise_text(t) for t in texts])]

    def pad_batch(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Pad a batch to its longest member (never to a fixed length) and build all three inputs."""
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: batch[name] for name in self.input_names}
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def predict_proba(self, texts: Sequence[str], batch_size: Optional[int] = None) -> np.ndarray:
        """P(legal) for each text, in input order: the served score (the model's, combined with the
        n-gram part's where the model has one, as ``lawclf evaluate`` chose)."""
        parts = self.predict_parts(texts, batch_size)
        if self.combine["method"] == "model":
            return parts["model"]
        return combine_scores(parts.get("model"), parts.get("ngram"), self.combine).astype(np.float32)

    def predict_parts(self, texts: Sequence[str], batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
        """Each part's P(legal): ``{"model": ...}`` (the ONNX graph) and ``"ngram"`` when the model uses one;
        the model part is always given when asked for here (export's parity check compares it with PyTorch)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is {type(t).__name__}, expected str")
        out = {"model": self._model_proba(texts, batch_size)}
        if self.ngram is not None:
            out["ngram"] = self.ngram.predict_proba([normalise_text(t) for t in texts]).astype(np.float32)
        return out

    def _model_proba(self, texts: list[str], batch_size: Optional[int] = None) -> np.ndarray:
        """The ONNX graph's P(legal). Texts are sorted by token length and cut into batches of similar
        length (:func:`length_groups`: little compute wasted on padding), then scores go back to input order."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        size = batch_size or self.batch_size
        ids = self.encode(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        scores = np.empty(len(texts), dtype=np.float32)
        for group in length_groups([len(ids[i]) for i in order], size, self.pad_ratio):
            idx = order[group]
            logits = self.logits(self.pad_batch([ids[i] for i in idx])).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)  # stable softmax
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            scores[idx] = probs[:, self.positive_index]
        return scores

    def result(self, score: float) -> dict[str, Any]:
        is_legal = bool(score >= self.threshold)
        return {"label": POSITIVE_LABEL if is_legal else self.labels[1 - self.positive_index],
                "is_legal": is_legal, "score": float(score), "threshold": self.threshold}

    def predict(self, texts: Union[str, Sequence[str]]) -> Union[dict[str, Any], list[dict[str, Any]]]:
        """``{"label", "is_legal", "score" (P(legal)), "threshold"}`` for one text, a list for a list."""
        if isinstance(texts, str):
            return self.result(float(self.predict_proba([texts])[0]))
        return [self.result(float(s)) for s in self.predict_proba(list(texts))]


# --------------------------------------------------------------------------- batch files
#: Fields this command adds to each record; an input field of the same name is kept as ``<name>_input``.
OUTPUT_FIELDS = ("label", "score", "is_legal")


def parse_line(raw: bytes, text_field: str) -> tuple[Optional[dict], Optional[str]]:
    """``(record, None)`` for a usable JSONL line, ``(None, reason)`` otherwise."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        record = json.loads(line)
    except ValueError as exc:
        return None, f"bad JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    if text_field not in record:
        return None, f"missing field {text_field!r}"
    text = record[text_field]
    if not isinstance(text, str):
        return None, f"field {text_field!r} is {type(text).__name__}, expected a string"
    if not text.strip():
        return None, f"field {text_field!r} is empty"
    return record, None


def with_prediction(record: dict, result: dict[str, Any]) -> dict:
    """The input record plus ``label``, ``score``, ``is_legal`` (colliding input fields renamed, not lost)."""
    out = dict(record)
    for key in OUTPUT_FIELDS:
        if key in out:
            out[f"{key}_input"] = out.pop(key)
    out.update(label=result["label"], score=round(result["score"], 6), is_legal=result["is_legal"])
    return out


#: Status of each input line in :func:`score_lines`.
OK, ERROR, BLANK = "ok", "error", "blank"


class ScoredLine(NamedTuple):
    """What batch scoring made of one input line (:func:`score_lines`, read by :func:`write_scored`)."""

    #: :data:`OK`, :data:`ERROR` or :data:`BLANK` (counted, never an error).
    status: str
    #: The output JSON line: the scored record (ok), the :func:`error_record` (error), empty (blank).
    payload: str = ""
    is_legal: bool = False
    #: Why the line could not be scored (error only).
    error: str = ""


def error_record(file: str, line: int, reason: str, raw: bytes) -> dict[str, Any]:
    """The one error-record schema of batch scoring, whichever engine: ``{"file", "line", "error", "raw"}``."""
    return {"file": file, "line": line, "error": reason, "raw": raw.decode("utf-8", errors="replace")}


def score_lines(predictor: Predictor, file: str, lines: Sequence[tuple[int, bytes]],
                text_field: str = "text") -> list[ScoredLine]:
    """The batch-scoring core of both engines (``predict_file`` and the Ray actors).

    ``lines`` are ``(line number, raw line without its newline)``; one :class:`ScoredLine` each, in order.
    """
    out = [ScoredLine(BLANK)] * len(lines)
    good: list[int] = []
    records: list[dict] = []
    for i, (number, raw) in enumerate(lines):
        if not raw.strip():
            continue
        record, reason = parse_line(raw, text_field)
        if record is None:
            payload = json.dumps(error_record(file, number, str(reason), raw), ensure_ascii=False)
            out[i] = ScoredLine(ERROR, payload, False, str(reason))
        else:
            good.append(i)
            records.append(record)
    if records:
        scores = predictor.predict_proba([r[text_field] for r in records])
        for i, record, score in zip(good, records, scores):
            result = predictor.result(float(score))
            out[i] = ScoredLine(OK, json.dumps(with_prediction(record, result), ensure_ascii=False),
                                bool(result["is_legal"]))
    return out


def write_scored(results: Sequence[ScoredLine], lines: Sequence[tuple[str, int]], out: IO[str],
                 err: IO[str], counts: dict[str, int], log: IO[str], max_logged_errors: int) -> None:
    """Write :func:`score_lines` results (``lines``: their ``(file, line)``), count them, log the first errors."""
    for result, (file, number) in zip(results, lines):
        counts["lines"] += 1
        if result.status == OK:
            counts["predicted"] += 1
            counts["legal"] += bool(result.is_legal)
            out.write(result.payload + "\n")
        elif result.status == ERROR:
            counts["errors"] += 1
            if counts["errors"] <= max_logged_errors:
                print(f"{file}:{number}: {result.error}", file=log)
            err.write(result.payload + "\n")
        else:
            counts["blank"] += 1
    out.flush()
    err.flush()


def predict_file(predictor: Predictor, input_path: Union[str, os.PathLike[str]],
                 output_path: Union[str, os.PathLike[str]], errors_path: Union[str, os.PathLike[str]],
                 text_field: str = "text", chunk_size: int = 1024, progress: Optional[bool] = None,
                 log: Optional[IO[str]] = None, max_logged_errors: int = 20) -> dict[str, int]:
    """Classify a JSONL file line by line in chunks; bad lines go to ``errors_path``, none is dropped.

    Memory stays bounded by ``chunk_size`` lines whatever the file size; results are
    written (and flushed) after each chunk, in input order. Each error record is
    :func:`error_record`. Blank lines are counted, not errors.

    Returns counts: ``lines``, ``predicted``, ``errors``, ``blank``, ``legal``.
    """
    from tqdm import tqdm

    log = log or sys.stderr
    input_path, output_path, errors_path = Path(input_path), Path(output_path), Path(errors_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: input file not found")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    errors_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"lines": 0, "predicted": 0, "errors": 0, "blank": 0, "legal": 0}
    name = str(input_path)
    pending: list[tuple[int, bytes]] = []

    def flush(out: IO[str], err: IO[str]) -> None:
        results = score_lines(predictor, name, pending, text_field)
        write_scored(results, [(name, n) for n, _ in pending], out, err, counts, log, max_logged_errors)
        pending.clear()

    with input_path.open("rb") as src, output_path.open("w", encoding="utf-8") as out, \
            errors_path.open("w", encoding="utf-8") as err, \
            tqdm(total=input_path.stat().st_size, unit="B", unit_scale=True, desc="predict",
                 disable=(not progress) if progress is not None else None, file=log) as bar:
        for number, raw in enumerate(src, start=1):
            bar.update(len(raw))
            pending.append((number, raw.rstrip(b"\r\n")))
            if len(pending) >= chunk_size:
                flush(out, err)
        flush(out, err)
    if counts["errors"] > max_logged_errors:
        print(f"... {counts['errors'] - max_logged_errors} more bad lines, see {errors_path}", file=log)
    return counts


__all__ = ["Predictor", "ModelLoadError", "predict_file", "score_lines", "ScoredLine", "write_scored", "error_record",
           "parse_line", "with_prediction", "default_threads", "resolve_model_dir", "INPUT_NAMES", "FP32_FILE",
           "INT8_FILE", "TOKENIZER_FILE", "OK", "ERROR", "BLANK"]
