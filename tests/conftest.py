"""Shared fixtures: one prepared → trained → evaluated → exported tiny run per test session.

Tests must treat these run folders as read-only; copy one (``copy_run``) to change it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# The hub is unreachable here; fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LAWCLF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

#: Small, fast training settings for the tiny model on the embedded sample.
TINY_TRAIN = dict(model_name="tiny", epochs=4, batch_size=16, max_len=64, learning_rate=1e-3,
                  checkpoint_every=0, tiny_vocab_size=3000)


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a fixture run folder that a test may modify."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def prepared_run_dir(tmp_path_factory) -> Path:
    from lawclf.config import DataConfig
    from lawclf.data import prepare

    run_dir = tmp_path_factory.mktemp("run")
    prepare(DataConfig(run_dir=str(run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def trained_run_dir(prepared_run_dir, tmp_path_factory) -> Path:
    from lawclf.config import TrainConfig
    from lawclf.train import train

    run_dir = copy_run(prepared_run_dir, tmp_path_factory.mktemp("trained") / "run")
    train(TrainConfig(run_dir=str(run_dir), **TINY_TRAIN))
    return run_dir


@pytest.fixture(scope="session")
def evaluated_run_dir(trained_run_dir, tmp_path_factory) -> Path:
    from lawclf.config import EvalConfig
    from lawclf.evaluate import evaluate

    run_dir = copy_run(trained_run_dir, tmp_path_factory.mktemp("evaluated") / "run")
    evaluate(EvalConfig(run_dir=str(run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def exported_run_dir(evaluated_run_dir, tmp_path_factory) -> Path:
    from lawclf.config import ExportConfig
    from lawclf.export import export

    run_dir = copy_run(evaluated_run_dir, tmp_path_factory.mktemp("exported") / "run")
    export(ExportConfig(run_dir=str(run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The research-only real corpus beside the repo; tests needing it skip when it is absent."""
    if not (SHARED_DATA / "legal.jsonl").exists():
        pytest.skip(f"real corpus not found at {SHARED_DATA} (set LAWCLF_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cjk_font() -> Path:
    """A system font with Chinese glyphs; tests that draw Chinese skip with the install hint when none exists."""
    from lawclf.fonts import FontNotFoundError, find_cjk_font

    try:
        return find_cjk_font()
    except FontNotFoundError as exc:
        pytest.skip(str(exc).splitlines()[0] + " (apt-get install fonts-wqy-microhei)")
