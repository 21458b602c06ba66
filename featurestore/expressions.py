"""A small, safe expression language for feature filters (`where:`) and derived features (`expr:`).

Text is parsed with `ast.parse` (which only builds a syntax tree: nothing is evaluated) into an
allow-listed tree of our own; anything else (attributes, subscripts, lambdas, `**`, calls of
anything but the four functions below, comprehensions, ...) is refused with its column. The
tree is then evaluated by our own code, one value at a time (`Expression.value`) or over
columns with numpy (`Expression.vector`), with identical results (tested).

Values are numbers (IEEE doubles; an event's ints and booleans become doubles), strings, or
*missing*. The semantics are SQL's three-valued logic:

* `+ - * /` need two numbers; anything else, a division by zero or a result beyond the double
  range gives missing;
* `== != < <= > >=` compare two numbers or two strings (by code point); a missing operand gives
  missing; a number against a string is unequal (`==` false, `!=` true, orderings missing);
  chains (`0 < x <= 10`) mean `0 < x and x <= 10`;
* `x in [..]` / `x not in [..]` (a list of literals) give missing only when x is missing;
* `and`, `or`, `not` are Kleene's: a number is true when non-zero; false `and` missing is false,
  true `or` missing is true, anything else with missing is missing;
* truth values are the numbers 1.0 and 0.0; `true` / `false` (or `True` / `False`) are literals;
* `abs(x)`, `min(a, b, ..)`, `max(a, b, ..)` (missing if any argument is not a number) and
  `coalesce(a, b, ..)` (the first argument that is not missing).

A filter passes an event only when it evaluates to a non-zero number (missing fails); a derived
feature is its expression's number (a string or missing result is missing).
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Expression", "ExpressionError", "Vec", "parse_expression"]

MAX_LENGTH = 1000  # characters of expression text
MAX_NODES = 200  # nodes of the parsed tree

Value = float | str | None
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


class ExpressionError(ValueError):
    """Expression text that is not in the language; the message gives the column (1-based)."""

    def __init__(self, text: str, column: int, problem: str) -> None:
        super().__init__(f"{problem} at column {column} of {text!r}")
        self.column = column
        self.problem = problem


def as_value(x: object) -> Value:
    """An input (event field or feature value) as the language sees it."""
    if isinstance(x, str):
        return x
    if isinstance(x, bool | int | float):
        try:
            f = float(x)
        except OverflowError:  # an int beyond the double range
            return None
        return None if math.isnan(f) else f
    return None


@dataclass
class Vec:
    """Values of many rows: numbers where `is_num`, strings where `is_txt`, missing elsewhere."""

    num: Floats
    is_num: Bools
    txt: npt.NDArray[np.object_]
    is_txt: Bools

    @classmethod
    def numbers(cls, num: Floats, ok: Bools) -> Vec:
        n = len(num)
        return cls(np.where(ok, num, 0.0), ok, np.full(n, "", dtype=object), np.zeros(n, dtype=bool))

    @classmethod
    def of(cls, values: Sequence[object]) -> Vec:
        conv = [as_value(x) for x in values]
        n = len(conv)
        is_num = np.fromiter((type(x) is float for x in conv), dtype=bool, count=n)
        is_txt = np.fromiter((type(x) is str for x in conv), dtype=bool, count=n)
        num = np.fromiter((x if type(x) is float else 0.0 for x in conv), dtype=np.float64, count=n)
        txt = np.empty(n, dtype=object)
        txt[:] = [x if type(x) is str else "" for x in conv]
        return cls(num, is_num, txt, is_txt)

    @classmethod
    def constant(cls, x: Value, n: int) -> Vec:
        if isinstance(x, str):
            txt = np.empty(n, dtype=object)
            txt[:] = x
            return cls(np.zeros(n), np.zeros(n, dtype=bool), txt, np.ones(n, dtype=bool))
        return cls.numbers(np.full(n, 0.0 if x is None else x), np.full(n, x is not None))

    def truth(self) -> tuple[Bools, Bools]:
        """(known true, known false)."""
        return self.is_num & (self.num != 0.0), self.is_num & (self.num == 0.0)


def _logic(true: Bools, false: Bools) -> Vec:
    return Vec.numbers(true.astype(np.float64), true | false)


def _truth(x: Value) -> bool | None:
    return (x != 0.0) if isinstance(x, float) else None


def _bool(b: bool | None) -> Value:
    return None if b is None else (1.0 if b else 0.0)


class _Node:
    def value(self, env: Mapping[str, object]) -> Value:
        raise NotImplementedError

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        raise NotImplementedError


@dataclass(frozen=True)
class _Lit(_Node):
    x: float | str

    def value(self, env: Mapping[str, object]) -> Value:
        return self.x

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        return Vec.constant(self.x, n)


@dataclass(frozen=True)
class _Name(_Node):
    name: str

    def value(self, env: Mapping[str, object]) -> Value:
        return as_value(env.get(self.name))

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        return cols(self.name)


_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


@dataclass(frozen=True)
class _Arith(_Node):
    op: Callable[[Any, Any], Any]
    a: _Node
    b: _Node

    def value(self, env: Mapping[str, object]) -> Value:
        a, b = self.a.value(env), self.b.value(env)
        if not isinstance(a, float) or not isinstance(b, float):
            return None
        if self.op is operator.truediv and b == 0.0:
            return None
        r: float = self.op(a, b)
        return r if math.isfinite(r) else None

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        a, b = self.a.vector(cols, n), self.b.vector(cols, n)
        ok = a.is_num & b.is_num
        if self.op is operator.truediv:
            ok &= b.num != 0.0
        with np.errstate(all="ignore"):
            r = np.asarray(self.op(a.num, np.where(ok, b.num, 1.0)), dtype=np.float64)
        return Vec.numbers(r, ok & np.isfinite(r))


@dataclass(frozen=True)
class _Neg(_Node):
    x: _Node
    negate: bool

    def value(self, env: Mapping[str, object]) -> Value:
        v = self.x.value(env)
        if not isinstance(v, float):
            return None
        return -v if self.negate else v

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        v = self.x.vector(cols, n)
        return Vec.numbers(-v.num if self.negate else v.num, v.is_num)


_CMP: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


@dataclass(frozen=True)
class _Cmp(_Node):
    op: Callable[[Any, Any], Any]
    a: _Node
    b: _Node

    def value(self, env: Mapping[str, object]) -> Value:
        a, b = self.a.value(env), self.b.value(env)
        if a is None or b is None:
            return None
        if type(a) is not type(b):  # a number against a string: unequal, not ordered
            return _bool(self.op is operator.ne) if self.op in (operator.eq, operator.ne) else None
        return _bool(bool(self.op(a, b)))

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        a, b = self.a.vector(cols, n), self.b.vector(cols, n)
        both_num, both_txt = a.is_num & b.is_num, a.is_txt & b.is_txt
        mixed = (a.is_num & b.is_txt) | (a.is_txt & b.is_num)
        result = np.where(both_num, self.op(a.num, b.num), False)
        result |= both_txt & np.asarray(self.op(a.txt, b.txt), dtype=bool)
        known = both_num | both_txt
        if self.op in (operator.eq, operator.ne):
            result |= mixed & (self.op is operator.ne)
            known |= mixed
        return Vec.numbers(result.astype(np.float64), known)


@dataclass(frozen=True)
class _In(_Node):
    x: _Node
    items: tuple[float | str, ...]
    negate: bool

    def value(self, env: Mapping[str, object]) -> Value:
        v = self.x.value(env)
        if v is None:
            return None
        found = any(type(i) is type(v) and i == v for i in self.items)
        return _bool(found != self.negate)

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        v = self.x.vector(cols, n)
        found = np.zeros(n, dtype=bool)
        for i in self.items:
            if isinstance(i, str):
                found |= v.is_txt & np.asarray(v.txt == i, dtype=bool)
            else:
                found |= v.is_num & (v.num == i)
        return Vec.numbers((found != self.negate).astype(np.float64), v.is_num | v.is_txt)


@dataclass(frozen=True)
class _Logic(_Node):
    is_and: bool
    xs: tuple[_Node, ...]

    def value(self, env: Mapping[str, object]) -> Value:
        unknown = False
        for x in self.xs:
            t = _truth(x.value(env))
            if t is None:
                unknown = True
            elif t != self.is_and:  # false decides `and`, true decides `or`
                return _bool(t)
        return None if unknown else _bool(self.is_and)

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        true, false = self.xs[0].vector(cols, n).truth()
        for x in self.xs[1:]:
            t, f = x.vector(cols, n).truth()
            true, false = (true & t, false | f) if self.is_and else (true | t, false & f)
        return _logic(true, false)


@dataclass(frozen=True)
class _Not(_Node):
    x: _Node

    def value(self, env: Mapping[str, object]) -> Value:
        t = _truth(self.x.value(env))
        return None if t is None else _bool(not t)

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        true, false = self.x.vector(cols, n).truth()
        return _logic(false, true)


@dataclass(frozen=True)
class _Call(_Node):
    fn: str
    args: tuple[_Node, ...]

    def value(self, env: Mapping[str, object]) -> Value:
        vals = [a.value(env) for a in self.args]
        if self.fn == "coalesce":
            return next((v for v in vals if v is not None), None)
        if not all(isinstance(v, float) for v in vals):
            return None
        nums: list[float] = vals  # type: ignore[assignment]
        if self.fn == "abs":
            return abs(nums[0])
        best = nums[0]
        for x in nums[1:]:  # the first of equals (-0.0 vs 0.0), as the vector form
            best = best if (best <= x if self.fn == "min" else best >= x) else x
        return best

    def vector(self, cols: Callable[[str], Vec], n: int) -> Vec:
        vals = [a.vector(cols, n) for a in self.args]
        if self.fn == "coalesce":
            out = vals[-1]
            for v in reversed(vals[:-1]):
                have = v.is_num | v.is_txt
                out = Vec(
                    np.where(have, v.num, out.num),
                    np.where(have, v.is_num, out.is_num),
                    np.where(have, v.txt, out.txt),
                    np.where(have, v.is_txt, out.is_txt),
                )
            return out
        ok = np.logical_and.reduce([v.is_num for v in vals])
        if self.fn == "abs":
            return Vec.numbers(np.abs(vals[0].num), ok)
        best = vals[0].num
        for v in vals[1:]:
            best = np.where(best <= v.num if self.fn == "min" else best >= v.num, best, v.num)
        return Vec.numbers(best, ok)


_FUNCTIONS = {"abs": (1, 1), "min": (2, 64), "max": (2, 64), "coalesce": (1, 64)}
_LITERAL_NAMES = {"true": 1.0, "false": 0.0}


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its text, the names it reads, and its two evaluations."""

    text: str
    names: frozenset[str]
    _root: _Node

    def value(self, env: Mapping[str, object]) -> Value:
        """One row: `env` maps names to event fields or feature values (absent: missing)."""
        return self._root.value(env)

    def test(self, env: Mapping[str, object]) -> bool:
        """A filter's verdict on one event: true only for a non-zero number."""
        v = self._root.value(env)
        return isinstance(v, float) and v != 0.0

    def number(self, env: Mapping[str, object]) -> float | None:
        """A derived feature's value for one row (None: missing)."""
        v = self._root.value(env)
        return v if isinstance(v, float) else None

    def vector(self, columns: Mapping[str, Vec], n: int) -> Vec:
        """Many rows at once; a name without a column is missing everywhere."""
        missing = Vec.constant(None, n)
        return self._root.vector(lambda name: columns.get(name, missing), n)

    def mask(self, columns: Mapping[str, Vec], n: int) -> Bools:
        """`test` of many rows."""
        true, _ = self.vector(columns, n).truth()
        return true

    def numbers(self, columns: Mapping[str, npt.NDArray[Any]], n: int) -> Floats:
        """`number` of many rows over feature columns: float (NaN: missing), or object (strings
        beside floats and NaN). NaN is missing in the result too."""
        vecs = {
            k: Vec.numbers(np.nan_to_num(c, nan=0.0), ~np.isnan(c)) if c.dtype == np.float64 else Vec.of(c.tolist())
            for k, c in columns.items()
        }
        v = self.vector(vecs, n)
        return np.where(v.is_num, v.num, np.nan)


