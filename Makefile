# Kriten in Python. Needs only Python 3.11+, git and make: uv is installed on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# Trust the system's certificate store, as pip and git do (corporate proxies included).
export UV_NATIVE_TLS ?= 1
PYTEST_ARGS ?=

.PHONY: help run test lint bench sync

help:
	@echo "make run    run the whole system on embedded defaults (SQLite, local executor) at http://127.0.0.1:8080"
	@echo "make test   run every test (needs RabbitMQ and PostgreSQL: see README)"
	@echo "make lint   ruff, mypy strict, import-linter"
	@echo "make bench  run the benchmarks and print their figures"

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"

sync: $(UV)
	$(UV) sync --frozen --quiet

run: sync
	$(UV) run --frozen kriten

test: sync
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy libs/common/src services/*/src launcher/src
	$(UV) run --frozen lint-imports

bench: sync
	$(UV) run --frozen python -m benchmarks
