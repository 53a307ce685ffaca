"""The official Durable Streams conformance suite, run against a real front on a real Redis.

``@durable-streams/server-conformance-tests`` (npm, driven by vitest) is installed from the lock
file in ``tests/durable_streams`` (``.ci/run`` does it), and run with its subscription tests
(sections 6 and 7: a worker delivers the wakes, webhooks go to the suite's receiver on
loopback). Its JSON report is read back here: any failing test not listed in
``KNOWN_FAILURES`` fails this test, and so does a listed test that now passes, so the list
stays honest; so does any test the suite skips, since a skipped test proves nothing.
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
# None: every test of the suite passes.
KNOWN_FAILURES: dict[str, str] = {}
# The suite's 0.3.6 has 338 tests; a new version may add some, never fewer.
EXPECTED_TOTAL = 338


def _failures(report: dict) -> tuple[int, int, list[str], list[str]]:
    """(passed, total including skipped, titles of the failed, titles of the skipped)."""
    failed: list[str] = []
    skipped: list[str] = []
    total = passed = 0
    for result in report["testResults"]:
        for test in result["assertionResults"]:
            total += 1
            title = " > ".join([*test["ancestorTitles"], test["title"]])
            if test["status"] in ("skipped", "pending", "todo"):
                skipped.append(title)
            elif test["status"] == "passed":
                passed += 1
            else:
                failed.append(title)
    return passed, total, failed, skipped


@pytest.mark.skipif(
    not RUNNER.exists() or not VITEST.exists(),
    reason="the conformance suite is not installed: run `npm ci` in tests/durable_streams",
)
def test_conformance_suite(stack: Stack, tmp_path: Path) -> None:
    # The suite's CORS tests send Origin: https://example.com.
    stack.start(
        fronts=1,
        workers=1,
        ds_long_poll_seconds=2,
        cors_origins="https://example.com",
        # The suite's webhook receiver listens on http://127.0.0.1.
        ds_webhook_allow_localhost=True,
    )
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
    passed, total, failed, skipped = _failures(json.loads(report_path.read_text()))
    print(f"Durable Streams conformance: {passed} of {total} passed")
    output = completed.stdout.decode()[-4000:] + completed.stderr.decode()[-4000:]
    assert total >= EXPECTED_TOTAL, output
    assert not skipped, f"{len(skipped)} tests skipped:\n" + "\n".join(skipped)
    unexpected = [title for title in failed if title not in KNOWN_FAILURES]
    fixed = [title for title in KNOWN_FAILURES if title not in failed]
    assert not unexpected, f"{len(unexpected)} unexpected failures:\n" + "\n".join(unexpected)
    assert not fixed, "these now pass; take them off KNOWN_FAILURES:\n" + "\n".join(fixed)
