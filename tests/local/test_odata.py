"""Unit tests of the shared OData helpers (local/odata.py)."""

from __future__ import annotations

from typing import Any

import pytest

from local.odata import (
    Condition,
    Guid,
    ODataError,
    decode_skiptoken,
    encode_skiptoken,
    parse_datetime,
    parse_filter,
    parse_maxpagesize,
    parse_orderby,
    parse_select,
    parse_top_skip,
    select_fields,
)

GUID = "5D115C9C-44E3-EA11-BB43-000D3A2FEADF"
ROWS: list[dict[str, Any]] = [
    {
        "id": GUID.lower(),
        "number": "C00010",
        "displayName": "Adatum Corporation",
        "balanceDue": 120.5,
        "blocked": " ",
        "taxLiable": True,
        "lastModifiedDateTime": "2026-11-25T09:12:03.123Z",
        "address": {"city": "Atlanta"},
        "email": None,
    },
    {
        "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "number": "C00020",
        "displayName": "Trey Research",
        "balanceDue": 0,
        "blocked": "All",
        "taxLiable": False,
        "lastModifiedDateTime": "2026-11-25T10:00:00Z",
        "address": {"city": "Chicago"},
        "email": "trey@example.com",
    },
    {
        "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "number": "C00030",
        "displayName": "O'Brien Ltd",
        "balanceDue": 99,
        "blocked": " ",
        "taxLiable": True,
        "lastModifiedDateTime": "2026-11-26T00:00:00+01:00",
        "address": {"city": "Dublin"},
        "email": "ob@example.com",
    },
]
FIELDS = set(ROWS[0])


def numbers(text: str) -> list[str]:
    pred = parse_filter(text, fields=FIELDS)
    return [r["number"] for r in ROWS if pred(r)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("number eq 'C00010'", ["C00010"]),
        ("number ne 'C00010'", ["C00020", "C00030"]),
        ("balanceDue gt 99", ["C00010"]),
        ("balanceDue ge 99", ["C00010", "C00030"]),
        ("balanceDue lt 99", ["C00020"]),
        ("balanceDue le 99.0", ["C00020", "C00030"]),
        ("taxLiable eq true and balanceDue gt 100", ["C00010"]),
        ("number eq 'C00010' or number eq 'C00030'", ["C00010", "C00030"]),
        ("not (number eq 'C00010')", ["C00020", "C00030"]),
        ("not number eq 'C00010' and taxLiable", ["C00030"]),
        ("number in ('C00010', 'C00020', 'X')", ["C00010", "C00020"]),
        ("startswith(displayName, 'Trey')", ["C00020"]),
        ("endswith(displayName, 'Ltd')", ["C00030"]),
        ("contains(displayName, 'tum')", ["C00010"]),
        ("contains(tolower(displayName), 'adatum')", ["C00010"]),
        ("toupper(number) eq 'C00020'", ["C00020"]),
        ("length(number) eq 6 and balanceDue eq 0", ["C00020"]),
        ("displayName eq 'O''Brien Ltd'", ["C00030"]),
        ("email eq null", ["C00010"]),
        ("email ne null", ["C00020", "C00030"]),
        ("address/city eq 'Dublin'", ["C00030"]),
        (f"id eq {GUID}", ["C00010"]),
        (f"id eq guid'{GUID.lower()}'", ["C00010"]),
        (f"id in ({GUID}, 7C9E6679-7425-40DE-944B-E07FC1F90AE7)", ["C00010", "C00030"]),
        ("lastModifiedDateTime gt 2026-11-25T09:12:03Z", ["C00010", "C00020", "C00030"]),
        ("lastModifiedDateTime gt 2026-11-25T09:12:03.123Z", ["C00020", "C00030"]),
        ("lastModifiedDateTime le 2026-11-25T09:12:03.1230000Z", ["C00010"]),
        # 2026-11-26T00:00+01:00 is 2026-11-25T23:00Z
        ("lastModifiedDateTime lt 2026-11-25T23:30:00Z and lastModifiedDateTime gt 2026-11-25T10:00:00Z", ["C00030"]),
        ("lastModifiedDateTime eq 2026-11-25T11:00:00+01:00", ["C00020"]),
        ("lastModifiedDateTime eq 2026-11-25T11:00:00 01:00", ["C00020"]),  # '+' decoded as space
        ("lastModifiedDateTime lt 2026-11-25", []),
        ("true", ["C00010", "C00020", "C00030"]),
    ],
)
def test_filter_selects_expected_rows(text: str, expected: list[str]) -> None:
    assert numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "number eq 'C00010",  # unterminated string
        "number eq 'C00010'' or 1 eq 1",  # quote-doubling injection stays inside an unterminated string
        "' or 1 eq 1",
        "number eq 'x' or 1 eq 1 '",
        "number eq",
        "(number eq 'x'",
        "number eq 'x')",
        "unknownField eq 1",
        "number eq 'x'; drop table",
        "startswith(number)",
        "frobnicate(number, 'x')",
        "number eq guid'not-a-guid'",
        "lastModifiedDateTime gt 2026-13-45T99:99:99Z",
        "number in (displayName)",
        "eq eq eq",
        "'abc'",
        "(" * 5000 + "true" + ")" * 5000,
    ],
)
def test_invalid_filters_raise_odata_error(text: str) -> None:
    with pytest.raises(ODataError):
        pred = parse_filter(text, fields=FIELDS)
        for row in ROWS:
            pred(row)


