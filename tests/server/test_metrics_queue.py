"""Check metrics are queued and applied in bulk (extauthz/metrics.py): after a flush the
exposition equals what prometheus-client reports when every sample is observed one by
one, however many threads recorded them; the queue is bounded; the background flusher
applies samples within its interval, and stopping it applies the rest."""

from __future__ import annotations

import random
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from extauthz import metrics


def samples_of(text: bytes, prefix: str) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line.startswith(prefix) and "_created" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def snapshot() -> dict[str, float]:
    metrics.flush()
    text = generate_latest(metrics.REGISTRY)
    return {**samples_of(text, "extauthz_checks_total"),
            **samples_of(text, "extauthz_check_duration_seconds"),
            **samples_of(text, "extauthz_token_cache_total")}  # fmt: skip


@pytest.fixture
def baseline() -> dict[str, float]:
    return snapshot()


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 9) for k, v in after.items()
            if round(v - before.get(k, 0.0), 9)}  # fmt: skip


def test_bulk_application_equals_observing_each_sample(baseline: dict[str, float]) -> None:
    rng = random.Random(7)
    reference = CollectorRegistry()
    checks = Counter("extauthz_checks", "", ["decision", "reason", "transport"],
                     registry=reference)  # fmt: skip
    duration = Histogram("extauthz_check_duration_seconds", "", ["transport"],
                         buckets=metrics.DURATION_BUCKETS, registry=reference)  # fmt: skip
    cache = Counter("extauthz_token_cache", "", ["result"], registry=reference)
    # bucket bounds exactly, values between them, past the last one, and zero
    values = [*metrics.DURATION_BUCKETS, 0.0, 2.0, 7e-5, 3e-4, 0.9]
    values += [rng.choice([rng.uniform(0, 0.002), rng.uniform(0, 2)]) for _ in range(3000)]
    recorded: list[tuple[str, str, str, float]] = []
    for i, seconds in enumerate(values):
        outcome = ("allow", "ok") if i % 3 else ("deny", rng.choice(["expired", "bad_token"]))
        recorded.append((*outcome, rng.choice(["grpc", "http"]), seconds))
    lookups = [rng.choice(["hit", "miss", "stale"]) for _ in range(1000)]

    def record(part: int) -> None:
        for decision, reason, transport, seconds in recorded[part::4]:
            metrics.record_check(decision, reason, seconds, transport)
        for result in lookups[part::4]:
            metrics.cache_lookup(result)

    threads = [threading.Thread(target=record, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for decision, reason, transport, seconds in recorded:
        checks.labels(decision, reason, transport).inc()
        duration.labels(transport).observe(seconds)
    for result in lookups:
        cache.labels(result).inc()
    text = generate_latest(reference)
    expected = {**samples_of(text, "extauthz_checks_total"),
                **samples_of(text, "extauthz_check_duration_seconds"),
                **samples_of(text, "extauthz_token_cache_total")}  # fmt: skip
    got = delta(baseline, snapshot())
    assert set(got) == {k for k, v in expected.items() if v}
    for name, value in got.items():
        assert value == pytest.approx(expected[name], rel=1e-9, abs=1e-9), name


def test_the_queue_never_outgrows_its_bound(baseline: dict[str, float],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(metrics, "QUEUE_MAX", 100)
    for _ in range(1000):
        metrics.record_check("allow", "ok", 1e-5, "grpc")
        assert len(metrics._QUEUE) <= 101
    key = 'extauthz_checks_total{decision="allow",reason="ok",transport="grpc"}'
    assert delta(baseline, snapshot())[key] == 1000


def test_the_flusher_applies_samples_within_its_interval_and_on_stop(
    baseline: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "FLUSH_INTERVAL", 0.05)
    key = 'extauthz_checks_total{decision="deny",reason="expired",transport="http"}'

    def applied() -> float:
        text = generate_latest(metrics.REGISTRY)  # no flush of its own
        return samples_of(text, "extauthz_checks_total").get(key, 0.0) - baseline.get(key, 0.0)

    metrics.start_flusher()
    try:
        metrics.record_check("deny", "expired", 1e-4, "http")
        deadline = time.monotonic() + 5
        while applied() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert applied() == 1
    finally:
        metrics.stop_flusher()
    monkeypatch.setattr(metrics, "FLUSH_INTERVAL", 3600)
    metrics.start_flusher()
    metrics.record_check("deny", "expired", 1e-4, "http")
    time.sleep(0.1)
    assert applied() == 1  # not yet: the next flush is an hour away
    metrics.stop_flusher()
    assert applied() == 2  # stopping applied it
