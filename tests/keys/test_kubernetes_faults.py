"""KubernetesSource under API failures: it recovers, it never loops hot, it never hangs.

Behaviours:
- ``410 Gone`` at watch start (HTTP status or ERROR event) and as an ERROR event
  mid-stream → relist; other ERROR events and a watch cut mid-chunk → re-watch from
  the last resourceVersion, no relist;
- 5xx answers and refused connections → capped exponential backoff with jitter;
  the requests an outage costs are bounded by the backoff schedule;
- an API server restart on the same port, and changes made while it was down, are
  picked up;
- a watch that goes silent is detected by the client read timeout and replaced;
- a source that cannot reach the API at startup never publishes (the store stays
  not ready) until the API is up;
- ``stop()`` returns promptly during a backoff sleep, a blocking watch or a stall.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from extauthz import metrics
from extauthz.errors import KeySourceError
from extauthz.keys.keyset import DECRYPTION, KeyStore
from extauthz.keys.sources.backoff import Backoff
from tests.fakekube import FakeKube

NS = "auth"


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 10 ms for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def min_delay(backoff: Backoff, attempt: int) -> float:
    """The shortest delay jitter allows before retry ``attempt`` (0-based)."""
    return 0.5 * min(backoff.cap, backoff.initial * backoff.factor**attempt)


def max_attempts(backoff: Backoff, seconds: float) -> int:
    """The most requests a retry loop can make in ``seconds``: every delay at its minimum."""
    total, attempts = 0.0, 1
    while total + min_delay(backoff, attempts - 1) <= seconds:
        total += min_delay(backoff, attempts - 1)
        attempts += 1
    return attempts


def running_threads(source: Any) -> list[threading.Thread]:
    """The source's stream threads still running (white-box: no public handle exists)."""
    return [
        s.thread for s in source.watcher.streams if s.thread is not None and s.thread.is_alive()
    ]


# -- 410 Gone -----------------------------------------------------------------------------


@pytest.mark.parametrize("expired_as", ["status", "event"])
def test_410_at_watch_start_relists(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any, expired_as: Any
) -> None:
    ready()
    kube.expired_as = expired_as
    kube.outage("drop")  # the watch is cut; retries are dropped while we change things
    assert kube.wait_requests(lambda r: r.note == "dropped")
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    floor = kube.store.compact()  # the source's resourceVersion is now too old
    since = time.monotonic()
    kube.recover()
    recorder.wait_kids({"k2"})
    assert kube.wait_for_watches(1)

    after = [r for r in kube.log(since) if r.note != "dropped"]
    gone = after[0]
    assert gone.is_watch
    assert int(gone.query["resourceVersion"]) < floor
    if expired_as == "status":
        assert gone.status == 410
    else:
        assert gone.status == 200
        assert gone.note == "expired-event"
    assert after[1].is_list  # relisted at once
    assert after[2].is_watch
    assert int(after[2].query["resourceVersion"]) >= floor


def test_410_error_event_mid_stream_relists(kube: FakeKube, ready: Any, recorder: Any) -> None:
    ready()
    since = time.monotonic()
    assert kube.error_watches(410) == 1
    relist = kube.wait_requests(lambda r: r.at >= since and r.is_list)
    assert relist
    assert relist[0].at - since < 0.5
    assert kube.wait_for_watches(1)
    assert len(recorder.published) == 1  # the relist found nothing new: no publish


@pytest.mark.parametrize("code", [500, 504])
def test_other_error_events_relist_instead_of_rewatching_the_same_version(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any, code: int
) -> None:
    """client-go relists after any watch ERROR: the resourceVersion may be one the
    server will never serve (504 "Too large resource version" after an etcd restore)."""
    ready()
    since = time.monotonic()
    kube.error_watches(code)
    relist = kube.wait_requests(lambda r: r.at >= since and r.is_list)
    assert relist, "an ERROR event must lead to a relist"
    assert kube.wait_for_watches(1)
    assert not recorder.failures, "one failed watch is a retry, not an outage"
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})


