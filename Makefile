# GPU users: make demo TORCH="torch==<version>" (with their CUDA index configured in pip).
TORCH ?= torch==2.13.0
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo docs-numbers test test-slow lint install install-test benchmarks clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[demo]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VENV)/bin/concept-tracker demo

# Reruns the demo at its seed and rewrites the README's demo block, docs/demo_results.json and
# the docs/demo_*.png figures from that one run.
docs-numbers: $(VENV)/.installed
	$(PY) tools/docs_numbers.py

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check concept_tracker integrations tests benchmarks tools examples
	$(VENV)/bin/ruff format --check concept_tracker integrations
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

# Tests marked slow (a fresh demo run compared with docs/demo_results.json).
test-slow: $(VENV)/.installed-test
	CONCEPT_TRACKER_SLOW=1 $(PY) -m pytest -q -m slow

benchmarks: $(VENV)/.installed-test
	$(PY) benchmarks/transforms.py
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/and_or.py

clean:
	rm -rf $(VENV) runs build *.egg-info
