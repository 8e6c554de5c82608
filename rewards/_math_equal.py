"""Symbolic equality of two answers, with sympy. Runs only inside the worker processes of `rewards._pool`.

The pool's zygote runs `warm_up` once; each worker it forks installs `guard_worker` before it sees any answer.

LaTeX is turned into sympy by `latex2sympy2_extended` (the parser Math-Verify builds on); the comparison rules follow
Math-Verify's grader (https://github.com/huggingface/Math-Verify) where the shared test cases pin them down:
assignments such as `x = 5` compare by their value, bare comma lists are sets, a percentage equals its value, and so
on. Where Math-Verify calls `sympy.simplify`, this module first evaluates both sides numerically (at random points
when they have free symbols), which decides almost every pair in microseconds and leaves `simplify` for the rare
expressions that cannot be evaluated.

Safety: model text reaches sympy only through the ANTLR grammar of latex2sympy2_extended, whose conversions build
sympy objects directly, with one exception this module closes: the package turns number tokens into sympy with
`sympy.Number(text)`, which for a string calls `sympify`, i.e. `parse_expr` and `eval`. The lexer only lets digits,
dots and exponents into those tokens, but `_SafeLatex2Sympy` builds numbers with `Integer(int(...))` and `Float(...)`
instead, so no model text is ever evaluated. The package's other string-evaluating call (`parse_expr` on
`variable_values`) is not used, and nothing here calls `sympify`, `parse_expr`, `eval` or `exec`. `guard_worker`
adds an audit hook as a second line of defence: in a worker, sympy's string parsers cannot compile anything, and
starting processes or writing files raises.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import random
import re
import sys

import sympy
from latex2sympy2_extended import NormalizationConfig, is_expr_of_only_symbols, normalize_latex
from latex2sympy2_extended.latex2sympy2 import ConversionConfig, _Latex2Sympy
from sympy import Basic, E, Eq, Float, Interval, MatrixBase, Mul, Rational, Symbol, Tuple, UnevaluatedExpr
from sympy.core.function import AppliedUndef
from sympy.core.relational import Relational
from sympy.logic.boolalg import And as SympyAnd
from sympy.matrices.expressions import MatrixExpr
from sympy.sets.sets import FiniteSet, Set, Union

logger = logging.getLogger(__name__)

_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="none", equations=False
)
_PERCENT = UnevaluatedExpr(Rational(1, 100))
# Numbers compare within this relative tolerance; constants are evaluated to `_EXACT_DIGITS` digits first.
_DECIMAL_TOLERANCE = 1e-6
_EXACT_DIGITS = 50
# Beyond these sizes a number is not evaluated at all: it could exhaust memory, and no answer is that large.
_MAX_BITS = 100_000
_MAX_FACTORIAL = 5_000
_MAX_SET_ITEMS = 64
_MAX_PROBE_SYMBOLS = 16
_PROBES = 3

_UNICODE = {
    "√": "\\sqrt",
    "×": "\\times ",
    "÷": "/",
    "·": "\\cdot ",
    "π": "\\pi ",
    "°": "^\\circ",
    "∞": "\\infty ",
    "≤": "\\le ",
    "≥": "\\ge ",
    "≠": "\\ne ",
    "−": "-",
    "–": "-",
    "²": "^2",
    "³": "^3",
    "∪": "\\cup ",
    "∩": "\\cap ",
    "±": "\\pm ",
    "\u202f": " ",
    "\u00a0": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_COMPLEX_RE = re.compile(r"\\mathbb\{C\}|\\i\b|(?<![A-Za-z\\])i(?![A-Za-z])|\\text\{i\}|\\mathrm\{i\}|\\imath\b")
_EQUATION_SPLIT_RE = re.compile(r"(?<!\\|<|!|>)=")
_PLAIN_SQRT_RE = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(([^()]*)\)")


# ----------------------------------------------------------------------------------------------------------- entry


def compare_answers(gold: str, pred: str) -> float | None:
    """1.0 when the two extracted answers are mathematically equal, 0.0 when not, None when `gold` cannot be parsed.

    Args:
        gold (`str`): The gold answer, already extracted (no box, no math delimiters).
        pred (`str`): The predicted answer, extracted the same way.
    """
    gold_expr = parse_answer(gold)
    if gold_expr is None:
        return None
    pred_expr = parse_answer(pred)
    if pred_expr is None:
        return 0.0
    return 1.0 if exprs_equal(gold_expr, pred_expr) else 0.0


# sympy modules that are imported lazily, some of which `sympify` constant names when imported; importing them during
# warm-up keeps that out of the guarded phase (see `guard_worker`).
_LAZY_MODULES = (
    "sympy.physics.units",
    "sympy.sets.handlers.functions",
    "sympy.sets.handlers.issubset",
    "sympy.solvers.inequalities",
    "sympy.calculus.util",
)


def warm_up() -> None:
    """Import sympy's lazily loaded modules and compare a few answers of each kind, to build the parser's caches."""
    for module in _LAZY_MODULES:
        importlib.import_module(module)
    samples = [
        ("\\frac{1}{2}", "0.5"),
        ("x^2+2x+1", "(x+1)^2"),
        ("(1,2]", "[1,2]"),
        ("\\{1,2\\}", "2,1"),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),
        ("x \\le 2", "2 \\ge x"),
        ("\\sqrt{2}+\\pi", "1.41421356+3.14159265"),
        ("28\\%", "0.28"),
        ("\\text{Evelyn}", "evelyn"),
        ("(-\\infty,-8)\\cup (8,\\infty)", "x<-8"),
        ("\\sin^2 x+\\cos^2 x", "1"),
        ("-1 < x < 3", "(-1, 3)"),
    ]
    for gold, pred in samples:
        try:
            compare_answers(gold, pred)
        except Exception:  # warming up must never stop a worker from starting
            logger.debug("Warm-up comparison failed", exc_info=True)


# --------------------------------------------------------------------------------------------------------- parsing


@functools.lru_cache(maxsize=8192)
def parse_answer(answer: str) -> Basic | MatrixBase | None:
    """The sympy object for an extracted answer, or None when it cannot be parsed.

    Cached, since a GRPO group scores many completions against one gold answer.
    """
    latex = prepare_latex(answer)
    if not latex:
        return None
    candidates = [latex]
    last_equation = _last_equation(latex)
    if last_equation != latex:
        candidates.append(last_equation)
    for candidate in candidates:
        try:
            converter = _SafeLatex2Sympy(is_real=not _COMPLEX_RE.search(candidate), config=_CONVERSION)
            return converter.parse(candidate)
        except Exception:  # the parser raises bare Exceptions for syntax errors
            continue
    return None


_CONVERSION = ConversionConfig()
_INTEGER_RE = re.compile(r"\d+")
_DECIMAL_RE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# The whole-string "1,234,567" that latex2sympy reads as one number rather than a set.
_COMMA_NUMBER_RE = re.compile(r"^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$")


def _number(text: str) -> Basic:
    """A sympy number from a number token, built without `sympify` (which would evaluate the text as Python)."""
    text = text.replace(",", "").replace(" ", "")
    if _INTEGER_RE.fullmatch(text):
        return sympy.Integer(int(text))
    if _DECIMAL_RE.fullmatch(text):
        return Float(text)
    raise ValueError(f"not a number token: {text[:40]!r}")


class _SafeLatex2Sympy(_Latex2Sympy):
    """latex2sympy2_extended's converter, with number parsing that never goes through `sympify`."""

    def parse(self, latex_str: str):
        if _COMMA_NUMBER_RE.match(latex_str):
            number = latex_str.strip()
            negative = number.startswith("-")
            number = number.lstrip("-")
            if number.startswith("0,"):  # "0,111" is a decimal comma, as latex2sympy2_extended reads it
                number = number.replace(",", ".", 1)
            value = _number(number)
            return -value if negative else value
        return super().parse(latex_str)

    def parse_number(self, text: str) -> Basic:
        return _number(text)


