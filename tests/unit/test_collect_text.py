"""Pure parts of the collect stage: text cleaning, token bucket, back-off and Retry-After."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lawclf.collect import split_list
from lawclf.collect.jsonl import clean_text
from lawclf.collect.v2ex import TokenBucket, V2EXClient
from lawclf_dev.fake_v2ex import FakeClock


@pytest.mark.parametrize("title, body, expected", [
    ("标题", "", "标题"),
    ("  多余   空白 ", "第一行\n\n\t第二行", "多余 空白 第一行 第二行"),
    ("", "<p>你好&amp;再见</p><br/><div>第二段</div>", "你好&再见 第二段"),
    ("", "<script>alert(1)</script>正文", "正文"),
    ("求助", "**加粗** 和 `代码` 和 ~~删除~~", "求助 加粗 和 代码 和 删除"),
    ("", "看 [这篇文章](https://example.com/a) 和 ![图](https://x/y.png)", "看 这篇文章 和 图"),
    ("", "链接 https://example.com/path?q=1 之后", "链接 之后"),
    ("", "# 标题\n> 引用\n- 列表一\n1. 列表二\n---\n结尾", "标题 引用 列表一 列表二 结尾"),
    ("代码", "前面\n```python\nprint('x')\n```\n后面", "代码 前面 后面"),
])
def test_clean_text_strips_html_and_markdown(title, body, expected):
    assert clean_text(title, body) == expected


def test_split_list():
    assert split_list(" python, career,,apple ") == ["python", "career", "apple"]
    assert split_list("") == []


def test_token_bucket_spaces_requests_evenly():
    clock = FakeClock()
    bucket = TokenBucket(120, clock=clock, sleep=clock.sleep)  # v1: one request per 30 s
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[0] == 0.0
    assert waits[1:] == pytest.approx([30.0] * 4)
    clock.sleep(300)  # idle time refills at most `burst` tokens, not ten
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(30.0)


def test_token_bucket_rejects_zero_rate():
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_default_budget_follows_api_version():
    assert V2EXClient().bucket.rate * 3600 == pytest.approx(120)
    assert V2EXClient(token="t").bucket.rate * 3600 == pytest.approx(600)
    assert V2EXClient(token="t").session.headers["Authorization"] == "Bearer t"


def test_backoff_is_bounded_exponential_with_jitter():
    client = V2EXClient(backoff_base=2.0, backoff_max=10.0, rng=random.Random(0))
    draws = [[client._backoff(a) for _ in range(200)] for a in range(5)]
    caps = [2, 4, 8, 10, 10]
    for samples, cap in zip(draws, caps):
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > 0.8 * cap  # jitter spreads over the whole range
    assert len(set(draws[2])) > 100


def test_retry_after_seconds_http_date_and_reset_header():
    clock = FakeClock(1_700_000_000.0)
    client = V2EXClient(clock=clock)
    assert client._retry_after({"Retry-After": "12"}) == 12.0
    assert client._retry_after({"Retry-After": "Tue, 14 Nov 2023 22:14:20 GMT"}) == pytest.approx(1_700_000_060 - 1_700_000_000)
    assert client._retry_after({"X-Rate-Limit-Reset": str(1_700_000_045)}) == pytest.approx(45)
    assert client._retry_after({}) is None
    assert client._retry_after({"Retry-After": "soon"}) is None  # unreadable: our own back-off applies



_MARKUP = st.sampled_from(["<p>", "</p>", "<br/>", "**", "`", "# ", "\n> ", "\n- ", "[链接](http://x.y/z)",
                           "&amp;", "\n```\ncode\n```\n", " ", "\t", "\n\n"])
_HAN = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x4E80), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_MARKUP, _HAN), max_size=20), _HAN)
def test_clean_text_is_one_trimmed_line_without_markup(parts, title):
    out = clean_text(title, "".join(parts))
    assert out.startswith(title)
    assert "\n" not in out and "\t" not in out and "  " not in out and out == out.strip()
    assert not any(m in out for m in ("<p>", "<br", "**", "`", "](", "&amp;", "code"))
    # Every Chinese character of the input survives: only markup and code are removed.
    han = "".join(p for p in parts if all(0x4E00 <= ord(c) <= 0x4E80 for c in p))
    assert all(ch in out for ch in han)
