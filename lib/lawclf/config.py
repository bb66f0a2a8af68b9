"""Every stage's parameters in one place.

Notebooks map their UPPER_CASE ``parameters`` cell onto these dataclasses, the CLI
builds its flags from them (:func:`add_config_args` / :func:`config_from_args`) and
the server reads :class:`ServeConfig` from environment variables. Change a default
here and every entry point sees it.

One run writes everything under one folder (:class:`RunPaths`)::

    runs/<name>/
        splits/       train/validation/test.jsonl + summary.json   (01)
        reports/      keyword tables, word clouds, metrics, plots,
                      and one <notebook>.json of key figures each   (02, 04, ...)
        model/        save_pretrained directory + lawclf_meta.json  (03)
        checkpoints/  periodic training state for resume            (03)
        onnx/         model.onnx, model.int8.onnx, tokenizer, meta  (05)

Longer than the ~400 lines other modules keep to, on purpose: configuration lives in one place, so
every stage's dataclass, its ranges and environment names, and the one resolver all sit in this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import ipaddress
import json
import os
import re
import sys
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar

from lawclf.meta import LABELS, MODEL_META_FILE, read_meta_dict, update_meta
from lawclf.recipes import RECIPE_NAMES
from lawclf.truncation import TRUNCATIONS

DEFAULT_RUN_DIR = "runs/sample"

#: Label ids are fixed project-wide (lawclf.meta): 0 = not a legal question, 1 = legal consultation.
LABEL_NAMES_ZH: tuple[str, str] = ("非法律", "法律咨询")

#: Training-set recipes (``TrainConfig.recipe``; implemented in lawclf.robustness.apply_recipe).
RECIPES: tuple[str, ...] = RECIPE_NAMES
#: Threshold strategies (``EvalConfig.threshold_strategy``; implemented in lawclf.metrics.choose_threshold).
THRESHOLD_STRATEGIES: tuple[str, ...] = ("max_f1", "target_precision", "fpr_cap")
#: How the model and its n-gram part are combined (``EvalConfig.combine``; lawclf.ngram.choose_combination).
COMBINE_METHODS: tuple[str, ...] = ("auto", "mean", "stack", "model", "ngram")



@dataclass(frozen=True)
class RunPaths:
    """Folder layout of one run; every stage reads and writes through this."""

    run_dir: Path

    def __init__(self, run_dir: str | os.PathLike[str]):
        object.__setattr__(self, "run_dir", Path(run_dir))

    @property
    def splits(self) -> Path:
        return self.run_dir / "splits"

    @property
    def reports(self) -> Path:
        return self.run_dir / "reports"

    @property
    def keywords(self) -> Path:
        return self.reports / "keywords"

    @property
    def model(self) -> Path:
        return self.run_dir / "model"

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def onnx(self) -> Path:
        return self.run_dir / "onnx"

    def split_file(self, split: str) -> Path:
        """Path of ``train``, ``validation`` or ``test`` split (JSONL)."""
        return self.splits / f"{split}.jsonl"


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong type; the message names the field."""


class _Checked:
    """Checks run when a config is built, so a bad value fails before any work, naming the field.

    Subclasses list allowed values in ``_choices`` and inclusive ``(low, high)`` bounds
    (``None`` = open) in ``_ranges``; every field's type is checked too (an int is accepted
    for a float field).
    """

    _choices: ClassVar[dict[str, tuple]] = {}
    _ranges: ClassVar[dict[str, tuple[Optional[float], Optional[float]]]] = {}
    env_prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        cls = type(self)
        name = cls.__name__
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, tp = getattr(self, f.name), _field_type(cls, f)
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                object.__setattr__(self, f.name, value)
            ok = isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))
            if not ok:
                raise ConfigError(f"{name}.{f.name}: expected {tp.__name__}, got {value!r}")
        for field_name, allowed in cls._choices.items():
            if getattr(self, field_name) not in allowed:
                raise ConfigError(f"{name}.{field_name}: must be one of {', '.join(map(str, allowed))}, "
                                  f"got {getattr(self, field_name)!r}")
        for field_name, (low, high) in cls._ranges.items():
            value = getattr(self, field_name)
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
                raise ConfigError(f"{name}.{field_name}: must be in {bounds}, got {value!r}")


