"""The local token authority: an Entra ID stand-in that real MSAL talks to unchanged.

Endpoints (all under HTTPS, certificate from `local.certs`):
- `GET /{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/.well-known/openid-configuration`
- `GET /{tenant}/discovery/v2.0/keys` (also `/{tenant}/discovery/keys`): the JWKS of the signing key
- `POST /{tenant}/oauth2/v2.0/token` (also `/{tenant}/oauth2/token`): client-credentials grant with a
  client secret or a certificate assertion (`client_assertion`, RS256/PS256 JWT bearer)
- `GET /msi/token`: the App Service managed-identity protocol (`X-IDENTITY-HEADER`, `api-version=2019-08-01`),
  what `msal.ManagedIdentityClient` speaks with `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` on App Service / Flex
  Consumption; only the identities assigned to "the app" (`managed_identities`) get tokens
- federated credentials: a client assertion that is one of our own tokens (a managed identity's token for
  `api://AzureADTokenExchange`) is accepted for an app only when its issuer, subject and audience match one
  of that app's `FederatedCredential`s, as Entra does (AADSTS700211/700212/700213 otherwise)
- `GET /_authority/stats`, `POST /_authority/reset`: counters for tests ("no token request per call")

Tokens are v1.0 access tokens as Entra issues them for app-only flows: RS256, `iss`
`https://sts.windows.net/<tenant>/`, `aud` = the resource (the scope without `/.default`), `tid`, `appid`,
`azp`, `oid`, `sub`, `roles`, `idtyp`, `exp`, `nbf`, `iat`, `ver` "1.0". `oid`/`sub` is the principal's object
id (distinct for the managed identity and the app's service principal); managed-identity tokens also carry
`xms_mirid`. Tokens for `api://AzureADTokenExchange` are v2.0 tokens (`iss` `<authority>/<tenant>/v2.0`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from local.certs import LocalCerts, ensure_local_certs
from shared.config import (
    FEDERATED_TOKEN_AUDIENCE,
    LOCAL_CLIENT_ID,
    LOCAL_CLIENT_SECRET,
    LOCAL_MANAGED_IDENTITY_CLIENT_ID,
    LOCAL_TENANT_ID,
)

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_IDENTITY_HEADER = "local-identity-header"
# The principal of the (simulated) system-assigned managed identity of the function app.
SYSTEM_ASSIGNED_CLIENT_ID = "00000000-0000-0000-0000-00000000a5a1"
DEFAULT_ROLES = ("API.ReadWrite.All",)
_OID_NAMESPACE = uuid.UUID("6f1b3c1e-6a57-4d0b-9a7e-6c0d2c3f4b10")

STATS_KEY = web.AppKey("authority_state", "AuthorityState")


@dataclass
class Client:
    """A registered application: its secrets and (public) certificates."""

    client_id: str
    secrets: tuple[str, ...] = ()
    certificates: tuple[bytes, ...] = ()  # PEM
    roles: tuple[str, ...] = DEFAULT_ROLES


def principal_id(tenant: str, client_id: str) -> str:
    """The object id (`oid`, `sub`) of an app's service principal or a managed identity in `tenant`."""
    return str(uuid.uuid5(_OID_NAMESPACE, f"{tenant}/{client_id}"))


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on an app registration (Entra: issuer + subject + audiences).

    `issuer=None` means this authority's own v2.0 issuer (`<authority>/<tenant>/v2.0`), which is what a
    managed identity of the same tenant presents."""

    app_id: str
    subject: str
    issuer: str | None = None
    audience: str = FEDERATED_TOKEN_AUDIENCE

    @classmethod
    def parse(cls, text: str) -> FederatedCredential:
        """`app_id,subject[,issuer[,audience]]` (CLI form)."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) < 2 or not all(parts[:2]):
            raise ValueError("federated credential must be app_id,subject[,issuer[,audience]]")
        return cls(parts[0], parts[1], parts[2] or None if len(parts) > 2 else None, *(parts[3:4] or []))


