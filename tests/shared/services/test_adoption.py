"""Creates under deterministic keys over the in-memory fakes: a found record is brought up to date before it
is coupled, and one coupled to another record is passed over for the next key (#16 items 2, 4, 6)."""

from __future__ import annotations

from shared.domain.model import Direction
from shared.planning.identity_keys import bc_number_for, dataverse_id_for
from shared.services import synchronize_now
from shared.services.coupling_service import CouplingService
from tests.fake_services import FakeRecordService, fake_engine


def _fakes(engine: object) -> tuple[FakeRecordService, FakeRecordService]:
    bc, dv = engine.bc, engine.dv  # type: ignore[attr-defined]
    assert isinstance(bc, FakeRecordService) and isinstance(dv, FakeRecordService)
    return bc, dv


async def test_create_new_after_uncoupling_brings_the_old_row_up_to_date() -> None:
    engine = fake_engine()
    bc, dv = _fakes(engine)
    svc = CouplingService(engine)
    b = bc.put("customers", {"displayName": "Old", "number": "C1", "phoneNumber": "1"})
    first = await svc.couple_create_new("CUSTOMER", bc_id=b)
    await svc.uncouple("CUSTOMER", b)
    bc.update("customers", b, displayName="New", phoneNumber="2")
    again = await svc.couple_create_new("CUSTOMER", bc_id=b)
    assert again.dataverse_id == first.dataverse_id  # the old row, adopted...
    assert (dv.get("accounts", again.dataverse_id)["name"], dv.get("accounts", again.dataverse_id)["telephone1"]) == (
        "New",
        "2",
    )  # ...only after it holds today's values
    assert again.dv_values.get("phoneNumber|telephone1") == "2"  # the baseline is what the row holds
    answer = (
        await synchronize_now.sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.BIDIRECTIONAL)
    ).answer()
    assert answer["results"][0]["status"] == "unchanged" and bc.get("customers", b)["phoneNumber"] == "2"


async def test_a_key_held_by_another_coupling_moves_to_the_next_key() -> None:
    engine = fake_engine()
    bc, dv = _fakes(engine)
    svc = CouplingService(engine)
    b1 = bc.put("customers", {"displayName": "One", "number": "C1"})
    b2 = bc.put("customers", {"displayName": "Two", "number": "C2"})
    old = (await svc.couple_create_new("CUSTOMER", bc_id=b1)).dataverse_id
    await svc.uncouple("CUSTOMER", b1)
    await svc.couple_existing("CUSTOMER", b2, old, sync_after=None)
    again = await svc.couple_create_new("CUSTOMER", bc_id=b1)
    assert again.dataverse_id == dataverse_id_for("CUSTOMER", b1, 1) != old
    assert dv.get("accounts", again.dataverse_id)["name"] == "One"
    assert (await engine.couplings.get_by_bc_id("CUSTOMER", b2)).dataverse_id == old


async def test_a_bc_number_held_by_another_coupling_moves_to_the_next_number() -> None:
    engine = fake_engine()
    bc, dv = _fakes(engine)
    bc.numbering["customers"] = "C"
    d = dv.put("accounts", {"name": "Squatted"})
    squatter = bc.put("customers", {"displayName": "Squatter", "number": bc_number_for(d)})
    other = dv.put("accounts", {"name": "Squatter"})
    await CouplingService(engine).couple_existing("CUSTOMER", squatter, other, sync_after=None)
    body = (await synchronize_now.sync_from_dataverse(engine, {"entityName": "account", "id": d})).answer()
    assert body["created"] is True and body["bcId"] != squatter
    assert bc.get("customers", body["bcId"])["number"] == bc_number_for(d, 1)
