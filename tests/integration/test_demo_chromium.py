"""The demo page in a real headless Chromium against a live Gunicorn: type, click, read the result.

Uses the Debian ``chromium`` and ``chromedriver`` (nothing is downloaded). The screenshot is
kept in the test's tmp folder (its path is printed) for a human to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest
from _browser import browser  # noqa: F401 (pytest fixture)
from _serve_fixtures import gunicorn_server, serve_model_dir  # noqa: F401 (pytest fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def _expected(url: str, text: str) -> dict:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"content": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_type_click_and_read_the_result(browser, gunicorn_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(gunicorn_server.url + "/")
    assert "法律咨询" in browser.title
    button = browser.find_element(By.ID, "predict")
    assert button.text == "模型实时预测"

    text = "公司拖欠我三个月工资，我可以申请劳动仲裁吗？"
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    button.click()
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 20).until(lambda d: result.get_attribute("data-score"))
    want = _expected(gunicorn_server.url, text)
    shown = result.text
    assert ("法律咨询" if want["is_legal"] else "非法律问题") in shown.splitlines()[0]
    assert f"{want['score'] * 100:.1f}%" in shown
    assert float(result.get_attribute("data-score")) == pytest.approx(want["score"], abs=1e-6)
    assert result.get_attribute("class") in {"legal", "other"}

    shot = tmp_path / "demo.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 5000
    keep = os.environ.get("LAWCLF_SCREENSHOT")  # e.g. LAWCLF_SCREENSHOT=/tmp/demo.png to look at it
    if keep:
        shutil.copy(shot, keep)
    print(f"screenshot: {shot}")

    # the browser's console shows no errors (CSP violations, script errors)
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] if hasattr(browser, "get_log") else []
    assert not logs, logs
    WebDriverWait(browser, 5).until(EC.element_to_be_clickable((By.ID, "predict")))


def test_clicking_an_example_predicts_it(browser, gunicorn_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(gunicorn_server.url + "/")
    examples = browser.find_elements(By.CSS_SELECTOR, "ul#examples button.example")
    assert len(examples) >= 6
    first = examples[1]
    example_text = browser.execute_script("return arguments[0].firstChild.textContent", first)
    first.click()
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 20).until(lambda d: result.get_attribute("data-score"))
    assert browser.find_element(By.ID, "text").get_attribute("value") == example_text
    want = _expected(gunicorn_server.url, example_text)
    assert f"{want['score'] * 100:.1f}%" in result.text


def test_an_empty_box_and_an_api_error_show_a_message(browser, gunicorn_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(gunicorn_server.url + "/")
    browser.find_element(By.ID, "predict").click()
    result = browser.find_element(By.ID, "result")
    assert "请先输入" in result.text
    # an over-long text (maxlength bypassed by script) gets the API's message
    browser.execute_script("document.getElementById('text').value = 'x'.repeat(arguments[0]);", 5000)
    browser.find_element(By.ID, "predict").click()
    WebDriverWait(browser, 20).until(lambda d: "出错了" in result.text)
    assert "limit" in result.text
