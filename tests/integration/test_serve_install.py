"""The server installs into a clean venv exactly as deploy/Dockerfile does it, without torch, and serves.

Same steps as the image: pinned requirements, then the package with dependency resolution
against the pins (no --no-deps), from a copy of only the files the Docker build context
holds. Then the venv's Python serves a real prediction and never imports torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _serve_fixtures import serve_model_dir  # noqa: F401 (pytest fixtures)

from lawclf_dev import CHECKOUT as REPO_ROOT
from lawclf_dev.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUIREMENTS = REPO_ROOT / "deploy" / "requirements-serve.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{REQUIREMENTS}: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_are_pinned_and_torch_free():
    pins = _pins()
    assert {"flask", "flask-cors", "gunicorn", "onnxruntime", "tokenizers", "numpy", "sentry-sdk"} <= set(pins)
    assert not {"torch", "transformers", "nvidia-cudnn-cu12", "triton"} & set(pins)


def test_dockerfile_matches_the_install_steps():
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "pip install -r deploy/requirements-serve.txt" in text
    assert 'pip install ".[serve]" -c deploy/requirements-serve.txt' in text
    assert re.search(r"^USER 10001", text, re.M), "non-root, numeric (Kubernetes runAsNonRoot)"
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert '"gunicorn", "-c", "deploy/gunicorn.conf.py", "lawclf.serve:create_app()"' in text
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        if not src.startswith("$"):
            assert (REPO_ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    default_model = re.search(r"ARG MODEL_DIR=(\S+)", text).group(1)
    assert (REPO_ROOT / default_model).is_dir()
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!README.md", "!lib/", "!deploy/"):
        assert needed in ignore, f".dockerignore must let {needed[1:]} into the build context"


def test_compose_wires_nginx_to_the_app():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "docker-compose.yml").read_text())
    app, nginx = compose["services"]["app"], compose["services"]["nginx"]
    assert app["build"]["dockerfile"] == "deploy/Dockerfile"
    assert any(v.endswith(":/models:ro") for v in app["volumes"])
    assert app["environment"]["LAWCLF_MODEL_DIR"] == "/models"
    assert app["environment"]["GUNICORN_BEHIND_PROXY"] == "1" and "ports" not in app  # only Nginx is published
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    conf = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    assert "server app:8000;" in conf and "listen 8080;" in conf
    assert any(p.endswith(":8080") for p in nginx["ports"])


def test_clean_venv_installs_without_torch_and_serves(serve_model_dir, tmp_path):
    t0 = time.monotonic()
    # Only what the Docker build context holds (and no build/ left in the shared checkout).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "lib" / "lawclf", src / "lib" / "lawclf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO_ROOT / "deploy", src / "deploy", ignore=shutil.ignore_patterns("k8s"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def pip(*args: str) -> str:
        proc = subprocess.run([py, "-m", "pip", *args], cwd=src, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    pip("install", "-q", "-r", "deploy/requirements-serve.txt")
    pip("install", "-q", ".[serve]", "-c", "deploy/requirements-serve.txt")
    pip("check")
    installed = {}
    for line in pip("freeze").splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            installed[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert "torch" not in installed and "transformers" not in installed
    extra = set(installed) - set(_pins()) - {"lawclf", "pip", "setuptools", "wheel"}
    assert not extra, f"installed but not pinned in deploy/requirements-serve.txt: {sorted(extra)}"
    assert all(installed[name] == version for name, version in _pins().items() if name in installed)
    assert (venv / "bin" / "gunicorn").exists()

    code = f"""
import json, sys
from lawclf.config import ServeConfig
from lawclf.serve import create_app
app = create_app(ServeConfig(model_dir={str(serve_model_dir)!r}))
resp = app.test_client().post("/predict", json={{"content": "公司拖欠工资怎么办？"}})
print(json.dumps({{"status": resp.status_code, "body": resp.get_json(),
                  "heavy": [m for m in ("torch", "transformers") if m in sys.modules]}}))
"""
    proc = subprocess.run([py, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == 200 and 0 <= out["body"]["score"] <= 1
    assert out["heavy"] == []

    # What the image holds of the package: the runtime modules, no harness, no workshop package.
    site = Path(subprocess.run([py, "-c", "import lawclf, pathlib; print(pathlib.Path(lawclf.__file__).parent)"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip())
    assert site.parent != REPO_ROOT / "lib", "the venv must import its own installed copy, not the checkout"
    shipped = sorted(str(f.relative_to(site)) for f in site.rglob("*.py"))
    assert shipped == runtime_modules(), shipped
    assert not (site.parent / "lawclf_dev").exists() and not (site / "testing").exists()

    # The installed commands, outside the checkout: `lawclf predict` and `lawclf serve`.
    lawclf = str(venv / "bin" / "lawclf")
    proc = subprocess.run([lawclf, "predict", "--model", str(serve_model_dir), "--text", "公司拖欠工资三个月，可以仲裁吗？"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(row["is_legal"], bool) and 0 <= row["score"] <= 1
    port = free_port()
    server = subprocess.Popen([lawclf, "serve", "--model-dir", str(serve_model_dir), "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        health = _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        assert health["status"] == "ok", health
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err[-3000:]
    print(f"clean-venv install, prediction, lawclf predict and lawclf serve in {time.monotonic() - t0:.0f}s")


def runtime_modules() -> list[str]:
    """The package's modules in the checkout (``lib/lawclf``): what an install from the build context holds."""
    root = REPO_ROOT / "lib" / "lawclf"
    return sorted(str(f.relative_to(root)) for f in root.rglob("*.py") if "__pycache__" not in f.parts)


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lawclf serve exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f}s")
