"""The test harness itself: a traceback in a broker process's output fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.stack import Process, Stack


def _crashing_process(workdir: Path, name: str) -> Process:
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")
    popen = subprocess.Popen(
        [sys.executable, "-c", "raise ValueError('boom')"], stdout=log, stderr=subprocess.STDOUT
    )
    popen.wait(timeout=30)
    return Process(name, popen, log_path, log)


def test_a_traceback_in_any_process_output_is_reported(tmp_path: Path) -> None:
    stack = Stack("redis://unused", "p", tmp_path)
    stack.processes.append(_crashing_process(tmp_path, "worker0"))
    [found] = stack.close(report=False)
    assert found.startswith("worker0") and "ValueError: boom" in found


def test_a_declared_traceback_is_allowed_and_only_that_one(tmp_path: Path) -> None:
    stack = Stack("redis://unused", "p", tmp_path)
    stack.expect_traceback(r"ValueError: boom")
    stack.processes.append(_crashing_process(tmp_path, "front0"))
    assert stack.close(report=False) == []

    other = Stack("redis://unused", "p", tmp_path)
    other.expect_traceback(r"KeyError")
    other.processes.append(_crashing_process(tmp_path, "front1"))
    assert len(other.close(report=False)) == 1
