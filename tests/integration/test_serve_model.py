"""The app with the real exported ONNX model: same answers as the predictor, no torch, fuzzed texts never 5xx."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _serve_fixtures import serve_model_dir  # noqa: F401 (pytest fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawclf.config import ServeConfig
from lawclf.serve import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(serve_model_dir):
    app = create_app(ServeConfig(model_dir=str(serve_model_dir), log_level="WARNING", max_text_chars=600))
    return app.test_client()


def test_answers_match_the_predictor(client, serve_model_dir):
    from lawclf.predict import Predictor

    predictor = Predictor(serve_model_dir)
    for text in ("房东不退押金怎么办？", "周末去哪里爬山比较好？"):
        body = client.post("/predict", json={"content": text}).get_json()
        want = predictor.predict(text)
        assert body["label"] == want["label"] and body["score"] == pytest.approx(want["score"], abs=1e-5)
        assert body["threshold"] == pytest.approx(predictor.threshold)
        assert body["model_version"] == predictor.version
    version = client.get("/version").get_json()
    assert version["model"]["labels"] == predictor.meta["labels"]
    assert client.get("/readyz").get_json()["status"] == "ready"


def test_serving_a_prediction_never_imports_torch(serve_model_dir):
    code = f"""
import json, sys
from lawclf.config import ServeConfig
from lawclf.serve import create_app
app = create_app(ServeConfig(model_dir={str(serve_model_dir)!r}, log_level="WARNING"))
c = app.test_client()
statuses = [c.post("/predict", json={{"content": "请问酒驾会被判刑吗"}}).status_code,
            c.post("/predict/batch", json={{"texts": ["一", "二"]}}).status_code, c.get("/").status_code]
print(json.dumps({{"statuses": statuses, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"statuses": [200, 200, 200], "heavy": []}


odd_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200) | st.text(
    st.sampled_from("法律咨询借钱怎么办？!　\u200b\u0000\ufeff😀𠮷ａ\t\n"), min_size=1, max_size=600)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(texts=st.lists(odd_text, min_size=1, max_size=6))
def test_any_text_gets_a_probability_or_a_4xx(client, texts):
    single = client.post("/predict", json={"content": texts[0]})
    batch = client.post("/predict/batch", json={"texts": texts})
    for resp in (single, batch):
        assert resp.status_code < 500, resp.get_data()[:300]
        body = json.loads(resp.get_data())
        if resp.status_code == 200:
            results = body.get("results", [body])
            assert all(0.0 <= r["score"] <= 1.0 and r["label"] in ("legal", "non_legal") for r in results)
        else:
            assert body["error"]["code"] in {"empty_text", "no_visible_text", "text_too_long"}
