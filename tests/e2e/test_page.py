"""The chat page in real headless Chromium, against real broker processes.

What a person relies on: a refresh mid-answer continues it with nothing repeated or lost; a
second tab shows the prompt and the answer live; Stop in one tab is seen in every tab; the
page resumes by itself when its front is killed and restarted; a reset re-renders from the
snapshot; a failed run and a refused stream are shown as such. Each scenario compares what the
page shows with what the broker stores, and keeps screenshots (tests/artifacts/browser/).
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from broker.client import BrokerClient
from tests.api import events_key
from tests.browser import (
    ANSWERS,
    TIMEOUT_MS,
    Browser,
    answer_text,
    send,
    users,
    wait_answer,
    wait_status,
    wait_words,
)
from tests.helpers import new_cid
from tests.stack import Front, Stack, free_port

pytestmark = pytest.mark.timeout(180)


def stored_answer(front: Front, cid: str, index: int = -1) -> tuple[str, str]:
    """(content, status) of an assistant message as the broker merges it."""
    with BrokerClient(front.url) as client:
        answers = [m for m in client.snapshot(cid).messages if m.role == "assistant"]
    return answers[index].content, answers[index].status


def restart_later(stack: Stack, front: Front, seconds: float) -> threading.Thread:
    def restart() -> None:
        time.sleep(seconds)
        stack.front(port=front.port)

    thread = threading.Thread(target=restart)
    thread.start()
    return thread


def test_refresh_mid_answer_continues_with_nothing_repeated_or_lost(
    stack: Stack,
    browser: Browser,
) -> None:
    stack.start(fronts=1, workers=1)
    front, cid = stack.fronts[0], new_cid()
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "waiting")
    send(
        page,
        "Tell me about durable streams",
        {"tokens": 160, "interval_ms": 30, "reasoning_tokens": 8},
    )
    wait_words(page, 20)
    browser.shot(page, "before-refresh")
    before = answer_text(page)

    page.reload()
    page.wait_for_selector(ANSWERS)
    # Rendered at once from the snapshot: at least what was there before the refresh.
    assert answer_text(page).startswith(before)
    wait_answer(page, "completed")
    browser.shot(page, "after-refresh")

    content, status = stored_answer(front, cid)
    assert status == "completed"
    assert answer_text(page) == content and len(content.split()) == 160
    assert users(page) == ["Tell me about durable streams"]
    assert page.locator(ANSWERS).count() == 1
    reasoning = page.locator(f"{ANSWERS} .reasoning .text").text_content() or ""
    assert len(reasoning.split()) == 8 and reasoning not in answer_text(page)


def test_two_pages_on_one_conversation_one_sends_both_show_it(
    stack: Stack,
    browser: Browser,
) -> None:
    stack.start(fronts=1, workers=1)
    front, cid = stack.fronts[0], new_cid()
    first = browser.page(f"{front.url}/#/c/{cid}")
    second = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(first, "waiting")
    wait_status(second, "waiting")
    send(first, "hello from the first tab", {"tokens": 60, "interval_ms": 40})
    wait_words(second, 10)  # the second tab sees the answer as it grows, not only at the end
    assert users(second) == ["hello from the first tab"]
    browser.shot(second, "second-tab-live")
    wait_answer(first, "completed")
    wait_answer(second, "completed")
    content, _ = stored_answer(front, cid)
    assert answer_text(first) == answer_text(second) == content

    send(second, "and a reply from the second", {"tokens": 5, "interval_ms": 5})
    wait_answer(first, "completed", index=2)
    assert (
        users(first) == users(second) == ["hello from the first tab", "and a reply from the second"]
    )
    browser.shot(first, "first-tab")


def test_stop_in_one_page_is_seen_in_the_other(stack: Stack, browser: Browser) -> None:
    stack.start(fronts=1, workers=1)
    front, cid = stack.fronts[0], new_cid()
    first = browser.page(f"{front.url}/#/c/{cid}")
    second = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(first, "waiting")
    send(first, "a long answer, please", {"tokens": 500, "interval_ms": 30})
    wait_words(second, 10)
    second.wait_for_selector("#stop:enabled")
    second.click("#stop")
    wait_answer(first, "cancelled")
    wait_answer(second, "cancelled")
    content, status = stored_answer(front, cid)
    assert status == "cancelled"
    assert answer_text(first) == answer_text(second) == content
    assert 10 <= len(content.split()) < 500, "the partial answer stays"
    for page in (first, second):
        assert page.locator(f"{ANSWERS} .badge").text_content() == "stopped"
        assert page.is_disabled("#stop")
    browser.shot(first, "stopped-elsewhere")


def test_the_page_resumes_when_its_front_is_killed_and_restarted(
    stack: Stack,
    browser: Browser,
) -> None:
    stack.start(fronts=1, workers=1)
    front, cid = stack.fronts[0], new_cid()
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "waiting")
    send(page, "keep going", {"tokens": 200, "interval_ms": 30})
    wait_words(page, 10)
    front.kill()
    wait_status(page, "reconnecting")
    browser.shot(page, "reconnecting")
    restarter = restart_later(stack, front, 2.0)
    wait_answer(page, "completed")
    restarter.join()
    wait_status(page, "live")
    content, _ = stored_answer(stack.fronts[-1], cid)
    assert answer_text(page) == content and len(content.split()) == 200
    browser.shot(page, "resumed")


def test_a_reset_rerenders_the_page_from_the_snapshot(
    stack: Stack,
    browser: Browser,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """The page's position is trimmed away while its front is down: it shows what is kept."""
    stack.start(fronts=2, workers=1)
    front, other = stack.fronts
    cid = new_cid()
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "waiting")
    send(page, "one", {"tokens": 5, "interval_ms": 5})
    wait_answer(page, "completed", index=1)
    send(page, "two", {"tokens": 5, "interval_ms": 5})
    wait_answer(page, "completed", index=2)

    front.kill()
    with BrokerClient(other.url) as client:
        answer = client.ask(cid, "three", params={"tokens": 7, "interval_ms": 5})
        three = "".join(answer)
    kept_from = answer.accepted.event_id
    # "one" and "two" are gone; exactly, not by whole nodes
    assert redis_client.xtrim(events_key(prefix, cid), minid=kept_from, approximate=False) > 0
    stack.front(port=front.port)
    page.wait_for_function(
        "() => [...document.querySelectorAll('article.user')].map(e => e.textContent).join('|') === 'three'",
        timeout=TIMEOUT_MS,
    )
    wait_status(page, "live")
    assert answer_text(page) == three and page.locator(ANSWERS).count() == 1
    browser.shot(page, "after-reset")


