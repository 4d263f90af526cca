"""Route rules: which rule applies to a request, and whether a token meets it.

Rules are compiled once. The first rule whose path and method fit wins; no match
means the ``default`` rule: any valid token. Envoy's per-route
``context_extensions`` may name a rule (``rule``) and add required scopes
(``scopes``, space-separated).

Rule matching must agree with what the upstream serves, and upstreams disagree:

- Methods are compared upper-cased (HTTP/2 lets a client send ``delete``, and
  frameworks upper-case it), and a rule for ``GET`` also covers ``HEAD`` (every
  framework answers ``HEAD`` with its ``GET`` handler).
- Dot segments: Envoy's normalization and RFC 3986 servers resolve ``..``, but
  Express or Werkzeug route ``/admin/../public/x`` under ``/admin/``: the resolved
  and the literal reading must both be satisfied.
- Letter case: case-insensitive routers (ASP.NET, Express) serve ``/ADMIN/x`` as
  ``/admin/x``, a case-sensitive one serves something else. With ``case: both``
  (the default) a request must satisfy the rule selected by the path as written AND
  the rule selected by the lower-cased path against lower-cased rules: when the two
  readings select different rules, the request gets a rule that demands what both
  demand. ``case: sensitive`` keeps only the first reading.
- ``path_regex`` runs on RE2 (linear time: no pattern can make a path cost seconds)
  and only on a path the header bounds already admitted.

The path itself is canonicalized (or refused) by
:func:`extauthz.pipeline.request.normalize_path` before any rule sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import re2  # type: ignore[import-untyped]

from extauthz.config import RuleConfig
from extauthz.errors import ConfigError, PolicyError, Reason, TokenError
from extauthz.pipeline import claims as claims_mod
from extauthz.pipeline.memo import Memo

DEFAULT = "default"
#: bound on memoized merged rules (combinations of up to four readings)
_MERGED_MAX = 4096
#: bound on memoized (method, path) -> rule lookups
_MATCHED_MAX = 4096


@dataclass(frozen=True, slots=True)
class Rule:
    """What a matched rule demands of a request (plus any scopes a route added)."""

    name: str
    anonymous: bool = False
    require_scopes: tuple[str, ...] = ()
    require_claims: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    #: each set, when non-empty, must contain the token's provider (a merged rule
    #: carries the sets of both readings)
    providers: tuple[frozenset[str], ...] = ()


@dataclass(frozen=True, slots=True)
class Matcher:
    """Where a rule applies, in one reading of the path (as written, or lower-cased)."""

    rule: Rule
    prefix: str | None = None
    exact: str | None = None
    regex: Any = None  # a compiled re2 pattern
    methods: frozenset[str] = frozenset()

    def matches(self, method: str, path: str) -> bool:
        """Whether the rule applies to ``method`` (upper-cased) and ``path`` (normalized)."""
        if self.methods and method not in self.methods:
            return False
        if self.exact is not None and path != self.exact:
            return False
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        return self.regex is None or self.regex.fullmatch(path) is not None


def _methods(config: RuleConfig) -> frozenset[str]:
    methods = {m.upper() for m in config.methods}
    if "GET" in methods:
        methods.add("HEAD")  # a GET handler answers HEAD everywhere
    return frozenset(methods)


def _regex(pattern: str, where: str, *, fold: bool) -> Any:
    options = re2.Options()
    options.case_sensitive = not fold
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        # RE2 refuses what it cannot run in linear time (backreferences, lookaround)
        raise ConfigError(where, "not a valid RE2 pattern") from exc


def compile_rule(config: RuleConfig) -> Rule:
    """Build a :class:`Rule` from its config.

    A rule that is both ``anonymous`` and requires scopes or claims is refused by
    config validation; should one get here anyway, it is not treated as anonymous
    (a missing token never gets more than a token lacking a scope).
    """
    anonymous = config.anonymous and not config.require_scopes and not config.require_claims
    return Rule(
        name=config.name,
        anonymous=anonymous,
        require_scopes=tuple(config.require_scopes),
        require_claims=tuple(config.require_claims),
        providers=(frozenset(config.providers),) if config.providers else (),
    )


def compile_matcher(rule: Rule, config: RuleConfig, where: str, *, fold: bool) -> Matcher:
    """The :class:`Matcher` of ``rule``; ``fold``: the lower-cased reading."""

    def cased(value: str | None) -> str | None:
        return value.lower() if fold and value is not None else value

    return Matcher(
        rule=rule,
        prefix=cased(config.path_prefix),
        exact=cased(config.path_exact),
        regex=_regex(config.path_regex, where, fold=fold) if config.path_regex else None,
        methods=_methods(config),
    )


def merge(first: Rule, second: Rule) -> Rule:
    """A rule demanding everything ``first`` and ``second`` demand."""
    scopes = first.require_scopes + tuple(
        s for s in second.require_scopes if s not in first.require_scopes
    )
    return Rule(
        name=f"{first.name}+{second.name}",
        anonymous=first.anonymous and second.anonymous,
        require_scopes=scopes,
        require_claims=first.require_claims + second.require_claims,
        providers=first.providers + second.providers,
    )


def split_scopes(value: str) -> tuple[str, ...]:
    """Scopes of a space-delimited list: split on U+0020 only (RFC 6749 §3.3).

    Any other whitespace or control character is part of a scope, so ``"read\\tadmin"``
    is one scope, never ``admin``. Empty items (doubled spaces) are dropped.
    """
    return tuple(s for s in value.split(" ") if s)


class Policy:
    """All rules of a config, compiled once."""

    def __init__(
        self, rules: Sequence[RuleConfig], case: Literal["both", "sensitive"] = "both"
    ) -> None:
        self.rules = tuple(compile_rule(r) for r in rules)
        self.by_name = {r.name: r for r in self.rules}
        self.default = Rule(name=DEFAULT)
        self.written = tuple(
            compile_matcher(rule, config, f"rules[{i}].path_regex", fold=False)
            for i, (rule, config) in enumerate(zip(self.rules, rules, strict=True))
        )
        self.folded: tuple[Matcher, ...] | None = None
        if case == "both":
            self.folded = tuple(
                compile_matcher(rule, config, f"rules[{i}].path_regex", fold=True)
                for i, (rule, config) in enumerate(zip(self.rules, rules, strict=True))
            )
        #: true when the lower-cased reading of a lower-case path cannot differ
        self._fold_is_identity = self.folded is None or all(
            f.regex is None and (f.prefix, f.exact) == (w.prefix, w.exact)
            for w, f in zip(self.written, self.folded, strict=True)
        )
        #: (method, *readings) -> rule, for the paths clients repeat (regexes run once)
        #: client-chosen paths: bounded, never a growing map
        self._matched: Memo[tuple[str, ...], Rule] = Memo(_MATCHED_MAX)
        #: the rules the readings selected (by identity) -> their merged rule
        self._merged: dict[tuple[int, ...], Rule] = {}

    def _first(self, matchers: tuple[Matcher, ...], method: str, path: str) -> Rule:
        for matcher in matchers:
            if matcher.matches(method, path):
                return matcher.rule
        return self.default

    def match(self, method: str, paths: Sequence[str]) -> Rule:
        """The rule for the readings of a normalized path (see
        :func:`~extauthz.pipeline.request.path_readings`), each also lower-cased when
        case is ``both``. When readings select different rules, the result demands
        what every one of them demands."""
        method = method.upper()
        memo_key = (method, *paths)
        known = self._matched.get(memo_key)
        if known is not None:
            return known
        return self._matched.keep(memo_key, self._match(method, paths))

    def _match(self, method: str, paths: Sequence[str]) -> Rule:
        found: list[Rule] = []
        for path in paths:
            rule = self._first(self.written, method, path)
            if rule not in found:
                found.append(rule)
            if self.folded is None:
                continue
            lowered = path.lower()
            if lowered == path and self._fold_is_identity:
                continue
            rule = self._first(self.folded, method, lowered)
            if rule not in found:
                found.append(rule)
        if len(found) == 1:
            return found[0]
        key = tuple(id(rule) for rule in found)  # rules live as long as the policy
        merged = self._merged.get(key)
        if merged is None:
            merged = found[0]
            for rule in found[1:]:
                merged = merge(merged, rule)
            if len(self._merged) < _MERGED_MAX:
                self._merged[key] = merged
        return merged

    def select(self, method: str, paths: Sequence[str], context: Mapping[str, str]) -> Rule:
        """The rule for this request. Raises PolicyError(unknown_rule) for a bad name.

        Scopes added by ``context_extensions`` make the token required: a missing token
        never gets more than a token lacking one of those scopes.
        """
        named = context.get("rule")
        if named:
            rule = self.by_name.get(named)
            if rule is None:
                raise PolicyError(Reason.UNKNOWN_RULE, f"context_extensions names rule {named!r}")
        else:
            rule = self.match(method, paths)
        extra = split_scopes(context.get("scopes") or "")
        if extra:
            merged = rule.require_scopes + tuple(s for s in extra if s not in rule.require_scopes)
            rule = replace(rule, require_scopes=merged, anonymous=False)
        return rule


def json_equal(value: Any, accepted: Any) -> bool:
    """Equality of two JSON scalars with their types: ``true``, ``"true"`` and ``1``
    differ; numbers compare exactly (Python compares int and float without rounding,
    so ``9007199254740993`` is not ``9007199254740992.0``)."""
    if isinstance(value, bool) or isinstance(accepted, bool):
        return value is accepted
    if isinstance(value, int | float) and isinstance(accepted, int | float):
        return value == accepted
    if isinstance(value, str) and isinstance(accepted, str):
        return value == accepted
    return False


def _claim_matches(value: Any, accepted: tuple[Any, ...]) -> bool:
    if isinstance(value, list):
        return any(
            json_equal(item, a) for item in value if not isinstance(item, list) for a in accepted
        )
    return any(json_equal(value, a) for a in accepted)


def authorize(rule: Rule, provider: str, granted: Mapping[str, Any]) -> None:
    """Raise unless the (valid) token's claims satisfy ``rule``."""
    for allowed in rule.providers:
        if provider not in allowed:
            raise TokenError(Reason.BAD_ISSUER, f"rule {rule.name} does not accept this provider")
    if rule.require_scopes:
        have = claims_mod.scopes(granted)
        missing = [s for s in rule.require_scopes if s not in have]
        if missing:
            raise PolicyError(
                Reason.INSUFFICIENT_SCOPE, "missing scopes", required=rule.require_scopes
            )
    for name, accepted in rule.require_claims:
        if not _claim_matches(claims_mod.lookup(granted, name), accepted):
            raise PolicyError(
                Reason.INSUFFICIENT_SCOPE, f"claim {name} not satisfied",
                required=rule.require_scopes,
            )  # fmt: skip
