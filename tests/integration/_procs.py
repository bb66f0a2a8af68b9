"""Helpers for the integration tests: find a system binary, or skip (fail in CI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def need_binary(name: str, *candidates: str) -> str:
    """Path of a system binary, or skip (fail in CI) naming the Debian package to install."""
    found: Optional[str] = shutil.which(name)
    for path in candidates:
        if not found and Path(path).exists():
            found = path
    if found:
        return found
    message = f"{name} is not installed (scripts/install-system-deps.sh ci installs it)"
    if in_ci():
        pytest.fail(message + " — required in CI")
    pytest.skip(message)
