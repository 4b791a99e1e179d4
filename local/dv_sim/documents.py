"""Dataverse sales documents: ``salesorders`` + ``salesorderdetails``, ``invoices`` + ``invoicedetails`` and
``pricelevels`` (Microsoft Learn entity references salesorder, salesorderdetail, invoice, invoicedetail,
pricelevel).

Rules as the real service applies them:

- an order or invoice needs its ``customerid`` (account or contact), ``pricelevelid`` (the price list
  products are sold from) and ``transactioncurrencyid``; an order needs a ``name``; a price list needs a
  name and a currency;
- a detail names its document; an existing product (``productid`` + ``uomid``, ``isproductoverridden``
  false) or a write-in (``isproductoverridden`` true + ``productdescription``, no product); a quantity;
  ``priceperunit`` is kept when ``ispriceoverridden`` is true, else it is the product's list price (the
  simulator reads ``product.price`` instead of the price list's items);
- amounts are computed (``baseamount`` = price x quantity, ``extendedamount`` = base - manual discount; the
  document's ``totallineitemamount``/``totalamount`` follow its details);
- the details of a closed document (an order fulfilled, invoiced or canceled; an invoice closed, paid or
  canceled) cannot be created, changed or deleted; an active or submitted order's can;
- ``statecode``/``statuscode`` follow each table's state model (salesorder 0 Active, 1 Submitted,
  2 Canceled, 3 Fulfilled, 4 Invoiced; invoice 0 Active, 1 Closed, 2 Paid, 3 Canceled; pricelevel 0 Active,
  1 Inactive); a status must belong to its state, and a new row's status defaults to its state's first.
  Deviation: the real service changes an order's or invoice's state through messages (FulfillSalesOrder,
  CancelSalesOrder, ...); the simulator also takes a PATCH of statecode/statuscode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from local.dv_sim.store import _MONEY, _SYSTEM, TABLES, DvError, FieldDef, Lookup, TableDef, _s

if TYPE_CHECKING:
    from local.dv_sim.store import Store

# table logical name -> state -> its statuses (the first is the default)
STATES: dict[str, dict[int, tuple[int, ...]]] = {
    "salesorder": {0: (1, 2), 1: (3,), 2: (4,), 3: (100001, 100002), 4: (100003,)},
    "invoice": {0: (1, 2, 4, 5, 6), 1: (3, 7), 2: (100001, 100002), 3: (100003,)},
    "pricelevel": {0: (100001,), 1: (100002,)},
}
# States in which a document is still open (its details can change): an order active or submitted, an invoice active.
OPEN_STATES = {"salesorders": (0, 1), "invoices": (0,)}

_CURRENCY = Lookup("transactioncurrencyid", "transactioncurrencyid", "transactioncurrencies")
_PRICELEVEL = Lookup("pricelevelid", "pricelevelid", "pricelevels")
_CUSTOMER = (
    Lookup("customerid", "customerid_account", "accounts"),
    Lookup("customerid", "customerid_contact", "contacts"),
)
_OWNER = Lookup("ownerid", "ownerid", "systemusers")
_RO_MONEY = FieldDef("decimal", read_only=True, attribute_type="Money")
_HEADER_FIELDS: dict[str, FieldDef] = {
    "name": _s(300, "ApplicationRequired"),
    "description": FieldDef("string", 2000, attribute_type="Memo"),
    "_customerid_value": FieldDef("guid", read_only=True, attribute_type="Customer", required="SystemRequired"),
    "_pricelevelid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
    "_transactioncurrencyid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
    "_ownerid_value": FieldDef("guid", read_only=True, attribute_type="Owner"),
    "ispricelocked": FieldDef("bool"),
    "discountamount": _MONEY,
    "freightamount": _MONEY,
    "totallineitemamount": _RO_MONEY,
    "totalamount": _RO_MONEY,
    **_SYSTEM,
}
_DETAIL_FIELDS: dict[str, FieldDef] = {
    "_productid_value": FieldDef("guid", read_only=True),
    "_uomid_value": FieldDef("guid", read_only=True),
    "isproductoverridden": FieldDef("bool"),
    "productdescription": _s(500),
    "description": FieldDef("string", 2000, attribute_type="Memo"),
    "quantity": FieldDef("decimal", required="ApplicationRequired"),
    "priceperunit": _MONEY,
    "ispriceoverridden": FieldDef("bool"),
    "manualdiscountamount": _MONEY,
    "baseamount": _RO_MONEY,
    "extendedamount": _RO_MONEY,
    "lineitemnumber": FieldDef("int"),
    "sequencenumber": FieldDef("int"),
    "createdon": FieldDef("datetime", read_only=True),
    "modifiedon": FieldDef("datetime", read_only=True),
    "versionnumber": FieldDef("int", read_only=True, attribute_type="BigInt"),
}
_DETAIL_LOOKUPS = (Lookup("productid", "productid", "products"), Lookup("uomid", "uomid", "uoms"))

NEW_TABLES = (
    TableDef(
        "pricelevels",
        "pricelevel",
        "pricelevelid",
        {
            "pricelevelid": FieldDef("guid"),
            "name": _s(100, "SystemRequired"),
            "description": FieldDef("string", 2000, attribute_type="Memo"),
            "begindate": FieldDef("datetime"),
            "enddate": FieldDef("datetime"),
            "_transactioncurrencyid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
            **_SYSTEM,
        },
        lookups=(_CURRENCY,),
    ),
    TableDef(
        "salesorders",
        "salesorder",
        "salesorderid",
        {
            "salesorderid": FieldDef("guid"),
            "ordernumber": _s(100),
            "requestdeliveryby": FieldDef("datetime"),
            "datefulfilled": FieldDef("datetime"),
            "submitdate": FieldDef("datetime"),
            "_opportunityid_value": FieldDef("guid", read_only=True),
            **_HEADER_FIELDS,
        },
        lookups=(*_CUSTOMER, _PRICELEVEL, _CURRENCY, _OWNER, Lookup("opportunityid", "opportunityid", "opportunities")),
    ),
    TableDef(
        "salesorderdetails",
        "salesorderdetail",
        "salesorderdetailid",
        {
            "salesorderdetailid": FieldDef("guid"),
            "_salesorderid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
            **_DETAIL_FIELDS,
        },
        lookups=(Lookup("salesorderid", "salesorderid", "salesorders"), *_DETAIL_LOOKUPS),
    ),
    TableDef(
        "invoices",
        "invoice",
        "invoiceid",
        {
            "invoiceid": FieldDef("guid"),
            "invoicenumber": _s(100),
            "duedate": FieldDef("datetime"),
            "datedelivered": FieldDef("datetime"),
            "_salesorderid_value": FieldDef("guid", read_only=True),
            **_HEADER_FIELDS,
        },
        lookups=(*_CUSTOMER, _PRICELEVEL, _CURRENCY, _OWNER, Lookup("salesorderid", "salesorderid", "salesorders")),
    ),
    TableDef(
        "invoicedetails",
        "invoicedetail",
        "invoicedetailid",
        {
            "invoicedetailid": FieldDef("guid"),
            "_invoiceid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
            **_DETAIL_FIELDS,
        },
        lookups=(Lookup("invoiceid", "invoiceid", "invoices"), *_DETAIL_LOOKUPS),
    ),
)
# detail table -> (its document's lookup attribute, the document's table)
PARENT_OF = {
    "salesorderdetails": ("_salesorderid_value", "salesorders"),
    "invoicedetails": ("_invoiceid_value", "invoices"),
}
DETAILS_OF = {parent: (attr, detail) for detail, (attr, parent) in PARENT_OF.items()}
_NUMBER = {"salesorders": ("ordernumber", "ORD"), "invoices": ("invoicenumber", "INV")}


def register(tables: dict[str, TableDef]) -> None:
    for table in NEW_TABLES:
        tables.setdefault(table.entity_set, table)


def state_codes(logical: str) -> tuple[int, ...]:
    return tuple(STATES.get(logical, {0: (), 1: ()}))


def _bad(message: str, code: str = "0x80040203") -> DvError:
    return DvError(400, code, message)


def check(
    store: Store, definition: TableDef, row: dict[str, Any], old: dict[str, Any] | None, changed: set[str] = frozenset()
) -> None:
    """The document rules of a create (``old`` None) or an update; ``row`` is the row as it will be."""
    entity = definition.entity_set
    states = STATES.get(definition.logical)
    if states is not None:
        state = row.get("statecode") or 0
        statuses = states.get(state, ())
        defaulted = (old is None and row.get("statuscode") in (None, 1)) or (
            old is not None and row.get("statecode") != old.get("statecode") and "statuscode" not in changed
        )
        if defaulted and statuses and row.get("statuscode") not in statuses:
            row["statuscode"] = statuses[0]
        elif row.get("statuscode") not in statuses:
            raise _bad(
                f"{row.get('statuscode')} is not a valid status code for state code {state} on {definition.logical}."
            )
    if entity in _NUMBER and not row.get("name"):
        raise _bad(
            f"A required attribute is missing: 'name' of entity '{definition.logical}' must have a value.", "0x80040200"
        )
    if entity in _NUMBER and old is None:
        field, prefix = _NUMBER[entity]
        if not row.get(field):
            row[field] = f"{prefix}-{store.tables[entity].next_seq + 1000:05d}-SIM"
    if entity not in PARENT_OF:
        return
    attr, parent_set = PARENT_OF[entity]
    parent = store.get(parent_set, row.get(attr) or "")
    if parent is None:
        raise _bad(f"The {definition.logical} must belong to a {parent_set[:-1]}.", "0x80040200")
    if old is not None and old.get(attr) != row.get(attr):
        raise _bad(f"The {parent_set[:-1]} of a {definition.logical} cannot be changed.")
    _check_open(parent_set, parent)
    if row.get("isproductoverridden"):
        if row.get("_productid_value"):
            raise _bad("A write-in product (isproductoverridden) cannot name a product.", "0x80048050")
        if not row.get("productdescription"):
            raise _bad("A write-in product needs a productdescription.", "0x80048051")
    else:
        product = store.get("products", row.get("_productid_value") or "")
        if product is None:
            raise _bad("The product is required unless it is a write-in product (isproductoverridden).", "0x80048052")
        if product.get("statecode") not in (0, None):
            raise _bad("The product is not active and cannot be added to a sales document.", "0x80048053")
        if not row.get("_uomid_value"):
            raise _bad("The unit (uomid) is required for an existing product.", "0x80048054")
        unit = store.get("uoms", row["_uomid_value"])
        if unit is not None and unit.get("_uomscheduleid_value") != product.get("_defaultuomscheduleid_value"):
            raise _bad("The unit does not belong to the product's unit group.", "0x80048213")
        if not row.get("ispriceoverridden"):
            row["priceperunit"] = product.get("price") or 0
    if row.get("quantity") is None:
        missing = f"A required attribute is missing: 'quantity' of entity '{definition.logical}' must have a value."
        raise _bad(missing, "0x80040200")
    base = round((row.get("priceperunit") or 0) * row["quantity"], 2)
    row["baseamount"] = base
    row["extendedamount"] = round(base - (row.get("manualdiscountamount") or 0), 2)


def check_delete(store: Store, entity: str, row: dict[str, Any]) -> None:
    if entity in PARENT_OF:
        attr, parent_set = PARENT_OF[entity]
        parent = store.get(parent_set, row.get(attr) or "")
        if parent is not None:
            _check_open(parent_set, parent)


def _check_open(parent_set: str, parent: dict[str, Any]) -> None:
    if parent.get("statecode") not in (*OPEN_STATES.get(parent_set, (0,)), None):
        raise _bad(
            f"The {parent_set[:-1]} is closed (statecode {parent['statecode']}): its details cannot be changed.",
            "0x80043b1e",
        )


def after_write(store: Store, entity: str, row: dict[str, Any], *, deleted: bool = False) -> None:
    """A detail changed: its document's totals follow. A document deleted: its details go with it."""
    if entity in PARENT_OF:
        attr, parent_set = PARENT_OF[entity]
        parent = store.get(parent_set, row.get(attr) or "")
        if parent is None:
            return
        pid = parent[f"{parent_set[:-1]}id"]
        total = round(
            sum(d.get("extendedamount") or 0 for d in store.tables[entity].rows.values() if d.get(attr) == pid), 2
        )
        store.update(
            parent_set,
            pid,
            {"totallineitemamount": total, "totalamount": round(total - (parent.get("discountamount") or 0), 2)},
        )
    elif entity in DETAILS_OF and deleted:
        attr, detail_set = DETAILS_OF[entity]
        pk = f"{entity[:-1]}id"
        for d in [d for d in store.tables[detail_set].rows.values() if d.get(attr) == row[pk]]:
            store.delete(detail_set, d[f"{detail_set[:-1]}id"])


register(TABLES)
