"""Authentication: every kind of bad token is refused with a 401 that says why, never echoing it.

Real fronts with each key source (an HS256 secret, a PEM public key, a JWKS URL served from this
process on 127.0.0.1), real tokens signed here, and the attacks that matter: ``alg: none``, key
confusion (HS256 signed with the RSA public key's PEM), tampering, another key, wrong audience or
issuer. Also: the front refuses to start without BROKER_AUTH, and ``broker token`` makes tokens
it accepts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.api import Api, error_code
from tests.helpers import new_cid
from tests.stack import Stack, base_environment, settings_env
from tests.tokens import AUTH, SECRET, JwksServer, KeyPair, claims, hs256, unsigned

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

AUDIENCE = "broker-test"
ISSUER = "https://issuer.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tampered(token: str, **changes: Any) -> str:
    """The same header and signature over a payload changed after signing."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, _b64(json.dumps({**body, **changes}).encode()), signature])


def _hmac_signed(payload: dict[str, Any], key: bytes, alg: str = "HS256") -> str:
    """An HMAC token made by hand: PyJWT itself refuses to use a PEM as an HMAC secret."""
    signing_input = f"{_b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{_b64(json.dumps(payload).encode())}"
    digest = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(digest)}"


async def _refused(api: Api, path: str, headers: dict[str, str], fragment: str) -> None:
    response = await api.request("GET", path, headers=headers)
    assert response.status_code == 401, (fragment, response.text)
    assert error_code(response) == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    message = response.json()["error"]["message"]
    assert fragment in message, (fragment, message)
    credential = headers.get("Authorization", "").partition(" ")[2]
    if credential:
        assert credential not in response.text
        for part in credential.split("."):
            assert len(part) < 12 or part not in response.text


def _run_broker(
    args: list[str], settings: dict[str, Any], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = base_environment()
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "BROKER_AUTH"),
        ({"auth": "yes"}, "BROKER_AUTH"),
        ({"auth": "jwt"}, "BROKER_JWT_SECRET"),
        ({"auth": "jwt", "jwt_secret": "short"}, "BROKER_JWT_SECRET"),
        ({**AUTH, "jwt_algorithms": "none"}, "BROKER_JWT_ALGORITHMS"),
        ({**AUTH, "jwt_algorithms": "RS256"}, "BROKER_JWT_ALGORITHMS"),
        ({**AUTH, "jwt_jwks_url": "http://127.0.0.1:9/jwks"}, "BROKER_JWT_JWKS_URL"),
        ({"auth": "jwt", "jwt_public_key_file": "/nonexistent.pem"}, "BROKER_JWT_PUBLIC_KEY_FILE"),
        ({"auth": "none", "cors_origins": "*"}, "BROKER_CORS_ORIGINS"),
        ({"auth": "none", "trusted_proxies": "10.0.0.0/8, proxy.local"}, "BROKER_TRUSTED_PROXIES"),
    ],
    ids=[
        "unset",
        "unknown",
        "no-key",
        "short-secret",
        "alg-none",
        "rsa-with-secret",
        "two-keys",
        "missing-pem",
        "cors-wildcard",
        "proxy-by-name",
    ],
)
def test_serve_refuses_to_start_without_working_authentication(
    settings: dict[str, Any], named: str
) -> None:
    done = _run_broker(["serve", "--port", "9"], {"redis_url": "redis://127.0.0.1:9/0", **settings})
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


