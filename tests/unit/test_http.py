"""One HTTP layer (lawclf.http): the prediction API and the review page answer errors alike."""

from __future__ import annotations

import pytest
from _serve_fakes import FakePredictor

from lawclf import serve
from lawclf.config import ScreenConfig, ServeConfig
from lawclf.gunicorn_worker import json_error_body
from lawclf.http import BASE_HEADERS, ERROR_CODES, error_code
from lawclf.screen.review import create_review_app


@pytest.fixture
def clients(tmp_path):
    review = create_review_app(ScreenConfig(db_url=f"sqlite:///{tmp_path}/s.db"))
    api = serve.create_app(ServeConfig(max_body_bytes=1024), predictor=FakePredictor())
    return {"api": api.test_client(), "review": review.test_client()}


@pytest.mark.parametrize("method,path,kw,status", [
    ("get", "/no-such-route", {}, 404),
    ("delete", "/", {}, 405),
    ("post", "/api/reviews", {"data": b"x" * 20_000, "content_type": "application/json"}, 413),
])
def test_both_apps_answer_an_http_error_with_the_same_envelope_code_and_headers(clients, method, path, kw, status):
    if status == 413:  # the API's route for a body
        paths = {"api": "/predict", "review": path}
    else:
        paths = {"api": path, "review": path}
    for name, client in clients.items():
        resp = getattr(client, method)(paths[name], **kw)
        assert resp.status_code == status, name
        assert resp.is_json and set(resp.get_json()) == {"error"}, name
        assert resp.get_json()["error"]["code"] == ERROR_CODES[status], name
        assert resp.get_json()["error"]["message"], name
        for header, value in BASE_HEADERS.items():
            assert resp.headers[header] == value, (name, header)
        if status == 405:
            assert "GET" in resp.headers["Allow"], name


def test_the_worker_and_the_apps_share_one_table_of_codes():
    assert error_code(413) == "payload_too_large" and error_code(418, "I'm a teapot") == "i'm_a_teapot"
    assert json_error_body(431, "Request Header Fields Too Large", "too\nbig") == (
        b'{"error": {"code": "headers_too_large", "message": "too big"}}')