@pytest.mark.parametrize(
    "text",
    ["number eq 10", "balanceDue gt 'abc'", "lastModifiedDateTime gt 5", "taxLiable gt false", "number and true"],
)
def test_type_mismatch_raises_when_evaluated(text: str) -> None:
    pred = parse_filter(text, fields=FIELDS)
    with pytest.raises(ODataError):
        for row in ROWS:
            pred(row)


def test_injection_text_inside_string_is_a_plain_value() -> None:
    assert numbers("displayName eq 'x'' or 1 eq 1 or ''a'") == []


def test_conditions_are_reported_for_top_level_conjuncts() -> None:
    f = parse_filter("lastModifiedDateTime gt 2026-11-25T00:00:00Z and number in ('a','b') and 5 lt balanceDue")
    assert [(c.path, c.op) for c in f.conditions] == [
        ("lastModifiedDateTime", "gt"),
        ("number", "in"),
        ("balanceDue", "gt"),
    ]
    assert f.conditions[1] == Condition("number", "in", ["a", "b"])
    assert parse_filter("number eq 'a' or number eq 'b'").conditions == []
    assert f.properties == {"lastModifiedDateTime", "number", "balanceDue"}


def test_without_fields_unknown_properties_are_null() -> None:
    assert parse_filter("nothing eq null")({"a": 1}) is True


def test_orderby_select_top_skip() -> None:
    assert parse_orderby("lastModifiedDateTime, number desc") == [("lastModifiedDateTime", False), ("number", True)]
    assert parse_orderby(None) == []
    with pytest.raises(ODataError):
        parse_orderby("number sideways")
    with pytest.raises(ODataError):
        parse_orderby("nope", fields=FIELDS)
    assert parse_select("id,number", fields=FIELDS) == ["id", "number"]
    assert parse_select("*") is None
    with pytest.raises(ODataError):
        parse_select("id,nope", fields=FIELDS)
    row = {"@odata.etag": 'W/"x"', "id": "1", "number": "C1", "displayName": "A"}
    assert select_fields(row, ["number"]) == {"@odata.etag": 'W/"x"', "number": "C1"}
    assert select_fields(row, None) == row
    assert parse_top_skip("10", None) == (10, 0)
    assert parse_top_skip(None, "5") == (None, 5)
    with pytest.raises(ODataError):
        parse_top_skip("-1", None)


def test_prefer_and_skiptoken_helpers() -> None:
    assert parse_maxpagesize("odata.maxpagesize=500") == 500
    assert parse_maxpagesize('return=representation, odata.maxpagesize="20"') == 20
    assert parse_maxpagesize("return=minimal") is None
    assert parse_maxpagesize(None) is None
    state = {"after": ["2026-11-25T09:12:03.123Z", "abc"], "n": 3}
    token = encode_skiptoken(state)
    assert "=" not in token and "/" not in token
    assert decode_skiptoken(token) == state
    for bad in ("%%%", "bm90IGpzb24", encode_skiptoken({"a": 1})[:-3] + "!!"):
        with pytest.raises(ODataError):
            decode_skiptoken(bad)