def test_a_failed_run_is_shown_as_such(stack: Stack, browser: Browser) -> None:
    stack.start(
        fronts=1,
        workers=1,
        openai_models="unreachable",
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        provider_connect_retries=0,
    )
    front, cid = stack.fronts[0], new_cid()
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "waiting")
    assert page.locator("#model option").all_text_contents() == ["simulated", "unreachable"]
    send(page, "this one cannot be answered", model="unreachable")
    wait_answer(page, "failed")
    failure = page.locator(f"{ANSWERS} .failure").text_content() or ""
    assert failure.startswith("upstream_error: ")
    assert page.locator(f"{ANSWERS} .badge").text_content() == "failed"
    assert page.is_disabled("#stop")
    browser.shot(page, "failed")
    page.reload()  # rendered from the snapshot, the failure still says why
    wait_answer(page, "failed")
    assert (page.locator(f"{ANSWERS} .failure").text_content() or "") == failure


def test_a_refused_stream_is_shown_and_retried(stack: Stack, browser: Browser) -> None:
    stack.start(fronts=1, workers=1, max_streams_per_conversation=1)
    front, cid = stack.fronts[0], new_cid()
    with BrokerClient(front.url) as client:
        client.send(cid, "hi", params={"tokens": 3, "interval_ms": 1})
    first = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(first, "live")
    second = browser.page(f"{front.url}/#/c/{cid}")
    second.wait_for_selector('#banner[data-code="too_many_streams"]', timeout=TIMEOUT_MS)
    assert "429 too_many_streams" in (second.text_content("#banner") or "")
    browser.shot(second, "too-many-streams")
    first.close()  # a stream frees up: the second page gets in by itself
    wait_status(second, "live")
    assert second.is_hidden("#banner")