async def test_every_bad_token_is_refused_and_says_why(stack: Stack) -> None:
    stack.start(
        fronts=1,
        workers=0,
        **AUTH,
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        jwt_leeway_seconds=5,
    )
    (front,) = stack.fronts

    def good(**changes: Any) -> dict[str, Any]:
        return {**claims("alice"), "aud": AUDIENCE, "iss": ISSUER, **changes}

    def signed(payload: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode(payload, key, algorithm=alg)}

    path = f"/v1/conversations/{new_cid()}"
    valid = signed(good())
    assert (await front.api.request("GET", path, headers=valid)).status_code == 404  # let in
    without = {k: v for k, v in good().items() if k != "exp"}
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "no token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "Bearer <token>"),
        ({"Authorization": "Bearer"}, "Bearer <token>"),
        ({"Authorization": "Bearer not.a.token"}, "malformed"),
        ({"Authorization": "Bearer " + "x" * 40}, "malformed"),
        (signed(good(exp=int(good()["iat"]) - 60)), "expired"),
        (signed(good(nbf=int(good()["iat"]) + 600)), "not valid yet"),
        (signed(good(iat=int(good()["iat"]) + 600)), "not valid yet"),
        (
            {"Authorization": "Bearer " + _tampered(valid["Authorization"][7:], sub="bob")},
            "signature",
        ),
        (signed(good(), key="another-secret-0123456789-abcdefghijk"), "signature"),
        (signed(good(aud="someone-else")), "audience"),
        (signed({k: v for k, v in good().items() if k != "aud"}), "'aud'"),
        (signed(good(iss="https://elsewhere.test")), "issuer"),
        (signed(without), "'exp'"),
        # RFC 7519: a NumericDate is a number; PyJWT alone would take the string.
        (signed(good(exp=str(good()["exp"]))), "'exp' claim must be a number"),
        (signed(good(nbf=str(good()["iat"]))), "'nbf' claim must be a number"),
        (signed({k: v for k, v in good().items() if k != "sub"}), "'sub'"),
        (signed(good(sub="")), "'sub'"),
        (signed(good(admin="yes")), "'admin'"),
        (signed(good(read="everything")), "'read'"),
        (signed(good(read=["ok", "not/an/id"])), "'read'"),
        (signed(good(), alg="HS512"), "algorithm"),
        ({"Authorization": "Bearer " + unsigned(good())}, "algorithm"),
        (
            {"Authorization": "Bearer " + unsigned(good(), {"alg": "None", "typ": "JWT"})},
            "algorithm",
        ),
    ]
    for headers, fragment in cases:
        await _refused(front.api, path, headers, fragment)
    # A state-changing request with no token is refused the same way, before anything is read.
    response = await front.api.post_message(new_cid())
    assert response.status_code == 401 and error_code(response) == "unauthorized"
    # Default-deny: a path no route serves still needs a token first.
    response = await front.api.request("GET", "/v1/no-such-endpoint")
    assert response.status_code == 401
    assert (
        await front.api.request("GET", "/v1/no-such-endpoint", headers=valid)
    ).status_code == 404


async def test_a_public_key_front_refuses_key_confusion_and_other_keys(
    stack: Stack, tmp_path: Path
) -> None:
    rsa_key, other_rsa, ec_key = KeyPair.rsa(), KeyPair.rsa(), KeyPair.ec()
    pem = rsa_key.write_public(tmp_path / "public.pem")
    stack.start(fronts=1, workers=0, auth="jwt", jwt_public_key_file=pem)
    (front,) = stack.fronts
    cid = new_cid()
    owner = front.api.bearer(rsa_key.sign(claims("alice"), "RS256"))
    assert (await owner.post_message(cid)).status_code == 202
    assert (await owner.snapshot(cid)).status_code == 200

    path = f"/v1/conversations/{cid}"
    cases = [
        # Key confusion: the public key's PEM, known to anyone, used as an HMAC secret.
        (_hmac_signed(claims("alice"), rsa_key.public_pem), "algorithm"),
        (_hmac_signed(claims("alice"), rsa_key.public_pem.strip()), "algorithm"),
        (other_rsa.sign(claims("alice"), "RS256"), "signature"),
        (rsa_key.sign(claims("alice"), "RS512"), "algorithm"),
        (rsa_key.sign(claims("alice"), "PS256"), "algorithm"),
        (ec_key.sign(claims("alice"), "ES256"), "algorithm"),
        (unsigned(claims("alice")), "algorithm"),
        (hs256("alice"), "algorithm"),
    ]
    for token, fragment in cases:
        await _refused(front.api, path, {"Authorization": f"Bearer {token}"}, fragment)
    # The query string is not a way in unless turned on.
    response = await front.api.request(
        "GET", f"{path}?access_token={rsa_key.sign(claims('alice'), 'RS256')}"
    )
    assert response.status_code == 401
    assert "turned off" in response.json()["error"]["message"]


