"""Local HTTPS token authority (Entra ID stand-in) for MSAL; see `app.py` for the endpoints."""

from local.authority.app import (
    DEFAULT_IDENTITY_HEADER,
    SYSTEM_ASSIGNED_CLIENT_ID,
    AuthorityState,
    Client,
    FederatedCredential,
    create_app,
    local_federated_credential,
    principal_id,
)
from local.authority.server import AuthorityServer, server_ssl_context
from shared.config import LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET, AuthMode, Settings


def local_client_settings(settings: Settings) -> Settings:
    """`settings` signing in as the contract's local client (`local-sync-app` / `local-dev-secret`): what test
    tools that seed or inspect the simulators use, whatever mode the service itself runs in."""
    return settings.model_copy(
        update={"auth_mode": AuthMode.SECRET, "client_id": LOCAL_CLIENT_ID, "client_secret": LOCAL_CLIENT_SECRET}
    )


__all__ = [
    "DEFAULT_IDENTITY_HEADER",
    "SYSTEM_ASSIGNED_CLIENT_ID",
    "AuthorityServer",
    "AuthorityState",
    "Client",
    "FederatedCredential",
    "create_app",
    "local_client_settings",
    "local_federated_credential",
    "principal_id",
    "server_ssl_context",
]
