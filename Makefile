# MedTL-Caffe front door. `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint clean-venv

## setup: Debian packages, .venv with pinned packages, BVLC Caffe (cached), pycaffe in the venv
setup:
	@scripts/setup.sh

## demo: the default experiment on built-in synthetic data
demo: setup
	@$(PY) -m medtl demo

## test: lint, then the whole test suite against real Caffe (CPU)
test: setup
	@$(PY) -m ruff check python tests data_prep benchmarks
	@$(PY) -m pytest

## test-fast: lint, then every test that trains no network (a few minutes)
test-fast: setup
	@$(PY) -m ruff check python tests data_prep benchmarks
	@$(PY) -m pytest -m "not slow"

clean-venv:
	rm -rf .venv
