"""Long texts, short texts and the combined model: truncation, the n-gram part, combining, length buckets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lawclf import config
from lawclf.baselines import TfidfCharLR
from lawclf.config import EvalConfig, ExportConfig, RunPaths, TrainConfig
from lawclf.metrics import length_bucket, per_length_metrics
from lawclf.modeling import TinySpec
from lawclf.ngram import (
    NGRAM_FILE,
    NgramLoadError,
    NgramModel,
    char_ngrams,
    check_combine,
    choose_combination,
    combine_scores,
)
from lawclf.predict import ModelLoadError, Predictor
from lawclf.robustness import short_forms
from lawclf.text import normalise_text
from lawclf.truncation import check_truncation, head_room, truncate_ids

LEGAL = ["公司拖欠工资三个月了，我可以去劳动仲裁吗？", "醉驾怎么判", "试用期可以不交社保吗", "房东不退押金能起诉吗？",
         "离婚后孩子的抚养费一般怎么算？", "交通事故对方全责但是不赔钱怎么办", "被公司辞退有没有赔偿",
         "借给朋友的钱不还，没有借条能告他吗？", "合同违约金约定过高可以请求法院调低吗", "工伤认定需要哪些材料"]
OTHER = ["今天晚上吃什么比较好", "这款手机的拍照效果怎么样？", "周末去哪里爬山人少一点", "考不上大学我该怎么办",
         "朋友问我借钱，要不要借给他呢？", "推荐几本适合入门的编程书", "猫咪不吃东西是怎么回事", "明天会下雨吗",
         "我想咨询下这个键盘好不好用", "Python 的列表和元组有什么区别？"]


# --------------------------------------------------------------------------- truncation
def test_head_is_what_hugging_face_truncation_does():
    from lawclf.modeling import build_tiny

    tokenizer, _ = build_tiny(LEGAL + OTHER, TinySpec(layers=1, hidden=32, heads=2, vocab_size=500))
    text = "".join(LEGAL)
    full = tokenizer(text)["input_ids"]
    for max_len in (8, 17, 64):
        assert truncate_ids(full, max_len, "head") == tokenizer(text, truncation=True, max_length=max_len)["input_ids"]


def test_head_tail_keeps_a_third_of_the_room_from_the_start_and_the_rest_from_the_end():
    ids = ["[CLS]", *range(100), "[SEP]"]
    cut = truncate_ids(ids, 32, "head_tail")
    assert len(cut) == 32 and cut[0] == "[CLS]" and cut[-1] == "[SEP]"
    assert head_room(32) == 10 and cut[1:11] == list(range(10)) and cut[11:-1] == list(range(80, 100))
    assert truncate_ids(ids[:20], 32, "head_tail") == ids[:20]  # short texts are untouched
    assert truncate_ids(ids, 2, "head_tail") == ["[CLS]", "[SEP]"]
    with pytest.raises(ValueError, match="truncation must be one of head, head_tail"):
        truncate_ids(ids, 32, "tail")
    with pytest.raises(ValueError, match="lawclf_meta.json: field 'truncation'"):
        check_truncation("middle", "lawclf_meta.json")


def test_a_bad_truncation_setting_fails_naming_it():
    with pytest.raises(ValueError, match="truncation"):
        TrainConfig(truncation="tail")
    with pytest.raises(ValueError, match="short_forms"):
        TrainConfig(short_forms=1.5)
    with pytest.raises(ValueError, match="combine"):
        EvalConfig(combine="max")


def test_training_evaluation_and_the_predictor_cut_a_long_text_identically(onnx_dirs):
    from lawclf.inference import encode
    from lawclf.modeling import load_pretrained

    long_post = "我和前夫离婚三年了，孩子一直跟着我，" * 4 + "他半年没给抚养费，请问我能起诉他吗？"
    predictor = Predictor(onnx_dirs["combined"], threads=1)
    tokenizer, _ = load_pretrained(str(onnx_dirs["model_dir"]))
    # the Predictor normalises first (NFKC), as the data stage did for the training texts
    torch_side = encode(tokenizer, [normalise_text(long_post)], max_len=MAX_LEN, truncation="head_tail")[0]["input_ids"]
    served = predictor.encode([long_post])[0]
    assert served == torch_side and len(served) == MAX_LEN
    assert tokenizer.decode(served[-4:-2]).replace(" ", "") == "他吗"  # the question, kept from the end


# --------------------------------------------------------------------------- the n-gram part
def test_ngram_model_scores_exactly_as_scikit_learn():
    fitted = TfidfCharLR(min_df=1).fit(LEGAL + OTHER, [1] * len(LEGAL) + [0] * len(OTHER))
    part = fitted.to_ngram_model()
    texts = LEGAL + OTHER + ["ABC  abc 起诉", "", "   ", "😀未见过的字"]
    np.testing.assert_allclose(part.predict_proba(texts), fitted.predict_proba(texts), rtol=0, atol=1e-12)
    assert char_ngrams("Ab  c", (1, 2)) == ["a", "b", " ", "c", "ab", "b ", " c"]


def test_ngram_model_round_trips_as_plain_arrays(tmp_path):
    part = TfidfCharLR(min_df=1).fit(LEGAL + OTHER, [1] * len(LEGAL) + [0] * len(OTHER)).to_ngram_model()
    path = part.save(tmp_path / NGRAM_FILE)
    with np.load(path, allow_pickle=False) as arrays:  # no pickle: a model file cannot run code
        assert {"vocabulary", "idf", "coef", "intercept"} <= set(arrays.files)
    again = NgramModel.load(path)
    np.testing.assert_allclose(again.predict_proba(LEGAL), part.predict_proba(LEGAL), atol=1e-6)  # float32 on disk
    assert again.describe() == part.describe() and again.describe()["features"] == len(part.vocabulary)
    with pytest.raises(NgramLoadError, match=str(tmp_path / "missing.npz")):
        NgramModel.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(NgramLoadError, match="bad.npz"):
        NgramModel.load(tmp_path / "bad.npz")


# --------------------------------------------------------------------------- combining
def test_combine_scores_by_method():
    m, g = np.array([0.9, 0.2, 0.6]), np.array([0.5, 0.4, 0.1])
    np.testing.assert_allclose(combine_scores(m, g, {"method": "mean", "weight": 0.25}), 0.25 * m + 0.75 * g)
    assert combine_scores(m, g, {"method": "model"}) is not None
    np.testing.assert_allclose(combine_scores(m, None, None), m)
    np.testing.assert_allclose(combine_scores(m, g, {"method": "ngram"}), g)
    stacked = combine_scores(m, g, {"method": "stack", "coef": [1.0, 0.0], "intercept": 0.0})
    np.testing.assert_allclose(stacked, m, atol=1e-9)  # the model's logit alone, back through the sigmoid
    with pytest.raises(ValueError, match="needs the n-gram part"):
        combine_scores(m, None, {"method": "mean", "weight": 0.5})


@pytest.mark.parametrize("spec, match", [
    ({"method": "max"}, "'method' is one of"),
    ("mean", "must be an object"),
    ({"method": "mean"}, "needs a 'weight' in"),
    ({"method": "mean", "weight": 1.5}, "needs a 'weight' in"),
    ({"method": "stack", "coef": [1.0]}, "needs 'coef'"),
    ({"method": "stack", "coef": [1.0, float("nan")], "intercept": 0.0}, "needs 'coef'"),
])
def test_a_bad_combine_spec_is_named(spec, match):
    with pytest.raises(ValueError, match=match):
        check_combine(spec, "m/lawclf_meta.json")


@pytest.mark.parametrize("seed", range(5))
def test_auto_is_never_worse_than_the_better_part_on_validation(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    # two noisy views of the label, each better on a different half of the rows
    m = np.clip(y * 0.6 + rng.normal(0.2, 0.25 + 0.3 * (np.arange(300) < 150), 300), 0.001, 0.999)
    g = np.clip(y * 0.6 + rng.normal(0.2, 0.25 + 0.3 * (np.arange(300) >= 150), 300), 0.001, 0.999)
    spec = choose_combination("auto", m, g, y, seed=seed)
    best_part = max(average_precision_score(y, m), average_precision_score(y, g))
    assert spec["validation_pr_auc"] >= best_part - 1e-12
    assert average_precision_score(y, combine_scores(m, g, spec)) >= best_part - 0.02  # stack: judged out-of-fold
    assert {c["method"] for c in spec["candidates"]} == {"mean", "stack"} and len(spec["candidates"]) == 12
    check_combine({k: v for k, v in spec.items()}, "chosen")


def test_auto_ties_go_to_the_even_mean_and_named_methods_are_kept():
    y = np.array([0, 0, 1, 1] * 10)
    perfect = y * 0.8 + 0.1
    assert choose_combination("auto", perfect, perfect, y)["weight"] == 0.5
    assert choose_combination("mean", perfect, perfect, y) == {"method": "mean", "weight": 0.5}
    assert choose_combination("model", perfect, perfect, y) == {"method": "model"}
    assert choose_combination("stack", perfect, perfect, y)["method"] == "stack"


# --------------------------------------------------------------------------- the served combined model
MAX_LEN = 24


@pytest.fixture(scope="module")
def onnx_dirs(tmp_path_factory) -> dict[str, Path]:
    """One exported random tiny model with an n-gram part and a chosen combination, and one without."""
    from lawclf.export import export
    from lawclf_dev.bench import save_random_model

    root = tmp_path_factory.mktemp("combined")
    run = root / "run"
    model_dir = RunPaths(run).model
    save_random_model(model_dir, TinySpec(layers=1, hidden=32, heads=2, vocab_size=3000), max_len=MAX_LEN)
    part = TfidfCharLR(min_df=1).fit(LEGAL + OTHER, [1] * len(LEGAL) + [0] * len(OTHER)).to_ngram_model()
    part.save(model_dir / NGRAM_FILE)
    config.write_model_meta(model_dir, truncation="head_tail", ngram=part.describe(), threshold=0.4,
                            combine={"method": "mean", "weight": 0.3})
    export(ExportConfig(run_dir=str(run)))
    return {"combined": RunPaths(run).onnx, "model_dir": model_dir}


def test_the_predictor_serves_the_combined_score(onnx_dirs):
    predictor = Predictor(onnx_dirs["combined"], threads=1)
    assert predictor.combine == {"method": "mean", "weight": 0.3} and predictor.parts == ["model", "ngram"]
    assert predictor.truncation == "head_tail"
    texts = LEGAL[:3] + OTHER[:3]
    parts = predictor.predict_parts(texts)
    np.testing.assert_allclose(predictor.predict_proba(texts), 0.3 * parts["model"] + 0.7 * parts["ngram"], atol=1e-6)
    ngram = NgramModel.load(onnx_dirs["combined"] / NGRAM_FILE)
    np.testing.assert_allclose(parts["ngram"], ngram.predict_proba([normalise_text(t) for t in texts]), atol=1e-6)
    assert [r["is_legal"] for r in predictor.predict(texts)] == list(predictor.predict_proba(texts) >= 0.4)


def test_the_combined_model_serves_without_scikit_learn(onnx_dirs):
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from lawclf.predict import Predictor\n"
            f"p = Predictor({str(onnx_dirs['combined'])!r}, threads=1)\n"
            "print(p.parts, round(float(p.predict_proba(['醉驾怎么判'])[0]), 4))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "['model', 'ngram']" in out.stdout


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_missing_or_bad_ngram_part_or_combine_fails_at_load_naming_the_file(onnx_dirs, tmp_path):
    gone = _copy(onnx_dirs["combined"], tmp_path / "gone")
    (gone / NGRAM_FILE).unlink()
    with pytest.raises(ModelLoadError, match=str(gone / NGRAM_FILE)):
        Predictor(gone, threads=1)
    bad = _copy(onnx_dirs["combined"], tmp_path / "bad")
    meta = json.loads((bad / config.MODEL_META_FILE).read_text(encoding="utf-8"))
    (bad / config.MODEL_META_FILE).write_text(json.dumps({**meta, "combine": {"method": "mean", "weight": 2}}))
    with pytest.raises(ModelLoadError, match=r"lawclf_meta.json: combine 'mean' needs a 'weight'"):
        Predictor(bad, threads=1)
    (bad / config.MODEL_META_FILE).write_text(json.dumps({**meta, "truncation": "tail"}))
    with pytest.raises(ModelLoadError, match="field 'truncation'"):
        Predictor(bad, threads=1)


def test_a_model_dir_from_before_the_combined_model_still_loads(onnx_dirs, tmp_path):
    old = _copy(onnx_dirs["combined"], tmp_path / "old")
    (old / NGRAM_FILE).unlink()
    meta = json.loads((old / config.MODEL_META_FILE).read_text(encoding="utf-8"))
    for key in ("truncation", "combine", "ngram"):
        meta.pop(key)
    (old / config.MODEL_META_FILE).write_text(json.dumps(meta))
    predictor = Predictor(old, threads=1)
    assert predictor.truncation == "head" and predictor.parts == ["model"] and predictor.ngram is None
    long_post = "一二三四五六七八九十" * 5
    assert predictor.encode([long_post])[0][1:-1] == predictor.tokenizer.encode(long_post).ids[1:MAX_LEN - 1]
    np.testing.assert_allclose(predictor.predict_proba(OTHER[:2]), predictor.predict_parts(OTHER[:2])["model"])


def test_export_refuses_a_model_whose_ngram_part_is_missing_before_any_work(onnx_dirs, tmp_path):
    from lawclf.export import export

    run = tmp_path / "run"
    model_dir = _copy(onnx_dirs["model_dir"], RunPaths(run).model)
    (model_dir / NGRAM_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="names an n-gram part but .*ngram.npz is missing"):
        export(ExportConfig(run_dir=str(run)))
    assert not RunPaths(run).onnx.exists()


def test_evaluate_names_the_setting_when_the_model_has_no_ngram_part(tmp_path):
    from lawclf.evaluate import _ngram_part

    paths = RunPaths(tmp_path)
    assert _ngram_part(paths, {}, "auto") is None  # an old model: the model alone
    assert _ngram_part(paths, {"ngram": {"file": NGRAM_FILE}}, "model") is None
    with pytest.raises(ValueError, match="EvalConfig.combine"):
        _ngram_part(paths, {}, "mean")


# --------------------------------------------------------------------------- short forms and length buckets
def _rows():
    legal = [{"id": f"l{i}", "text": "我在公司上班三年了，老板一直不给交社保，现在辞职了。请问我可以要求公司补缴社保并赔偿吗？",
              "label": 1, "source": "forum"} for i in range(1)]
    legal += [{"id": f"l{i + 1}", "text": t * 3, "label": 1, "source": "forum"} for i, t in enumerate(LEGAL)]
    other = [{"id": f"o{i}", "text": t * 3, "label": 0, "source": "chat"} for i, t in enumerate(OTHER)]
    return legal + other


def test_short_forms_come_from_both_sides_keep_labels_and_are_new():
    rows = _rows()
    added = short_forms(rows, 1.0, seed=1)
    assert added and {r["label"] for r in added} == {0, 1}  # both sides: length is no label
    by_id = {r["id"]: r for r in rows}
    texts = {r["text"] for r in rows}
    for r in added:
        origin = by_id[r["id"].removesuffix("#short")]
        assert r["label"] == origin["label"] and r["source"] == origin["source"]
        assert r["text"] in origin["text"] and len(r["text"]) < len(origin["text"]) and r["text"] not in texts
    legal_short = next(r["text"] for r in added if r["id"] == "l0#short")
    assert "社保" in legal_short  # the sentence that leans legal, not the story before it
    assert short_forms(rows, 1.0, seed=1) == added and short_forms(rows, 0.0) == []
    assert len(short_forms(rows, 0.5, seed=1)) < len(added)


def test_length_buckets():
    assert [length_bucket(n) for n in (0, 14, 15, 29, 30, 60, 119, 120, 5000)] == [
        "<15", "<15", "15-29", "15-29", "30-59", "60-119", "60-119", ">=120", ">=120"]
    rows = [{"text": "短", "label": 1}, {"text": "短短", "label": 0}, {"text": "长" * 130, "label": 1},
            {"text": "长" * 125, "label": 1}]
    out = per_length_metrics(rows, [0.9, 0.8, 0.2, 0.7], 0.5)
    assert list(out) == ["<15", ">=120"]  # shortest first, empty buckets left out
    assert out["<15"]["recall"] == 1.0 and out["<15"]["fpr"] == 1.0 and out[">=120"]["recall"] == 0.5
