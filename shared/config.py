"""Settings of the service, read from the environment (app settings in Azure, `.local/` env locally).

Read lazily through `get_settings()` (cached); nothing here runs at import time. Every setting has the
local stack's value as its default so `make run` and the tests need no extra configuration; in Azure the
app settings in `infra/bicep` override them.
"""

from __future__ import annotations

import functools
import os
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = PROJECT_ROOT / ".local"

LOCAL_TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
LOCAL_CLIENT_ID = "local-sync-app"
LOCAL_CLIENT_SECRET = "local-dev-secret"  # noqa: S105 -- the local token authority's demo client; not a real secret
# The local stack's user-assigned managed identity (the function app's identity for Azure resources).
LOCAL_MANAGED_IDENTITY_CLIENT_ID = "00000000-0000-0000-0000-0000000000b1"
# The audience Entra expects on a workload identity (managed identity) token used as a client assertion.
FEDERATED_TOKEN_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 -- an audience, not a secret

# Token audiences (scope = audience + "/.default").
STORAGE_AUDIENCE = "https://storage.azure.com"
SERVICEBUS_AUDIENCE = "https://servicebus.azure.net"
BC_AUDIENCE = "https://api.businesscentral.dynamics.com"


class AuthMode(StrEnum):
    """How the Entra app registration (the identity BC and Dataverse accept) proves itself.

    `FEDERATED` (the default in Azure): the managed identity's token for `api://AzureADTokenExchange` is the
    app's client assertion, nothing to store or rotate. `CERTIFICATE`: a PEM from Key Vault (or a file).
    `SECRET`: local development only. `MANAGED_IDENTITY` is the mode of the managed-identity token provider
    itself; as `SYNC_AUTH_MODE` it is refused (BC and Dataverse do not accept the identity's own tokens).
    """

    SECRET = "secret"  # noqa: S105 -- a mode name, not a secret
    CERTIFICATE = "certificate"
    FEDERATED = "federated"
    MANAGED_IDENTITY = "managed_identity"


class AzureIdentity(StrEnum):
    """Which identity calls Azure resources (Table Storage, Service Bus, Application Insights)."""

    MANAGED_IDENTITY = "managed_identity"  # always, in Azure and on the local stack
    # A deliberate misconfiguration: storage and Service Bus called with the app registration's tokens, which
    # hold no Azure roles. Only for proving that the local stack refuses it and health names it.
    APP_REGISTRATION = "app_registration"


