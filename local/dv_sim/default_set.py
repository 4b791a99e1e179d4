"""Dataverse tables and behaviour behind Business Central's default integration set: ``transactioncurrencies``,
``uomschedules``/``uoms``, ``opportunities``, the user, owner, currency and unit attributes of the existing
tables, the option sets of ``account`` and the metadata API on them (option-set reads, ``InsertOptionValue``).

Rules as the real service applies them (Microsoft Learn: transactioncurrency, uomschedule, uom, product,
opportunity entity references; "Insert a new option value" / InsertOptionValue action; see docs/simulators.md):

- ``SystemRequired`` attributes must be given on create (a product without unit group and default unit is
  refused; a currency needs its code, name, symbol, rate and precision);
- a new unit group gets its base unit (named ``baseuomname``, quantity 1) created with it;
- a product's default unit must belong to its unit group;
- a picklist value must be one of the attribute's options; ``InsertOptionValue`` adds one (values from
  100,000,000, the default publisher's option value prefix 10000) and refuses a label already present;
- a new row's owner is the calling user unless ``ownerid`` is bound; ``isocurrencycode`` is unique;
- a new row of a table with money attributes gets the base currency unless ``transactioncurrencyid`` is
  bound (Learn "Currency entities": the user's default currency, else the organization's base currency;
  the application user has no personal default).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from local.dv_sim.store import _MONEY, _PICKLIST, _SYSTEM, APP_USER_ID, DvError, FieldDef, Lookup, TableDef, _s

if TYPE_CHECKING:
    from local.dv_sim.store import Store

BASE_CURRENCY_ID = "6f1c2d3e-4a5b-4c6d-8e7f-a0b1c2d3e4f5"
FIRST_CUSTOM_OPTION = 100_000_000


_OWNER = {"_ownerid_value": FieldDef("guid", read_only=True)}
_CURRENCY = {"_transactioncurrencyid_value": FieldDef("guid", read_only=True)}
OWNER_LOOKUP = Lookup("ownerid", "ownerid", "systemusers")
CURRENCY_LOOKUP = Lookup("transactioncurrencyid", "transactioncurrencyid", "transactioncurrencies")

NEW_TABLES = (
    TableDef(
        "transactioncurrencies",
        "transactioncurrency",
        "transactioncurrencyid",
        {
            "transactioncurrencyid": FieldDef("guid"),
            "isocurrencycode": _s(5, "SystemRequired"),
            "currencyname": _s(100, "SystemRequired"),
            "currencysymbol": _s(10, "SystemRequired"),
            "exchangerate": FieldDef("decimal", required="SystemRequired"),
            "currencyprecision": FieldDef("int", required="SystemRequired"),
            **_SYSTEM,
        },
        alternate_keys=("isocurrencycode",),
    ),
    TableDef(
        "uomschedules",
        "uomschedule",
        "uomscheduleid",
        {
            "uomscheduleid": FieldDef("guid"),
            "name": _s(200, "SystemRequired"),
            "baseuomname": _s(100, "SystemRequired"),
            "description": FieldDef("string", 2000, attribute_type="Memo"),
            **_SYSTEM,
        },
        alternate_keys=("name",),
    ),
    TableDef(
        "uoms",
        "uom",
        "uomid",
        {
            "uomid": FieldDef("guid"),
            "name": _s(100, "SystemRequired"),
            "quantity": FieldDef("decimal", required="SystemRequired"),
            "isschedulebaseuom": FieldDef("bool", read_only=True),
            "_uomscheduleid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
            "_baseuom_value": FieldDef("guid", read_only=True),
            "createdon": FieldDef("datetime", read_only=True),
            "modifiedon": FieldDef("datetime", read_only=True),
            "versionnumber": FieldDef("int", read_only=True, attribute_type="BigInt"),
        },
        lookups=(Lookup("uomscheduleid", "uomscheduleid", "uomschedules"), Lookup("baseuom", "baseuom", "uoms")),
    ),
    TableDef(
        "opportunities",
        "opportunity",
        "opportunityid",
        {
            "opportunityid": FieldDef("guid"),
            "name": _s(300, "ApplicationRequired"),
            "description": FieldDef("string", 2000, attribute_type="Memo"),
            "estimatedvalue": _MONEY,
            "estimatedclosedate": FieldDef("datetime"),
            "closeprobability": FieldDef("int"),
            "_parentcontactid_value": FieldDef("guid", read_only=True),
            "_parentaccountid_value": FieldDef("guid", read_only=True),
            **_OWNER,
            **_CURRENCY,
            **_SYSTEM,
        },
        lookups=(
            Lookup("parentcontactid", "parentcontactid", "contacts"),
            Lookup("parentaccountid", "parentaccountid", "accounts"),
            OWNER_LOOKUP,
            CURRENCY_LOOKUP,
        ),
    ),
)

# Attributes the standard tables have and the default set maps (added to the simulator's definitions).
ADDED_FIELDS: dict[str, dict[str, FieldDef]] = {
    "accounts": {
        "address1_shippingmethodcode": _PICKLIST,
        **_OWNER,
        **_CURRENCY,
    },
    "contacts": {
        "address1_line2": _s(250),
        "address1_stateorprovince": _s(50),
        "websiteurl": _s(200),
        **_OWNER,
        **_CURRENCY,
    },
    "products": {
        "quantitydecimal": FieldDef("int", required="SystemRequired"),
        "producttypecode": _PICKLIST,
        "stockvolume": FieldDef("decimal"),
        "stockweight": FieldDef("decimal"),
        "vendorpartnumber": _s(100),
        "_defaultuomscheduleid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
        "_defaultuomid_value": FieldDef("guid", read_only=True, required="SystemRequired"),
        **_CURRENCY,
    },
    "systemusers": {
        "internalemailaddress": _s(100, "SystemRequired"),
        "mobilephone": _s(64),
        "islicensed": FieldDef("bool"),
        "isintegrationuser": FieldDef("bool"),
        "accessmode": _PICKLIST,
    },
}
ADDED_LOOKUPS: dict[str, tuple[Lookup, ...]] = {
    "accounts": (OWNER_LOOKUP, CURRENCY_LOOKUP),
    "contacts": (OWNER_LOOKUP, CURRENCY_LOOKUP),
    "products": (
        Lookup("defaultuomscheduleid", "defaultuomscheduleid", "uomschedules"),
        Lookup("defaultuomid", "defaultuomid", "uoms"),
        CURRENCY_LOOKUP,
    ),
}

# Option sets as a new organization has them: (table logical name, attribute) -> {value: label}.
STANDARD_OPTIONS: dict[tuple[str, str], dict[int, str]] = {
    ("account", "paymenttermscode"): {1: "Net 30", 2: "2% 10, Net 30", 3: "Net 45", 4: "Net 60"},
    ("account", "address1_freighttermscode"): {1: "FOB", 2: "No Charge"},
    ("account", "address1_shippingmethodcode"): {
        1: "Airborne",
        2: "DHL",
        3: "FedEx",
        4: "UPS",
        5: "Postal Mail",
        6: "Full Load",
        7: "Will Call",
    },
    ("account", "customertypecode"): {
        1: "Competitor",
        2: "Consultant",
        3: "Customer",
        4: "Investor",
        5: "Partner",
        6: "Influencer",
        7: "Press",
        8: "Prospect",
        9: "Reseller",
        10: "Supplier",
        11: "Vendor",
        12: "Other",
    },
    ("product", "producttypecode"): {1: "Sales Inventory", 2: "Miscellaneous Charges", 3: "Services", 4: "Flat Fees"},
    ("systemuser", "accessmode"): {
        0: "Read-Write",
        1: "Administrative",
        2: "Read",
        3: "Support User",
        4: "Non-interactive",
    },
}


def register_default_set(tables: dict[str, TableDef]) -> None:
    for table in NEW_TABLES:
        tables.setdefault(table.entity_set, table)
    for entity_set, extra in ADDED_FIELDS.items():
        for name, fdef in extra.items():
            tables[entity_set].fields.setdefault(name, fdef)
    for entity_set, lookups in ADDED_LOOKUPS.items():
        known = {lk.nav for lk in tables[entity_set].lookups}
        tables[entity_set].lookups = tables[entity_set].lookups + tuple(lk for lk in lookups if lk.nav not in known)


class OptionSets:
    """The organization's picklist options (metadata, changed by InsertOptionValue)."""

    def __init__(self) -> None:
        self.options: dict[tuple[str, str], dict[int, str]] = {}
        self.reset()

    def reset(self) -> None:
        self.options = {k: dict(v) for k, v in STANDARD_OPTIONS.items()}

    def check(self, logical: str, name: str, value: Any) -> None:
        options = self.options.get((logical, name))
        if options is not None and value is not None and value not in options:
            raise DvError(
                400,
                "0x8004431a",
                f"A validation error occurred. The value {value} of '{name}' on record of type '{logical}' is "
                "outside the valid range.",
            )

    def insert(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise DvError(400, "0x80060888", "InsertOptionValue expects a JSON object.")
        key = (body.get("EntityLogicalName"), body.get("AttributeLogicalName"))
        if body.get("OptionSetName"):
            raise DvError(400, "0x80060888", "Global option sets are not simulated; name the entity and attribute.")
        options = self.options.get(key)  # type: ignore[arg-type]
        if options is None:
            raise DvError(404, "0x80040217", f"The picklist attribute {key[1]} of entity {key[0]} was not found.")
        label = _label_of(body.get("Label"))
        if not label:
            raise DvError(400, "0x80060888", "A Label with at least one LocalizedLabel is required.")
        if any(existing.lower() == label.lower() for existing in options.values()):
            raise DvError(400, "0x80044363", f"An option with the label '{label}' already exists in {key[1]}.")
        value = body.get("Value")
        if value is None:
            value = max([FIRST_CUSTOM_OPTION - 1, *options]) + 1
        if not isinstance(value, int) or isinstance(value, bool) or value in options:
            raise DvError(400, "0x80044363", f"The option value {value} is not valid or already used in {key[1]}.")
        options[value] = label
        return {"@odata.context": "$metadata#Microsoft.Dynamics.CRM.InsertOptionValueResponse", "NewOptionValue": value}

    def attribute(self, logical: str, name: str) -> dict[str, Any]:
        options = self.options.get((logical, name))
        if options is None:
            raise DvError(404, "0x80040217", f"The picklist attribute {name} of entity {logical} was not found.")
        return {
            "@odata.type": "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            "LogicalName": name,
            "EntityLogicalName": logical,
            "AttributeType": "Picklist",
            "OptionSet": {
                "Name": f"{logical}_{name}",
                "IsGlobal": False,
                "OptionSetType": "Picklist",
                "Options": [
                    {
                        "Value": value,
                        "Label": {
                            "LocalizedLabels": [{"Label": label, "LanguageCode": 1033}],
                            "UserLocalizedLabel": {"Label": label, "LanguageCode": 1033},
                        },
                    }
                    for value, label in sorted(options.items())
                ],
            },
        }


def _label_of(label: Any) -> str | None:
    if not isinstance(label, dict):
        return None
    localized = label.get("LocalizedLabels") or []
    for item in localized:
        if isinstance(item, dict) and isinstance(item.get("Label"), str) and item["Label"].strip():
            return str(item["Label"]).strip()
    return None


_ATTRIBUTE_PATH = re.compile(
    r"^EntityDefinitions\((?:LogicalName=)?'(?P<entity>[a-z0-9_]+)'\)/Attributes\((?:LogicalName=)?'(?P<attr>[a-z0-9_]+)'\)"
    r"/Microsoft\.Dynamics\.CRM\.PicklistAttributeMetadata$"
)


def serve_metadata(
    options: OptionSets, method: str, path: str, body: bytes | None, query: Any
) -> dict[str, Any] | None:
    """InsertOptionValue and a picklist attribute's options (``$expand=OptionSet``); None: not ours."""
    if path == "InsertOptionValue":
        if method != "POST":
            raise DvError(405, "0x80060888", "InsertOptionValue is an action: use POST.")
        try:
            parsed = json.loads(body or b"null")
        except ValueError as exc:
            raise DvError(400, "0x80060888", f"Error identified in Payload provided by the user: {exc}") from exc
        return options.insert(parsed)
    match = _ATTRIBUTE_PATH.match(path)
    if match is None:
        return None
    if method != "GET":
        raise DvError(405, "0x80060888", "The metadata is read-only through this endpoint (simulator).")
    expand = str(query.get("$expand") or "")
    row = options.attribute(match.group("entity"), match.group("attr"))
    if "OptionSet" not in expand:
        row.pop("OptionSet")
    return row


def check_create(store: Store, options: OptionSets, definition: TableDef, values: dict[str, Any]) -> dict[str, Any]:
    """Required attributes, picklist ranges and unit consistency of a new row; the values with defaults."""
    values = dict(values)
    if "_ownerid_value" in definition.fields and not values.get("_ownerid_value"):
        values["_ownerid_value"] = APP_USER_ID
    # Documents require their currency (SystemRequired below); other tables with money default to the base one.
    currency = definition.fields.get("_transactioncurrencyid_value")
    has_money = any(fdef.attribute_type == "Money" for fdef in definition.fields.values())
    if currency is not None and currency.required != "SystemRequired" and has_money:
        values["_transactioncurrencyid_value"] = values.get("_transactioncurrencyid_value") or BASE_CURRENCY_ID
    missing = [
        name
        for name, fdef in definition.fields.items()
        if fdef.required == "SystemRequired"
        and name not in ("statecode", definition.primary_key)
        and values.get(name) in (None, "")
    ]
    if missing:
        name = missing[0].removeprefix("_").removesuffix("_value")
        raise DvError(
            400,
            "0x80040200" if definition.logical != "product" else "0x80040203",
            f"A required attribute is missing: '{name}' of entity '{definition.logical}' must have a value.",
        )
    _check_values(store, options, definition, values)
    return values


def check_update(
    store: Store, options: OptionSets, definition: TableDef, old: dict[str, Any], values: dict[str, Any]
) -> None:
    for name, fdef in definition.fields.items():
        if fdef.required == "SystemRequired" and name in values and values[name] in (None, ""):
            raise DvError(400, "0x80040200", f"The attribute '{name}' of '{definition.logical}' cannot be empty.")
    _check_values(store, options, definition, {**old, **values}, changed=set(values))


def _check_values(
    store: Store, options: OptionSets, definition: TableDef, row: dict[str, Any], changed: set[str] | None = None
) -> None:
    for name, value in row.items():
        if changed is None or name in changed:
            options.check(definition.logical, name, value)
    if definition.logical == "product" and row.get("_defaultuomid_value"):
        unit = store.get("uoms", row["_defaultuomid_value"])
        if unit is not None and unit["_uomscheduleid_value"] != row.get("_defaultuomscheduleid_value"):
            raise DvError(
                400,
                "0x80048213",
                "The default unit does not belong to the product's unit group (defaultuomid/defaultuomscheduleid).",
            )
    if definition.logical == "uom" and changed is None and row.get("quantity") is not None and row["quantity"] <= 0:
        raise DvError(400, "0x80048211", "The quantity of a unit must be greater than zero.")


def after_create(store: Store, definition: TableDef, row: dict[str, Any]) -> None:
    """A new unit group brings its base unit (Dataverse creates it with the group)."""
    if definition.logical != "uomschedule":
        return
    store.create(
        "uoms",
        {
            "name": row["baseuomname"],
            "quantity": 1,
            "isschedulebaseuom": True,
            "_uomscheduleid_value": row["uomscheduleid"],
        },
    )


DEFAULT_UNIT_GROUP_ID = "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def seed_organization(store: Store) -> None:
    """What a new organization has: its base currency (US Dollar, as a US organization is provisioned) and the
    "Default Unit" unit group with its "Primary Unit"."""
    store.create(
        "uomschedules",
        {"uomscheduleid": DEFAULT_UNIT_GROUP_ID, "name": "Default Unit", "baseuomname": "Primary Unit"},
    )
    store.create(
        "transactioncurrencies",
        {
            "transactioncurrencyid": BASE_CURRENCY_ID,
            "isocurrencycode": "USD",
            "currencyname": "US Dollar",
            "currencysymbol": "$",
            "exchangerate": 1,
            "currencyprecision": 2,
        },
    )


def default_unit_values(store: Store) -> dict[str, Any]:
    """A product's unit fields in the "Default Unit" group (seeded products, as a maker's form defaults them)."""
    base = next(
        (u for u in store.tables["uoms"].rows.values() if u["_uomscheduleid_value"] == DEFAULT_UNIT_GROUP_ID), None
    )
    return {
        "_defaultuomscheduleid_value": DEFAULT_UNIT_GROUP_ID,
        "_defaultuomid_value": base["uomid"] if base else None,
        "quantitydecimal": 2,
    }
