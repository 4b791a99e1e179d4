"""Fixtures of the template tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

BICEP = Path(__file__).resolve().parents[2] / "infra" / "bicep"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A throw-away copy of infra/bicep to break on purpose."""
    copy = tmp_path / "bicep"
    shutil.copytree(BICEP, copy)
    return copy