@dataclass
class DataConfig(_Checked):
    """Loading, validation, normalisation and splitting (notebook 01, ``lawclf prepare``)."""

    #: Environment variables ``LAWCLF_DATA_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_DATA_"

    _ranges = {"min_chars": (0, None), "max_chars": (1, None), "val_fraction": (0.0, 0.9),
               "test_fraction": (0.0, 0.9), "max_per_class": (0, None),
               "holdout_max_rows": (0, None),
               "near_duplicate_overlap": (0.0, 1.0)}

    run_dir: str = DEFAULT_RUN_DIR
    #: Folder holding ``legal.jsonl`` and ``nonlegal.jsonl``; empty = the embedded sample.
    data_dir: str = ""
    #: Comma-separated further folders in the same two-file layout, read after data_dir (or the
    #: explicit pair): more genres for training, e.g. a research pool or exported reviews.
    extra_data_dirs: str = ""
    #: Explicit two-file layout (overrides data_dir).
    legal_path: str = ""
    nonlegal_path: str = ""
    #: A single labelled JSONL or CSV file instead of the two-file layout.
    labelled_path: str = ""
    text_field: str = "text"
    label_field: str = "label"
    source_field: str = "source"
    #: False: the first bad line stops with file:line. True: bad lines are counted,
    #: skipped and written to splits/rejected.jsonl with their file and line.
    lenient: bool = False
    min_chars: int = 5
    max_chars: int = 512
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    #: Cap per class (0 = no cap); handy for quick experiments on big corpora.
    max_per_class: int = 0
    #: Comma-separated source groups (lawclf.metrics.source_group names, or a part of one) kept out
    #: of train and validation: all their rows go to test, to measure a source the model never saw.
    holdout_sources: str = ""
    #: At most this many held-out rows go to test (a seeded sample, so a huge held-out source
    #: does not make evaluation slow); 0 = all of them.
    holdout_max_rows: int = 0
    #: Texts whose character-trigram sets overlap at least this much (Jaccard, after the
    #: de-duplication key's normalisation) are near-duplicates, e.g. two fillings of one template:
    #: each group goes to one split, so no test text has a near-twin in train. 0 = off.
    near_duplicate_overlap: float = 0.8


@dataclass
class KeywordConfig(_Checked):
    """Keyword statistics and word clouds (notebook 02, ``lawclf keywords``)."""

    #: Environment variables ``LAWCLF_KEYWORDS_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_KEYWORDS_"

    _ranges = {"top_k": (1, None), "min_count": (1, None), "wordcloud_max_words": (1, None),
               "prior_scale": (1e-9, None)}

    run_dir: str = DEFAULT_RUN_DIR
    #: A TTF/OTF/TTC font with CJK glyphs; empty = search common system fonts.
    font_path: str = ""
    top_k: int = 30
    min_count: int = 3
    #: Extra stop words, one per line (added to the packaged list).
    stopwords_path: str = ""
    #: Also drop the packaged generic words (说/好/做/到/去 …: verbs and adjectives every genre uses,
    #: which would top both classes' tables); False keeps them.
    drop_generic_words: bool = True
    wordcloud_max_words: int = 150
    #: Strength of the log-odds prior, as a fraction of the pooled word counts (Monroe et al. 2008).
    prior_scale: float = 0.1
    #: Comma-separated words whose statistics are always reported (the known shortcut words).
    watch_words: str = "借钱,咨询,怎么办,请问,律师,欠款,还钱"
    #: Word-cloud layout seed (same picture on every run).
    seed: int = 42


