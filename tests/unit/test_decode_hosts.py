"""PullerHost: several streams' pullers in one process, called from many threads (no Ray)."""

from __future__ import annotations

import random
import threading
import time

import numpy as np

from streamvl.runtime.backend import PullerHost
from streamvl.types import FrameBatch


def batches(stream_id: str, n: int, closed: list[str], delay: float = 0.0):
    """A source of n one-frame batches that records when it is closed."""
    try:
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield FrameBatch(stream_id, "mem://" + stream_id, np.array([float(i)]), np.zeros((1, 2, 2, 3), np.uint8), seq=i, first_index=i)
    finally:
        closed.append(stream_id)


def test_calls_of_one_stream_run_in_ticket_order_whatever_order_threads_start():
    host, closed = PullerHost(), []
    for sid in ("a", "b"):
        host.open(sid, lambda sid=sid: batches(sid, 20, closed, delay=0.001), sid)
    results: dict[tuple[str, int], float] = {}
    calls = [(sid, t) for sid in ("a", "b") for t in range(20)]
    random.Random(0).shuffle(calls)  # threads start in any order

    def call(sid: str, ticket: int) -> None:
        meta, batch = host.next(sid, ticket)
        results[sid, ticket] = float(batch.pts[0])

    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(not t.is_alive() for t in threads)
    assert results == {(sid, t): float(t) for sid, t in calls}  # ticket k got the k-th batch


def test_closing_a_stream_ends_its_source_and_releases_waiting_calls():
    host, closed = PullerHost(), []
    host.open("a", lambda: batches("a", 10, closed), "a")
    host.open("b", lambda: batches("b", 10, closed), "b")
    assert host.next("a", 0)[1].seq == 0
    waiting = []
    thread = threading.Thread(target=lambda: waiting.append(host.next("a", 2)))  # ticket 1 never comes
    thread.start()
    time.sleep(0.05)
    assert not waiting
    host.close("a")
    thread.join(5)
    meta, batch = waiting[0]
    assert meta.final and meta.error == "decoder closed" and batch is None
    assert closed == ["a"]  # the source ran its `finally`
    assert host.next("b", 0)[1].seq == 0  # the other stream goes on
    assert len(host) == 1
    meta, _ = host.next("a", 3)
    assert meta.final and meta.error == "decoder closed"


def test_a_stream_closed_during_its_running_call_is_closed_when_the_call_returns():
    host, closed = PullerHost(), []
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(0.2)
        yield from batches("a", 3, closed)

    host.open("a", slow, "a")
    out = []
    thread = threading.Thread(target=lambda: out.append(host.next("a", 0)))
    thread.start()
    started.wait(5)
    host.close("a")
    assert closed == []  # not while its generator runs
    thread.join(5)
    assert out[0][1].seq == 0
    assert closed == ["a"]


def test_a_failing_source_ends_only_its_stream():
    host, closed = PullerHost(), []

    def broken():
        raise RuntimeError("camera on fire")
        yield  # pragma: no cover

    host.open("bad", broken, "bad")
    host.open("good", lambda: batches("good", 2, closed), "good")
    meta, batch = host.next("bad", 0)
    assert meta.final and "camera on fire" in meta.error and batch is None
    assert host.next("good", 0)[1].stream_id == "good"


def test_a_request_that_arrives_before_its_open_waits_for_it():
    host, closed = PullerHost(), []
    out = []
    thread = threading.Thread(target=lambda: out.append(host.next("late", 0)))
    thread.start()
    time.sleep(0.05)
    assert not out
    host.open("late", lambda: batches("late", 2, closed), "late")
    thread.join(5)
    assert out[0][1].stream_id == "late" and out[0][1].seq == 0


def test_a_stream_closed_before_its_open_arrived_stays_closed():
    host, closed = PullerHost(), []
    host.close("gone")
    host.open("gone", lambda: batches("gone", 2, closed), "gone")
    meta, batch = host.next("gone", 0)
    assert meta.final and meta.error == "decoder closed" and batch is None
    assert len(host) == 0
