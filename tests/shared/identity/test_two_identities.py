"""Two identities through MSAL against the local authority: the managed identity for Azure resources, the app
registration for BC/Dataverse by federated credential (default), certificate (with renewal) or secret."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from local.authority import AuthorityServer, Client, FederatedCredential, principal_id
from shared.config import LOCAL_CLIENT_ID, LOCAL_MANAGED_IDENTITY_CLIENT_ID, LOCAL_TENANT_ID
from shared.errors import ConfigurationError
from shared.identity import TokenProvider, build_credentials
from tests.shared.identity.conftest import make_settings
from tests.shared.identity.test_identity_provider import _client_certificate

BC = "https://api.businesscentral.dynamics.com/.default"
STORAGE = "https://storage.azure.com/.default"
MI = LOCAL_MANAGED_IDENTITY_CLIENT_ID


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
def msi(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[AuthorityServer], None]]:
    """Point MSAL's App Service managed-identity detection at an authority (as Flex Consumption sets them)."""

    def point(authority: AuthorityServer) -> None:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{authority.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "local-identity-header")

    yield point


def _federated(authority: AuthorityServer, **overrides: object) -> TokenProvider:
    settings = make_settings(authority, auth_mode="federated", managed_identity_client_id=MI, **overrides)
    return TokenProvider.for_app_registration(settings)


def test_federated_credential_gets_the_app_token_through_the_managed_identity(
    start_authority: Callable[..., AuthorityServer], msi: Callable[[AuthorityServer], None]
) -> None:
    authority = start_authority(managed_identities=[MI])
    msi(authority)
    settings = make_settings(authority, auth_mode="federated", managed_identity_client_id=MI)
    creds = build_credentials(settings)

    app = _claims(creds.apps.provider.get_token(BC).token)
    storage = _claims(creds.azure.provider.get_token(STORAGE).token)

    # BC's token is the app registration's, obtained with the managed identity's exchange token as assertion.
    assert app["appid"] == LOCAL_CLIENT_ID and app["aud"] == "https://api.businesscentral.dynamics.com"
    assert app["oid"] == principal_id(LOCAL_TENANT_ID, LOCAL_CLIENT_ID)
    assert authority.state.federated_exchanges == 1
    assert authority.state.by_audience["api://AzureADTokenExchange"] == 1
    # Storage's token is the managed identity's own: distinct appid and oid.
    assert storage["appid"] == MI and storage["oid"] == principal_id(LOCAL_TENANT_ID, MI)
    assert storage["oid"] != app["oid"] and "xms_mirid" in storage
    assert creds.azure_label == "managed identity" and creds.apps_label == "app registration"
    # The exchange token is cached by the managed identity's provider: a second app scope reuses it.
    creds.apps.provider.get_token("http://127.0.0.1:7082/.default")
    assert authority.state.by_audience["api://AzureADTokenExchange"] == 1
    assert authority.state.federated_exchanges == 2


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        (FederatedCredential(LOCAL_CLIENT_ID, "someone-else"), "AADSTS700213"),  # subject
        (FederatedCredential(LOCAL_CLIENT_ID, principal_id(LOCAL_TENANT_ID, MI), "https://evil/"), "AADSTS700211"),
        (FederatedCredential(LOCAL_CLIENT_ID, principal_id(LOCAL_TENANT_ID, MI), None, "api://other"), "AADSTS700212"),
    ],
)
def test_assertion_refused_unless_issuer_subject_and_audience_match(
    start_authority: Callable[..., AuthorityServer],
    msi: Callable[[AuthorityServer], None],
    credential: FederatedCredential,
    code: str,
) -> None:
    authority = start_authority(managed_identities=[MI], federated=[credential])
    msi(authority)
    with pytest.raises(ConfigurationError, match="federated credential") as caught:
        _federated(authority).get_token(BC)
    assert code in str(caught.value)
    assert authority.state.federated_exchanges == 0


def test_federated_assertion_for_an_app_without_federated_credential_is_refused(
    start_authority: Callable[..., AuthorityServer], msi: Callable[[AuthorityServer], None]
) -> None:
    authority = start_authority(
        managed_identities=[MI], federated=[], clients={"other-app": Client("other-app", secrets=("x",))}
    )
    msi(authority)
    with pytest.raises(ConfigurationError):
        _federated(authority, client_id="other-app").get_token(BC)


def test_managed_identity_not_assigned_to_the_app_gets_no_token(
    start_authority: Callable[..., AuthorityServer], msi: Callable[[AuthorityServer], None]
) -> None:
    authority = start_authority(managed_identities=[MI])
    msi(authority)
    stranger = TokenProvider.for_managed_identity(make_settings(authority, managed_identity_client_id="not-mine"))
    with pytest.raises(Exception, match="managed identity"):
        stranger.get_token(STORAGE)


def test_managed_identity_mode_is_refused_for_bc_and_dataverse(authority: AuthorityServer) -> None:
    with pytest.raises(ConfigurationError, match="SYNC_AUTH_MODE=managed_identity"):
        build_credentials(make_settings(authority, auth_mode="managed_identity"))


def test_secret_mode_still_serves_local_tools(authority: AuthorityServer) -> None:
    creds = build_credentials(make_settings(authority))  # the contract's local-sync-app / local-dev-secret
    assert _claims(creds.apps.provider.get_token(BC).token)["appid"] == LOCAL_CLIENT_ID
    assert creds.apps.provider.settings.auth_mode.value == "secret"


def test_app_registration_identity_for_azure_is_a_deliberate_choice(authority: AuthorityServer) -> None:
    creds = build_credentials(make_settings(authority, SYNC_AZURE_IDENTITY="app_registration"))
    assert creds.azure.provider is creds.apps.provider and creds.azure_label == "app registration"


def test_certificate_renewal_keeps_working(start_authority: Callable[..., AuthorityServer], tmp_path: Path) -> None:
    """Key Vault renews the certificate (new key, new thumbprint) and the app registration gets the new one; the
    old one is removed. The provider picks up the renewed PEM at the same path without a restart."""
    old_pem, old_cert = _client_certificate(tmp_path, "old")
    authority = start_authority(clients={"cert-app": Client("cert-app", certificates=(old_cert,))})
    live = tmp_path / "live.pem"
    live.write_bytes(old_pem.read_bytes())
    provider = TokenProvider.for_app_registration(
        make_settings(authority, auth_mode="certificate", client_id="cert-app", client_certificate_path=str(live))
    )
    assert _claims(provider.get_token(BC).token)["appid"] == "cert-app"

    new_pem, new_cert = _client_certificate(tmp_path, "new")
    authority.state.clients["cert-app"] = Client("cert-app", certificates=(new_cert,))  # old one removed
    # The renewed content lands in the same file (mount/sync of the Key Vault secret); mtime moves on.
    live.write_bytes(new_pem.read_bytes())
    stat = live.stat()
    os.utime(live, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    token = provider.get_token(BC, force_refresh=True)
    assert _claims(token.token)["appid"] == "cert-app" and token.expires_on > time.time()
