"""Fixtures for the serving tests that start real processes (Gunicorn, Nginx, Chromium).

Imported by name into each test module (``from _serve_fixtures import gunicorn_server, ...``)
rather than kept in a conftest.py: a second module named ``conftest`` would shadow
tests/conftest.py for the tests that import ``copy_run`` from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _procs import in_ci

from lawclf.config import RunPaths


@pytest.fixture(scope="session")
def serve_model_dir(request) -> Path:
    """The exported tiny model's ONNX folder (read-only).

    ``LAWCLF_TEST_ONNX_DIR`` points at an already exported folder instead (quick local
    iteration on the server without retraining); CI always builds its own.
    """
    given = os.environ.get("LAWCLF_TEST_ONNX_DIR", "")
    if given and not in_ci():
        return Path(given)
    return RunPaths(request.getfixturevalue("exported_run_dir")).onnx


@pytest.fixture(scope="module")
def gunicorn_server(serve_model_dir, tmp_path_factory):
    """A real Gunicorn (deploy/gunicorn.conf.py) serving the tiny model for one test module."""
    from lawclf_dev.server import BackgroundServer

    log_path = tmp_path_factory.mktemp("gunicorn") / "server.log"
    server = BackgroundServer(serve_model_dir, log_path=log_path, env={"LAWCLF_LOG_LEVEL": "INFO"})
    server.start()
    yield server
    server.stop()
