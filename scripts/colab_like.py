"""Run every notebook the way Google Colab runs it: a CI job (``make colab-check``, in ``.ci/run``).

    python scripts/colab_like.py --versions colab  --work /tmp/colab-colab    # Colab's own versions
    python scripts/colab_like.py --versions lowest --work /tmp/colab-lowest
    python scripts/colab_like.py --versions newest --work /tmp/colab-newest

What it builds, and why each part is there:

* **A snapshot of this checkout as the "GitHub" remote** (tracked and untracked-but-not-ignored
  files, committed in a throw-away repository); ``LAWCLF_REPO_URL`` points the notebooks'
  install cell at it, so the notebooks clone it exactly as Colab clones GitHub.
* **A fresh virtual environment holding only what Colab ships**: torch, transformers,
  accelerate, tokenizers, numpy, pandas, matplotlib, scikit-learn, requests, tqdm and the
  Jupyter kernel — not lawclf, not onnxruntime. ``--versions colab`` installs them (and the
  other Colab packages the install cells touch: jieba, wordcloud, Flask, SQLAlchemy, protobuf,
  IPython) at the versions of Colab's GPU runtime, ``constraints/colab-gpu.txt`` (from a
  snapshot of googlecolab/backend-info: ``scripts/colab_versions.py``), and leaves the notebooks'
  own ``pip install`` unconstrained, as in Colab; a notebook that changes a Colab package fails
  the pass. ``--versions lowest`` installs
  the lower bound that ``pyproject.toml`` declares for every direct dependency (a
  constraints file, also applied to the notebooks' own ``%pip install``); ``newest`` the
  newest releases. torch stays at the CPU build on disk (Colab keeps its own CUDA build).
* **A stand-in ``google.colab``** imported at kernel start-up (as Colab does), whose
  ``drive.mount`` links the mount point to one folder shared by all notebooks: that is
  "Google Drive", the only thing that outlives a runtime.
* **Each notebook in its own fresh runtime**: the virtual environment is reset to its state
  before any install cell (a hard-linked copy), so a notebook cannot lean on what an earlier
  notebook installed; and its own fresh kernel and empty working folder (Colab's
  ``/content``: ``LAWCLF_COLAB_ROOT``), in series order, with nothing installed beforehand:
  its install cell must clone, install and import the library in one pass of "Run all".
* **A disconnect** (``--disconnect``, on by default): notebook 03's kernel is killed once
  its first checkpoint reaches Drive; 03 is then run again in a new runtime and must
  resume from that checkpoint.
* ``apt-get`` is a logging stand-in (the fonts come from the CI machine's packages).

Small parameters (the tiny offline model) keep it inside the CI time budget. Exits 1 with
a message on the first failure; prints a table of notebooks, seconds and package versions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_versions import lower_bounds  # noqa: E402  (the bounds the lowest pass pins; one definition)

ROOT = Path(__file__).resolve().parents[1]
SERIES = ("00_collect_data", "01_data_prep", "02_keyword_wordcloud", "03_train", "04_evaluate",
          "05_export_onnx", "06_serve", "07_screen", "08_distill")
#: What a Colab runtime has before any notebook installs anything (the parts this project uses).
COLAB_PACKAGES = ("transformers", "accelerate", "tokenizers", "numpy", "pandas", "matplotlib", "scikit-learn",
                  "requests", "tqdm", "ipykernel", "setuptools")
TORCH = "torch==2.13.0"  # the CPU build on disk; Colab's own CUDA build is never replaced
#: More of what Colab ships, installed in the ``colab`` pass (the install cells must leave them be).
COLAB_MORE = ("jieba", "wordcloud", "flask", "sqlalchemy", "protobuf", "ipython", "pyyaml")
COLAB_CONSTRAINTS = ROOT / "constraints" / "colab-gpu.txt"
#: Colab's CUDA builds: not installable here, kept at the CPU build on disk.
NOT_FROM_COLAB = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-[\w-]+|jax|jaxlib|tensorflow[\w-]*)==")
#: Small parameters, per notebook (only names it declares).
PARAMS = {"03_train": {"MODEL_NAME": "tiny", "CHECKPOINT_EVERY": 10}}
SHOWN = ("torch", "transformers", "accelerate", "tokenizers", "numpy", "onnx", "onnxruntime", "pandas",
         "scikit-learn")

GOOGLE_COLAB = '''"""Stand-in for Colab's google.colab (scripts/colab_like.py): drive.mount and the output proxy calls."""
'''
GOOGLE_COLAB_OUTPUT = '''"""Records the calls that ask Colab's front end to proxy a kernel port (one JSON line each in
$LAWCLF_COLAB_OUTPUT_LOG); eval_js answers proxyPort as Colab does, with a URL of the proxy."""
import json
import os
import re


