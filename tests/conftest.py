"""Shared fixtures. Every test runs against the real pycaffe built by `make setup`."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtl import caffe_env

REPO = Path(__file__).resolve().parents[1]  # the repository (tests/ is one below)


def pytest_sessionstart(session: pytest.Session) -> None:
    # A missing Caffe must fail the run, never skip tests: import it before anything runs.
    caffe_env.caffe()
    caffe_env.caffe_binary()


@pytest.fixture(scope="session")
def caffe():
    c = caffe_env.caffe()
    c.set_mode_cpu()
    return c


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def results_root(tmp_path, monkeypatch) -> Path:
    """Runs write under a temporary results/ (inherited by `run-one` subprocesses)."""
    root = tmp_path / "results"
    monkeypatch.setenv("MEDTL_RESULTS", str(root))
    return root
