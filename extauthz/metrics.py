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

from dataclasses import dataclass
from typing import Any

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
CHECK_DURATION = Histogram(
    "extauthz_check_duration_seconds",
    "Time spent deciding one Check, from request bytes to response bytes, by transport.",
    ["transport"],
    # 50 us .. 1 s: a cached allow costs tens of microseconds, an RSA decrypt ~1 ms.
    buckets=(
        0.00005,
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
    ),
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


def record_check(decision: str, reason: str, seconds: float, transport: str = "grpc") -> None:
    """Count one decision and its latency."""
    key = (decision, reason, transport)
    child = _CHECK_CHILDREN.get(key)
    if child is None:
        child = _CHECK_CHILDREN[key] = CHECKS.labels(decision, reason, transport)
    child.inc()
    duration = _DURATION_CHILDREN.get(transport)
    if duration is None:
        duration = _DURATION_CHILDREN[transport] = CHECK_DURATION.labels(transport)
    duration.observe(seconds)


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


_CACHE_CHILDREN: dict[str, Any] = {}


def cache_lookup(result: str) -> None:
    """Count one verified-token cache lookup."""
    child = _CACHE_CHILDREN.get(result)
    if child is None:
        child = _CACHE_CHILDREN[result] = TOKEN_CACHE.labels(result)
    child.inc()


def set_build_info(version: str) -> None:
    """Publish ``extauthz_build_info`` (served by whichever process serves /metrics)."""
    BUILD_INFO.info({"version": version})


def exposition() -> bytes:
    """The Prometheus text exposition: this process's, or every worker's aggregated."""
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
