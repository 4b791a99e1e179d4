"""One identity layer for every outgoing call: two identities, both through MSAL, behind azure-core credentials.

- Azure resources (Table Storage, Service Bus, Application Insights) are called as the function app's
  **user-assigned managed identity**: `msal.ManagedIdentityClient` (App Service / Flex Consumption protocol,
  `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`; client id `SYNC_MANAGED_IDENTITY_CLIENT_ID`).
- Business Central and Dataverse are called as the **Entra app registration** (`SYNC_CLIENT_ID`):
  `msal.ConfidentialClientApplication` with, by `SYNC_AUTH_MODE`, a **federated credential** (the managed
  identity's token for `api://AzureADTokenExchange` as the `client_assertion` callback; the default in Azure),
  a **certificate** (PEM from Key Vault as an app setting, or a file; a renewed certificate written over the
  file is loaded before the next token request, and a Key Vault reference refresh restarts the app with the
  new one), or a **client secret** (local development only).

`build_credentials(settings)` builds both once (`Credentials`); the composition root (`shared.bootstrap`)
holds the process's one set and nothing else builds token providers.

`TokenProvider` keeps one token per scope and asks the authority again only shortly before that token
expires, under a lock so that concurrent callers cause one request. `MsalCredential` / `AsyncMsalCredential`
adapt it to azure-core's `TokenCredential` / `AsyncTokenCredential` (+ `get_token_info`).

Locally the authority is `python -m local.authority` at `https://127.0.0.1:7443/<tenant>` with a CA in
`.local/ca.pem` (`SYNC_AUTHORITY_CA`); in Azure it is `https://login.microsoftonline.com/<tenant>`.

Failures become `shared.errors.ConfigurationError` (a setting is wrong: the message names it),
`UnauthorizedError` (the authority refused for another reason) or `TransientError` (authority unreachable
or 5xx); one log line each, never containing a secret, never a chain of MSAL internals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msal
import requests
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from shared.config import AuthMode, AzureIdentity, Settings, get_settings
from shared.errors import ConfigurationError, SyncError, TransientError, UnauthorizedError

log = logging.getLogger(__name__)

# Ask for a new token this long before expiry (capped at a quarter of the lifetime for short-lived tokens).
# Kept below MSAL's own 5-minute "treat as expired" window so that a refresh really reaches the authority
# instead of returning the same cached token.
REFRESH_MARGIN_SECONDS = 240.0
_HTTP_TIMEOUT_SECONDS = 30

# Entra error codes (AADSTS...) that mean "a setting is wrong", with the setting to name.
_SETTING_FOR_CODE: dict[int, str] = {
    7000215: "SYNC_CLIENT_SECRET",  # invalid client secret
    7000222: "SYNC_CLIENT_SECRET",  # expired client secret
    7000218: "SYNC_CLIENT_SECRET",  # neither secret nor assertion
    700016: "SYNC_CLIENT_ID",  # application not found in the directory
    700027: "SYNC_CLIENT_CERTIFICATE_PATH",  # assertion signature invalid / cert not registered
    700024: "SYNC_CLIENT_CERTIFICATE_PATH",  # assertion outside its time range
    90002: "SYNC_TENANT_ID",  # tenant not found
    900023: "SYNC_TENANT_ID",  # tenant id malformed
    # Federated credential: no federated identity record matches the assertion's issuer/audience/subject.
    70021: "the app registration's federated credential (issuer, subject = managed identity, audience)",
    700211: "the app registration's federated credential issuer",
    700212: "the app registration's federated credential audience (SYNC_FEDERATED_TOKEN_AUDIENCE)",
    700213: "the app registration's federated credential subject (SYNC_MANAGED_IDENTITY_CLIENT_ID)",
}
# Labels of the two identities, as health and error messages name them.
MANAGED_IDENTITY = "managed identity"
APP_REGISTRATION = "app registration"


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_on: int
    refresh_at: float


class TokenProvider:
    """Tokens per scope from MSAL, cached until shortly before expiry. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: requests.Session | None = None,
        assertion: Callable[[], str] | None = None,
    ) -> None:
        self._settings = settings
        self._http = http_client or _http_client(settings)
        self._assertion = assertion  # federated mode: returns the managed identity's exchange token
        self._client: msal.ConfidentialClientApplication | msal.ManagedIdentityClient | None = None
        self._credential_source: object = None  # certificate mode: what the client was built from
        self._client_lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._scope_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.token_requests = 0  # responses that came from the authority (not from a cache)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenProvider:
        return cls(settings)

    @classmethod
    def for_managed_identity(cls, settings: Settings) -> TokenProvider:
        """The function app's managed identity (user-assigned when SYNC_MANAGED_IDENTITY_CLIENT_ID is set)."""
        return cls(settings.model_copy(update={"auth_mode": AuthMode.MANAGED_IDENTITY}))

    @classmethod
    def for_app_registration(cls, settings: Settings, managed_identity: TokenProvider | None = None) -> TokenProvider:
        """The Entra app registration (SYNC_CLIENT_ID) by SYNC_AUTH_MODE; federated mode takes its client
        assertion from `managed_identity` (the managed identity's token for api://AzureADTokenExchange)."""
        if settings.auth_mode is AuthMode.MANAGED_IDENTITY:
            raise ConfigurationError(
                "SYNC_AUTH_MODE=managed_identity is not a mode for Business Central and Dataverse: they accept the "
                "app registration's tokens only. Use SYNC_AUTH_MODE=federated (the managed identity signs in as the "
                "app registration), certificate, or secret (local only)."
            )
        if settings.auth_mode is not AuthMode.FEDERATED:
            return cls(settings)
        mi = managed_identity or cls.for_managed_identity(settings)
        scope = f"{settings.federated_token_audience.rstrip('/')}/.default"
        return cls(settings, assertion=lambda: mi.get_token(scope).token)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def label(self) -> str:
        """`managed identity` or `app registration` (health and error messages)."""
        return MANAGED_IDENTITY if self._settings.auth_mode is AuthMode.MANAGED_IDENTITY else APP_REGISTRATION

    def get_token(self, scope: str, *, force_refresh: bool = False, claims: str | None = None) -> AccessToken:
        info = self.get_token_info(scope, force_refresh=force_refresh, claims=claims)
        return AccessToken(info.token, info.expires_on)

    def get_token_info(self, scope: str, *, force_refresh: bool = False, claims: str | None = None) -> AccessTokenInfo:
        force_refresh = force_refresh or bool(claims)
        if not force_refresh and (cached := self.cached(scope)) is not None:
            return cached
        with self._scope_lock(scope):
            # Another caller may have refreshed while we waited for the lock.
            if not force_refresh and (cached := self.cached(scope)) is not None:
                return cached
            entry = self._acquire(scope, claims)
            self._cache[scope] = entry
            return _info(entry)

    def cached(self, scope: str) -> AccessTokenInfo | None:
        """The cached token for `scope` if it is not due for refresh yet (no I/O, no lock)."""
        entry = self._cache.get(scope)
        if entry is None or time.time() >= entry.refresh_at:
            return None
        return _info(entry)

    def close(self) -> None:
        self._http.close()

    # --- internals ---------------------------------------------------------------------------------------

    def _scope_lock(self, scope: str) -> threading.Lock:
        with self._locks_lock:
            return self._scope_locks.setdefault(scope, threading.Lock())

    def _acquire(self, scope: str, claims: str | None) -> _Cached:
        result = self._request(scope, claims)
        if not result or "access_token" not in result:
            raise self._fail(self._error_from_result(result or {}, scope)) from None
        if result.get("token_source") != "cache":
            self.token_requests += 1
        now = time.time()
        expires_in = float(result.get("expires_in", 0))
        expires_on = int(now + expires_in)
        refresh_at = expires_on - min(REFRESH_MARGIN_SECONDS, expires_in / 4)
        if "refresh_on" in result:  # the authority asked for an earlier refresh (refresh_in)
            refresh_at = min(refresh_at, float(result["refresh_on"]))
        return _Cached(result["access_token"], expires_on, refresh_at)

    def _request(self, scope: str, claims: str | None) -> dict[str, Any]:
        client = self._msal_client()
        try:
            if isinstance(client, msal.ManagedIdentityClient):
                result = client.acquire_token_for_client(
                    resource=scope.removesuffix("/.default"), claims_challenge=claims
                )
            else:
                result = client.acquire_token_for_client([scope], claims_challenge=claims)
        except requests.RequestException as e:
            raise self._fail(_transport_error(e, self._settings)) from None
        except (ValueError, msal.ManagedIdentityError) as e:  # MSAL raises these for unusable endpoints/payloads
            raise self._fail(self._configuration_error_for_exception(e)) from None
        except (ConfigurationError, SyncError) as e:  # the federated assertion (managed identity) failed
            raise type(e)(f"federated credential: {e}") from None
        return result or {}

    def _certificate_source(self) -> object:
        """What identifies the certificate's current content without reading it: the PEM setting itself, or
        the file's (mtime, size); a renewed certificate changes it."""
        s = self._settings
        if s.client_certificate:
            return hash(s.client_certificate)
        try:
            stat = Path(s.client_certificate_path or "").stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _msal_client(self) -> msal.ConfidentialClientApplication | msal.ManagedIdentityClient:
        with self._client_lock:
            if self._client is not None and self._settings.auth_mode is AuthMode.CERTIFICATE:
                # Certificate rotation: a renewed certificate written over the file (a synced Key Vault
                # secret) is loaded before the next token request; the old MSAL client is dropped.
                if self._certificate_source() != self._credential_source:
                    log.info("identity: the client certificate changed; loading the renewed one")
                    self._client = None
            if self._client is None:
                try:
                    self._client = self._build_client()
                except requests.RequestException as e:
                    raise self._fail(_transport_error(e, self._settings)) from None
                except ValueError as e:  # OIDC discovery refused (unknown tenant, bad authority URL)
                    raise self._fail(self._configuration_error_for_exception(e)) from None
            return self._client

    def _build_client(self) -> msal.ConfidentialClientApplication | msal.ManagedIdentityClient:
        s = self._settings
        if s.auth_mode is AuthMode.MANAGED_IDENTITY:
            identity: msal.SystemAssignedManagedIdentity | msal.UserAssignedManagedIdentity
            if s.managed_identity_client_id:
                identity = msal.UserAssignedManagedIdentity(client_id=s.managed_identity_client_id)
            else:
                identity = msal.SystemAssignedManagedIdentity()
            return msal.ManagedIdentityClient(identity, http_client=self._http)
        if not s.tenant_id:
            raise self._fail(ConfigurationError("SYNC_TENANT_ID is not set"))
        if not s.client_id:
            raise self._fail(ConfigurationError("SYNC_CLIENT_ID is not set"))
        if not s.authority_host.startswith("https://"):
            raise self._fail(
                ConfigurationError(f"SYNC_AUTHORITY_HOST must be an https:// URL (got {s.authority_host!r})")
            )
        return msal.ConfidentialClientApplication(
            s.client_id,
            client_credential=self._client_credential(),
            authority=f"{s.authority_host.rstrip('/')}/{s.tenant_id}",
            # Locally the authority is not a Microsoft host: skip instance discovery and authority validation.
            instance_discovery=_is_microsoft_host(s.authority_host),
            validate_authority=_is_microsoft_host(s.authority_host),
            http_client=self._http,
        )

    def _client_credential(self) -> str | dict[str, Any]:
        s = self._settings
        if s.auth_mode is AuthMode.FEDERATED:
            if self._assertion is None:
                raise self._fail(ConfigurationError("SYNC_AUTH_MODE=federated needs the managed identity's token"))
            # MSAL calls this whenever it needs a new app token; the managed identity's token is cached by its
            # own provider, so this is a cache hit until that token is due for refresh.
            return {"client_assertion": self._assertion}
        if s.auth_mode is AuthMode.CERTIFICATE:
            self._credential_source = self._certificate_source()
            if not s.client_certificate_path and not s.client_certificate:
                raise self._fail(
                    ConfigurationError(
                        "SYNC_CLIENT_CERTIFICATE_PATH or SYNC_CLIENT_CERTIFICATE is not set "
                        "(SYNC_AUTH_MODE=certificate)"
                    )
                )
            path = Path(s.client_certificate_path or "inline")
            if s.client_certificate:
                pem = s.client_certificate
            elif path.suffix.lower() in (".pfx", ".p12"):
                return {"private_key_pfx_path": str(path), "public_certificate": True}
            else:
                try:
                    pem = path.read_text()
                except OSError:
                    raise self._fail(
                        ConfigurationError(f"SYNC_CLIENT_CERTIFICATE_PATH: cannot read {str(path)!r}")
                    ) from None
            key = re.search(
                r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----", pem, re.S
            )
            cert = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
            if not key or not cert:
                raise self._fail(
                    ConfigurationError(
                        f"SYNC_CLIENT_CERTIFICATE_PATH: {str(path)!r} must hold a PEM private key and certificate"
                    )
                )
            # With public_certificate and no thumbprint MSAL signs the assertion with an x5t#S256 header.
            return {"private_key": key.group(0), "public_certificate": cert.group(0)}
        if not s.client_secret:
            raise self._fail(ConfigurationError("SYNC_CLIENT_SECRET is not set (SYNC_AUTH_MODE=secret)"))
        return s.client_secret

    def _error_from_result(self, result: dict[str, Any], scope: str) -> Exception:
        s = self._settings
        error = str(result.get("error", "unknown_error"))
        codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
        code_text = f" (AADSTS{codes[0]})" if codes else ""
        who = self._who()
        if s.auth_mode is AuthMode.MANAGED_IDENTITY and error in ("invalid_scope", "invalid_request"):
            # MSAL's reading of App Service's 400 "Unable to load the proper Managed Identity".
            return ConfigurationError(
                f"{who} is not available to this app: assign it to the function app, or fix "
                f"SYNC_MANAGED_IDENTITY_CLIENT_ID ({error})"
            )
        for code in codes:
            if setting := _SETTING_FOR_CODE.get(code):
                return ConfigurationError(f"{setting} is wrong: the authority rejected {who}: {error}{code_text}")
        if error in ("invalid_client", "unauthorized_client"):
            setting = {
                AuthMode.CERTIFICATE: "SYNC_CLIENT_CERTIFICATE_PATH",
                AuthMode.FEDERATED: "the app registration's federated credential",
            }.get(s.auth_mode, "SYNC_CLIENT_SECRET")
            if error == "unauthorized_client":
                setting = "SYNC_CLIENT_ID"
            return ConfigurationError(f"{setting} is wrong: the authority rejected {who}: {error}{code_text}")
        if error == "invalid_scope":
            return ConfigurationError(
                f"token scope {scope!r} was refused for {who}: check the audience setting "
                f"(BC_AUDIENCE, DATAVERSE_URL, ...){code_text}"
            )
        if s.auth_mode is AuthMode.MANAGED_IDENTITY:
            return UnauthorizedError(
                f"managed identity token for {scope!r} refused ({who}); check SYNC_MANAGED_IDENTITY_CLIENT_ID and "
                f"the identity endpoint: {error}",
                service="identity",
            )
        if error in ("temporarily_unavailable", "server_error"):
            return TransientError(f"token authority unavailable for {who}: {error}{code_text}", service="identity")
        return UnauthorizedError(
            f"token request for {scope!r} refused for {who}: {error}{code_text}", service="identity"
        )

    def _configuration_error_for_exception(self, e: Exception) -> ConfigurationError:
        text = str(e)
        if self._settings.auth_mode is AuthMode.MANAGED_IDENTITY:
            return ConfigurationError(
                f"managed identity endpoint unusable ({type(e).__name__}); check IDENTITY_ENDPOINT/IDENTITY_HEADER and "
                "SYNC_MANAGED_IDENTITY_CLIENT_ID"
            )
        if "90002" in text or "Tenant" in text or "OIDC Discovery failed" in text:
            return ConfigurationError(
                f"SYNC_TENANT_ID is wrong: the authority {self._settings.authority_host} does not know tenant "
                f"{self._settings.tenant_id!r}"
            )
        return ConfigurationError(
            f"SYNC_AUTHORITY_HOST/SYNC_TENANT_ID: the authority {self._settings.authority_host} cannot be used "
            f"({type(e).__name__})"
        )

    def _who(self) -> str:
        s = self._settings
        if s.auth_mode is AuthMode.MANAGED_IDENTITY:
            return f"managed identity {s.managed_identity_client_id or '(system-assigned)'}"
        return f"app registration {s.client_id!r} in tenant {s.tenant_id!r} ({s.auth_mode.value})"

    def _fail(self, error: Exception) -> Exception:
        """Log the one line for this failure, with any secret redacted, and return the error to raise."""
        secret = self._settings.client_secret
        if secret and secret in str(error):  # defensive: nothing above should ever include it
            error = type(error)(str(error).replace(secret, "***"))
        log.error("identity: %s", error)
        return error