def local_federated_credential(tenant: str = LOCAL_TENANT_ID) -> FederatedCredential:
    """The local app registration trusts the local user-assigned managed identity (what the Bicep/`az` step
    creates in Azure)."""
    return FederatedCredential(LOCAL_CLIENT_ID, principal_id(tenant, LOCAL_MANAGED_IDENTITY_CLIENT_ID))


@dataclass
class AuthorityState:
    tenants: frozenset[str]
    token_lifetime: int
    signing_key: rsa.RSAPrivateKey
    kid: str
    clients: dict[str, Client]
    client_certs_dir: Path | None
    identity_header: str
    federated: tuple[FederatedCredential, ...] = ()
    managed_identities: frozenset[str] | None = None  # None: any client id (unit tests)
    issued: int = 0
    by_audience: Counter[str] = field(default_factory=Counter)
    by_client: Counter[str] = field(default_factory=Counter)
    managed_identity: int = 0
    federated_exchanges: int = 0
    failures: int = 0

    def stats(self) -> dict[str, Any]:
        return {
            "tokensIssued": self.issued,
            "byAudience": dict(self.by_audience),
            "byClient": dict(self.by_client),
            "managedIdentity": self.managed_identity,
            "federatedExchanges": self.federated_exchanges,
            "failures": self.failures,
        }

    def reset(self) -> None:
        self.issued = self.managed_identity = self.federated_exchanges = self.failures = 0
        self.by_audience.clear()
        self.by_client.clear()

    def has_federated(self, client_id: str) -> bool:
        return any(f.app_id == client_id for f in self.federated)

    def certificates_of(self, client_id: str) -> list[bytes]:
        """Registered certs: from `create_app(...)` plus `<certs dir>/client-certs/<client_id>*.pem` (read per call,
        so a test or `make` target can register one by dropping a file)."""
        found = list(self.clients[client_id].certificates) if client_id in self.clients else []
        if self.client_certs_dir and self.client_certs_dir.is_dir():
            found += [p.read_bytes() for p in sorted(self.client_certs_dir.glob(f"{client_id}*.pem"))]
        return found


def create_app(
    *,
    tenant: str | Sequence[str] = LOCAL_TENANT_ID,
    token_lifetime: int = 3600,
    certs: LocalCerts | None = None,
    clients: Mapping[str, Client] | None = None,
    identity_header: str = DEFAULT_IDENTITY_HEADER,
    federated: Sequence[FederatedCredential] | None = None,
    managed_identities: Sequence[str] | None = None,
) -> web.Application:
    """The authority as an aiohttp app (serve it with `server_ssl_context(certs)`; MSAL needs HTTPS).

    `federated`: federated credentials (default: the local app trusts the local managed identity);
    `managed_identities`: the user-assigned identities the MSI endpoint serves (default: any client id)."""
    certs = certs or ensure_local_certs()
    key = serialization.load_pem_private_key(certs.signing_key_pem.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("signing key must be RSA")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    registry = {LOCAL_CLIENT_ID: Client(LOCAL_CLIENT_ID, secrets=(LOCAL_CLIENT_SECRET,))}
    registry.update(clients or {})
    state = AuthorityState(
        tenants=frozenset([tenant] if isinstance(tenant, str) else tenant),
        token_lifetime=token_lifetime,
        signing_key=key,
        kid=_b64url(hashlib.sha256(public_der).digest()[:20]),
        clients=registry,
        client_certs_dir=certs.directory / "client-certs",
        identity_header=identity_header,
        federated=tuple(federated if federated is not None else [local_federated_credential()]),
        managed_identities=None if managed_identities is None else frozenset(managed_identities),
    )
    app = web.Application()
    app[STATS_KEY] = state
    app.router.add_get("/_authority/stats", _stats)
    app.router.add_post("/_authority/reset", _reset)
    app.router.add_get("/msi/token", _msi_token)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", _discovery_v2)
    app.router.add_get("/{tenant}/.well-known/openid-configuration", _discovery_v1)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", _jwks)
    app.router.add_get("/{tenant}/discovery/keys", _jwks)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", _token)
    app.router.add_post("/{tenant}/oauth2/token", _token)
    return app


# --- discovery -------------------------------------------------------------------------------------------


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _unknown_tenant(state: AuthorityState, request: web.Request) -> web.Response | None:
    tenant = request.match_info["tenant"]
    if tenant in state.tenants:
        return None
    state.failures += 1
    return _entra_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud.",
    )


