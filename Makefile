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

# MADSci's node framework (madsci-node-module), in its own venv: 0.8.1 fails to start under the
# pydantic we pin (2.14: its wrap serializers call the handler with two arguments), so it gets
# pydantic 2.12. The MADSci driver tests run a real node from it; the driver itself needs no
# MADSci package (plain HTTP).
MADSCI_VENV := .madsci-venv
MADSCI_STAMP := $(MADSCI_VENV)/.installed-madsci-node-module-0.8.1

# Prefect 3, the peer the engine benchmark compares against, in its own venv as well.
PREFECT_VENV := .bench-venv-prefect
PREFECT_STAMP := $(PREFECT_VENV)/.installed-prefect-3.8.8

.PHONY: run test bench bench-prefect-venv lint clean bdm-venv madsci-venv reliability

$(STAMP): pyproject.toml
	bash .ci/system-deps
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,plr]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(BDM_STAMP):
	rm -rf $(BDM_VENV)
	$(PY) -m venv $(BDM_VENV)
	$(BDM_VENV)/bin/python -m pip install -q biosero-data-models==0.2.9
	touch $(BDM_STAMP)

bdm-venv: $(BDM_STAMP)

$(MADSCI_STAMP):
	rm -rf $(MADSCI_VENV)
	$(PY) -m venv $(MADSCI_VENV)
	$(MADSCI_VENV)/bin/python -m pip install -q madsci-node-module==0.8.1 pydantic==2.12.5
	touch $(MADSCI_STAMP)

madsci-venv: $(MADSCI_STAMP)

run: $(STAMP)
	$(VENV)/bin/labconsole $(ARGS)

test: $(STAMP) $(BDM_STAMP) $(MADSCI_STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

$(PREFECT_STAMP):
	rm -rf $(PREFECT_VENV)
	$(PY) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install -q 'prefect==3.8.8' 'fastapi==0.140.*' 'starlette>=1.0.1'
	touch $(PREFECT_STAMP)

bench-prefect-venv: $(PREFECT_STAMP)

bench: $(STAMP) $(PREFECT_STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/store.py
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/engine.py
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/dispatch.py
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/drivers.py
	test ! -f bench/gui.py || QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/gui.py
	$(VENV)/bin/python bench/timetravel.py
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/timeline.py

# The standing reliability suite (not part of `make test`): one table of figures, each with the
# command that produced it. PROFILE=short is the CI profile (a few minutes); QUICK=N samples N
# mutants for the mutation score.
PROFILE ?= full
QUICK ?=
reliability: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python bench/reliability.py --profile $(PROFILE) $(if $(QUICK),--quick $(QUICK))

lint: $(STAMP)
	$(VENV)/bin/ruff check core console panels tests bench
	$(VENV)/bin/lint-imports --config pyproject.toml

clean:
	rm -rf $(VENV) tests/screenshots .pytest_cache
