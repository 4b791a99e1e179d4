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

__all__ = [
    "DEFAULT_IDENTITY_HEADER",
    "SYSTEM_ASSIGNED_CLIENT_ID",
    "AuthorityServer",
    "AuthorityState",
    "Client",
    "FederatedCredential",
    "create_app",
    "local_federated_credential",
    "principal_id",
    "server_ssl_context",
]
