"""The package's shape: imports point one way, test harnesses stay out of the runtime,
notebook parameters match the configuration they feed."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from lawclf import config
from lawclf_dev import CHECKOUT as REPO_ROOT

PACKAGE = REPO_ROOT / "lib" / "lawclf"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """Every ``lawclf`` import of every module, at module level or inside a function."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "lawclf":
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert "lawclf.train" in graph and "lawclf.metrics" in graph["lawclf.evaluate"]  # the scan sees the package
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_runtime_modules_never_import_the_test_harnesses():
    graph = import_graph()
    offenders = {m for m, deps in graph.items() if not m.startswith("lawclf_dev")
                 and any(d.startswith("lawclf_dev") for d in deps)}
    assert not offenders


@pytest.mark.parametrize("module", ["lawclf.predict", "lawclf.serve", "lawclf.text", "lawclf.metrics",
                                    "lawclf.validation", "lawclf.microbatch", "lawclf.probes"])
def test_serving_side_modules_reach_neither_torch_nor_the_training_stages(module):
    graph = import_graph()
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    assert not seen & {"lawclf.train", "lawclf.inference", "lawclf.data", "lawclf.evaluate", "lawclf.modeling"}
    for m in seen:
        tree = ast.parse(_modules()[m].read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "torch" not in imported, m


# --------------------------------------------------------------------------- notebook parameters

#: notebook -> the config classes its parameters cell feeds.
NOTEBOOK_CONFIGS = {
    "00_collect_data": (config.CollectConfig,),
    "01_data_prep": (config.DataConfig,),
    "02_keyword_wordcloud": (config.KeywordConfig,),
    "03_train": (config.TrainConfig,),
    "04_evaluate": (config.EvalConfig,),
    "05_export_onnx": (config.ExportConfig,),
    "06_serve": (config.ServeConfig,),
    "07_screen": (config.ScreenConfig,),
    "08_distill": (config.DistillConfig,),
}
#: Parameters whose notebook value differs from the dataclass default on purpose.
DELIBERATE = {
    ("00_collect_data", "DB_URL"): "empty = RUN_DIR/collect/collect.db",
    ("00_collect_data", "OUT_DIR"): "empty = RUN_DIR/collect/data",
    ("00_collect_data", "NODES"): "the notebook's demo crawls three nodes; `lawclf collect` crawls none unless asked",
    ("07_screen", "DB_URL"): "empty = RUN_DIR/screen/screen.db",
    ("07_screen", "MODEL_DIR"): "empty = RUN_DIR/onnx",
    ("07_screen", "OUT_DIR"): "empty = RUN_DIR/screen",
    ("07_screen", "NODES"): "the demo walks the fake server's one node; `lawclf screen run` walks none unless asked",
}


def parameters_cell(name: str) -> dict[str, object]:
    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: one cell tagged 'parameters' expected"
    tree = ast.parse("".join(cells[0]["source"]))
    return {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name)}


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CONFIGS))
def test_notebook_parameters_match_the_dataclass_defaults(name):
    params = parameters_cell(name)
    mismatched = {}
    for cls in NOTEBOOK_CONFIGS[name]:
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key, value in params.items():
            if key.lower() in defaults and (name, key) not in DELIBERATE and value != defaults[key.lower()]:
                mismatched[key] = (value, defaults[key.lower()])
    assert not mismatched, f"{name}: notebook value vs dataclass default: {mismatched}"


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CONFIGS))
def test_papermill_parses_every_parameter_line(name):
    papermill = pytest.importorskip("papermill")
    seen = set(papermill.inspect_notebook(str(REPO_ROOT / "notebooks" / f"{name}.ipynb")))
    assert seen == set(parameters_cell(name))  # a comment with a second '=' makes papermill skip a line


