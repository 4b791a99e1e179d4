"""Test helper: an RS256 key, its JWKS dict and a minter of Entra-shaped access tokens."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

TENANT = "00000000-0000-0000-0000-0000000000aa"
KID = "test-key-1"


@functools.cache
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(_key().public_key()))
    jwk.update(kid=KID, use="sig", alg="RS256")
    return {"keys": [jwk]}


def mint(
    audience: str,
    *,
    oid: str = "11111111-1111-1111-1111-111111111111",
    lifetime: int = 3600,
    not_before: int = 0,
    issuer: str = f"https://sts.windows.net/{TENANT}/",
    wrong_key: bool = False,
    kid: str = KID,
) -> str:
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now + not_before,
        "exp": now + lifetime,
        "oid": oid,
        "appid": "local-sync-app",
        "tid": TENANT,
    }
    key = _other_key() if wrong_key else _key()
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
