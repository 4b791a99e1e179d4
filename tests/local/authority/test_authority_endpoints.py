"""The token authority's HTTP surface, in-process (aiohttp TestClient over plain HTTP)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.authority import create_app
from local.authority.app import ASSERTION_TYPE
from local.certs import LocalCerts, ensure_local_certs
from shared.config import LOCAL_TENANT_ID

T = LOCAL_TENANT_ID
TOKEN = f"/{T}/oauth2/v2.0/token"
SECRET_FORM = {
    "grant_type": "client_credentials",
    "client_id": "local-sync-app",
    "client_secret": "local-dev-secret",
    "scope": "https://storage.azure.com/.default",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> LocalCerts:
    return ensure_local_certs(tmp_path_factory.mktemp("authority-certs"))


@pytest.fixture
async def client(certs: LocalCerts) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(certs=certs, token_lifetime=120))) as c:
        yield c


async def _jwks_key(client: TestClient) -> object:
    keys = (await (await client.get(f"/{T}/discovery/v2.0/keys")).json())["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["kid"]
    return jwt.PyJWK(keys[0]).key


async def test_discovery_documents(client: TestClient) -> None:
    v2 = await (await client.get(f"/{T}/v2.0/.well-known/openid-configuration")).json()
    base = str(client.make_url("")).rstrip("/")
    assert v2["token_endpoint"] == f"{base}/{T}/oauth2/v2.0/token"
    assert v2["jwks_uri"] == f"{base}/{T}/discovery/v2.0/keys"
    assert "authorization_endpoint" in v2
    v1 = await (await client.get(f"/{T}/.well-known/openid-configuration")).json()
    assert v1["issuer"] == f"https://sts.windows.net/{T}/"


async def test_secret_grant_issues_verifiable_v1_token(client: TestClient) -> None:
    response = await client.post(TOKEN, data=SECRET_FORM)
    assert response.status == 200
    body = await response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120
    claims = jwt.decode(
        body["access_token"],
        await _jwks_key(client),  # type: ignore[arg-type]
        algorithms=["RS256"],
        audience="https://storage.azure.com",
        issuer=f"https://sts.windows.net/{T}/",
    )
    assert claims["tid"] == T and claims["appid"] == "local-sync-app" and claims["ver"] == "1.0"
    assert claims["exp"] - claims["nbf"] == 120 and claims["roles"]
    assert uuid.UUID(str(claims["oid"]))
    stats = await (await client.get("/_authority/stats")).json()
    assert stats["tokensIssued"] == 1 and stats["byAudience"] == {"https://storage.azure.com": 1}
    await client.post("/_authority/reset")
    assert (await (await client.get("/_authority/stats")).json())["tokensIssued"] == 0


@pytest.mark.parametrize(
    ("path", "form", "status", "error", "code"),
    [
        (TOKEN, {**SECRET_FORM, "client_secret": "wrong"}, 401, "invalid_client", 7000215),
        (TOKEN, {**SECRET_FORM, "client_id": "nobody"}, 400, "unauthorized_client", 700016),
        (TOKEN, {**SECRET_FORM, "scope": "https://storage.azure.com"}, 400, "invalid_scope", 1002012),
        (TOKEN, {**SECRET_FORM, "grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ("/not-a-tenant/oauth2/v2.0/token", SECRET_FORM, 400, "invalid_request", 90002),
    ],
)
async def test_token_errors_in_entra_shape(
    client: TestClient, path: str, form: dict[str, str], status: int, error: str, code: int
) -> None:
    response = await client.post(path, data=form)
    assert response.status == status
    body = await response.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert "wrong" not in body["error_description"]  # a rejected secret is never echoed
    assert (await (await client.get("/_authority/stats")).json())["tokensIssued"] == 0


async def test_unknown_tenant_discovery_is_400(client: TestClient) -> None:
    response = await client.get("/other/v2.0/.well-known/openid-configuration")
    assert response.status == 400 and (await response.json())["error_codes"] == [90002]


def _cert_and_key(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _assertion(key: rsa.RSAPrivateKey, aud: str, *, client_id: str = "file-app", exp_in: int = 600) -> str:
    now = int(time.time())
    claims = {"aud": aud, "iss": client_id, "sub": client_id, "iat": now, "exp": now + exp_in, "jti": "x"}
    return jwt.encode(claims, key, algorithm="RS256")


async def test_certificate_registered_by_file(client: TestClient, certs: LocalCerts) -> None:
    key, cert = _cert_and_key("file-app")
    directory: Path = certs.directory / "client-certs"
    directory.mkdir(exist_ok=True)
    (directory / "file-app.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    aud = str(client.make_url(TOKEN))
    form = {
        "grant_type": "client_credentials",
        "client_id": "file-app",
        "client_assertion_type": ASSERTION_TYPE,
        "scope": "https://api.businesscentral.dynamics.com/.default",
    }

    ok = await client.post(TOKEN, data={**form, "client_assertion": _assertion(key, aud)})
    assert ok.status == 200
    claims = jwt.decode((await ok.json())["access_token"], options={"verify_signature": False})
    assert claims["appid"] == "file-app" and claims["appidacr"] == "2"

    other_key, _ = _cert_and_key("other")
    cases = {
        700027: _assertion(other_key, aud),  # signed by an unregistered key
        700024: _assertion(key, aud, exp_in=-3600),  # expired
        700212: _assertion(key, "https://elsewhere/token"),  # addressed to another endpoint
    }
    for code, assertion in cases.items():
        response = await client.post(TOKEN, data={**form, "client_assertion": assertion})
        assert response.status == 401, code
        assert (await response.json())["error_codes"] == [code]


async def test_managed_identity_endpoint(client: TestClient) -> None:
    query = {"resource": "https://servicebus.azure.net", "api-version": "2019-08-01", "client_id": "uami"}
    denied = await client.get("/msi/token", params=query, headers={"X-IDENTITY-HEADER": "nope"})
    assert denied.status == 401
    response = await client.get("/msi/token", params=query, headers={"X-IDENTITY-HEADER": "local-identity-header"})
    assert response.status == 200
    body = await response.json()
    assert body["resource"] == "https://servicebus.azure.net" and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) == pytest.approx(time.time() + 120, abs=3)
    claims = jwt.decode(
        body["access_token"],
        await _jwks_key(client),  # type: ignore[arg-type]
        algorithms=["RS256"],
        audience="https://servicebus.azure.net",
    )
    assert claims["appid"] == "uami"
    stats = await (await client.get("/_authority/stats")).json()
    assert stats["managedIdentity"] == 1 and stats["failures"] == 1
