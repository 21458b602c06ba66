"""The feature expression language: semantics, refusals, and one row == many rows, bit for bit."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from featurestore.expressions import Expression, ExpressionError, Value, Vec, parse_expression

ROW = {"status": "declined", "amount": 150, "country": "DE", "a": 6, "b": 0, "flag": True, "z": -0.0}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('status == "declined"', 1.0),
        ("amount > 100", 1.0),
        ('amount > 100 and country != "NL"', 1.0),
        ('amount > 200 or country in ["DE", "FR"]', 1.0),
        ('country not in ["DE"]', 0.0),
        ("0 < amount <= 150", 1.0),
        ("0 < amount < 150", 0.0),
        ("a / 4 + 1", 2.5),
        ("(a - 8) * 2", -4.0),
        ("a / b", None),  # division by zero: missing
        ("a / missing", None),  # a missing input: missing
        ("missing == 1", None),
        ("missing != 1", None),
        ("not missing", None),
        ("missing and false", 0.0),  # Kleene: false decides `and` ...
        ("missing or true", 1.0),  # ... and true decides `or`
        ("missing and true", None),
        ("status == 1", 0.0),  # a string against a number: unequal ...
        ("status != 1", 1.0),
        ("status > 1", None),  # ... and not ordered
        ('status + "x"', None),  # arithmetic needs numbers
        ("flag == true", 1.0),  # booleans are 1.0 / 0.0
        ("coalesce(missing, b, 3)", 0.0),
        ("coalesce(missing)", None),
        ("abs(-a) + min(a, 2, 9) - max(a, 2)", 2.0),
        ("min(a, missing)", None),
        ("1e308 * 10", None),  # beyond the double range: missing
        ("-z", 0.0),
        ("not b", 1.0),
        ("a", 6.0),
        ('"text"', "text"),
    ],
)
def test_values_follow_the_documented_semantics(text: str, want: Value) -> None:
    e = parse_expression(text)
    got = e.value(ROW)
    assert got == want and type(got) is type(want), (text, got)
    assert _row_of(e.vector({k: Vec.of([v]) for k, v in ROW.items()}, 1), 0) == got


def test_a_filter_passes_only_a_true_value_and_a_derived_feature_is_only_a_number() -> None:
    assert parse_expression("amount > 100").test(ROW)
    assert not parse_expression("missing > 100").test(ROW)
    assert not parse_expression("status").test(ROW)  # a string is not true
    assert parse_expression("a / 3").number(ROW) == 2.0
    assert parse_expression("status").number(ROW) is None
    assert parse_expression("a / b").number(ROW) is None


def test_names_are_the_fields_read_and_literals_are_not_names() -> None:
    e = parse_expression('amount > 100 and country in ["NL"] or true and not false')
    assert e.names == frozenset({"amount", "country"})


@pytest.mark.parametrize(
    ("text", "problem", "column"),
    [
        ('__import__("os").system("x")', "attribute access", 1),
        ('__import__("os")', "call of name '__import__'", 1),
        ("().__class__.__bases__", "attribute access", 1),
        ("amount.real", "attribute access", 1),
        ("lambda: 1", "lambda", 1),
        ("9 ** 9 ** 9", "operator Pow", 1),
        ("2 ** 100000", "operator Pow", 1),
        ("amount >> 2", "operator RShift", 1),
        ("amount % 2", "operator Mod", 1),
        ("amount // 2", "operator FloorDiv", 1),
        ("x[0]", "indexing", 1),
        ("a if b else c", "if-else", 1),
        ("(y := 1)", "assignment", 2),
        ('f"{amount}"', "an f-string", 1),
        ("[x for x in a]", "ListComp", 1),
        ("{1: 2}", "Dict", 1),
        ("open('f')", "call of name 'open'", 1),
        ("eval('1')", "call of name 'eval'", 1),
        ("min(*a)", "plain arguments", 1),
        ("max(a, key=b)", "plain arguments", 1),
        ("abs(a, b)", "abs() takes 1 arguments", 1),
        ("a is None", "comparison Is", 1),
        ("None", "literal None", 1),
        ("b'x' == a", "literal b'x'", 1),
        ("1e999 > a", "number out of range", 1),
        ("amount in other", "`in` takes a list of literals", 11),
        ("amount in [other]", "holds only number and string literals", 12),
        ("a in [1] == b", "cannot be chained", 1),
        ("_secret > 1", "names starting with _", 1),
        ("amount > 100 and", "syntax error", 0),
        ("amount = 100", "syntax error", 8),
        ("amount\n> 1", "one line", 7),
        ("", "empty expression", 1),
        ("+".join(["a"] * 250), "too large", 0),
        ("(" * 300 + "1" + ")" * 300, "", 0),
        ("x" * 2000, "longer than", 1000),
    ],
)
def test_hostile_and_invalid_expressions_are_refused_with_their_column(text: str, problem: str, column: int) -> None:
    with pytest.raises(ExpressionError) as err:
        parse_expression(text)
    assert problem in str(err.value)
    if column:
        assert err.value.column == column, str(err.value)


_TOKENS = [
    "a", "b", "s", "1", "2.5", "-", "+", "*", "/", "**", "//", "%", "(", ")", "[", "]", ",", ".",
    "==", "<", ">=", "!=", " and ", " or ", "not ", " in ", " is ", "lambda", ":", "=", ":=", "__class__",
    "__import__", "'x'", '"y"', "abs", "min", "coalesce", "eval", "exec", "import", "os", "{", "}", "@", "\\", "`",
    "1e999", "if", "else", "for", "yield", "await", "...", "True", "None", "~", "^", "&", "|", "<<", ";", "#",
]  # fmt: skip


def test_fuzzed_text_is_refused_or_evaluates_without_raising() -> None:
    rng = random.Random(1234)
    accepted = 0
    for _ in range(4000):
        text = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 12)))
        try:
            e = parse_expression(text)
        except ExpressionError:
            continue
        accepted += 1
        assert not any(n.startswith("_") for n in e.names)
        for _ in range(3):
            env = {n: _input(rng) for n in e.names}
            assert _same(e.value(env), _row_of(e.vector({k: Vec.of([v]) for k, v in env.items()}, 1), 0)), text
    assert accepted > 100  # the fuzz reaches valid expressions too


def _input(rng: random.Random) -> Any:
    return rng.choice(
        [None, 0.0, -0.0, 1.0, -2.5, 3, True, False, 1e308, -1e308, 5e-324, 2**70, float("nan"), "x", "y", "", "a"]
    )


def _gen(rng: random.Random, depth: int) -> str:
    leaf = depth <= 0 or rng.random() < 0.25
    if leaf:
        return rng.choice(["a", "b", "c", "s", "1", "0", "-0.0", "2.5", "1e308", "5e-324", '"x"', '"y"', "true"])
    pick = rng.randrange(9)
    x, y = _gen(rng, depth - 1), _gen(rng, depth - 1)
    if pick == 0:
        return f"({x} {rng.choice(['+', '-', '*', '/'])} {y})"
    if pick == 1:
        return f"({x} {rng.choice(['==', '!=', '<', '<=', '>', '>='])} {y})"
    if pick == 2:
        return f"({x} {rng.choice(['and', 'or'])} {y})"
    if pick == 3:
        return f"(not {x})" if rng.random() < 0.5 else f"(-{x})"
    if pick == 4:
        return f'({x} {rng.choice(["in", "not in"])} [1, -0.0, "x", 2.5])'
    if pick == 5:
        return f"{rng.choice(['min', 'max', 'coalesce'])}({x}, {y}, {_gen(rng, depth - 1)})"
    if pick == 6:
        return f"abs({x})"
    if pick == 7:
        return f"({x} < {y} <= {_gen(rng, depth - 1)})"
    return x


def _row_of(v: Vec, i: int) -> Value:
    if v.is_num[i]:
        return float(v.num[i])
    if v.is_txt[i]:
        return str(v.txt[i])
    return None


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b and type(a) is type(b)


def test_one_row_and_many_rows_agree_bit_for_bit_on_random_expressions() -> None:
    rng = random.Random(99)
    rows = [{n: _input(rng) for n in "abcs"} for _ in range(60)]
    columns = {n: Vec.of([r[n] for r in rows]) for n in "abcs"}
    for _ in range(400):
        e: Expression = parse_expression(_gen(rng, rng.randint(1, 4)))
        vec = e.vector(columns, len(rows))
        mask = e.mask(columns, len(rows))
        for i, row in enumerate(rows):
            assert _same(e.value(row), _row_of(vec, i)), (e.text, row)
            assert e.test(row) == bool(mask[i]), (e.text, row)


def test_derived_numbers_over_float_columns_equal_one_row_at_a_time() -> None:
    rng = random.Random(5)
    n = 80
    cols = {k: np.array([rng.choice([np.nan, 0.0, -0.0, 1.5, -3.0, 1e308, 7.0]) for _ in range(n)]) for k in "abc"}
    for _ in range(200):
        e = parse_expression(_gen(rng, 3))
        got = e.numbers(cols, n)
        for i in range(n):
            row = {k: None if math.isnan(c[i]) else float(c[i]) for k, c in cols.items()}
            want = e.number(row)
            assert (math.isnan(got[i]) and want is None) or _same(float(got[i]), want), (e.text, row)