def _info(entry: _Cached) -> AccessTokenInfo:
    return AccessTokenInfo(entry.token, entry.expires_on, refresh_on=int(entry.refresh_at))


def _is_microsoft_host(url: str) -> bool:
    return url.rstrip("/").lower() in (
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.us",
        "https://login.chinacloudapi.cn",
        "https://login.microsoft.com",
    )


def _http_client(settings: Settings) -> requests.Session:
    """The session MSAL uses. With a local CA, `trust_env=False`: REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE would
    otherwise replace `verify` on every request (requests merges environment settings per request)."""
    session = requests.Session()
    if settings.authority_ca:
        session.trust_env = False
        session.verify = settings.authority_ca
    # requests has no session-wide timeout; MSAL's own default session patches it the same way.
    session.request = functools.partial(session.request, timeout=_HTTP_TIMEOUT_SECONDS)  # type: ignore[method-assign]
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _transport_error(e: requests.RequestException, settings: Settings) -> Exception:
    if isinstance(e, requests.exceptions.SSLError):
        return ConfigurationError(
            f"SYNC_AUTHORITY_CA: TLS verification of {settings.authority_host} failed "
            f"(CA {settings.authority_ca or 'system default'})"
        )
    target = "IDENTITY_ENDPOINT" if settings.auth_mode is AuthMode.MANAGED_IDENTITY else "SYNC_AUTHORITY_HOST"
    return TransientError(f"token authority unreachable ({target}): {type(e).__name__}", service="identity")


