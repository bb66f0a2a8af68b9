"""Schemathesis (all checks) against the real Gunicorn serving the exported model: the OpenAPI spec and the
server agree exactly (schema-valid requests are answered 2xx, invalid ones 4xx with the documented body)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _procs import in_ci
from _serve_fixtures import gunicorn_server, serve_model_dir  # noqa: F401 (pytest fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A fixed seed: CI runs the same cases every time; `st run` without it explores new ones.
SEED = "20261202"


def _st() -> Path:
    path = Path(sys.executable).parent / "st"
    if not path.exists():
        if in_ci():
            pytest.fail("schemathesis is in the dev extra; CI must have it")
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return path


def test_schemathesis_all_checks_find_nothing(gunicorn_server, tmp_path):  # noqa: F811
    # cwd: schemathesis keeps its cache (.schemathesis/) in the working folder, not in the checkout
    done = subprocess.run([str(_st()), "run", gunicorn_server.url + "/openapi.json", "--checks", "all",
                           "--max-examples", "150", "--seed", SEED, "--no-color"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert "No issues found" in done.stdout, tail
