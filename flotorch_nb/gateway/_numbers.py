"""Pure: the arithmetic and number facts ``offline/assistant`` can answer exactly.

"What is 2 + 2?" and "Give one fun fact about the number 7" are classic first prompts (notebook 6
sends eight of them at once). A template answer to them looks broken; exact ones cost little:
arithmetic is evaluated from a parsed expression (numbers, + - * / ^ and parentheses only; nothing
is ``eval``-ed), and number facts are computed (prime, perfect, square, power of two...), then
worded by ``[numbers]`` in ``data/phrases.toml``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from ._data import phrases

__all__ = ["arithmetic", "number_fact"]

TIMES, DIVIDED = "\u00d7", "\u00f7"  # the signs people type for * and /
_OPS = rf"+\-*/^{TIMES}{DIVIDED}"
_EXPRESSION = re.compile(rf"[\d.(][\d.\s(){_OPS}]*[{_OPS}][\d.\s(){_OPS}]*[\d.)]")
_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_MAX_POWER = 64  # 2 ** 64 is plenty for a classroom; larger exponents are refused, not computed
_FACT_RE = re.compile(r"\bnumber\s+(-?\d{1,7})\b", re.I)


class _Refused(Exception):
    """The expression is not plain arithmetic, or too large to be worth computing."""


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)  # bool is an int, but "True" is not arithmetic: ast never makes one here
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > _MAX_POWER or abs(left) > 10**6):
            raise _Refused
        return _OPERATORS[type(node.op)](left, right)
    raise _Refused


def _shown(value: float) -> str:
    if value.is_integer() and abs(value) < 1e16:
        return f"{int(value):,}".replace(",", " ") if abs(value) >= 10**5 else str(int(value))
    return f"{value:.6g}"


def arithmetic(text: str) -> str | None:
    """``"2 + 2 = 4."`` for the longest arithmetic expression in ``text``, or None if there is none."""
    found = _EXPRESSION.findall(text)
    if not found:
        return None
    written = " ".join(max(found, key=len).split())
    source = written.replace(TIMES, "*").replace(DIVIDED, "/").replace("^", "**")
    if len(source) > 200:
        return None
    try:
        value = _evaluate(ast.parse(source, mode="eval"))
    except ZeroDivisionError:
        return f"{written} has no value: dividing by zero is undefined."
    except (_Refused, SyntaxError, OverflowError, RecursionError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return f"{written} = {_shown(value)}."


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def _fibonacci(n: int) -> bool:
    return any(math.isqrt(5 * n * n + k) ** 2 == 5 * n * n + k for k in (4, -4)) if n > 0 else n == 0


def _sum_up_to(k: int) -> str:
    return " + ".join(map(str, range(1, k + 1))) if k <= 4 else f"1 + 2 + … + {k}"


def _said(key: str, **values: Any) -> tuple[str, str]:
    what, why = phrases()["numbers"][key]
    return what, why.format(**values)


def _properties(n: int) -> list[tuple[str, str]]:
    """(what ``n`` is, why), true and simple, most surprising first."""
    if n in (0, 1, 2):
        return [_said(("zero", "one", "two")[n])]
    found: list[tuple[str, str]] = []
    if n > 0:
        proper = _divisors(n)[:-1]
        total = sum(proper)
        if total == n:
            found.append(_said("perfect", listed=" + ".join(map(str, proper)), n=n))
        if _is_prime(n):
            found.append(_said("prime"))
        if n & (n - 1) == 0:
            found.append(_said("power_of_two", product=f" {TIMES} ".join(["2"] * (n.bit_length() - 1)), n=n))
        root = math.isqrt(n)
        if root * root == n:
            found.append(_said("square", root=root, n=n))
        cube = round(n ** (1 / 3))
        if cube**3 == n:
            found.append(_said("cube", root=cube, n=n))
        k = (math.isqrt(8 * n + 1) - 1) // 2
        if k * (k + 1) // 2 == n:
            found.append(_said("triangular", listed=_sum_up_to(k), n=n))
        if _fibonacci(n):
            found.append(_said("fibonacci"))
        if total > n:
            shown = f"its divisors {' + '.join(map(str, proper))}" if len(proper) <= 6 else "its divisors"
            found.append(_said("abundant", divisors=shown, total=total, n=n))
    found.append(_said("even" if n % 2 == 0 else "odd", digits=sum(int(d) for d in str(abs(n)))))
    return found


def number_fact(text: str) -> str | None:
    """A computed fact about the number a "fact about the number N" prompt names, or None."""
    match = _FACT_RE.search(text)
    if not match:
        return None
    n = int(match.group(1))
    (what, why), *rest = _properties(n)
    said = phrases()["numbers"]
    reply: str = said["fact"].format(n=n, what=what, why=why)
    if len(rest) > 1:  # the last property is only its parity: worth saying alone, not as an extra
        also, because = rest[0]
        reply += said["also" if because == why else "also_because"].format(what=also, why=because)
    return reply
