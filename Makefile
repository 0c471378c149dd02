# The two README commands: `make demo` (main job on built-in data) and `make test` (test suite).
# Both create or reuse the virtual environment $(VENV); scripts/install.sh re-installs only when
# the pinned requirements change.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export VENV

.PHONY: install test test-quick lint demo bench

install:
	@bash scripts/install.sh

# Two workers, each test file on one of them (module fixtures built once): the suite fits in
# 10 minutes on 2 cores. `$(PY) -m pytest tests` runs it in one process.
test: install
	$(PY) -m pytest tests -n 2 --dist loadfile

test-quick: install
	$(PY) -m pytest tests -m "not slow"

lint: install  # ruff, configured in pyproject.toml
	$(PY) -m ruff check .

demo: install
	$(PY) tools/demo.py

bench: install
	$(PY) tools/benchmark.py
