"""Pure planning of documents (a header with its lines as one unit), tested with literals."""

from __future__ import annotations

from shared.mappings.config import load_mapping_file
from shared.mappings.documents import effective_mapping
from shared.planning.documents import (
    DESCRIPTION,
    WRITE_IN,
    DocumentState,
    LineState,
    document_id_for,
    line_id_for,
    line_mapping,
    plan_document,
)

SHIPPED = {m.name: m for m in load_mapping_file("shared/mappings/mappings.yaml").mappings}
ORDERS = SHIPPED["SALESORDER-ORDER"]
LINES = line_mapping(ORDERS).fields
H = {f.dataverse: f.key for f in ORDERS.fields}
L = {f.dataverse: f.key for f in LINES}


def _line(bc_id: str, product: str | None = "p1", qty: float = 1, price: float = 10, item: bool = True) -> LineState:
    values = {L["quantity"]: qty, L["priceperunit"]: price, L["manualdiscountamount"]: 0, L["sequencenumber"]: 10000}
    values |= {L["productid"]: product, L["uomid"]: "u1"}
    return LineState(bc_id, values, item, "Comment text")


def _header() -> dict:
    return {H["name"]: "S-ORD101001", H["ordernumber"]: "S-ORD101001", H["customerid"]: "a1",
            H["transactioncurrencyid"]: "c1", H["discountamount"]: 0}  # fmt: skip


def test_the_shipped_document_mappings_survive_the_run_time_layer() -> None:
    for name in ("SALESORDER-ORDER", "POSTEDSALESINV-INV"):
        m = effective_mapping(SHIPPED[name], None)
        assert m.lines is not None and m.lines == SHIPPED[name].lines
    assert SHIPPED["POSTEDSALESINV-INV"].create_once and not ORDERS.create_once


def test_a_new_document_is_created_with_every_line_and_deterministic_ids() -> None:
    doc = DocumentState("b1", _header(), [_line("l1"), _line("l2", "p2", 3, 7.5), _line("l3", None, 0, 0, item=False)])
    plan = plan_document("SALESORDER-ORDER", ORDERS.fields, LINES, doc)
    assert plan.action == "create" and plan.dv_id == document_id_for("SALESORDER-ORDER", "b1")
    assert plan.header[H["customerid"]] == "a1" and plan.header[H["ispricelocked"]] is True
    ids = [i for i, _ in plan.line_creates]
    assert ids == [line_id_for("SALESORDER-ORDER", x) for x in ("l1", "l2", "l3")]
    second = dict(plan.line_creates[1][1])
    assert (second[L["productid"]], second[L["quantity"]], second[L["priceperunit"]], second[WRITE_IN]) == (
        "p2", 3, 7.5, False,
    )  # fmt: skip
    write_in = plan.line_creates[2][1]
    assert write_in[WRITE_IN] is True and write_in[DESCRIPTION] == "Comment text" and L["productid"] not in write_in
    # The same document planned again (a retry) gets the same ids: never a second header.
    assert plan_document("SALESORDER-ORDER", ORDERS.fields, LINES, doc).dv_id == plan.dv_id


def test_an_unresolved_line_fails_the_whole_document_before_any_write() -> None:
    doc = DocumentState("b1", _header(), [_line("l1")], missing=["line 20000: itemId=..."])
    plan = plan_document("SALESORDER-ORDER", ORDERS.fields, LINES, doc)
    assert plan.action == "fail" and plan.error_code == "parent_not_coupled"
    assert not plan.header and not plan.writes_lines


def _coupled(lines: list[LineState], dv_lines: dict[str, dict]) -> DocumentState:
    dv_header = {k: v for k, v in _header().items()}
    return DocumentState("b1", _header(), lines, dv_id="d1", dv_header=dv_header, dv_lines=dv_lines)


def _dv(line: LineState) -> dict:
    plan = plan_document("M", ORDERS.fields, LINES, DocumentState("x", _header(), [line]))
    return {k: v for k, v in plan.line_creates[0][1].items() if k != L["ispriceoverridden"]}


def test_changed_line_updated_removed_line_deleted_new_line_created_unchanged_nothing() -> None:
    l1, l2, l3 = _line("l1"), _line("l2", "p2"), _line("l3", "p3")
    same = _coupled([l1, l2], {line_id_for("M", "l1"): _dv(l1), line_id_for("M", "l2"): _dv(l2)})
    assert plan_document("M", ORDERS.fields, LINES, same).action == "none"
    changed = _line("l1", qty=4)
    doc = _coupled([changed, l3], {line_id_for("M", "l1"): _dv(l1), line_id_for("M", "l2"): _dv(l2)})
    plan = plan_document("M", ORDERS.fields, LINES, doc)
    assert plan.action == "update" and not plan.header and plan.dv_id == "d1"
    assert plan.line_updates == [(line_id_for("M", "l1"), {L["quantity"]: 4})]
    assert plan.line_deletes == [line_id_for("M", "l2")]
    assert [i for i, _ in plan.line_creates] == [line_id_for("M", "l3")]


def test_a_coupled_posted_invoice_is_never_written_again() -> None:
    inv = SHIPPED["POSTEDSALESINV-INV"]
    lines = line_mapping(inv).fields
    doc = DocumentState("b1", {}, [], dv_id="d1", dv_header={})
    assert plan_document(inv.name, inv.fields, lines, doc, create_once=True).action == "none"
