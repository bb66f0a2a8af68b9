"""A stand-in for lawclf.predict.Predictor, for tests of the HTTP layer alone (no model files).

Its score is a fixed rule so that tests can check which text's result came back where.
"""

from __future__ import annotations

import threading


class FakePredictor:
    version = "test-1"
    meta = {"version": "test-1", "labels": ["non_legal", "legal"], "max_len": 64, "threshold": 0.5}

    def __init__(self, fail: bool = False, delay: float = 0.0):
        self.fail, self.delay = fail, delay
        self.calls: list[int] = []  # batch size of each predict call
        self._lock = threading.Lock()

    @staticmethod
    def score(text: str) -> float:
        return round(min(len(text), 100) / 100, 4)

    def predict(self, texts):
        one = isinstance(texts, str)
        batch = [texts] if one else list(texts)
        with self._lock:
            self.calls.append(len(batch))
        if self.delay:
            import time

            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("secret internal detail /srv/model.onnx")
        out = [{"label": "legal" if self.score(t) >= 0.5 else "non_legal", "is_legal": self.score(t) >= 0.5,
                "score": self.score(t), "threshold": 0.5} for t in batch]
        return out[0] if one else out
