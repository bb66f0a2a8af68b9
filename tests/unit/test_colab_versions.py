"""scripts/colab_versions.py: Colab's versions from a backend-info snapshot, and the checks built on them."""

from __future__ import annotations

import importlib.util
import re

import pytest

from lawclf_dev import CHECKOUT as REPO_ROOT


@pytest.fixture(scope="module")
def cv():
    spec = importlib.util.spec_from_file_location("colab_versions", REPO_ROOT / "scripts" / "colab_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FREEZE = """absl-py==1.4.0
torch==2.11.0+cu128
Jieba==0.42.1
typing_extensions==4.12.2
protobuf==5.29.6
-e git+https://example.org/x.git#egg=x
some-local @ file:///colab/src/some_local
# a comment
"""


def test_pins_keep_versions_and_drop_local_tags_and_urls(cv):
    assert cv.pins(FREEZE) == {"absl-py": "1.4.0", "torch": "2.11.0", "jieba": "0.42.1",
                               "typing-extensions": "4.12.2", "protobuf": "5.29.6"}
    assert cv.python_version("Ubuntu 22.04.5 LTS\nPython 3.12.13\n") == "3.12"
    with pytest.raises(SystemExit, match="Python X.Y.Z"):
        cv.python_version("Ubuntu 22.04")


def test_refresh_writes_a_header_naming_the_snapshot(cv, tmp_path):
    folder = tmp_path / "backend-info"
    folder.mkdir()
    (folder / cv.FREEZE).write_text(FREEZE, encoding="utf-8")
    (folder / cv.OS_INFO).write_text("Ubuntu 22.04\nPython 3.12.13\n", encoding="utf-8")
    out = cv.refresh(folder, tmp_path / "c.txt")
    found, py = cv.read_constraints(out)
    assert py == "3.12" and found["torch"] == "2.11.0" and "torch==2.11.0\n" in out.read_text()
    (folder / cv.FREEZE).write_text("absl-py==1.4.0\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no torch pin"):
        cv.refresh(folder, tmp_path / "c.txt")


def test_the_committed_constraints_name_their_commit_and_python(cv):
    text = cv.CONSTRAINTS.read_text(encoding="utf-8")
    assert re.search(r"googlecolab/backend-info pip-freeze.gpu.txt at commit [0-9a-f]{40}", text)
    found, py = cv.read_constraints()
    assert re.fullmatch(r"3\.\d+", py) and {"torch", "transformers", "numpy", "protobuf"} <= set(found)


def test_install_sets_expand_the_extras_the_cells_ask_for(cv):
    sets = cv.install_sets()
    assert sets["06_serve"] == ".[serve]" and sets["03_train"] == ".[data,train]"
    screen = cv.requirements(".[data,train,screen]")  # screen = lawclf[collect,serve]: expanded, not kept
    assert not any(r.startswith("lawclf") for r in screen)
    assert any(r.startswith("gunicorn") for r in screen) and any(r.startswith("sqlalchemy") for r in screen)
    assert cv.satisfied_by("jieba>=0.42", {"jieba": "0.42.1"}) and not cv.satisfied_by("onnx>=1.16", {})
    assert not cv.satisfied_by("numpy>=2.2", {"numpy": "2.1.3"})


def test_a_new_package_that_needs_a_newer_colab_package_is_found(cv):
    report = {"install": [
        {"metadata": {"name": "onnx", "version": "1.23.2",
                      "requires_dist": ["protobuf>=6.31.1", "numpy>=1.23", 'Pillow; extra == "reference"',
                                        'typing_extensions>=4.7; python_version < "3.0"']}},
        {"metadata": {"name": "protobuf", "version": "6.31.1"}}]}
    colab = {"protobuf": "5.29.6", "numpy": "2.1.3", "pillow": "9.0", "typing-extensions": "4.0"}
    assert cv.colab_upgrades(report, colab, "3.12") == {
        "protobuf": "5.29.6 (onnx 1.23.2 needs protobuf>=6.31.1)"}  # extras and other Pythons' markers ignored


def test_the_lowest_pass_pins_every_declared_lower_bound_even_with_an_upper_one():
    spec = importlib.util.spec_from_file_location("colab_like", REPO_ROOT / "scripts" / "colab_like.py")
    colab_like = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(colab_like)
    pins = colab_like.lower_bounds()
    assert "onnx==1.18" in pins and "numpy==2.1" in pins  # onnx is declared >=1.18,<1.23


def test_lower_bounds_are_wheel_checked_for_colabs_python(cv, monkeypatch, capsys):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        missing = "numpy==2.1" in cmd and "3.14" in cmd  # as if numpy 2.1 had no wheel for a newer Python
        return cv.subprocess.CompletedProcess(cmd, 1 if missing else 0, "",
                                              "ERROR: No matching distribution found for numpy==2.1" if missing else "")

    monkeypatch.setattr(cv.subprocess, "run", fake_run)
    assert cv.check_lower_bounds("3.13") == 0
    cmd = calls[0]
    assert cmd[cmd.index("--python-version") + 1] == "3.13" and "--only-binary=:all:" in cmd and "--no-deps" in cmd
    assert set(cv.lower_bounds()) - set(cmd) == {"jieba==0.42"}  # sdist-only, said why
    assert "ok: all" in capsys.readouterr().out
    assert cv.check_lower_bounds("3.14") == 1
    assert "no wheel for Python 3.14: ERROR: No matching distribution found for numpy==2.1" in capsys.readouterr().out