@dataclass
class TrainConfig(_Checked):
    """Model and training loop (notebook 03, ``lawclf train``)."""

    #: Environment variables ``LAWCLF_TRAIN_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_TRAIN_"

    _choices = {"loss": ("focal", "ce"), "mixed_precision": ("auto", "no", "fp16", "bf16"),
                "metric": ("f1", "loss", "accuracy", "precision", "recall", "pr_auc", "roc_auc"), "recipe": RECIPES,
                "truncation": TRUNCATIONS, "ngram_rows": ("all", "recipe")}
    _ranges = {"max_len": (0, 512), "batch_size": (1, None), "epochs": (1, None), "learning_rate": (0.0, None),
               "weight_decay": (0.0, None), "warmup_ratio": (0.0, 1.0), "grad_clip": (0.0, None),
               "grad_accum_steps": (1, None), "focal_alpha": (0.0, 1.0), "focal_gamma": (0.0, None),
               "patience": (0, None), "checkpoint_every": (0, None), "max_train_samples": (0, None),
               "recipe_negatives": (0, None), "recipe_positives": (0, None), "negatives_per_source": (0, None),
               "hard_fraction": (0.0, 1.0), "noise_threshold": (0.0, 1.0), "oof_folds": (2, None),
               "short_forms": (0.0, 1.0),
               "tiny_layers": (1, None), "tiny_hidden": (8, None), "tiny_heads": (1, None),
               "tiny_vocab_size": (16, None)}

    run_dir: str = DEFAULT_RUN_DIR
    #: Hub name (``bert-base-chinese``), a local save_pretrained directory, or ``tiny``
    #: (a small BERT built here, with a character vocabulary trained on the train split).
    model_name: str = "bert-base-chinese"
    #: 0 = choose from the train split's length distribution (see batching.choose_max_len).
    max_len: int = 0
    #: How a text longer than MAX_LEN tokens is cut (lawclf.truncation): head = its first tokens;
    #: head_tail = the first third and the last two thirds (a post asks its question last).
    #: Recorded in lawclf_meta.json; export and serving cut the same way.
    truncation: str = "head_tail"
    batch_size: int = 16
    epochs: int = 3
    #: 0 = a default per model kind (2e-5 pretrained, 1e-3 tiny).
    learning_rate: float = 0.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    #: ``focal`` or ``ce``.
    loss: str = "focal"
    focal_alpha: float = 0.5
    focal_gamma: float = 2.0
    #: Validation metric for early stopping and the best checkpoint.
    metric: str = "f1"
    patience: int = 2
    #: ``auto`` = fp16 autocast + GradScaler on CUDA, fp32 on CPU; ``no`` = always fp32.
    mixed_precision: str = "auto"
    group_by_length: bool = True
    dynamic_padding: bool = True
    #: Save resumable state every N optimizer steps (0 = only at epoch ends).
    checkpoint_every: int = 200
    resume: bool = True
    #: Keep checkpoints/ after a finished run (a finished run is never resumed, and for bert-base the
    #: full state is ~1.2 GB on Drive); off = removed once the best model is saved.
    keep_checkpoints: bool = False
    seed: int = 42
    #: 0 = use all; otherwise subsample the train split (quick runs).
    max_train_samples: int = 0
    #: Which train rows the model sees (lawclf.robustness.apply_recipe): plain = all of them;
    #: balanced = non-legal rows spread evenly over source groups; hardneg = balanced plus the
    #: most legal-looking non-legal rows (out-of-fold TF-IDF); robust = hardneg without suspected label noise;
    #: diverse = robust with the hard negatives drawn from every source group (genre).
    recipe: str = "plain"
    #: Non-legal train rows the recipe keeps (0 = all).
    recipe_negatives: int = 0
    #: Legal train rows the recipe keeps, spread over sources (0 = all).
    recipe_positives: int = 0
    #: Most non-legal rows taken from any one source group (0 = no cap).
    negatives_per_source: int = 0
    #: Share of the recipe's non-legal rows that are hard negatives (hardneg, robust, diverse).
    hard_fraction: float = 0.3
    #: robust, diverse: leave out non-legal rows the out-of-fold model rates legal with P at least this.
    noise_threshold: float = 0.9
    #: Folds of the out-of-fold TF-IDF model that finds hard negatives and suspected noise.
    oof_folds: int = 3
    #: Add short forms of this share of the long train rows, on both sides (robustness.short_forms): the
    #: question sentence of a post, or a crop to a short question's length, so short texts are seen and
    #: length is no label (0 = none).
    short_forms: float = 0.0
    #: Also fit the char n-gram part (lawclf.ngram: TF-IDF char 1-3-grams + logistic regression);
    #: evaluation chooses how to combine it with the model (EvalConfig.combine).
    ngram: bool = True
    #: Rows the n-gram part fits: all = every train row except the suspected label noise the recipe left
    #: out (cheap, so a RECIPE_NEGATIVES budget set for the model does not starve it); recipe = the
    #: model's own rows.
    ngram_rows: str = "all"
    #: Tiny mode architecture.
    tiny_layers: int = 2
    tiny_hidden: int = 128
    tiny_heads: int = 2
    tiny_vocab_size: int = 6000


