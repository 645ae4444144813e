# sse-chat-agent: `make serve` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
TOOLS := .venv-tools
BIN := $(VENV)/bin
SAM_PYTHON_VERSION ?= 3.13.0

.DEFAULT_GOAL := help
.PHONY: help venv serve test lint typecheck pytest cfn-lint tools build deploy bench clean

help:
	@echo "make serve   run the local server and page on http://$(HOST):$(PORT)"
	@echo "make test    ruff, mypy --strict, template lint, pytest (unit, integration, browser)"
	@echo "make bench   measure the relay (bench/results/latest.json)"
	@echo "make build   sam build (python3.13)   make deploy   sam deploy"

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

serve: venv
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m handlers.serve

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .mypy_cache .pytest_cache .ruff_cache
