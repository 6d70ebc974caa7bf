"""Overlapped stages: an ordered pipeline of functions, one thread per stage, joined by bounded queues.

    for poses in overlapped(paths, [read_and_preprocess, run_network, decode_and_write], depth=2):
        ...

Item i's stage k runs while item i+1's stage k-1 and item i-1's stage k+1 run, so with stages that release
the GIL (ONNX Runtime, Numba ``nogil`` kernels, NumPy, image codecs) the throughput approaches 1 / (the
slowest stage) instead of 1 / (the sum of the stages). Results come out in input order; at most ``depth``
items wait between two stages, so memory stays bounded however long the input is. An exception raised by a
stage for an item is raised by the iterator at that item's place (after every earlier result), and the
pipeline stops; closing the iterator early (``break``) stops it too. Pure standard library.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

_END = object()  # after the last item


class _Failed:
    """An exception raised for one item, carried downstream in its place."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Stopped(Exception):
    """The consumer went away: a stage thread leaves."""


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue


def _feed(items: Iterable[Any], out: queue.Queue[Any], stop: threading.Event) -> None:
    try:
        try:
            for item in items:
                _put(out, item, stop)
        except _Stopped:
            return
        except BaseException as exc:  # the source itself failed: raised in its place
            _put(out, _Failed(exc), stop)
        _put(out, _END, stop)
    except _Stopped:
        return


def _work(fn: Callable[[Any], Any], src: queue.Queue[Any], out: queue.Queue[Any], stop: threading.Event) -> None:
    try:
        while True:
            item = _get(src, stop)
            if item is _END or isinstance(item, _Failed):
                _put(out, item, stop)  # a failure ends the stream: nothing after it is computed
                return
            try:
                result = fn(item)
            except BaseException as exc:
                result = _Failed(exc)
            _put(out, result, stop)
    except _Stopped:
        return


def overlapped(
    items: Iterable[Any], stages: Sequence[Callable[[Any], Any]], depth: int = 2
) -> Generator[Any, None, None]:
    """Yield ``stages[-1](... stages[0](item))`` for every item of ``items``, in input order, each stage on its
    own thread (the source is read on one more). ``depth`` >= 1: items waiting between two stages, at most."""
    if not stages:
        raise ValueError("overlapped needs at least one stage")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    stop = threading.Event()
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]
    threads = [threading.Thread(target=_feed, args=(items, queues[0], stop), name="stage-source", daemon=True)]
    for k, fn in enumerate(stages):
        threads.append(
            threading.Thread(target=_work, args=(fn, queues[k], queues[k + 1], stop), name=f"stage-{k}", daemon=True)
        )
    for t in threads:
        t.start()
    try:
        while True:
            item = queues[-1].get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join()


def sequential(items: Iterable[Any], stages: Sequence[Callable[[Any], Any]]) -> Generator[Any, None, None]:
    """The same results as :func:`overlapped`, one stage after another on the calling thread."""
    for item in items:
        for fn in stages:
            item = fn(item)
        yield item
