"""A small PromQL parser and label checker for the dashboard tests.

Only what a dashboard query needs: vector selectors with matchers and ranges,
function calls, aggregations with ``by``/``without``, binary operators with
``on``/``ignoring``/``group_left``/``group_right``, numbers, strings, parentheses,
subqueries, ``offset`` and ``@``. Anything else is a parse error, which the tests
report: a query the checker cannot read is a query nobody checked.

:func:`check` walks the tree with a catalog of series (name -> labels, built from
``extauthz/metrics.py``) and returns every problem it finds: an unknown series, a
matcher or grouping label the series does not carry, a ``legendFormat`` label the
result does not have, operands whose label sets can never match. It tracks, for each
sub-expression, the labels its series can carry, so ``sum by (le) (...)`` outside a
``sum by (decision) (...)`` is caught just like a misspelt metric name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# -- lexer --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_]))
  | (?P<number>0x[0-9a-fA-F]+|(?:[0-9]*\.)?[0-9]+(?:[eE][-+]?[0-9]+)?
               |(?:[Ii]nf|NaN)(?![A-Za-z0-9_:]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)

#: Grafana's built-in interval variables, replaced by a duration before parsing
GRAFANA_INTERVALS = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{__(?:rate_interval|interval|range)\}"
)


class PromQLError(ValueError):
    """The expression is not (the supported subset of) PromQL."""


@dataclass(frozen=True)
class Token:
    """One lexeme: its class and text."""

    kind: str
    text: str


def tokenize(expr: str) -> list[Token]:
    """Lexemes of ``expr``; Grafana interval variables become ``5m`` first."""
    expr = GRAFANA_INTERVALS.sub("5m", expr)
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"unexpected {expr[pos : pos + 20]!r} at {pos}")
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append(Token(kind, match.group()))
    return tokens


# -- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    """``label op "value"``."""

    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    """``name{matchers}``, optionally ``[range]``."""

    name: str
    matchers: tuple[Matcher, ...]
    range: bool = False


@dataclass(frozen=True)
class Number:
    """A scalar literal."""

    value: float


@dataclass(frozen=True)
class String:
    """A string literal (function arguments such as label_replace's)."""

    value: str


@dataclass(frozen=True)
class Call:
    """``function(args)``."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregation:
    """``op [by|without (labels)] ([param,] expr)``."""

    op: str
    expr: Node
    param: Node | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False
    has_grouping: bool = False


@dataclass(frozen=True)
class Binary:
    """``lhs op [bool] [on|ignoring (labels)] [group_left|group_right (labels)] rhs``."""

    op: str
    lhs: Node
    rhs: Node
    matching: tuple[str, ...] | None = None  # on/ignoring labels, None: no clause
    ignoring: bool = False
    group: str = ""  # "", "left" or "right"
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subquery:
    """``expr[range:step]``: a range vector over an instant expression."""

    expr: Node


@dataclass(frozen=True)
class Unary:
    """``-expr``."""

    expr: Node


Node = Selector | Number | String | Call | Aggregation | Binary | Subquery | Unary

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})  # fmt: skip
#: aggregations taking a parameter before the vector
PARAMETRIC = frozenset({"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
#: aggregations whose result keeps every input label (they select series)
SELECTING = frozenset({"bottomk", "topk", "limitk", "limit_ratio"})
#: binary operators by precedence, lowest first; ^ is right-associative
PRECEDENCE: tuple[frozenset[str], ...] = (
    frozenset({"or"}),
    frozenset({"and", "unless"}),
    frozenset({"==", "!=", "<=", "<", ">=", ">"}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%", "atan2"}),
    frozenset({"^"}),
)
SET_OPERATORS = frozenset({"and", "or", "unless"})


class _Parser:
    def __init__(self, expr: str) -> None:
        self.tokens = tokenize(expr)
        self.pos = 0

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise PromQLError("unexpected end of expression")
        self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.text == text and token.kind in ("op", "ident"):
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        token = self.next()
        if token.text != text:
            raise PromQLError(f"expected {text!r}, got {token.text!r}")

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise PromQLError(f"trailing {self.peek()!r}")
        return node

    def binary(self, level: int) -> Node:
        if level == len(PRECEDENCE):
            return self.unary()
        lhs = self.binary(level + 1)
        while (token := self.peek()) is not None and token.text in PRECEDENCE[level]:
            self.next()
            self.accept("bool")
            matching, ignoring, group, include = self.vector_matching()
            # ^ is right-associative: its right operand is parsed at the same level
            rhs = self.binary(level if token.text == "^" else level + 1)
            lhs = Binary(token.text, lhs, rhs, matching, ignoring, group, include)
        return lhs

    def vector_matching(self) -> tuple[tuple[str, ...] | None, bool, str, tuple[str, ...]]:
        matching: tuple[str, ...] | None = None
        ignoring = False
        group = ""
        include: tuple[str, ...] = ()
        token = self.peek()
        if token is not None and token.text in ("on", "ignoring"):
            self.next()
            ignoring = token.text == "ignoring"
            matching = self.labels()
            token = self.peek()
            if token is not None and token.text in ("group_left", "group_right"):
                self.next()
                group = token.text.removeprefix("group_")
                next_token = self.peek()
                if next_token is not None and next_token.text == "(":
                    include = self.labels()
        return matching, ignoring, group, include

    def labels(self) -> tuple[str, ...]:
        self.expect("(")
        names: list[str] = []
        while not self.accept(")"):
            token = self.next()
            if token.kind != "ident":
                raise PromQLError(f"expected a label name, got {token.text!r}")
            names.append(token.text)
            if not self.accept(","):
                self.expect(")")
                break
        return tuple(names)

    def unary(self) -> Node:
        if self.accept("-"):
            return Unary(self.unary())
        self.accept("+")
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.accept("["):
                duration = self.next()
                if duration.kind != "duration":
                    raise PromQLError(f"expected a duration, got {duration.text!r}")
                if self.accept(":"):
                    step = self.peek()
                    if step is not None and step.kind == "duration":
                        self.next()
                    self.expect("]")
                    node = Subquery(node)
                    continue
                self.expect("]")
                if not isinstance(node, Selector) or node.range:
                    raise PromQLError("a range applies to a vector selector only")
                node = Selector(node.name, node.matchers, range=True)
            elif self.accept("offset"):
                self.accept("-")
                if self.next().kind != "duration":
                    raise PromQLError("offset needs a duration")
            elif self.accept("@"):
                token = self.next()
                if token.text in ("start", "end"):
                    self.expect("(")
                    self.expect(")")
                elif token.kind != "number":
                    raise PromQLError("@ needs a timestamp")
            else:
                return node

    def primary(self) -> Node:
        token = self.next()
        if token.kind == "number":
            return Number(float(token.text))
        if token.kind == "duration":
            raise PromQLError(f"a duration outside a range: {token.text}")
        if token.kind == "string":
            return String(token.text[1:-1])
        if token.text == "(":
            node = self.binary(0)
            self.expect(")")
            return node
        if token.text == "{":
            self.pos -= 1
            return Selector("", self.matchers())
        if token.kind != "ident":
            raise PromQLError(f"unexpected {token.text!r}")
        if token.text in AGGREGATIONS:
            return self.aggregation(token.text)
        following = self.peek()
        if following is not None and following.text == "(":
            return Call(token.text, self.arguments())
        matchers = self.matchers() if following is not None and following.text == "{" else ()
        return Selector(token.text, matchers)

    def arguments(self) -> tuple[Node, ...]:
        self.expect("(")
        args: list[Node] = []
        while not self.accept(")"):
            args.append(self.binary(0))
            if not self.accept(","):
                self.expect(")")
                break
        return tuple(args)

    def aggregation(self, op: str) -> Aggregation:
        grouping: tuple[str, ...] = ()
        without = has_grouping = False
        token = self.peek()
        if token is not None and token.text in ("by", "without"):
            self.next()
            without, has_grouping, grouping = token.text == "without", True, self.labels()
        args = self.arguments()
        token = self.peek()
        if token is not None and token.text in ("by", "without"):
            if has_grouping:
                raise PromQLError(f"{op}: two grouping clauses")
            self.next()
            without, has_grouping, grouping = token.text == "without", True, self.labels()
        expected = 2 if op in PARAMETRIC else 1
        if len(args) != expected:
            raise PromQLError(f"{op} takes {expected} argument(s), got {len(args)}")
        param = args[0] if expected == 2 else None
        return Aggregation(op, args[-1], param, grouping, without, has_grouping)

    def matchers(self) -> tuple[Matcher, ...]:
        self.expect("{")
        found: list[Matcher] = []
        while not self.accept("}"):
            label = self.next()
            if label.kind not in ("ident", "string"):
                raise PromQLError(f"expected a label name, got {label.text!r}")
            op = self.next()
            if op.text not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"expected a matcher operator, got {op.text!r}")
            value = self.next()
            if value.kind != "string":
                raise PromQLError(f"matcher values are strings, got {value.text!r}")
            name = label.text if label.kind == "ident" else label.text[1:-1]
            found.append(Matcher(name, op.text, value.text[1:-1]))
            if not self.accept(","):
                self.expect("}")
                break
        return tuple(found)


def parse(expr: str) -> Node:
    """The syntax tree of ``expr`` (Grafana's ``$__rate_interval`` & co. allowed)."""
    return _Parser(expr).parse()


# -- label analysis -----------------------------------------------------------------------

#: functions whose result carries the labels of their (one vector) argument
LABEL_PRESERVING = frozenset({
    "rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes",
    "abs", "ceil", "floor", "round", "exp", "ln", "log2", "log10", "sqrt", "sgn",
    "clamp", "clamp_min", "clamp_max", "predict_linear", "holt_winters",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "present_over_time", "stddev_over_time", "stdvar_over_time",
    "quantile_over_time", "timestamp", "sort", "sort_desc",
})  # fmt: skip
#: functions that read a range vector (besides the `*_over_time` family)
RANGE_FUNCTIONS = frozenset({"rate", "irate", "increase", "delta", "idelta", "deriv", "resets",
                             "changes", "predict_linear", "holt_winters"})  # fmt: skip


@dataclass
class Report:
    """What a query reads and what is wrong with it."""

    series: set[str] = field(default_factory=set)
    matchers: list[tuple[str, Matcher]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


#: the labels of an expression's result: None for a scalar
Labels = frozenset[str] | None


def _vector(labels: Labels, what: str, report: Report) -> frozenset[str]:
    if labels is None:
        report.problems.append(f"{what}: needs an instant vector, got a scalar")
        return frozenset()
    return labels


def _labels(node: Node, catalog: Mapping[str, frozenset[str]], report: Report) -> Labels:
    if isinstance(node, Number | String):
        return None
    if isinstance(node, Unary):
        return _labels(node.expr, catalog, report)
    if isinstance(node, Subquery):
        return _labels(node.expr, catalog, report)
    if isinstance(node, Selector):
        return _selector(node, catalog, report)
    if isinstance(node, Call):
        return _call(node, catalog, report)
    if isinstance(node, Aggregation):
        return _aggregation(node, catalog, report)
    return _binary(node, catalog, report)


def _selector(node: Selector, catalog: Mapping[str, frozenset[str]], report: Report) -> Labels:
    names = {m.value for m in node.matchers if m.label == "__name__" and m.op == "="}
    name = node.name or next(iter(names), "")
    if not name:
        report.problems.append("a selector without a metric name")
        return frozenset()
    report.series.add(name)
    labels = catalog.get(name)
    if labels is None:
        report.problems.append(f"{name}: not a series extauthz exports")
        return frozenset()
    for matcher in node.matchers:
        report.matchers.append((name, matcher))
        if matcher.label != "__name__" and matcher.label not in labels:
            report.problems.append(f"{name}: matcher on {matcher.label!r}, which it has not")
    return labels


def _call(node: Call, catalog: Mapping[str, frozenset[str]], report: Report) -> Labels:
    args = [_labels(arg, catalog, report) for arg in node.args]
    vectors = [
        (arg, labels) for arg, labels in zip(node.args, args, strict=True) if labels is not None
    ]
    takes_range = node.name in RANGE_FUNCTIONS or node.name.endswith("_over_time")
    if takes_range and not any(_is_range(arg) for arg in node.args):
        report.problems.append(f"{node.name}: needs a range vector")
    if node.name in LABEL_PRESERVING:
        if len(vectors) != 1:
            report.problems.append(f"{node.name}: expects one vector argument")
            return frozenset()
        return vectors[0][1]
    if node.name == "histogram_quantile":
        if len(node.args) != 2 or args[0] is not None:
            report.problems.append("histogram_quantile(φ, buckets): wrong arguments")
            return frozenset()
        buckets = _vector(args[1], "histogram_quantile", report)
        if "le" not in buckets:
            report.problems.append("histogram_quantile: its argument has no `le` label")
        return buckets - {"le"}
    if node.name == "label_replace":
        if len(node.args) != 5 or not all(isinstance(a, String) for a in node.args[1:]):
            report.problems.append(
                "label_replace(v, dst, replacement, src, regex): wrong arguments"
            )
            return frozenset()
        labels = _vector(args[0], "label_replace", report)
        dst, _, src, _ = (a.value for a in node.args[1:] if isinstance(a, String))
        if src and src not in labels:
            report.problems.append(f"label_replace: source label {src!r} is not on its argument")
        return labels | {dst}
    if node.name in ("vector", "absent", "absent_over_time"):
        return frozenset()
    if node.name in ("scalar", "time"):
        return None
    report.problems.append(f"{node.name}: function not known to the checker")
    return frozenset()


def _is_range(node: Node) -> bool:
    return isinstance(node, Subquery) or (isinstance(node, Selector) and node.range)


def _aggregation(
    node: Aggregation, catalog: Mapping[str, frozenset[str]], report: Report
) -> Labels:
    if node.param is not None:
        _labels(node.param, catalog, report)
    inner = _vector(_labels(node.expr, catalog, report), node.op, report)
    if _is_range(node.expr):
        report.problems.append(f"{node.op}: aggregates an instant vector, got a range")
    for label in node.grouping:
        if label not in inner:
            clause = "without" if node.without else "by"
            report.problems.append(
                f"{node.op} {clause} ({label}): {label!r} is not on its argument"
            )
    if node.op in SELECTING:
        return inner
    if node.op == "count_values" and isinstance(node.param, String):
        extra = frozenset({node.param.value})
    else:
        extra = frozenset()
    if node.without:
        return (inner - set(node.grouping)) | extra
    return frozenset(node.grouping) | extra


def _binary(node: Binary, catalog: Mapping[str, frozenset[str]], report: Report) -> Labels:
    lhs = _labels(node.lhs, catalog, report)
    rhs = _labels(node.rhs, catalog, report)
    if lhs is None or rhs is None:
        if node.op in SET_OPERATORS:
            report.problems.append(f"{node.op}: set operators need vectors on both sides")
        return rhs if lhs is None else lhs
    if node.matching is not None:
        for side, labels in (("left", lhs), ("right", rhs)):
            for label in node.matching if not node.ignoring else ():
                if label not in labels:
                    report.problems.append(f"on ({label}): {label!r} is not on the {side} side")
        key_lhs = frozenset(node.matching) if not node.ignoring else lhs - set(node.matching)
        key_rhs = frozenset(node.matching) if not node.ignoring else rhs - set(node.matching)
    else:
        key_lhs, key_rhs = lhs, rhs
    if node.op in SET_OPERATORS:
        return lhs | rhs if node.op == "or" else lhs
    if node.group == "left":
        missing = set(node.include) - rhs
        if missing:
            report.problems.append(f"group_left{tuple(sorted(missing))}: not on the right side")
        return lhs | set(node.include)
    if node.group == "right":
        missing = set(node.include) - lhs
        if missing:
            report.problems.append(f"group_right{tuple(sorted(missing))}: not on the left side")
        return rhs | set(node.include)
    if key_lhs != key_rhs:
        report.problems.append(
            f"{node.op}: one-to-one match of {sorted(key_lhs)} with {sorted(key_rhs)} never "
            "pairs series (add on()/ignoring())"
        )
    return lhs


def check(expr: str, catalog: Mapping[str, frozenset[str]]) -> tuple[Labels, Report]:
    """Labels of ``expr``'s result and a report of the series/labels it uses."""
    report = Report()
    try:
        tree = parse(expr)
    except PromQLError as exc:
        report.problems.append(f"does not parse: {exc}")
        return frozenset(), report
    return _labels(tree, catalog, report), report


def walk(node: Node) -> Iterator[Node]:
    """Every node of a tree, depth first."""
    yield node
    children: tuple[Node | None, ...] = ()
    if isinstance(node, Unary | Subquery):
        children = (node.expr,)
    elif isinstance(node, Call):
        children = node.args
    elif isinstance(node, Aggregation):
        children = (node.param, node.expr)
    elif isinstance(node, Binary):
        children = (node.lhs, node.rhs)
    for child in children:
        if child is not None:
            yield from walk(child)