def _record(**call):
    with open(os.environ["LAWCLF_COLAB_OUTPUT_LOG"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(call) + "\\n")


def serve_kernel_port_as_iframe(port, path="/", width="100%", height="400", cache_in_notebook=False):
    _record(call="serve_kernel_port_as_iframe", port=int(port), path=path)


def serve_kernel_port_as_window(port, path="/", anchor_text=None):
    _record(call="serve_kernel_port_as_window", port=int(port), path=path)


def eval_js(script, ignore_result=False, timeout_sec=None):
    _record(call="eval_js", script=script)
    match = re.fullmatch(r"google\\.colab\\.kernel\\.proxyPort\\((\\d+)\\)", script.strip())
    return f"https://{match.group(1)}-colab-like.googleusercontent.example/" if match else None
'''
GOOGLE_COLAB_DRIVE = '''"""drive.mount links the mount point to $LAWCLF_FAKE_DRIVE (shared by every "runtime")."""
import os


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    storage = os.environ["LAWCLF_FAKE_DRIVE"]
    os.makedirs(os.path.join(storage, "MyDrive"), exist_ok=True)
    if os.path.islink(mountpoint) and not force_remount:
        print("Drive already mounted at " + mountpoint)
        return
    os.makedirs(os.path.dirname(mountpoint), exist_ok=True)
    os.symlink(storage, mountpoint)
    print("Mounted at " + mountpoint)
'''
APT_GET = '''#!/bin/sh
echo "apt-get $*" >> "$LAWCLF_APT_LOG"
'''


def torch_rejects(pins: list[str]) -> list[str]:
    """The ``name==version`` pins that the torch build on disk (``TORCH``) does not accept
    (Colab's setuptools 75 against torch 2.13's setuptools>=77, say)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    needs = {}
    for spec in requires("torch") or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            needs[req.name.lower().replace("_", "-")] = req.specifier
    out = []
    for pin in pins:
        name, _, version = pin.partition("==")
        spec = needs.get(name.lower().replace("_", "-"))
        if spec is not None and version and not spec.contains(version, prereleases=True):
            out.append(pin)
    return out


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def snapshot(remote: Path) -> str:
    """This checkout's files, committed in a fresh repository: the notebooks' "GitHub"."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (remote / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, remote / rel)
    git = ["git", "-c", "user.name=colab-like", "-c", "user.email=ci@localhost", "-C", str(remote)]
    sh(git[:5] + ["init", "-q", str(remote)])
    sh(git + ["add", "-A"])
    sh(git + ["commit", "-qm", "snapshot for the Colab-like job"])
    return f"file://{remote}"


def make_runtime(work: Path, versions: str) -> tuple[Path, dict[str, str]]:
    """The Colab-like venv, its kernel spec and the environment every kernel gets."""
    venv = work / "venv"
    sh([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PIP_CONSTRAINT"}}
    packages: list[str] = [TORCH, *COLAB_PACKAGES]
    constrain: list[str] = []
    if versions == "lowest":
        constraints = work / "lower-bounds.txt"
        constraints.write_text("\n".join(lower_bounds()) + "\n", encoding="utf-8")
        env["PIP_CONSTRAINT"] = str(constraints)
    elif versions == "colab":  # Colab's versions for what it ships; the install cells' pip unconstrained
        lines = [x for x in COLAB_CONSTRAINTS.read_text(encoding="utf-8").splitlines() if not NOT_FROM_COLAB.match(x)]
        rejected = torch_rejects(lines)  # the CPU torch here is newer than Colab's: its own needs win
        constraints = work / "colab-constraints.txt"
        constraints.write_text("\n".join(x for x in lines if x not in rejected) + "\n", encoding="utf-8")
        if rejected:
            print(f"[colab-like] colab: not pinned to Colab's version, for {TORCH}: {', '.join(rejected)}", flush=True)
        packages += COLAB_MORE
        constrain = ["-c", str(constraints)]
    log = work / "pip.log"
    for args in (["--upgrade", "pip"], [*packages, *constrain]):
        with open(log, "a", encoding="utf-8") as fh:
            done = subprocess.run([str(py), "-m", "pip", "install", "-q", *args], env=env, stdout=fh, stderr=fh)
        if done.returncode != 0:
            tail = "\n".join(line for line in log.read_text(encoding="utf-8").splitlines()
                             if not line.startswith("WARNING: Location"))[-3000:]
            raise SystemExit(f"FAILED: installing Colab's packages ({versions})\n{tail}")
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "google" / "colab").mkdir(parents=True, exist_ok=True)  # no google/__init__.py: a namespace
    (site / "google" / "colab" / "__init__.py").write_text(GOOGLE_COLAB, encoding="utf-8")
    (site / "google" / "colab" / "drive.py").write_text(GOOGLE_COLAB_DRIVE, encoding="utf-8")
    (site / "google" / "colab" / "output.py").write_text(GOOGLE_COLAB_OUTPUT, encoding="utf-8")
    (site / "colab_like_startup.pth").write_text("import google.colab\n", encoding="utf-8")  # as Colab's kernel
    sh([str(py), "-m", "ipykernel", "install", "--prefix", str(work / "jupyter"), "--name", "colab-like"],
       env=env, capture_output=True)
    shim = work / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "apt-get").write_text(APT_GET, encoding="utf-8")
    (shim / "apt-get").chmod(0o755)
    env.update({"JUPYTER_PATH": str(work / "jupyter" / "share" / "jupyter"),
                "PATH": f"{shim}:{venv / 'bin'}:{env.get('PATH', '')}", "MPLBACKEND": "Agg",
                "HF_HUB_OFFLINE": "1", "LAWCLF_FAKE_DRIVE": str(work / "drive"), "LAWCLF_APT_LOG": str(work / "apt.log"),
                "LAWCLF_COLAB_OUTPUT_LOG": str(work / "colab-output.log"),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"})
    return py, env


def papermill_cmd(remote: Path, name: str, out: Path, content: Path, params: dict) -> list[str]:
    cmd = [sys.executable, "-m", "papermill", str(remote / "notebooks" / f"{name}.ipynb"), str(out),
           "-k", "colab-like", "--cwd", str(content), "--no-progress-bar", "--execution-timeout", "900"]
    if params:
        cmd += ["-y", json.dumps(params)]
    return cmd


def run_notebook(remote: Path, name: str, work: Path, env: dict[str, str], attempt: str = "") -> float:
    """One notebook in a new runtime: an empty /content, a new kernel. Returns seconds."""
    content = work / f"content-{name[:2]}{attempt}"
    content.mkdir()
    out = work / "executed" / f"{name}{attempt}.ipynb"
    out.parent.mkdir(exist_ok=True)
    t0 = time.time()
    done = subprocess.run(papermill_cmd(remote, name, out, content, PARAMS.get(name, {})),
                          env={**env, "LAWCLF_COLAB_ROOT": str(content)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"FAILED: {name}{attempt} in a fresh Colab-like runtime\n{done.stderr[-4000:]}")
    return time.time() - t0


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and every descendant, and wait until all are gone. jupyter_client starts the
    kernel in a session of its own, so killing papermill's process group leaves the kernel running
    (still training, still writing into /content and Drive)."""
    import psutil  # ipykernel's dependency, so in any venv that runs papermill

    try:
        root = psutil.Process(proc.pid)
        root.suspend()  # no new children while we list them
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _, alive = psutil.wait_procs(family[1:], timeout=30)
    if alive:
        raise SystemExit(f"FAILED: processes outlived SIGKILL: {[p.pid for p in alive]}")


def disconnect_during_training(remote: Path, work: Path, env: dict[str, str]) -> None:
    """Run 03, kill its kernel once a checkpoint is on Drive (the runtime is gone), as Colab does."""
    content = work / "content-03-killed"
    content.mkdir()
    out = work / "executed" / "03_train-killed.ipynb"
    out.parent.mkdir(exist_ok=True)
    state = work / "drive" / "MyDrive" / "lawclf" / "runs" / "sample" / "checkpoints" / "latest" / "trainer_state.json"
    proc = subprocess.Popen(papermill_cmd(remote, "03_train", out, content, PARAMS["03_train"]),
                            env={**env, "LAWCLF_COLAB_ROOT": str(content)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    killed = proc.poll() is None
    kill_tree(proc)  # papermill and its kernel: the runtime disconnects
    shutil.rmtree(content)  # the runtime's disk goes with it
    if not killed:
        raise SystemExit("FAILED: 03 finished (or died) before its first checkpoint reached Drive; "
                         "the disconnect could not be simulated")


def check_pages_proxied(log: Path, drive_run: Path) -> None:
    """06's demo page and 07's review page went through Colab's proxy (the stand-in's record), and each
    notebook recorded the proxied address it printed."""
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    iframes = [c for c in calls if c["call"] == "serve_kernel_port_as_iframe"]
    for notebook, key in (("06_serve", "demo_page"), ("07_screen", "review_page")):
        page = json.loads((drive_run / "reports" / f"{notebook}.json").read_text(encoding="utf-8")).get(key, "")
        port = re.match(r"https://(\d+)-colab-like\.", page)
        if not port or not any(c["port"] == int(port.group(1)) for c in iframes):
            raise SystemExit(f"FAILED: {notebook} did not show its page through Colab's proxy "
                             f"(recorded {key}={page!r}; proxy calls: {calls})")


def installed(py: Path) -> dict[str, str]:
    listed = json.loads(subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], check=True,
                                       capture_output=True, text=True).stdout)
    return {d["name"].lower().replace("_", "-"): d["version"] for d in listed}


def fresh_runtime(work: Path) -> None:
    """The venv as it was before any install cell (a hard-linked copy of it: pip replaces files, it
    never writes into them), so each notebook's install cell is tested on its own."""
    shutil.rmtree(work / "venv")
    sh(["cp", "-al", str(work / "venv-pristine"), str(work / "venv")])


def check_colab_untouched(name: str, py: Path, before: dict[str, str]) -> None:
    """The ``colab`` pass: a notebook's install cell must leave the packages Colab ships as they were
    (an upgrade under a running kernel, e.g. protobuf beside TensorFlow, is what Colab users meet)."""
    after = installed(py)
    changed = {n: f"{v} -> {after.get(n, 'removed')}" for n, v in before.items() if after.get(n) != v}
    if changed:
        raise SystemExit(f"FAILED: {name}'s install cell changed packages Colab ships: {changed}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--versions", choices=("colab", "newest", "lowest"), default="colab")
    p.add_argument("--work", default="", help="working folder (default: a new temporary folder, removed after)")
    p.add_argument("--disconnect", default=True, action=argparse.BooleanOptionalAction,
                   help="kill 03 after its first checkpoint and check that it resumes from Drive")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(f"/tmp/colab-like-{args.versions}-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    (work / "remote").mkdir(parents=True)
    t0 = time.time()
    url = snapshot(work / "remote")
    py, env = make_runtime(work, args.versions)
    env["LAWCLF_REPO_URL"] = url
    sh(["cp", "-al", str(work / "venv"), str(work / "venv-pristine")])
    before = installed(py)
    setup_s = time.time() - t0
    print(f"[colab-like] {args.versions}: runtime ready in {setup_s:.0f}s", flush=True)
    timings = {}
    for name in SERIES:
        fresh_runtime(work)  # a new runtime: nothing an earlier notebook installed
        if name == "03_train" and args.disconnect:
            disconnect_during_training(work / "remote", work, env)
            fresh_runtime(work)
            timings[name] = run_notebook(work / "remote", name, work, env, attempt="-resumed")
            text = (work / "executed" / "03_train-resumed.ipynb").read_text(encoding="utf-8")
            if "resuming" not in text:
                raise SystemExit("FAILED: 03 run again after the disconnect did not resume from the Drive checkpoint")
        else:
            timings[name] = run_notebook(work / "remote", name, work, env)
        if args.versions == "colab":
            check_colab_untouched(name, py, before)
        print(f"[colab-like] {name}: {timings[name]:.0f}s", flush=True)

    drive_run = work / "drive" / "MyDrive" / "lawclf" / "runs" / "sample"
    for part in ("splits/train.jsonl", "model/lawclf_meta.json", "onnx/model.int8.onnx", "reports/metrics.json",
                 "reports/06_serve.json", "reports/07_screen.json", "collect/collect.db"):
        if not (drive_run / part).exists():
            raise SystemExit(f"FAILED: {part} is not on the stand-in Drive ({drive_run})")
    student = drive_run.with_name("sample-student1") / "onnx" / "model.int8.onnx"  # 08's student, beside its teacher
    if not student.exists() or not (drive_run / "reports" / "08_distill.json").exists():
        raise SystemExit(f"FAILED: 08's student ({student}) or its report is not on the stand-in Drive")
    apt = (work / "apt.log").read_text(encoding="utf-8").count("fonts-wqy-microhei") if (work / "apt.log").exists() else 0
    if apt < 5:
        raise SystemExit(f"FAILED: only {apt} notebooks asked apt-get for the CJK font (01-05 draw Chinese text)")
    check_pages_proxied(work / "colab-output.log", drive_run)
    versions = installed(py)
    print(f"\n[colab-like] passed ({args.versions} versions), {time.time() - t0:.0f}s in all, setup {setup_s:.0f}s")
    print("  " + ", ".join(f"{n} {versions.get(n, '-')}" for n in SHOWN))
    print("  " + "  ".join(f"{n[:2]} {s:.0f}s" for n, s in timings.items()))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
