"""The policy condition language: a tiny parsed grammar, never ``eval``.

Text form::

    ip.ratio_login_failed.10m >= 0.8 and (score.gbt >= threshold.gbt or not account.age_s > 86400)

Grammar (``and`` binds tighter than ``or``; comparisons do not chain)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" expr ")" | "true" | "false" | operand OP operand
    operand := NUMBER | NAME | 'attributes["' KEY '"]' | STRING        OP := < <= > >= == !=

A ``NAME`` is a feature name, ``score.<model>`` (that model's score for this event) or
``threshold.<model>`` (the model card's threshold, fixed when the policy is compiled).
``attributes["plan"]`` is the event's platform field ``Event.attributes["plan"]``: compared with a
``"string"`` (``==``/``!=`` only) as text, with a number as a number (a value that is not a number
compares false). A missing attribute makes every comparison false, like a missing score.

Structured form (YAML mappings), the same tree spelled out::

    all: [{feature: ip.ratio_login_failed.10m, op: ">=", value: 0.8}, {score: gbt, op: ">=", value: 0.9},
          {attribute: plan, op: "==", value: free}]
    any: [...]      not: {...}      expr: "<text form>"

Comparisons involving a missing score are false (NaN semantics), so a rule never fires on a model
that did not run; note that ``not`` of such a comparison is true.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

SCORE_PREFIX = "score."
THRESHOLD_PREFIX = "threshold."

CompareOp = Literal["<", "<=", ">", ">=", "==", "!="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r'|(?P<attr>attributes\[\s*"(?:[^"\\]|\\.)*"\s*\])'
    r'|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.:]*)"
    r"|(?P<op><=|>=|==|!=|<|>)"
    r"|(?P<paren>[()])"
    r")"
)
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*")


class ConditionSyntaxError(ValueError):
    """A condition that does not parse; the message says where."""


# ---- AST ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Num:
    value: float

    def text(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class Ref:
    """A name: a feature, ``score.<model>`` or ``threshold.<model>``."""

    name: str

    @property
    def kind(self) -> Literal["feature", "score", "threshold"]:
        if self.name.startswith(SCORE_PREFIX):
            return "score"
        if self.name.startswith(THRESHOLD_PREFIX):
            return "threshold"
        return "feature"

    @property
    def target(self) -> str:
        """The feature name, or the model name for scores and thresholds."""
        kind = self.kind
        if kind == "score":
            return self.name[len(SCORE_PREFIX) :]
        if kind == "threshold":
            return self.name[len(THRESHOLD_PREFIX) :]
        return self.name

    def text(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Attr:
    """``attributes["key"]``: one of the event's platform fields (``Event.attributes``)."""

    key: str

    def text(self) -> str:
        return f"attributes[{json.dumps(self.key)}]"


@dataclass(frozen=True, slots=True)
class Str:
    """A string literal (compared with an attribute)."""

    value: str

    def text(self) -> str:
        return json.dumps(self.value)


Operand = Num | Ref | Attr | Str


@dataclass(frozen=True, slots=True)
class Compare:
    left: Operand
    op: CompareOp
    right: Operand

    def text(self) -> str:
        return f"{self.left.text()} {self.op} {self.right.text()}"


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Node, ...]

    def text(self) -> str:
        return "(" + " and ".join(i.text() for i in self.items) + ")"


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Node, ...]

    def text(self) -> str:
        return "(" + " or ".join(i.text() for i in self.items) + ")"


@dataclass(frozen=True, slots=True)
class Not:
    item: Node

    def text(self) -> str:
        return f"not {self.item.text()}"


@dataclass(frozen=True, slots=True)
class Const:
    value: bool

    def text(self) -> str:
        return "true" if self.value else "false"


Node = Compare | All | AnyOf | Not | Const


def refs(node: Node) -> list[Ref]:
    """Every name the condition reads, in order of appearance."""
    if isinstance(node, Compare):
        return [o for o in (node.left, node.right) if isinstance(o, Ref)]
    if isinstance(node, All | AnyOf):
        return [r for item in node.items for r in refs(item)]
    if isinstance(node, Not):
        return refs(node.item)
    return []