@dataclass
class DistillConfig(_Checked):
    """A small student distilled from a trained run's model (notebook 08, ``lawclf distill``).

    Field names carry a ``distill_``/``student_`` prefix where a training name exists, since one
    parameter file drives the whole series (``EPOCHS`` is the teacher's)."""

    #: Environment variables ``LAWCLF_DISTILL_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_DISTILL_"

    _choices = {"soft_loss": ("kl", "mse"), "distill_rows": ("recipe", "all"),
                "mixed_precision": ("auto", "no", "fp16", "bf16")}
    _ranges = {"student_layers": (0, None), "temperature": (0.05, None), "soft_weight": (0.0, 1.0),
               "distill_epochs": (1, None), "distill_batch_size": (1, None), "distill_learning_rate": (0.0, None),
               "distill_patience": (0, None), "max_unlabelled": (0, None)}

    #: The teacher: a run whose ``model/`` ``lawclf train`` wrote (its splits are the student's too).
    run_dir: str = DEFAULT_RUN_DIR
    #: Where the student's run goes (``model/``, ``reports/``, ``onnx/``); empty = ``<run_dir>-student<N>``.
    student_run_dir: str = ""
    #: Transformer layers of the student, taken from the teacher's (evenly spaced, the last included);
    #: 0 = a third of the teacher's, at least 1 (bert-base-chinese 12 → 4, the tiny model 2 → 1).
    student_layers: int = 0
    #: Softens both models' logits before they are compared (soft_loss kl); 1 = as they are.
    temperature: float = 2.0
    #: Share of the loss that follows the teacher (the rest: the hard labels, the teacher's loss function);
    #: unlabelled texts have only the teacher's part.
    soft_weight: float = 0.7
    #: kl = KL divergence of the softened probabilities (× T²); mse = squared distance of the logits.
    soft_loss: str = "kl"
    #: Rows the student learns from: recipe = the rows the teacher's recipe chose; all = every train row.
    distill_rows: str = "recipe"
    #: Texts without labels the student also learns from, as the teacher scores them: JSONL files or
    #: folders of them (``text`` per line; ``label`` ignored), comma-separated (the pool, screening posts).
    unlabelled_paths: str = ""
    #: At most this many unlabelled texts, drawn at random (0 = all).
    max_unlabelled: int = 0
    distill_epochs: int = 3
    distill_batch_size: int = 16
    #: 0 = twice the teacher's learning rate (the student starts from the teacher's weights).
    distill_learning_rate: float = 0.0
    #: Early stopping on validation F1 (0 = run every epoch); the best epoch is kept.
    distill_patience: int = 2
    mixed_precision: str = "auto"
    #: Then evaluate (the teacher's threshold strategy and combination rule) and export the student,
    #: so the command ends in a served model.
    evaluate_and_export: bool = True
    seed: int = 42

    def layers_for(self, teacher_layers: int) -> int:
        """The student's layer count for a teacher of ``teacher_layers`` layers."""
        return self.student_layers or max(1, round(teacher_layers / 3))

    def student_dir(self, layers: int) -> str:
        """The student's run folder (``student_run_dir``, or ``<run_dir>-student<layers>``)."""
        return self.student_run_dir or f"{self.run_dir.rstrip('/')}-student{layers}"


@dataclass
class EvalConfig(_Checked):
    """Test-split evaluation and threshold choice (notebook 04, ``lawclf evaluate``)."""

    #: Environment variables ``LAWCLF_EVAL_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_EVAL_"

    _choices = {"threshold_strategy": THRESHOLD_STRATEGIES, "combine": COMBINE_METHODS}
    _ranges = {"target_precision": (0.0, 1.0), "max_source_fpr": (0.0, 1.0), "min_source_rows": (1, None),
               "eval_batch_size": (1, None), "n_errors": (0, None), "calibration_bins": (1, None)}

    run_dir: str = DEFAULT_RUN_DIR
    #: How the validation split chooses the threshold (never the test split): max_f1 = best F1;
    #: target_precision = lowest threshold reaching TARGET_PRECISION; fpr_cap = best F1 with every
    #: non-legal source group's false-positive rate at most MAX_SOURCE_FPR.
    threshold_strategy: str = "max_f1"
    #: How the model's and the n-gram part's P(legal) make the served score, chosen on validation: auto = the
    #: weighted mean (weight 0, 0.1, ..., 1) or logistic stack with the best validation PR-AUC; mean = equal
    #: weights; stack = logistic regression on both logits; model / ngram = one part alone.
    combine: str = "auto"
    #: target_precision: the precision to reach.
    target_precision: float = 0.95
    #: fpr_cap: the highest false-positive rate allowed on any non-legal source group.
    max_source_fpr: float = 0.03
    #: fpr_cap: groups with fewer validation negatives than this are too small to constrain.
    min_source_rows: int = 20
    #: Inference batch size (named apart from training's BATCH_SIZE: notebooks share parameters).
    eval_batch_size: int = 64
    n_errors: int = 20
    calibration_bins: int = 10
    #: JSONL of ``{"text", "label", "kind"}`` probe questions; empty = the packaged resources/probes.jsonl.
    probes_path: str = ""


