"""TokenProvider against the local authority: caching, refresh, modes, and clear configuration errors."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.authority import SYSTEM_ASSIGNED_CLIENT_ID, AuthorityServer, Client
from shared.config import LOCAL_TENANT_ID
from shared.errors import ConfigurationError, TransientError
from shared.identity import MsalCredential, TokenProvider
from tests.shared.identity.conftest import make_settings

STORAGE = "https://storage.azure.com/.default"
BC = "https://api.businesscentral.dynamics.com/.default"
WRONG_SECRET = "s3cr3t-W0ULD-leak-7f1c"


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def _identity_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "shared.identity"]


def test_token_has_entra_claims_and_is_cached_per_scope(authority: AuthorityServer) -> None:
    provider = TokenProvider.from_settings(make_settings(authority))
    storage = provider.get_token(STORAGE)
    claims = _claims(storage.token)
    assert claims["aud"] == "https://storage.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{LOCAL_TENANT_ID}/"
    assert claims["tid"] == LOCAL_TENANT_ID
    assert claims["appid"] == claims["azp"] == "local-sync-app"
    assert claims["ver"] == "1.0"
    assert storage.expires_on == pytest.approx(claims["exp"], abs=2)

    assert provider.get_token(STORAGE).token == storage.token
    bc = provider.get_token(BC)
    assert _claims(bc.token)["aud"] == "https://api.businesscentral.dynamics.com"
    assert provider.get_token(BC).token == bc.token
    assert provider.token_requests == 2
    assert authority.state.issued == 2


def test_threads_share_one_request(authority: AuthorityServer) -> None:
    provider = TokenProvider.from_settings(make_settings(authority))
    barrier = threading.Barrier(16)
    tokens: list[str] = []

    def worker() -> None:
        barrier.wait()
        tokens.append(provider.get_token(STORAGE).token)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == 16 and len(set(tokens)) == 1
    assert authority.state.issued == 1


def test_short_lived_token_refreshed_before_expiry(start_authority: Callable[..., AuthorityServer]) -> None:
    authority = start_authority(token_lifetime=2)
    provider = TokenProvider.from_settings(make_settings(authority))
    first = provider.get_token_info(STORAGE)
    assert first.refresh_on is not None and first.refresh_on < first.expires_on
    assert provider.get_token(STORAGE).token == first.token  # still fresh: no request
    time.sleep(1.8)  # inside the last quarter of the lifetime -> due for refresh
    assert provider.get_token(STORAGE).token != first.token
    assert provider.token_requests == 2


def test_sync_credential_get_token_and_get_token_info(authority: AuthorityServer) -> None:
    credential = MsalCredential(TokenProvider.from_settings(make_settings(authority)))
    token = credential.get_token(STORAGE)
    info = credential.get_token_info(STORAGE)
    assert info.token == token.token and info.token_type == "Bearer"
    with pytest.raises(ValueError, match="exactly one scope"):
        credential.get_token(STORAGE, BC)


def test_wrong_secret_names_the_setting_and_never_the_secret(
    authority: AuthorityServer, caplog: pytest.LogCaptureFixture
) -> None:
    provider = TokenProvider.from_settings(make_settings(authority, client_secret=WRONG_SECRET))
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as caught:
        provider.get_token(STORAGE)
    message = str(caught.value)
    assert "SYNC_CLIENT_SECRET" in message and "AADSTS7000215" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    records = _identity_records(caplog)
    assert len(records) == 1 and "SYNC_CLIENT_SECRET" in records[0].getMessage()
    assert WRONG_SECRET not in message
    assert all(WRONG_SECRET not in r.getMessage() for r in caplog.records)  # MSAL's own debug logs too
    assert WRONG_SECRET not in caplog.text


def test_unknown_tenant_names_sync_tenant_id(authority: AuthorityServer, caplog: pytest.LogCaptureFixture) -> None:
    provider = TokenProvider.from_settings(make_settings(authority, tenant_id="11111111-2222-3333-4444-555555555555"))
    with caplog.at_level(logging.ERROR), pytest.raises(ConfigurationError, match="SYNC_TENANT_ID"):
        provider.get_token(STORAGE)
    assert len(_identity_records(caplog)) == 1


def test_unknown_client_names_sync_client_id(authority: AuthorityServer) -> None:
    provider = TokenProvider.from_settings(make_settings(authority, client_id="no-such-app"))
    with pytest.raises(ConfigurationError, match="SYNC_CLIENT_ID"):
        provider.get_token(STORAGE)


def test_untrusted_tls_names_sync_authority_ca(authority: AuthorityServer) -> None:
    # Without SYNC_AUTHORITY_CA the system bundle is used, which does not contain the local CA.
    provider = TokenProvider.from_settings(make_settings(authority, authority_ca=None))
    with pytest.raises(ConfigurationError, match="SYNC_AUTHORITY_CA"):
        provider.get_token(STORAGE)


def test_unreachable_authority_is_transient(authority: AuthorityServer) -> None:
    settings = make_settings(authority)
    authority.stop()
    provider = TokenProvider.from_settings(settings)
    with pytest.raises(TransientError, match="SYNC_AUTHORITY_HOST"):
        provider.get_token(STORAGE)
    authority.start = lambda: authority  # type: ignore[method-assign]
    authority.stop = lambda: None  # type: ignore[method-assign]  # already stopped; fixture teardown is a no-op


def _client_certificate(directory: Path, name: str) -> tuple[Path, bytes]:
    """A self-signed client certificate; returns (PEM file with key + cert, the cert PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / f"{name}.pem"
    path.write_bytes(key_pem + cert_pem)
    return path, cert_pem


def test_certificate_credential(start_authority: Callable[..., AuthorityServer], tmp_path: Path) -> None:
    good, good_cert = _client_certificate(tmp_path, "good")
    other, _ = _client_certificate(tmp_path, "other")
    authority = start_authority(clients={"cert-app": Client("cert-app", certificates=(good_cert,))})

    provider = TokenProvider.from_settings(
        make_settings(authority, auth_mode="certificate", client_id="cert-app", client_certificate_path=str(good))
    )
    claims = _claims(provider.get_token(BC).token)
    assert claims["appid"] == "cert-app" and claims["appidacr"] == "2"

    rogue = TokenProvider.from_settings(
        make_settings(authority, auth_mode="certificate", client_id="cert-app", client_certificate_path=str(other))
    )
    with pytest.raises(ConfigurationError, match="SYNC_CLIENT_CERTIFICATE_PATH"):
        rogue.get_token(BC)

    missing = TokenProvider.from_settings(
        make_settings(authority, auth_mode="certificate", client_certificate_path=str(tmp_path / "nope.pem"))
    )
    with pytest.raises(ConfigurationError, match="SYNC_CLIENT_CERTIFICATE_PATH"):
        missing.get_token(BC)


@pytest.mark.parametrize(
    ("client_id", "expected_appid"), [(None, SYSTEM_ASSIGNED_CLIENT_ID), ("mi-user-1", "mi-user-1")]
)
def test_managed_identity_app_service_protocol(
    authority: AuthorityServer, monkeypatch: pytest.MonkeyPatch, client_id: str | None, expected_appid: str
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{authority.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "local-identity-header")
    provider = TokenProvider.from_settings(
        make_settings(authority, auth_mode="managed_identity", managed_identity_client_id=client_id)
    )
    token = provider.get_token(STORAGE)
    claims = _claims(token.token)
    assert claims["aud"] == "https://storage.azure.com" and claims["appid"] == expected_appid
    assert token.expires_on > time.time() + 3000
    assert provider.get_token(STORAGE).token == token.token
    assert authority.state.managed_identity == 1 and provider.token_requests == 1


def test_managed_identity_wrong_header_is_a_clear_error(
    authority: AuthorityServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{authority.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "wrong-header-value")
    provider = TokenProvider.from_settings(make_settings(authority, auth_mode="managed_identity"))
    with caplog.at_level(logging.ERROR), pytest.raises(Exception, match="managed identity") as caught:
        provider.get_token(STORAGE)
    assert "wrong-header-value" not in str(caught.value)
    assert len(_identity_records(caplog)) == 1