# ---- text parser -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num | name | op | paren | kw | end
    text: str
    pos: int


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while True:
        while pos < len(src) and src[pos].isspace():
            pos += 1
        if pos >= len(src):
            break
        m = _TOKEN.match(src, pos)
        if m is None or m.end() == pos or m.lastgroup is None:
            raise ConditionSyntaxError(f"unexpected character {src[pos]!r} at column {pos + 1}")
        kind = m.lastgroup
        text = m.group(kind)
        start = m.start(kind)
        if kind == "name" and text in _KEYWORDS:
            kind = "kw"
        toks.append(_Tok(kind, text, start))
        pos = m.end()
    toks.append(_Tok("end", "", len(src)))
    return toks


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok, expected: str) -> ConditionSyntaxError:
        found = repr(tok.text) if tok.kind != "end" else "end of condition"
        return ConditionSyntaxError(f"expected {expected} at column {tok.pos + 1}, found {found}")

    def parse(self) -> Node:
        node = self.parse_or()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(tok, "'and', 'or' or end of condition")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else All(tuple(items))

    def parse_not(self) -> Node:
        tok = self.peek()
        if tok.kind == "kw" and tok.text == "not":
            self.take()
            return Not(self.parse_not())
        if tok.kind == "kw" and tok.text in ("true", "false"):
            self.take()
            return Const(tok.text == "true")
        if tok.kind == "paren" and tok.text == "(":
            self.take()
            node = self.parse_or()
            close = self.take()
            if close.kind != "paren" or close.text != ")":
                raise self.fail(close, "')'")
            return node
        left = self.parse_operand()
        op = self.take()
        if op.kind != "op":
            raise self.fail(op, "a comparison operator (< <= > >= == !=)")
        right = self.parse_operand()
        nxt = self.peek()
        if nxt.kind == "op":
            raise ConditionSyntaxError(
                f"comparisons do not chain (column {nxt.pos + 1}); write 'a < b and b < c'"
            )
        problem = _string_problem(left, op.text, right)
        if problem:
            raise ConditionSyntaxError(f"{problem} (column {op.pos + 1})")
        return Compare(left, op.text, right)  # type: ignore[arg-type]

    def parse_operand(self) -> Operand:
        tok = self.take()
        if tok.kind == "num":
            return Num(float(tok.text))
        if tok.kind == "name":
            return Ref(tok.text)
        if tok.kind == "attr":
            return Attr(json.loads(tok.text[tok.text.index('"') : tok.text.rindex('"') + 1]))
        if tok.kind == "str":
            return Str(json.loads(tok.text))
        raise self.fail(tok, "a number or a name")


def _string_problem(left: Operand, op: str, right: Operand) -> str:
    """Why a comparison involving a string literal is not allowed ("" if it is)."""
    if not isinstance(left, Str) and not isinstance(right, Str):
        return ""
    if op not in ("==", "!="):
        return f"a string compares with == or != only, not {op}"
    other = right if isinstance(left, Str) else left
    if not isinstance(other, Attr):
        return 'a string compares with an attribute (attributes["key"]) only'
    return ""


def parse_text(src: str) -> Node:
    """Parse the text form; raises ``ConditionSyntaxError`` naming the column."""
    if not src.strip():
        raise ConditionSyntaxError("condition is empty")
    return _Parser(src).parse()


# ---- structured form ---------------------------------------------------------------------------