class _Parser:
    def __init__(self, text: str, lead: int) -> None:
        self.text = text
        self.lead = lead  # leading blanks, cut before parsing
        self.names: set[str] = set()
        self.nodes = 0

    def fail(self, node: ast.AST | None, problem: str) -> ExpressionError:
        col = getattr(node, "col_offset", 0)
        # ast columns count UTF-8 bytes: report characters.
        col = self.lead + len(self.text.lstrip().encode()[:col].decode(errors="ignore"))
        return ExpressionError(self.text, col + 1, problem)

    def number(self, node: ast.AST, x: object) -> float:
        try:
            f = float(x)  # type: ignore[arg-type]
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise self.fail(node, "number out of range")
        return f

    def literal(self, node: ast.AST) -> float | str:
        if isinstance(node, ast.Constant) and not isinstance(node.value, bytes | complex | type(None) | type(...)):
            v = node.value
            return v if isinstance(v, str) else self.number(node, v)
        if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
            return _LITERAL_NAMES[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = self.literal(node.operand)
            if isinstance(v, float):
                return -v if isinstance(node.op, ast.USub) else v
        raise self.fail(node, "a list after `in` holds only number and string literals")

    def node(self, node: ast.AST) -> _Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, f"expression too large (over {MAX_NODES} parts)")
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, str | int | float):
                raise self.fail(node, f"literal {node.value!r} is not allowed (numbers and strings only)")
            return _Lit(self.literal(node))
        if isinstance(node, ast.Name):
            if node.id in _LITERAL_NAMES:
                return _Lit(_LITERAL_NAMES[node.id])
            if node.id.startswith("_"):
                raise self.fail(node, f"name {node.id!r} is not allowed (names starting with _ are reserved)")
            self.names.add(node.id)
            return _Name(node.id)
        if isinstance(node, ast.BinOp):
            op = _ARITH.get(type(node.op))
            if op is None:
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed (use + - * /)")
            return _Arith(op, self.node(node.left), self.node(node.right))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return _Not(self.node(node.operand))
            if isinstance(node.op, ast.USub | ast.UAdd):
                return _Neg(self.node(node.operand), isinstance(node.op, ast.USub))
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BoolOp):
            return _Logic(isinstance(node.op, ast.And), tuple(self.node(v) for v in node.values))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{_describe(node)} is not allowed")

    def compare(self, node: ast.Compare) -> _Node:
        if len(node.ops) > 1 and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            raise self.fail(node, "`in` cannot be chained with other comparisons")
        parts: list[_Node] = []
        left = self.node(node.left)
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(right, ast.List | ast.Tuple | ast.Set):
                    raise self.fail(right, '`in` takes a list of literals: x in [1, 2] or s in ["a", "b"]')
                items = tuple(self.literal(e) for e in right.elts)
                parts.append(_In(left, items, isinstance(op, ast.NotIn)))
                continue
            fn = _CMP.get(type(op))
            if fn is None:
                raise self.fail(node, f"comparison {type(op).__name__} is not allowed (use == != < <= > >= in)")
            right_node = self.node(right)
            parts.append(_Cmp(fn, left, right_node))
            left = right_node
        return parts[0] if len(parts) == 1 else _Logic(True, tuple(parts))

    def call(self, node: ast.Call) -> _Node:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            raise self.fail(node, f"call of {_describe(node.func)} is not allowed (functions: {', '.join(_FUNCTIONS)})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, f"{name}() takes plain arguments")
        lo, hi = _FUNCTIONS[name]
        if not lo <= len(node.args) <= hi:
            raise self.fail(node, f"{name}() takes {lo}{'' if lo == hi else f' to {hi}'} arguments")
        return _Call(name, tuple(self.node(a) for a in node.args))


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"name {node.id!r}"
    words = {
        ast.Attribute: "attribute access",
        ast.Subscript: "indexing",
        ast.Lambda: "lambda",
        ast.IfExp: "if-else",
        ast.NamedExpr: "assignment",
        ast.JoinedStr: "an f-string",
        ast.Starred: "unpacking",
    }
    return words.get(type(node), type(node).__name__)


@lru_cache(maxsize=1024)
def parse_expression(text: str) -> Expression:
    """Parse (never evaluate) `text`; `ExpressionError` names the column of the first problem."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(str(text), 1, "empty expression")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(text[:40] + "...", MAX_LENGTH, f"expression longer than {MAX_LENGTH} characters")
    if "\n" in text or "\r" in text:
        raise ExpressionError(text, text.find("\n" if "\n" in text else "\r") + 1, "an expression is one line")
    lead = len(text) - len(text.lstrip())
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal": the text is refused or fine
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.lstrip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(text, lead + (exc.offset or 1), f"syntax error ({exc.msg})") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(text, 1, f"unreadable expression ({type(exc).__name__})") from exc
    parser = _Parser(text, lead)
    try:
        root = parser.node(tree.body)
    except RecursionError as exc:
        raise ExpressionError(text, 1, "expression nested too deeply") from exc
    return Expression(text, frozenset(parser.names), root)
