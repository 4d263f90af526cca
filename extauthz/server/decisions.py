"""What both edges do around a decision: the metrics, the decision log line, and a
memo of each edge's serialized answer.

The gRPC edge (:mod:`extauthz.server.authz`) and the HTTP edge
(:mod:`extauthz.server.http_authz`) record every Check through one
:class:`DecisionLog`, so the metric series and the log line are the same in both
transports but for the ``transport`` label and field.
"""

from __future__ import annotations

import collections
import contextlib
import random
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from extauthz import metrics
from extauthz.config import LoggingConfig
from extauthz.errors import DESCRIPTIONS
from extauthz.logging import EventLog
from extauthz.pipeline.decision import DENY_MEMO_MAX, Decision
from extauthz.pipeline.evaluate import MEMO_MAX
from extauthz.pipeline.request import CheckInput

Transport = Literal["grpc", "http"]

log = EventLog("extauthz.decision")

T = TypeVar("T")


def trace_id(request: CheckInput) -> str:
    """The W3C trace id of the request's ``traceparent``, if well-formed."""
    value = request.headers.get("traceparent")
    if not value and request.raw_headers:
        value = next((v for k, v in request.raw_headers if k == "traceparent"), "")
    if not value:  # the common case, on every logged Check: nothing more to do
        return ""
    parts = value.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return ""
        return parts[1]
    return ""


class DecisionLog:
    """Counts each decision and writes its log line (one per Check, sampled by config)."""

    def __init__(self, logging: LoggingConfig, transport: Transport) -> None:
        self.transport = transport
        self.mode = logging.decisions
        self.sample = logging.allow_sample_rate
        self._rng = random.Random()  # noqa: S311 - log sampling, not security

    def record(self, request: CheckInput, decision: Decision, fp: str, elapsed: float) -> None:
        """Metrics and the log line for one answered Check."""
        verdict = "allow" if decision.allowed else "deny"
        metrics.record_check(verdict, decision.reason.value, elapsed, self.transport)
        if decision.allowed and (
            self.mode == "deny" or (self.mode == "sample" and self._rng.random() >= self.sample)
        ):
            return
        fields: dict[str, Any] = {
            "decision": verdict,
            "reason": decision.reason.value,
            "status": decision.status,
            "rule": decision.rule,
            "sub": decision.sub,
            "iss": decision.iss,
            "kid": decision.kid,
            "method": request.method,
            "path": request.path_only,
            "request_id": request.request_id,
            "token_fp": fp,
            "latency_us": round(elapsed * 1e6),
            "transport": self.transport,
        }
        if decision.enc_kid:
            fields["enc_kid"] = decision.enc_kid
        if decision.jti:
            fields["jti"] = decision.jti
        if not decision.allowed:
            fields["description"] = DESCRIPTIONS.get(decision.reason, "")
        if decision.detail:
            fields["detail"] = decision.detail
        if decision.dropped:
            fields["dropped_headers"] = list(decision.dropped)
        trace = trace_id(request)
        if trace:
            fields["trace_id"] = trace
        log.line("info" if decision.allowed else "warning", "check", fields)


class AnswerMemo(Generic[T]):
    """An edge's serialized answer per :class:`Decision` object, bounded, oldest out.

    The pipeline hands out the same Decision object for repeated requests (a cached
    token on the same rule, an anonymous deny), so the edge serializes it once. The
    memo is keyed by identity and holds the Decision itself: its id cannot be reused
    by another object while the entry lives. Safe to share between threads: a lost
    race only serializes an answer twice.

    Bounded on its own, not by the token cache (:meth:`size_for`): a cached token
    whose answer was evicted gets it rendered again, from a Decision equal to the
    first, when it returns.
    """

    def __init__(self, build: Callable[[Decision], T], max_entries: int) -> None:
        self._build = build
        self._max = max(max_entries, 16)
        self._data: collections.OrderedDict[int, tuple[Decision, T]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    @staticmethod
    def size_for(cache_entries: int) -> int:
        """The bound for an edge over a token cache of ``cache_entries``: the answers of
        the decisions it memoizes at once (at most
        :data:`~extauthz.pipeline.evaluate.MEMO_MAX`), plus the memoized denies."""
        return min(cache_entries, MEMO_MAX) + DENY_MEMO_MAX

    def get(self, decision: Decision) -> T:
        """The answer for ``decision``, built on first use."""
        found = self._data.get(id(decision))
        if found is not None and found[0] is decision:
            return found[1]
        answer = self._build(decision)
        self._data[id(decision)] = (decision, answer)
        if len(self._data) > self._max:
            with contextlib.suppress(KeyError):  # another thread evicted it first
                self._data.popitem(last=False)
        return answer
