"""The soak script, run briefly: traffic, kills and the checker end to end, with no violation.

The long soak (``python -m scripts.soak --minutes 10``) is run by hand; this keeps the script
itself working and catches a regression its checker would see within seconds. It counts what
happened, never how fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import REPO_ROOT


@pytest.mark.timeout(150)
def test_short_soak_finds_no_violation(redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["REDIS_URL"] = redis_url
    report = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.soak",
            "--seconds",
            "8",
            "--conversations",
            "3",
            "--clients",
            "6",
            "--runs-per-conversation",
            "8",
            "--chaos-every",
            "1.5",
            "3",
            "--json",
            str(report),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    summaries = [line for line in result.stdout.splitlines() if line.startswith("soak: ")]
    assert len(summaries) == 1, output
    assert "violations=0" in summaries[0], output
    assert result.returncode == 0, output

    counts = json.loads(report.read_text())["counts"]
    assert counts["runs"] > 0, counts
    assert counts["events_checked"] > 0, counts
    assert counts["completed"] + counts["cancelled"] + counts["failed"] == counts["runs"], counts
    assert counts["kills"] + counts["terms"] > 0, counts
    assert counts["restarts"] >= counts["kills"] + counts["terms"], counts