@dataclass
class ExportConfig(_Checked):
    """ONNX export, validation and quantisation (notebook 05, ``lawclf export``)."""

    #: Environment variables ``LAWCLF_EXPORT_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_EXPORT_"

    _ranges = {"opset": (14, None), "atol": (0.0, None), "parity_max_texts": (0, None)}

    run_dir: str = DEFAULT_RUN_DIR
    #: The save_pretrained folder to export; empty = <run_dir>/model.
    model_dir: str = ""
    #: Where model.onnx, model.int8.onnx, tokenizer and metadata go; empty = <run_dir>/onnx.
    output_dir: str = ""
    opset: int = 17
    #: Fail the export when |logits_onnx - logits_torch| exceeds this.
    atol: float = 1e-4
    #: ONNX Runtime's BERT graph optimiser (fused Attention/LayerNorm/Gelu) before quantisation.
    optimize: bool = True
    #: Also write model.int8.onnx (int8 dynamic quantisation) and its parity report.
    quantize: bool = True
    #: Test-split texts used for the parity reports (0 = all).
    parity_max_texts: int = 2000


@dataclass
class ServeConfig(_Checked):
    """HTTP service settings, read from ``LAWCLF_*`` environment variables (see from_env)."""

    #: Environment variables ``LAWCLF_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_"

    model_dir: str = "runs/sample/onnx"
    #: Comma-separated allowed origins; empty = no cross-origin access at all.
    cors_origins: str = ""
    max_text_chars: int = 2000
    max_batch: int = 64
    max_body_bytes: int = 1_000_000
    log_level: str = "INFO"
    #: Log the request text itself (off by default: posts can be personal).
    log_text: bool = False
    #: ONNX Runtime intra-op threads per worker (0 = cores / workers).
    ort_threads: int = 0
    #: Server-side micro-batching of concurrent requests.
    microbatch: bool = True
    microbatch_max_size: int = 32
    #: Extra wait for more requests before a batch runs; 0 = none: a batch is whatever arrived while
    #: the model was busy, so a lone request never waits and a busy server still batches.
    microbatch_wait_ms: float = 0.0
    #: Texts that may wait for the model per worker; beyond that a request gets 503 with Retry-After at once (0 = no bound).
    max_queue: int = 256
    #: Seconds a request waits for its prediction before a 503 (Gunicorn's timeout is longer).
    predict_timeout_s: float = 20.0
    sentry_dsn: str = ""
    #: Share of errors sent to Sentry (1.0 = all) and of requests traced (0.0 = none).
    sentry_sample_rate: float = 1.0
    sentry_traces_sample_rate: float = 0.0
    sentry_environment: str = "production"

    @classmethod
    def from_env(cls, environ: Optional[typing.Mapping[str, str]] = None) -> "ServeConfig":
        """Build from ``LAWCLF_<FIELD>`` variables (``SENTRY_DSN`` also accepted bare)."""
        return cls(**environment_values(cls, environ))


