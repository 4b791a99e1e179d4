"""Schemas of the simulated Business Central API v2.0 entities (real v2.0 field names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Fixed demo companies (ids are stable across runs so configs and tests can name them).
COMPANIES: list[dict[str, Any]] = [
    {
        "id": "7c1a1f0a-2f3b-4a51-9a6e-0c0de0000001",
        "systemVersion": "250101",
        "name": "CRONUS USA, Inc.",
        "displayName": "CRONUS USA, Inc.",
        "businessProfileId": "",
        "systemCreatedAt": "2026-01-01T00:00:00Z",
        "systemCreatedBy": "00000000-0000-0000-0000-000000000001",
        "systemModifiedAt": "2026-01-01T00:00:00Z",
        "systemModifiedBy": "00000000-0000-0000-0000-000000000001",
    },
    {
        "id": "7c1a1f0a-2f3b-4a51-9a6e-0c0de0000002",
        "systemVersion": "250101",
        "name": "My Company",
        "displayName": "My Company",
        "businessProfileId": "",
        "systemCreatedAt": "2026-01-01T00:00:00Z",
        "systemCreatedBy": "00000000-0000-0000-0000-000000000001",
        "systemModifiedAt": "2026-01-01T00:00:00Z",
        "systemModifiedBy": "00000000-0000-0000-0000-000000000001",
    },
]
COMPANY_FIELDS = frozenset(COMPANIES[0])

# BC serialises the blank option value of an enum as "_x0020_" (the XML-escaped space).
BLANK_OPTION = "_x0020_"


@dataclass(frozen=True)
class NumberSeries:
    """A BC number series: prefix + zero-padded counter, e.g. C00010, C00020, ..."""

    prefix: str
    width: int
    start: int
    step: int

    def format(self, n: int) -> str:
        return f"{self.prefix}{n:0{self.width}d}"


@dataclass(frozen=True)
class EntitySchema:
    name: str  # entity set name, e.g. "customers"
    defaults: dict[str, Any]  # every property except id/number/lastModifiedDateTime with its default
    series: NumberSeries
    read_only: frozenset[str] = frozenset({"id", "lastModifiedDateTime"})
    max_length: dict[str, int] = field(default_factory=dict)
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The natural key: "number" (a number series) or "code" (BC's code tables, entered by the user).
    key: str = "number"

    @property
    def fields(self) -> frozenset[str]:
        return frozenset({"id", self.key, "lastModifiedDateTime", *self.defaults})


_TEXT_LENGTHS = {
    "number": 20,
    "displayName": 100,
    "addressLine1": 100,
    "addressLine2": 50,
    "city": 30,
    "state": 30,
    "country": 10,
    "postalCode": 20,
    "phoneNumber": 30,
    "mobilePhoneNumber": 30,
    "email": 80,
    "website": 80,
    "currencyCode": 10,
    "companyNumber": 20,
    "companyName": 100,
    "itemCategoryCode": 20,
    "baseUnitOfMeasureCode": 10,
}

CUSTOMERS = EntitySchema(
    name="customers",
    defaults={
        "displayName": "",
        "type": "Company",
        "addressLine1": "",
        "addressLine2": "",
        "city": "",
        "state": "",
        "country": "",
        "postalCode": "",
        "phoneNumber": "",
        "email": "",
        "website": "",
        "taxLiable": False,
        "currencyCode": "",
        "blocked": BLANK_OPTION,
        "balanceDue": 0,
    },
    series=NumberSeries("C", 5, 10, 10),
    read_only=frozenset({"id", "lastModifiedDateTime", "balanceDue", "taxAreaDisplayName"}),
    max_length=_TEXT_LENGTHS,
    enums={"type": ("Company", "Person"), "blocked": (BLANK_OPTION, "Ship", "Invoice", "All")},
)

CONTACTS = EntitySchema(
    name="contacts",
    defaults={
        "type": "Company",
        "displayName": "",
        "companyNumber": "",
        "companyName": "",
        "contactBusinessRelation": "None",
        "addressLine1": "",
        "city": "",
        "country": "",
        "postalCode": "",
        "phoneNumber": "",
        "mobilePhoneNumber": "",
        "email": "",
        "website": "",
    },
    series=NumberSeries("CT", 6, 10, 10),
    read_only=frozenset({"id", "lastModifiedDateTime"}),  # companyName, contactBusinessRelation: editable in AL
    max_length=_TEXT_LENGTHS,
    # AL enum "Contact Business Relation" (BC serialises a space in a member name as _x0020_)
    enums={
        "type": ("Company", "Person"),
        "contactBusinessRelation": (
            "None",
            "Customer",
            "Vendor",
            "Bank_x0020_Account",
            "Employee",
            "Other",
            "Multiple",
        ),
    },
)

ITEMS = EntitySchema(
    name="items",
    defaults={
        "displayName": "",
        "type": "Inventory",
        "itemCategoryCode": "",
        "blocked": False,
        "baseUnitOfMeasureCode": "PCS",
        "unitPrice": 0,
        "unitCost": 0,
        "inventory": 0,
    },
    series=NumberSeries("", 0, 1000, 1),
    read_only=frozenset({"id", "lastModifiedDateTime", "inventory"}),
    max_length=_TEXT_LENGTHS,
    enums={"type": ("Inventory", "Service", "Non-Inventory")},
)

SCHEMAS: dict[str, EntitySchema] = {s.name: s for s in (CUSTOMERS, CONTACTS, ITEMS)}

# A custom API page (publisher/group/version), as an extension would publish it: served at
# .../api/contoso/fieldService/v1.0/companies(<id>)/serviceSites. Its key in SCHEMAS carries the API route.
CUSTOM_API = "contoso/fieldService/v1.0"
SERVICE_SITES = EntitySchema(
    name="serviceSites",
    defaults={
        "displayName": "",
        "addressLine1": "",
        "addressLine2": "",
        "city": "",
        "capacity": 0,
        "active": True,
        "siteManager": "",
    },
    series=NumberSeries("SS", 5, 10, 10),
    read_only=frozenset({"id", "lastModifiedDateTime", "siteManager"}),
    max_length={
        "number": 20,
        "displayName": 100,
        "addressLine1": 100,
        "addressLine2": 50,
        "city": 30,
        "siteManager": 50,
    },
)
SCHEMAS[f"{CUSTOM_API}/{SERVICE_SITES.name}"] = SERVICE_SITES


def api_of(key: str) -> str:
    """The API route of a SCHEMAS key: ``v2.0`` or ``publisher/group/version``."""
    return key.rsplit("/", 1)[0] if "/" in key else "v2.0"


# Business Central's default integration set beyond the three above (separate module; registered here).
from local.bc_sim.default_set import register_default_set  # noqa: E402

register_default_set(SCHEMAS)
