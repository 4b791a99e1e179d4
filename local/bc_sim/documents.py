"""Sales documents of the BC simulator: ``salesOrders`` + ``salesOrderLines`` and ``salesInvoices`` +
``salesInvoiceLines`` (API v2.0 pages APIV2 - Sales Orders 30028, Sales Order Lines 30043, Sales Invoices
30012, Sales Invoice Lines 30046; field names of Learn's resource types salesOrder, salesOrderLine,
salesInvoice, salesInvoiceLine).

Rules as BC applies them:

- a document names an existing customer (``customerId`` or ``customerNumber``; the other, ``customerName``
  and, unless given, ``currencyCode`` follow the customer);
- lines are served under their document (``salesOrders({id})/salesOrderLines``) and at the top level, where
  a filter on ``documentId`` or ``id`` is required ("You must specify an Id or a Document Id to get the
  lines.", APIV2 line pages' OnFindRecord);
- an ``Item`` line names an existing item (``itemId`` or ``lineObjectNumber``); description, unit price and
  unit of measure default from the item; amounts are quantity x unit price - discount (no tax simulated);
  the header's totals follow its lines, and a line change stamps the header's ``lastModifiedDateTime``
  (the API's entity buffers are recalculated when a line changes);
- ``status`` is read-only: ``Microsoft.NAV.release`` / ``Microsoft.NAV.reopen`` set an order's status (BC
  releases in its pages; the contract's local stack offers the actions), ``Microsoft.NAV.ship`` ships every
  line (``shippedQuantity``, ``fullyShipped``; a simulator extension as well), ``Microsoft.NAV.shipAndInvoice``
  posts an order (a posted invoice with ``orderId``/``orderNumber``; the fully invoiced order is deleted)
  and ``salesInvoices({id})/Microsoft.NAV.post`` posts a draft invoice;
- a released order's lines cannot be changed (BC's TestField on Status), and a posted invoice (status
  ``Open``, ``Paid``, ...) and its lines are read-only.

Deviation: the line entities carry ``lastModifiedDateTime`` (the simulator's tables index it); the real line
pages have none, so clients must not ``$select`` it on lines.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from local.bc_sim.entities import EntitySchema, NumberSeries

if TYPE_CHECKING:
    from local.bc_sim.store import BCError, Store

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
BLANK_DATE = "0001-01-01"

_PARTY: dict[str, Any] = {
    "externalDocumentNumber": "",
    "customerId": EMPTY_GUID,
    "customerNumber": "",
    "customerName": "",
    "billToName": "",
    "billToCustomerId": EMPTY_GUID,
    "billToCustomerNumber": "",
    "shipToName": "",
    "shipToContact": "",
    "sellToAddressLine1": "",
    "sellToAddressLine2": "",
    "sellToCity": "",
    "sellToCountry": "",
    "sellToState": "",
    "sellToPostCode": "",
    "currencyId": EMPTY_GUID,
    "currencyCode": "",
    "pricesIncludeTax": False,
    "paymentTermsId": EMPTY_GUID,
    "shipmentMethodId": EMPTY_GUID,
    "salesperson": "",
    "discountAmount": 0,
    "discountAppliedBeforeTax": False,
    "totalAmountExcludingTax": 0,
    "totalTaxAmount": 0,
    "totalAmountIncludingTax": 0,
    "phoneNumber": "",
    "email": "",
    "postingDate": BLANK_DATE,
}
_TOTALS = ("customerName", "totalAmountExcludingTax", "totalTaxAmount", "totalAmountIncludingTax")
_LENGTHS = {
    "number": 20,
    "externalDocumentNumber": 35,
    "customerNumber": 20,
    "customerName": 100,
    "currencyCode": 10,
    "lineObjectNumber": 20,
    "description": 100,
    "description2": 50,
    "unitOfMeasureCode": 10,
}

ORDER_STATUS = ("Draft", "In_x0020_Review", "Open", "Released")
INVOICE_STATUS = ("Draft", "In_x0020_Review", "Open", "Paid", "Canceled", "Corrective")
LINE_TYPES = ("Comment", "Account", "Item", "Resource", "Fixed_x0020_Asset", "Charge")

SALES_ORDERS = EntitySchema(
    name="salesOrders",
    defaults={
        **_PARTY,
        "orderDate": BLANK_DATE,
        "requestedDeliveryDate": BLANK_DATE,
        "partialShipping": False,
        "fullyShipped": False,
        "status": "Draft",
    },
    series=NumberSeries("S-ORD", 6, 101001, 1),
    read_only=frozenset({"id", "lastModifiedDateTime", "status", "fullyShipped", *_TOTALS}),
    max_length=_LENGTHS,
    enums={"status": ORDER_STATUS},
)

SALES_INVOICES = EntitySchema(
    name="salesInvoices",
    defaults={
        **_PARTY,
        "invoiceDate": BLANK_DATE,
        "dueDate": BLANK_DATE,
        "customerPurchaseOrderReference": "",
        "orderId": EMPTY_GUID,
        "orderNumber": "",
        "remainingAmount": 0,
        "status": "Draft",
    },
    series=NumberSeries("S-INV", 6, 102001, 1),
    read_only=frozenset(
        {"id", "lastModifiedDateTime", "status", "orderId", "orderNumber", "remainingAmount", *_TOTALS}
    ),
    max_length=_LENGTHS,
    enums={"status": INVOICE_STATUS},
)

_LINE: dict[str, Any] = {
    "documentId": EMPTY_GUID,
    "sequence": 0,
    "itemId": EMPTY_GUID,
    "accountId": EMPTY_GUID,
    "lineType": "Comment",
    "lineObjectNumber": "",
    "description": "",
    "description2": "",
    "unitOfMeasureId": EMPTY_GUID,
    "unitOfMeasureCode": "",
    "quantity": 0,
    "unitPrice": 0,
    "discountAmount": 0,
    "discountPercent": 0,
    "discountAppliedBeforeTax": False,
    "amountExcludingTax": 0,
    "taxCode": "",
    "taxPercent": 0,
    "totalTaxAmount": 0,
    "amountIncludingTax": 0,
    "invoiceDiscountAllocation": 0,
    "netAmount": 0,
    "netTaxAmount": 0,
    "netAmountIncludingTax": 0,
    "shipmentDate": BLANK_DATE,
    "itemVariantId": EMPTY_GUID,
    "locationId": EMPTY_GUID,
}
_LINE_RO = frozenset(
    {
        "id",
        "lastModifiedDateTime",
        "amountExcludingTax",
        "totalTaxAmount",
        "amountIncludingTax",
        "netAmount",
        "netTaxAmount",
        "netAmountIncludingTax",
        "invoiceDiscountAllocation",
    }
)

SALES_ORDER_LINES = EntitySchema(
    name="salesOrderLines",
    defaults={**_LINE, "shippedQuantity": 0, "invoicedQuantity": 0, "invoiceQuantity": 0, "shipQuantity": 0},
    series=NumberSeries("", 0, 0, 1),
    read_only=_LINE_RO | {"shippedQuantity", "invoicedQuantity"},
    max_length=_LENGTHS,
    enums={"lineType": LINE_TYPES},
    key="id",
)

SALES_INVOICE_LINES = EntitySchema(
    name="salesInvoiceLines",
    defaults=dict(_LINE),
    series=NumberSeries("", 0, 0, 1),
    read_only=_LINE_RO,
    max_length=_LENGTHS,
    enums={"lineType": LINE_TYPES},
    key="id",
)

SCHEMAS = (SALES_ORDERS, SALES_ORDER_LINES, SALES_INVOICES, SALES_INVOICE_LINES)
LINES_OF = {"salesOrders": "salesOrderLines", "salesInvoices": "salesInvoiceLines"}
HEADER_OF = {v: k for k, v in LINES_OF.items()}
POSTED_SERIES = NumberSeries("PS-INV", 6, 103001, 1)


def register(schemas: dict[str, EntitySchema]) -> None:
    for schema in SCHEMAS:
        schemas.setdefault(schema.name, schema)


def _error(status: int, code: str, message: str) -> BCError:
    from local.bc_sim.store import BCError  # the store imports this module

    return BCError(status, code, message)


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def _dialog(message: str) -> BCError:
    return _error(400, "Application_DialogException", message)


def _posted_error() -> BCError:
    return _dialog("The invoice has been posted and can no longer be modified.")


def _released_error(header: dict[str, Any]) -> BCError:
    return _error(
        400,
        "Application_TestFieldError",
        f"Status must be equal to 'Open'  in Sales Header: Document Type=Order, No.={header['number']}. "
        f"Current value is 'Released'.",
    )


def is_posted(entity: str, row: dict[str, Any]) -> bool:
    return entity == "salesInvoices" and row.get("status") not in ("Draft", "In_x0020_Review")


# ---------------------------------------------------------------------------------------------- write hooks
def before_write(
    store: Store, company_id: str, entity: str, old: dict[str, Any] | None, row: dict[str, Any], changed: set[str]
) -> None:
    """Derivations and BC's checks of a document or line write (``old`` None: a create)."""
    if entity in LINES_OF:
        if old is not None and is_posted(entity, old):
            raise _posted_error()
        if old is not None and entity == "salesOrders" and old["status"] == "Released":
            raise _released_error(old)
        _derive_header(store, company_id, entity, row, changed, creating=old is None)
    elif entity in HEADER_OF:
        header = _header_of(store, company_id, entity, row)
        if old is not None and old["documentId"] != row["documentId"]:
            raise _error(400, "BadRequest", "The documentId of a line cannot be changed.")
        _check_header_open(entity, header)
        _derive_line(store, company_id, entity, row, changed, creating=old is None)