async def test_a_jwks_front_verifies_by_kid_and_fetches_the_keys_once(stack: Stack) -> None:
    rsa_key, ec_key, stranger = KeyPair.rsa(), KeyPair.ec(), KeyPair.rsa()
    server = JwksServer([rsa_key.jwk("r1", "RS256"), ec_key.jwk("e1", "ES256")])
    with server.running():
        stack.start(
            fronts=1, workers=0, auth="jwt", jwt_jwks_url=server.url, jwt_algorithms="RS256,ES256"
        )
        (front,) = stack.fronts
        cid = new_cid()
        alice_rsa = front.api.bearer(rsa_key.sign(claims("alice"), "RS256", kid="r1"))
        alice_ec = front.api.bearer(ec_key.sign(claims("alice"), "ES256", kid="e1"))
        assert (await alice_rsa.post_message(cid)).status_code == 202
        results = await asyncio.gather(*(alice_ec.snapshot(cid) for _ in range(20)))
        assert {r.status_code for r in results} == {200}
        assert server.fetches == 1  # every key came from one fetch, then the cache

        path = f"/v1/conversations/{cid}"
        cases = [
            (stranger.sign(claims("alice"), "RS256", kid="unknown"), "not in the key set"),
            (stranger.sign(claims("alice"), "RS256"), "kid"),
            (stranger.sign(claims("alice"), "RS256", kid="r1"), "signature"),
            (rsa_key.sign(claims("alice"), "RS256", kid="e1"), "algorithm"),
            (unsigned(claims("alice"), {"alg": "none", "kid": "r1"}), "algorithm"),
            (_hmac_signed(claims("alice"), rsa_key.public_pem), "kid"),
        ]
        for token, fragment in cases:
            await _refused(front.api, path, {"Authorization": f"Bearer {token}"}, fragment)


async def test_broker_token_makes_tokens_the_front_accepts(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, **AUTH)
    (front,) = stack.fronts
    cid = new_cid()

    def token(*args: str) -> str:
        done = _run_broker(["token", *args], AUTH)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    alice = front.api.bearer(token("--sub", "alice", "--ttl", "15m"))
    reader = front.api.bearer(token("--sub", "carol", "--read", cid, "other"))
    admin = front.api.bearer(token("--sub", "backend", "--admin"))
    assert (await alice.post_message(cid)).status_code == 202
    assert (await reader.snapshot(cid)).status_code == 200
    assert (await reader.cancel(cid)).status_code == 403
    assert (await admin.cancel(cid)).status_code in (200, 202)
    payload = jwt.decode(token("--sub", "dave", "--ttl", "2h"), SECRET, algorithms=["HS256"])
    assert payload["exp"] - payload["iat"] == 7200
    refused = _run_broker(["token", "--sub", "x"], {"auth": "jwt"})
    assert refused.returncode != 0 and "BROKER_JWT_SECRET" in refused.stderr


async def test_a_query_token_reads_when_enabled_and_never_reaches_a_log(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, **AUTH, jwt_query_token="true", log_level="DEBUG")
    (front,) = stack.fronts
    token = hs256("alice")
    cid = new_cid()
    run = await front.api.bearer(token).start_run(cid, "hi", tokens=3, interval_ms=5)
    query = f"?access_token={token}"
    async with httpx.AsyncClient(base_url=front.url, trust_env=False, timeout=10) as client:
        assert (await client.get(f"/v1/conversations/{cid}{query}")).status_code == 200
        posted = await client.post(f"/v1/conversations/{cid}/cancel{query}")
        assert posted.status_code == 401  # a query token only reads
        async with client.stream(
            "GET", f"/v1/conversations/{cid}/runs/{run['run_id']}/stream{query}&last_event_id=0-0"
        ) as stream:
            assert stream.status_code == 200
            body = b"".join([chunk async for chunk in stream.aiter_bytes()])
    assert b"run.completed" in body
    output = front.output()
    assert token not in output
    assert token.split(".")[2] not in output