def prepare_latex(answer: str) -> str:
    """Normalise an answer's LaTeX before parsing: unicode symbols, `**` powers, thin spaces, units, `\\text{}`."""
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], answer)
    text = text.replace("**", "^")
    # Plain-text function calls written by models: "sqrt(3)", "2*sqrt(5)".
    text = _PLAIN_SQRT_RE.sub(r"\\sqrt{\1}", text)
    # `29,\!322,\!216`: a comma with a thin space after it between digit groups is a thousands separator (MATH's
    # golds write them so, inside fractions too); without the `\!` a comma may separate items and stays.
    text = re.sub(r"(?<=\d),\\!\s*(?=\d{3}(?!\d))", "", text)
    text = re.sub(r"\\!\s*", "", text)
    text = re.sub(r"(?<=\d)\\[,;: ](?=\d{3}(?!\d))", "", text)
    text = re.sub(r"(?<=\d)\{,\}(?=\d)", ",", text)
    text = normalize_latex(text, _NORMALIZATION)
    return text.strip().rstrip(".,;").strip()


def _last_equation(latex: str) -> str:
    """The right-hand side of a chain `a = b = c`, which is tried when the whole chain does not parse."""
    if "," in latex or ";" in latex:
        return latex
    parts = _EQUATION_SPLIT_RE.split(latex)
    return parts[-1] if len(parts) > 2 else latex


