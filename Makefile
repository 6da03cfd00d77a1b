# The two commands of the README's quick start: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup setup-test lint

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh test

demo: setup
	$(PY) examples/make_tiny_models.py examples/tiny
	$(VENV)/bin/alloy merge examples/ties.yml examples/merged --force

lint: setup-test
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider
