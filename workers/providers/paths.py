"""Paths into a JSON document, for the generic provider's extraction rules.

``choices.0.delta.content``, ``$.choices[0].delta.content`` and ``choices[0].delta.content``
all name the same value; a missing step yields None rather than an error, since a chunk that
lacks the field simply carries nothing for it.
"""

from __future__ import annotations

import re
from typing import Any

_STEP = re.compile(r"\[(\d+)\]|([^.\[\]]+)")

Path = tuple[str | int, ...]


def parse_path(raw: str) -> Path:
    text = raw.strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[str | int] = []
    for index, name in _STEP.findall(text):
        if index:
            steps.append(int(index))
        elif name.isdigit():
            steps.append(int(name))
        else:
            steps.append(name)
    return tuple(steps)


def lookup(document: Any, path: Path) -> Any:
    value = document
    for step in path:
        if isinstance(step, int) and isinstance(value, list):
            if step >= len(value):
                return None
            value = value[step]
        elif isinstance(value, dict):
            value = value.get(str(step))
        else:
            return None
        if value is None:
            return None
    return value