# ------------------------------------------------------------------------------------------------------ comparison


def exprs_equal(gold: Basic | MatrixBase, pred: Basic | MatrixBase) -> bool:
    """Whether `pred` is mathematically equal to `gold`. Not symmetric: the gold's form decides how `x = 5` is read."""
    gold, pred = _align_forms(gold, pred)
    if _is_relation(gold) and isinstance(pred, Set):
        # "1 < x < 2" against "(1, 2)"
        gold = _relation_as_set(gold)
    if _structurally_equal(gold, pred):
        return True
    if _is_relation(gold) and _is_relation(pred):
        return _relations_equal(gold, pred)
    if _is_relation(gold) or _is_relation(pred):
        return False
    if isinstance(gold, (Set, Tuple)) or isinstance(pred, (Set, Tuple)):
        return _collections_equal(gold, pred)
    if _is_matrix(gold) or _is_matrix(pred):
        return _matrices_equal(gold, pred)
    if (isinstance(gold, Symbol) or isinstance(pred, Symbol)) and _symbols_equal(gold, pred):
        return True
    return _values_equal(gold, pred)


def _structurally_equal(gold, pred) -> bool:
    try:
        if gold in (sympy.nan, sympy.zoo):
            return False
        return bool(gold == pred)
    except Exception:
        return False


# Relations ----------------------------------------------------------------------------------------------------------


def _relation_list(expr) -> list:
    if isinstance(expr, SympyAnd):
        return list(getattr(expr, "_unsorted_args", expr.args))
    return [expr]


def _is_relation(expr) -> bool:
    if isinstance(expr, Relational):
        return True
    return isinstance(expr, SympyAnd) and bool(expr.args) and all(isinstance(a, Relational) for a in expr.args)


def _is_equation(expr) -> bool:
    return _is_relation(expr) and all(isinstance(r, Eq) for r in _relation_list(expr))


def _is_assignment(expr) -> bool:
    """`x = 5`, `(p, q) = (3, 2)` or `z = 1 + 1 = 2`: an equation whose first left side is made of symbols only."""
    return _is_equation(expr) and bool(is_expr_of_only_symbols(_relation_list(expr)[0].lhs))


def _states_a_value(equation) -> bool:
    """Whether an equation reads as "this is the value": `x = 5` or `3 \\cdot 4 = 12`, but not `2x + z = 1`."""
    lhs = _relation_list(equation)[0].lhs
    return bool(is_expr_of_only_symbols(lhs)) or not _free_symbols(lhs)


def _flip_reversed_assignment(expr):
    """`2 = x` is the assignment `x = 2` written backwards."""
    if isinstance(expr, Eq) and not is_expr_of_only_symbols(expr.lhs) and isinstance(expr.rhs, Symbol):
        return Eq(expr.rhs, expr.lhs, evaluate=False)
    return expr


