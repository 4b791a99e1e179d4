from shared.messaging.message_ids import MAX_MESSAGE_ID, bounded_message_id


def test_short_ids_are_kept_and_long_ones_are_bounded_and_distinct() -> None:
    assert bounded_message_id("dv", "CUSTOMER", "abc", "op") == "dv:CUSTOMER:abc:op"
    a = bounded_message_id("dv", "CUSTOMER", "abc", "x" * 5000)
    b = bounded_message_id("dv", "CUSTOMER", "abc", "x" * 4999 + "y")
    assert len(a) <= MAX_MESSAGE_ID and len(b) <= MAX_MESSAGE_ID
    assert a != b and a == bounded_message_id("dv", "CUSTOMER", "abc", "x" * 5000)
    assert len(bounded_message_id("bc", "M", "\ud800" * 200)) <= MAX_MESSAGE_ID
