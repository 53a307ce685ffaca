"""The faces with BROKER_AUTH=jwt: the page trades a token for the session cookie (pasted or
from ``#token=``) and says when a token lacks access; the Python client and the CLI send their
token, and a stream whose token expires tells the caller where to resume."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker.client import BrokerClient, Forbidden, TokenExpired, Unauthorized
from tests.browser import ANSWERS, TIMEOUT_MS, Browser, send, wait_status, wait_words
from tests.helpers import new_cid
from tests.stack import Stack, base_environment
from tests.tokens import AUTH, hs256

pytestmark = pytest.mark.timeout(180)


def token(subject: str, *, ttl: float = 3600, read: list[str] | None = None) -> str:
    return hs256(subject, ttl, read=read) if read else hs256(subject, ttl)


def jwt_stack(stack: Stack, **settings: object) -> Stack:
    return stack.start(fronts=1, workers=1, **AUTH, **settings)


def test_the_page_takes_a_token_and_says_when_one_lacks_access(
    stack: Stack, browser: Browser
) -> None:
    jwt_stack(stack)
    front, cid = stack.fronts[0], new_cid()
    alice = token("alice")
    with BrokerClient(front.url, token=alice) as client:
        client.send(cid, "alice's question", params={"tokens": 400, "interval_ms": 30})

    # No token: the page says so and asks for one; a pasted token opens the conversation.
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "unauthorized")
    page.wait_for_selector("#token-form:visible")
    assert (page.text_content("#banner") or "").startswith("401 unauthorized")
    browser.shot(page, "token-needed")
    page.fill("#token-input", alice)
    page.click("#token-form button")
    wait_status(page, "live")
    wait_words(page, 5)
    assert page.is_hidden("#token-form")

    # A read-only token from the URL: it reads the answer live, but may not write.
    reader = browser.context.new_page()  # the same browser: its cookie is replaced
    reader.goto(f"{front.url}/#/c/{cid}&token={token('bob', read=[cid])}")
    wait_status(reader, "live")
    assert "token=" not in reader.url, "the token leaves the address bar"
    wait_words(reader, 10)
    reader.click("#stop")
    reader.wait_for_selector('#banner[data-code="forbidden"]', timeout=TIMEOUT_MS)
    send(reader, "bob tries to post")
    reader.wait_for_selector('#banner[data-code="forbidden"]', timeout=TIMEOUT_MS)
    assert (reader.text_content("#banner") or "").startswith("403 forbidden")
    browser.shot(reader, "read-only")

    # A token of someone else entirely sees nothing: the same as no conversation at all.
    stranger = browser.context.new_page()
    stranger.goto(f"{front.url}/#/c/{cid}&token={token('carol')}")
    wait_status(stranger, "waiting")
    assert stranger.locator(ANSWERS).count() == 0
    send(stranger, "carol tries to post")
    stranger.wait_for_selector('#banner[data-code="conversation_not_found"]', timeout=TIMEOUT_MS)
    browser.shot(stranger, "no-access")
    with BrokerClient(front.url, token=alice) as client:
        client.cancel(cid, wait=True)


def test_the_client_sends_its_token_and_learns_when_it_expires(stack: Stack) -> None:
    jwt_stack(stack, keepalive_seconds=1, jwt_leeway_seconds=0)
    front, cid = stack.fronts[0], new_cid()
    with BrokerClient(front.url) as anonymous, pytest.raises(Unauthorized) as refused:
        anonymous.send(cid, "hi")
    assert refused.value.code == "unauthorized" and refused.value.status == 401
    with BrokerClient(front.url, token=token("alice")) as client:
        run = client.send(cid, "a long one", params={"tokens": 500, "interval_ms": 20})
    with BrokerClient(front.url, token=token("bob", read=[cid])) as reader:
        with pytest.raises(Forbidden) as forbidden:
            reader.cancel(cid)
        assert forbidden.value.code == "forbidden"
    with BrokerClient(front.url, token=token("alice", ttl=3)) as short:
        stream = short.stream(cid)
        with pytest.raises(TokenExpired) as expired:
            for _ in stream:
                pass
    assert expired.value.last_event_id == stream.last_event_id is not None
    with BrokerClient(front.url, token=token("alice")) as client:
        resumed = client.stream_run(cid, run.run_id, after=expired.value.last_event_id)
        next(resumed)  # a fresh token resumes where the old one stopped
        resumed.close()
        client.cancel(cid, wait=True)


def test_the_cli_sends_its_token(stack: Stack) -> None:
    jwt_stack(stack)
    front, cid = stack.fronts[0], new_cid()

    def broker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broker", *args],
            env={**base_environment(), "BROKER_URL": front.url, **env},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    missing = broker("show", cid)
    assert missing.returncode == 1
    assert missing.stderr.startswith("broker show: the broker wants a valid token (")
    assert "pass --token or set BROKER_TOKEN" in missing.stderr
    alice = token("alice")
    sent = broker("send", cid, "hi", "--param", "tokens=3", "--follow", "--token", alice)
    assert sent.returncode == 0, sent.stderr
    shown = broker("show", cid, BROKER_TOKEN=alice)
    assert shown.returncode == 0 and shown.stdout.startswith("you: hi\n")
    read_only = broker("send", cid, "again", BROKER_TOKEN=token("bob", read=[cid]))
    assert read_only.returncode == 1 and read_only.stderr.startswith(
        f"broker send: this token may read {cid}"
    )
