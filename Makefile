# lawclf — the common chores. `make run` and `make test` each set themselves up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUN_DIR ?= runs/sample
# Local runs use the offline tiny model; Colab's default (in the notebooks) is bert-base-chinese.
PARAMS ?= notebooks/params/local.yaml
PYTEST_ARGS ?=

.PHONY: setup run test test-fast lint colab-check serve clean help

help:
	@echo "make run    - set up, then run the notebook series on the embedded sample (ends with an ONNX model)"
	@echo "make test   - set up, then run the whole test suite (notebooks, integration tests included)"
	@echo "make test-fast - unit and data tests only (seconds)"
	@echo "make lint   - ruff (lint, import order) and mypy (lib/) - what CI runs before the tests"
	@echo "make colab-check - every notebook as Colab runs it (fresh runtime each, Drive stand-in), lowest and newest versions"
	@echo "make serve  - serve $(RUN_DIR)/onnx with Gunicorn on http://127.0.0.1:8000"

setup: $(VENV)/.installed

# torch is pinned to the CPU build on disk: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	bash scripts/install-system-deps.sh fonts
	touch $@

run: setup
	HF_HUB_OFFLINE=1 $(PY) -m lawclf_dev.nbrun --run-dir $(RUN_DIR) --params $(PARAMS)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check lib dev tests benchmarks scripts
	$(VENV)/bin/mypy

# Each notebook in its own fresh Colab-like runtime, at Colab's recorded versions (constraints/colab-gpu.txt)
# and at the declared lower bounds, after checking that every install cell resolves for Colab's Python.
# The two passes run side by side (mostly pip and kernel start-up); the lowest pass's log follows.
colab-check: setup
	@mkdir -p runs
	$(PY) scripts/colab_versions.py check
	@$(PY) scripts/colab_like.py --versions lowest > runs/colab-lowest.log 2>&1 & low=$$!; \
	$(PY) scripts/colab_like.py --versions colab; rc=$$?; \
	wait $$low || rc=1; echo "--- lowest versions:"; cat runs/colab-lowest.log; exit $$rc

test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow and not notebook and not integration" $(PYTEST_ARGS)

serve: setup
	LAWCLF_MODEL_DIR=$(RUN_DIR)/onnx $(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py "lawclf.serve:create_app()"

clean:
	rm -rf runs/ .pytest_cache
