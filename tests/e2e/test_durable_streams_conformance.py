"""The official Durable Streams conformance suite, run against a real front on a real Redis.

``@durable-streams/server-conformance-tests`` (npm, driven by vitest) is installed from the lock
file in ``tests/durable_streams`` (``.ci/run`` does it). Its JSON report is read back here: any
failing test not listed in ``KNOWN_FAILURES`` fails this test, and so does a listed test that
now passes, so the list stays honest.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.stack import REPO_ROOT, Stack

SUITE_DIR = REPO_ROOT / "tests" / "durable_streams"
RUNNER = SUITE_DIR / "node_modules" / "@durable-streams" / "server-conformance-tests"
VITEST = SUITE_DIR / "node_modules" / ".bin" / "vitest"
SUITE_TIMEOUT = 600

# Full titles ("describe > ... > test") of the tests expected to fail, each with its reason.
# None: every test the suite runs passes (it skips its 6 subscription API tests by itself).
KNOWN_FAILURES: dict[str, str] = {}


def _failures(report: dict) -> tuple[int, int, list[str]]:
    """(passed, total including skipped, titles of the failed)."""
    failed: list[str] = []
    total = passed = 0
    for result in report["testResults"]:
        for test in result["assertionResults"]:
            total += 1
            if test["status"] in ("skipped", "pending", "todo"):
                continue
            if test["status"] == "passed":
                passed += 1
            else:
                failed.append(" > ".join([*test["ancestorTitles"], test["title"]]))
    return passed, total, failed


@pytest.mark.skipif(
    not RUNNER.exists() or not VITEST.exists(),
    reason="the conformance suite is not installed: run `npm ci` in tests/durable_streams",
)
def test_conformance_suite(stack: Stack, tmp_path: Path) -> None:
    # The suite's CORS tests send Origin: https://example.com.
    stack.start(fronts=1, workers=0, ds_long_poll_seconds=2, cors_origins="https://example.com")
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [
            str(VITEST),
            "run",
            "--no-coverage",
            "--reporter=json",
            f"--outputFile={report_path}",
            "--passWithNoTests=false",
        ],
        cwd=SUITE_DIR,
        env={**stack.env(), "CONFORMANCE_TEST_URL": stack.fronts[0].url, "CI": "1"},
        capture_output=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    assert report_path.exists(), (
        completed.stdout.decode()[-4000:] + completed.stderr.decode()[-4000:]
    )
    passed, total, failed = _failures(json.loads(report_path.read_text()))
    print(f"Durable Streams conformance: {passed} of {total} passed")
    assert total > 300, completed.stdout.decode()[-4000:] + completed.stderr.decode()[-4000:]
    unexpected = [title for title in failed if title not in KNOWN_FAILURES]
    fixed = [title for title in KNOWN_FAILURES if title not in failed]
    assert not unexpected, f"{len(unexpected)} unexpected failures:\n" + "\n".join(unexpected)
    assert not fixed, "these now pass; take them off KNOWN_FAILURES:\n" + "\n".join(fixed)