def _align_forms(gold, pred):
    """Read assignments and equations the way the gold is written (Math-Verify's rules).

    `x = 5` against `5` compares the values; a predicted chain `x = 2 + 3 = 5` counts by its last value; but
    `2x + z = 1` is an equation, not an assignment, and equals `1` neither as gold nor (unlike in Math-Verify) as a
    prediction.
    """
    gold, pred = _flip_reversed_assignment(gold), _flip_reversed_assignment(pred)
    gold_assignment, pred_assignment = _is_assignment(gold), _is_assignment(pred)
    gold_equation, pred_equation = _is_equation(gold), _is_equation(pred)
    if gold_assignment:
        relations = _relation_list(gold)
        gold = Eq(relations[0].lhs, relations[-1].rhs, evaluate=False)
    if pred_assignment:
        relations = _relation_list(pred)
        pred = Eq(relations[0].lhs, relations[-1].rhs, evaluate=False)
    if pred_equation and not gold_equation and _states_a_value(pred):
        pred = _relation_list(pred)[-1].rhs
    elif gold_assignment and not pred_equation:
        gold = gold.rhs
    return gold, pred


def _relation_as_set(relation):
    try:
        return _unwrap_functions(relation).as_set()
    except Exception:
        return relation


_DIRECTION = {
    sympy.StrictGreaterThan: ("gt", 1),
    sympy.GreaterThan: ("ge", 1),
    sympy.StrictLessThan: ("gt", -1),
    sympy.LessThan: ("ge", -1),
    sympy.Eq: ("eq", 1),
    sympy.Ne: ("ne", 1),
}


def _relations_equal(gold, pred) -> bool:
    gold_relations, pred_relations = _relation_list(gold), _relation_list(pred)
    if len(gold_relations) != len(pred_relations):
        return False
    return all(_relation_equal(g, p) for g, p in zip(gold_relations, pred_relations))


def _relation_equal(gold: Relational, pred: Relational) -> bool:
    """Two relations are equal when they have the same kind and one side-difference is a constant multiple of the other.

    `2x + 4y - 3 = 0` equals `y = -x/2 + 3/4`, and `x < 1` equals `-x > -1` (for inequalities the multiple must be
    positive once both are written as `expr > 0`).
    """
    gold_kind, pred_kind = _DIRECTION.get(type(gold)), _DIRECTION.get(type(pred))
    if gold_kind is None or pred_kind is None or gold_kind[0] != pred_kind[0]:
        return False
    try:
        gold_diff = (gold.lhs - gold.rhs) * gold_kind[1]
        pred_diff = (pred.lhs - pred.rhs) * pred_kind[1]
    except Exception:
        # Sides that cannot be subtracted (tuples, sets): compare side by side.
        return exprs_equal(gold.lhs, pred.lhs) and exprs_equal(gold.rhs, pred.rhs)
    return _proportional(gold_diff, pred_diff, positive=gold_kind[0] in ("gt", "ge"))


def _proportional(a, b, positive: bool) -> bool:
    if _structurally_equal(a, b):
        return True
    symbols = sorted(_free_symbols(a) | _free_symbols(b), key=str)
    if not symbols:
        return _values_equal(a, b)
    ratios = []
    for point in _probe_points(symbols):
        value_a, value_b = _evaluate(a, point), _evaluate(b, point)
        if value_a is None or value_b is None:
            continue
        if abs(value_b) < 1e-30:
            if abs(value_a) > 1e-30:
                return False
            continue
        ratios.append(value_a / value_b)
    if len(ratios) < 2:
        return _simplifies_to_constant(a, b, positive)
    first = ratios[0]
    if abs(first) < 1e-30 or any(not _close(r, first, 1e-9) for r in ratios[1:]):
        return False
    return not positive or (first.real > 0 and abs(first.imag) <= 1e-12 * abs(first))


def _simplifies_to_constant(a, b, positive: bool) -> bool:
    try:
        ratio = sympy.simplify(a / b)
        if ratio.free_symbols or not ratio.is_number or ratio == 0:
            return False
        return not positive or bool(ratio > 0)
    except Exception:
        return False


# Sets, tuples, intervals ----------------------------------------------------------------------------------------------


def _collections_equal(gold, pred) -> bool:
    if isinstance(gold, Interval) and isinstance(pred, Interval):
        return (
            gold.left_open == pred.left_open
            and gold.right_open == pred.right_open
            and exprs_equal(gold.start, pred.start)
            and exprs_equal(gold.end, pred.end)
        )
    if isinstance(gold, Union) and isinstance(pred, Union):
        return _sorted_parts_equal(gold.args, pred.args)
    gold_items = _items(gold, pred)
    pred_items = _items(pred, gold)
    if gold_items is None or pred_items is None:
        return _sets_equal(gold, pred)
    (gold_args, gold_ordered), (pred_args, pred_ordered) = gold_items, pred_items
    if len(gold_args) != len(pred_args) or len(gold_args) > _MAX_SET_ITEMS:
        return False
    if gold_ordered or pred_ordered:
        return all(exprs_equal(g, p) for g, p in zip(gold_args, pred_args))
    return _match_unordered(gold_args, pred_args)