async def _discovery_v2(request: web.Request) -> web.Response:
    return _discovery(request, v2=True)


async def _discovery_v1(request: web.Request) -> web.Response:
    return _discovery(request, v2=False)


def _discovery(request: web.Request, *, v2: bool) -> web.Response:
    state = request.app[STATS_KEY]
    if (error := _unknown_tenant(state, request)) is not None:
        return error
    tenant = request.match_info["tenant"]
    root = f"{_base(request)}/{tenant}"
    version = "/v2.0" if v2 else ""
    return web.json_response(
        {
            "issuer": f"{root}/v2.0" if v2 else f"https://sts.windows.net/{tenant}/",
            "authorization_endpoint": f"{root}/oauth2{version}/authorize",
            "token_endpoint": f"{root}/oauth2{version}/token",
            "jwks_uri": f"{root}/discovery{version}/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }
    )


async def _jwks(request: web.Request) -> web.Response:
    state = request.app[STATS_KEY]
    if (error := _unknown_tenant(state, request)) is not None:
        return error
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(state.signing_key.public_key()))
    jwk.update(kid=state.kid, use="sig", alg="RS256", issuer=f"https://sts.windows.net/{request.match_info['tenant']}/")
    return web.json_response({"keys": [jwk]})


# --- token endpoint --------------------------------------------------------------------------------------


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATS_KEY]
    if (error := _unknown_tenant(state, request)) is not None:
        return error
    form = await request.post()
    fields = {k: str(v) for k, v in form.items()}
    client_id, secret = fields.get("client_id", ""), fields.get("client_secret")
    if not client_id and request.headers.get("Authorization", "").startswith("Basic "):
        client_id, _, secret = base64.b64decode(request.headers["Authorization"][6:]).decode().partition(":")
    if fields.get("grant_type") != "client_credentials":
        return _fail(
            state,
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{fields.get('grant_type')}'.",
        )
    if client_id not in state.clients and not state.certificates_of(client_id) and not state.has_federated(client_id):
        return _fail(
            state,
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{request.match_info['tenant']}'.",
        )
    tenant = request.match_info["tenant"]
    token_url = f"{_base(request)}{request.path}"
    if fields.get("client_assertion_type") == ASSERTION_TYPE and fields.get("client_assertion"):
        assertion = fields["client_assertion"]
        if _is_own_token(state, assertion):  # a workload identity's token: federated identity credential
            problem = _check_federated(state, client_id, assertion, f"{_base(request)}/{tenant}/v2.0")
            if problem is None:
                state.federated_exchanges += 1
        else:
            problem = _check_assertion(state, client_id, assertion, token_url, tenant)
        if problem:
            return _fail(state, 401, "invalid_client", *problem)
        auth_method = "2"  # appidacr: 2 = certificate or federated assertion, 1 = secret
    elif secret is not None:
        client = state.clients.get(client_id)
        if client is None or not any(secrets.compare_digest(secret, s) for s in client.secrets):
            return _fail(
                state,
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        auth_method = "1"
    else:
        return _fail(
            state,
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    resource = _resource_of(fields.get("scope", ""))
    if resource is None:
        return _fail(
            state,
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {fields.get('scope', '')} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        )
    client = state.clients.get(client_id)
    roles = client.roles if client else DEFAULT_ROLES
    token, lifetime = _issue(state, tenant=tenant, app_id=client_id, audience=resource, roles=roles, acr=auth_method)
    return web.json_response(
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
    )


def _resource_of(scope: str) -> str | None:
    parts = scope.split()
    resources = [p.removesuffix("/.default") for p in parts if p.endswith("/.default")]
    if len(resources) != 1:
        return None
    return resources[0]


def _check_assertion(
    state: AuthorityState, client_id: str, assertion: str, token_url: str, tenant: str
) -> tuple[int, str] | None:
    """None when the assertion is signed by a registered certificate and addressed to us, else (code, text)."""
    certs = state.certificates_of(client_id)
    if not certs:
        return 700027, f"Client assertion failed signature validation. No certificate is registered for '{client_id}'."
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return 50027, "Invalid JWT token. The token is malformed."
    # Accept our own URL and the URL Entra would use (the assertion audience is the token endpoint).
    audiences = [token_url, token_url.replace("/oauth2/v2.0/token", "/oauth2/token")]
    for pem in certs:
        cert = x509.load_pem_x509_certificate(pem)
        if not _thumbprint_matches(header, cert):
            continue
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=audiences,
                options={"require": ["exp", "aud", "iss", "sub"]},
                leeway=60,
            )
        except jwt.ExpiredSignatureError:
            return 700024, "Client assertion is not within its valid time range."
        except jwt.InvalidAudienceError:
            return 700212, f"No matching federated identity record found for presented assertion audience ({tenant})."
        except jwt.PyJWTError:
            return 700027, "Client assertion failed signature validation."
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return 700023, "Client assertion issuer and subject must be the client id."
        return None
    return 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]"


