# `make run` and `make test` each set up everything they need on a fresh Debian machine:
# the system libraries Qt needs (.ci/system-deps), then .venv from pyproject.toml.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	bash .ci/system-deps
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/labconsole $(ARGS)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/store.py

lint: $(STAMP)
	$(VENV)/bin/ruff check core console panels tests bench
	$(VENV)/bin/lint-imports --config pyproject.toml

clean:
	rm -rf $(VENV) tests/screenshots .pytest_cache
