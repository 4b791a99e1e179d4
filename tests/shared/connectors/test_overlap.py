from datetime import UTC, datetime, timedelta

from shared.connectors import _overlap
from shared.connectors._overlap import Window, digest, join_cursor, split_cursor

T = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_a_plain_timestamp_cursor_remembers_nothing() -> None:
    assert split_cursor("2026-01-01T12:00:00.000Z") == ("2026-01-01T12:00:00.000Z", frozenset())
    assert split_cursor(None) == (None, frozenset())


def test_the_cursor_round_trips_its_digests() -> None:
    cursor = join_cursor("2026-01-01T12:00:00.000Z", ["ab", "cd"])
    assert split_cursor(cursor) == ("2026-01-01T12:00:00.000Z", frozenset({"ab", "cd"}))
    assert join_cursor("2026-01-01T12:00:00.000Z", []) == "2026-01-01T12:00:00.000Z"


def test_a_digest_names_one_version_of_one_record() -> None:
    assert digest("a", T) == digest("a", T)
    assert digest("a", T) != digest("a", T + timedelta(microseconds=1))
    assert digest("a", T) != digest("b", T)


def test_the_window_remembers_only_rows_the_next_read_re_delivers() -> None:
    w = Window(timedelta(seconds=2))
    w.add(T, "old")
    w.add(T + timedelta(seconds=1), "edge")  # at newest - 2 s: not re-read (gt)
    w.add(T + timedelta(seconds=1.5), "in1")
    w.add(T + timedelta(seconds=3), "in2")
    newest = T + timedelta(seconds=3)
    assert w.remembered(newest) == ["in2", "in1"]  # the next read: gt newest - 2 s
    w.trim(newest)
    assert [d for _, d in w.rows] == ["in1", "in2"]


def test_the_memory_is_capped(monkeypatch) -> None:
    monkeypatch.setattr(_overlap, "MAX_REMEMBERED", 2)
    w = Window(timedelta(seconds=2))
    for n in range(5):
        w.add(T + timedelta(milliseconds=n), f"d{n}")
    assert w.remembered(T + timedelta(milliseconds=4)) == ["d4", "d3"]  # the rest is delivered again
