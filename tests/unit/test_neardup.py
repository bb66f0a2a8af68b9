"""Near-duplicates by character trigrams, and the split that keeps each group in one split."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from lawclf.config import DataConfig
from lawclf.data import Record, load_summary, prepare, split_near_duplicates, stratified_split
from lawclf.neardup import jaccard, near_duplicate_groups, near_duplicate_pairs, trigrams

TEMPLATES = ["朋友借了我{}块钱一直不还，我该怎么办才好呢", "请问{}号线地铁最晚一班车是几点从起点站发车",
             "公司连续{}个月拖欠工资不发，可以申请劳动仲裁吗", "周末想带孩子去公园玩，{}岁的小朋友适合去哪里"]


def template_texts(n: int, seed: int = 0) -> list[str]:
    """Fillings of a few templates (near-duplicates of each other) mixed with one-off texts."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        if i % 3 == 0:
            texts.append("".join(rng.choice("天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏") for _ in range(20)))
        else:
            texts.append(rng.choice(TEMPLATES).format(rng.randint(1, 99)))
    return list(dict.fromkeys(texts))


def brute_force_pairs(texts: list[str], overlap: float) -> set[tuple[int, int]]:
    grams = [trigrams(t) for t in texts]
    return {(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts)) if jaccard(grams[a], grams[b]) >= overlap}


def test_trigrams_use_the_dedup_key_and_short_texts_are_one_gram():
    assert trigrams("借钱，不还！") == trigrams("借钱不还") == frozenset({"借钱不", "钱不还"})
    assert trigrams("你好") == frozenset({"你好"})
    assert jaccard(frozenset(), frozenset()) == 0.0


@pytest.mark.parametrize(("overlap", "recall"), [(0.6, 0.85), (0.8, 0.99)])
def test_minhash_finds_the_pairs_a_brute_force_finds(overlap, recall):
    texts = template_texts(300)
    found = {(a, b) for a, b, _ in near_duplicate_pairs(texts, overlap, exact_up_to=0)}
    expected = brute_force_pairs(texts, overlap)
    assert expected, "the corpus must contain near-duplicates for this test to mean anything"
    assert found <= expected  # every reported pair is checked exactly
    # Banding misses a true pair with probability 1 - (1 - s**4)**16: ~2e-4 at 0.8, ~0.1 at 0.6.
    assert len(found) >= recall * len(expected)


def test_small_corpora_get_every_pair():
    texts = template_texts(300)
    assert {(a, b) for a, b, _ in near_duplicate_pairs(texts, 0.6)} == brute_force_pairs(texts, 0.6)


def test_groups_are_transitive_and_singletons_stay_alone():
    texts = ["公司拖欠工资三个月不发可以仲裁吗", "公司拖欠工资四个月不发可以仲裁吗", "公司拖欠工资四个月不发能仲裁吗",
             "今天天气很好适合出去散步"]
    # Overlaps: 0-1 0.65, 1-2 0.59, 0-2 0.35: 0 and 2 meet only through 1.
    groups = near_duplicate_groups(texts, overlap=0.55)
    assert groups[0] == groups[1] == groups[2] == 0 and groups[3] == 3


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        near_duplicate_pairs(["甲乙丙丁"], 0)


def records(texts: list[str]) -> list[Record]:
    return [Record(text=t, label=i % 2, source="s", file="f.jsonl", line=i + 1) for i, t in enumerate(texts)]


def test_split_keeps_each_group_in_one_split():
    rows = records(template_texts(400))
    groups = near_duplicate_groups([r.text for r in rows], 0.8)
    assert max(Counter(groups).values()) > 1
    splits = stratified_split(rows, 0.1, 0.2, seed=3, groups=groups)
    where = {r.text: s for s, part in splits.items() for r in part}
    for gid in set(groups):
        assert len({where[r.text] for r, g in zip(rows, groups) if g == gid}) == 1
    assert sorted(r.text for part in splits.values() for r in part) == sorted(r.text for r in rows)


def test_split_without_near_duplicates_is_the_plain_split():
    rows = records([f"第{i}条完全不同的句子" + "甲乙丙丁戊己庚辛"[i % 8] * (i % 5 + 1) for i in range(60)])
    plain = stratified_split(rows, 0.1, 0.1, seed=7)
    grouped = stratified_split(rows, 0.1, 0.1, seed=7, groups=list(range(len(rows))))
    assert plain == grouped


@pytest.fixture
def template_corpus(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    texts = template_texts(600, seed=1)
    for name, label in (("legal", 1), ("nonlegal", 0)):
        part = [t for i, t in enumerate(texts) if i % 2 == label]
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in part), encoding="utf-8")
    return folder


def test_prepare_leaves_no_near_twin_across_splits(template_corpus, tmp_path):
    grouped, plain = tmp_path / "grouped", tmp_path / "plain"
    prepare(DataConfig(data_dir=str(template_corpus), run_dir=str(grouped)), plots=False)
    prepare(DataConfig(data_dir=str(template_corpus), run_dir=str(plain), near_duplicate_overlap=0), plots=False)
    assert load_summary(grouped)["near_duplicate_groups"]["groups"] > 0
    assert load_summary(plain)["near_duplicate_groups"] == {"groups": 0, "rows": 0, "largest": 0}
    assert not any(split_near_duplicates(grouped)["pairs"].values())
    leaked = split_near_duplicates(plain)
    assert sum(leaked["pairs"].values()) > 0 and leaked["examples"][0]["overlap"] >= 0.8
