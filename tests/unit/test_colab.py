"""lawclf.colab: the run folder on Drive inside Colab, unchanged outside; prerequisites per notebook."""

import sys
import types

import pytest

from lawclf import colab
from lawclf.config import DataConfig
from lawclf.data import prepare


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """A stand-in ``google.colab`` whose ``drive.mount`` makes ``MyDrive`` in a temp folder."""
    mounts = []

    def mount(mount_point, **_):
        mounts.append(mount_point)
        (tmp_path / "drive-storage" / "MyDrive").mkdir(parents=True, exist_ok=True)
        (tmp_path / "content").mkdir(exist_ok=True)
        (tmp_path / "content" / "drive").symlink_to(tmp_path / "drive-storage")

    google = types.ModuleType("google")
    pkg = types.ModuleType("google.colab")
    pkg.drive = types.SimpleNamespace(mount=mount)
    google.colab = pkg
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", pkg)
    monkeypatch.setenv(colab.COLAB_ROOT_ENV, str(tmp_path / "content"))
    return mounts


def test_outside_colab_the_run_folder_is_unchanged(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not colab.in_colab()
    assert colab.run_dir("runs/sample", use_drive=True) == "runs/sample"


def test_in_colab_the_run_folder_is_on_drive_mounted_once(fake_colab, tmp_path):
    first = colab.run_dir("runs/sample")
    assert first == str(tmp_path / "content" / "drive" / "MyDrive" / "lawclf" / "runs" / "sample")
    assert (tmp_path / "drive-storage" / "MyDrive" / "lawclf" / "runs" / "sample").is_dir()
    assert colab.run_dir("runs/sample") == first and len(fake_colab) == 1  # already mounted: not again
    assert colab.run_dir("runs/sample", use_drive=False) == "runs/sample"
    assert colab.run_dir("/somewhere/else") == "/somewhere/else"  # an absolute folder is the user's choice


def test_missing_splits_are_rebuilt_from_the_sample(tmp_path):
    run = str(tmp_path / "run")
    assert colab.missing(run, "splits")
    colab.require(run, "02_keyword_wordcloud")
    assert not colab.missing(run, "splits")
    colab.require(run, "01")  # no prerequisites: nothing happens


@pytest.mark.parametrize("notebook,maker", [("04", "03_train.ipynb"), ("05", "03_train.ipynb"),
                                            ("06", "05_export_onnx.ipynb")])
def test_a_missing_model_or_export_stops_naming_the_notebook_to_run_first(tmp_path, notebook, maker):
    run = str(tmp_path / "run")
    prepare(DataConfig(run_dir=run), plots=False)
    with pytest.raises(colab.MissingPrerequisite, match=maker):
        colab.require(run, notebook)


def test_a_model_folder_counts_only_when_complete(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert colab.missing(str(tmp_path), "model")  # no lawclf_meta.json: training did not finish
    (model / "lawclf_meta.json").write_text("{}")
    assert not colab.missing(str(tmp_path), "model")
    with pytest.raises(ValueError):
        colab.missing(str(tmp_path), "weights")


@pytest.fixture
def fake_colab_output(monkeypatch):
    """A stand-in ``google.colab.output`` that records what the notebook asked Colab's front end to do."""
    calls = []
    output = types.SimpleNamespace(
        serve_kernel_port_as_iframe=lambda port, path="/", height=420, **kw: calls.append(("iframe", port, path)),
        eval_js=lambda js: calls.append(("eval_js", js)) or f"https://{js.split('(')[1].rstrip(')')}-proxy.example/")
    google = types.ModuleType("google")
    pkg = types.ModuleType("google.colab")
    pkg.output = output
    google.colab = pkg
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", pkg)
    return calls


def test_in_colab_a_page_is_shown_through_colabs_proxy(fake_colab_output, capsys):
    address = colab.show_page("http://127.0.0.1:8123", "/")
    assert fake_colab_output == [("iframe", 8123, "/"), ("eval_js", "google.colab.kernel.proxyPort(8123)")]
    assert address == "https://8123-proxy.example/" and address in capsys.readouterr().out
    assert colab.show_page("http://127.0.0.1:8123/", "api/posts") == "https://8123-proxy.example/api/posts"


def test_outside_colab_a_page_is_its_loopback_address(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.show_page("http://127.0.0.1:8123/", "/") == "http://127.0.0.1:8123/"
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out
    with pytest.raises(ValueError, match="needs a URL with a port"):
        colab.show_page("http://example.org/")
