# `make run` and `make test` each set up everything they need on a fresh Debian machine:
# the system libraries Qt needs (.ci/system-deps), then .venv from pyproject.toml.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=
PYTEST_ARGS ?=
# Biosero's own client (biosero-data-models), in its own venv: its pins clash with ours. The
# Data Services tests drive the embedded server with it.
BDM_VENV := .bdm-venv
BDM_STAMP := $(BDM_VENV)/.installed-biosero-data-models-0.2.9

.PHONY: run test bench lint clean bdm-venv

$(STAMP): pyproject.toml
	bash .ci/system-deps
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(BDM_STAMP):
	rm -rf $(BDM_VENV)
	$(PY) -m venv $(BDM_VENV)
	$(BDM_VENV)/bin/python -m pip install -q biosero-data-models==0.2.9
	touch $(BDM_STAMP)

bdm-venv: $(BDM_STAMP)

run: $(STAMP)
	$(VENV)/bin/labconsole $(ARGS)

test: $(STAMP) $(BDM_STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/store.py

lint: $(STAMP)
	$(VENV)/bin/ruff check core console panels tests bench
	$(VENV)/bin/lint-imports --config pyproject.toml

clean:
	rm -rf $(VENV) tests/screenshots .pytest_cache
