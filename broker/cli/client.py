"""``broker send``, ``tail``, ``cancel`` and ``show``: a conversation from the terminal.

They talk HTTP to a running broker through ``broker.client``, so they resume by themselves
after a disconnect, and never cancel anything unless asked: Ctrl-C only detaches.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from typing import Any, TextIO

import msgspec

from broker.core.settings import Settings

DESCRIPTIONS = {
    "send": """\
Send a message to a conversation; a worker writes the answer. The first message
creates the conversation. With --follow, print the answer as it streams.

examples:
  broker send demo "Tell me about streams"
  broker send demo "Longer, please" --param tokens=200 --follow""",
    "tail": """\
Print a conversation's events as they arrive: each prompt, then the answer as it
streams, reasoning dimmed apart from it. From the beginning, or after --after ID.
Ctrl-C detaches; the run goes on.

examples:
  broker tail demo
  broker tail demo --timeline --after 1731000000000-3""",
    "cancel": """\
Stop the run in progress (or --run RUN), from any device. Its partial answer stays.

examples:
  broker cancel demo
  broker cancel demo --wait""",
    "show": """\
Print the conversation as the broker merges it: every message, each answer with its
status.

examples:
  broker show demo
  broker show demo --json""",
    "list": """\
List your conversations, the most recently active first: id, last activity, title,
and whether an answer is running.

examples:
  broker list
  broker list --limit 5""",
    "delete": """\
Delete a conversation and everything stored of it. A running answer is stopped
first; streams following it end.

examples:
  broker delete demo""",
}


class Style:
    """ANSI styles on a terminal that wants them (NO_COLOR unset); plain text elsewhere."""

    def __init__(self, out: TextIO) -> None:
        on = out.isatty() and not os.environ.get("NO_COLOR")
        self.dim = "\x1b[2m" if on else ""
        self.bold = "\x1b[1m" if on else ""
        self.red = "\x1b[31m" if on else ""
        self.reset = "\x1b[0m" if on else ""


class AnswerPrinter:
    """Prints events for people: prompts, answers token by token, reasoning apart."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.style = Style(out)
        self._channel: str | None = None  # what the current line is printing

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _end_line(self) -> None:
        if self._channel is not None:
            self._write(self.style.reset + "\n")
            self._channel = None

    def event(self, event: Any) -> None:
        from broker.client import (
            Delta,
            Reset,
            RunCancelled,
            RunCompleted,
            RunFailedEvent,
            RunStarted,
            UserMessage,
        )
        from broker.core.events import Data, ToolCall, ToolResult

        s = self.style
        if isinstance(event, UserMessage):
            self._end_line()
            self._write(f"{s.bold}you:{s.reset} {event.content}\n")
        elif isinstance(event, RunStarted):
            self._end_line()
            self._write(f"{s.dim}[{event.model} is answering]{s.reset}\n")
        elif isinstance(event, Delta):
            if event.channel != self._channel:
                self._end_line()
                self._channel = event.channel
                if event.channel == "reasoning":
                    self._write(f"{s.dim}reasoning: ")
            self._write(event.text)
        elif isinstance(event, RunCompleted):
            self._end_line()
            count = event.usage.output_tokens if event.usage else 0
            usage = f", {count} token{'' if count == 1 else 's'}" if event.usage else ""
            self._write(f"{s.dim}[completed: {event.finish_reason}{usage}]{s.reset}\n")
        elif isinstance(event, RunCancelled):
            self._end_line()
            self._write(f"{s.dim}[stopped]{s.reset}\n")
        elif isinstance(event, RunFailedEvent):
            self._end_line()
            self._write(f"{s.red}[failed: {event.error.code}: {event.error.message}]{s.reset}\n")
        elif isinstance(event, Reset):
            self._end_line()
            self._write(
                f"{s.dim}[history trimmed ({event.reason}): replaying what is kept]{s.reset}\n"
            )
        elif isinstance(event, ToolCall):
            if not isinstance(event.arguments, msgspec.UnsetType):  # the whole call, once
                self._end_line()
                arguments = msgspec.json.encode(event.arguments).decode()
                self._write(f"{s.dim}[tool call {event.name}({arguments})]{s.reset}\n")
        elif isinstance(event, ToolResult):
            self._end_line()
            label = "tool error" if event.is_error else "tool result"
            result = msgspec.json.encode(event.result).decode()
            self._write(f"{s.dim}[{label}: {result}]{s.reset}\n")
        elif isinstance(event, Data):
            self._end_line()
            value = msgspec.json.encode(event.value).decode()
            self._write(f"{s.dim}[{event.name}: {value}]{s.reset}\n")

    def finish(self) -> None:
        self._end_line()


