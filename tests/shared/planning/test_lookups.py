from shared.planning.lookups import unresolved_lookups

LOOKUPS = [("companyNumber", "companyNumber")]


def test_a_lookup_value_without_a_bc_key_is_unresolved() -> None:
    values = {
        "b1": {"companyNumber": "acc-1", "city": "X"},  # parent not coupled: left out of the payload
        "b2": {"companyNumber": "acc-2"},  # resolved
        "b3": {"companyNumber": None},  # cleared on purpose: written as ""
        "b4": {"city": "Y"},  # no lookup in this write
    }
    payloads = {"b1": {"city": "X"}, "b2": {"companyNumber": "C2"}, "b3": {"companyNumber": ""}, "b4": {"city": "Y"}}
    assert unresolved_lookups(LOOKUPS, values, payloads) == {"b1": ["companyNumber=acc-1"]}
    assert unresolved_lookups([], values, payloads) == {}
