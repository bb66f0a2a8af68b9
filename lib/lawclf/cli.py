"""``lawclf <command> ...``: one subcommand per stage, over the same functions the notebooks call.

Each command lives in its stage module as ``cli(argv) -> int``; only the module of the
command being run is imported, so ``lawclf predict`` and ``lawclf serve`` never import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from lawclf.config import ConfigError

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("lawclf.sample", "write the embedded sample data set (data/sample)"),
    "prepare": ("lawclf.data", "load, validate, de-duplicate and split the data (notebook 01)"),
    "keywords": ("lawclf.keywords", "keyword statistics and word clouds (notebook 02)"),
    "train": ("lawclf.train", "fine-tune the classifier (notebook 03)"),
    "distill": ("lawclf.distill", "distil a trained model into a small student (notebook 08)"),
    "evaluate": ("lawclf.evaluate", "evaluate on the test split, choose the threshold (notebook 04)"),
    "export": ("lawclf.export", "export to ONNX, validate, quantise (notebook 05)"),
    "predict": ("lawclf.predict_cli", "classify texts or a JSONL file with the ONNX model"),
    "serve": ("lawclf.serve", "run the HTTP API and demo page (development server)"),
    "collect": ("lawclf.collect", "collect data: V2EX crawler, Q&A importer, JSONL export"),
    "screen": ("lawclf.screen", "the screening job: new posts scored on a schedule, digest, review page"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lawclf <command> [options]   (lawclf <command> --help for options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"lawclf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return int(module.cli(rest) or 0)
    except ConfigError as exc:  # a bad parameter: say which, no traceback
        print(f"lawclf {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