class Settings(BaseModel):
    """All run-time settings. Field names are snake_case; env names are the SCREAMING_SNAKE aliases."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # HTTP API (the function key is the Functions host's: in Azure its own keys, locally SYNC_FUNCTION_KEY of
    # local/host; the service never reads one)
    public_base_url: str = Field("http://127.0.0.1:7071", alias="SYNC_PUBLIC_BASE_URL")

    # Identity (MSAL)
    tenant_id: str = Field(LOCAL_TENANT_ID, alias="SYNC_TENANT_ID")
    client_id: str = Field(LOCAL_CLIENT_ID, alias="SYNC_CLIENT_ID")
    # Secrets have no default: a publicly known value must never be accepted in Azure (the local stack sets
    # its own values explicitly); a missing one marks health degraded, naming the setting.
    client_secret: str | None = Field(None, alias="SYNC_CLIENT_SECRET", repr=False)
    client_certificate_path: str | None = Field(None, alias="SYNC_CLIENT_CERTIFICATE_PATH")
    # PEM content (key + certificate), e.g. a Key Vault reference on Flex Consumption, which can't load files.
    client_certificate: str | None = Field(None, alias="SYNC_CLIENT_CERTIFICATE", repr=False)
    auth_mode: AuthMode = Field(AuthMode.SECRET, alias="SYNC_AUTH_MODE")
    # The user-assigned managed identity (client id): Table Storage, Service Bus, App Insights, and the
    # subject of the app registration's federated credential. Unset: the system-assigned identity.
    managed_identity_client_id: str | None = Field(None, alias="SYNC_MANAGED_IDENTITY_CLIENT_ID")
    federated_token_audience: str = Field(FEDERATED_TOKEN_AUDIENCE, alias="SYNC_FEDERATED_TOKEN_AUDIENCE")
    azure_identity: AzureIdentity = Field(AzureIdentity.MANAGED_IDENTITY, alias="SYNC_AZURE_IDENTITY")
    # Azure: https://login.microsoftonline.com ; local: the HTTPS token authority.
    authority_host: str = Field("https://127.0.0.1:7443", alias="SYNC_AUTHORITY_HOST")
    # PEM bundle to trust for the authority (and Azurite over HTTPS) locally; unset in Azure.
    authority_ca: str | None = Field(None, alias="SYNC_AUTHORITY_CA")

    # Business Central API v2.0
    bc_base_url: str = Field("http://127.0.0.1:7081", alias="BC_BASE_URL")
    bc_environment: str = Field("Production", alias="BC_ENVIRONMENT")
    bc_company_id: str | None = Field(None, alias="BC_COMPANY_ID")
    bc_audience: str = Field(BC_AUDIENCE, alias="BC_AUDIENCE")

    # Dataverse Web API (the org URL is also the token audience)
    dataverse_url: str = Field("http://127.0.0.1:7082", alias="DATAVERSE_URL")

    # Table Storage: endpoint + MSAL credential (preferred), or a connection string (quick unit tests).
    tables_endpoint: str = Field("https://127.0.0.1:10002/devstoreaccount1", alias="TABLES_ENDPOINT")
    tables_connection_string: str | None = Field(None, alias="TABLES_CONNECTION_STRING", repr=False)
    table_prefix: str = Field("sync", alias="SYNC_TABLE_PREFIX")

    # Service Bus: emulator connection string locally, namespace + MSAL credential in Azure.
    servicebus_connection_string: str | None = Field(
        "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=local;UseDevelopmentEmulator=true",
        alias="SERVICEBUS_CONNECTION_STRING",
        repr=False,
    )
    servicebus_namespace: str | None = Field(None, alias="ServiceBusConnection__fullyQualifiedNamespace")
    servicebus_queue: str = Field("sync-work", alias="SERVICEBUS_QUEUE")
    # The local AMQP peer speaks plain AMQP on 5672 (like the emulator); Azure namespaces always use TLS.
    servicebus_tls: bool = Field(True, alias="SYNC_SERVICEBUS_TLS")

    # Scheduling and webhooks
    scheduled_sync: bool = Field(True, alias="SYNC_SCHEDULED_SYNC")
    timer_schedule: str = Field("0 * * * * *", alias="SYNC_TIMER_SCHEDULE")
    bc_webhook_client_state: str | None = Field(None, alias="BC_WEBHOOK_CLIENT_STATE", repr=False)
    # After rotating BC_WEBHOOK_CLIENT_STATE, BC keeps sending the old value until the timer renews each
    # subscription; the old value stays accepted while this is set (a 4xx would make BC delete the subscription).
    bc_webhook_client_state_previous: str | None = Field(None, alias="BC_WEBHOOK_CLIENT_STATE_PREVIOUS", repr=False)
    dataverse_webhook_key: str | None = Field(None, alias="DATAVERSE_WEBHOOK_KEY", repr=False)

    # Engine
    mappings_file: str = Field(str(PROJECT_ROOT / "shared" / "mappings" / "mappings.yaml"), alias="SYNC_MAPPINGS_FILE")
    skip_after_failures: int = Field(2, alias="SYNC_SKIP_AFTER_FAILURES", ge=1)
    sync_inline_limit: int = Field(100, alias="SYNC_INLINE_LIMIT", ge=1)
    # #22 coupling history: retention in days, and whether field values (not only names) are kept.
    history_days: int = Field(90, alias="SYNC_HISTORY_DAYS", ge=1)
    history_values: bool = Field(True, alias="SYNC_HISTORY_VALUES")
    # A change page larger than this is fanned out to workers in batches of fanout_batch_size records.
    # Service protection per user, paced on the client's side (shared.connectors.http.RequestWindow): BC and
    # Dataverse both document 6,000 requests per 5-minute sliding window. 0 = pace by 429s only.
    bc_requests_per_window: int = Field(6000, alias="BC_REQUESTS_PER_WINDOW", ge=0)
    bc_window_seconds: float = Field(300.0, alias="BC_WINDOW_SECONDS", gt=0)
    dataverse_requests_per_window: int = Field(6000, alias="DATAVERSE_REQUESTS_PER_WINDOW", ge=0)
    dataverse_window_seconds: float = Field(300.0, alias="DATAVERSE_WINDOW_SECONDS", gt=0)
    fanout_min_records: int = Field(1000, alias="SYNC_FANOUT_MIN_RECORDS", ge=1)
    fanout_batch_size: int = Field(2000, alias="SYNC_FANOUT_BATCH_SIZE", ge=1, le=5000)
    # The cyclic garbage collector's youngest-generation threshold (shared.collector); 0 = the interpreter's 700.
    gc_gen0_threshold: int = Field(50_000, alias="SYNC_GC_GEN0_THRESHOLD", ge=0)

    def fans_out(self, records: int) -> bool:
        """A change page of ``records`` goes to workers as ``sync-batch`` messages: above ``fanout_min_records``
        and at least two batches. One batch would run nothing in parallel, yet cost a message and a re-read of
        every record (a call per URL's worth of ids, against the services' request limits)."""
        return records > self.fanout_min_records and records > self.fanout_batch_size

    @property
    def dataverse_audience(self) -> str:
        return self.dataverse_url.rstrip("/")

    @property
    def bc_api_root(self) -> str:
        """`.../v2.0/{tenant}/{environment}/api/v2.0` (companies live below it)."""
        return f"{self.bc_base_url.rstrip('/')}/v2.0/{self.tenant_id}/{self.bc_environment}/api/v2.0"

    @property
    def dataverse_api_root(self) -> str:
        return f"{self.dataverse_url.rstrip('/')}/api/data/v9.2"


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    source = os.environ if env is None else env
    known = {f.alias for f in Settings.model_fields.values() if f.alias}
    values = {k: v for k, v in source.items() if k in known}
    local_ca = LOCAL_DIR / "ca.pem"
    host = values.get("SYNC_AUTHORITY_HOST", Settings.model_fields["authority_host"].default)
    if "SYNC_AUTHORITY_CA" not in values and "127.0.0.1" in host and local_ca.exists():
        # The local stack's CA (written by local/certs.py); never applies to a real authority.
        values["SYNC_AUTHORITY_CA"] = str(local_ca)
    return Settings.model_validate(values)


@functools.cache
def get_settings() -> Settings:
    return settings_from_env()
