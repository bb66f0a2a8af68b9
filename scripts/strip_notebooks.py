"""Strip outputs and execution counts from notebooks (they are committed clean).

    python scripts/strip_notebooks.py            # all notebooks/*.ipynb
    python scripts/strip_notebooks.py --check    # exit 1 if any notebook has outputs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def strip(path: Path, check: bool) -> bool:
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            dirty = True
            cell["outputs"], cell["execution_count"] = [], None
    if dirty and not check:
        path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return dirty


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if not a.startswith("--")] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = [p for p in paths if strip(p, check)]
    for p in dirty:
        print(("has outputs: " if check else "stripped: ") + str(p))
    return 1 if (check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
