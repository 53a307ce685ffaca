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