def _items(collection, other) -> tuple[list, bool] | None:
    """The elements of a finite collection and whether their order matters; None for other sets."""
    if isinstance(collection, Tuple):
        return list(collection.args), True
    if isinstance(collection, FiniteSet):
        # A bare list "1, 2" against a tuple "(1, 2)" is read in its written order (Math-Verify).
        ordered = isinstance(other, Tuple) or (isinstance(other, Interval) and other.is_open)
        args = getattr(collection, "_unsorted_args", None) if ordered else None
        return list(args if args is not None else collection.args), ordered
    if isinstance(collection, Interval):
        # "(1, 2)" is parsed as an open interval but is just as often a point or a pair.
        if collection.is_open and isinstance(other, (Tuple, FiniteSet)) and len(other.args) == 2:
            return [collection.start, collection.end], True
        return None
    if isinstance(collection, Set):
        return None
    return [collection], False


def _match_unordered(gold_args: list, pred_args: list) -> bool:
    unmatched = list(pred_args)
    for gold_item in gold_args:
        for index, pred_item in enumerate(unmatched):
            if exprs_equal(gold_item, pred_item):
                del unmatched[index]
                break
        else:
            return False
    return True


def _sorted_parts_equal(gold_parts, pred_parts) -> bool:
    if len(gold_parts) != len(pred_parts):
        return False
    gold_sorted, pred_sorted = sorted(gold_parts, key=_sort_key), sorted(pred_parts, key=_sort_key)
    return all(exprs_equal(g, p) for g, p in zip(gold_sorted, pred_sorted))


def _sort_key(part) -> float:
    start = part.start if isinstance(part, Interval) else part
    if start == -sympy.oo:
        return -math.inf
    value = _constant_value(start) if isinstance(start, Basic) else None
    return float(value[0]) if value is not None else math.inf


def _sets_equal(gold, pred) -> bool:
    try:
        return bool(gold.symmetric_difference(pred).is_empty)
    except Exception:
        return False


# Matrices -------------------------------------------------------------------------------------------------------------


def _is_matrix(expr) -> bool:
    return isinstance(expr, (MatrixBase, MatrixExpr))


def _matrices_equal(gold, pred) -> bool:
    gold, pred = _doit(gold), _doit(pred)
    if not (isinstance(gold, MatrixBase) and isinstance(pred, MatrixBase)) or gold.shape != pred.shape:
        return False
    return all(exprs_equal(g, p) for g, p in zip(gold, pred))


# Symbols and text -----------------------------------------------------------------------------------------------------


def _symbols_equal(gold, pred) -> bool:
    """Names read as text: `\\text{odd}` is one symbol, a bare `odd` the product o*d*d; `e` may be Euler's number."""
    for a, b in ((gold, pred), (pred, gold)):
        if isinstance(a, Symbol) and a.name.lower() == "e" and b == E:
            return True
        if isinstance(a, Symbol) and isinstance(b, Mul) and all(x == E or isinstance(x, Symbol) for x in b.args):
            return a.name.lower() == "".join("e" if x == E else x.name for x in b.args).lower()
    if isinstance(gold, Symbol) and isinstance(pred, Symbol):
        return gold.name.lower() == pred.name.lower() if len(gold.name) > 1 else gold.name == pred.name
    return False


# Values ---------------------------------------------------------------------------------------------------------------


def _split_percent(expr):
    """(value, is_percent): latex2sympy writes `28\\%` as 28 * UnevaluatedExpr(1/100)."""
    if isinstance(expr, Mul) and len(expr.args) == 2 and expr.args[1] == _PERCENT:
        return expr.args[0], True
    return expr, False


