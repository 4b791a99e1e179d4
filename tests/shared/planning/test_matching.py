"""BC's match-based coupling rules as pure functions, with literals."""

from __future__ import annotations

from shared.mappings.config import FieldMap, MatchField, TableMapping
from shared.planning.matching import (
    MatchCriterion,
    by_priority,
    candidate_filter,
    criteria_of,
    decide,
    decide_all,
    record_terms,
    sync_after_direction,
    unmatched_reason,
    values_match,
)

NAME = MatchCriterion("displayName", "name", 1)
CITY = MatchCriterion("city", "address1_city", 1)
PHONE = MatchCriterion("phoneNumber", "telephone1", 2)


def test_criteria_come_from_enabled_match_fields_grouped_by_priority() -> None:
    m = TableMapping.model_validate(
        {
            "name": "T",
            "bcEntity": "customers",
            "dataverseTable": "account",
            "dataverseEntitySet": "accounts",
            "dataversePrimaryKey": "accountid",
            "direction": "bidirectional",
            "matchFields": [{"bc": "number", "dataverse": "accountnumber", "priority": 0},
                            {"bc": "email", "dataverse": "emailaddress1", "priority": 9}],
            "fields": [
                {"bc": "displayName", "dataverse": "name", "useForMatch": True, "matchPriority": 1},
                {"bc": "city", "dataverse": "address1_city", "useForMatch": True, "matchPriority": 1,
                 "caseSensitive": True},
                {"bc": "phoneNumber", "dataverse": "telephone1", "useForMatch": True, "matchPriority": 2,
                 "status": "disabled"},
                {"bc": "email", "dataverse": "emailaddress1"},
                {"bc": "type", "dataverse": None, "direction": "fromDataverse", "constant": "Company",
                 "useForMatch": True},
            ],
        }
    )  # fmt: skip
    crit = criteria_of(m)
    # number (not a field mapping) stays a criterion; email is a field mapping without useForMatch: not one;
    # a disabled field and a constant are never criteria.
    assert crit == [
        MatchCriterion("displayName", "name", 1),
        MatchCriterion("city", "address1_city", 1, case_sensitive=True),
        MatchCriterion("number", "accountnumber", 0),
    ]
    assert [[c.bc for c in g] for g in by_priority(crit)] == [["number"], ["displayName", "city"]]
    assert MatchField(bc="a", dataverse="b").priority == 1
    assert FieldMap(bc="a", dataverse="b").id == "a~b"


def test_text_matches_case_insensitively_unless_case_sensitive() -> None:
    assert values_match("Acme Corp", "ACME corp", case_sensitive=False)
    assert not values_match("Acme Corp", "ACME corp", case_sensitive=True)
    assert values_match(" Acme ", "acme", case_sensitive=False)
    assert values_match(12.5, "12.50", case_sensitive=False) is False  # number vs text: no match
    assert values_match(12.5, 12.50, case_sensitive=False)
    assert not values_match("x", None, case_sensitive=False)
    assert values_match("6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff-8b86-d011-b42d-00c04fc964ff",
                        case_sensitive=True)  # fmt: skip


def test_all_fields_of_a_priority_must_match_together() -> None:
    rows = {
        "d1": {"name": "Nordic", "address1_city": "Aarhus"},
        "d2": {"name": "Nordic", "address1_city": "Odense"},
        "d3": {"name": "Baltic", "address1_city": "Aarhus"},
    }
    d = decide("b1", {"displayName": "Nordic", "city": "Aarhus"}, [[NAME, CITY]], [rows], set())
    assert (d.outcome, d.dataverse_id, d.priority) == ("coupled", "d1", 1)
    # The name alone is ambiguous: two candidates -> unmatched.
    d = decide("b1", {"displayName": "Nordic"}, [[NAME]], [rows], set())
    assert d.outcome == "unmatched" and d.tried == ((1, 2, 0),)


def test_empty_bc_values_are_left_out_of_the_criteria() -> None:
    rows = {"d1": {"name": "Nordic", "address1_city": "Aarhus"}, "d3": {"name": "Baltic", "address1_city": "Aarhus"}}
    assert record_terms([NAME, CITY], {"displayName": "Nordic", "city": ""}) == [(NAME, "Nordic")]
    d = decide("b1", {"displayName": "Nordic", "city": ""}, [[NAME, CITY]], [rows], set())
    assert d.dataverse_id == "d1"
    # Every value of the priority empty: the priority is skipped (it would match everything otherwise).
    d = decide("b1", {"displayName": " ", "city": None}, [[NAME, CITY]], [rows], set())
    assert d.outcome == "unmatched" and d.tried == ()
    assert "every match field of the record is empty" in unmatched_reason(d)


def test_none_several_or_coupled_candidates_go_to_the_next_priority() -> None:
    p1 = {"d1": {"name": "Twin"}, "d2": {"name": "Twin"}}
    p2 = {"d2": {"telephone1": "+45 1"}}
    d = decide("b1", {"displayName": "Twin", "phoneNumber": "+45 1"}, [[NAME], [PHONE]], [p1, p2], set())
    assert (d.outcome, d.dataverse_id, d.priority) == ("coupled", "d2", 2)
    # The one candidate is coupled already -> next priority; none there -> unmatched.
    d = decide("b1", {"displayName": "Solo", "phoneNumber": "+45 9"}, [[NAME], [PHONE]],
               [{"d5": {"name": "Solo"}}, {}], {"d5"})  # fmt: skip
    assert d.outcome == "unmatched" and d.tried == ((1, 1, 1), (2, 0, 0))
    assert "all coupled already" in unmatched_reason(d) and "no candidate" in unmatched_reason(d)
    # No candidate at the first priority -> the second decides.
    d = decide("b1", {"displayName": "Gone", "phoneNumber": "+45 1"}, [[NAME], [PHONE]], [{}, p2], set())
    assert d.dataverse_id == "d2"


def test_two_records_of_a_chunk_never_take_the_same_row() -> None:
    rows = {"d1": {"name": "Same"}}
    out = decide_all([("b1", {"displayName": "Same"}), ("b2", {"displayName": "same"})], [[NAME]], [rows], set())
    assert [(d.bc_id, d.outcome, d.dataverse_id) for d in out] == [("b1", "coupled", "d1"), ("b2", "unmatched", None)]


def test_one_query_per_chunk_and_priority() -> None:
    chunk = [
        {"displayName": "O'Neil", "city": "Aarhus"},
        {"displayName": "Nordic", "city": ""},
        {"displayName": "nordic", "city": None},  # the same terms as the row above (case-insensitive): once
        {"displayName": "", "city": ""},
    ]
    assert candidate_filter([NAME, CITY], chunk) == (
        "(name eq 'O''Neil' and address1_city eq 'Aarhus') or name eq 'Nordic'"
    )
    assert candidate_filter([PHONE], chunk) is None
    assert candidate_filter([MatchCriterion("creditLimit", "creditlimit")], [{"creditLimit": 5000}]) == (
        "creditlimit eq 5000"
    )


def test_sync_after_follows_the_direction_rule() -> None:
    assert sync_after_direction("toDataverse", "dataverseWins") == "toDataverse"
    assert sync_after_direction("fromDataverse", "bcWins") == "fromDataverse"
    assert sync_after_direction("bidirectional", "bcWins") == "toDataverse"
    assert sync_after_direction("bidirectional", "dataverseWins") == "fromDataverse"
    assert sync_after_direction("bidirectional", "none") == "bidirectional"