@dataclass
class CollectConfig(_Checked):
    """Optional data collection: V2EX crawler, Q&A importer, JSONL export (notebook 00, ``lawclf collect``)."""

    #: Environment variables ``LAWCLF_COLLECT_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = "LAWCLF_COLLECT_"

    #: SQLAlchemy URL: a SQLite file (zero set-up) or ``postgresql+psycopg://user:pw@host/db``.
    db_url: str = "sqlite:///runs/collect/collect.db"
    #: V2EX API root; tests and the notebook's offline demo point it at a local fake server.
    base_url: str = "https://www.v2ex.com"
    #: Personal access token for API v2 (empty = the V2EX_TOKEN environment variable; none = v1).
    token: str = ""
    #: Comma-separated node names to crawl page by page (e.g. ``python,apple,career``).
    nodes: str = ""
    #: Comma-separated v1 feeds fetched once per run (``latest``, ``hot``); empty = none.
    feeds: str = "latest,hot"
    #: Stop each node after this page (a later run with a larger value carries on).
    max_pages: int = 5
    #: Our own request budget; 0 = the API's published limit (v1 120/hour, v2 600/hour).
    requests_per_hour: int = 0
    #: Retries per request on 429, 5xx, network errors and malformed JSON.
    max_retries: int = 5
    backoff_base: float = 2.0
    backoff_max: float = 600.0
    timeout: float = 30.0
    user_agent: str = "lawclf-collect/0.1 (+https://github.com/lawclf/lawclf)"
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = http_url_problem(self.base_url)
        if problem:
            raise ConfigError(f"CollectConfig.base_url: {problem}, got {self.base_url!r}")
    #: Q&A dump (CSV or JSONL) imported as the legal side; columns are configurable.
    qa_path: str = ""
    qa_title_field: str = "title"
    #: Comma-separated body columns, joined in order (missing values are skipped).
    qa_body_fields: str = "question,content"
    #: Column holding a stable id; when absent the id is a hash of the text (re-imports stay idempotent).
    qa_id_field: str = "id"
    #: Optional category column, kept in the ``node`` column (empty = none).
    qa_node_field: str = "category"
    qa_source: str = "qa"
    qa_label: int = 1
    #: False: the first bad line stops with file:line. True: bad lines are counted and reported.
    lenient: bool = False
    #: Export folder: writes legal.jsonl + nonlegal.jsonl (``lawclf prepare --data-dir``).
    out_dir: str = "runs/collect/data"
    min_chars: int = 10
    max_chars: int = 512


#: Every ScreenConfig field can also come from ``LAWCLF_SCREEN_<FIELD>`` (``LAWCLF_SCREEN_DB_URL``,
#: ``LAWCLF_SCREEN_WEBHOOKS``): secrets stay off the command line, where ``ps`` would show them.
SCREEN_ENV_PREFIX = "LAWCLF_SCREEN_"


@dataclass
class ScreenConfig(_Checked):
    """The screening job: collect new posts, score them, digest, notify, review (``lawclf screen``, notebook 07)."""

    #: Environment variables ``LAWCLF_SCREEN_<FIELD>`` set fields (:func:`resolve_config`).
    env_prefix: ClassVar[str] = SCREEN_ENV_PREFIX

    _ranges = {"max_pages": (1, None), "score_chunk": (1, None), "uncertain_band": (0.0, 1.0),
               "notify_timeout_s": (0.1, None), "notify_budget_s": (0.0, None), "notify_max_attempts": (0, None),
               "notify_max_age_h": (0.01, None),
               "review_port": (1, 65535)}

    #: SQLAlchemy URL of the screening database (posts, scores, passes, reviews); PostgreSQL by URL.
    db_url: str = "sqlite:///runs/screen/screen.db"
    #: The exported ONNX folder whose model scores the posts (the server's model).
    model_dir: str = "runs/sample/onnx"
    #: Digest files (pass-NNNNNN.html/.csv/.json and latest.html) go here.
    out_dir: str = "runs/screen"
    #: Comma-separated sources to collect from each pass: ``v2ex`` and/or ``file`` (the JSONL/CSV in import_path).
    sources: str = "v2ex"
    #: V2EX API root (tests and notebook 07 point it at the local fake server).
    base_url: str = "https://www.v2ex.com"
    #: Public address of a post, ``{id}`` replaced by its id (the link in digests and on the review page).
    post_url: str = "https://www.v2ex.com/t/{id}"
    #: Comma-separated V2EX feeds read every pass.
    feeds: str = "latest"
    #: Comma-separated V2EX nodes walked from page 1 until a page brings nothing new.
    nodes: str = ""
    #: At most this many pages per node and pass.
    max_pages: int = 3
    #: Our own V2EX request budget per hour (0 = the API's published limit).
    requests_per_hour: int = 0
    #: A JSONL or CSV file of new posts (``id``, ``title``, ``content`` columns) read when ``file`` is a source.
    import_path: str = ""
    import_source: str = "file"
    #: Posts scored per transaction (a kill loses at most one chunk's work, never a score).
    score_chunk: int = 256
    #: Comma-separated webhook URLs, each ``kind=URL`` with kind one of json, wecom, dingtalk, feishu.
    webhooks: str = ""
    #: Seconds per notification request, and the most a pass spends delivering (the rest waits for the next pass).
    notify_timeout_s: float = 5.0
    notify_budget_s: float = 20.0
    #: A delivery still failing this many hours after it was queued is given up (kept as failed;
    #: ``lawclf screen notify --retry-failed`` queues it again). By age, not attempts: an outage of
    #: hours on a 30-minute timer still delivers.
    notify_max_age_h: float = 24.0
    #: Also give up after this many failed attempts (0 = no limit: the age decides).
    notify_max_attempts: int = 0
    #: Public address of the digest pages, ``{pass_id}`` replaced by the pass number (000042), sent in
    #: notifications (empty = none; the local file path is never sent).
    digest_url: str = ""
    #: The review page's "uncertain" queue holds scores within this distance of the threshold.
    uncertain_band: float = 0.25
    review_host: str = "127.0.0.1"
    review_port: int = 8010
    #: Host names the review page answers to besides loopback ones, comma-separated (``*.example.org``
    #: for subdomains): the public name it is served under. Any other ``Host`` or ``Origin`` is
    #: refused (403), which stops DNS rebinding; with a token and no names here, any Host is accepted.
    review_allowed_hosts: str = ""
    #: Token for the review page (basic auth password or Bearer); required when not on loopback.
    #: Empty = the LAWCLF_REVIEW_TOKEN environment variable.
    review_token: str = ""
    #: Folder written by ``lawclf screen export-reviews`` (legal.jsonl + nonlegal.jsonl).
    reviews_out_dir: str = "runs/screen/reviews"
    #: Optional two-file data folder merged into the export (reviewed labels win over its labels).
    merge_data_dir: str = ""
    progress: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        # A URL that cannot work would otherwise be retried as a network error on every pass.
        for name in ("base_url", "digest_url", "post_url"):
            value = getattr(self, name)
            if value or name != "digest_url":
                problem = http_url_problem(value)
                if problem:
                    raise ConfigError(f"ScreenConfig.{name}: {problem}, got {value!r}")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_url_problem(url: str) -> str:
    """Why ``url`` is not an absolute http(s) address with a host (empty when it is)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// address"
    return "" if parts.hostname else "the address has no host"


# --------------------------------------------------------------------------- helpers

ConfigT = TypeVar("ConfigT")


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config class (evaluated once: every config built checks every field)."""
    return typing.get_type_hints(cls)


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    tp = _type_hints(cls)[f.name]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