# --- azure-core adapters ---------------------------------------------------------------------------------


def _one_scope(scopes: tuple[str, ...]) -> str:
    if len(scopes) != 1:
        raise ValueError(f"exactly one scope expected, got {len(scopes)}")
    return scopes[0]


class MsalCredential:
    """azure-core `TokenCredential` (and `SupportsTokenInfo`) over a `TokenProvider`."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return self.provider.get_token(_one_scope(scopes), claims=claims)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        return self.provider.get_token_info(_one_scope(scopes), claims=(options or {}).get("claims"))

    def close(self) -> None:
        self.provider.close()

    def __enter__(self) -> MsalCredential:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncMsalCredential:
    """azure-core `AsyncTokenCredential` (and `AsyncSupportsTokenInfo`): cached tokens are returned inline,
    a token request runs MSAL (blocking) in a worker thread so the event loop never blocks."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        info = await self.get_token_info(*scopes, options={"claims": claims} if claims else None)
        return AccessToken(info.token, info.expires_on)

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        scope = _one_scope(scopes)
        claims = (options or {}).get("claims")
        if not claims and (cached := self.provider.cached(scope)) is not None:
            return cached
        return await asyncio.to_thread(self.provider.get_token_info, scope, claims=claims)

    async def close(self) -> None:
        # The process-wide credential is shared by many clients that each `close()` it; closing the
        # requests session only drops pooled connections, the provider stays usable.
        self.provider.close()

    async def __aenter__(self) -> AsyncMsalCredential:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


