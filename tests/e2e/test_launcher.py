"""The launcher of broker processes (``broker.cli.processes``), on stand-in children.

``broker dev``, the tests' ``Stack``, the benchmark and the soak start everything through it;
these tests pin what they rely on without starting the broker itself: settings become
``BROKER_*`` variables, output lands in the log file, a stop escalates to SIGKILL, and a
readiness wait fails fast when a process exits.
"""

from __future__ import annotations

import ast
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.cli import processes
from broker.cli.processes import (
    Front,
    NotReady,
    Process,
    child_environment,
    clean_environment,
    free_port,
    settings_env,
    stop_all,
    wait_ready,
)

pytestmark = pytest.mark.timeout(60)

# A front stand-in: answers /readyz with 200 once it listens, on the port given as --port.
READY_SERVER = """
import argparse, http.server
parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
port = parser.parse_args().port

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
"""
# A process that shrugs off SIGTERM, as a stuck one would.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(60)
"""


def _module(directory: Path, name: str, source: str) -> str:
    (directory / f"{name}.py").write_text(source)
    return name


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_launcher_imports_no_tier() -> None:
    """It starts processes; importing what it starts would load a tier into every launcher."""
    tree = ast.parse(Path(processes.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {name for name in imported if name and name.split(".")[0] in ("broker", "workers")}


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_settings_become_broker_variables_over_a_clean_base() -> None:
    assert settings_env({"coalesce_ms": 0, "auth": "none"}) == {
        "BROKER_COALESCE_MS": "0",
        "BROKER_AUTH": "none",
    }
    base = clean_environment({"BROKER_AUTH": "jwt", "HOME": "/h", "PYTHONPATH": "/elsewhere"})
    assert "BROKER_AUTH" not in base and base["HOME"] == "/h"
    assert base["PYTHONPATH"].split(":") == [str(processes.IMPORT_ROOT), "/elsewhere"]
    assert base["PYTHONUNBUFFERED"] == "1"
    env = child_environment({**base, "BROKER_KEY_PREFIX": "old"}, {"key_prefix": "new"})
    assert env["BROKER_KEY_PREFIX"] == "new" and env["HOME"] == "/h"


def test_a_module_runs_with_its_output_in_the_log(tmp_path: Path) -> None:
    name = _module(tmp_path, "talker", "import os; print('said', os.environ['BROKER_X'])")
    env = child_environment(clean_environment(), {"x": 7})
    child = Process.start("talker", [], env, module=name, log_path=tmp_path / "t.log", cwd=tmp_path)
    assert child.reap(30) == 0
    assert child.output() == "said 7\n" and not child.alive()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    name = _module(tmp_path, "stubborn", STUBBORN)
    log = tmp_path / "s.log"
    child = Process.start(
        "stubborn", [], clean_environment(), module=name, log_path=log, cwd=tmp_path
    )
    _wait_for(lambda: "ignoring" in child.output())
    started = time.monotonic()
    assert child.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_stop_all_signals_every_process_before_waiting(tmp_path: Path) -> None:
    sleeper = _module(tmp_path, "sleeper", "import time; time.sleep(60)")
    env = clean_environment()
    children = [
        Process.start(f"s{i}", [], env, module=sleeper, cwd=tmp_path, new_session=True)
        for i in range(3)
    ]
    started = time.monotonic()
    assert stop_all(children, timeout=10) == [-signal.SIGTERM] * 3
    assert time.monotonic() - started < 10


def test_wait_ready_until_readyz_answers(tmp_path: Path) -> None:
    name = _module(tmp_path, "ready_server", READY_SERVER)
    port = free_port()
    front = Front.start(
        "front0",
        ["--port", str(port)],
        clean_environment(),
        module=name,
        log_path=tmp_path / "f.log",
        cwd=tmp_path,
        port=port,
    )
    try:
        assert front.url == f"http://127.0.0.1:{port}"
        assert wait_ready(front, timeout=20) is True
    finally:
        assert stop_all([front]) == [-signal.SIGTERM]
    assert "listening" in front.output()


def test_wait_ready_fails_fast_when_a_process_exits(tmp_path: Path) -> None:
    sleeper = _module(tmp_path, "sleeper", "import time; time.sleep(60)")
    crasher = _module(tmp_path, "crasher", "raise SystemExit('no Redis here')")
    env = clean_environment()
    front = Front.start("front0", [], env, module=sleeper, cwd=tmp_path, port=free_port())
    worker = Process.start(
        "worker0", [], env, module=crasher, log_path=tmp_path / "w.log", cwd=tmp_path
    )
    try:
        started = time.monotonic()
        with pytest.raises(NotReady) as failure:
            wait_ready(front, also=[worker], timeout=20)
        assert failure.value.exited and time.monotonic() - started < 10
        assert str(failure.value).startswith("worker0 exited during start-up:\nno Redis here")
    finally:
        stop_all([front, worker])


def test_wait_ready_gives_up_when_a_stop_is_requested(tmp_path: Path) -> None:
    sleeper = _module(tmp_path, "sleeper", "import time; time.sleep(60)")
    front = Front.start("front0", [], clean_environment(), module=sleeper, cwd=tmp_path, port=1)
    try:
        assert wait_ready(front, stop_requested=lambda: True) is False
    finally:
        front.stop()


def test_wait_ready_times_out_with_the_front_output(tmp_path: Path) -> None:
    name = _module(tmp_path, "mute", "print('starting', flush=True); import time; time.sleep(60)")
    front = Front.start(
        "front0",
        [],
        clean_environment(),
        module=name,
        log_path=tmp_path / "m.log",
        cwd=tmp_path,
        port=free_port(),
    )
    try:
        _wait_for(lambda: "starting" in front.output())
        with pytest.raises(NotReady) as failure:
            wait_ready(front, timeout=0.3)
        assert not failure.value.exited
        assert str(failure.value) == "front0 not ready after 0.3s:\nstarting\n"
    finally:
        front.stop()


def test_a_handle_made_by_hand_reads_its_log(tmp_path: Path) -> None:
    """``tests.stack`` builds handles of processes it started itself; they read the same way."""
    log_path = tmp_path / "own.log"
    log = open(log_path, "wb")
    popen = subprocess.Popen([sys.executable, "-c", "print('own')"], stdout=log)
    popen.wait(timeout=30)
    handle = Process("own", popen, log_path, log)
    assert handle.output() == "own\n" and handle.stop() == 0
    handle.close_log()
    assert log.closed