def _values_equal(gold, pred) -> bool:
    gold_value, gold_percent = _split_percent(gold)
    pred_value, pred_percent = _split_percent(pred)
    if gold_percent != pred_percent:
        percent_value, other = (gold_value, pred_value) if gold_percent else (pred_value, gold_value)
        # As in Math-Verify, "28%" also equals a bare 28 when both are integers.
        if isinstance(percent_value, sympy.Integer) and isinstance(other, sympy.Integer) and percent_value == other:
            return True
        percent_value = percent_value / 100
        gold_value, pred_value = (percent_value, other) if gold_percent else (other, percent_value)
    gold_value, pred_value = _doit(gold_value), _doit(pred_value)
    if not isinstance(gold_value, Basic) or not isinstance(pred_value, Basic):
        return False
    if _free_symbols(gold_value) or _free_symbols(pred_value):
        return _functions_equal(gold_value, pred_value)
    return _constants_equal(gold_value, pred_value)


def _constants_equal(a: Basic, b: Basic) -> bool:
    """Equal exactly, or within relative 1e-6 (the tolerance numbers compare with)."""
    if a.is_Rational and b.is_Rational:
        return a == b or _rationals_close(a, b)
    exact_a, exact_b = _finite_decimal(a), _finite_decimal(b)
    if exact_a is not None and exact_b is not None:
        return exact_a == exact_b or _rationals_close(exact_a, exact_b)
    if _too_large(a) or _too_large(b):
        return False  # not structurally equal (checked first), and too large to evaluate
    value_a, value_b = _constant_value(a), _constant_value(b)
    if value_a is None or value_b is None:
        return _simplifies_to_zero(a, b)
    return _close_constants(value_a, value_b, _DECIMAL_TOLERANCE)


def _rationals_close(a: Rational, b: Rational) -> bool:
    return abs(a - b) <= Rational(1, 10**6) * max(abs(a), abs(b))


def _finite_decimal(value: Basic) -> Rational | None:
    """The exact value of a number written as a finite decimal (a Float literal, or a Rational such as 3/4)."""
    if isinstance(value, Float):
        return Rational(repr(float(value))) if value.is_finite else None
    if value.is_Rational:
        denominator = int(value.q)
        for prime in (2, 5):
            while denominator % prime == 0:
                denominator //= prime
        return value if denominator == 1 else None
    return None


def _functions_equal(a: Basic, b: Basic) -> bool:
    """Equality of expressions with free symbols: numeric at random points, symbolic only if that cannot decide."""
    a, b = _unwrap_functions(a), _unwrap_functions(b)
    symbols = sorted(_free_symbols(a) | _free_symbols(b), key=str)
    if len(symbols) <= _MAX_PROBE_SYMBOLS:
        tolerance = _DECIMAL_TOLERANCE if (a.has(Float) or b.has(Float)) else 1e-12
        agreed = 0
        for point in _probe_points(symbols):
            value_a, value_b = _evaluate(a, point), _evaluate(b, point)
            if value_a is None or value_b is None:
                continue
            if not _close(value_a, value_b, tolerance):
                return False
            agreed += 1
        if agreed >= 2:
            return True
    return _simplifies_to_zero(a, b)


def _simplifies_to_zero(a, b) -> bool:
    try:
        difference = sympy.simplify(a - b)
        return bool(difference.is_zero) or (isinstance(difference, MatrixBase) and difference.is_zero_matrix)
    except Exception:
        return False


def _probe_points(symbols: list) -> list[dict]:
    """Points at which to evaluate: two with every symbol positive (domains such as sqrt(x)) and one mixed-sign."""
    rng = random.Random(len(symbols))
    points = []
    for probe in range(_PROBES):
        point = {}
        for symbol in symbols:
            value = Rational(rng.randint(11, 97), rng.randint(7, 31))
            point[symbol] = -value if probe == _PROBES - 1 and rng.random() < 0.5 else value
        points.append(point)
    return points


def _evaluate(expr, point: dict) -> complex | None:
    try:
        value = expr.evalf(30, subs=point)
        if not value.is_number or _free_symbols(value):
            return None
        result = complex(value)
    except Exception:
        return None
    return result if math.isfinite(result.real) and math.isfinite(result.imag) else None


