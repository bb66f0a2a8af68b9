"""Data tests on the research corpus beside the repository (skipped when it is absent)."""

from __future__ import annotations

import pytest

from lawclf.config import DataConfig
from lawclf.data import prepare, split_overlap


@pytest.mark.realdata
@pytest.mark.slow
def test_prepare_real_corpus(shared_data_dir, tmp_path):
    """The 76k-line research corpus (read by path, outputs stay in tmp): valid, leak-free, stratified."""
    summary = prepare(DataConfig(data_dir=str(shared_data_dir), run_dir=str(tmp_path / "real")), plots=False)
    c = summary["counts"]
    assert c["rejected"] == 0 and c["kept"] > 70_000
    assert split_overlap(tmp_path / "real") == {"train&validation": 0, "train&test": 0, "validation&test": 0}
    shares = [s["legal"] / s["total"] for s in summary["splits"].values()]
    assert max(shares) - min(shares) < 0.002
