"""``lawclf_meta.json``: the contract between the stages and everything that loads a model.

Training writes it into ``model/`` (labels, MAX_LEN, truncation, what it was trained with), evaluation adds
the threshold and how the model and the n-gram part combine, distillation names the teacher, export copies
it beside the ONNX graph (and into the graph's ``metadata_props``), and the ``Predictor``, the server and
the screening job read it. :class:`ModelMeta` is the one place it is read, checked and written:

* the fields that change how a text is scored (``labels``, ``threshold``, ``max_len``, ``truncation``,
  ``combine``) are typed and checked on every read *and* every write, so a stage cannot write a file
  that a server would refuse (or, worse, serve wrongly);
* everything else a stage records (``train_config``, ``recipe``, ``test_metrics``, …) is kept as it is,
  under :attr:`ModelMeta.extra`;
* ``schema`` versions the file. Files without it (schema 1, before 2026-12-07) load as they are; a file of a
  newer schema than this code knows is refused with a sentence saying so.

Torch-free (the server imports it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lawclf.ngram import check_combine
from lawclf.truncation import LEGACY_TRUNCATION, check_truncation

#: Label ids are fixed project-wide: 0 = not a legal question, 1 = legal consultation.
LABELS: tuple[str, str] = ("non_legal", "legal")
POSITIVE_LABEL = LABELS[1]
#: Name of the sidecar JSON kept with a model.
MODEL_META_FILE = "lawclf_meta.json"
#: The schema this code writes; files without ``schema`` are schema 1 (the same fields, unversioned).
SCHEMA_VERSION = 2
#: BERT's position embeddings: no exported model reads more tokens than this.
MAX_TOKENS = 512


class MetaError(ValueError):
    """The metadata cannot be used; the message names the file and the field."""


@dataclass
class ModelMeta:
    """The typed part of ``lawclf_meta.json``; :attr:`extra` holds every other recorded key."""

    labels: list[str] = field(default_factory=lambda: list(LABELS))
    #: P(legal) at or above this is legal (chosen on validation by ``lawclf evaluate``).
    threshold: float = 0.5
    max_len: int = MAX_TOKENS
    #: How a text over max_len tokens is cut (lawclf.truncation); models from before it: head.
    truncation: str = LEGACY_TRUNCATION
    #: How the n-gram part joins the model's score (lawclf.ngram.combine_scores); model = the model alone.
    combine: dict[str, Any] = field(default_factory=lambda: {"method": "model"})
    model_name: str = ""
    version: str = "unknown"
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_dict(cls, raw: Any, source: str, n_outputs: Optional[int] = None) -> "ModelMeta":
        """Check ``raw`` (a parsed file) and build the metadata; :class:`MetaError` naming ``source`` and the
        field otherwise. Absent fields keep their defaults. ``n_outputs``: the graph's width, when known."""
        if not isinstance(raw, dict):
            raise MetaError(f"{source}: expected a JSON object")
        schema = raw.get("schema", 1)
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise MetaError(f"{source}: field 'schema' must be a positive integer, got {schema!r}")
        if schema > SCHEMA_VERSION:
            raise MetaError(f"{source}: written by a newer lawclf (metadata schema {schema}); this one reads "
                            f"schemas up to {SCHEMA_VERSION}: upgrade lawclf or export the model again")
        labels = raw.get("labels", list(LABELS))
        if (not isinstance(labels, list) or len(labels) != 2 or not all(isinstance(x, str) for x in labels)
                or len(set(labels)) != 2 or POSITIVE_LABEL not in labels):
            raise MetaError(f"{source}: field 'labels' must be two distinct names including {POSITIVE_LABEL!r}, "
                            f"got {labels!r}")
        if n_outputs is not None and n_outputs != len(labels):
            raise MetaError(f"{source}: field 'labels' names {len(labels)} classes but the graph has "
                            f"{n_outputs} outputs")
        threshold = raw.get("threshold", 0.5)
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold)
                or not 0.0 <= threshold <= 1.0):
            raise MetaError(f"{source}: field 'threshold' must be a number in [0, 1], got {threshold!r}")
        max_len = raw.get("max_len", MAX_TOKENS)
        if isinstance(max_len, bool) or not isinstance(max_len, int) or not 2 <= max_len <= MAX_TOKENS:
            raise MetaError(f"{source}: field 'max_len' must be an integer in [2, {MAX_TOKENS}], got {max_len!r}")
        try:
            truncation = check_truncation(raw.get("truncation", LEGACY_TRUNCATION), source)
            combine = check_combine(raw["combine"], source) if raw.get("combine") else {"method": "model"}
        except ValueError as exc:
            raise MetaError(str(exc)) from None
        typed = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(labels=list(labels), threshold=float(threshold), max_len=int(max_len), truncation=truncation,
                   combine=combine, model_name=str(raw.get("model_name", "")),
                   version=str(raw.get("version", "unknown")), schema=SCHEMA_VERSION,
                   extra={k: v for k, v in raw.items() if k not in typed})

    @classmethod
    def read(cls, model_dir: str | os.PathLike[str], n_outputs: Optional[int] = None) -> "ModelMeta":
        """``model_dir/lawclf_meta.json``, checked; :class:`MetaError` when it is missing or unusable."""
        path = Path(model_dir) / MODEL_META_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MetaError(f"{path}: not found") from None
        except (OSError, ValueError) as exc:
            raise MetaError(f"{path}: unreadable model metadata ({exc})") from None
        return cls.from_dict(raw, str(path), n_outputs)

    # ------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        """The file's content: the typed fields (and ``schema``) and every extra key."""
        out = dict(self.extra)
        out.update(labels=list(self.labels), threshold=self.threshold, max_len=self.max_len,
                   truncation=self.truncation, combine=dict(self.combine), model_name=self.model_name,
                   version=self.version, schema=self.schema)
        return out

    def write(self, model_dir: str | os.PathLike[str]) -> Path:
        path = Path(model_dir) / MODEL_META_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    @property
    def positive_index(self) -> int:
        return self.labels.index(POSITIVE_LABEL)

    def get(self, key: str, default: Any = None) -> Any:
        """A recorded value by its key, typed or extra (``meta.get("recipe")``)."""
        return self.to_dict().get(key, default)


def read_meta_dict(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The recorded metadata as a dict (empty when there is none yet: a stage about to write the first)."""
    path = Path(model_dir) / MODEL_META_FILE
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise MetaError(f"{path}: expected a JSON object")
    return raw


def update_meta(model_dir: str | os.PathLike[str], **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into ``model_dir``'s metadata, check the result as a reader would, write it (with
    the current ``schema``) and return it. A value a server would refuse fails here, in the stage that
    wrote it, naming the field."""
    path = Path(model_dir) / MODEL_META_FILE
    merged = {**read_meta_dict(model_dir), **updates}
    merged.pop("schema", None)  # rewritten at the current schema: the fields are the same
    meta = ModelMeta.from_dict(merged, str(path))
    meta.write(model_dir)
    return meta.to_dict()


__all__ = ["LABELS", "POSITIVE_LABEL", "MODEL_META_FILE", "SCHEMA_VERSION", "MAX_TOKENS", "MetaError", "ModelMeta",
           "read_meta_dict", "update_meta"]