def _parse_value(tp: Any, raw: str, name: str) -> Any:
    if tp is bool:
        low = raw.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{name}: expected a boolean (true/false), got {raw!r}")
    try:
        return tp(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected {tp.__name__}, got {raw!r}") from exc


def field_docs(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment (the lines just above it), joined: the CLI's help texts."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # no source (a frozen build): flags keep their defaults only
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"\s+([a-z]\w*)\s*:[^=]+=", line)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        pending = []
    return docs


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config FILE.yaml`` and one ``--field-name`` flag per dataclass field.

    The help text is the field's ``#:`` comment and its default. Flags left out keep the
    value from ``--config`` (the YAML papermill reads: ``NAME: value``), else the default.
    """
    if "config" not in {a.dest for a in parser._actions}:
        parser.add_argument("--config", dest="config", default=None, metavar="FILE.yaml",
                            help="parameters as in a notebook's parameters cell (NAME: value, the file "
                                 "`python -m lawclf_dev.nbrun --params` reads); flags given here win")
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f"{docs.get(f.name, '')} (default: {default!r})".strip().replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, type=tp, default=argparse.SUPPRESS, help=help_)


def load_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file of ``NAME: value`` parameters (as papermill and nbrun read them)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: parameter file not found")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of NAME: value, got {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items()}


def config_from_args(cls: type[ConfigT], ns: argparse.Namespace,
                     environ: Optional[typing.Mapping[str, str]] = None) -> ConfigT:
    """Build a config from flags added by :func:`add_config_args`: see :func:`resolve_config`."""
    return resolve_config(cls, getattr(ns, "config", None), vars(ns), environ)


def resolve_config(cls: type[ConfigT], config_file: Optional[str | os.PathLike[str]] = None,
                   flags: Optional[typing.Mapping[str, Any]] = None,
                   environ: Optional[typing.Mapping[str, str]] = None) -> ConfigT:
    """The one order every CLI and WSGI factory reads settings in: defaults < ``config_file``
    (YAML ``NAME: value``, as papermill reads it) < environment (``<env_prefix><FIELD>``, see
    :func:`environment_values`) < ``flags``.

    Names in the file that belong to another stage's config are ignored (one file drives the
    whole series); a name no config knows is reported on stderr, since it is probably a typo.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if config_file:
        known = {f.name for c in ALL_CONFIGS for f in dataclasses.fields(c)}
        for key, value in load_params_file(config_file).items():
            name = key.lower()
            if name in names:
                values[name] = value
            elif name not in known:
                print(f"{config_file}: {key} is not a parameter of any lawclf stage; ignored", file=sys.stderr)
    values.update(environment_values(cls, environ))
    values.update({k: v for k, v in (flags or {}).items() if k in names})
    return cls(**values)