def test_docs_renders_every_operation_and_event(stack: Stack, browser: Browser) -> None:
    stack.start(fronts=1, workers=0)
    page = browser.page(f"{stack.fronts[0].url}/docs")
    page.wait_for_selector("#events")
    for operation in (
        "postMessage",
        "streamConversation",
        "streamRun",
        "cancelActiveRun",
        "listModels",
    ):
        assert page.is_visible(f"#{operation}"), operation
    events = page.locator("#events td:first-child code").all_text_contents()
    assert {"message", "delta", "run.failed", "reset", "error"} <= set(events)
    browser.shot(page, "docs")


@pytest.mark.parametrize(
    ("generator", "params", "shown", "text", "shot"),
    [
        (
            "examples.agent:weather_agent",
            {"tool_seconds": 0.5},
            [
                'tool result: {"city":"Paris","temp_c":21,"sky":"sunny"}',
                'weather_card: {"city":"Paris","temp_c":21,"sky":"sunny"}',
            ],
            "In Paris it is 21 °C and sunny.",
            "agent-live",
        ),
        (  # a Pydantic AI agent (tests/app_agents.py)
            "tests.app_agents:pydantic_ai_weather",
            {"tool_seconds": 0.5, "words": 3},
            ['tool result: {"city":"Paris","sky":"sunny","celsius":21}'],
            "In Paris it is sunny. word0 word1 word2",
            "framework-agent-live",
        ),
    ],
    ids=["generator", "framework"],
)
def test_tool_calls_results_and_data_are_shown_live_and_after_a_reload(
    stack: Stack,
    browser: Browser,
    generator: str,
    params: dict[str, float],
    shown: list[str],
    text: str,
    shot: str,
) -> None:
    stack.start(fronts=1, workers=1, generators=f"agent={generator}")
    front, cid = stack.fronts[0], new_cid()
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "waiting")
    send(page, "Weather in Paris?", params, model="agent")
    page.wait_for_selector(f"{ANSWERS} .part.tool-call", timeout=TIMEOUT_MS)
    wait_answer(page, "completed")
    live = page.locator(f"{ANSWERS} .content").inner_html()
    browser.shot(page, shot)
    for part in ['tool call: get_weather({"city":"Paris"})', *shown]:
        assert part in live
    assert text in (page.locator(f"{ANSWERS} .content").text_content() or "")
    page.reload()
    wait_answer(page, "completed")
    assert page.locator(f"{ANSWERS} .content").inner_html() == live, "the snapshot renders the same"


def test_a_page_on_a_new_id_shows_the_first_answer_and_a_deletion_empties_it(
    stack: Stack, browser: Browser
) -> None:
    stack.start(fronts=1, workers=1)
    front, cid = stack.fronts[0], new_cid()
    page = browser.page(f"{front.url}/#/c/{cid}")
    wait_status(page, "waiting")
    with BrokerClient(front.url) as client:
        # Posted from elsewhere: the page's waiting stream delivers it, no reload, no polling.
        client.send(cid, "asked from another device", params={"tokens": 6, "interval_ms": 5})
        wait_answer(page, "completed")
        assert users(page) == ["asked from another device"]
        wait_status(page, "live")
        client.delete_conversation(cid)
    wait_status(page, "waiting")
    assert users(page) == []
    assert page.locator(ANSWERS).count() == 0
    browser.shot(page, "deleted")
