"""Google Colab: a run folder that survives runtimes, and each notebook's prerequisites.

Every "Open in Colab" badge opens its own runtime with an empty ``/content``, and a runtime
that disconnects loses its disk. So in Colab the run folder lives on Google Drive
(``MyDrive/lawclf/<RUN_DIR>``): notebook 04 opened tomorrow finds 03's model there, and
training resumes from the checkpoint 03 left there. Outside Colab nothing changes.

Each notebook calls, right after its parameters cell::

    RUN_DIR = colab.run_dir(RUN_DIR, use_drive=USE_DRIVE)
    colab.require(RUN_DIR, "04")

``require`` rebuilds cheap inputs (the splits of the embedded sample) and stops with a
message naming the notebook to run first when an expensive one (a trained model, an
export) is missing. ``show_page`` shows a page served by the runtime (06's demo page, 07's
review page): a Colab user's browser cannot reach the runtime's ``127.0.0.1``, so in Colab
it goes through Colab's own proxy.

Environment (for the Colab-like CI job, ``scripts/colab_like.py``): ``LAWCLF_COLAB_ROOT``
is Colab's ``/content``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from lawclf.config import RunPaths

#: Where Colab keeps the runtime's files (and mounts Drive, under ``drive/``).
COLAB_ROOT_ENV = "LAWCLF_COLAB_ROOT"
#: The folder under ``MyDrive`` that holds this project's run folders.
DRIVE_FOLDER = "lawclf"

#: notebook → (what it reads, the notebook that makes it). Splits are cheap: rebuilt from
#: the embedded sample. A model or an export is expensive: the notebook stops.
PREREQUISITES: dict[str, tuple[str, str]] = {
    "02": ("splits", "01_data_prep.ipynb"),
    "03": ("splits", "01_data_prep.ipynb"),
    "04": ("model", "03_train.ipynb"),
    "05": ("model", "03_train.ipynb"),
    "06": ("onnx", "05_export_onnx.ipynb"),
    "07": ("onnx", "05_export_onnx.ipynb"),
    "08": ("model", "03_train.ipynb"),
}


class MissingPrerequisite(RuntimeError):
    """A notebook's input is missing and too expensive to rebuild on the spot."""


def in_colab() -> bool:
    """True inside a Google Colab kernel (which imports ``google.colab`` at start-up)."""
    return "google.colab" in sys.modules


def colab_root() -> Path:
    return Path(os.environ.get(COLAB_ROOT_ENV, "/content"))


def run_dir(run_dir: str, use_drive: bool = True) -> str:
    """The run folder to use: on Google Drive in Colab (mounted here if it is not yet), else as given.

    An absolute ``run_dir`` is always kept, so a user can point it anywhere (a Drive
    folder of their own, a local disk)."""
    if not (in_colab() and use_drive) or os.path.isabs(run_dir):
        return run_dir
    from google.colab import drive  # only exists in Colab (mypy: ignore_missing_imports)

    mount_point = colab_root() / "drive"
    if not (mount_point / "MyDrive").is_dir():
        drive.mount(str(mount_point))
    folder = mount_point / "MyDrive" / DRIVE_FOLDER / run_dir
    folder.mkdir(parents=True, exist_ok=True)
    print(f"运行目录在 Google Drive 上：{folder}（换运行时、断线之后还在；USE_DRIVE = False 则放在运行时的磁盘上）")
    return str(folder)


def missing(run_dir: str, what: str) -> bool:
    """Whether ``what`` (``splits``, ``model`` or ``onnx``) is absent or incomplete in ``run_dir``."""
    paths = RunPaths(run_dir)
    if what == "splits":
        return not all(paths.split_file(s).exists() for s in ("train", "validation", "test"))
    if what == "model":
        return not ((paths.model / "lawclf_meta.json").exists() and (paths.model / "config.json").exists())
    if what == "onnx":
        return not (paths.onnx / "lawclf_meta.json").exists()
    raise ValueError(f"unknown prerequisite {what!r}")


def require(run_dir: str, notebook: str) -> None:
    """Check what ``notebook`` (``"04"`` or ``"04_evaluate"``) needs in ``run_dir``.

    Missing splits are made from the embedded sample (what notebook 01 does with its
    defaults); a missing model or export raises :class:`MissingPrerequisite` naming the
    notebook to run first, with the same ``RUN_DIR``."""
    need = PREREQUISITES.get(notebook[:2])
    if need is None or not missing(run_dir, need[0]):
        return
    what, maker = need
    if what == "splits":
        from lawclf.config import DataConfig
        from lawclf.data import prepare

        print(f"{run_dir} 里还没有数据划分：先用内置示例数据做一份（和 {maker} 的默认做法一样）")
        prepare(DataConfig(run_dir=run_dir), plots=False)
        return
    label = {"model": "训练好的模型（model/）", "onnx": "导出的 ONNX 模型（onnx/）"}[what]
    raise MissingPrerequisite(f"{run_dir} 里没有{label}：请先用同一个 RUN_DIR 运行 {maker}"
                              f"（在 Colab 里它会存到 Google Drive，之后每个运行时都能找到）。")


def show_page(url: str, path: str = "/", height: int = 520) -> str:
    """Show the page at ``url`` + ``path`` that a server in this runtime serves; returns the address to open.

    In Colab the browser runs on the user's machine and cannot reach the runtime's loopback, so the
    page is embedded in the cell's output through Colab's proxy
    (``google.colab.output.serve_kernel_port_as_iframe``) and the proxied address
    (``google.colab.kernel.proxyPort``) is printed for a new tab; only the user's own signed-in
    browser can open it. Elsewhere the loopback address is printed as it is.
    """
    parts = urlsplit(url)
    if parts.port is None:
        raise ValueError(f"show_page needs a URL with a port, got {url!r}")
    path = "/" + path.lstrip("/")
    if not in_colab():
        address = url.rstrip("/") + path
        print(f"在浏览器里打开：{address}")
        return address
    from google.colab import output  # only exists in Colab (mypy: ignore_missing_imports)

    output.serve_kernel_port_as_iframe(parts.port, path=path, height=height)
    address = str(output.eval_js(f"google.colab.kernel.proxyPort({parts.port})")).rstrip("/") + path
    print(f"上面嵌入的就是这个页面；在新标签页里打开（经 Colab 的代理，只有你自己登录的浏览器能打开）：{address}")
    return address
