"""The distillation stage's parts: which layers a student takes, its losses, its inputs and settings."""

from __future__ import annotations

import json

import pytest
import torch

from lawclf.config import ConfigError, DistillConfig
from lawclf.distill import (
    DistillError,
    distill_loss,
    layer_map,
    read_unlabelled,
    soft_loss,
    student_eval_config,
    student_from_teacher,
)
from lawclf.losses import FocalLoss


def small_bert(layers: int = 4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("teacher,student,expected", [
    (12, 4, [2, 5, 8, 11]), (12, 6, [1, 3, 5, 7, 9, 11]), (12, 3, [3, 7, 11]), (4, 2, [1, 3]), (2, 1, [1]),
])
def test_a_student_takes_evenly_spaced_layers_ending_with_the_last(teacher, student, expected):
    assert layer_map(teacher, student) == expected


@pytest.mark.parametrize("student", [0, 4, 5])
def test_a_student_must_have_fewer_layers_than_its_teacher(student):
    with pytest.raises(DistillError, match="fewer than the teacher's 4 layers"):
        layer_map(4, student)


def test_the_student_is_the_teacher_with_only_the_chosen_layers():
    teacher = small_bert(4)
    student, mapping = student_from_teacher(teacher, 2)
    assert mapping == [1, 3] and student.config.num_hidden_layers == 2
    assert teacher.config.num_hidden_layers == 4  # the teacher's own config is untouched
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    student.eval()  # no dropout
    with torch.no_grad():
        got = student(input_ids=ids, attention_mask=mask).logits
        teacher.bert.encoder.layer = torch.nn.ModuleList([teacher.bert.encoder.layer[i] for i in mapping])
        want = teacher(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want)  # embeddings, the two layers, pooler and head all copied


def test_soft_loss_is_zero_only_when_the_student_agrees_with_the_teacher():
    t = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    for kind in ("kl", "mse"):
        assert soft_loss(t.clone(), t, kind, 2.0).abs().max() < 1e-6
        assert (soft_loss(t.flip(1), t, kind, 2.0)[0] > 0.1)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert soft_loss(s, t, "mse", 2.0).tolist() == pytest.approx([(1 + 1) / 2, (0.25 + 0.25) / 2])


def test_kl_is_scaled_by_t_squared_so_its_size_does_not_vanish_with_temperature():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, -3.0]])
    # without the T² factor the loss at T=8 would be tiny next to T=1; with it, of the same order
    ratio = float(soft_loss(s, t, "kl", 8.0) / soft_loss(s, t, "kl", 1.0))
    assert 0.1 < ratio < 10


def test_unlabelled_texts_only_follow_the_teacher():
    cfg = DistillConfig(soft_weight=0.5)
    hard = FocalLoss(alpha=None, gamma=0.0)
    student, teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    soft = soft_loss(student, teacher, "kl", cfg.temperature).mean()
    unlabelled = distill_loss(student, teacher, torch.tensor([-1, -1]), hard, cfg)
    torch.testing.assert_close(unlabelled, soft)
    mixed = distill_loss(student, teacher, torch.tensor([1, -1]), hard, cfg)
    torch.testing.assert_close(mixed, 0.5 * soft + 0.5 * hard.per_example(student[:1], torch.tensor([1])).mean())
    only_teacher = distill_loss(student, teacher, torch.tensor([1, 0]), hard, DistillConfig(soft_weight=1.0))
    torch.testing.assert_close(only_teacher, soft)


def test_unlabelled_files_are_read_deduplicated_and_kept_apart_from_the_splits(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False)
                                              for t in ["借钱不还怎么办？", "今天吃什么", "  ", "今天吃什么"]) + "\n",
                                    encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "测试集里的一句话", "label": 1}, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    texts, counts = read_unlabelled(f"{folder}, {tmp_path / 'b.jsonl'}", exclude={"测试集里的一句话"})
    assert texts == ["借钱不还怎么办?", "今天吃什么"]  # normalised as the data stage does (NFKC)
    assert counts == {"files": 2, "lines": 5, "in_splits": 1, "duplicates": 1, "empty": 1, "used": 2}
    assert len(read_unlabelled(str(folder), set(), limit=1)[0]) == 1


@pytest.mark.parametrize("content,message", [
    ('{"text": "好"}\n{"text": 没有引号}\n', r"b\.jsonl:2: bad JSON"),
    ('{"text": "好"}\n["not", "an object"]\n', r"b\.jsonl:2: expected a JSON object"),
    ('{"body": "no text"}\n', r"b\.jsonl:1: expected a JSON object with a string \"text\""),
])
def test_a_bad_unlabelled_line_names_its_file_and_line(tmp_path, content, message):
    (tmp_path / "b.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(DistillError, match=message):
        read_unlabelled(str(tmp_path / "b.jsonl"), set())


def test_a_missing_unlabelled_path_or_an_empty_folder_is_named(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        read_unlabelled(str(tmp_path / "nowhere.jsonl"), set())
    with pytest.raises(DistillError, match="holds no"):
        read_unlabelled(str(tmp_path), set())


def test_settings_fail_naming_the_field_and_the_student_folder_follows_the_layers():
    with pytest.raises(ConfigError, match="DistillConfig.soft_weight"):
        DistillConfig(soft_weight=1.5)
    with pytest.raises(ConfigError, match="DistillConfig.soft_loss"):
        DistillConfig(soft_loss="cosine")
    cfg = DistillConfig(run_dir="runs/big/")
    assert cfg.layers_for(12) == 4 and cfg.layers_for(2) == 1 and cfg.layers_for(4) == 1
    assert cfg.student_dir(4) == "runs/big-student4"
    assert DistillConfig(student_layers=6).layers_for(12) == 6
    assert DistillConfig(student_run_dir="elsewhere").student_dir(4) == "elsewhere"


def test_the_student_is_evaluated_as_its_teacher_was():
    recorded = {"eval_config": {"threshold_strategy": "fpr_cap", "max_source_fpr": 0.02, "combine": "mean",
                                "not_a_field": 1}}
    cfg = student_eval_config("runs/s", recorded)
    assert (cfg.run_dir, cfg.threshold_strategy, cfg.max_source_fpr, cfg.combine) == ("runs/s", "fpr_cap", 0.02, "mean")
    older = {"threshold_choice": {"strategy": "target_precision", "target_precision": 0.9, "threshold": 0.7}}
    cfg = student_eval_config("runs/s", older)  # a teacher evaluated before eval_config was recorded
    assert (cfg.threshold_strategy, cfg.target_precision, cfg.combine) == ("target_precision", 0.9, "auto")