def before_delete(store: Store, company_id: str, entity: str, row: dict[str, Any]) -> None:
    if entity in LINES_OF and is_posted(entity, row):
        raise _posted_error()
    if entity in HEADER_OF:
        _check_header_open(entity, _header_of(store, company_id, entity, row))


def after_write(store: Store, company_id: str, entity: str, row: dict[str, Any], *, deleted: bool = False) -> None:
    """A line changed: its header's totals and timestamp follow. A header deleted: its lines go with it."""
    if entity in HEADER_OF:
        header_entity = HEADER_OF[entity]
        header = store.table(company_id, header_entity).rows.get(row["documentId"])
        if header is not None:
            _touch_header(store, company_id, header_entity, header)
    elif entity in LINES_OF and deleted:
        lines = store.table(company_id, LINES_OF[entity])
        for line in [r for r in lines.rows.values() if r["documentId"] == row["id"]]:
            _raw_remove(store, company_id, LINES_OF[entity], line)


def _check_header_open(entity: str, header: dict[str, Any]) -> None:
    if is_posted(HEADER_OF[entity], header):
        raise _posted_error()
    if HEADER_OF[entity] == "salesOrders" and header["status"] == "Released":
        raise _released_error(header)


def _header_of(store: Store, company_id: str, entity: str, row: dict[str, Any]) -> dict[str, Any]:
    header_entity = HEADER_OF[entity]
    doc_id = str(row.get("documentId") or EMPTY_GUID).lower()
    row["documentId"] = doc_id
    header = store.table(company_id, header_entity).rows.get(doc_id)
    if header is None:
        raise _error(
            400,
            "Internal_RecordNotFound",
            f"The {header_entity[:-1]} with documentId '{doc_id}' does not exist.",
        )
    return header


