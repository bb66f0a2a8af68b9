"""benchmarks/latency.py still runs end to end (tiny shape, one repetition) and prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_latency_benchmark_smoke(tmp_path):
    out = tmp_path / "latency.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "latency.py"), "--shapes", "tiny", "--seq-lens", "16",
           "--reps", "2", "--original-reps", "1", "--warmup", "0", "--batch", "4", "--throughput-reps", "1",
           "--threads", "1", "--work-dir", str(tmp_path / "models"), "--json", str(out),
           "--students-of", "tiny", "--students", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| 16 |" in proc.stdout and "original (pad 512)" in proc.stdout
    res = json.loads(out.read_text())["shapes"]["tiny"]
    assert set(res["latency_ms"]) == {"torch", "ort-fp32", "ort-int8", "ort-int8+ngram", "original", "int8-bare"}  # one process each
    assert "Predictor overhead" in proc.stdout
    assert all(v > 0 for v in res["throughput_per_s"].values())
    assert (tmp_path / "models" / "tiny" / "onnx" / "model.int8.onnx").is_file()
    students = json.loads(out.read_text())["students"]  # the 1-layer student beside the 2-layer model, same run
    assert students["layers"] == [2, 1] and set(students["latency_ms"]) == {"2", "1", "original"}
    assert "**tiny shape, int8, by number of layers**" in proc.stdout and "| 1 | " in proc.stdout
    assert (tmp_path / "models" / "tiny-L1" / "onnx" / "model.int8.onnx").is_file()
