# sse-chat-agent: `make serve` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
TOOLS := .venv-tools
BIN := $(VENV)/bin
SAM_PYTHON_VERSION ?= 3.13.0

.DEFAULT_GOAL := help
.PHONY: help venv serve test lint typecheck pytest cfn-lint tools build deploy bench lock clean vendor

help:
	@echo "make serve   run the local server and page on http://$(HOST):$(PORT)"
	@echo "make test    ruff, mypy --strict, template lint, pytest (unit, integration, browser)"
	@echo "make bench   measure the relay and the artifact's cold start (bench/results/latest.json)"
	@echo "make lock    refresh src/requirements.txt, the Lambda lock, from pyproject.toml"
	@echo "make vendor  copy the page's pinned libraries from tests/e2e/node_modules to static/vendor/"
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

# axe-core for the browser tests' accessibility scan (injected into the page; no build step),
# and the page's vendored modules (`make vendor`).
E2E_NODE := tests/e2e/node_modules/.installed
$(E2E_NODE): tests/e2e/package.json tests/e2e/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the browser tests' axe-core (apt-get install npm)"; exit 1; }
	npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
	@touch $@

# The page's Markdown, sanitizer and highlighter, exactly as pinned in tests/e2e/package-lock.json.
vendor: venv $(E2E_NODE)
	$(BIN)/python -m tests.e2e.vendor

# Two runs: Playwright's sync API leaves an event loop on the main thread, which would break
# the asyncio tests that follow it in the same process.
pytest: venv $(E2E_NODE)
	$(BIN)/pytest tests/unit tests/integration
	$(BIN)/pytest tests/e2e

test: lint typecheck cfn-lint pytest

# Starts the simulator and the app on 127.0.0.1 free ports, then builds and cold-starts the
# Lambda artifact (needs python3.13 on PATH, as make build does), ~130 s; README "Performance".
bench: venv
	$(BIN)/python -m bench.run

# aws-sam-cli pins boto3, click and cfn-lint: it gets its own venv, never the app's.
SAM := SAM_CLI_TELEMETRY=0 $(TOOLS)/bin/sam

$(TOOLS)/bin/.installed:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet 'aws-sam-cli>=1.140' cfn-lint
	@touch $@

# uv resolves the Lambda lock (make lock); a file target of its own, so existing tool venvs get it.
$(TOOLS)/bin/uv: $(TOOLS)/bin/.installed
	$(TOOLS)/bin/python -m pip install --quiet 'uv>=0.9'

tools: $(TOOLS)/bin/.installed $(TOOLS)/bin/uv

# The Lambda lock, src/requirements.txt: pyproject's [project] dependencies (never its extras),
# exact versions with the hashes of every file, for CPython 3.13 on either CPU. Existing pins are
# kept; `make lock UPGRADE=1` takes the newest allowed. tests/unit/test_lock.py checks it.
# The bench's "hello" app gets its own lock at the same versions.
lock: tools
	$(TOOLS)/bin/uv pip compile pyproject.toml --quiet --universal --python-version 3.13 \
	  --generate-hashes --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) \
	  --output-file src/requirements.txt
	$(TOOLS)/bin/uv pip compile bench/hello/requirements.in --constraint src/requirements.txt \
	  --quiet --universal --python-version 3.13 --generate-hashes --custom-compile-command 'make lock' \
	  --output-file bench/hello/requirements.txt

# Offline: neither needs AWS credentials or a region.
cfn-lint: tools
	$(TOOLS)/bin/cfn-lint template.yaml
	$(SAM) validate --lint

# sam build needs the runtime's Python (3.13) on PATH; pyenv provides it here.
build: tools
	@PYENV_VERSION=$(SAM_PYTHON_VERSION) python3.13 --version >/dev/null 2>&1 || \
	  { echo "sam build needs python3.13 on PATH (pyenv install $(SAM_PYTHON_VERSION), or your OS package)"; exit 1; }
	@# MAKEFLAGS= : a variable given to this make (`make build ARCH=x86_64`) must not reach
	@# src/Makefile through sam; the CPU is template.yaml's alone.
	PYENV_VERSION=$(SAM_PYTHON_VERSION) MAKEFLAGS= $(SAM) build $(if $(CONFIG_ENV),--config-env $(CONFIG_ENV))

# Needs AWS credentials. CONFIG_ENV=prod deploys samconfig.toml's [prod] section.
deploy: build
	$(SAM) deploy $(if $(CONFIG_ENV),--config-env $(CONFIG_ENV))

clean:
	rm -rf $(VENV) $(TOOLS) tests/e2e/node_modules .aws-sam .mypy_cache .pytest_cache .ruff_cache
