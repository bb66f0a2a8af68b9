"""Colab's own versions, from a snapshot of the public repository ``googlecolab/backend-info``.

    python scripts/colab_versions.py refresh --backend-info /path/to/backend-info   # a clone or a fetched git dir
    python scripts/colab_versions.py check                                         # every install cell, Colab's Python

``refresh`` reads ``pip-freeze.gpu.txt`` and ``os-info-gpu.txt`` of the GPU runtime (the T4 one the
notebooks ask for) at that snapshot's commit and writes ``constraints/colab-gpu.txt``: one
``name==version`` line per package of the runtime (local version tags such as ``+cu128`` dropped:
PyPI has no such builds), under a header naming the repository, commit, date and Python version.
The Colab-like job (``scripts/colab_like.py --versions colab``) preinstalls the packages Colab
ships at these versions; ``check`` proves that every notebook's install cell resolves *for
Colab's interpreter* with them: ``pip install --dry-run --only-binary=:all: --python-version X.Y``
for Linux x86-64, failing on any package with no wheel for that Python. Run ``refresh`` when
Colab moves (the job then follows it); its diff shows what changed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints" / "colab-gpu.txt"
FREEZE, OS_INFO = "pip-freeze.gpu.txt", "os-info-gpu.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s;+]+)(\+\S+)?\s*$")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64", "linux_x86_64")
#: Packages Colab ships that this project's install cells may never replace (they are the runtime).
KEEP = ("torch",)
#: Lower bounds with no wheel at all, for any Python (pure-Python source releases): not wheel-checked.
SDIST_ONLY = {"jieba": "pure Python, published as a source archive only (Colab ships it)"}


def _read(source: Path, name: str) -> tuple[str, str, str]:
    """``(text, commit, date)`` of ``name`` in a clone or bare git dir (HEAD), or a plain folder."""
    git = ["git", f"--git-dir={source}" if (source / "HEAD").is_file() and not (source / ".git").exists()
           else f"--git-dir={source / '.git'}"]
    try:
        text = subprocess.run(git + ["show", f"HEAD:{name}"], check=True, capture_output=True, text=True).stdout
        commit, date = subprocess.run(git + ["log", "-1", "--format=%H %cs"], check=True, capture_output=True,
                                      text=True).stdout.split()
        return text, commit, date
    except (subprocess.CalledProcessError, ValueError):
        path = source / name
        if not path.is_file():
            raise SystemExit(f"{source}: neither a git checkout of googlecolab/backend-info nor a folder "
                             f"with {name}") from None
        return path.read_text(encoding="utf-8"), "unknown", "unknown"


def python_version(os_info: str) -> str:
    """``3.12`` from the ``Python 3.12.13`` line of ``os-info-gpu.txt``."""
    found = re.search(r"^Python (\d+)\.(\d+)\.\d+", os_info, re.M)
    if not found:
        raise SystemExit(f"{OS_INFO}: no 'Python X.Y.Z' line")
    return f"{found.group(1)}.{found.group(2)}"


def pins(freeze: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line (URLs, editables and comments skipped)."""
    out = {}
    for line in freeze.splitlines():
        m = PIN.match(line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def refresh(backend_info: Path, out: Path = CONSTRAINTS) -> Path:
    freeze, commit, date = _read(backend_info, FREEZE)
    os_info = _read(backend_info, OS_INFO)[0]
    found = pins(freeze)
    if "torch" not in found:
        raise SystemExit(f"{FREEZE} at {commit}: no torch pin; is this the GPU runtime's freeze?")
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# Colab's GPU runtime: github.com/googlecolab/backend-info {FREEZE} at commit {commit} ({date}).",
              f"# Python {python_version(os_info)} (from {OS_INFO}). Written by scripts/colab_versions.py refresh;"
              " do not edit.",
              "# Local version tags (+cu128) are dropped: the Colab-like job installs PyPI/CPU builds."]
    out.write_text("\n".join(header + [f"{n}=={v}" for n, v in sorted(found.items())]) + "\n", encoding="utf-8")
    return out