@functools.lru_cache(maxsize=8192)
def _constant_value(expr: Basic):
    """The value of a constant expression to `_EXACT_DIGITS` digits, as (real, imaginary) sympy Floats, or None."""
    if _too_large(expr):
        return None
    try:
        value = expr.evalf(_EXACT_DIGITS)
        if not value.is_number or value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            return None
        real, imaginary = value.as_real_imag()
        return Float(real, _EXACT_DIGITS), Float(imaginary, _EXACT_DIGITS)
    except Exception:
        return None


def _close(a: complex, b: complex, tolerance: float) -> bool:
    scale = max(abs(a), abs(b))
    return abs(a - b) <= tolerance * scale * (1 + 1e-9) if scale else True


def _close_constants(a: tuple[Float, Float], b: tuple[Float, Float], tolerance: float) -> bool:
    """Relative closeness of two `_constant_value`s, computed at their full precision."""
    difference = max(abs(a[0] - b[0]), abs(a[1] - b[1]))
    scale = max(abs(a[0]), abs(a[1]), abs(b[0]), abs(b[1]))
    return bool(difference <= tolerance * scale * (1 + 1e-9)) if scale else True


def _doit(expr):
    """Evaluate unevaluated operations (`2+3`, matrix products), unless the result could be astronomically large."""
    if not isinstance(expr, (Basic, MatrixBase)) or _too_large(expr):
        return expr
    try:
        return expr.doit()
    except Exception:
        return expr


def _too_large(expr) -> bool:
    """Whether evaluating `expr` exactly would build a number with more than `_MAX_BITS` bits (towers, factorials)."""
    if not isinstance(expr, Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.base.is_number and node.exp.is_number:
            try:
                exponent = abs(complex(node.exp.evalf(15)))
                base = abs(complex(node.base.evalf(15)))
            except (OverflowError, TypeError, ValueError):
                return True
            if base > 1 and exponent * math.log2(base) > _MAX_BITS:
                return True
        elif isinstance(node, sympy.factorial) and node.args[0].is_number:
            try:
                if abs(complex(node.args[0].evalf(15))) > _MAX_FACTORIAL:
                    return True
            except (OverflowError, TypeError, ValueError):
                return True
    return False


def _free_symbols(expr) -> set:
    try:
        return set(expr.free_symbols)
    except Exception:
        return set()


def _unwrap_functions(expr):
    """Replace applied undefined functions `f(x)` by plain symbols `f_x`, so that they can be evaluated and solved."""
    if not isinstance(expr, Basic):
        return expr
    replacements = {
        node: Symbol(f"{node.func.__name__}_" + "_".join(map(str, node.args))) for node in expr.atoms(AppliedUndef)
    }
    return expr.xreplace(replacements) if replacements else expr


# ------------------------------------------------------------------------------------------------------------ guard


def guard_worker() -> None:
    """Refuse, inside this worker, to evaluate text as Python or to touch the system.

    An audit hook (PEP 578) raises when sympy's string parsers (`sympify`, `parse_expr`) are about to compile source
    text, and on starting processes, deleting or renaming files, opening files for writing and opening sockets. It is
    a second line of defence behind never passing model text to such functions. sympy's own code generation (e.g.
    for polynomial monomials) still works, as it compiles text it wrote itself outside those parsers.
    """
    sys.addaudithook(_audit)


_BLOCKED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "os.remove",
        "os.rmdir",
        "os.rename",
        "os.truncate",
        "shutil.rmtree",
        "socket.connect",
        "socket.bind",
    }
)
_STRING_PARSERS = ("sympy/parsing/", "sympy/core/sympify.py", "sympy\\parsing\\", "sympy\\core\\sympify.py")


def _audit(event: str, args: tuple) -> None:
    reason = None
    if event in _BLOCKED_EVENTS:
        reason = event
    elif event == "open" and len(args) >= 2 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        reason = "opening a file for writing"
    elif event in ("compile", "exec") and _called_from_string_parser():
        reason = "evaluating text with sympify/parse_expr"
    if reason is not None:
        logger.warning("Blocked in a math worker: %s", reason)
        raise RuntimeError(f"blocked in a math worker: {reason}")


def _called_from_string_parser() -> bool:
    frame = sys._getframe(2)
    for _ in range(64):
        if frame is None:
            return False
        if any(marker in frame.f_code.co_filename for marker in _STRING_PARSERS):
            return True
        frame = frame.f_back
    return False
