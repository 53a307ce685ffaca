"""A verified token is remembered until it expires, never past it."""

from __future__ import annotations

import time

import jwt
import pytest

from broker.front.security.tokens import TokenVerifier, Unauthorized
from tests.tokens import SECRET

pytestmark = pytest.mark.anyio


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(algorithms=["HS256"], key=SECRET.encode())
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 1}, SECRET, algorithm="HS256")
    first = await verifier.verify(token, "header")
    assert await verifier.verify(token, "header") is first  # remembered, not checked again
    assert (await verifier.verify(token, "cookie")).via == "cookie"
    time.sleep(max(0.0, now + 1.05 - time.time()))
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(token, "header")


async def test_a_bad_token_is_never_remembered() -> None:
    verifier = TokenVerifier(algorithms=["HS256"], key=SECRET.encode())
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "another-" + SECRET, "HS256")
    for _ in range(2):
        with pytest.raises(Unauthorized, match="signature"):
            await verifier.verify(forged, "header")
