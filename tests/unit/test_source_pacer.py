"""The pacer (when to sync), the event queue sources write to, and the file source's reading."""
import threading
import time

import pytest

from kernsplit.agent.source.events import EventQueue, Replace, Upsert
from kernsplit.agent.source.files import FileSource
from kernsplit.agent.source.pacer import Pacer, PacerConfig


def test_a_lone_event_after_a_quiet_period_syncs_at_once():
    p = Pacer(PacerConfig(min_interval=0.5, max_delay=2))
    assert p.due() is None
    p.event(100.0)
    assert p.due() == 100.0


def test_events_during_a_burst_wait_for_the_minimum_interval_and_are_coalesced():
    p = Pacer(PacerConfig(min_interval=0.5, max_delay=2))
    p.event(100.0)
    p.started(100.0)
    assert not p.pending
    for t in (100.1, 100.2, 100.3):
        p.event(t)
    assert p.due() == 100.5            # one sync for the three
    p.started(100.5)
    p.event(107.0)
    assert p.due() == 107.0            # the burst is over: no wait


def test_a_quiet_window_never_delays_an_event_beyond_the_bound():
    p = Pacer(PacerConfig(min_interval=0.1, quiet=0.3, max_delay=1.0))
    p.event(10.0)
    assert p.due() == pytest.approx(10.3)
    for i in range(1, 20):             # a steady stream, one event every 0.1 s
        p.event(10.0 + i / 10)
    assert p.due() == pytest.approx(11.0)


def test_bad_pacer_settings_are_refused():
    with pytest.raises(ValueError):
        PacerConfig(min_interval=1.0, max_delay=0.5)
    with pytest.raises(ValueError):
        PacerConfig(quiet=-1)


def test_the_queue_wakes_its_worker_once_per_arrival():
    q = EventQueue()
    assert not q.wait(0.01)
    threading.Timer(0.05, q.upsert, args=("s", {"kind": "Service"})).start()
    start = time.monotonic()
    assert q.wait(5)
    assert time.monotonic() - start < 2
    assert not q.wait(0.01), "an event already seen does not wake the worker again"
    q.replace("s", [])
    assert q.wait(0) and [type(e) for e in q.drain()] == [Upsert, Replace] and q.drain() == []


def test_the_file_source_delivers_each_file_as_one_replace_and_skips_unreadable_ones(tmp_path):
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n"
                                     "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n")
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: [\n")
    (tmp_path / ".hidden.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: h}\n")
    q = EventQueue()
    problems = FileSource([tmp_path]).load(q)
    [event] = q.drain()
    assert event.scope == str(tmp_path / "a.yaml")
    assert [o.key.name for o in event.objects] == ["a", "b"]
    [problem] = problems
    assert problem.file == str(tmp_path / "broken.yaml") and "YAML syntax error" in problem.message


def test_the_file_source_waits_for_the_files_to_settle(tmp_path):
    split = tmp_path / "split.yaml"
    split.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n")
    q, stop = EventQueue(), threading.Event()
    source = FileSource([tmp_path], settle=0.6, poll_interval=0.02)
    worker = threading.Thread(target=source.run, args=(q, stop))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not q.is_ready:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        q.drain()
        split.write_text("")                       # a writer truncates ...
        time.sleep(0.3)
        assert q.drain() == [], "a file still being written is not read"
        split.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: b}\n")   # ... then writes
        changed = time.monotonic()
        while not q.wait(0.05):
            assert time.monotonic() - changed < 5
        assert time.monotonic() - changed >= 0.6
        [event] = q.drain()
        assert [o.key.name for o in event.objects] == ["b"]
        split.unlink()
        while not q.wait(0.05):
            assert time.monotonic() - changed < 10
        assert q.drain() == [Replace(str(split), ())]
    finally:
        stop.set()
        worker.join()
