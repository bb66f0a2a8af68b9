"""Collator, length-grouped sampler, MAX_LEN choice, optimiser groups: the parts that make training fast."""

import random

import numpy as np
import pytest
import torch

from lawclf.batching import LengthGroupedBatchSampler, choose_max_len
from lawclf.config import TrainConfig
from lawclf.inference import PadCollator
from lawclf.train import param_groups, resolve_learning_rate, resolve_mixed_precision


def _item(n, label=0, weight=None):
    item = {"input_ids": list(range(2, 2 + n)), "token_type_ids": [0] * n, "attention_mask": [1] * n, "labels": label}
    if weight is not None:
        item["weight"] = weight
    return item


def test_collator_pads_to_the_longest_and_masks_padding():
    batch = PadCollator(pad_token_id=0)([_item(3), _item(5, 1), _item(1)])
    assert batch["input_ids"].shape == (3, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]]
    assert batch["input_ids"][0].tolist() == [2, 3, 4, 0, 0]
    assert batch["labels"].tolist() == [0, 1, 0]
    assert "weight" not in batch


def test_collator_fixed_length_multiple_and_weights():
    assert PadCollator(0, pad_to=16)([_item(3)])["input_ids"].shape == (1, 16)
    assert PadCollator(0, multiple_of=8)([_item(3), _item(9)])["input_ids"].shape == (2, 16)
    batch = PadCollator(0)([_item(2, weight=0.5), _item(2, weight=2.0)])
    assert batch["weight"].dtype == torch.float32 and batch["weight"].tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="shorter"):
        PadCollator(0, pad_to=2)([_item(3)])


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(5, 300) for _ in range(n)]


def test_sampler_yields_every_index_once_per_epoch():
    lengths = _lengths(1003)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=1, mega_batch_mult=8)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1003))
        assert len(batches) == len(sampler) == 63
        assert all(len(b) <= 16 for b in batches)


def _mean_spread(sampler, lengths):
    return np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in sampler])


def test_grouped_batches_are_length_homogeneous_and_padding_shrinks():
    lengths = _lengths()
    grouped = LengthGroupedBatchSampler(lengths, 16, seed=0, mega_batch_mult=16)
    plain = LengthGroupedBatchSampler(lengths, 16, seed=0, group_by_length=False)
    assert _mean_spread(grouped, lengths) < 0.25 * _mean_spread(plain, lengths)

    def padded_tokens(s):
        return sum(len(b) * max(lengths[i] for i in b) for b in s)

    assert padded_tokens(grouped) < 0.75 * padded_tokens(plain)
    first = list(grouped)[0]
    assert max(lengths[i] for i in first) == max(lengths)  # longest batch first: OOM shows at step 1


def test_sampler_is_seeded_and_epochs_differ():
    lengths = _lengths()
    a, b = LengthGroupedBatchSampler(lengths, 16, seed=3), LengthGroupedBatchSampler(lengths, 16, seed=3)
    assert list(a) == list(b)
    assert list(a) != list(LengthGroupedBatchSampler(lengths, 16, seed=4))
    epoch0 = list(a)
    a.set_epoch(1)
    assert list(a) != epoch0


def test_sampler_ignores_the_global_rng():
    sampler = LengthGroupedBatchSampler(_lengths(200), 16, seed=0)
    torch.manual_seed(1)
    first = list(sampler)
    torch.manual_seed(2)
    assert list(sampler) == first


def test_incomplete_batch_comes_last():
    for seed in range(5):
        batches = list(LengthGroupedBatchSampler(_lengths(1003), 16, seed=seed))
        assert len(batches[-1]) == 1003 % 16 and all(len(b) == 16 for b in batches[:-1])


def test_weighted_sampling_follows_the_weights_and_is_seeded():
    lengths = _lengths(400)
    weights = [0.0] * 200 + [1.0] * 100 + [3.0] * 100
    sampler = LengthGroupedBatchSampler(lengths, 16, seed=0, weights=weights, num_samples=4000)
    drawn = [i for b in sampler for i in b]
    assert len(drawn) == 4000 and len(sampler) == 250
    assert all(i >= 200 for i in drawn)
    heavy = sum(i >= 300 for i in drawn) / len(drawn)
    assert 0.70 < heavy < 0.80  # 3:1 weights -> 75 %
    assert list(sampler) == list(LengthGroupedBatchSampler(lengths, 16, seed=0, weights=weights, num_samples=4000))
    with pytest.raises(ValueError, match="weights"):
        LengthGroupedBatchSampler(lengths, 16, weights=[1.0])
    with pytest.raises(ValueError, match="not all 0"):
        LengthGroupedBatchSampler([5, 6], 16, weights=[0.0, 0.0])


def test_sampler_drop_last():
    sampler = LengthGroupedBatchSampler(list(range(1, 41)), 16, drop_last=True)
    assert len(list(sampler)) == len(sampler) == 2


@pytest.mark.parametrize("lengths,expected", [
    ([10] * 100, 16),                 # floor
    (list(range(1, 101)), 112),       # 98th percentile 98.02 -> 112
    ([40] * 99 + [2000], 48),         # one outlier does not decide
    ([1000] * 10, 512),               # cap
])
def test_choose_max_len(lengths, expected):
    assert choose_max_len(lengths) == expected


def test_choose_max_len_rounds_to_multiple_and_rejects_empty():
    assert choose_max_len([33] * 10, multiple=16) == 48
    assert choose_max_len([33] * 10, multiple=8) == 40
    with pytest.raises(ValueError, match="no lengths"):
        choose_max_len([])


def test_param_groups_exclude_bias_and_layernorm_from_decay():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all("LayerNorm" not in names[id(p)] and not names[id(p)].endswith("bias") for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_default_learning_rate_per_model_kind():
    assert resolve_learning_rate(TrainConfig(model_name="tiny")) == 1e-3
    assert resolve_learning_rate(TrainConfig(model_name="bert-base-chinese")) == 2e-5
    assert resolve_learning_rate(TrainConfig(model_name="tiny", learning_rate=5e-4)) == 5e-4


def test_mixed_precision_auto_is_fp32_without_cuda():
    expected = "fp16" if torch.cuda.is_available() else "no"
    assert resolve_mixed_precision("auto") == expected
    assert resolve_mixed_precision("no") == "no"
    with pytest.raises(ValueError):
        resolve_mixed_precision("fp8")


def test_padding_stats_by_hand():
    from lawclf.batching import padding_stats

    lengths = [10, 10, 50, 50]
    stats = padding_stats(lengths, batch_size=2, max_len=64, seed=0)
    assert stats["pad_to_max_len"]["positions"] == 4 * 64
    assert stats["pad_to_max_len"]["padding_fraction"] == pytest.approx(1 - 120 / 256)
    # grouped: [50, 50] and [10, 10] -> no padding at all
    assert stats["dynamic_grouped"]["positions"] == 120 and stats["dynamic_grouped"]["padding_fraction"] == 0
    assert stats["dynamic"]["positions"] >= 120
    assert padding_stats([100], 1, 64)["pad_to_max_len"]["padding_fraction"] == 0  # truncated to MAX_LEN


def test_length_report():
    from lawclf.batching import length_report

    rep = length_report(list(range(1, 101)), max_len=96)
    assert rep["n"] == 100 and rep["max"] == 100 and rep["p50"] == 50
    assert rep["truncated_fraction"] == pytest.approx(0.04)
