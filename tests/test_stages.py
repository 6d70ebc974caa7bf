"""Overlapped stages: same results as one after another, in input order; stages really overlap; bounded
memory; a failure raised at its item's place; early exit and failures stop every thread."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator

import pytest

from hhrnet.stages import overlapped, sequential


def _stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stage-")]


def test_results_in_input_order_equal_sequential() -> None:
    rng = random.Random(0)
    delays = [rng.random() * 2e-3 for _ in range(40)]

    def slow(k: int) -> object:
        def fn(x: tuple[int, ...]) -> tuple[int, ...]:
            time.sleep(delays[(x[0] * 7 + k) % 40])  # stages finish out of step with each other
            return (*x, k)

        return fn

    stages = [slow(k) for k in range(3)]
    items = [(i,) for i in range(25)]
    got = list(overlapped(items, stages, depth=1))
    assert got == list(sequential(items, stages)) == [(i, 0, 1, 2) for i in range(25)]
    assert list(overlapped([], stages)) == []
    assert not _stage_threads()


def test_stages_overlap() -> None:
    # stage 1 of item 0 waits until stage 0 has started item 1: one after another this could never happen
    started_next = threading.Event()

    def first(x: int) -> int:
        if x == 1:
            started_next.set()
        return x

    def second(x: int) -> bool:
        return started_next.wait(timeout=30) if x == 0 else True

    assert list(overlapped(range(3), [first, second])) == [True, True, True]


def test_memory_stays_bounded() -> None:
    pulled = itertools.count()
    seen = []

    def source() -> Iterator[int]:
        for i in itertools.count():
            seen.append(next(pulled))
            yield i

    stages = [lambda x: x, lambda x: x, lambda x: x]
    depth = 2
    it = overlapped(source(), stages, depth=depth)
    assert next(it) == 0
    time.sleep(0.3)  # let every queue fill up: the bound below holds however long this waits
    in_flight = (len(stages) + 1) * depth + len(stages) + 1  # queues, one item in each stage's hands, the source's
    assert len(seen) <= 1 + in_flight
    it.close()
    assert not _stage_threads()


def test_failure_is_raised_at_its_item_and_stops_the_pipeline() -> None:
    def fails_at_3(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        return x * 10

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for r in overlapped(itertools.count(), [lambda x: x, fails_at_3, lambda x: x + 1]):
            got.append(r)
    assert got == [1, 11, 21]
    assert not _stage_threads()

    def broken_source() -> Iterator[int]:
        yield 1
        raise OSError("cannot read")

    it = overlapped(broken_source(), [lambda x: x])
    assert next(it) == 1
    with pytest.raises(OSError, match="cannot read"):
        next(it)


def test_early_exit_stops_every_thread_and_bad_arguments() -> None:
    for i, r in enumerate(overlapped(itertools.count(), [lambda x: x * 2])):
        assert r == 2 * i
        if i == 2:
            break
    time.sleep(0)  # the generator's finally ran at break (CPython closes it): nothing left running
    assert not _stage_threads()
    with pytest.raises(ValueError, match="at least one stage"):
        list(overlapped([1], []))
    with pytest.raises(ValueError, match="depth"):
        list(overlapped([1], [lambda x: x], depth=0))
