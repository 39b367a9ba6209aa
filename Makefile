# Kriten in Python. Needs only Python 3.11+, git and make: uv is installed on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# Trust the system's certificate store, as pip and git do (corporate proxies included).
export UV_SYSTEM_CERTS ?= 1
# Installed packages come with their bytecode: where Python may not write it (read-only
# trees, PYTHONDONTWRITEBYTECODE) every service start would compile SQLAlchemy & co. again.
export UV_COMPILE_BYTECODE ?= 1
PYTEST_ARGS ?=
# Tests run in one more worker than there are cores: the slowest ones mostly wait
# (outages, retries), so an extra worker keeps the cores busy meanwhile (on 2 cores:
# 17 min serial, 5 min with 2 workers, 4 with 3). `make test PYTEST_WORKERS=0`: serial.
PYTEST_WORKERS ?= $(shell python3 -c 'import os; print((os.cpu_count() or 1) + 1)')

.PHONY: help run test lint bench sync test-deps

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

# The LDAP login tests start their own slapd, and the console's browser test Chromium;
# install them when this machine can (root, apt-get). slapd is preseeded to configure no
# system directory, so no system daemon starts.
test-deps:
	@if command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "slapd slapd/no_configuration boolean true" | debconf-set-selections 2>/dev/null; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slapd ldap-utils \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slapd ldap-utils; }; \
	else echo "note: slapd is missing and cannot be installed here (needs root and apt-get); the LDAP tests will fail"; fi
	@if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }; \
	else echo "note: chromium is missing and cannot be installed here (needs root and apt-get); the console's browser test will fail"; fi

# The tests only: ruff, mypy and import-linter are `make lint` (.ci/run runs both).
test: sync test-deps
	$(UV) run --frozen pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy libs/common/src services/*/src launcher/src clients/cli/src
	$(UV) run --frozen lint-imports

bench: sync
	$(UV) run --frozen python -m benchmarks
