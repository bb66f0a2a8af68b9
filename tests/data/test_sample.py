"""Data expectations on the embedded sample (data/sample) and the packaged probe questions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lawclf.sample import CHECKOUT_SAMPLE_DIR as SAMPLE_DATA_DIR
from lawclf.sample import cli, load_probes, write_sample
from lawclf.text import dedup_key, normalise_text

FILES = {"legal": 1, "nonlegal": 0}
EVERYDAY_WORDS = ("借钱", "咨询", "怎么办", "请问")


@pytest.fixture(scope="module")
def sample() -> dict[str, list[dict]]:
    out = {}
    for name in FILES:
        with (SAMPLE_DATA_DIR / f"{name}.jsonl").open(encoding="utf-8") as fh:
            out[name] = [json.loads(line) for line in fh]
    return out


def test_schema_and_labels(sample):
    for name, label in FILES.items():
        for row in sample[name]:
            assert set(row) == {"text", "label", "source"}
            assert row["label"] == label
            assert isinstance(row["text"], str) and row["text"].strip()
            assert row["source"].startswith("sample/")


def test_at_least_350_per_class(sample):
    assert len(sample["legal"]) >= 350
    assert len(sample["nonlegal"]) >= 350


def test_texts_clean_and_long_enough(sample):
    """No stray whitespace and within the default length filter, so prepare() keeps every row."""
    for rows in sample.values():
        for row in rows:
            assert row["text"] == row["text"].strip() and "  " not in row["text"]
            assert 5 <= len(normalise_text(row["text"])) <= 512


def test_only_the_deliberate_duplicates(sample):
    """Each file holds exactly the duplicates the generator adds for notebook 01 to find, half of them
    exact after normalisation, half near (other punctuation)."""
    from lawclf.sample import EXACT_DUPLICATES, NEAR_DUPLICATES

    keys = Counter(dedup_key(r["text"]) for rows in sample.values() for r in rows)
    assert sum(n - 1 for n in keys.values() if n > 1) == EXACT_DUPLICATES + NEAR_DUPLICATES
    exact = Counter(normalise_text(r["text"]) for rows in sample.values() for r in rows)
    assert sum(n - 1 for n in exact.values() if n > 1) == EXACT_DUPLICATES


def test_misfiled_rows_are_few_known_and_in_the_other_file(sample):
    from lawclf.sample import MISFILED_PER_FILE, misfiled

    key = misfiled()
    assert len(key) == 2 * MISFILED_PER_FILE
    filed = {r["text"]: r["label"] for rows in sample.values() for r in rows}
    assert all(filed[k["text"]] == k["label"] == 1 - k["true_label"] for k in key)
    assert len(key) / len(filed) < 0.03  # a few, as in real collections


def test_hand_written_genres_are_one_of_a_kind(sample):
    from lawclf.sample import genre as genre_of

    for genre in (genre_of("sample/legal-plain-words"), genre_of("sample/everyday-legal-words")):
        assert "{" not in "".join(genre.templates) and len(set(genre.templates)) == genre.count
        assert genre.source in {r["source"] for rows in sample.values() for r in rows}


def test_the_dirty_file_has_one_line_of_each_kind(tmp_path):
    from lawclf.config import DataConfig
    from lawclf.data import prepare

    summary = prepare(DataConfig(labelled_path=str(SAMPLE_DATA_DIR / "dirty.jsonl"), lenient=True,
                                 run_dir=str(tmp_path)), plots=False)
    assert summary["rejected_by_reason"] == {"bad_json": 1, "missing_label": 1, "missing_text": 1,
                                             "non_string_text": 1, "not_object": 1, "unknown_label": 1}
    c = summary["counts"]
    assert (c["blank_lines"], c["too_short"], c["too_long"], c["exact_duplicates"], c["near_duplicates"],
            c["conflict_texts"]) == (1, 1, 1, 1, 1, 1)


def test_sources_are_per_genre(sample):
    sources = Counter(r["source"] for r in sample["nonlegal"])
    assert {"sample/everyday-question", "sample/tech-forum", "sample/review", "sample/life-question",
            "sample/everyday-legal-words"} == set(sources)  # misfiled rows carry the source of the file they are in
    assert min(sources.values()) >= 35  # enough rows for a per-source false-positive rate


@pytest.mark.parametrize("word", EVERYDAY_WORDS)
def test_everyday_negatives_use_legal_sounding_words(sample, word):
    """The non-legal side must contain everyday questions with words frequent in legal questions."""
    hits = [r for r in sample["nonlegal"] if word in r["text"]]
    assert len(hits) >= 8, f"only {len(hits)} non-legal texts contain {word!r}"
    # ... and the legal side uses them too, so the word alone decides nothing
    assert any(word in r["text"] for r in sample["legal"])


def test_legal_side_includes_questions_without_legal_keywords(sample):
    keywords = ("法", "律师", "起诉", "维权", "合同", "赔偿", "仲裁")
    plain = [r for r in sample["legal"] if not any(k in r["text"] for k in keywords)]
    assert len(plain) >= 50


def test_probes_shape_and_required_questions():
    probes = load_probes()
    assert 30 <= len(probes) <= 60
    assert {p["label"] for p in probes} == {0, 1}
    assert all(set(p) == {"text", "label", "kind"} for p in probes)
    texts = {p["text"]: p["label"] for p in probes}
    for issue_6 in ("借钱", "我想咨询下", "朋友问我借钱,我到底要不要借给他呢?", "考不上大学,我该怎么办?"):
        assert texts.get(issue_6) == 0


def test_probes_are_out_of_sample(sample):
    sample_keys = {dedup_key(r["text"]) for rows in sample.values() for r in rows}
    leaked = [p["text"] for p in load_probes() if dedup_key(p["text"]) in sample_keys]
    assert leaked == []


def test_generator_reproduces_the_committed_files(tmp_path):
    paths = write_sample(tmp_path)
    for name in (*FILES, "dirty"):
        assert paths[name].read_bytes() == (SAMPLE_DATA_DIR / f"{name}.jsonl").read_bytes(), \
            f"data/sample/{name}.jsonl is stale: run `lawclf sample` and commit"


def test_other_seed_gives_other_sample(tmp_path):
    paths = write_sample(tmp_path, seed=7)
    assert paths["legal"].read_bytes() != (SAMPLE_DATA_DIR / "legal.jsonl").read_bytes()


def test_sample_cli_writes_both_files(tmp_path, capsys):
    assert cli(["--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "legal.jsonl").read_bytes() == (SAMPLE_DATA_DIR / "legal.jsonl").read_bytes()
    assert "394 rows (legal)" in capsys.readouterr().out
    assert (tmp_path / "dirty.jsonl").read_bytes() == (SAMPLE_DATA_DIR / "dirty.jsonl").read_bytes()


def test_outside_a_checkout_the_sample_is_written_once_into_the_cache(tmp_path, monkeypatch):
    """An installed wheel has no data/sample: the default data is written from the packaged templates
    into $LAWCLF_CACHE_DIR, byte for byte the committed files, and reused."""
    from lawclf import sample

    monkeypatch.setattr(sample, "CHECKOUT_SAMPLE_DIR", tmp_path / "no-checkout" / "data" / "sample")
    monkeypatch.setenv("LAWCLF_CACHE_DIR", str(tmp_path / "cache"))
    first = sample.sample_data_dir()
    assert first.parent == tmp_path / "cache" and first.name.startswith("sample-")
    for name in ("legal", "nonlegal", "dirty"):
        assert (first / f"{name}.jsonl").read_bytes() == (SAMPLE_DATA_DIR / f"{name}.jsonl").read_bytes()
    stamp = (first / "legal.jsonl").stat().st_mtime_ns
    assert sample.sample_data_dir() == first and (first / "legal.jsonl").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no scratch folder left
