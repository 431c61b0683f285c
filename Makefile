# The two commands: `make demo` (the main job) and `make test`. Each builds .venv itself:
# `make demo` installs only what the demo needs (`pip install -e .`), `make test` adds the test
# extra (pytest, hypothesis, playwright) on top.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# JupyterLab refuses to start as root unless told so
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: demo test venv bench lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m kit demo --out reports/index.html

test: $(TEST_STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/host_model.py
	$(PY) benchmarks/sim.py
	$(PY) benchmarks/dashboards.py

# optional: JupyterLab on this machine with the kit importable in its kernel (as root too)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

clean:
	rm -rf $(VENV) reports runs sweeps output .pytest_cache .hypothesis
