"""Resume: a run killed mid-epoch and resumed ends in exactly the state of an uninterrupted run."""

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lawclf.config import RunPaths, TrainConfig, read_model_meta
from lawclf.train import read_history, train

LEGAL = "起诉法院离婚合同赔偿律师欠款仲裁"
OTHER = "天气电影游戏手机旅游美食咖啡音乐"


def write_splits(run_dir: Path, seed: int = 0, n_train: int = 80, n_val: int = 24) -> None:
    """Made-up texts: legal ones draw from legal characters, others from everyday ones (lengths vary)."""
    rng = random.Random(seed)

    def row(i, label):
        chars = LEGAL if label else OTHER
        text = "".join(rng.choice(chars) for _ in range(rng.randint(4, 40)))
        return {"id": str(i), "text": text, "label": label, "source": "made-up"}

    splits = RunPaths(run_dir).splits
    splits.mkdir(parents=True)
    for name, n in (("train", n_train), ("validation", n_val), ("test", n_val)):
        rows = [row(i, i % 2) for i in range(n)]
        (splits / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")


def cfg_for(run_dir: Path, **kw) -> TrainConfig:
    base = dict(run_dir=str(run_dir), model_name="tiny", epochs=3, batch_size=8, max_len=32, learning_rate=3e-3,
                checkpoint_every=3, tiny_layers=1, tiny_hidden=32, tiny_heads=2, tiny_vocab_size=100, patience=0,
                keep_checkpoints=True)
    return TrainConfig(**{**base, **kw})


class Killed(Exception):
    pass


def kill_at(step: int):
    def callback(state):
        if state.global_step == step:
            raise Killed(f"killed at optimizer step {step}")
    return callback


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in {"samples_per_s", "epoch_seconds"}} for h in history]


def test_killed_twice_and_resumed_equals_uninterrupted(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    write_splits(ref)
    write_splits(cut)
    expected = train(cfg_for(ref))

    # 80 texts / batch 8 = 10 steps per epoch; checkpoints every 3 steps.
    with pytest.raises(Killed):
        train(cfg_for(cut), callbacks=[kill_at(5)])        # mid epoch 1, last checkpoint at step 3
    with pytest.raises(Killed):
        train(cfg_for(cut), callbacks=[kill_at(17)])       # mid epoch 2, last checkpoint at step 15
    got = train(cfg_for(cut))

    assert without_timing(got["history"]) == without_timing(expected["history"])
    assert got["best_epoch"] == expected["best_epoch"]
    for final in ("model", "checkpoints/latest"):
        a, b = weights(ref / final), weights(cut / final)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], atol=1e-6), f"{final}: {name} differs after resume"
    assert without_timing(read_history(cut)) == without_timing(read_history(ref))
    assert read_model_meta(cut / "model")["max_len"] == 32


def test_checkpoints_hold_full_state_and_finished_runs_start_afresh(tmp_path):
    write_splits(tmp_path)
    with pytest.raises(Killed):
        train(cfg_for(tmp_path, epochs=1), callbacks=[kill_at(4)])
    latest = RunPaths(tmp_path).checkpoints / "latest"
    names = {p.name for p in latest.iterdir()}
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json"} <= names
    assert any(n.startswith("random_states") for n in names)
    state = json.loads((latest / "trainer_state.json").read_text())
    assert (state["global_step"], state["step_in_epoch"], state["epoch"]) == (3, 3, 0)

    done = train(cfg_for(tmp_path, epochs=1))
    assert done["epochs_run"] == 1
    # A finished run is not resumed: running again trains from scratch to the same result.
    again = train(cfg_for(tmp_path, epochs=1))
    assert without_timing(again["history"]) == without_timing(done["history"])


def test_changed_config_does_not_resume_a_foreign_checkpoint(tmp_path, capsys):
    write_splits(tmp_path)
    with pytest.raises(Killed):
        train(cfg_for(tmp_path, epochs=1), callbacks=[kill_at(4)])
    out = train(cfg_for(tmp_path, epochs=1, learning_rate=1e-3))
    assert "resuming" not in capsys.readouterr().out
    assert out["history"][0]["optimizer_steps"] == 10


def test_fingerprint_depends_on_the_process_count(tmp_path):
    """A checkpoint written by 2 processes (per-process RNG states, a sharded sampler position)
    must not be resumed by 1 process, or the other way round."""
    from lawclf.checkpoints import run_fingerprint

    rows = [{"text": "合同纠纷", "label": 1}, {"text": "今天天气", "label": 0}]
    cfg = cfg_for(tmp_path)
    assert run_fingerprint(cfg, rows, None) == run_fingerprint(cfg, rows, None, processes=1)
    assert run_fingerprint(cfg, rows, None, processes=2) != run_fingerprint(cfg, rows, None, processes=1)
    assert run_fingerprint(cfg, rows[:1], None) != run_fingerprint(cfg, rows, None)


def test_a_finished_run_removes_its_checkpoints_unless_asked_to_keep_them(tmp_path):
    write_splits(tmp_path)
    done = train(cfg_for(tmp_path, epochs=1, keep_checkpoints=False))
    assert done["checkpoints_kept"] is False and not RunPaths(tmp_path).checkpoints.exists()
    assert (RunPaths(tmp_path).model / "model.safetensors").is_file()  # the best model stays
    with pytest.raises(Killed):  # an unfinished run keeps them: that is what resuming reads
        train(cfg_for(tmp_path, epochs=2, keep_checkpoints=False), callbacks=[kill_at(4)])
    assert (RunPaths(tmp_path).checkpoints / "latest" / "trainer_state.json").is_file()
