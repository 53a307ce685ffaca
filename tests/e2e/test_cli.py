"""The ``broker`` client commands against a running broker, run as a user runs them.

Each command is a real ``python -m broker`` process with ``BROKER_URL`` in its environment.
Ctrl-C is a real SIGINT; failures must be one line that says what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from broker.cli import build_parser
from broker.client import BrokerClient
from tests.helpers import new_cid
from tests.stack import Stack, base_environment, free_port

pytestmark = pytest.mark.timeout(120)


def _env(url: str, **extra: str) -> dict[str, str]:
    return {**base_environment(), "BROKER_URL": url, **extra}


def broker(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _spawn(url: str, *args: str) -> subprocess.Popen[str]:
    # A shell that runs tests in the background leaves SIGINT ignored, and children inherit
    # that; a terminal user's broker gets the default handler, as here.
    return subprocess.Popen(
        [sys.executable, "-m", "broker", *args],
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_send_follow_prints_the_answer_and_show_prints_the_conversation(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    url, cid = stack.fronts[0].url, new_cid()
    sent = broker(
        url,
        "send",
        cid,
        "Tell me about streams",
        "--param",
        "tokens=12",
        "--param",
        "interval_ms=5",
        "--param",
        "reasoning_tokens=3",
        "--follow",
    )
    assert sent.returncode == 0, sent.stderr
    with BrokerClient(url) as client:
        answer = client.snapshot(cid).messages[1]
    lines = sent.stdout.splitlines()
    assert re.match(r"sent: run r_\S+, message m_\S+, event \d+-\d+", lines[0])
    assert "you: Tell me about streams" in lines
    assert f"reasoning: {answer.reasoning}" in lines  # reasoning on a line of its own
    assert answer.content in lines and len(answer.content.split()) == 12
    assert lines[-1].startswith("[completed: stop")
    assert "\x1b[" not in sent.stdout  # no colour codes when stdout is not a terminal

    shown = broker(url, "show", cid)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:4] == [
        "you: Tell me about streams",
        f"reasoning: {answer.reasoning}",
        answer.content,
        "[completed]",
    ]
    as_json = json.loads(broker(url, "show", cid, "--json").stdout)
    assert as_json["messages"][1]["content"] == answer.content


def test_tail_timeline_then_ctrl_c_detaches_without_cancelling(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    url, cid = stack.fronts[0].url, new_cid()
    with BrokerClient(url) as client:
        run = client.send(cid, "a long one", params={"tokens": 200, "interval_ms": 20})
    tail = _spawn(url, "tail", cid, "--timeline")
    assert tail.stdout is not None
    lines = [tail.stdout.readline() for _ in range(6)]
    tail.send_signal(signal.SIGINT)
    out, err = tail.communicate(timeout=20)
    assert tail.returncode == 130
    names = [line.split()[2] for line in lines]
    assert names[:3] == ["message", "run.started", "delta"]
    stamp, event_id = lines[0].split()[:2]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", stamp) and re.fullmatch(r"\d+-\d+", event_id)
    assert json.loads(lines[0].split(None, 3)[3])["run_id"] == run.run_id
    assert "detached; nothing was cancelled" in err and f"broker tail {cid} --after" in err
    assert "Traceback" not in err
    with BrokerClient(url) as client:
        events = list(client.stream_run(cid, run.run_id))
    assert type(events[-1]).__name__ == "RunCompleted", "Ctrl-C on tail must not cancel the run"


def test_tail_after_an_id_prints_only_what_follows(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    url, cid = stack.fronts[0].url, new_cid()
    with BrokerClient(url) as client:
        first = client.send(cid, "one", params={"tokens": 3, "interval_ms": 1})
        list(client.stream_run(cid, first.run_id))
        after = client.snapshot(cid).last_event_id
        second = client.send(cid, "two", params={"tokens": 3, "interval_ms": 1})
        list(client.stream_run(cid, second.run_id))
    tail = _spawn(url, "tail", cid, "--after", str(after))
    assert tail.stdout is not None
    lines = [tail.stdout.readline().rstrip("\n") for _ in range(4)]
    tail.send_signal(signal.SIGINT)
    tail.communicate(timeout=20)
    assert lines[0] == "you: two" and lines[1] == "[simulated is answering]"
    assert lines[3].startswith("[completed")


def test_cancel_stops_the_answer_from_another_terminal(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    url, cid = stack.fronts[0].url, new_cid()
    follow = _spawn(url, "send", cid, "a long one", "--param", "tokens=500", "--follow")
    assert follow.stdout is not None
    follow.stdout.readline()  # "sent: ..."
    time.sleep(0.5)
    cancelled = broker(url, "cancel", cid, "--wait")
    out, err = follow.communicate(timeout=30)
    assert cancelled.returncode == 0 and re.fullmatch(r"run r_\S+: cancelled\n", cancelled.stdout)
    assert follow.returncode == 0 and out.splitlines()[-1] == "[stopped]"
    again = broker(url, "cancel", cid)
    assert again.returncode == 1 and again.stderr == f"broker cancel: nothing is running in {cid}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "{cid}"], 'no conversation {cid} here: start it with broker send {cid} "..."'),
        (["send", "{cid}", "hi", "--model", "nope"], "unknown_model: unknown model 'nope'"),
        (["tail", "bad.id"], "invalid_id: cid must match [A-Za-z0-9_-]{{1,128}}"),
    ],
)
def test_errors_say_what_to_do(stack: Stack, args: list[str], message: str) -> None:
    stack.start(fronts=1, workers=0)
    cid = new_cid()
    result = broker(stack.fronts[0].url, *[a.format(cid=cid) for a in args])
    assert result.returncode == 1
    assert result.stderr == f"broker {args[0]}: {message.format(cid=cid)}\n"
    _no_traceback(result)


@pytest.mark.parametrize("command", ["send demo hi", "tail demo", "cancel demo", "show demo"])
def test_no_broker_is_one_line_not_a_traceback(command: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = broker(url, *command.split(), timeout=30)
    assert result.returncode == 1
    name = command.split()[0]
    assert result.stderr == (
        f"broker {name}: no broker answers at {url}: is scripts/dev running? "
        "(set the address with --url or BROKER_URL)\n"
    )


def _parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {"broker": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update({f"broker {name}": sub for name, sub in action.choices.items()})
    return found


def test_every_option_has_help_and_help_reads_as_plain_text() -> None:
    parsers = _parsers(build_parser())
    assert {"broker send", "broker tail", "broker cancel", "broker show", "broker dev"} <= set(
        parsers
    )
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), (
                f"{name}: {action.option_strings or action.dest}"
            )
        text = parser.format_help()
        for markdown in ("`", "**", "##", "](", "```"):
            assert markdown not in text, f"{name} --help shows Markdown {markdown!r}"
        assert all(len(line) <= 100 for line in text.splitlines()), name
    # And as a user sees it, through the real entry point.
    result = subprocess.run(
        [sys.executable, "-m", "broker", "tail", "--help"],
        capture_output=True,
        text=True,
        env=base_environment(),
    )
    assert result.returncode == 0 and "Ctrl-C detaches" in result.stdout


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "--version"],
        capture_output=True,
        text=True,
        env=base_environment(),
    )
    assert result.returncode == 0 and re.fullmatch(r"broker \d+\.\d+\.\d+\S*\n", result.stdout)


def test_follow_shows_tool_calls_results_and_data_apart_from_the_text(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, generators="weather=examples.agent:weather_agent")
    result = broker(
        stack.fronts[0].url,
        "send",
        new_cid(),
        "Weather in Tokyo?",
        "--model",
        "weather",
        "--follow",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("[weather is answering]")
    assert lines[start + 1 : start + 5] == [
        "reasoning: The user asks about the weather in Tokyo. I will look it up first.",
        '[tool call get_weather({"city":"Tokyo"})]',
        '[tool result: {"city":"Tokyo","temp_c":26,"sky":"humid"}]',
        '[weather_card: {"city":"Tokyo","temp_c":26,"sky":"humid"}]',
    ]
    assert lines[start + 5].startswith("In Tokyo it is 26 °C and humid.")


def test_tail_into_a_reader_that_goes_away_ends_quietly(stack: Stack) -> None:
    """``broker tail demo | head -1``: no traceback, no error line, and the run goes on."""
    stack.start(fronts=1, workers=1)
    url, cid = stack.fronts[0].url, new_cid()
    with BrokerClient(url) as client:
        client.send(cid, "a long one", params={"tokens": 300, "interval_ms": 20})
    tail = _spawn(url, "tail", cid, "--timeline")
    assert tail.stdout is not None and tail.stderr is not None
    assert "message" in tail.stdout.readline()
    tail.stdout.close()  # as `head -1` does once it has its line
    assert tail.wait(timeout=20) == 0
    assert tail.stderr.read() == ""


def test_serve_says_where_it_serves(redis_url: str) -> None:
    """``broker serve`` names its address, Redis (never its password), auth mode and version on
    start."""
    port = free_port()
    env = {**base_environment(), "BROKER_AUTH": "none", "BROKER_REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert f"http://127.0.0.1:{port}" in first and "auth=none" in first, first
    assert re.search(r"broker serve \S+:", first) and redis_url in first


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]], ids=lambda c: c[0])
def test_a_redis_that_never_answers_stops_the_process_naming_it(command: list[str]) -> None:
    """Neither a front nor a worker waits for ever on a Redis that is not there; the address
    it tried is named, never its password."""
    dead = f"redis://someone:hunter2@127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-m", "broker", *command],
        env={
            **base_environment(),
            "BROKER_AUTH": "none",
            "BROKER_REDIS_URL": dead,
            "BROKER_REDIS_WAIT_SECONDS": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    _no_traceback(result)
    assert result.returncode == 1
    where = dead.replace("hunter2", "***")
    assert f"broker {command[0]}: cannot reach Redis at {where} (BROKER_REDIS_URL)" in (
        result.stderr
    )
    assert "hunter2" not in result.stderr + result.stdout


def test_a_bad_setting_names_its_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env={**base_environment(), "BROKER_STREAM_MAXLEN": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    _no_traceback(result)
    assert result.returncode == 1 and "BROKER_STREAM_MAXLEN" in result.stderr
    assert "stream_maxlen" not in result.stderr


def test_a_password_in_the_redis_urls_query_is_not_printed_either() -> None:
    """redis-py also takes ``?password=``; the start-up and refusal lines drop the query."""
    dead = f"redis://127.0.0.1:{free_port()}/0?password=hunter2"
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--port", str(free_port())],
        env={
            **base_environment(),
            "BROKER_AUTH": "none",
            "BROKER_REDIS_URL": dead,
            "BROKER_REDIS_WAIT_SECONDS": "0.5",
        },
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    _no_traceback(result)
    assert result.returncode == 1 and "cannot reach Redis at redis://127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_token_a_header_cannot_carry_is_refused_without_being_echoed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "show", "demo", "--url", "http://127.0.0.1:9"],
        env={**base_environment(), "BROKER_TOKEN": "eyJ.s3cr\u00e9t-token"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "s3cr" not in result.stderr + result.stdout, result.stderr