def _operand(value: Any, where: str) -> Operand:
    if isinstance(value, bool):
        raise ConditionSyntaxError(f"{where}: expected a number or a name, got a boolean")
    if isinstance(value, int | float):
        return Num(float(value))
    if isinstance(value, str) and NAME_PATTERN.fullmatch(value) and value not in _KEYWORDS:
        return Ref(value)
    raise ConditionSyntaxError(f"{where}: expected a number or a name, got {value!r}")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse_structured(value: Any, where: str = "") -> Node:
    """Parse the YAML form (str, or a mapping with one of all/any/not/expr/feature/score).

    ``where`` is the path of ``value`` inside the condition, used in error messages.
    """
    if isinstance(value, str):
        try:
            return parse_text(value)
        except ConditionSyntaxError as exc:
            raise ConditionSyntaxError(f"{where}: {exc}" if where else str(exc)) from None
    if isinstance(value, bool):
        return Const(value)
    if not isinstance(value, Mapping):
        raise ConditionSyntaxError(
            f"{where or 'condition'}: expected a string or a mapping, got {type(value).__name__}"
        )
    keys = set(value)
    if keys in ({"all"}, {"any"}):
        key = next(iter(keys))
        items = value[key]
        if not isinstance(items, list) or not items:
            raise ConditionSyntaxError(f"{_at(where, key)}: expected a non-empty list of conditions")
        parsed = tuple(parse_structured(item, f"{_at(where, key)}[{i}]") for i, item in enumerate(items))
        return All(parsed) if key == "all" else AnyOf(parsed)
    if keys == {"not"}:
        return Not(parse_structured(value["not"], _at(where, "not")))
    if keys == {"expr"}:
        return parse_structured(str(value["expr"]), _at(where, "expr"))
    if "attribute" in keys:
        expected = {"attribute", "op", "value"}
        if keys != expected:
            raise ConditionSyntaxError(
                f"{where or 'attribute'}: an attribute comparison has keys {sorted(expected)}; got {sorted(keys)}"
            )
        key, op, raw = value["attribute"], value["op"], value["value"]
        if not isinstance(key, str) or not key:
            raise ConditionSyntaxError(f"{_at(where, 'attribute')}: expected a key, got {key!r}")
        if op not in _OPS:
            raise ConditionSyntaxError(f"{_at(where, 'op')}: expected one of {list(_OPS)}, got {op!r}")
        right: Operand = Str(raw) if isinstance(raw, str) else _operand(raw, _at(where, "value"))
        problem = _string_problem(Attr(key), op, right)
        if problem:
            raise ConditionSyntaxError(f"{_at(where, 'op')}: {problem}")
        return Compare(Attr(key), op, right)
    for kind in ("feature", "score"):
        if kind in keys:
            expected = {kind, "op", "value"}
            if keys != expected:
                extra = sorted(keys - expected)
                missing = sorted(expected - keys)
                detail = f"unknown keys {extra}" if extra else f"missing keys {missing}"
                raise ConditionSyntaxError(
                    f"{where or kind}: a {kind} comparison has keys {sorted(expected)}; {detail}"
                )
            name = value[kind]
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                raise ConditionSyntaxError(f"{_at(where, kind)}: expected a name, got {name!r}")
            op = value["op"]
            if op not in _OPS:
                raise ConditionSyntaxError(f"{_at(where, 'op')}: expected one of {list(_OPS)}, got {op!r}")
            left = Ref(SCORE_PREFIX + name if kind == "score" else name)
            return Compare(left, op, _operand(value["value"], _at(where, "value")))
    raise ConditionSyntaxError(
        f"{where or 'condition'}: expected one of the keys all, any, not, expr, feature, score, attribute; got {sorted(map(str, keys))}"
    )


# ---- compilation -------------------------------------------------------------------------------

Values = Sequence[float] | npt.NDArray[np.floating[Any]]
Scores = Mapping[str, float]
Attributes = Mapping[str, str]


class Predicate(Protocol):
    """``predicate(values, scores[, attributes])``: a compiled condition (no attributes = none)."""

    def __call__(self, v: Values, s: Scores, a: Attributes = ..., /) -> bool: ...


_Getter = Callable[[Values, Scores, Attributes], Any]
_NAN = math.nan
_NO_ATTRS: Attributes = {}


def _attr_number(attrs: Attributes, key: str) -> float:
    raw = attrs.get(key)
    if raw is None:
        return _NAN
    try:
        return float(raw)
    except ValueError:
        return _NAN


def _getter(
    operand: Operand, feature_index: Mapping[str, int], thresholds: Mapping[str, float]
) -> float | _Getter:
    """A constant, or a function reading the operand from (values, scores, attributes)."""
    if isinstance(operand, Num):
        return operand.value
    if isinstance(operand, Str):  # only ever compared by _string_compare
        raise AssertionError("string literal outside a string comparison")
    if isinstance(operand, Attr):
        key = operand.key
        return lambda _v, _s, a: _attr_number(a, key)
    kind = operand.kind
    target = operand.target
    if kind == "threshold":
        return float(thresholds[target])
    if kind == "score":
        return lambda _v, s, _a: s.get(target, _NAN)
    index = feature_index[operand.name]
    return lambda v, _s, _a: v[index]


def _string_compare(node: Compare) -> Predicate:
    """``attributes["k"] == "text"`` (either side): false when the attribute is missing."""
    attr, lit = (node.left, node.right) if isinstance(node.left, Attr) else (node.right, node.left)
    assert isinstance(attr, Attr) and isinstance(lit, Str)
    key, text = attr.key, lit.value
    if node.op == "==":
        return lambda _v, _s, a=_NO_ATTRS: a.get(key) == text
    return lambda _v, _s, a=_NO_ATTRS: (got := a.get(key)) is not None and got != text


_FLIPPED: dict[str, str] = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
"""``c OP x`` is ``x FLIPPED[OP] c`` (NaN compares false either way, and ``!=`` true)."""


