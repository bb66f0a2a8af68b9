"""Run the notebook series with papermill (``make run``, the notebook tests, CI).

Executed copies are build artefacts: they go to ``<run_dir>/notebooks/``, never back
into ``notebooks/`` (which is committed without outputs).

    python -m lawclf_dev.nbrun --run-dir runs/sample --params notebooks/params/local.yaml
    python -m lawclf_dev.nbrun --only 01 02 -p SEED=7
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from lawclf.config import DEFAULT_RUN_DIR
from lawclf_dev import CHECKOUT

NOTEBOOK_DIR = CHECKOUT / "notebooks"

#: The series in order; a notebook that does not exist yet is skipped with a message.
SERIES: tuple[str, ...] = (
    "01_data_prep",
    "02_keyword_wordcloud",
    "03_train",
    "04_evaluate",
    "05_export_onnx",
    "06_serve",
    "07_screen",
    "08_distill",
)


def notebook_path(name: str) -> Path:
    """Path of a series notebook from its name or number prefix (``"03"`` -> 03_train.ipynb)."""
    matches = sorted(NOTEBOOK_DIR.glob(f"{name}*.ipynb"))
    if not matches:
        raise FileNotFoundError(f"no notebook matching {name!r} in {NOTEBOOK_DIR}")
    return matches[0]


def declared_parameters(path: str | os.PathLike[str]) -> set[str]:
    """The names in a notebook's ``parameters`` cell, as papermill reads them."""
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


def parameters_for(path: str | os.PathLike[str], parameters: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(the parameters the notebook declares, the names it does not)``."""
    declared = declared_parameters(path)
    return {k: v for k, v in parameters.items() if k in declared}, sorted(set(parameters) - declared)


def _ipc_kernel_manager() -> type:
    """A kernel manager that talks to the kernel over Unix sockets in a private temporary folder,
    not loopback TCP: no other local user can connect to it, and ipykernel has no reason to warn
    "Kernel is running over TCP without encryption" on every notebook."""
    import tempfile

    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kwargs: Any):
            self._socket_dir = tempfile.mkdtemp(prefix="lawclf-kernel-")
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(self._socket_dir, "kernel"))
            super().__init__(**kwargs)

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts every kernel before shutting it down; a kernel that has finished
            # the notebook has nothing to interrupt, and the SIGINT only makes it log
            # "KeyboardInterrupt caught in kernel" on the way out.
            if not getattr(self, "shutting_down", False):
                await super()._async_interrupt_kernel()

    return IPCKernelManager


def run_notebook(name: str, run_dir: str | os.PathLike[str], parameters: Optional[Mapping[str, Any]] = None,
                 output_dir: Optional[str | os.PathLike[str]] = None, timeout: int = 1800,
                 report_ignored: bool = True) -> Path:
    """Execute one notebook with papermill; ``RUN_DIR`` is always passed. Returns the executed copy."""
    import papermill as pm

    src = notebook_path(name)
    out_dir = Path(output_dir) if output_dir else Path(run_dir) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / src.name
    # Only what this notebook declares: papermill warns about (and injects) any other name.
    params, ignored = parameters_for(src, {"RUN_DIR": str(run_dir), **dict(parameters or {})})
    if ignored and report_ignored:
        print(f"[nbrun] {src.name} declares no {', '.join(ignored)}: not passed", flush=True)
    env_before = os.environ.get("MPLBACKEND")
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; no display here
    try:
        pm.execute_notebook(str(src), str(out), parameters=params, cwd=str(CHECKOUT),
                            kernel_name="python3", progress_bar=False, execution_timeout=timeout,
                            kernel_manager_class=_ipc_kernel_manager())
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
    return out


def run_series(run_dir: str | os.PathLike[str], parameters: Optional[Mapping[str, Any]] = None,
               only: Optional[Iterable[str]] = None) -> list[Path]:
    """Run the series (or the notebooks named in ``only``) in order, passing the same parameters.

    Each notebook gets only the parameters it declares, so one parameter set drives the
    whole series; a name that no notebook of the run declares is reported (a typo, probably).
    """
    wanted = list(only) if only else list(SERIES)
    present = []
    for name in wanted:
        try:
            present.append(notebook_path(name))
        except FileNotFoundError:
            pass
    known = set().union(*(declared_parameters(p) for p in present)) if present else set()
    unknown = sorted(set(parameters or {}) - known - {"RUN_DIR"})
    if unknown:
        print(f"[nbrun] no notebook of this run declares {', '.join(unknown)}: ignored", flush=True)
    done = []
    for name in wanted:
        try:
            notebook_path(name)
        except FileNotFoundError:
            print(f"[nbrun] {name}: not in this version of the series, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        print(f"[nbrun] {name} ...", flush=True)
        done.append(run_notebook(name, run_dir, parameters, report_ignored=False))
        print(f"[nbrun] {name} done in {time.perf_counter() - t0:.1f}s -> {done[-1]}", flush=True)
    return done


def _parse_params(pairs: Sequence[str], files: Sequence[str]) -> dict[str, Any]:
    import yaml  # papermill depends on PyYAML

    params: dict[str, Any] = {}
    for f in files:
        loaded = yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"{f}: expected a mapping of NAME: value")
        params.update(loaded)
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects NAME=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key] = yaml.safe_load(value)  # typed: 3 -> int, true -> bool, tiny -> str
    return params


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lawclf_dev.nbrun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR)
    parser.add_argument("--params", action="append", default=[], help="YAML file of NAME: value (repeatable)")
    parser.add_argument("-p", action="append", default=[], metavar="NAME=VALUE", help="one parameter (YAML value)")
    parser.add_argument("--only", nargs="*", help="notebook names or number prefixes, e.g. 01 02")
    args = parser.parse_args(argv)
    params = _parse_params(args.p, args.params)
    run_series(args.run_dir, params, args.only)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
