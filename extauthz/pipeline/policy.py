"""Route rules (SPEC §5): which rule applies to a request, and whether a token meets it.

Rules are compiled once. The first rule whose path, method and matchers fit wins;
no match means the ``default`` rule: any valid token. Envoy's per-route
``context_extensions`` may name a rule (``rule``) and add required scopes
(``scopes``, space-separated).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extauthz.config import RuleConfig
from extauthz.errors import PolicyError, Reason, TokenError
from extauthz.pipeline import claims as claims_mod

DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule, plus any scopes a route added for this request."""

    name: str
    anonymous: bool = False
    require_scopes: tuple[str, ...] = ()
    require_claims: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    providers: frozenset[str] = frozenset()
    path_prefix: str | None = None
    path_exact: str | None = None
    path_regex: re.Pattern[str] | None = None
    methods: frozenset[str] = frozenset()

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to ``method`` and ``path`` (without query)."""
        if self.methods and method not in self.methods:
            return False
        if self.path_exact is not None and path != self.path_exact:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return not (self.path_regex is not None and not self.path_regex.fullmatch(path))


def compile_rule(config: RuleConfig) -> Rule:
    """Build a :class:`Rule` from its config."""
    return Rule(
        name=config.name,
        anonymous=config.anonymous,
        require_scopes=config.require_scopes,
        require_claims=config.require_claims,
        providers=frozenset(config.providers),
        path_prefix=config.path_prefix,
        path_exact=config.path_exact,
        path_regex=re.compile(config.path_regex) if config.path_regex else None,
        methods=frozenset(config.methods),
    )


class Policy:
    """All rules of a config, compiled once."""

    def __init__(self, rules: Sequence[RuleConfig]) -> None:
        self.rules = tuple(compile_rule(r) for r in rules)
        self.by_name = {r.name: r for r in self.rules}
        self.default = Rule(name=DEFAULT)

    def select(self, method: str, path: str, context: Mapping[str, str]) -> Rule:
        """The rule for this request. Raises PolicyError(unknown_rule) for a bad name."""
        named = context.get("rule")
        if named:
            rule = self.by_name.get(named)
            if rule is None:
                raise PolicyError(Reason.UNKNOWN_RULE, f"context_extensions names rule {named!r}")
        else:
            rule = next((r for r in self.rules if r.matches(method, path)), self.default)
        extra = tuple((context.get("scopes") or "").split())
        if extra:
            merged = rule.require_scopes + tuple(s for s in extra if s not in rule.require_scopes)
            rule = Rule(
                name=rule.name, anonymous=rule.anonymous, require_scopes=merged,
                require_claims=rule.require_claims, providers=rule.providers,
            )  # fmt: skip
        return rule


def _claim_matches(value: Any, accepted: tuple[Any, ...]) -> bool:
    if isinstance(value, list):
        return any(_claim_matches(item, accepted) for item in value)
    if isinstance(value, bool) or any(isinstance(a, bool) for a in accepted):
        return any(value is a for a in accepted)
    return value in accepted


def authorize(rule: Rule, provider: str, granted: Mapping[str, Any]) -> None:
    """Raise unless the (valid) token's claims satisfy ``rule``."""
    if rule.providers and provider not in rule.providers:
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
