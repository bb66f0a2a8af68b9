"""Property-based fuzzing of every route: whatever a client sends, no 5xx and a well-formed answer.

Runs against the HTTP layer with a stand-in predictor (fast); tests/integration/test_serve_model.py
repeats a shorter fuzz against the real ONNX model.
"""

from __future__ import annotations

import json

from _serve_fakes import FakePredictor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawclf import serve
from lawclf.config import ServeConfig

APP = serve.create_app(ServeConfig(max_text_chars=300, max_batch=8, max_body_bytes=20_000, log_level="WARNING",
                                   microbatch_wait_ms=0.5),
                       predictor=FakePredictor())
CLIENT = APP.test_client()
ROUTES = ["/predict", "/predict/batch", "/healthz", "/readyz", "/version", "/", "/openapi.json"]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)
# Bodies shaped like the real requests, with wrong types, odd unicode, huge and empty texts.
texts = st.text(max_size=50) | st.text(min_size=290, max_size=320) | st.just("") | st.just(" \u3000\n") \
    | st.just("\ud800") | st.just("x" * 25_000)
shaped = st.fixed_dictionaries({}, optional={"content": texts | json_values, "text": texts | json_values,
                                             "texts": st.lists(texts | json_scalars, max_size=10) | json_values,
                                             "contents": st.lists(texts, max_size=3)})
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data", "application/ld+json",
                                 "", "application/json; charset=latin-1"]) | st.text(max_size=30)


def check(resp, path: str) -> None:  # noqa: ARG001 (path kept for failure messages)
    assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
    if resp.request.path == "/" and resp.status_code == 200:  # the path as the app saw it
        assert resp.mimetype == "text/html"
        return
    body = json.loads(resp.get_data())  # every other answer is JSON
    if resp.status_code >= 400:
        assert set(body) == {"error"} and isinstance(body["error"]["code"], str) and body["error"]["message"]
    assert resp.headers["X-Request-ID"]


def _ascii_header(value: str) -> str:
    return "".join(c for c in value if 32 <= ord(c) < 127)


@FUZZ
@given(path=st.sampled_from(ROUTES), method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
       body=st.binary(max_size=400) | shaped.map(lambda d: json.dumps(d).encode())
       | json_values.map(lambda v: json.dumps(v).encode()),
       content_type=content_types)
def test_any_request_to_any_route(path, method, body, content_type):
    resp = CLIENT.open(path, method=method, data=body, headers={"Content-Type": _ascii_header(content_type)})
    if method == "HEAD":
        assert resp.status_code < 500
        return
    check(resp, path)


@FUZZ
@given(payload=shaped | json_values)
def test_predict_with_any_json(payload):
    resp = CLIENT.post("/predict", data=json.dumps(payload), content_type="application/json")
    check(resp, "/predict")
    if resp.status_code == 200:
        assert 0 <= resp.get_json()["score"] <= 1


@FUZZ
@given(payload=shaped | json_values)
def test_batch_with_any_json(payload):
    resp = CLIENT.post("/predict/batch", data=json.dumps(payload), content_type="application/json")
    check(resp, "/predict/batch")
    if resp.status_code == 200:
        body = resp.get_json()
        assert body["count"] == len(body["results"]) >= 1


@FUZZ
@given(path=st.text(max_size=60).map(lambda p: "/" + p.lstrip("/")), request_id=st.text(max_size=200))
def test_any_path_and_request_id(path, request_id):
    resp = CLIENT.get(path, headers={"X-Request-ID": _ascii_header(request_id)})
    check(resp, path.split("?")[0])


def test_huge_bodies_are_413_not_5xx():
    for size in (20_001, 1_000_000):
        resp = CLIENT.post("/predict", data=b'{"content": "' + b"x" * size + b'"}', content_type="application/json")
        assert resp.status_code == 413 and json.loads(resp.get_data())["error"]["code"] == "payload_too_large"
