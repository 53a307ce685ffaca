"""The ``broker`` command: ``dev`` (everything at once), ``serve`` (a front), ``worker``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from broker.core.settings import Settings


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from broker.app import create_app
    from broker.core.models import CatalogueError

    try:
        app = create_app(settings)
    except CatalogueError as exc:
        raise SystemExit(f"model catalogue: {exc}") from None

    class DrainingServer(uvicorn.Server):
        """Ends every SSE stream on SIGTERM/SIGINT so clients reconnect to another front at once."""

        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.drain()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    # Thousands of long-lived connections make a full collection slow (about 1 s at 10,000
    # clients): collect the young generations less often, and never rescan start-up objects.
    gc.set_threshold(20_000, 50, 100)
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        # Streams end at once on drain; this bounds any other request still running.
        timeout_graceful_shutdown=5,
        backlog=4096,
    )
    DrainingServer(config).run()


def _worker(settings: Settings, concurrency: int | None) -> None:
    import anyio

    # Imported here: the front tier never loads the worker runtime.
    from workers.runtime import Worker

    if concurrency is not None:
        settings = Settings.from_env({**os.environ, "BROKER_WORKER_CONCURRENCY": str(concurrency)})
    anyio.run(Worker(settings).run, backend_options={"use_uvloop": True})


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise SystemExit("broker dev: a process exited during start-up")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("broker dev: the front did not become ready")


def _dev(host: str, port: int) -> None:
    """Redis (embedded unless BROKER_REDIS_URL is set), one front and one worker, until Ctrl-C."""
    from broker.embedded_redis import EmbeddedRedis

    env = dict(os.environ)
    embedded: EmbeddedRedis | None = None
    if not env.get("BROKER_REDIS_URL"):
        embedded = EmbeddedRedis(Path(".broker") / "redis").start()
        env["BROKER_REDIS_URL"] = embedded.url
    Settings.from_env(env)  # refuse bad settings before starting anything
    command = [sys.executable, "-m", "broker"]
    children = [
        subprocess.Popen([*command, "serve", "--host", host, "--port", str(port)], env=env),
        subprocess.Popen([*command, "worker"], env=env),
    ]
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        url = f"http://{host}:{port}"
        _wait_ready(url, children)
        where = f"embedded redis-server at {embedded.url}" if embedded else env["BROKER_REDIS_URL"]
        print(f"broker dev: serving {url} (Redis: {where}); Ctrl-C stops", flush=True)
        while not stop:
            if any(p.poll() is not None for p in children):
                print("broker dev: a process exited; stopping", file=sys.stderr, flush=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded is not None:
            embedded.stop()
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("dev", "Redis, one front and one worker"), ("serve", "one front process")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
    worker = commands.add_parser("worker", help="one worker process")
    worker.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "dev":
        _dev(args.host, args.port)
        return
    if args.command == "serve":
        _serve(settings, args.host, args.port)
    else:
        _worker(settings, args.concurrency)
