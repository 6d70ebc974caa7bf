"""Shared fixtures. ``../shared`` (beside the repository) holds golden outputs and real data samples."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared material not found at {SHARED} (it must sit beside the repository)")
    return SHARED
