"""The store's gate (store_svc/gate.py): many shared holders or one exclusive, shared again by a holder
without waiting, and a waiting exclusive holding back new shared holders."""

import threading
import time

import pytest

from store_svc.gate import Gate


def _started(target):
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_exclusive_waits_for_the_shared_holders_and_holds_back_new_ones():
    gate, events = Gate(), []
    holding, release = threading.Event(), threading.Event()

    def reader():
        with gate.shared():
            holding.set()
            release.wait(10)
            with gate.shared():  # again, while the exclusive waits: no wait
                events.append("reader again")
            events.append("reader done")

    def cleaner():
        with gate.exclusive():
            events.append("exclusive")

    def late_reader():
        with gate.shared():
            events.append("late reader")

    first = _started(reader)
    assert holding.wait(10)
    second = _started(cleaner)
    while not gate._waiting:  # the cleaner waits for the reader
        time.sleep(0.01)
    third = _started(late_reader)
    time.sleep(0.2)
    assert events == []  # the cleaner waits, and the late reader waits behind it
    release.set()
    for t in (first, second, third):
        t.join(10)
    assert events == ["reader again", "reader done", "exclusive", "late reader"]


def test_shared_holders_share():
    gate, inside, both = Gate(), [], threading.Barrier(2, timeout=10)

    def reader():
        with gate.shared():
            both.wait()  # both inside at once, or the barrier breaks
            inside.append(1)

    threads = [_started(reader) for _ in range(2)]
    for t in threads:
        t.join(10)
    assert inside == [1, 1]


def test_exclusive_from_a_shared_holder_is_refused_not_a_deadlock():
    gate = Gate()
    with gate.shared(), pytest.raises(RuntimeError, match="holds it shared"):
        with gate.exclusive():
            pass
    with gate.exclusive():  # and the gate is free again
        pass


def test_exclusive_gives_up_after_its_timeout_and_lets_the_held_back_go_on():
    gate, release, events = Gate(), threading.Event(), []
    holding = threading.Event()

    def long_reader():
        with gate.shared():
            holding.set()
            release.wait(10)

    def late_reader():
        with gate.shared():
            events.append("late reader")

    first = _started(long_reader)
    assert holding.wait(10)
    results = []
    waiter = _started(lambda: results.append(gate.exclusive(0.5).__enter__()))
    while not gate._waiting:
        time.sleep(0.01)
    late = _started(late_reader)
    waiter.join(10)
    late.join(10)
    assert results == [False] and events == ["late reader"]  # not held, and the late reader was let go
    release.set()
    first.join(10)
    with gate.exclusive(0.5) as held:
        assert held
