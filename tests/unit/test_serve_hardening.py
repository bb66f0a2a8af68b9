"""Serving that refuses what it cannot serve well: bad model metadata, invisible texts, NaN, overload."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time

import pytest
from _serve_fakes import FakePredictor

from lawclf import serve
from lawclf.config import ServeConfig
from lawclf.microbatch import MicroBatcher, Overloaded
from lawclf.predict import ModelLoadError
from lawclf.validation import ApiError, has_visible_character, validate_text


@pytest.mark.slow
def test_a_model_folder_with_bad_metadata_does_not_load(exported_run_dir, tmp_path):
    from lawclf.config import RunPaths
    from lawclf.predict import Predictor

    onnx = shutil.copytree(RunPaths(exported_run_dir).onnx, tmp_path / "onnx")
    meta_path = onnx / "lawclf_meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "threshold": float("nan")}), encoding="utf-8")  # json writes NaN
    with pytest.raises(ModelLoadError, match=r"lawclf_meta.json: field 'threshold'"):
        Predictor(onnx)
    with pytest.raises(ModelLoadError, match="field 'threshold'"):
        serve.create_app(ServeConfig(model_dir=str(onnx), log_level="WARNING"))


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x00\x00", "\ufeff", "\u200d \u2060\n", "\x07\x1b",
                                  "\U000E0001\U000E0020", "\U0001D173", "\uFE0F", "\u3164", "\u2800\u2800"])
def test_texts_without_a_visible_character_get_a_400(text):
    assert not has_visible_character(text)
    with pytest.raises(ApiError) as err:
        validate_text(text, "content", 100)
    assert err.value.status == 400 and err.value.code in {"no_visible_text", "empty_text"}
    client = serve.create_app(ServeConfig(log_level="WARNING"), predictor=FakePredictor()).test_client()
    resp = client.post("/predict", json={"content": text})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] in {"no_visible_text", "empty_text"}


def test_visible_text_with_zero_width_characters_is_still_scored():
    assert has_visible_character("\u200b借钱\u200b")
    assert validate_text("\u200b借钱", "content", 100) == "\u200b借钱"


class _NaNPredictor(FakePredictor):
    def predict(self, texts):
        out = super().predict(texts)
        for r in ([out] if isinstance(out, dict) else out):
            r["score"] = math.nan
        return out


def test_nan_never_reaches_the_wire():
    client = serve.create_app(ServeConfig(log_level="CRITICAL"), predictor=_NaNPredictor()).test_client()
    resp = client.post("/predict", json={"content": "公司拖欠工资怎么办"})
    assert resp.status_code == 500
    body = json.loads(resp.get_data(as_text=True))  # strict JSON: Python's parser would accept NaN, so check text
    assert "NaN" not in resp.get_data(as_text=True) and body["error"]["code"] == "internal_error"


class _GatedPredictor(FakePredictor):
    """Blocks inside the model call until released, recording every text it sees."""

    def __init__(self):
        super().__init__()
        self.gate, self.entered, self.seen = threading.Event(), threading.Event(), []

    def predict(self, texts):
        self.seen += list(texts)
        self.entered.set()
        self.gate.wait(10)
        return super().predict(texts)


def test_a_full_queue_refuses_at_once_and_abandoned_jobs_never_reach_the_model():
    model = _GatedPredictor()
    batcher = MicroBatcher(model.predict, max_size=1, wait_ms=0, max_queue=2)
    running = batcher.submit(["running"])
    assert model.entered.wait(5)  # the model is busy with the first job
    waiting = [batcher.submit(["a"]), batcher.submit(["b"])]
    t0 = time.monotonic()
    with pytest.raises(Overloaded):
        batcher.submit(["c"])
    assert time.monotonic() - t0 < 0.5  # refused at once, not after a timeout
    assert waiting[0].cancel()  # its caller gave up while it was still queued
    model.gate.set()
    assert running.result(5)[0]["score"] == FakePredictor.score("running")
    assert waiting[1].result(5)
    assert "a" not in model.seen and "c" not in model.seen
    assert batcher.waiting == 0
    batcher.close()


def test_overload_is_a_503_with_retry_after_and_the_server_recovers():
    model = _GatedPredictor()
    app = serve.create_app(ServeConfig(log_level="CRITICAL", microbatch_max_size=1, microbatch_wait_ms=0,
                                       max_queue=1, predict_timeout_s=5), predictor=model)
    results: dict[str, int] = {}

    def call(name):
        results[name] = app.test_client().post("/predict", json={"content": name}).status_code

    first = threading.Thread(target=call, args=("first",))
    first.start()
    assert model.entered.wait(5)
    second = threading.Thread(target=call, args=("second",))
    second.start()
    deadline = time.monotonic() + 5
    while app.extensions["lawclf"].batcher.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    resp = app.test_client().post("/predict", json={"content": "third"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert resp.get_json()["error"]["code"] == "overloaded"
    model.gate.set()
    first.join(5), second.join(5)
    assert results == {"first": 200, "second": 200}
    assert app.test_client().post("/predict", json={"content": "after"}).status_code == 200  # recovered


def _chunked(app, body: bytes):
    from werkzeug.test import run_wsgi_app

    env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "CONTENT_TYPE": "application/json",
           "wsgi.input": __import__("io").BytesIO(body), "wsgi.input_terminated": True,
           "HTTP_TRANSFER_ENCODING": "chunked", "SERVER_NAME": "t", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    chunks, status, headers = run_wsgi_app(app, env)
    return int(status.split()[0]), json.loads(b"".join(chunks))


def test_a_chunked_body_over_the_limit_is_a_413_never_a_truncated_request():
    app = serve.create_app(ServeConfig(log_level="CRITICAL", max_body_bytes=1000), predictor=FakePredictor())
    # Cut at 1,000 bytes, this body would still parse ("content" is complete, the padding is after it).
    tricky = json.dumps({"content": "公司拖欠工资怎么办", "pad": "x" * 5000}).encode()
    assert _chunked(app, tricky) == (413, {"error": {"code": "payload_too_large",
                                                     "message": "The request body is larger than 1000 bytes."}})
    status, body = _chunked(app, b'{"content": "' + b"a" * 20000 + b'"}')
    assert status == 413
    status, body = _chunked(app, json.dumps({"content": "公司拖欠工资怎么办"}).encode())
    assert status == 200 and body["score"] == FakePredictor.score("公司拖欠工资怎么办")


def test_options_is_answered_in_json():
    client = serve.create_app(ServeConfig(log_level="CRITICAL"), predictor=FakePredictor()).test_client()
    resp = client.options("/predict")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert set(resp.get_json()["allow"]) >= {"POST", "OPTIONS"}
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) == set(resp.get_json()["allow"])


def test_the_spec_and_the_server_use_one_definition_of_a_visible_character():
    import re
    import unicodedata
    from importlib import resources

    from lawclf.validation import VISIBLE_PATTERN

    spec = json.loads(resources.files("lawclf").joinpath("resources/openapi.json").read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    patterns = [schemas["PredictRequest"]["properties"][f]["pattern"] for f in ("content", "text")]
    patterns += [schemas["BatchRequest"]["properties"][f]["items"]["pattern"] for f in ("texts", "contents")]
    assert patterns == [VISIBLE_PATTERN] * 4
    for name, fields in (("PredictRequest", ("content", "text")), ("BatchRequest", ("texts", "contents"))):
        assert schemas[name]["oneOf"] == [{"required": [fields[0]]}, {"required": [fields[1]]}]  # exactly one
    visible = re.compile(VISIBLE_PATTERN)
    # What the issue found scored although nothing shows: tags, musical format characters, variation
    # selectors, a Hangul filler, blank Braille; and what must stay a text.
    for invisible_text in ["\U000E0001", "\U000E0020\U000E0041", "\U0001D173", "\uFE0F", "\u3164", "\u2800",
                           "\uFE0F\u3164\u2800 \u200b", "\U000E0100", "\u115F\u1160\uFFA0"]:
        assert not visible.match(invisible_text), ascii(invisible_text)
    for text in ["a", "借钱", "\U00020000", "\U0001F600", "\u2801", "\uFE0F借", "\u3220", "\u200b\na", "a\n"]:
        assert visible.match(text), ascii(text)
    assert not visible.match("\u200b\n") and not visible.match("")
    if unicodedata.unidata_version != "14.0.0":
        pytest.skip(f"the ranges are written for Unicode 14; this Python has {unicodedata.unidata_version}")
    # Beyond whitespace, Cc and Cf: the other default-ignorable code points (Unicode 14
    # DerivedCoreProperties.txt), blank Braille, and the Cf that Unicode 15 adds at 13439-1343F.
    others = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2065, 0x2800, 0x3164,
              0xFFA0, *range(0xFE00, 0xFE10), *range(0xFFF0, 0xFFF9), *range(0x13439, 0x13440),
              *range(0xE0000, 0xE1000)}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        invisible = ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") or cp in others
        assert bool(visible.match(ch)) is not invisible, hex(cp)