def _is_own_token(state: AuthorityState, assertion: str) -> bool:
    try:
        return jwt.get_unverified_header(assertion).get("kid") == state.kid
    except jwt.PyJWTError:
        return False


def _check_federated(state: AuthorityState, client_id: str, assertion: str, own_issuer: str) -> tuple[int, str] | None:
    """None when `assertion` (signed by us) matches one of `client_id`'s federated credentials, as Entra checks:
    signature and lifetime, then issuer, subject and audience against each credential."""
    try:
        claims = jwt.decode(
            assertion,
            state.signing_key.public_key(),
            algorithms=["RS256"],
            options={"verify_aud": False, "require": ["exp", "iss", "sub", "aud"]},
            leeway=60,
        )
    except jwt.ExpiredSignatureError:
        return 700024, "Client assertion is not within its valid time range."
    except jwt.PyJWTError:
        return 700027, "Client assertion failed signature validation."
    mine = [f for f in state.federated if f.app_id == client_id]
    issuer, subject = claims.get("iss"), claims.get("sub")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if not mine:
        return 700027, f"Client assertion failed signature validation. No credential is registered for '{client_id}'."
    by_issuer = [f for f in mine if (f.issuer or own_issuer) == issuer]
    if not by_issuer:
        return 700211, f"No matching federated identity record found for presented assertion issuer '{issuer}'."
    by_subject = [f for f in by_issuer if f.subject == subject]
    if not by_subject:
        return 700213, f"No matching federated identity record found for presented assertion subject '{subject}'."
    if not any(f.audience in audiences for f in by_subject):
        return 700212, (
            f"No matching federated identity record found for presented assertion audience '{','.join(audiences)}'."
        )
    return None


def _thumbprint_matches(header: Mapping[str, Any], cert: x509.Certificate) -> bool:
    from cryptography.hazmat.primitives import hashes

    # Compared without base64 padding: MSAL sends it padded, RFC 7515 says unpadded.
    if "x5t#S256" in header:
        return str(header["x5t#S256"]).rstrip("=") == _b64url(cert.fingerprint(hashes.SHA256()))
    if "x5t" in header:
        return str(header["x5t"]).rstrip("=") == _b64url(cert.fingerprint(hashes.SHA1()))  # noqa: S303 -- a thumbprint
    return True  # no thumbprint: try the signature against every registered certificate


