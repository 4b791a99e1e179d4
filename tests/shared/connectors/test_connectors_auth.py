"""The clients with real RS256 bearer tokens, validated by the simulators' TokenValidator (test key + JWKS)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives.asymmetric import rsa

from local.bc_sim import create_app as create_bc
from local.dv_sim import create_app as create_dv
from local.simcore import TokenValidator
from shared.config import BC_AUDIENCE, LOCAL_TENANT_ID
from shared.connectors import BusinessCentralClient, DataverseClient
from shared.errors import UnauthorizedError
from tests.shared.connectors.sim_helpers import Sim

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "test-key-1"


def jwks() -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}


class MintingCredential:
    """Mints tokens like the local authority: aud = scope without /.default."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes += scopes
        now = int(time.time())
        claims = {
            "iss": f"https://sts.windows.net/{LOCAL_TENANT_ID}/",
            "aud": scopes[0].removesuffix("/.default"),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": "local-sync-app",
            "oid": "11111111-1111-1111-1111-111111111111",
            "tid": LOCAL_TENANT_ID,
        }
        return AccessToken(jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": KID}), now + 3600)

    async def close(self) -> None:
        return None


async def test_bc_with_real_tokens_and_the_right_scope() -> None:
    sim = await Sim(create_bc(auth=TokenValidator(audience=BC_AUDIENCE, jwks=jwks()))).start()
    cred = MintingCredential()
    bc = BusinessCentralClient(f"{sim.base}/v2.0/{LOCAL_TENANT_ID}/Production/api/v2.0", cred)
    try:
        await sim.seed("customers", 10)
        pages = [p async for p in bc.list_records("customers")]
        assert sum(len(p) for p in pages) == 10
        assert set(cred.scopes) == {"https://api.businesscentral.dynamics.com/.default"}
        assert (await sim.stats()).get("unauthorized", 0) == 0
    finally:
        await bc.aclose()
        await sim.close()


async def test_dataverse_token_for_the_wrong_org_is_unauthorized() -> None:
    validator = TokenValidator(audience="http://127.0.0.1:1", jwks=jwks())
    sim = await Sim(create_dv(auth=validator)).start()
    cred = MintingCredential()
    dv = DataverseClient(f"{sim.base}/api/data/v9.2", cred)  # scope = the org URL (the sim's base)
    try:
        with pytest.raises(UnauthorizedError) as info:
            [p async for p in dv.list_records("accounts")]
        assert info.value.status == 401 and info.value.service == "dataverse"
        assert dv.calls.total == 1  # a 401 is not retried
        validator.audience = sim.base  # the org URL is the audience, as in Dataverse
        assert [p async for p in dv.list_records("accounts")] == [[]]
        assert set(cred.scopes) == {f"{sim.base}/.default"}
    finally:
        await dv.aclose()
        await sim.close()