def test_training_and_threshold_choices_are_notebook_parameters():
    assert {"RECIPE", "RECIPE_NEGATIVES", "RECIPE_POSITIVES", "NEGATIVES_PER_SOURCE", "HARD_FRACTION",
            "NOISE_THRESHOLD", "OOF_FOLDS"} <= set(parameters_cell("03_train"))
    assert {"THRESHOLD_STRATEGY", "MAX_SOURCE_FPR", "MIN_SOURCE_ROWS"} <= set(parameters_cell("04_evaluate"))


def test_nbrun_passes_each_notebook_only_the_parameters_it_declares():
    pytest.importorskip("papermill")
    from lawclf_dev.nbrun import notebook_path, parameters_for

    passed, ignored = parameters_for(notebook_path("04"), {"RUN_DIR": "r", "MODEL_NAME": "tiny",
                                                           "THRESHOLD_STRATEGY": "fpr_cap"})
    assert passed == {"RUN_DIR": "r", "THRESHOLD_STRATEGY": "fpr_cap"} and ignored == ["MODEL_NAME"]
    assert "MODEL_NAME" in parameters_for(notebook_path("03"), {"MODEL_NAME": "tiny"})[0]


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CONFIGS))
def test_the_colab_install_cell_works_in_a_running_kernel(name):
    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    cell = next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "code" and "google.colab" in "".join(c["source"]))
    assert "pip install -q -e" not in cell  # an editable install is invisible to a running kernel until a restart
    assert 'sys.path[:0] = [os.path.join(SRC, "lib"), os.path.join(SRC, "dev")]' in cell
    assert "notebooks]" not in cell  # papermill/ipykernel could replace Colab's own kernel packages
    install = [line for line in cell.splitlines() if '"pip", "install"' in line]
    assert len(install) == 1 and install[0].lstrip().startswith("step(")  # a failed install stops the notebook
    assert "torch" not in install[0] and not re.search(r"^\s*[%!]", cell, re.M)  # Colab's CUDA torch stays; no magics
    assert cell.count("https://github.com/") == 1 and "REPO_URL, SRC]" in cell  # one clone address per notebook
    assert 'os.environ.get("LAWCLF_REPO_URL"' in cell  # the Colab-like CI job points it at a local clone
    if name[:2] in {"01", "02", "03", "04", "05"}:  # they draw Chinese text
        assert "fonts-wqy-microhei" in cell and "apt-get -qq update" in cell


def _install_cell(name: str) -> str:
    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    return next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "code" and "google.colab" in "".join(c["source"]))


def _run_install_cell(name: str, tmp_path, repo_url: str, **env: str):
    """The install cell as Colab runs it (a stand-in google.colab imported), in a fresh interpreter."""
    import subprocess
    import sys

    code = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n" + _install_cell(name)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "LAWCLF_REPO_URL": repo_url, "LAWCLF_COLAB_ROOT": str(tmp_path), **env})


@pytest.mark.parametrize("name", ["01_data_prep", "06_serve"])
def test_a_wrong_repository_address_stops_the_install_cell_with_one_line(name, tmp_path):
    done = _run_install_cell(name, tmp_path, str(tmp_path / "no-such-repo"))
    assert done.returncode == 1 and not (tmp_path / "lawclf").exists()
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line: the step and git's own reason
    assert done.stderr.startswith(f"安装在“git clone {tmp_path / 'no-such-repo'}”这一步失败：fatal:")


