# The two commands of the README's quick start: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup setup-test lint

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh test

# `alloy demo`: train a tiny base and two specialists, merge them every way, print the table
# (a few minutes on 2 CPU cores). Also writes the tiny checkpoints that examples/*.yml merge.
demo: setup
	$(PY) examples/make_tiny_models.py examples/tiny
	$(VENV)/bin/alloy demo --out alloy-demo

lint: setup-test
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider -n auto --dist worksteal
