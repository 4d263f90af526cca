"""When JwksSource fetches: cache lifetimes, the unknown-kid rate limit, backoff.

Every test drives :meth:`JwksSource.poll` by hand with an injected clock against a real
local IdP, so hours of schedule take milliseconds and nothing sleeps.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.jwks import JwksSource, cache_lifetime
from tests.jwks_server import FakeClock, JwksServer, RecordingSink, signing_key


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def public_key() -> dict[str, Any]:
    return signing_key("key-a")[1]


@pytest.fixture
def idp(ca: trustme.CA, public_key: dict[str, Any]) -> Iterator[JwksServer]:
    with JwksServer(ca) as server:
        server.set_keys([public_key])
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(idp: JwksServer, clock: FakeClock) -> Iterator[Any]:
    made: list[JwksSource] = []

    def factory(**kwargs: Any) -> JwksSource:
        kwargs.setdefault("issuer", idp.base_url)
        kwargs.setdefault("ca_file", idp.ca_file)
        uri = kwargs.pop("uri", idp.jwks_url)
        source = JwksSource(uri, clock=clock, **kwargs)
        made.append(source)
        return source

    yield factory
    for source in made:
        source.stop()


@pytest.mark.parametrize(
    ("cache_control", "age", "expected"),
    [
        (None, None, 300),
        ("max-age=600", None, 600),
        ("public, max-age=600, must-revalidate", None, 600),
        ('max-age="600"', None, 600),
        ("MAX-AGE=600", None, 600),
        ("max-age=600", "100", 500),
        ("max-age=600", "10000", 300),
        ("max-age=5", None, 300),
        ("max-age=0", None, 300),
        ("max-age=999999999", None, 86400),
        ("max-age=600, max-age=900", None, 600),
        ("no-cache", None, 300),
        ("no-store, max-age=600", None, 300),
        ("max-age=-1", None, 300),
        ("max-age=abc", None, 300),
        ("max-age=600", "abc", 600),
        ("private", None, 300),
    ],
)
def test_cache_lifetime_is_max_age_minus_age_within_the_bounds(
    cache_control: str | None, age: str | None, expected: float
) -> None:
    assert cache_lifetime(cache_control, age, floor=300, ceiling=86400) == expected


@pytest.mark.parametrize(
    ("header", "kwargs", "lifetime"),
    [
        ("max-age=600", {}, 600),
        ("max-age=60", {}, 300),
        (None, {}, 300),
        ("max-age=604800", {}, 3600),  # a week announced, an hour at most by default
        ("max-age=600", {"min_refresh": 30, "max_refresh": 120}, 120),
        ("max-age=10", {"min_refresh": 30, "max_refresh": 120}, 30),
    ],
)
def test_the_next_refresh_honours_max_age_within_the_bounds(
    idp: JwksServer,
    clock: FakeClock,
    make: Any,
    header: str | None,
    kwargs: dict[str, Any],
    lifetime: float,
) -> None:
    idp.cache_control = header
    source = make(**kwargs)
    sink = RecordingSink()
    assert source.poll(sink) == lifetime
    assert idp.count() == 1

    clock.advance(lifetime - 0.5)
    assert source.poll(sink) == pytest.approx(0.5)
    assert idp.count() == 1, "no refetch before the lifetime ends"

    clock.advance(0.5)
    assert source.poll(sink) == lifetime
    assert idp.count() == 2
    assert len(sink.published) == 2


def test_an_unknown_kid_refetch_waits_out_the_interval(
    idp: JwksServer, clock: FakeClock, make: Any
) -> None:
    idp.cache_control = "max-age=3600"
    source = make(refetch_interval=10)
    sink = RecordingSink()
    source.poll(sink)

    clock.advance(1)
    assert source.request_refresh("rotated") is False, "rate-limited: do not wait"
    assert source.poll(sink) == pytest.approx(9)
    assert idp.count() == 1

    clock.advance(9)
    assert source.request_refresh("rotated") is True
    source.poll(sink)
    assert idp.count() == 2
    # served: back to the max-age schedule
    assert source.poll(sink) == pytest.approx(3600)


def test_a_known_kid_never_asks_for_a_fetch(idp: JwksServer, clock: FakeClock, make: Any) -> None:
    source = make()
    sink = RecordingSink()
    source.poll(sink)
    clock.advance(60)
    assert source.request_refresh("key-a") is False
    assert source.poll(sink) == pytest.approx(240)
    assert idp.count() == 1


def test_failures_back_off_and_keep_the_schedule_bounded(
    idp: JwksServer, clock: FakeClock, make: Any
) -> None:
    idp.cache_control = "max-age=600"
    backoff = Backoff(initial=1, factor=2, cap=8)
    source = make(backoff=backoff)
    sink = RecordingSink()
    source.poll(sink)
    clock.advance(600)
    idp.down = True

    delays = []
    for _ in range(6):
        delay = source.poll(sink)
        delays.append(delay)
        clock.advance(delay)
    assert len(sink.failures) == 6
    for attempt, delay in enumerate(delays):
        base = min(8, 2**attempt)
        assert base * 0.5 <= delay <= base
    assert len(sink.published) == 1, "the last good keys are never replaced by nothing"

    idp.down = False
    source.poll(sink)
    assert len(sink.published) == 2
    assert source.poll(sink) == pytest.approx(600), "recovered: back to max-age"


def test_discovery_is_cached_separately_from_kid_refetches(
    idp: JwksServer, clock: FakeClock, make: Any
) -> None:
    idp.cache_control = "max-age=3600"
    source = make(uri=None, discovery=True)
    sink = RecordingSink()
    source.poll(sink)
    assert (idp.count("/.well-known/openid-configuration"), idp.count()) == (1, 1)

    clock.advance(10)
    source.request_refresh("rotated")
    source.poll(sink)
    assert (idp.count("/.well-known/openid-configuration"), idp.count()) == (1, 2)

    clock.advance(3600)
    source.poll(sink)
    assert (idp.count("/.well-known/openid-configuration"), idp.count()) == (2, 3)


def simulate(
    source: JwksSource, clock: FakeClock, seconds: float, rps: int, unknown_share: float
) -> int:
    """``rps`` Checks a second for ``seconds``; ``unknown_share`` of them carry a random kid.

    The source thread is played by calling poll() whenever a fetch is due.
    Returns the number of fetches made.
    """
    sink = RecordingSink()
    rng = random.Random(7)
    step = 1 / rps
    before = source.fetches
    due_in = source.poll(sink)
    elapsed = 0.0
    while elapsed < seconds:
        clock.advance(step)
        elapsed += step
        due_in -= step
        if rng.random() < unknown_share and source.request_refresh(uuid.uuid4().hex):
            due_in = 0
        if due_in <= 0:
            due_in = source.poll(sink)
    return source.fetches - before


def test_sixty_seconds_of_steady_traffic_costs_no_extra_fetch(
    idp: JwksServer, clock: FakeClock, make: Any
) -> None:
    idp.cache_control = "max-age=3600"
    source = make()
    assert simulate(source, clock, 60, rps=1000, unknown_share=0) == 1
    assert idp.count() == 1


def test_sixty_seconds_under_a_random_kid_flood_cost_one_fetch_per_interval(
    idp: JwksServer, clock: FakeClock, make: Any
) -> None:
    """10% of 1,000 Checks/s carry random kids: 6,000 misses, 1 + 60/10 fetches."""
    idp.cache_control = "max-age=3600"
    source = make(refetch_interval=10)
    fetches = simulate(source, clock, 60, rps=1000, unknown_share=0.1)
    assert fetches <= 1 + 60 // 10
    assert idp.count() == fetches