def _timeline(out: TextIO, event_id: str | None, event: Any) -> None:
    from broker.client import Reset, UnknownEvent
    from broker.core.events import EVENT_NAMES

    if isinstance(event, Reset):
        event_id = None  # not stored: it has no id of its own

    stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
    if isinstance(event, UnknownEvent):
        name, data = event.name, event.data
    else:
        name = EVENT_NAMES.get(type(event), "reset")  # type: ignore[arg-type]
        data = msgspec.json.encode(event).decode()
    out.write(f"{stamp}  {event_id or '-':<22}  {name:<13}  {data}\n")
    out.flush()


def _client(args: argparse.Namespace, settings: Settings) -> Any:
    from broker.client import BrokerClient

    try:
        return BrokerClient(args.url or settings.url, args.token or settings.token or None)
    except ValueError as exc:  # a token no header can carry: said without the token
        raise SystemExit(f"broker {args.command}: {exc} (--token or BROKER_TOKEN)") from None


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"broker: --param takes KEY=VALUE, not {pair!r}")
        try:
            params[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            params[key] = raw
    return params


def _follow(stream: Any, out: TextIO, timeline: bool, cid: str) -> int:
    """Print a stream until it ends; Ctrl-C detaches (the run goes on). Returns the exit code."""
    from broker.client import RunFailedEvent

    printer = AnswerPrinter(out)
    failed = False
    try:
        for event in stream:
            if timeline:
                _timeline(out, stream.last_event_id, event)
            else:
                printer.event(event)
            failed = failed or isinstance(event, RunFailedEvent)
    except KeyboardInterrupt:
        printer.finish()
        where = stream.last_event_id
        resume = f" (resume: broker tail {cid} --after {where})" if where else ""
        print(f"broker: detached; nothing was cancelled{resume}", file=sys.stderr)
        return 130
    finally:
        stream.close()
    printer.finish()
    return 1 if failed else 0


def send(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        accepted = client.send(
            args.cid,
            args.content,
            model=args.model,
            params=_params(args.param),
            idempotency_key=args.idempotency_key,
        )
        print(
            f"sent: run {accepted.run_id}, message {accepted.message_id}, event {accepted.event_id}"
        )
        if not args.follow:
            return 0
        return _follow(client.stream_run(args.cid, accepted.run_id), sys.stdout, False, args.cid)


def tail(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        # One plain request first: a wrong URL, token or id is reported at once, not retried.
        client.snapshot(args.cid)
        return _follow(
            client.stream(args.cid, after=args.after), sys.stdout, args.timeline, args.cid
        )


def cancel(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        state = client.cancel(args.cid, args.run_id, wait=args.wait)
        print(f"run {state.run_id}: {state.status}")
        return 0


def show(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        snapshot = client.snapshot(args.cid)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(snapshot).decode(), indent=2))
        return 0
    style = Style(sys.stdout)
    for message in snapshot.messages:
        if message.role == "user":
            print(f"{style.bold}you:{style.reset} {message.content}")
            continue
        if message.reasoning:
            print(f"{style.dim}reasoning: {message.reasoning}{style.reset}")
        print(message.content)
        status = {"cancelled": "stopped", "running": "still running"}.get(
            message.status, message.status
        )
        print(f"{style.dim}[{status}]{style.reset}")
    if snapshot.active_run_id:
        print(
            f"{style.dim}[run {snapshot.active_run_id} in progress: broker tail {args.cid}]{style.reset}"
        )
    print(f"{style.dim}last event: {snapshot.last_event_id}{style.reset}")
    return 0


def list_conversations(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit is not None and args.limit < 1:
        raise SystemExit("broker list: --limit must be at least 1")
    style = Style(sys.stdout)
    with _client(args, settings) as client:
        cursor = None
        shown = 0
        while args.limit is None or shown < args.limit:
            page_size = 100 if args.limit is None else min(100, args.limit - shown)
            page = client.list_conversations(limit=page_size, cursor=cursor)
            for summary in page.conversations:
                when = datetime.fromtimestamp(summary.last_activity_at / 1000)
                running = f"  {style.dim}[running]{style.reset}" if summary.active_run_id else ""
                print(f"{summary.conversation_id}  {when:%Y-%m-%d %H:%M}  {summary.title}{running}")
            shown += len(page.conversations)
            cursor = page.next_cursor
            if cursor is None:
                break
    if not shown:
        print(f"{style.dim}no conversations yet{style.reset}", file=sys.stderr)
    return 0


def delete(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        client.delete_conversation(args.cid)
    print(f"deleted {args.cid}")
    return 0


def explain(error: Exception, args: argparse.Namespace, url: str) -> str:
    """One line that says what went wrong and what to do about it."""
    from broker.client import (
        BrokerError,
        BrokerUnavailable,
        Conflict,
        Forbidden,
        NotFound,
        RateLimited,
        ReconnectFailed,
        TokenExpired,
        Unauthorized,
    )

    cid = getattr(args, "cid", "")
    if isinstance(error, BrokerUnavailable | ReconnectFailed):
        return f"no broker answers at {url}: is scripts/dev running? (set the address with --url or BROKER_URL)"
    if isinstance(error, TokenExpired):
        return (
            "the token expired: get a new one and resume with "
            f"broker tail {cid} --after {error.last_event_id}"
        )
    if isinstance(error, Unauthorized):
        return (
            f"the broker wants a valid token ({error.message}): pass --token or set BROKER_TOKEN "
            "(broker token --sub NAME prints one)"
        )
    if isinstance(error, Forbidden):
        return f"this token may read {cid} but not change it ({error.message})"
    if isinstance(error, NotFound) and error.code == "conversation_not_found":
        return f'no conversation {cid} here: start it with broker send {cid} "..."'
    if isinstance(error, Conflict) and error.code == "run_active":
        return f"an answer is still running in {cid}: follow it (broker tail {cid}) or stop it (broker cancel {cid})"
    if isinstance(error, Conflict) and error.code == "no_active_run":
        return f"nothing is running in {cid}"
    if isinstance(error, RateLimited):
        later = f" in {error.retry_after:g} s" if error.retry_after else " later"
        return f"{error.message}: try again{later}"
    if isinstance(error, BrokerError):
        return f"{error.code}: {error.message}"
    raise error


def _run(command: Any) -> Any:
    def run(args: argparse.Namespace, settings: Settings) -> None:
        from broker.client import BrokerError

        url = args.url or settings.url
        try:
            code = command(args, settings)
        except BrokerError as exc:
            print(f"broker {args.command}: {explain(exc, args, url)}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            print(f"broker {args.command}: interrupted", file=sys.stderr)
            code = 130
        except BrokenPipeError:
            # The reader went away (`broker tail demo | head`): stop quietly, as other tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = 0
        except Exception as exc:  # a defect: say so in one line; BROKER_LOG_LEVEL=DEBUG shows where
            logging.getLogger("broker.cli").debug("unexpected error", exc_info=exc)
            print(
                f"broker {args.command}: unexpected error: {exc!r} (please report it)",
                file=sys.stderr,
            )
            code = 1
        raise SystemExit(code)

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        metavar="URL",
        help="the broker to talk to (default: BROKER_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        metavar="JWT",
        help="the token to send when the broker wants one (default: BROKER_TOKEN)",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, summary: str) -> argparse.ArgumentParser:
        description, _, examples = DESCRIPTIONS[name].partition("\n\n")
        return commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    sub = add("send", "send a message; --follow prints the answer")
    sub.add_argument("cid", metavar="CID", help="the conversation id ([A-Za-z0-9_-], up to 128)")
    sub.add_argument("content", metavar="PROMPT", help="the message to send")
    sub.add_argument("--model", metavar="M", help="a model of the catalogue (default: simulated)")
    sub.add_argument(
        "--param",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a model parameter, repeatable; VALUE is read as JSON when it can be (tokens=200)",
    )
    sub.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="retries with the same key return the first answer (default: a fresh key)",
    )
    sub.add_argument("--follow", action="store_true", help="print the answer until the run ends")
    _common(sub)
    sub.set_defaults(run=_run(send), client=True)

    sub = add("tail", "print a conversation's events as they arrive")
    sub.add_argument("cid", metavar="CID", help="the conversation id")
    sub.add_argument(
        "--after", metavar="ID", help="start after this event id (default: the beginning)"
    )
    sub.add_argument(
        "--timeline", action="store_true", help="one line per event: arrival time, id, name, data"
    )
    _common(sub)
    sub.set_defaults(run=_run(tail), client=True)

    sub = add("cancel", "stop the run in progress, from any device")
    sub.add_argument("cid", metavar="CID", help="the conversation id")
    sub.add_argument(
        "--run", dest="run_id", metavar="RUN", help="stop this run (default: the active one)"
    )
    sub.add_argument(
        "--wait", action="store_true", help="return once the run has ended, with its status"
    )
    _common(sub)
    sub.set_defaults(run=_run(cancel), client=True)

    sub = add("show", "print the merged conversation")
    sub.add_argument("cid", metavar="CID", help="the conversation id")
    sub.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    _common(sub)
    sub.set_defaults(run=_run(show), client=True)

    sub = add("list", "list your conversations, most recently active first")
    sub.add_argument(
        "--limit", type=int, metavar="N", help="print at most N (default: all of them)"
    )
    _common(sub)
    sub.set_defaults(run=_run(list_conversations), client=True)

    sub = add("delete", "delete a conversation and everything stored of it")
    sub.add_argument("cid", metavar="CID", help="the conversation id")
    _common(sub)
    sub.set_defaults(run=_run(delete), client=True)
