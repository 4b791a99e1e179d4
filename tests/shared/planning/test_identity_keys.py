from shared.planning.identity_keys import adoptable, bc_number_for, dataverse_id_for


def test_bc_numbers_use_all_of_the_id() -> None:
    a = "95e6adf7-1bd7-44e7-8abc-000000000001"
    b = "95e6adf7-1bd7-44e7-8abc-000000000002"
    assert bc_number_for(a) != bc_number_for(b)
    assert len(bc_number_for(a)) == 20 and bc_number_for(a).startswith("DV")
    assert bc_number_for(a) == bc_number_for(a.upper()) == bc_number_for("{" + a + "}")


def test_each_attempt_gives_another_key_and_attempt_zero_is_stable() -> None:
    d = "95e6adf7-1bd7-44e7-8abc-000000000001"
    numbers = [bc_number_for(d, n) for n in range(4)]
    assert len(set(numbers)) == 4
    ids = [dataverse_id_for("CUSTOMER", "B1", n) for n in range(4)]
    assert len(set(ids)) == 4
    assert ids[0] == dataverse_id_for("CUSTOMER", "b1")  # what earlier releases created: still adopted


def test_a_found_record_is_adopted_only_when_nobody_else_holds_it() -> None:
    assert adoptable("b1", None)
    assert adoptable("b1", "b1")
    assert not adoptable("b1", "b2")
