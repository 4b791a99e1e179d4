"""API v2.0 entities of Business Central's default integration set beyond customers, contacts and items:
``salespeoplePurchasers``, ``currencies``, ``vendors``, ``paymentTerms``, ``shipmentMethods``,
``unitsOfMeasure``, ``opportunities`` and ``companyInformation`` (the company's local currency), plus the
fields of customers and items that refer to them.

Field sets are those of the API v2.0 pages (APIV2 - Salesperson/Purch. 30063, Currencies 30019, Vendors
30010, Payment Terms 30023, Shipment Methods 30024, Units of Measure 30030, Opportunities 30072, Company
Information 30027; see docs/simulators.md). Code tables are keyed by ``code``; a code or an id pointing at
a record that does not exist is refused as BC's table relations refuse it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from local.bc_sim.entities import BLANK_OPTION, EntitySchema, NumberSeries

if TYPE_CHECKING:
    from local.bc_sim.store import Store

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
BLANK_DATE = "0001-01-01"  # BC's blank date, as the API serialises it

# The address and contact fields vendors and the company information share with customers.
_ADDRESS: dict[str, Any] = {
    "addressLine1": "",
    "addressLine2": "",
    "city": "",
    "state": "",
    "country": "",
    "postalCode": "",
    "phoneNumber": "",
    "email": "",
    "website": "",
    "taxRegistrationNumber": "",
}
_CODE_SERIES = NumberSeries("X", 3, 1, 1)  # only used by /_sim/seed for code tables
_RO = frozenset({"id", "lastModifiedDateTime"})

SALESPEOPLE = EntitySchema(
    name="salespeoplePurchasers",
    defaults={
        "displayName": "",
        "email": "",
        "email2": "",
        "phoneNo": "",
        "jobTitle": "",
        "commisionPercent": 0,  # sic: the API page's name
        "privacyBlocked": False,
        "blocked": False,
    },
    series=NumberSeries("SP", 3, 1, 1),
    max_length={"code": 20, "displayName": 50, "email": 80, "email2": 80, "phoneNo": 30, "jobTitle": 30},
    key="code",
)

CURRENCIES = EntitySchema(
    name="currencies",
    defaults={"displayName": "", "symbol": "", "amountDecimalPlaces": "2:2", "amountRoundingPrecision": 0.01},
    series=_CODE_SERIES,
    max_length={"code": 10, "displayName": 30, "symbol": 10, "amountDecimalPlaces": 5},
    key="code",
)

PAYMENT_TERMS = EntitySchema(
    name="paymentTerms",
    defaults={
        "displayName": "",
        "dueDateCalculation": "",
        "discountDateCalculation": "",
        "discountPercent": 0,
        "calculateDiscountOnCreditMemos": False,
    },
    series=_CODE_SERIES,
    max_length={"code": 10, "displayName": 100, "dueDateCalculation": 32, "discountDateCalculation": 32},
    key="code",
)

SHIPMENT_METHODS = EntitySchema(
    name="shipmentMethods",
    defaults={"displayName": ""},
    series=_CODE_SERIES,
    max_length={"code": 10, "displayName": 100},
    key="code",
)

UNITS_OF_MEASURE = EntitySchema(
    name="unitsOfMeasure",
    defaults={"displayName": "", "internationalStandardCode": "", "symbol": ""},
    series=_CODE_SERIES,
    max_length={"code": 10, "displayName": 50, "internationalStandardCode": 10, "symbol": 10},
    key="code",
)

VENDORS = EntitySchema(
    name="vendors",
    defaults={
        "displayName": "",
        **_ADDRESS,
        "currencyId": EMPTY_GUID,
        "currencyCode": "",
        "irs1099Code": "",
        "paymentTermsId": EMPTY_GUID,
        "paymentMethodId": EMPTY_GUID,
        "taxLiable": False,
        "blocked": BLANK_OPTION,
        "balance": 0,
    },
    series=NumberSeries("V", 5, 10, 10),
    read_only=frozenset({"id", "lastModifiedDateTime", "balance"}),
    max_length={
        "number": 20,
        "displayName": 100,
        "addressLine1": 100,
        "addressLine2": 50,
        "city": 30,
        "state": 30,
        "country": 10,
        "postalCode": 20,
        "phoneNumber": 30,
        "email": 80,
        "website": 80,
        "taxRegistrationNumber": 20,
        "currencyCode": 10,
        "irs1099Code": 10,
    },
    enums={"blocked": (BLANK_OPTION, "Payment", "All")},
)

OPPORTUNITIES = EntitySchema(
    name="opportunities",
    defaults={
        "contactNumber": "",
        "contactName": "",
        "contactCompanyName": "",
        "salespersonCode": "",
        "description": "",
        "status": "Not_x0020_Started",
        "closed": False,
        "creationDate": "",
        "dateClosed": "",
        "calculatedCurrentValue": 0,
        "chancesOfSuccessPrc": 0,
        "completedPrc": 0,
        "estimatedClosingDate": "",
        "estimatedValue": 0,
        "systemCreatedAt": "",
    },
    series=NumberSeries("OP", 6, 10, 10),
    read_only=frozenset(
        {
            "id",
            "lastModifiedDateTime",
            "contactName",
            "contactCompanyName",
            "closed",
            "creationDate",
            "dateClosed",
            "calculatedCurrentValue",
            "chancesOfSuccessPrc",
            "completedPrc",
            "systemCreatedAt",
        }
    ),
    max_length={"number": 20, "contactNumber": 20, "salespersonCode": 20, "description": 100},
    enums={"status": ("Not_x0020_Started", "In_x0020_Progress", "Won", "Lost")},
)

COMPANY_INFORMATION = EntitySchema(
    name="companyInformation",
    defaults={
        "displayName": "",
        **_ADDRESS,
        "currencyCode": "",
        "currentFiscalYearStartDate": "",
        "industry": "",
    },
    series=NumberSeries("", 0, 0, 1),
    read_only=frozenset({"id", "lastModifiedDateTime", "currencyCode", "currentFiscalYearStartDate"}),
    max_length={"displayName": 100, "currencyCode": 10},
    key="id",
)

NEW_SCHEMAS = (
    SALESPEOPLE,
    CURRENCIES,
    PAYMENT_TERMS,
    SHIPMENT_METHODS,
    UNITS_OF_MEASURE,
    VENDORS,
    OPPORTUNITIES,
    COMPANY_INFORMATION,
)

# Fields the API v2.0 customers/items pages have and the integration maps (added where missing).
CUSTOMER_FIELDS: dict[str, Any] = {
    "salespersonCode": "",
    "creditLimit": 0,
    "currencyId": EMPTY_GUID,
    "paymentTermsId": EMPTY_GUID,
    "shipmentMethodId": EMPTY_GUID,
    "paymentMethodId": EMPTY_GUID,
    "taxRegistrationNumber": "",
    "taxAreaId": EMPTY_GUID,
    "taxAreaDisplayName": "",
}
CONTACT_FIELDS: dict[str, Any] = {
    "addressLine2": "",
    "state": "",
    "searchName": "",
    "privacyBlocked": False,
    "lastInteractionDate": BLANK_DATE,
}
ITEM_FIELDS: dict[str, Any] = {
    "displayName2": "",
    "itemCategoryId": EMPTY_GUID,
    "baseUnitOfMeasureId": EMPTY_GUID,
    "gtin": "",
    "priceIncludesTax": False,
    "taxGroupId": EMPTY_GUID,
    "taxGroupCode": "",
    "generalProductPostingGroupId": EMPTY_GUID,
    "generalProductPostingGroupCode": "",
    "inventoryPostingGroupId": EMPTY_GUID,
    "inventoryPostingGroupCode": "",
}

# Table relations: field -> (entity, field of that entity it must name). An id field and its code field
# are kept together, as the API pages do (setting currencyCode sets currencyId and the other way round).
RELATIONS: dict[str, dict[str, tuple[str, str]]] = {
    "customers": {
        "salespersonCode": ("salespeoplePurchasers", "code"),
        "currencyCode": ("currencies", "code"),
        "paymentTermsId": ("paymentTerms", "id"),
        "shipmentMethodId": ("shipmentMethods", "id"),
    },
    "vendors": {"currencyCode": ("currencies", "code"), "paymentTermsId": ("paymentTerms", "id")},
    "items": {"baseUnitOfMeasureCode": ("unitsOfMeasure", "code")},
    "opportunities": {"salespersonCode": ("salespeoplePurchasers", "code"), "contactNumber": ("contacts", "number")},
}
PAIRED_IDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # entity -> (code field, id field, related entity)
    "customers": (("currencyCode", "currencyId", "currencies"),),
    "vendors": (("currencyCode", "currencyId", "currencies"),),
    "items": (("baseUnitOfMeasureCode", "baseUnitOfMeasureId", "unitsOfMeasure"),),
}

# Every company has the units items default to, and its local currency (CRONUS USA: USD).
STANDARD_UNITS = (("PCS", "Piece", "EA"), ("BOX", "Box", "BX"), ("HOUR", "Hour", "HUR"))
LOCAL_CURRENCY = "USD"


def register_default_set(schemas: dict[str, EntitySchema]) -> None:
    for schema in NEW_SCHEMAS:
        schemas.setdefault(schema.name, schema)
    for entity, extra in (("customers", CUSTOMER_FIELDS), ("contacts", CONTACT_FIELDS), ("items", ITEM_FIELDS)):
        defaults = schemas[entity].defaults
        for name, value in extra.items():
            defaults.setdefault(name, value)
        schemas[entity].max_length.setdefault("salespersonCode", 20)
        schemas[entity].max_length.setdefault("taxRegistrationNumber", 20)
        schemas[entity].max_length.setdefault("searchName", 100)


def check_relations(store: Store, company_id: str, entity: str, row: dict[str, Any], changed: set[str]) -> None:
    """BC's table relations on the fields a write set: the related record must exist. Paired id/code fields
    follow each other."""
    for code_field, id_field, related in PAIRED_IDS.get(entity, ()):
        table = store.table(company_id, related)
        if code_field in changed and id_field not in changed:
            rid = table.by_number.get(row[code_field]) if row[code_field] else None
            row[id_field] = rid or EMPTY_GUID
        elif id_field in changed and id_field in row:
            value = str(row[id_field] or EMPTY_GUID).lower()
            other = table.rows.get(value)
            if value != EMPTY_GUID and other is None:
                raise _missing(entity, id_field, row[id_field], related)
            row[id_field] = value
            row[code_field] = other[table.key] if other else ""
    for name, (related, key) in RELATIONS.get(entity, {}).items():
        value = row.get(name)
        if name not in changed or value in (None, "", EMPTY_GUID):
            if name in row and key == "id" and value in (None, ""):
                row[name] = EMPTY_GUID
            continue
        table = store.table(company_id, related)
        found = table.rows.get(str(value).lower()) if key == "id" else table.by_number.get(value)
        if found is None:
            raise _missing(entity, name, value, related)
        if key == "id":
            row[name] = str(value).lower()
    if entity == "opportunities" and "contactNumber" in changed:
        contacts = store.table(company_id, "contacts")
        cid = contacts.by_number.get(row["contactNumber"]) if row["contactNumber"] else None
        contact = contacts.rows.get(cid) if cid else None
        row["contactName"] = contact["displayName"] if contact else ""
        row["contactCompanyName"] = contact["companyName"] if contact else ""


def _missing(entity: str, name: str, value: Any, related: str) -> Exception:
    from local.bc_sim.store import BCError

    return BCError(
        400,
        "Internal_RecordNotFound",
        f"The field {name} of table {entity} contains a value ({value}) that cannot be found in the related "
        f"table ({related}).",
    )


def seed_company(store: Store, company_id: str, display_name: str) -> None:
    """What every company has before anyone adds data: its information row and standard units."""
    info = store.table(company_id, "companyInformation")
    row = {"@odata.etag": store.new_etag(), "id": company_id, **COMPANY_INFORMATION.defaults}
    row.update(displayName=display_name, currencyCode=LOCAL_CURRENCY, lastModifiedDateTime=store.clock.next())
    info.put(row)
    units = store.table(company_id, "unitsOfMeasure")
    for i, (code, name, iso) in enumerate(STANDARD_UNITS):
        rid = f"a0e1b2c3-0000-4000-8000-{int(company_id[-4:], 16) * 16 + i:012d}"
        units.put(
            {
                "@odata.etag": store.new_etag(),
                "id": rid,
                "code": code,
                **UNITS_OF_MEASURE.defaults,
                "displayName": name,
                "internationalStandardCode": iso,
                "lastModifiedDateTime": store.clock.next(),
            }
        )
