"""benchmarks/build_pool.py on a snapshot made here: what is used, refused, dropped and recorded."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lawclf.config import DataConfig
from lawclf.data import prepare
from lawclf.text import dedup_key
from lawclf_dev import CHECKOUT as REPO_ROOT


@pytest.fixture(scope="module")
def build_pool():
    spec = importlib.util.spec_from_file_location("build_pool", REPO_ROOT / "benchmarks" / "build_pool.py")
    module = sys.modules.setdefault("build_pool", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


def snapshot(mirror: Path, repo: str, files: dict[str, str]) -> str:
    """A git snapshot laid out as fetch lays it (``owner+name/repo/.git``); returns its commit."""
    work = mirror / repo.replace("/", "+") / "repo"
    work.mkdir(parents=True)
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text, encoding="utf-8")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(["git", "-C", str(work), *cmd], check=True, env=env)
    return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def lines(*texts: str) -> str:
    return "".join(json.dumps({"sentence": t}, ensure_ascii=False) + "\n" for t in texts)


def test_pool_keeps_new_texts_and_records_every_check(build_pool, tmp_path):
    mirror, out = tmp_path / "mirror", tmp_path / "pool"
    commit = snapshot(mirror, "someone/everyday", {"data/parenting/q.json": lines(
        "孩子晚上总是哭闹怎么办", "孩子晚上总是哭闹怎么办", "短", "宝宝几个月可以吃辅食", "这家酒店的早餐很好吃")})
    snapshot(mirror, "someone/question-pairs", {"train.json": lines("这家酒店的早餐很好吃", "今天天气怎么样呢")})
    shared = {dedup_key("这家酒店的早餐很好吃")}
    read = build_pool.jsonl_fields("sentence")
    sources = (
        build_pool.Source("someone/everyday", ("data/parenting/q.json",), 0, "parenting", "MIT", read),
        build_pool.Source("someone/question-pairs", ("train.json",), 0, "copy", "none", read),
        build_pool.Source("thu-coai/PsyQA", ("x.json",), 0, "reserved", "none", read),
        build_pool.Source("someone/not-fetched", ("x.json",), 1, "legal", "none", read),
    )
    manifest = build_pool.build(sources, mirror, out, shared, max_shared_overlap=0.3, seed=1)

    used, copy, reserved, missing = manifest["sources"]
    assert used["status"] == "used" and used["commit"] == commit and used["group"] == "everyday:parenting"
    assert used["checks"] == {"rows_read": 5, "outside_length_range": 1, "overlap_with_shared_corpus": 1,
                              "overlap_fraction": 0.25, "max_shared_overlap": 0.3, "duplicates_dropped": 2}
    assert copy["status"].startswith("refused: overlaps the shared corpus") and copy["rows_kept"] == 0
    assert reserved["status"].startswith("refused: reserved") and "commit" not in reserved
    assert missing["status"].startswith("missing") and "fetch github:someone/not-fetched" in missing["status"]
    assert manifest["totals"] == {"legal": 0, "non-legal": 2, "sources_used": 1, "sources_listed": 4}

    rows = [json.loads(x) for x in (out / "nonlegal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["text"] for r in rows) == ["孩子晚上总是哭闹怎么办", "宝宝几个月可以吃辅食"]
    assert {r["source"] for r in rows} == {f"someone/everyday:data/parenting/q.json@{commit}"}
    assert (out / "legal.jsonl").read_text(encoding="utf-8") == ""
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest


def test_a_file_path_naming_a_sampled_data_set_is_refused_unread(build_pool, tmp_path):
    src = build_pool.Source("someone/mirror-of-everything", ("LCQMC/train.txt",), 0, "q", "none",
                            build_pool.jsonl_fields("sentence"))
    manifest = build_pool.build((src,), tmp_path / "no-mirror", tmp_path / "pool", set(), 0.01, 1)
    assert manifest["sources"][0]["status"].startswith("refused")


def test_the_pool_reads_as_extra_data_dirs_of_prepare(build_pool, tmp_path):
    mirror, pool = tmp_path / "mirror", tmp_path / "pool"
    snapshot(mirror, "someone/everyday", {"q.json": lines("孩子晚上总是哭闹怎么办", "宝宝几个月可以吃辅食")})
    src = build_pool.Source("someone/everyday", ("q.json",), 0, "parenting", "MIT", build_pool.jsonl_fields("sentence"))
    build_pool.build((src,), mirror, pool, set(), 0.01, 1)
    summary = prepare(DataConfig(run_dir=str(tmp_path / "run"), extra_data_dirs=str(pool)), plots=False)
    assert summary["per_source"]  # the sample plus the pool's source
    assert any("someone/everyday:q.json@" in s for s in summary["per_source"])


def test_the_pool_is_never_written_inside_the_repository(build_pool):
    with pytest.raises(SystemExit, match="inside the repository"):
        build_pool.main(["--out", str(REPO_ROOT / "runs" / "pool")])


def test_readers_of_the_listed_formats(build_pool):
    exam = json.dumps([{"input": "Question: 甲与乙签订房屋买卖合同后，乙拒绝付款，甲能否解除合同并要求赔偿损失？\nA. 能\nB. 不能"},
                       {"input": "Question: 下列说法正确的是?\nA. x"}], ensure_ascii=False).encode()
    assert list(build_pool.exam_stems(exam)) == ["甲与乙签订房屋买卖合同后，乙拒绝付款，甲能否解除合同并要求赔偿损失？"]
    cmrc = json.dumps([{"qas": [{"query_text": "长城有多长？"}]}], ensure_ascii=False).encode()
    assert list(build_pool.cmrc_questions(cmrc)) == ["长城有多长？"]
    kd = json.dumps([{"messages": [{"message": "故宫门票多少钱？"}, {"message": "60元。"}, {"message": "几点开门？"}]}],
                    ensure_ascii=False).encode()
    assert list(build_pool.kdconv_user_turns(kd)) == ["故宫门票多少钱？", "几点开门？"]
    covid = ("id=1\nhttps://x\n\nDescription\n疾病： 咳嗽\n病情描述： 咳嗽两周了。\n希望获得的帮助： 要不要去医院？\n"
             "\nDialogue\n医生：\n多久了？\n\nid=2\nDescription\n病情描述： 发烧一天。\n\nDialogue\n").encode()
    assert list(build_pool.covid_consultations(covid)) == ["咳嗽两周了。 要不要去医院？", "发烧一天。"]
    assert build_pool.clean_text(" 请问\u3000Ａ股\n怎么买 ") == "请问 A股 怎么买"