@dataclass(frozen=True)
class Credentials:
    """The process's two identities. `azure` for Table Storage and Service Bus (the managed identity),
    `apps` for Business Central and Dataverse (the app registration); `azure_sync` for the App Insights
    exporter (sync SDK). `azure_label` / `apps_label` name them in health and errors."""

    managed_identity: TokenProvider
    app_registration: TokenProvider
    azure: AsyncMsalCredential
    apps: AsyncMsalCredential
    azure_sync: MsalCredential

    @property
    def azure_label(self) -> str:
        return self.azure.provider.label

    @property
    def apps_label(self) -> str:
        return self.apps.provider.label


def build_credentials(settings: Settings) -> Credentials:
    """Both identities from `settings` (no I/O until the first token). Call once per process: the composition
    root (`shared.bootstrap`) does."""
    mi = TokenProvider.for_managed_identity(settings)
    app = TokenProvider.for_app_registration(settings, managed_identity=mi)
    azure = app if settings.azure_identity is AzureIdentity.APP_REGISTRATION else mi
    return Credentials(mi, app, AsyncMsalCredential(azure), AsyncMsalCredential(app), MsalCredential(azure))


@functools.cache
def get_credentials() -> Credentials:
    """The process-wide credentials (built lazily from `get_settings()`)."""
    return build_credentials(get_settings())


def get_credential() -> AsyncMsalCredential:
    """The process-wide credential for Azure resources (the managed identity)."""
    return get_credentials().azure


def get_app_credential() -> AsyncMsalCredential:
    """The process-wide credential for Business Central and Dataverse (the app registration)."""
    return get_credentials().apps
