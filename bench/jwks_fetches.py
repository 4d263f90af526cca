"""How many JWKS fetches traffic costs, and how fast a rotated key becomes usable.

    python bench/jwks_fetches.py [--real SECONDS]

Everything runs against the real local HTTPS IdP of ``tests/jwks_server.py`` with the
production defaults (refetch_interval 10 s, min_refresh 300 s) unless stated.

1. Flood: 1,000 Checks with random kids from 8 threads through the pipeline's protocol
   (``KeyStore.refreshed``); fetches made, and how long callers waited in total.
2. Simulated 60 s (injected clock, poll() plays the source thread; 1,000 Checks/s):
   steady valid traffic; 10 % random kids; an IdP that says ``no-cache``; an IdP that
   is down for the whole minute under the same flood.
3. Rotation: the IdP publishes a new key and a token signed with it arrives at once.
   (a) last fetch older than the refetch interval: time to the first successful
   lookup; (b) rotation 1 s after a fetch (inside the interval): the first Checks are
   denied without waiting, the key is usable when the deferred refetch lands.
4. ``--real SECONDS``: the real thread and clock under a sustained random-kid flood
   (200 Checks/s) for that long; fetches counted at the server.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` is a package

from extauthz.keys.keyset import KeyStore, provider_purpose
from extauthz.keys.sources.jwks import JwksSource
from tests.jwks_server import FakeClock, JwksServer, RecordingSink, signing_key

PURPOSE = provider_purpose("idp")


def quiet() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()))


def started(idp: JwksServer, **kwargs: Any) -> tuple[JwksSource, KeyStore, RecordingSink]:
    source = JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, **kwargs)
    store = KeyStore()
    sink = RecordingSink(store.attach(PURPOSE, source))
    source.start(sink)
    assert store.wait_ready(5)
    while source.in_flight:
        time.sleep(0.001)
    return source, store, sink


def flood(idp: JwksServer) -> None:
    """The flood lands just after the refetch interval has passed: the worst case."""
    before = idp.count()
    clock = FakeClock()
    source, store, _ = started(idp, clock=clock)
    clock.advance(10)
    waited: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(125):
            t = time.perf_counter()
            store.refreshed(PURPOSE, uuid.uuid4().hex, store.ring.generation)
            with lock:
                waited.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)  # anything still to be fetched would be fetched by now
    source.stop()
    fetches = idp.count() - before
    slow = sum(1 for w in waited if w > 0.001)
    print(
        f"1. flood: 1000 random kids / 8 threads in {elapsed * 1000:.0f} ms, right after the "
        f"interval -> {fetches} fetches incl. the initial one; {slow} calls took over 1 ms "
        f"(max {max(waited) * 1000:.1f} ms: at most one Check per source waits for the "
        f"refetch, the others lost the CPU to it), median {statistics.median(waited) * 1e6:.0f} us"
    )


def simulate(idp: JwksServer, label: str, unknown_share: float, **kwargs: Any) -> None:
    clock = FakeClock()
    before = idp.count()
    source = JwksSource(
        idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock, **kwargs
    )
    sink = RecordingSink()
    rng = random.Random(1)
    rps, seconds = 1000, 60
    due_in = source.poll(sink)
    misses = 0
    for _ in range(rps * seconds):
        clock.advance(1 / rps)
        due_in -= 1 / rps
        if rng.random() < unknown_share:
            misses += 1
            if source.request_refresh(uuid.uuid4().hex):
                due_in = 0
        if due_in <= 0:
            due_in = source.poll(sink)
    source.stop()
    print(
        f"2. simulated 60 s, {label}: {misses} unknown-kid Checks -> "
        f"{idp.count() - before} HTTP fetch(es), {len(sink.failures)} failed"
    )


def rotation(idp: JwksServer, rounds: int = 20) -> None:
    interval = 0.3
    source, store, _ = started(idp, refetch_interval=interval)
    latencies = []
    for n in range(rounds):
        time.sleep(interval + 0.05)  # last fetch is older than the interval
        _, public = signing_key(f"rot-{n}")
        idp.set_keys([*idp.keys[-1:], public])
        t0 = time.perf_counter()
        ring = store.refreshed(PURPOSE, f"rot-{n}", store.ring.generation)
        assert ring is not None
        assert ring.get(PURPOSE).by_kid(f"rot-{n}")
        latencies.append(time.perf_counter() - t0)
        while source.in_flight:
            time.sleep(0.001)
    source.stop()
    latencies.sort()
    print(
        f"3a. rotation, last fetch > interval ago: publish -> first successful lookup "
        f"median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms over {rounds} rotations"
    )

    interval = 2.0
    source, store, _ = started(idp, refetch_interval=interval)
    time.sleep(1.0)
    _, public = signing_key("late")
    idp.set_keys([*idp.keys[-1:], public])
    t0 = time.perf_counter()
    denied = 0
    while True:
        ring = store.refreshed(PURPOSE, "late", store.ring.generation)
        if ring is None and not store.ring.get(PURPOSE).by_kid("late"):
            denied += 1
            time.sleep(0.01)  # a Check every 10 ms
            continue
        break
    elapsed = time.perf_counter() - t0
    source.stop()
    print(
        f"3b. rotation 1.0 s after a fetch, refetch_interval {interval:.0f} s: key usable "
        f"after {elapsed:.2f} s (= the rest of the interval); {denied} Checks denied "
        f"meanwhile without waiting"
    )


def real_run(idp: JwksServer, seconds: float) -> None:
    before = idp.count()
    source, store, _ = started(idp)
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            store.refreshed(PURPOSE, uuid.uuid4().hex, store.ring.generation)
            stop.wait(1 / 50)

    threads = [threading.Thread(target=attacker) for _ in range(4)]  # 4 x 50 = 200/s
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    source.stop()
    print(
        f"4. real {seconds:.0f} s, 200 random-kid Checks/s, refetch_interval 10 s: "
        f"{idp.count() - before} HTTP fetch(es) incl. the initial one"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=float, default=0, help="also run a real flood this long")
    args = parser.parse_args()
    quiet()
    ca = trustme.CA()
    with JwksServer(ca) as idp:
        idp.set_keys([signing_key("key-a")[1]])
        idp.cache_control = "max-age=3600"
        flood(idp)
        simulate(idp, "valid kids only", 0.0)
        simulate(idp, "10% random kids", 0.1)
        idp.cache_control = "no-cache"
        simulate(idp, "10% random kids, IdP says no-cache", 0.1)
        idp.cache_control = "max-age=3600"
        # IdP down from the start of the minute (after a first good fetch)
        clock = FakeClock()
        source = JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, clock=clock)
        sink = RecordingSink()
        source.poll(sink)
        idp.down = True
        before = idp.count()
        due_in = 0.0
        rng = random.Random(2)
        for _ in range(60_000):
            clock.advance(0.001)
            due_in -= 0.001
            if rng.random() < 0.1 and source.request_refresh(uuid.uuid4().hex):
                due_in = 0
            if due_in <= 0:
                due_in = source.poll(sink)
        source.stop()
        idp.down = False
        print(
            f"2. simulated 60 s, IdP down, 10% random kids: {idp.count() - before} "
            f"attempts ({len(sink.failures)} failed), last good keys kept: "
            f"{sorted(k.kid for k in sink.published[-1])}"
        )
        rotation(idp)
        if args.real:
            real_run(idp, args.real)


if __name__ == "__main__":
    main()
