"""RecordCodec (shared/services/codec.py): BC values of many records with their lookups resolved through the
parent mapping's couplings, in one pass per lookup."""

from __future__ import annotations

from shared.domain.model import Coupling, RemoteRecord
from shared.services.engine import utcnow
from tests.fake_services import FakeRecordService, fake_engine

EUR_DV = "0000000a-0000-0000-0000-00000000e0e0"


async def test_bc_values_many_resolves_each_lookup_per_record() -> None:
    e = fake_engine()
    bc, dv = e.bc, e.dv
    assert isinstance(bc, FakeRecordService) and isinstance(dv, FakeRecordService)
    eur = bc.put("currencies", {"code": "EUR"})
    bc.put("currencies", {"code": "XYZ"})  # not coupled
    bc.put("companyInformation", {"currencyCode": "USD"})
    lcy_dv = dv.put("transactioncurrencies", {"isocurrencycode": "USD"})
    await e.couplings.couple(Coupling(mapping="CURRENCY", bc_id=eur, dataverse_id=EUR_DV, coupled_at=utcnow()))
    codec = e.codec(await e.registry.get("CUSTOMER"))
    recs = [
        RemoteRecord(id="b1", fields={"displayName": "One", "currencyCode": "EUR", "paymentTermsId": ""}),
        RemoteRecord(id="b2", fields={"displayName": "Two", "currencyCode": "", "salespersonCode": ""}),
        RemoteRecord(id="b3", fields={"displayName": "Three", "currencyCode": "XYZ"}),
        RemoteRecord(id="b4", fields={"displayName": "Four", "currencyCode": "EUR"}),
    ]
    out = await codec.bc_values_many(recs)
    currency = "currencyCode|transactioncurrencyid"
    assert {i: v[currency] for i, v in out.items()} == {"b1": EUR_DV, "b2": lcy_dv, "b3": None, "b4": EUR_DV}
    assert out["b1"]["displayName|name"] == "One" and out["b2"]["salespersonCode|ownerid"] is None
    assert out["b1"]["paymentTermsId|paymenttermscode"] is None  # blank: no parent
    assert codec.unresolved_parents(out["b3"], recs[2]) == ["currencyCode=XYZ"]