def _derive_header(
    store: Store, company_id: str, entity: str, row: dict[str, Any], changed: set[str], *, creating: bool
) -> None:
    customers = store.table(company_id, "customers")
    customer: dict[str, Any] | None = None
    if "customerId" in changed and row["customerId"] not in ("", EMPTY_GUID):
        customer = customers.rows.get(str(row["customerId"]).lower())
        if customer is None:
            raise _error(400, "Internal_RecordNotFound", f"The customer with id '{row['customerId']}' does not exist.")
    elif "customerNumber" in changed and row["customerNumber"]:
        cid = customers.by_number.get(row["customerNumber"])
        customer = customers.rows.get(cid) if cid else None
        if customer is None:
            raise _error(
                400,
                "Internal_RecordNotFound",
                f"The Customer does not exist. Identification fields and values: No.='{row['customerNumber']}'",
            )
    elif creating:
        raise _dialog('A "customerNumber" or a "customerId" must be provided.')
    if customer is not None:
        row.update(
            customerId=customer["id"],
            customerNumber=customer["number"],
            customerName=customer["displayName"],
            billToCustomerId=customer["id"],
            billToCustomerNumber=customer["number"],
            billToName=customer["displayName"],
            shipToName=customer["displayName"],
        )
        if "currencyCode" not in changed and "currencyId" not in changed:
            row["currencyCode"] = customer.get("currencyCode", "")
            row["currencyId"] = customer.get("currencyId", EMPTY_GUID)
    currencies = store.table(company_id, "currencies")
    if "currencyId" in changed and "currencyCode" not in changed:
        cur = currencies.rows.get(str(row["currencyId"]).lower())
        if row["currencyId"] not in ("", EMPTY_GUID) and cur is None:
            raise _error(400, "Internal_RecordNotFound", f"The currency with id '{row['currencyId']}' does not exist.")
        row["currencyCode"] = cur["code"] if cur else ""
    elif row.get("currencyCode"):
        rid = currencies.by_number.get(row["currencyCode"])
        if rid is None:
            raise _error(
                400,
                "Internal_RecordNotFound",
                f"The field currencyCode of table {entity} contains a value ({row['currencyCode']}) that cannot "
                "be found in the related table (currencies).",
            )
        row["currencyId"] = rid
    else:
        row["currencyId"] = EMPTY_GUID
    if creating:
        date_field = "orderDate" if entity == "salesOrders" else "invoiceDate"
        if row.get(date_field) in ("", BLANK_DATE):
            row[date_field] = _today()