def environment_values(cls: type, environ: Optional[typing.Mapping[str, str]] = None) -> dict[str, Any]:
    """Fields of ``cls`` set in the environment under its ``env_prefix`` (``LAWCLF_TRAIN_EPOCHS``;
    the server's are ``LAWCLF_<FIELD>``, and Sentry's settings are also read bare, ``SENTRY_DSN``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if cls is ServeConfig:
        bare_sentry = {k: v for k, v in env.items() if k.startswith("SENTRY_")}
        values = {k: v for k, v in env_values(cls, "", bare_sentry).items() if k.startswith("sentry_")}
    values.update(env_values(cls, getattr(cls, "env_prefix", ""), env))  # LAWCLF_SENTRY_DSN wins over SENTRY_DSN
    return values


def env_values(cls: type, prefix: str, environ: Optional[typing.Mapping[str, str]] = None) -> dict[str, Any]:
    """Fields of ``cls`` set by ``<prefix><FIELD>`` environment variables, parsed to their types
    (secrets such as database URLs and webhook keys stay off command lines)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = env.get(f"{prefix}{f.name.upper()}")
        if raw is not None:
            try:
                values[f.name] = _parse_value(_field_type(cls, f), raw, f"{prefix}{f.name.upper()}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
    return values


def config_from_params(cls: type[ConfigT], params: typing.Mapping[str, Any]) -> ConfigT:
    """Build a config from a notebook's UPPER_CASE parameters (``RUN_DIR`` -> ``run_dir``).

    Unknown names are ignored, so one notebook can feed several configs from the
    same ``globals()``.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k.lower(): v for k, v in params.items() if k.isupper() and k.lower() in names})


#: Every config class, so a parameter file's names can be told apart from typos.
ALL_CONFIGS: tuple[type, ...] = (DataConfig, KeywordConfig, TrainConfig, DistillConfig, EvalConfig, ExportConfig,
                                 ServeConfig, CollectConfig, ScreenConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def record_results(run_dir: str | os.PathLike[str], name: str, results: typing.Mapping[str, Any]) -> Path:
    """Write a notebook's key figures to ``reports/<name>.json`` (tests and the README read them)."""
    path = RunPaths(run_dir).reports / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(results), ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return path


def read_results(run_dir: str | os.PathLike[str], name: str) -> dict[str, Any]:
    path = RunPaths(run_dir).reports / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def read_model_meta(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata kept beside a model, as a dict (empty when absent); :class:`lawclf.meta.ModelMeta` is
    its typed, checked form."""
    return read_meta_dict(model_dir)


def training_config_of(model_dir: str | os.PathLike[str], **overrides: Any) -> "TrainConfig":
    """The :class:`TrainConfig` a saved model was trained with (its metadata), with ``overrides``:
    to train the next model the way the last one was (notebook 07 retrains on reviewed posts).
    A model without recorded settings gives the defaults."""
    recorded = read_model_meta(model_dir).get("train_config", {})
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in recorded.items() if k in names}, **overrides})


def write_model_meta(model_dir: str | os.PathLike[str], **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into the model's metadata, checked as a server would read it (lawclf.meta.update_meta),
    and return the result."""
    return update_meta(model_dir, **updates)


__all__ = [
    "DEFAULT_RUN_DIR", "LABELS", "LABEL_NAMES_ZH", "MODEL_META_FILE",
    "RunPaths", "DataConfig", "KeywordConfig", "TrainConfig", "DistillConfig", "EvalConfig", "ExportConfig", "ServeConfig",
    "CollectConfig",
    "ConfigError", "RECIPES", "THRESHOLD_STRATEGIES", "COMBINE_METHODS", "ALL_CONFIGS", "field_docs", "load_params_file",
    "add_config_args", "config_from_args", "resolve_config", "environment_values", "http_url_problem", "is_loopback",
    "config_from_params", "to_dict", "record_results",
    "read_results", "read_model_meta", "write_model_meta", "field",
]
