"""A checking proxy in front of Azurite: Table Storage's Entra authorization, which Azurite does not do.

Azurite (`--oauth basic`) checks a bearer token's audience and issuer but not *who* it belongs to. A real
storage account with `allowSharedKeyAccess: false` and RBAC answers:
- no/invalid bearer token (wrong audience, expired, bad signature): `401 InvalidAuthenticationInfo` with a
  `WWW-Authenticate: Bearer` challenge;
- a valid token of an identity without a data role (e.g. the BC/Dataverse app registration, which holds no
  Azure roles): `403 AuthorizationPermissionMismatch`;
- Shared Key / SAS: `403 KeyBasedAuthenticationNotPermitted`.
Accepted requests are forwarded unchanged to Azurite. `python -m local.tables_proxy` starts Azurite itself
(a child process on a private port), so the stack sees one component.
"""

from local.tables_proxy.app import STORAGE_ERRORS, create_proxy_app

__all__ = ["STORAGE_ERRORS", "create_proxy_app"]