def _derive_line(
    store: Store, company_id: str, entity: str, row: dict[str, Any], changed: set[str], *, creating: bool
) -> None:
    lines = store.table(company_id, entity)
    if creating and not row.get("sequence"):
        siblings = [r["sequence"] for r in lines.rows.values() if r["documentId"] == row["documentId"]]
        row["sequence"] = max(siblings, default=0) + 10000
    if (
        creating
        and "lineType" not in changed
        and (row.get("itemId") not in ("", EMPTY_GUID, None) or row.get("lineObjectNumber"))
    ):
        row["lineType"] = "Item"
    items = store.table(company_id, "items")
    if row["lineType"] == "Item":
        item: dict[str, Any] | None = None
        if "itemId" in changed and row["itemId"] not in ("", EMPTY_GUID):
            item = items.rows.get(str(row["itemId"]).lower())
            if item is None:
                raise _error(400, "Internal_RecordNotFound", f"The item with id '{row['itemId']}' does not exist.")
        elif "lineObjectNumber" in changed and row["lineObjectNumber"]:
            iid = items.by_number.get(row["lineObjectNumber"])
            item = items.rows.get(iid) if iid else None
            if item is None:
                raise _error(
                    400,
                    "Internal_RecordNotFound",
                    f"The Item does not exist. Identification fields and values: No.='{row['lineObjectNumber']}'",
                )
        elif creating or "lineType" in changed:
            raise _dialog('An "itemId" or a "lineObjectNumber" must be provided for an Item line.')
        if item is not None:
            row.update(itemId=item["id"], lineObjectNumber=item["number"])
            if "description" not in changed:
                row["description"] = item["displayName"]
            if "unitPrice" not in changed:
                row["unitPrice"] = item["unitPrice"]
            if "unitOfMeasureCode" not in changed and "unitOfMeasureId" not in changed:
                row["unitOfMeasureCode"] = item.get("baseUnitOfMeasureCode", "")
        units = store.table(company_id, "unitsOfMeasure")
        uid = units.by_number.get(row["unitOfMeasureCode"]) if row["unitOfMeasureCode"] else None
        if row["unitOfMeasureCode"] and uid is None:
            raise _error(
                400,
                "Internal_RecordNotFound",
                "The Unit of Measure does not exist. Identification fields and values: "
                f"Code='{row['unitOfMeasureCode']}'",
            )
        row["unitOfMeasureId"] = uid or EMPTY_GUID
    else:
        row["itemId"] = EMPTY_GUID
        if row["lineType"] == "Comment":
            if row["quantity"] or row["unitPrice"]:
                raise _dialog("A Comment line cannot have a quantity or a unit price.")
            row.update(lineObjectNumber="", unitOfMeasureCode="", unitOfMeasureId=EMPTY_GUID)
        elif not row["lineObjectNumber"]:
            raise _dialog(f'A "lineObjectNumber" must be provided for a line of type {row["lineType"]}.')
    gross = row["quantity"] * row["unitPrice"]
    if "discountPercent" in changed and "discountAmount" not in changed:
        row["discountAmount"] = round(gross * row["discountPercent"] / 100, 2)
    amount = round(gross - row["discountAmount"], 2)
    row.update(
        amountExcludingTax=amount,
        amountIncludingTax=amount,
        netAmount=amount,
        netAmountIncludingTax=amount,
        totalTaxAmount=0,
        netTaxAmount=0,
    )


