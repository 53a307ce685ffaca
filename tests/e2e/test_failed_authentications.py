"""Failed token checks are limited per client address, across fronts; ``X-Forwarded-For`` names
the client only when it comes from a proxy in ``BROKER_TRUSTED_PROXIES``.

Each test starts well inside a minute: the counts are per minute.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.api import Api, error_code
from tests.helpers import new_cid
from tests.stack import Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LIMIT = 4
FORGED = {"Authorization": "Bearer " + hs256("mallory")[:-4] + "AAAA"}


async def _fresh_minute() -> None:
    if time.time() % 60 > 45:
        await asyncio.sleep(60.2 - time.time() % 60)


async def _get(api: Api, headers: dict[str, str], **extra: str) -> Any:
    return await api.request("GET", f"/v1/conversations/{new_cid()}", headers={**headers, **extra})


async def test_an_address_that_keeps_failing_is_refused_unchecked_on_every_front(
    stack: Stack,
) -> None:
    stack.start(fronts=2, workers=0, **AUTH, limit_failed_authentications_per_minute=LIMIT)
    one, two = (front.api for front in stack.fronts)
    await _fresh_minute()
    # Spread over both fronts: the count is shared.
    for attempt in range(LIMIT):
        response = await _get(two if attempt % 2 else one, FORGED)
        assert response.status_code == 401, response.text
    refused = await _get(two, FORGED)  # the front that saw the limit reached
    assert refused.status_code == 429 and error_code(refused) == "too_many_failed_authentications"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The other front checks one more at most: its own failure tells it the address is over.
    answers = [(await _get(one, FORGED)).status_code for _ in range(3)]
    assert answers in ([401, 429, 429], [429, 429, 429]), answers
    # Not even a good token is checked from there now: a guess that hit would be worth nothing.
    good = {"Authorization": "Bearer " + hs256("alice")}
    assert (await _get(one, good)).status_code == 429
    assert (await _get(two, good)).status_code == 429


async def test_authentic_tokens_that_are_refused_are_not_guesses(stack: Stack) -> None:
    """An expired token, or one for another audience, is refused without counting: a page
    retrying with its stale token must not lock its own address out of logging in again."""
    stack.start(fronts=1, workers=0, **AUTH, limit_failed_authentications_per_minute=LIMIT)
    (front,) = stack.fronts
    await _fresh_minute()
    expired = {"Authorization": "Bearer " + hs256("alice", ttl=-120)}
    for _ in range(3 * LIMIT):
        response = await _get(front.api, expired)
        assert response.status_code == 401 and "expired" in response.text
    fresh = {"Authorization": "Bearer " + hs256("alice")}
    assert (await _get(front.api, fresh)).status_code == 404  # let in


async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(stack: Stack) -> None:
    stack.start(fronts=0, workers=0, **AUTH, limit_failed_authentications_per_minute=LIMIT)
    direct = stack.front()
    proxied = stack.front(trusted_proxies="127.0.0.1")
    await _fresh_minute()

    # Not trusted: the header is anyone's to write, and changing it escapes nothing.
    for n in range(LIMIT):
        await _get(direct.api, FORGED, **{"X-Forwarded-For": f"198.51.100.{n}"})
    assert (await _get(direct.api, FORGED, **{"X-Forwarded-For": "198.51.100.99"})).status_code == (
        429
    )

    # Trusted (this test's loopback is the proxy): each forwarded client counts apart; the
    # address the proxy appended is the client's, whatever the client wrote before it.
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(LIMIT):
        assert (await _get(proxied.api, FORGED, **attacker)).status_code == 401
    assert (await _get(proxied.api, FORGED, **attacker)).status_code == 429
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.7"}
    assert (await _get(proxied.api, FORGED, **spoofed)).status_code == 429
    neighbour = {"X-Forwarded-For": "203.0.113.8"}
    assert (await _get(proxied.api, FORGED, **neighbour)).status_code == 401
