"""Shared fixtures. Everything the tests read is inside the repository: the official code's golden outputs
(compacted) and the official experiment YAMLs under ``tests/data/``, real photos in :mod:`hhrnet.samples`."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"
EXPERIMENTS = DATA / "official-experiments"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN
