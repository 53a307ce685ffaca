"""``broker dev``: Redis (embedded unless configured), one front and one worker, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from broker.core.settings import Settings


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


def dev(host: str, port: int, cluster: bool = False) -> None:
    """Redis (embedded unless BROKER_REDIS_URL is set), one front and one worker, until Ctrl-C.

    ``cluster``: a local Redis Cluster instead (three masters, each with a replica), started
    fresh and thrown away at the end.
    """
    from broker.embedded_redis import EmbeddedCluster, EmbeddedRedis

    env = dict(os.environ)
    embedded: EmbeddedRedis | EmbeddedCluster | None = None
    if cluster:
        if env.get("BROKER_REDIS_URL"):
            raise SystemExit("broker dev --cluster starts its own cluster: unset BROKER_REDIS_URL")
        data = Path(".broker") / "cluster"
        shutil.rmtree(data, ignore_errors=True)
        try:
            embedded = EmbeddedCluster(data).start()
        except RuntimeError as exc:
            raise SystemExit(f"broker dev --cluster: {exc}") from None
        env["BROKER_REDIS_URL"] = embedded.url
        env["BROKER_REDIS_CLUSTER"] = "true"
    elif not env.get("BROKER_REDIS_URL"):
        embedded = EmbeddedRedis(Path(".broker") / "redis").start()
        env["BROKER_REDIS_URL"] = embedded.url
    if not env.get("BROKER_AUTH"):
        env["BROKER_AUTH"] = "none"
    if env["BROKER_AUTH"] == "none":
        print(
            "broker dev: WARNING: BROKER_AUTH=none: anyone who can reach this port may read, "
            "post to and cancel every conversation",
            file=sys.stderr,
            flush=True,
        )
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
        if isinstance(embedded, EmbeddedCluster):
            where = f"a local cluster of {len(embedded.ports)} nodes from {embedded.url}"
        elif embedded is not None:
            where = f"embedded redis-server at {embedded.url}"
        else:
            where = env["BROKER_REDIS_URL"]
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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "dev",
        help="run everything: Redis, one front and one worker",
        description="Run Redis (an embedded redis-server unless BROKER_REDIS_URL is set), one\n"
        "front and one worker, until Ctrl-C. The chat page is at the printed URL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    sub.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    sub.add_argument(
        "--cluster", action="store_true", help="on a local Redis Cluster (needs redis-server 7+)"
    )
    sub.set_defaults(run=lambda args, settings: dev(args.host, args.port, args.cluster))