def test_a_failed_pip_step_is_named_and_stops_before_the_font(tmp_path):
    import subprocess

    src = tmp_path / "lawclf"  # a "clone" whose package cannot be installed
    src.mkdir()
    (src / "pyproject.toml").write_text("[project]\nname = 'broken'\nversion = 'x'\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    done = _run_install_cell("03_train", tmp_path, "unused", PIP_NO_INDEX="1")
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("安装在“pip install .[data,train]”这一步失败：ERROR")


def test_every_clone_address_is_the_project_repository():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    repo = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
    for name in NOTEBOOK_CONFIGS:
        assert f'"{repo}.git"' in _install_cell(name), name
        assert f"colab.research.google.com/github/{repo.removeprefix('https://github.com/')}/blob/" in (
            REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"), name


def test_environment_yml_installs_what_the_pip_extras_install():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    import yaml

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = set(project["dependencies"])
    for extra in ("data", "train", "serve", "collect", "notebooks"):
        wanted |= set(project["optional-dependencies"][extra])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == wanted
    assert not any(str(d).startswith(("torch", "pytorch")) for d in env["dependencies"] + pip)  # torch: the user's build


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CONFIGS))
def test_every_notebook_finds_its_run_folder_on_drive_and_checks_its_prerequisites(name):
    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    codes = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    params = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert parameters_cell(name)["USE_DRIVE"] is True
    after = "".join(nb["cells"][params + 1]["source"])  # the first cell after the parameters (and papermill's)
    assert "RUN_DIR = colab.run_dir(RUN_DIR, use_drive=USE_DRIVE)" in after
    from lawclf.colab import PREREQUISITES

    if name[:2] in PREREQUISITES:
        assert f'colab.require(RUN_DIR, "{name[:2]}")' in after
    assert sum("colab.run_dir(" in c for c in codes) == 1


def test_set_repo_rewrites_every_badge_and_clone_address(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("set_repo", REPO_ROOT / "scripts" / "set_repo.py")
    set_repo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(set_repo)
    assert set_repo.main(["--check"]) == 0  # every notebook and the README agree with pyproject's [project.urls]
    assert set_repo.project_repo() == "lawclf/lawclf"
    for path in set_repo.files():
        new = set_repo.rewrite(path.read_text(encoding="utf-8"), "someone/fork", "dev")
        assert "lawclf/lawclf" not in new.replace("ghcr.io/lawclf/lawclf", "")
        if path.suffix == ".ipynb":
            assert "github/someone/fork/blob/dev/notebooks/" in new and "https://github.com/someone/fork.git" in new


def test_one_font_instruction_everywhere():
    from lawclf.fonts import HOW_TO_GET_ONE

    installed = {m for name in NOTEBOOK_CONFIGS for m in re.findall(r"install -y (fonts-[\w-]+)", _install_cell(name))}
    assert installed == {"fonts-wqy-microhei"}
    assert "install fonts-wqy-microhei" in HOW_TO_GET_ONE
    told = [HOW_TO_GET_ONE] + [p.read_text(encoding="utf-8") for p in (REPO_ROOT / "notebooks").glob("*.ipynb")]
    told += [p.read_text(encoding="utf-8") for p in (REPO_ROOT / "docs").glob("*.md")]
    assert not any(re.search(r"install\S* (-\S+ )*fonts-(?!wqy-microhei)", t) for t in told)


def test_the_runtime_package_holds_no_harness():
    """lib/lawclf (what both images copy) has no test harness or workshop code; lawclf_dev lives in dev/."""
    root = REPO_ROOT / "lib" / "lawclf"
    modules = sorted(str(f.relative_to(root)) for f in root.rglob("*.py") if "__pycache__" not in f.parts)
    assert not [m for m in modules if m.startswith("testing/") or m in ("nbrun.py", "bench.py")], modules
    for module in modules:
        text = (root / module).read_text(encoding="utf-8")
        assert "import lawclf_dev" not in text and "from lawclf_dev" not in text, module
    for dockerfile in ("deploy/Dockerfile", "deploy/screen.Dockerfile"):
        sources = re.findall(r"^COPY (?:--\S+ )*(\S+)", (REPO_ROOT / dockerfile).read_text(), re.M)
        assert "lib" in sources and not {"dev", "tests", "benchmarks", "notebooks", "."} & set(sources), (dockerfile, sources)
    assert "!dev/" not in (REPO_ROOT / ".dockerignore").read_text().split()


def test_long_modules_say_why_at_their_top():
    """No runtime module over ~400 lines unless its docstring says why (the house rule in docs/DEVELOPING.md)."""
    import ast as ast_

    root = REPO_ROOT / "lib" / "lawclf"
    unexplained = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 420 and "~400 lines" not in (ast_.get_docstring(ast_.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(root)}: {text.count(chr(10))} lines")
    assert not unexplained, unexplained