def test_a_watch_cut_mid_chunk_rewatches_without_relist(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    ready()
    kube.abort_watches()
    assert len(kube.wait_requests(lambda r: r.is_watch, count=2)) == 2
    assert sum(1 for r in kube.log() if r.is_list) == 1
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})


class FrozenClock:
    """A monotonic clock that moves only when told: a watch never "lasts"."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stepped(make_source: Any, recorder: Any, backoff: Backoff) -> tuple[Any, Any]:
    """A names-mode source on ``s`` bound without threads: the test calls ``step``."""
    source = make_source(["s"], backoff=backoff, clock=FrozenClock())
    source._sink = recorder  # white-box: bind without starting threads
    source.watcher.bind(source)
    return source.watcher, source.watcher.streams[0]


def test_410_on_every_watch_backs_off_instead_of_looping(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    backoff = Backoff(initial=0.1, factor=2.0, cap=0.4)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    kube.expired_as = "status"
    kube.fail_requests(10_000, 410, lambda r: r.is_watch)
    watcher, stream = stepped(make_source, recorder, backoff)
    delays = [watcher.step(stream) for _ in range(6)]
    # the first 410 relists at once; each further one waits out the backoff first
    assert delays[0] == 0.0
    for n, delay in enumerate(delays[1:], start=1):
        assert min_delay(backoff, n) <= delay <= 2 * min_delay(backoff, n)
    requests = kube.log()
    assert [r.is_list for r in requests] == [True, False] * 6  # a relist before each watch
    assert recorder.kids == {"k1"}


def test_a_server_that_ends_every_watch_at_once_is_not_hammered(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    backoff = Backoff(initial=0.1, factor=2.0, cap=0.4)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    kube.watch_cap = 0.0  # e.g. a proxy that cuts long requests
    watcher, stream = stepped(make_source, recorder, backoff)
    delays = [watcher.step(stream) for _ in range(6)]
    for n, delay in enumerate(delays):
        assert min_delay(backoff, n) <= delay <= 2 * min_delay(backoff, n)
    assert sum(1 for r in kube.log() if r.is_list) == 1  # a re-watch, never a relist


# -- errors, outages, restarts -------------------------------------------------------------


def test_a_watch_that_brought_a_change_and_then_broke_is_reopened_at_once(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    """Failures pile up (watches that end at once); then a watch brings a change and is
    cut mid-stream before it has lasted: it made progress, so the next one opens at
    once instead of waiting out the grown backoff (the next rotation must not wait)."""
    backoff = Backoff(initial=0.2, factor=2.0, cap=5.0)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    kube.watch_cap = 0.0
    watcher, stream = stepped(make_source, recorder, backoff)
    assert all(watcher.step(stream) > 0 for _ in range(3))  # three unproductive watches
    kube.watch_cap = None
    delay: list[float] = []
    stepping = threading.Thread(target=lambda: delay.append(watcher.step(stream)))
    watches = sum(1 for r in kube.log() if r.is_watch)
    stepping.start()
    kube.wait_requests(lambda r: r.is_watch, count=watches + 1)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})
    assert eventually(lambda: kube.abort_watches() == 1)
    stepping.join(5)
    assert delay == [0.0]
    assert (stream.refused, stream.short) == (0, 0)


def test_a_watch_request_that_fails_slowly_is_no_progress(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    """A watch counts as having lasted from when it opened: a request that takes
    seconds to fail (a proxy answering 500 after waiting on its upstream) backs off
    ever longer instead of going again at once."""
    backoff = Backoff(initial=0.1, factor=2.0, cap=100.0)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    kube.fail_requests(10_000, 500, lambda r: r.is_watch)
    watcher, stream = stepped(make_source, recorder, backoff)
    clock, call = watcher.clock, watcher._call

    def slow(**kwargs: Any) -> Any:
        if kwargs.get("watch"):
            clock.now += 5.0  # the answer takes five seconds
        return call(**kwargs)

    watcher._call = slow  # white-box: the request is the only way to spend time here
    delays = [watcher.step(stream) for _ in range(4)]
    for n, delay in enumerate(delays):
        assert min_delay(backoff, n) <= delay <= 2 * min_delay(backoff, n)


def test_an_object_replayed_at_the_version_held_is_no_change(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    """A server that replays its objects at every watch (and then cuts it) must not
    look like progress: only a new resourceVersion or a deletion of a held name
    counts, and the handler hears only those."""
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    watcher, stream = stepped(make_source, recorder, Backoff())
    kube.watch_cap = 0.0
    watcher.step(stream)  # listed
    version = stream.objects["s"]
    published = len(recorder.published)
    raw = {"metadata": {"name": "s", "resourceVersion": version},
           "data": {"jwks.json": base64.b64encode(keys.jwks("k1")).decode()}}  # fmt: skip

    def event(kind: str, obj: dict[str, Any]) -> bytes:
        return json.dumps({"type": kind, "object": obj}).encode()

    assert not watcher._event(stream, event("ADDED", raw))
    assert not watcher._event(stream, event("MODIFIED", raw))
    gone = {"metadata": {"name": "other", "resourceVersion": "99"}}
    assert not watcher._event(stream, event("DELETED", gone))
    assert len(recorder.published) == published
    newer = {**raw, "metadata": {"name": "s", "resourceVersion": str(int(version) + 1)},
             "data": {"jwks.json": base64.b64encode(keys.jwks("k2")).decode()}}  # fmt: skip
    assert watcher._event(stream, event("MODIFIED", newer))
    recorder.wait_kids({"k2"})


def test_a_fault_after_a_fault_starts_from_a_short_delay_once_the_api_answered(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    """An outage (three refused attempts), then, with the API answering again, a watch
    cut at once and a 504: the delays follow the longer streak of one kind (refused,
    or opened without progress), not every attempt since the last progress, so a
    key change after the next fault still comes within a second or two."""
    backoff = Backoff(initial=0.1, factor=2.0, cap=100.0)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    kube.watch_cap = 0.0
    watcher, stream = stepped(make_source, recorder, backoff)
    watcher.step(stream)  # listed; the watch ends at once: one short watch
    kube.outage("refuse")
    refused = [watcher.step(stream) for _ in range(3)]
    for n, delay in enumerate(refused):  # refused 1, 2, 3 (the short watch was first)
        assert min_delay(backoff, n) <= delay <= 2 * min_delay(backoff, n)
    kube.recover()
    cut = watcher.step(stream)  # the watch opens (refusals over), is cut at once: 2 short
    assert min_delay(backoff, 1) <= cut <= 2 * min_delay(backoff, 1)
    kube.fail_requests(1, 504, lambda r: r.is_watch)
    failed = watcher.step(stream)  # one refusal now, two short watches: still the 2nd
    assert min_delay(backoff, 1) <= failed <= 2 * min_delay(backoff, 1)
    kube.watch_cap = None
    kube.fail_requests(10_000, 500, lambda r: r.is_watch)
    growing = [watcher.step(stream) for _ in range(3)]  # refusals 2, 3, 4: it grows
    for n, delay in enumerate(growing, start=1):
        assert min_delay(backoff, n) <= delay <= 2 * min_delay(backoff, n)


def test_5xx_answers_are_retried_with_growing_delays(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    backoff = Backoff(initial=0.05, factor=2.0, cap=0.5)
    ready(backoff=backoff)
    kube.fail_requests(4, 503, lambda r: r.is_watch)
    kube.close_watches()
    watches = kube.wait_requests(lambda r: r.is_watch, count=6, timeout=10)
    failed = [r for r in watches if r.status == 503]
    assert len(failed) == 4
    # attempt n waits at least min_delay(n-1) after attempt n-1 (a clean close re-watches
    # at once; every 503 after that counts as one more failure)
    for n, (before, after) in enumerate(itertools.pairwise(failed)):
        assert after.at - before.at >= min_delay(backoff, n) * 0.95
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})


def test_an_outage_costs_a_bounded_number_of_requests(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    backoff = Backoff(initial=0.1, factor=2.0, cap=0.8)
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    watcher, stream = stepped(make_source, recorder, backoff)
    kube.watch_cap = 0.0
    watcher.step(stream)  # listed, watched
    kube.outage("drop")
    delays = [watcher.step(stream) for _ in range(8)]
    # each dropped attempt waits longer, up to the cap: never a hot loop (the streak
    # of refusals, the longer one after the single short watch before the outage)
    for n, delay in enumerate(delays):
        assert min_delay(backoff, n) <= delay <= 2 * min_delay(backoff, n)
    assert sum(1 for r in kube.log() if r.note == "dropped") == 8
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    kube.recover()
    kube.watch_cap = None
    kube.close_watches()
    watcher.step(stream)  # the watch replays the change, then the fake ends it
    assert recorder.kids == {"k2"}


def test_an_api_server_restart_on_the_same_port_is_survived(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    ready()
    port = kube.port
    since = time.monotonic()
    with capture_logs() as logs:
        kube.stop()  # connection refused from now on
        kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
        assert eventually(lambda: any(e["event"] == "kubernetes_api_error" for e in logs))
    assert kube.log(since) == [], "nothing reached a stopped server"
    kube.start()
    assert kube.port == port
    recorder.wait_kids({"k2"})


def test_a_stalled_watch_is_detected_by_the_read_timeout_and_replaced(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    ready(watch_timeout_seconds=1, read_timeout=1.5)
    watches = len([r for r in kube.log() if r.is_watch])
    kube.stall_watches()  # the connection stays open, not one byte flows
    stalled = time.monotonic()
    replaced = kube.wait_requests(lambda r: r.is_watch and r.at > stalled, timeout=5)
    assert replaced, "the stalled watch was never replaced"
    assert replaced[0].at - stalled < 1.5 + 0.5  # read timeout + first backoff + slack
    assert sum(1 for r in kube.log() if r.is_list) == 1  # a re-watch, not a relist
    kube.release_watches()
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k2")})
    recorder.wait_kids({"k2"})
    assert len([r for r in kube.log() if r.is_watch]) > watches


# -- readiness ------------------------------------------------------------------------


def test_unreachable_at_startup_never_publishes_until_the_api_is_up(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    kube.stop()  # nothing listens on the port
    store = KeyStore()
    source = make_source(["s"])
    recorder.inner = store.attach(DECRYPTION, source)
    with capture_logs() as logs:
        source.start(recorder)
        assert eventually(lambda: sum(e["event"] == "kubernetes_api_error" for e in logs) >= 3)
    assert recorder.published == []
    assert not store.ready
    kube.start()
    assert store.wait_ready(5)
    assert {k.kid for k in store.ring.get(DECRYPTION).keys} == {"k1"}


# -- stop --------------------------------------------------------------------------------


def _stopped_promptly(source: Any) -> None:
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 0.5
    assert eventually(lambda: not running_threads(source), timeout=1.0)
    assert source.alive()  # stopped, not crashed


def test_stop_is_prompt_during_a_backoff_sleep(
    kube: FakeKube, make_source: Any, recorder: Any
) -> None:
    kube.stop()
    source = make_source(["s"], backoff=Backoff(initial=60, factor=2, cap=60))
    with capture_logs() as logs:
        source.start(recorder)
        assert eventually(lambda: any(e["event"] == "kubernetes_api_retry" for e in logs))
    _stopped_promptly(source)


def test_stop_is_prompt_during_a_blocking_watch(ready: Any) -> None:
    source = ready(watch_timeout_seconds=300)
    _stopped_promptly(source)


def test_stop_is_prompt_during_a_stalled_watch(kube: FakeKube, ready: Any) -> None:
    source = ready(watch_timeout_seconds=300)
    kube.stall_watches()
    _stopped_promptly(source)


def test_events_split_across_chunks_are_reassembled(
    kube: FakeKube, ready: Any, recorder: Any, keys: Any
) -> None:
    ready()
    kube.split_events = True  # a proxy that re-chunks the stream
    kube.close_watches()
    assert len(kube.wait_requests(lambda r: r.is_watch, count=2)) == 2
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1", "k2")})
    recorder.wait_kids({"k1", "k2"})
    assert not recorder.failures


# -- health (extauthz_key_source_up) ---------------------------------------------------


def source_up() -> float | None:
    return metrics.REGISTRY.get_sample_value("extauthz_key_source_up", {"source": "kubernetes"})


def test_an_outage_is_reported_once_and_recovery_restores_health(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    store = KeyStore()
    source = make_source(["s"])
    recorder.inner = store.attach(DECRYPTION, source)
    source.start(recorder)
    assert store.wait_ready(5)
    assert kube.wait_for_watches(1)
    assert source_up() == 1

    kube.outage("drop")
    assert len(kube.wait_requests(lambda r: r.note == "dropped", count=4)) >= 4
    assert source_up() == 0
    assert [type(e) for _, e in recorder.failures] == [KeySourceError]  # once, not per retry
    published = len(recorder.published)

    kube.recover()
    assert eventually(lambda: source_up() == 1)
    assert len(recorder.published) == published + 1  # same keys, published to say "up"
    assert recorder.kids == {"k1"}


def test_lists_that_work_with_watches_that_fail_keep_the_source_down(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    """RBAC with ``list`` but without ``watch``: every retry's list works, every watch
    is refused. The source is down, reported once, until a watch opens again."""
    kube.store.put_secret(NS, "s", {"jwks.json": keys.jwks("k1")})
    store = KeyStore()
    source = make_source(["s"], backoff=Backoff(initial=0.05, factor=2.0, cap=0.2))
    recorder.inner = store.attach(DECRYPTION, source)
    source.start(recorder)
    assert store.wait_ready(5)
    assert kube.wait_for_watches(1)
    kube.fail_requests(10_000, 403, lambda r: r.is_watch)
    kube.close_watches()
    refused = kube.wait_requests(lambda r: r.is_watch and r.status == 403, count=6, timeout=10)
    assert len(refused) >= 6
    assert sum(1 for r in kube.log(refused[0].at) if r.is_list) >= 4  # a relist each time
    assert source_up() == 0
    assert len(recorder.failures) == 1  # once, not per retry
    assert isinstance(recorder.failures[0][1], KeySourceError)
    kube.clear_faults()  # the Role gets its watch verb back
    assert eventually(lambda: source_up() == 1)


def test_a_rejected_secret_keeps_the_source_down_until_fixed(
    kube: FakeKube, make_source: Any, recorder: Any, keys: Any
) -> None:
    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2")})
    store = KeyStore()
    source = make_source(["a", "b"])
    recorder.inner = store.attach(DECRYPTION, source)
    source.start(recorder)
    assert store.wait_ready(5)
    assert kube.wait_for_watches(2)

    kube.store.put_secret(NS, "a", {"jwks.json": b"{broken"})
    assert eventually(lambda: source_up() == 0)
    kube.store.put_secret(NS, "b", {"jwks.json": keys.jwks("k2", "k3")})  # b changes meanwhile
    recorder.wait_kids({"k1", "k2", "k3"})
    assert source_up() == 0  # a is still broken: published, then reported down again

    kube.store.put_secret(NS, "a", {"jwks.json": keys.jwks("k1")})  # fixed, same keys as before
    assert eventually(lambda: source_up() == 1)
    assert recorder.kids == {"k1", "k2", "k3"}
