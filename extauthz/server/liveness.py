"""Liveness: the process is live while its authorization listeners answer.

A thread runs a round of self-checks every ``interval`` seconds, each with a
``deadline``: the gRPC server's handler pool runs a task (and, when the port is this
process's alone, a real health Check over loopback answers), the HTTP listener's
event loop runs a callback. ``failures`` rounds in a row that miss a deadline make
the process unlive (``/healthz`` 503, gRPC health ``liveness`` NOT_SERVING), so that
Kubernetes restarts a wedged server; one slow round under load does not.

Liveness never looks at keys or readiness: a pod waiting for its Secret, or
draining, is not killed. With ``--workers N`` each worker also touches a heartbeat
file after every good round, and the supervisor's ``/healthz`` checks that every
worker's heartbeat is fresh (a loopback self-check there may reach another worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("extauthz.server")

#: a self-check: True when the listener answered within the deadline (seconds)
Probe = Callable[[float], bool]


@dataclass(frozen=True, slots=True)
class LivenessTimings:
    """How often and how patiently listeners are checked."""

    #: seconds between rounds
    interval: float = 5.0
    #: a listener that takes longer than this to answer a self-check failed it; long
    #: enough that a saturated but working server passes
    deadline: float = 5.0
    #: failed rounds in a row before the process is unlive
    failures: int = 2

    @property
    def stale_after(self) -> float:
        """A heartbeat older than this means a worker stopped checking (or answering)."""
        return (self.interval + self.deadline) * (self.failures + 1)


def liveness_timings(interval: float | None = None) -> LivenessTimings:
    """The default timings, or a round every ``interval`` seconds (``server.
    liveness_interval_seconds``; the deadline of a round follows the interval)."""
    if interval is None:
        return LivenessTimings()
    return LivenessTimings(interval=interval, deadline=interval)


class Liveness:
    """Runs the self-checks; :meth:`live` is what ``/healthz`` reports."""

    def __init__(
        self, probes: Mapping[str, Probe], timings: LivenessTimings | None = None, *,
        heartbeat: Path | None = None, on_change: Callable[[bool], None] | None = None,
    ) -> None:  # fmt: skip
        self.probes = dict(probes)
        self.timings = timings or liveness_timings()
        self.heartbeat = heartbeat
        self.on_change = on_change
        self._failed = 0
        self._last_round = time.monotonic()
        self._live = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)

    def live(self) -> bool:
        """Live: the last rounds passed, and the checking thread itself still runs."""
        stale = time.monotonic() - self._last_round > self.timings.stale_after
        return self._live and not stale

    def start(self) -> None:
        """Check in the background."""
        if self.heartbeat is not None:
            self.heartbeat.touch()
        self._thread.start()

    def stop(self) -> None:
        """Stop checking."""
        self._stop.set()

    def run_once(self) -> bool:
        """One round of self-checks; updates :meth:`live`. Returns the round's result."""
        failed = [name for name, probe in self.probes.items() if not _safe(probe, self.timings)]
        self._last_round = time.monotonic()
        if failed:
            self._failed += 1
            log.error("listener_unresponsive", listeners=failed, rounds=self._failed)
        else:
            self._failed = 0
            if self.heartbeat is not None:
                try:
                    self.heartbeat.touch()
                except OSError as exc:
                    log.error("heartbeat_failed", error=str(exc))  # noqa: TRY400 - no traceback needed
        live = self._failed < self.timings.failures
        if live != self._live:
            self._live = live
            log.warning("liveness", live=live)
            if self.on_change is not None:
                self.on_change(live)
        return not failed

    def _run(self) -> None:
        while not self._stop.wait(self.timings.interval):
            self.run_once()


def _safe(probe: Probe, timings: LivenessTimings) -> bool:
    try:
        return probe(timings.deadline)
    except Exception:
        log.exception("liveness_probe_failed")
        return False


def heartbeat_fresh(path: Path, started: float, timings: LivenessTimings) -> bool:
    """Whether a worker's heartbeat file (or, before its first, its start) is recent."""
    try:
        stamp = path.stat().st_mtime
    except FileNotFoundError:
        stamp = started
    return time.time() - stamp <= timings.stale_after
