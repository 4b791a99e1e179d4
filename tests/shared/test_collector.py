"""shared.collector: the collector's thresholds (pure) and the once-per-process tuning."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared import collector


def test_thresholds_raise_the_youngest_generation_only() -> None:
    assert collector.thresholds(50_000, (700, 10, 10)) == (50_000, 10, 10)
    assert collector.thresholds(1, (700, 5, 7)) == (1, 5, 7)


def test_zero_leaves_the_interpreters_thresholds() -> None:
    assert collector.thresholds(0, (700, 10, 10)) is None


@pytest.fixture
def restored() -> Iterator[None]:
    before, frozen = gc.get_threshold(), collector._frozen
    yield
    gc.set_threshold(*before)
    collector._frozen = frozen


def test_tune_freezes_once_and_sets_the_threshold(restored: None) -> None:
    collector._frozen = False
    collector.tune(12_345)
    assert gc.get_threshold()[0] == 12_345
    assert collector._frozen and gc.get_freeze_count() > 0
    collector.tune(23_456)  # again: only the threshold changes
    assert gc.get_threshold()[0] == 23_456


def test_tune_zero_changes_nothing(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    collector._frozen = False
    collector.tune(0)
    assert gc.get_threshold() == (700, 10, 10) and not collector._frozen
