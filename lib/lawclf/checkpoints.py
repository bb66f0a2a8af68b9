"""Resumable training state: what a checkpoint holds and how it is swapped in safely.

``checkpoints/latest`` holds Accelerate's state (weights, optimizer, scheduler,
GradScaler, RNG states per process) plus :class:`TrainerState` as JSON. A checkpoint is
resumed only by a run with the same fingerprint (configuration, train rows, weights and
process count).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from lawclf.config import RunPaths, TrainConfig, to_dict

logger = logging.getLogger(__name__)


STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where training stands; saved with each checkpoint (JSON) so a resume continues exactly."""

    epoch: int = 0
    #: Micro-batches this process has done in the current epoch.
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    #: Running sums of the current epoch (restored on resume so its history line is exact).
    epoch_loss_sum: float = 0.0
    epoch_examples: int = 0
    epoch_seconds: float = 0.0
    finished: bool = False
    stopped_early: bool = False
    fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        return cls(**json.loads(text))


StepCallback = Callable[[TrainerState], None]


def run_fingerprint(cfg: TrainConfig, rows: Sequence[dict], weights: Optional[Sequence[float]],
                    processes: int = 1) -> str:
    """Hash of everything that must match for a checkpoint to be resumed (config + train data +
    process count: a checkpoint's sampler position and per-process RNG states only mean
    something with the same number of processes)."""
    h = hashlib.sha256()
    ignore = {"resume", "checkpoint_every", "run_dir", "keep_checkpoints"}
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ignore}
    h.update(json.dumps({**settings, "processes": processes}, sort_keys=True).encode())
    for r in rows:
        h.update(f"{r['label']}\t{r['text']}\n".encode("utf-8"))
    if weights is not None:
        h.update(np.asarray(weights, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def latest_checkpoint(paths: RunPaths) -> Path:
    return paths.checkpoints / "latest"


def save_checkpoint(accelerator, paths: RunPaths, state: TrainerState) -> None:
    """Save the full training state into ``checkpoints/latest`` (written aside, then swapped in)."""
    tmp = paths.checkpoints / "incoming"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, GradScaler, RNG states (per process)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        latest = latest_checkpoint(paths)
        old = paths.checkpoints / "previous"
        shutil.rmtree(old, ignore_errors=True)
        if latest.exists():
            latest.rename(old)
        tmp.rename(latest)  # a kill before this line leaves the previous checkpoint intact
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_resumable_state(paths: RunPaths, fingerprint: str) -> Optional[TrainerState]:
    """The saved state of an unfinished run with the same fingerprint, else None."""
    state_file = latest_checkpoint(paths) / STATE_FILE
    if not state_file.exists():
        return None
    state = TrainerState.from_json(state_file.read_text(encoding="utf-8"))
    if state.finished:
        return None
    if state.fingerprint != fingerprint:
        logger.warning("checkpoint in %s is from a different configuration or data; starting afresh",
                       paths.checkpoints)
        return None
    return state



__all__ = ["STATE_FILE", "TrainerState", "StepCallback", "run_fingerprint", "latest_checkpoint",
    "save_checkpoint", "load_resumable_state"]