def read_constraints(path: Path = CONSTRAINTS) -> tuple[dict[str, str], str]:
    """``(pins, python version)`` of a file :func:`refresh` wrote."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python scripts/colab_versions.py refresh --backend-info ...`")
    text = path.read_text(encoding="utf-8")
    found = re.search(r"^# Python (\d+\.\d+)", text, re.M)
    if not found:
        raise SystemExit(f"{path}: no '# Python X.Y' header line")
    return pins(text), found.group(1)


def install_sets() -> dict[str, str]:
    """notebook -> the ``.[extras]`` its install cell asks for."""
    out = {}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cell = json.loads(nb.read_text(encoding="utf-8"))["cells"][1]
        m = re.search(r'"install", "-q", "(\.\[[\w,]+\])"', "".join(cell["source"]))
        if not m:
            raise SystemExit(f"{nb.name}: no `pip install .[extras]` in its install cell")
        out[nb.stem] = m.group(1)
    return out


def requirements(extras: str) -> list[str]:
    """The requirements ``pip install .[a,b]`` resolves: the core and those extras (self-references expanded),
    read from pyproject.toml, so the check needs no build of the project itself (``--only-binary``)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out, todo, seen = list(project["dependencies"]), re.findall(r"[\w-]+", extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in project["optional-dependencies"][extra]:
            m = re.fullmatch(rf"{project['name']}\[([\w,-]+)\]", req)
            if m:
                todo += m.group(1).split(",")
            else:
                out.append(req)
    return sorted(set(out))


def satisfied_by(requirement: str, colab: dict[str, str]) -> bool:
    """Whether Colab's pinned version of ``requirement``'s package satisfies it (extras ignored)."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    version = colab.get(req.name.lower().replace("_", "-"))
    return version is not None and req.specifier.contains(version, prereleases=True)


def colab_upgrades(report: dict, colab: dict[str, str], python: str) -> dict[str, str]:
    """Colab packages whose pinned version a newly installed package's requirements reject:
    ``{"protobuf": "5.29.6 (onnx 1.23.2 needs protobuf>=6.31.1)"}``."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {**default_environment(), "extra": "", "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    out = {}
    for item in report["install"]:
        name = item["metadata"]["name"].lower().replace("_", "-")
        if name in colab:
            continue
        for spec in item["metadata"].get("requires_dist") or []:
            req = Requirement(spec)
            dep = req.name.lower().replace("_", "-")
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if dep in colab and not req.specifier.contains(colab[dep], prereleases=True):
                out[dep] = f"{colab[dep]} ({name} {item['metadata']['version']} needs {req})"
    return out


def wheel_dry_run(python: str, target: Path) -> list[str]:
    """The start of a ``pip install --dry-run`` that takes only wheels built for Colab's Python and platform."""
    return [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
            "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            *[x for p in PLATFORMS for x in ("--platform", p)], "--target", str(target)]


def pip_error(done: subprocess.CompletedProcess) -> str:
    """The last ``ERROR`` line pip printed (else its last line, else the exit code)."""
    lines = done.stderr.splitlines()
    err = [line for line in lines if line.startswith("ERROR")] or lines
    return err[-1] if err else str(done.returncode)


def check(path: Path = CONSTRAINTS) -> int:
    """Resolve every install set for Colab's Python with Colab's versions; 1 on any failure."""
    found, py = read_constraints(path)
    failed = 0
    by_set: dict[str, list[str]] = {}
    for notebook, extras in install_sets().items():
        by_set.setdefault(extras, []).append(notebook[:2])
    with tempfile.TemporaryDirectory() as tmp:
        for extras, notebooks in sorted(by_set.items()):
            what = f"{extras} (notebooks {', '.join(notebooks)})"
            # What Colab already has at a version the project accepts, pip leaves alone (jieba, say, has no
            # wheel at all: Colab ships it). The rest must resolve with wheels for Colab's Python.
            reqs = [r for r in requirements(extras) if not satisfied_by(r, found)]
            if not reqs:
                print(f"ok: {what}: Colab already has every requirement")
                continue
            cmd = [*wheel_dry_run(py, Path(tmp) / "t"), "--report", str(Path(tmp) / "report.json"),
                   "-c", str(path), *reqs]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                failed += 1
                print(f"FAILED: {what} for Python {py}: {pip_error(done)}")
                continue
            report = json.loads((Path(tmp) / "report.json").read_text(encoding="utf-8"))
            # In Colab the install cell runs unconstrained: pip takes the newest release of what is new
            # to the runtime, and upgrades a Colab package under the running kernel if that release
            # needs it (onnx 1.23 needs protobuf>=6.31). Resolve the same way and look for that.
            free = subprocess.run([*cmd[:cmd.index("-c")], *reqs], capture_output=True, text=True)
            if free.returncode == 0:
                newest = json.loads((Path(tmp) / "report.json").read_text(encoding="utf-8"))
                upgrades = colab_upgrades(newest, found, py)
                if upgrades:
                    failed += 1
                    print(f"FAILED: {what}: in Colab (unconstrained) pip would upgrade {upgrades}")
            chosen = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
                      for i in report["install"]}
            moved = {n: f"{found[n]} -> {v}" for n, v in chosen.items() if n in found and found[n] != v}
            kept = [n for n in KEEP if n in moved]
            if moved:  # constraints hold Colab's versions: a change means the set cannot live with them
                failed += 1
            print(f"{'FAILED' if moved else 'ok'}: {what} resolves for Python {py}: {len(reqs)} of "
                  f"{len(requirements(extras))} requirements not met by Colab, {len(chosen)} wheels "
                  f"({', '.join(sorted(n for n in chosen if n not in found)) or 'none'} new to Colab)"
                  + (f"; would change Colab's {moved}" + (f" (never: {kept})" if kept else "") if moved else ""))
    return 1 if failed else 0


def lower_bounds() -> list[str]:
    """``name==X`` for every ``name>=X`` the project declares (core and the data/train/serve/collect extras):
    what the lowest pass of the Colab-like job pins."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in ("data", "train", "serve", "collect"):
        reqs += project["optional-dependencies"][extra]
    found = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([\w.]+)(,<[\w.]+)?", req.strip())  # >=X or >=X,<Y
        if m:
            found[m.group(1).lower()] = m.group(3)
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def check_lower_bounds(python: str) -> int:
    """Every declared lower bound has a wheel for Colab's Python (one ``--no-deps`` dry run); 1 if not.
    A bound without one could never be what a Colab user gets, so the lowest pass would prove nothing."""
    wanted = [pin for pin in lower_bounds() if pin.split("==")[0] not in SDIST_ONLY]
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([*wheel_dry_run(python, Path(tmp) / "t"), "--no-deps", *wanted],
                              capture_output=True, text=True)
    if done.returncode:
        print(f"FAILED: a declared lower bound has no wheel for Python {python}: {pip_error(done)}"
              " (raise it in pyproject.toml to the first release with one)")
        return 1
    print(f"ok: all {len(wanted)} lower bounds have wheels for Python {python} "
          f"({', '.join(f'{n}: {why}' for n, why in SDIST_ONLY.items())})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("refresh", help="write constraints/colab-gpu.txt from a backend-info snapshot")
    r.add_argument("--backend-info", type=Path, required=True, help="clone or git dir of googlecolab/backend-info")
    sub.add_parser("check", help="resolve every notebook's install set for Colab's Python (needs PyPI)")
    args = p.parse_args(argv)
    if args.command == "refresh":
        out = refresh(args.backend_info)
        found, py = read_constraints(out)
        print(f"wrote {out.relative_to(ROOT)}: {len(found)} packages, Python {py}, "
              + ", ".join(f"{n} {found[n]}" for n in ("torch", "transformers", "numpy", "protobuf") if n in found))
        return 0
    return max(check(), check_lower_bounds(read_constraints()[1]))


if __name__ == "__main__":
    sys.exit(main())
