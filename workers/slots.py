"""A worker's slots, shared fairly between subjects.

Jobs come first in, first out, and while a worker has room every job starts at once. Its last
eighth of slots (``reserve``) is kept for subjects running less than their fair share here:
the worker's slots divided among the subjects running on it, plus one for whoever comes next.
A job of a subject at or above its share that finds only reserved slots free waits, held by
this worker (a quarter of its concurrency at most), until a slot frees that it may take; whenever one frees, the waiting job of the
subject running least goes first. So a few subjects with many long runs cannot take every slot:
another subject's run starts at once, in the reserve, instead of waiting for theirs to end.
Nothing running is ever stopped for fairness.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


@dataclass
class Slots(Generic[T]):
    concurrency: int
    by_subject: Counter[str] = field(default_factory=Counter)
    in_use: int = 0
    # Jobs read but not started, in the order they came: (subject, job).
    waiting: list[tuple[str, T]] = field(default_factory=list)

    @property
    def reserve(self) -> int:
        return self.concurrency // 8

    @property
    def free(self) -> int:
        return self.concurrency - self.in_use

    def fair_share(self, subject: str) -> int:
        """This subject's share of the slots: among the subjects running here (it included),
        and one more."""
        subjects = len(self.by_subject) + (subject not in self.by_subject)
        return max(1, self.concurrency // (subjects + 1))

    def may_start(self, subject: str) -> bool:
        if self.free <= 0:
            return False
        return self.free > self.reserve or self.by_subject[subject] < self.fair_share(subject)

    @property
    def may_hold_more(self) -> bool:
        """Whether this worker may read another job that might have to wait: at most a quarter
        of its concurrency waits here, out of other workers' reach."""
        return len(self.waiting) < max(2, self.concurrency // 4)

    def forget(self, job: T) -> None:
        """A waiting job another worker took over (this one stalled past its lease)."""
        self.waiting = [(subject, held) for subject, held in self.waiting if held != job]

    def take(self, subject: str) -> None:
        self.in_use += 1
        self.by_subject[subject] += 1

    def give_back(self, subject: str) -> None:
        self.in_use -= 1
        self.by_subject[subject] -= 1
        if not self.by_subject[subject]:
            del self.by_subject[subject]

    def next_waiting(self) -> tuple[str, T] | None:
        """The waiting job that may start now, with its subject (the subject running least
        first, then the oldest), taken off the waiting list; None when none may."""
        ready = [
            (self.by_subject[subject], order)
            for order, (subject, _) in enumerate(self.waiting)
            if self.may_start(subject)
        ]
        if not ready:
            return None
        _, order = min(ready)
        return self.waiting.pop(order)


class Freed:
    """Wakes a loop that waits for a free slot (to read more work, or to drain) when a slot is
    freed; ``set`` is called wherever a slot is given back."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    async def wait(self, at_most: float = 1.0) -> None:
        """Until a slot is freed after this call, or ``at_most`` seconds."""
        self._event = anyio.Event()
        with anyio.move_on_after(at_most):
            await self._event.wait()

    def set(self) -> None:
        self._event.set()