def test_parse_datetime_forms() -> None:
    a = parse_datetime("2026-11-25T09:12:03.1234567Z")
    assert a.microsecond == 123456 and a.utcoffset() is not None
    assert parse_datetime("2026-11-25T10:12:03+01:00") == parse_datetime("2026-11-25T09:12:03Z")
    assert parse_datetime("2026-11-25T09:12:03") == parse_datetime("2026-11-25T09:12:03Z")


def test_dataverse_dialect_takes_the_in_function_and_refuses_the_in_operator() -> None:
    rows = [{"k": "a"}, {"k": "b"}, {"k": "c"}]
    f = parse_filter("Microsoft.Dynamics.CRM.In(PropertyName='k',PropertyValues=['a','c'])", dialect="dataverse")
    assert [r["k"] for r in rows if f(r)] == ["a", "c"]
    assert f.conditions and f.conditions[0].op == "in"
    with pytest.raises(ODataError):
        parse_filter("k in ('a')", dialect="dataverse")
    with pytest.raises(ODataError):  # BC has no such function
        parse_filter("Microsoft.Dynamics.CRM.In(PropertyName='k',PropertyValues=['a'])")
    with pytest.raises(ODataError):
        parse_filter("Microsoft.Dynamics.CRM.In(PropertyName=k,PropertyValues=['a'])", dialect="dataverse")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a eq 1 or a eq 2", True),
        ("(a eq 1 and b eq 2) or (a eq 3 and b eq 4)", True),
        ("a eq 1 and (b eq 2 or b eq 3)", True),
        ("a eq 1 or b eq 2", False),
        ("a eq 1 or a eq 2 or b eq 3", False),
    ],
)
def test_bc_dialect_refuses_or_across_different_fields(text: str, ok: bool) -> None:
    if ok:
        parse_filter(text)
    else:
        with pytest.raises(ODataError, match="different fields"):
            parse_filter(text)
    parse_filter(text, dialect="dataverse")  # Dataverse allows it


def test_or_across_fields_is_evaluated_in_the_dataverse_dialect() -> None:
    pred = parse_filter(
        "((balanceDue gt 0) and (taxLiable eq true)) or blocked eq 'All'", fields=FIELDS, dialect="dataverse"
    )
    assert [r["number"] for r in ROWS if pred(r)] == ["C00010", "C00020", "C00030"]


def test_the_in_function_matches_as_equality_does_for_text_guids_nulls_and_mismatched_types() -> None:
    g = Guid("6F1C2D3E-4A5B-4C6D-8E7F-A0B1C2D3E4F5")
    rows = [
        {"k": g},
        {"k": "Acme"},
        {"k": "acme"},
        {"k": None},
        {"k": "other"},
        {"k": Guid("00000000-0000-0000-0000-000000000001")},
    ]
    values = "PropertyValues=['6f1c2d3e-4a5b-4c6d-8e7f-a0b1c2d3e4f5','ACME']"
    exact = parse_filter(f"Microsoft.Dynamics.CRM.In(PropertyName='k',{values})", dialect="dataverse")
    assert [r["k"] for r in rows if exact(r)] == [g]  # a GUID ignores case; text is exact here
    folded = parse_filter(
        f"Microsoft.Dynamics.CRM.In(PropertyName='k',{values})", dialect="dataverse", case_insensitive=True
    )
    assert [r["k"] for r in rows if folded(r)] == [g, "Acme", "acme"]  # Dataverse's collation ignores case
    not_in = parse_filter(
        f"Microsoft.Dynamics.CRM.NotIn(PropertyName='k',{values})", dialect="dataverse", case_insensitive=True
    )
    assert [r["k"] for r in rows if not_in(r)] == [None, "other", rows[5]["k"]]
    with pytest.raises(ODataError):  # a number against text literals: a type mismatch, as with eq
        exact({"k": 5})
    empty = parse_filter("Microsoft.Dynamics.CRM.In(PropertyName='k',PropertyValues=[])", dialect="dataverse")
    assert not any(empty(r) for r in [*rows, {"k": 5}])
