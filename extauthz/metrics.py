"""Prometheus metrics: every metric of the operations contract, defined once, in this module only.

Label values are bounded by construction: a decision, a reason class, a source kind,
a key use, a cache result. Never a ``kid``, a subject or a path.

With ``--workers N`` every worker process writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` (set in the workers' environment by the supervisor, read
by prometheus-client when it is imported) and the supervisor, after
:func:`aggregate_workers`, serves them aggregated on ``/metrics``: counters and
histograms add up, the key gauges report what the live workers agree on.

Importing this module defines the metrics in a private registry and changes nothing
else; the one piece of process-wide state, where to aggregate from, is set only by
an explicit call.
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead


@dataclass
class _State:
    """Process-wide metrics state: set once by the workers supervisor, read by /metrics."""

    #: directory of the workers' sample files; None: this process's own registry
    aggregate_dir: str | None = None


_STATE = _State()


def aggregate_workers(directory: str) -> None:
    """Serve every worker's samples from ``directory`` on ``/metrics`` (supervisor)."""
    _STATE.aggregate_dir = directory


def aggregating() -> bool:
    """Whether ``/metrics`` aggregates worker processes."""
    return _STATE.aggregate_dir is not None


REGISTRY = CollectorRegistry(auto_describe=True)

CHECKS = Counter(
    "extauthz_checks",
    "Authorization decisions, by decision, reason class and transport (grpc | http).",
    ["decision", "reason", "transport"],
    registry=REGISTRY,
)
#: 50 µs .. 1 s: a cached allow costs tens of microseconds, an RSA decrypt ~1 ms
DURATION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1.0)  # fmt: skip
CHECK_DURATION = Histogram(
    "extauthz_check_duration_seconds",
    "Time spent deciding one Check, from request bytes to response bytes, by transport.",
    ["transport"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
KEYS = Gauge(
    "extauthz_keys",
    "Keys currently loaded, by source kind and use (enc = decryption, sig = verification).",
    ["source", "use"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
KEY_RELOADS = Counter(
    "extauthz_key_reloads",
    "Key (re)loads by source kind and result (success | error).",
    ["source", "result"],
    registry=REGISTRY,
)
KEY_SOURCE_UP = Gauge(
    "extauthz_key_source_up",
    "1 when the source's last load or watch succeeded, else 0.",
    ["source"],
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
TOKEN_CACHE = Counter(
    "extauthz_token_cache",
    "Verified-token cache lookups by result (hit | miss | stale).",
    ["result"],
    registry=REGISTRY,
)
REVOCATION_ENTRIES = Gauge(
    "extauthz_revocation_entries",
    "Revocation list entries in force (every source merged).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
REVOCATION_RELOADS = Counter(
    "extauthz_revocation_reloads",
    "Revocation list (re)loads by source kind and result (success | error).",
    ["source", "result"],
    registry=REGISTRY,
)
BUILD_INFO = Info("extauthz_build", "Build information.", registry=None)


#: label children by label values (labels() is slow); a bounded set by construction
_CHECK_CHILDREN: dict[tuple[str, str, str], Any] = {}
_DURATION_CHILDREN: dict[str, Any] = {}
_CACHE_CHILDREN: dict[str, Any] = {}

#: what Checks recorded and :func:`flush` has not applied yet: ``(decision, reason,
#: transport, seconds)`` per decision, a cache result (``str``) per cache lookup.
#: Appending to a deque is atomic and costs a fraction of a prometheus-client update
#: (which takes a lock per value, and with ``--workers`` writes a shared file); the
#: flush applies the sum per label set and per histogram bucket at once.
_QUEUE: collections.deque[tuple[str, str, str, float] | str] = collections.deque()
_append = _QUEUE.append
#: past this many unapplied samples the recording thread flushes (a flusher that
#: cannot keep up never makes the queue grow without bound)
QUEUE_MAX = 65536
#: seconds between flushes of the background flusher (:func:`start_flusher`)
FLUSH_INTERVAL = 1.0
_FLUSH_LOCK = threading.Lock()
_UPPER_BOUNDS = (*DURATION_BUCKETS, math.inf)  # prometheus-client's, with +Inf


def record_check(decision: str, reason: str, seconds: float, transport: str = "grpc") -> None:
    """Count one decision and its latency (applied by the next :func:`flush`)."""
    _append((decision, reason, transport, seconds))
    if len(_QUEUE) > QUEUE_MAX:
        flush()


def cache_lookup(result: str) -> None:
    """Count one verified-token cache lookup (applied by the next :func:`flush`)."""
    _append(result)
    if len(_QUEUE) > QUEUE_MAX:
        flush()


#: samples applied per step of a flush: the lock and the GIL are let go between steps,
#: so a second's worth of samples never holds up the Checks for more than one step
FLUSH_STEP = 512


def flush() -> None:
    """Apply every recorded Check and cache lookup to the metrics (what is queued when it
    starts; later samples wait for the next flush)."""
    left = len(_QUEUE)
    while left > 0:
        step = min(left, FLUSH_STEP)
        _apply(step)
        left -= step
        if left:
            time.sleep(0)  # let the serving threads run between steps


def _apply(pending: int) -> None:
    """Apply the oldest ``pending`` queued samples."""
    with _FLUSH_LOCK:
        pending = min(pending, len(_QUEUE))
        if not pending:
            return
        checks: dict[tuple[str, str, str], int] = {}
        caches: dict[str, int] = {}
        buckets: dict[str, list[int]] = {}
        sums: dict[str, float] = {}
        #: each sample's value, for a histogram child without bulk adds (else None)
        samples: dict[str, list[float] | None] = {}
        pop = _QUEUE.popleft
        for _ in range(pending):  # what is queued now; later appends wait for the next
            item = pop()
            if type(item) is str:
                caches[item] = caches.get(item, 0) + 1
                continue
            decision, reason, transport, seconds = cast(tuple[str, str, str, float], item)
            key = (decision, reason, transport)
            checks[key] = checks.get(key, 0) + 1
            counts = buckets.get(transport)
            if counts is None:
                counts = buckets[transport] = [0] * len(_UPPER_BOUNDS)
                sums[transport] = 0.0
                samples[transport] = None if _bulk(_duration(transport)) else []
            counts[bisect.bisect_left(_UPPER_BOUNDS, seconds)] += 1
            sums[transport] += seconds
            kept = samples[transport]
            if kept is not None:
                kept.append(seconds)
        for key, count in checks.items():
            child = _CHECK_CHILDREN.get(key)
            if child is None:
                child = _CHECK_CHILDREN[key] = CHECKS.labels(*key)
            child.inc(count)
        for transport, counts in buckets.items():
            duration = _duration(transport)
            kept = samples[transport]
            if kept is None:
                duration._sum.inc(sums[transport])
                for value, count in zip(duration._buckets, counts, strict=True):
                    if count:
                        value.inc(count)
            else:
                for seconds in kept:
                    duration.observe(seconds)
        for result, count in caches.items():
            cache = _CACHE_CHILDREN.get(result)
            if cache is None:
                cache = _CACHE_CHILDREN[result] = TOKEN_CACHE.labels(result)
            cache.inc(count)


def _duration(transport: str) -> Any:
    """The duration histogram's child of ``transport``."""
    child = _DURATION_CHILDREN.get(transport)
    if child is None:
        child = _DURATION_CHILDREN[transport] = CHECK_DURATION.labels(transport)
    return child


def _bulk(child: Any) -> bool:
    """prometheus-client keeps a child's sum and per-bucket counts as values that take a
    bulk add; a release that does not gets one observe per sample."""
    return len(getattr(child, "_buckets", ())) == len(_UPPER_BOUNDS) and hasattr(child, "_sum")


class _Flusher:
    """The thread that flushes every :data:`FLUSH_INTERVAL` seconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    def start(self) -> None:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._run, args=(self.stop,),
                                           name="metrics-flush", daemon=True)  # fmt: skip
            self.thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(FLUSH_INTERVAL):
            flush()

    def halt(self) -> None:
        with self.lock:
            self.stop.set()
            self.thread = None
        flush()


_FLUSHER = _Flusher()


def start_flusher() -> None:
    """Flush in the background every :data:`FLUSH_INTERVAL` seconds (a serving process:
    a worker's samples reach the supervisor's ``/metrics`` within that interval)."""
    _FLUSHER.start()


def stop_flusher() -> None:
    """Stop the background flush, after a last one."""
    _FLUSHER.halt()


def key_reload(source: str, result: str) -> None:
    """Count one key (re)load attempt of a source kind."""
    KEY_RELOADS.labels(source, result).inc()


def revocation_reload(source: str, result: str) -> None:
    """One revocation list version taken (``success``) or refused (``error``)."""
    REVOCATION_RELOADS.labels(source, result).inc()


def set_revocation_entries(count: int) -> None:
    """Entries of the merged revocation list now in force."""
    REVOCATION_ENTRIES.set(count)


def set_source_up(source: str, up: bool) -> None:
    """1 when every source of this kind succeeded at its last load, else 0."""
    KEY_SOURCE_UP.labels(source).set(1 if up else 0)


def set_key_count(source: str, use: str, count: int) -> None:
    """Export how many keys of ``use`` a source kind holds now."""
    KEYS.labels(source, use).set(count)


def set_build_info(version: str) -> None:
    """Publish ``extauthz_build_info`` (served by whichever process serves /metrics)."""
    BUILD_INFO.info({"version": version})


def exposition() -> bytes:
    """The Prometheus text exposition: this process's, or every worker's aggregated."""
    flush()
    if _STATE.aggregate_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=_STATE.aggregate_dir)  # type: ignore[no-untyped-call]
        registry.register(BUILD_INFO)
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(_INFO_REGISTRY)


_INFO_REGISTRY = CollectorRegistry()
_INFO_REGISTRY.register(BUILD_INFO)


def worker_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (multiprocess mode)."""
    if _STATE.aggregate_dir is not None:
        mark_process_dead(pid, _STATE.aggregate_dir)  # type: ignore[no-untyped-call]