def _feature_vs(op: str, i: int, c: float) -> Predicate:
    """``values[i] OP c`` in one closure: most of a policy's comparisons, evaluated for every event."""
    if op == ">=":
        return lambda v, _s, _a=_NO_ATTRS: v[i] >= c
    if op == "<=":
        return lambda v, _s, _a=_NO_ATTRS: v[i] <= c
    if op == ">":
        return lambda v, _s, _a=_NO_ATTRS: v[i] > c
    if op == "<":
        return lambda v, _s, _a=_NO_ATTRS: v[i] < c
    if op == "==":
        return lambda v, _s, _a=_NO_ATTRS: v[i] == c
    return lambda v, _s, _a=_NO_ATTRS: v[i] != c


def _score_vs(op: str, model: str, c: float) -> Predicate:
    """``scores[model] OP c`` (a missing score is NaN: false, as in ``_getter``)."""
    fn = _OPS[op]
    if op == ">=":
        return lambda _v, s, _a=_NO_ATTRS: s.get(model, _NAN) >= c
    return lambda _v, s, _a=_NO_ATTRS: fn(s.get(model, _NAN), c)


def _ref_vs_const(ref: Operand, op: str, c: float, feature_index: Mapping[str, int]) -> Predicate | None:
    """The specialised closure for a feature or score compared with a constant, else None."""
    if not isinstance(ref, Ref) or ref.kind == "threshold":
        return None
    if ref.kind == "score":
        return _score_vs(op, ref.target, c)
    return _feature_vs(op, feature_index[ref.name], c)


def _joined(parts: tuple[Predicate, ...], every: bool) -> Predicate:
    """``and`` (``every``) or ``or`` of ``parts``; two or three terms get a closure each, more a loop
    (not ``all(<generator>)``: no generator per call)."""
    if len(parts) == 2:
        p0, p1 = parts
        if every:
            return lambda v, s, a=_NO_ATTRS: p0(v, s, a) and p1(v, s, a)
        return lambda v, s, a=_NO_ATTRS: p0(v, s, a) or p1(v, s, a)
    if len(parts) == 3:
        q0, q1, q2 = parts
        if every:
            return lambda v, s, a=_NO_ATTRS: q0(v, s, a) and q1(v, s, a) and q2(v, s, a)
        return lambda v, s, a=_NO_ATTRS: q0(v, s, a) or q1(v, s, a) or q2(v, s, a)

    def joined(v: Values, s: Scores, a: Attributes = _NO_ATTRS) -> bool:
        for p in parts:  # the first term that is not `every` decides
            if bool(p(v, s, a)) is not every:
                return not every
        return every

    return joined


def compile_condition(
    node: Node, feature_index: Mapping[str, int], thresholds: Mapping[str, float]
) -> Predicate:
    """Turn the tree into nested closures (``predicate(values, scores, attributes)``); names must have
    been checked beforehand. The common shapes (a feature or score against a constant, two or three
    terms joined) get closures of their own: the decider runs every rule of an event's type per event."""
    if isinstance(node, Const):
        result = node.value
        return lambda _v, _s, _a=_NO_ATTRS: result
    if isinstance(node, Compare) and (isinstance(node.left, Str) or isinstance(node.right, Str)):
        return _string_compare(node)
    if isinstance(node, Compare):
        fn = _OPS[node.op]
        left = _getter(node.left, feature_index, thresholds)
        right = _getter(node.right, feature_index, thresholds)
        if isinstance(left, float):
            lconst = left
            if isinstance(right, float):
                folded = fn(lconst, right)
                return lambda _v, _s, _a=_NO_ATTRS: folded
            fast = _ref_vs_const(node.right, _FLIPPED[node.op], lconst, feature_index)
            if fast is not None:
                return fast
            rget = right
            return lambda v, s, a=_NO_ATTRS: fn(lconst, rget(v, s, a))
        lget = left
        if isinstance(right, float):
            rconst = right
            fast = _ref_vs_const(node.left, node.op, rconst, feature_index)
            if fast is not None:
                return fast
            return lambda v, s, a=_NO_ATTRS: fn(lget(v, s, a), rconst)
        rg = right
        return lambda v, s, a=_NO_ATTRS: fn(lget(v, s, a), rg(v, s, a))
    if isinstance(node, Not):
        inner = compile_condition(node.item, feature_index, thresholds)
        return lambda v, s, a=_NO_ATTRS: not inner(v, s, a)
    parts = tuple(compile_condition(i, feature_index, thresholds) for i in node.items)
    if len(parts) == 1:
        return parts[0]
    return _joined(parts, isinstance(node, All))