def _issue(
    state: AuthorityState,
    *,
    tenant: str,
    app_id: str,
    audience: str,
    roles: Sequence[str],
    acr: str,
    extra: Mapping[str, Any] | None = None,
) -> tuple[str, int]:
    now = int(time.time())
    lifetime = state.token_lifetime
    oid = principal_id(tenant, app_id)
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "aio": _b64url(secrets.token_bytes(24)),
        "appid": app_id,
        "appidacr": acr,
        "azp": app_id,
        "idp": f"https://sts.windows.net/{tenant}/",
        "idtyp": "app",
        "oid": oid,
        "rh": "0.local.",
        "roles": list(roles),
        "sub": oid,
        "tid": tenant,
        "uti": _b64url(secrets.token_bytes(16)),
        "ver": "1.0",
    }
    claims.update(extra or {})
    token = jwt.encode(claims, state.signing_key, algorithm="RS256", headers={"kid": state.kid, "typ": "JWT"})
    state.issued += 1
    state.by_audience[audience] += 1
    state.by_client[app_id] += 1
    return token, lifetime


# --- managed identity (App Service protocol) -------------------------------------------------------------


async def _msi_token(request: web.Request) -> web.Response:
    state = request.app[STATS_KEY]
    if not secrets.compare_digest(request.headers.get("X-IDENTITY-HEADER", ""), state.identity_header):
        state.failures += 1
        return web.json_response(
            {"statusCode": 401, "message": "Unauthorized: X-IDENTITY-HEADER missing or wrong"}, status=401
        )
    if request.query.get("api-version") != "2019-08-01":
        state.failures += 1
        return web.json_response({"statusCode": 400, "message": "api-version must be 2019-08-01"}, status=400)
    resource = request.query.get("resource", "").removesuffix("/.default")
    if not resource:
        state.failures += 1
        return web.json_response({"statusCode": 400, "message": "resource is required"}, status=400)
    client_id = request.query.get("client_id") or SYSTEM_ASSIGNED_CLIENT_ID
    if state.managed_identities is not None and client_id not in state.managed_identities | {SYSTEM_ASSIGNED_CLIENT_ID}:
        # What App Service answers for a user-assigned identity that is not assigned to the app.
        state.failures += 1
        return web.json_response(
            {
                "statusCode": 400,
                "message": "Unable to load the proper Managed Identity.",
                "correlationId": str(uuid.uuid4()),
            },
            status=400,
        )
    tenant = sorted(state.tenants)[0]
    extra: dict[str, Any] = {
        "xms_mirid": f"/subscriptions/local/resourcegroups/local/providers/Microsoft.ManagedIdentity/"
        f"userAssignedIdentities/{client_id}"
    }
    if resource == FEDERATED_TOKEN_AUDIENCE:  # the exchange token is a v2.0 token from the tenant's v2 issuer
        extra.update(iss=f"{_base(request)}/{tenant}/v2.0", ver="2.0")
    token, lifetime = _issue(state, tenant=tenant, app_id=client_id, audience=resource, roles=(), acr="2", extra=extra)
    state.managed_identity += 1
    return web.json_response(
        {
            "access_token": token,
            "expires_on": str(int(time.time()) + lifetime),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }
    )


# --- test hooks -----------------------------------------------------------------------------------------


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[STATS_KEY].reset()
    return web.json_response({"reset": True})


# --- helpers --------------------------------------------------------------------------------------------


def _fail(state: AuthorityState, status: int, error: str, code: int, text: str) -> web.Response:
    state.failures += 1
    return _entra_error(status, error, code, text)


def _entra_error(status: int, error: str, code: int, text: str) -> web.Response:
    """Entra ID's error body: `error`, `error_description` starting `AADSTS<code>:`, `error_codes`, ids."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return web.json_response(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {timestamp}",
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status=status,
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
