"""Point the notebooks and README at a fork: the "Open in Colab" badges and the clone address.

    python scripts/set_repo.py yourname/lawclf            # badges → github/yourname/lawclf/blob/main
    python scripts/set_repo.py yourname/lawclf --branch dev
    python scripts/set_repo.py yourname/lawclf --check    # exit 1 if anything still points elsewhere

Each notebook's install cell holds the clone address once (``REPO_URL``, which the
``LAWCLF_REPO_URL`` environment variable overrides); its badge holds the repository and
branch. ``pyproject.toml``'s ``[project.urls] Repository`` is the one address they are
checked against (``--check`` without a repository checks them against it). This script rewrites
all of them — every notebook, the README's notebook table, ``pyproject.toml`` — so a fork is one
command. Nothing else changes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w./-]+?)/notebooks/")
CLONE = re.compile(r"https://github\.com/([\w.-]+/[\w.-]+?)\.git")
URLS = re.compile(r'^Repository = "https://github\.com/([\w.-]+/[\w.-]+)"$', re.M)


def files() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "README.md", ROOT / "pyproject.toml"]


def project_repo() -> str:
    """OWNER/NAME of ``[project.urls] Repository`` in pyproject.toml."""
    found = URLS.search((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    if not found:
        raise SystemExit("pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return found.group(1)


def rewrite(text: str, repo: str, branch: str) -> str:
    text = BADGE.sub(f"colab.research.google.com/github/{repo}/blob/{branch}/notebooks/", text)
    text = URLS.sub(f'Repository = "https://github.com/{repo}"', text)
    return CLONE.sub(f"https://github.com/{repo}.git", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repo", nargs="?", default="", help="OWNER/NAME on GitHub (default with --check: pyproject's)")
    p.add_argument("--branch", default="main")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file needs rewriting")
    args = p.parse_args(argv)
    if not args.repo:
        if not args.check:
            p.error("give the repository (OWNER/NAME) to point everything at")
        args.repo = project_repo()
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
        p.error(f"repo {args.repo!r}: expected OWNER/NAME")
    stale = []
    for path in files():
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, args.repo, args.branch)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "would change" if args.check else "changed"
    print(f"{verb} {len(stale)} file(s)" + "".join(f"\n  {s}" for s in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