def _touch_header(store: Store, company_id: str, entity: str, header: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Replaces a header row with its totals recalculated (plus ``values``), new ETag and timestamp."""
    table = store.table(company_id, entity)
    lines = store.table(company_id, LINES_OF[entity])
    total = round(sum(r["amountExcludingTax"] for r in lines.rows.values() if r["documentId"] == header["id"]), 2)
    new = dict(header)
    new.update(values)
    new.update(
        totalAmountExcludingTax=round(total - new["discountAmount"], 2),
        totalAmountIncludingTax=round(total - new["discountAmount"], 2),
        totalTaxAmount=0,
    )
    if entity == "salesInvoices":
        new["remainingAmount"] = 0 if new["status"] == "Paid" else new["totalAmountIncludingTax"]
    new["@odata.etag"] = store.new_etag()
    new["lastModifiedDateTime"] = store.clock.next()
    table.remove(header["id"])
    table.put(new)

    def undo() -> None:
        table.remove(new["id"])
        table.put(header)

    store._record_undo(undo)
    store._notify(store.company(company_id)["id"], entity, new["id"], "updated", new["lastModifiedDateTime"])
    return new


def _raw_remove(store: Store, company_id: str, entity: str, row: dict[str, Any]) -> None:
    table = store.table(company_id, entity)
    table.remove(row["id"])
    store._record_undo(lambda: table.put(row))


def lines_of(store: Store, company_id: str, entity: str, doc_id: str) -> list[dict[str, Any]]:
    table = store.table(company_id, LINES_OF[entity])
    return sorted((r for r in table.rows.values() if r["documentId"] == doc_id), key=lambda r: r["sequence"])


# ---------------------------------------------------------------------------------------------- bound actions
ACTIONS = {
    "salesOrders": ("release", "reopen", "ship", "shipAndInvoice"),
    "salesInvoices": ("post",),
}


def run_action(store: Store, company_id: str, entity: str, doc_id: str, action: str) -> dict[str, Any] | None:
    """A bound action of a document (``Microsoft.NAV.<action>``); returns the row it produced, if any."""
    if action not in ACTIONS.get(entity, ()):
        raise _error(400, "BadRequest_MethodNotFound", f"The action 'Microsoft.NAV.{action}' is not bound to {entity}.")
    header = store.get(company_id, entity, doc_id)
    lines = lines_of(store, company_id, entity, header["id"])
    if action == "reopen":
        return _touch_header(store, company_id, entity, header, status="Draft")
    if action in ("release", "shipAndInvoice", "post") and not any(r["quantity"] for r in lines):
        kind = "Order" if entity == "salesOrders" else "Invoice"
        raise _dialog(
            f"There is nothing to release for the document of type {kind} with the number {header['number']}."
        )
    if action == "release":
        return _touch_header(store, company_id, entity, header, status="Released")
    if action == "ship":  # simulator extension (BC ships in its pages): everything shipped, the order released
        lines_table = store.table(company_id, "salesOrderLines")
        for line in lines:
            new = {**line, "shippedQuantity": line["quantity"], "@odata.etag": store.new_etag()}
            lines_table.remove(line["id"])
            lines_table.put(new)
            store._record_undo(lambda old=line, n=new: (lines_table.remove(n["id"]), lines_table.put(old)))
        return _touch_header(store, company_id, entity, header, status="Released", fullyShipped=True)
    if action == "post":
        if header["status"] not in ("Draft", "In_x0020_Review"):
            raise _posted_error()
        return _post_invoice(store, company_id, header, lines)
    return _ship_and_invoice(store, company_id, header, lines)


def _posted_number(store: Store, company_id: str) -> str:
    counters: dict[str, int] = store.__dict__.setdefault("_posted_invoice_numbers", {})
    n = counters.get(company_id, POSTED_SERIES.start)
    counters[company_id] = n + POSTED_SERIES.step
    return POSTED_SERIES.format(n)


def _post_invoice(store: Store, company_id: str, header: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Posting a draft: the posted invoice keeps its id (the API shows drafts and posted invoices alike),
    gets the posted number series and status Open."""
    number = _posted_number(store, company_id)
    return _touch_header(store, company_id, "salesInvoices", header, status="Open", postingDate=_today(), number=number)


def _ship_and_invoice(
    store: Store, company_id: str, order: dict[str, Any], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """Posting an order (ship and invoice everything): a posted invoice with the order's lines and a link to
    the order; the fully invoiced order is deleted, as BC deletes it after posting."""
    import uuid

    invoices = store.table(company_id, "salesInvoices")
    inv_lines = store.table(company_id, "salesInvoiceLines")
    copied = {k: v for k, v in order.items() if k in SALES_INVOICES.defaults}
    stamp = store.clock.next()
    invoice = {
        "@odata.etag": store.new_etag(),
        "id": str(uuid.uuid4()),
        **SALES_INVOICES.defaults,
        **copied,
        "number": _posted_number(store, company_id),
        "invoiceDate": _today(),
        "postingDate": _today(),
        "orderId": order["id"],
        "orderNumber": order["number"],
        "status": "Open",
        "remainingAmount": order["totalAmountIncludingTax"],
        "lastModifiedDateTime": stamp,
    }
    invoices.put(invoice)
    store._record_undo(lambda: invoices.remove(invoice["id"]))
    for line in lines:
        new = {k: v for k, v in line.items() if k in SALES_INVOICE_LINES.defaults}
        row = {
            "@odata.etag": store.new_etag(),
            **SALES_INVOICE_LINES.defaults,
            **new,
            "id": str(uuid.uuid4()),
            "documentId": invoice["id"],
            "lastModifiedDateTime": store.clock.next(),
        }
        inv_lines.put(row)
        store._record_undo(lambda rid=row["id"]: inv_lines.remove(rid))
    company = store.company(company_id)["id"]
    store._notify(company, "salesInvoices", invoice["id"], "created", stamp)
    for line in lines:
        _raw_remove(store, company_id, "salesOrderLines", line)
    orders = store.table(company_id, "salesOrders")
    orders.remove(order["id"])
    store._record_undo(lambda: orders.put(order))
    store._notify(company, "salesOrders", order["id"], "deleted", store.clock.next())
    return invoice


# ---------------------------------------------------------------------------------------------- /_sim/seed
def seed(store: Store, company_id: str, entity: str, count: int, fields: dict[str, Any]) -> list[str]:
    """``count`` documents of the company's customers and items (round robin), each with ``lines`` (a field of
    the seed body, default 1..5 by turns) item lines. ``status``: ``Released`` (orders: the default),
    ``Draft``, or for invoices ``Open`` (posted: the default) / ``Draft``. ``itemIds``: only these items on
    the lines; ``customerNumber``: every document for that customer."""
    fields = dict(fields)
    per_doc = fields.pop("lines", None)
    only_items = {str(i).lower() for i in fields.pop("itemIds", None) or ()}
    status = fields.pop("status", "Released" if entity == "salesOrders" else "Open")
    customers = [r for r in store.table(company_id, "customers").rows.values() if r["blocked"] in ("", "_x0020_")]
    items = [
        r
        for r in store.table(company_id, "items").rows.values()
        if not r["blocked"] and (not only_items or r["id"] in only_items)
    ]
    if not customers or not items:
        raise _error(400, "BadRequest", f"Seeding {entity} needs customers and items in the company first.")
    ids: list[str] = []
    for n in range(count):
        customer = customers[n % len(customers)]
        header = store.create(company_id, entity, {"customerNumber": customer["number"], **fields})
        lines = int(per_doc) if per_doc is not None else 1 + n % 5
        for k in range(lines):
            item = items[(n + k) % len(items)]
            store.create(
                company_id, LINES_OF[entity], {"documentId": header["id"], "itemId": item["id"], "quantity": k + 1}
            )
        if entity == "salesOrders" and status == "Released":
            run_action(store, company_id, entity, header["id"], "release")
        elif entity == "salesInvoices" and status != "Draft":
            run_action(store, company_id, entity, header["id"], "post")
        ids.append(header["id"])
    return ids
