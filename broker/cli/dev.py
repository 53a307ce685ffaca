"""``broker dev``: Redis (embedded unless configured), one front and one worker, until Ctrl-C."""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

from broker.cli.processes import Front, NotReady, Process, stop_all, wait_ready
from broker.core.settings import Settings, redacted_url


def project_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding ``pyproject.toml`` or ``.git``.

    ``.broker/`` lives there, so running from a subdirectory finds the same Redis data; a
    directory outside any project is its own root.
    """
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").exists() or (directory / ".git").exists():
            return directory
    return start


def lock_data_dir(data: Path) -> TextIO:
    """Hold ``data/lock`` for this process's life: two launchers on one Redis data directory
    would each start a redis-server on the same files and corrupt them."""
    data.mkdir(parents=True, exist_ok=True)
    handle = open(data / "lock", "a+")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SystemExit(
            f"broker dev: another broker dev (pid {holder}) is using {data}; stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before the readiness probe could reach it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(
                f"broker dev: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None


def dev(host: str, port: int, cluster: bool = False) -> None:
    """Redis (embedded unless BROKER_REDIS_URL is set), one front and one worker, until Ctrl-C.

    ``cluster``: a local Redis Cluster instead (three masters, each with a replica), started
    fresh and thrown away at the end.

    Every child runs in its own session, so the SIGINT a terminal sends the whole foreground
    group on Ctrl-C reaches this process alone; it then stops the front and the worker with
    one SIGTERM each (the worker finishes or hands back its runs within its grace period) and
    Redis last, once nothing needs it.
    """
    from broker.core.catalogue import Catalogue, CatalogueError
    from broker.embedded_redis import EmbeddedCluster, EmbeddedRedis

    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    env = dict(os.environ)
    if not env.get("BROKER_AUTH"):
        env["BROKER_AUTH"] = "none"
    # Refuse bad settings before starting anything, once, rather than once per child.
    settings = Settings.from_env(env)
    try:
        Catalogue.from_settings(settings)
    except CatalogueError as exc:
        raise SystemExit(f"model catalogue: {exc}") from None
    check_port_free(host, port)
    data = project_root(Path.cwd()) / ".broker"
    embedded: EmbeddedRedis | EmbeddedCluster | None = None
    lock: TextIO | None = None
    if cluster:
        if env.get("BROKER_REDIS_URL"):
            raise SystemExit("broker dev --cluster starts its own cluster: unset BROKER_REDIS_URL")
        lock = lock_data_dir(data)
        shutil.rmtree(data / "cluster", ignore_errors=True)
        try:
            embedded = EmbeddedCluster(data / "cluster", detached=True).start()
        except RuntimeError as exc:
            raise SystemExit(f"broker dev --cluster: {exc}") from None
        env["BROKER_REDIS_URL"] = embedded.url
        env["BROKER_REDIS_CLUSTER"] = "true"
    elif not env.get("BROKER_REDIS_URL"):
        lock = lock_data_dir(data)
        try:
            embedded = EmbeddedRedis(data / "redis", detached=True).start()
        except RuntimeError as exc:
            raise SystemExit(f"broker dev: {exc}") from None
        env["BROKER_REDIS_URL"] = embedded.url
    if env["BROKER_AUTH"] == "none":
        print(
            "broker dev: WARNING: BROKER_AUTH=none: anyone who can reach this port may read, "
            "post to and cancel every conversation",
            file=sys.stderr,
            flush=True,
        )
    children: list[Process] = []
    code = 0
    try:
        front = Front.serve("front", env, host=host, port=port, new_session=True)
        children.append(front)
        children.append(Process.start("worker", ["worker"], env, new_session=True))
        try:
            ready = wait_ready(front, also=children[1:], stop_requested=lambda: stop)
        except NotReady as exc:
            if exc.exited:
                raise SystemExit("broker dev: a process exited during start-up") from None
            raise SystemExit("broker dev: the front did not become ready") from None
        if ready:
            if not front.alive():
                raise SystemExit(f"broker dev: the front could not listen on {host}:{port}")
            if isinstance(embedded, EmbeddedCluster):
                where = f"a local cluster of {len(embedded.ports)} nodes from {embedded.url}"
            elif embedded is not None:
                where = f"embedded redis-server at {embedded.url}"
            else:
                where = redacted_url(env["BROKER_REDIS_URL"])
            print(f"broker dev: serving {front.url} (Redis: {where}); Ctrl-C stops", flush=True)
        while not stop:
            if any(not child.alive() for child in children):
                print("broker dev: a process exited; stopping", file=sys.stderr, flush=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        # A second Ctrl-C while stopping must not cut the orderly stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stop and any(child.alive() for child in children):
            print(
                "broker dev: stopping; answers in flight get "
                f"{settings.shutdown_grace_seconds:g} s to finish",
                file=sys.stderr,
                flush=True,
            )
        stop_all(children, timeout=settings.shutdown_grace_seconds + 10)
        if embedded is not None:
            embedded.stop()
        if lock is not None:
            lock.close()
    if stop and code == 0:
        print("broker dev: stopped", file=sys.stderr, flush=True)
    raise SystemExit(code)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "dev",
        help="run everything: Redis, one front and one worker",
        description="Run Redis (an embedded redis-server unless BROKER_REDIS_URL is set), one\n"
        "front and one worker, until Ctrl-C. The chat page is at the printed URL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sub.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    sub.add_argument(
        "--cluster", action="store_true", help="on a local Redis Cluster (needs redis-server 7+)"
    )
    sub.set_defaults(run=lambda args, settings: dev(args.host, args.port, args.cluster))
