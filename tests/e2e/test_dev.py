"""``broker dev`` on a machine with no Redis configured: it brings its own, serves, and cleans up.

Run exactly as the README says, from an empty directory, with no ``BROKER_*`` variable set; then
stopped with Ctrl-C (SIGINT) or SIGTERM, every process it started must be gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.api import Api
from tests.helpers import new_cid, terminal_of
from tests.stack import base_environment, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _descendants(root: int) -> set[int]:
    """Every live process below ``root``, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
async def test_broker_dev_serves_a_conversation_and_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = base_environment()  # no BROKER_REDIS_URL: dev must start its own Redis
    log_path = tmp_path / "dev-stderr.log"
    with open(log_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker",
            "dev",
            "--port",
            str(port),
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    lines: list[str] = []
    children: set[int] = set()
    try:
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(60):
            while not any(url in line for line in lines):
                raw = await process.stdout.readline()
                if not raw:
                    said = "".join(lines) + log_path.read_text()
                    pytest.fail(f"broker dev exited before serving:\n{said}")
                lines.append(raw.decode(errors="replace"))
        # Keep draining stdout so nothing can block on a full pipe.
        drain = asyncio.create_task(process.stdout.read())

        children = _descendants(process.pid)
        assert len(children) >= 3, "an embedded redis-server, one front and one worker"
        api = Api(url)
        cid = new_cid("dev")
        run = await api.start_run(cid, "hello from the readme", tokens=10, interval_ms=5)
        async with await api.stream(cid) as stream:
            events = await stream.read_until(terminal_of(run["run_id"]), timeout=60)
        assert [e.event for e in events][:2] == ["message", "run.started"]
        assert events[-1].event == "run.completed"

        process.send_signal(stop_signal)
        async with asyncio.timeout(40):
            await process.wait()
        drain.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        leftovers = [pid for pid in children if _alive(pid)]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running after broker dev stopped: {leftovers}"
    assert re.search(r"http://127\.0\.0\.1:\d+", "".join(lines))
    # Open by default, and it says so, once.
    warnings = [line for line in log_path.read_text().splitlines() if "BROKER_AUTH=none" in line]
    assert len(warnings) == 1 and "every conversation" in warnings[0]


async def _start_dev(
    cwd: Path, port: int, log_path: Path
) -> tuple[asyncio.subprocess.Process, str]:
    """``broker dev`` as a terminal runs it: the leader of its own process group."""
    with open(log_path, "ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker",
            "dev",
            "--port",
            str(port),
            cwd=cwd,
            env=base_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = (await process.stdout.readline()).decode()
    if "serving" not in line:
        process.kill()
        await process.wait()
        pytest.fail(f"broker dev did not serve:\n{line}{log_path.read_text()}")
    return process, line


async def _ctrl_c(process: asyncio.subprocess.Process) -> None:
    """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
    os.killpg(process.pid, signal.SIGINT)
    async with asyncio.timeout(40):
        await process.wait()


async def test_ctrl_c_lets_the_run_in_flight_finish(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole group; the worker still gets its grace period, so the answer
    in flight completes (it fits in the grace period) rather than ending ``worker_lost`` when
    the next ``broker dev`` starts. Nothing is printed as a traceback or a lost connection."""
    (tmp_path / "pyproject.toml").touch()
    log_path = tmp_path / "dev-stderr.log"
    port = free_port()
    process, _ = await _start_dev(tmp_path, port, log_path)
    url = f"http://127.0.0.1:{port}"
    cid = new_cid("ctrlc")
    try:
        run = await Api(url).start_run(cid, "slow enough to be cut", tokens=100, interval_ms=30)
        async with await Api(url).stream(cid) as stream:
            await stream.read_until(lambda e: e.event == "delta", timeout=30)
        await _ctrl_c(process)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0
    said = log_path.read_text()
    assert "Traceback" not in said and "lost" not in said.lower(), said

    # The same project, from a subdirectory: the same .broker/, so the same conversation.
    (tmp_path / "sub").mkdir()
    process, _ = await _start_dev(tmp_path / "sub", port, log_path)
    try:
        snapshot = (await Api(url).snapshot(cid)).json()
        await _ctrl_c(process)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert not (tmp_path / "sub" / ".broker").exists()
    answer = snapshot["messages"][-1]
    assert answer["run_id"] == run["run_id"]
    assert answer["status"] == "completed", answer
    assert len(answer["content"].split()) == 100


async def test_a_second_dev_in_the_same_project_or_on_a_busy_port_refuses(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    log_path = tmp_path / "dev-stderr.log"
    port = free_port()
    process, _ = await _start_dev(tmp_path, port, log_path)
    try:
        env = base_environment()
        command = [sys.executable, "-m", "broker", "dev", "--port"]
        # Same project (its Redis data), another port: the lock names the first one.
        same_data = await asyncio.create_subprocess_exec(
            *command,
            str(free_port()),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(same_data.communicate(), 30)
        assert same_data.returncode == 1 and not out
        assert f"another broker dev (pid {process.pid})" in err.decode()

        # Another directory, the same port: refused before anything claims to serve.
        (tmp_path / "other").mkdir()
        busy_port = await asyncio.create_subprocess_exec(
            *command,
            str(port),
            cwd=tmp_path / "other",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(busy_port.communicate(), 30)
        assert busy_port.returncode == 1 and b"serving" not in out
        assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
        assert not (tmp_path / "other" / ".broker").exists()
        await _ctrl_c(process)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0


async def test_a_bad_catalogue_is_reported_once_before_anything_starts(tmp_path: Path) -> None:
    env = {**base_environment(), "BROKER_MODELS_FILE": str(tmp_path / "missing.toml")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "dev",
        "--port",
        str(free_port()),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    said = err.decode()
    assert process.returncode == 1 and not out
    assert said.count("missing.toml") == 1 and said.startswith("model catalogue: "), said
    assert "Traceback" not in said
    assert not (tmp_path / ".broker").exists(), "nothing was started"
