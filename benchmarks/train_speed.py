"""Training speed: dynamic padding + length-grouped batches vs padding every text to MAX_LEN.

Same data, same model, same seed, one process: ``lawclf.train.train`` runs once per
mode (interleaved, repeated; the median counts, because this machine's speed drifts)
and reports the training samples/s it measured (validation and saving excluded).

    python benchmarks/train_speed.py                         # tiny model on the embedded sample
    python benchmarks/train_speed.py --run-dir runs/real --max-train-samples 2000 --repeats 3

The baseline is the original recipe: every text padded to MAX_LEN, batches in random
order. MAX_LEN is the same for all modes (``--max-len``, default: chosen from the data).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lawclf.config import DataConfig, RunPaths, TrainConfig

MODES = {
    "pad to MAX_LEN, random batches (original)": dict(dynamic_padding=False, group_by_length=False),
    "dynamic padding, random batches": dict(dynamic_padding=True, group_by_length=False),
    "dynamic padding + length-grouped batches": dict(dynamic_padding=True, group_by_length=True),
}


def ensure_splits(run_dir: Path) -> None:
    if not RunPaths(run_dir).split_file("train").exists():
        from lawclf.data import prepare

        prepare(DataConfig(run_dir=str(run_dir)), plots=False)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {cpu})"
    return f"{dev}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="", help="a run folder with splits/ (default: the embedded sample)")
    parser.add_argument("--model-name", default="tiny")
    parser.add_argument("--max-len", type=int, default=0, help="0 = choose from the data (as training does)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="lawclf-train-speed-"))
    source = Path(args.run_dir) if args.run_dir else work / "source"
    ensure_splits(source)
    speeds: dict[str, list[float]] = {name: [] for name in MODES}
    max_len = None
    try:
        for rep in range(args.repeats):
            for name, flags in MODES.items():
                run = work / f"run-{rep}-{len(speeds[name])}-{abs(hash(name)) % 10_000}"
                shutil.copytree(RunPaths(source).splits, RunPaths(run).splits)
                cfg = TrainConfig(run_dir=str(run), model_name=args.model_name, max_len=args.max_len,
                                  batch_size=args.batch_size, epochs=args.epochs, checkpoint_every=0,
                                  patience=0, max_train_samples=args.max_train_samples, **flags)
                summary = train_quietly(cfg)
                max_len = summary["max_len"]
                # Epoch 1 includes warm-up effects (allocator, first long batch); use the later ones.
                hist = summary["history"][1:] or summary["history"]
                speeds[name].append(statistics.median(h["samples_per_s"] for h in hist))
                shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\ntraining speed, {args.model_name}, batch {args.batch_size}, MAX_LEN {max_len}, "
          f"median of {args.repeats} runs x {args.epochs} epochs")
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    base = statistics.median(speeds[next(iter(MODES))])
    width = max(map(len, MODES))
    for name, values in speeds.items():
        med = statistics.median(values)
        print(f"  {name.ljust(width)}  {med:8.1f} samples/s  x{med / base:.2f}   (runs: "
              + ", ".join(f"{v:.0f}" for v in values) + ")")
    best = statistics.median(speeds[list(MODES)[-1]])
    print(f"speed-up of dynamic padding + length grouping over pad-to-MAX_LEN: {best / base:.2f}x (goal >= 2x)")
    return 0


def train_quietly(cfg: TrainConfig) -> dict:
    """Run training with its per-epoch prints (stdout) silenced; progress bars are on stderr anyway."""
    from contextlib import redirect_stdout
    from io import StringIO

    from lawclf.train import train

    with redirect_stdout(StringIO()):
        return train(cfg)


if __name__ == "__main__":
    sys.exit(main())
