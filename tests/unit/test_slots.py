"""A worker's slots shared between subjects: room for everyone while there is room, and a
reserve that a subject past its share cannot take."""

from __future__ import annotations

from workers.slots import Slots


def _fill(slots: Slots[str], subject: str, count: int) -> list[str]:
    """Offer ``count`` jobs of ``subject``; returns the ones that started."""
    started = []
    for n in range(count):
        job = f"{subject}{n}"
        if slots.may_start(subject):
            slots.take(subject)
            started.append(job)
        else:
            slots.waiting.append((subject, job))
    return started


def test_four_busy_subjects_leave_a_fifth_room_to_start() -> None:
    slots: Slots[str] = Slots(64)
    for subject in "abc":
        assert len(_fill(slots, subject, 16)) == 16  # plenty of room: all start
    assert len(_fill(slots, "d", 16)) == 12  # the reserve is not d's: 64 // (4 + 1)
    assert slots.free == 4 and len(slots.waiting) == 4
    assert _fill(slots, "e", 1) == ["e0"], "a newcomer starts at once, in the reserve"


def test_a_lone_subject_may_use_all_but_the_reserve() -> None:
    slots: Slots[str] = Slots(64)
    assert len(_fill(slots, "a", 100)) == 64 - 8
    assert len(slots.waiting) == 44


def test_a_freed_slot_goes_to_a_waiting_subject_below_its_share_first() -> None:
    slots: Slots[str] = Slots(8)  # one slot in reserve
    assert len(_fill(slots, "a", 6)) == 6
    assert len(_fill(slots, "b", 2)) == 2  # the second in the reserve: b ran less than its share
    _fill(slots, "a", 1)
    _fill(slots, "c", 1)
    assert [subject for subject, _ in slots.waiting] == ["a", "c"]
    assert slots.next_waiting() is None, "nothing is free"
    slots.give_back("a")  # one slot, the reserve's: c (running none) before a (running 5)
    assert slots.next_waiting() == ("c", "c0")
    slots.take("c")
    slots.give_back("b")
    assert slots.next_waiting() is None, "a is past its share and only the reserve is free"
    slots.give_back("a")
    assert slots.next_waiting() == ("a", "a0"), "room again: anyone may start"


def test_a_waiting_job_taken_over_elsewhere_is_forgotten() -> None:
    slots: Slots[str] = Slots(8)
    slots.waiting.append(("a", "job"))
    slots.forget("job")
    assert slots.waiting == []
