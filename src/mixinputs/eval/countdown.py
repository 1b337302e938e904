"""Count Down: reach a target with each given number used exactly once and + - * / only.

Instances are generated deterministically from a seed, each built from a solution (so every one
is solvable), or read from TinyZero's public JSON/JSONL files (``nums``/``target``).

Two scorings (``SCORINGS``):

- ``"tinyzero"`` (the default): the rule the paper's Count Down figures come from, the TinyZero
  reward of the original release (``example/reward.py``, applied by ``example/tinyzero_moi.py``
  after it joins digit groups such as ``1,000``). Take the last ``<answer>...</answer>``; if the
  completion also has a ``\\boxed{...}`` (up to the first ``}``), the last one of those instead;
  keep what is left of an ``=``; only digits, ``+ - * /``, parentheses, ``.`` and whitespace may
  remain (a LaTeX ``\\times`` or a ``×`` scores 0); the numbers in it must be exactly the given
  ones, each once; correct when |value - target| < 1e-5 under Python arithmetic (so ``**`` and
  ``//`` count, as they did there). One deliberate difference: the original ``eval``-ed the text,
  and a power whose result would exceed 2**20 bits (which ran for minutes or exhausted memory
  there) scores 0 here instead of hanging the run.
- ``"lenient"``: reads ``\\times``, ``×``, ``\\div``, ``\\cdot`` as operators, looks in the
  last ``<answer>`` first and in the last balanced ``\\boxed{}`` only without one, and accepts
  ``+ - * /`` on whole numbers only (exact fractions). It scores reasoning models far higher than
  the paper's rule on the same text: figures from it are not comparable to the paper's Table 1.

Both parse with ``ast`` into a whitelisted tree: nothing is ``eval``-ed.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from mixinputs.eval.extract import last_answer_tag, last_boxed

TOLERANCE = 1e-5
MAX_EXPRESSION_CHARS = 200
SCORINGS = ("tinyzero", "lenient")
DEFAULT_SCORING = "tinyzero"
MAX_POWER_BITS = 1 << 20
"""A tinyzero-scored power may produce at most this many bits (the original had no bound)."""
_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}

PROMPT = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>."
)


@dataclass(frozen=True)
class Instance:
    numbers: tuple[int, ...]
    target: int
    solution: str | None = None


def extract_expression(completion: str, scoring: str = DEFAULT_SCORING) -> str | None:
    r"""The equation a completion answers with, as ``scoring`` reads it (see the module doc).

    >>> extract_expression("<think>..</think><answer> (3 + 5) * 2 = 16 </answer>")
    '(3 + 5) * 2'
    >>> extract_expression(r"<answer>1 + 2</answer> so \boxed{3 \times 1}")  # the box wins
    '3 \\times 1'
    >>> extract_expression(r"\boxed{3 \times 1}", scoring="lenient")
    '3 * 1'
    """
    if scoring == "tinyzero":
        return _extract_tinyzero(_join_digit_groups(completion))
    if scoring == "lenient":
        return _extract_lenient(completion)
    raise ValueError(f"unknown Count Down scoring {scoring!r}; choose one of {SCORINGS}")


def score(completion: str, numbers: list[int], target: int, scoring: str = DEFAULT_SCORING) -> bool:
    """True when the completion's final equation uses each given number exactly once and equals
    ``target`` (within 1e-5), as ``scoring`` reads it: ``"tinyzero"`` (the paper's rule) or
    ``"lenient"``.

    >>> score("<answer>(44 - 19) * 3 + 1</answer>", [19, 44, 3, 1], 76)
    True
    >>> score("<answer>44 - 19 + 3</answer>", [19, 44, 3, 1], 28)  # 1 is not used
    False
    >>> latex = r"<answer>(6 \\times 4) / 2 + 1</answer>"
    >>> score(latex, [6, 4, 2, 1], 13), score(latex, [6, 4, 2, 1], 13, scoring="lenient")
    (False, True)
    """
    if scoring == "tinyzero":
        return _score_tinyzero(completion, numbers, target)
    if scoring == "lenient":
        return _score_lenient(completion, numbers, target)
    raise ValueError(f"unknown Count Down scoring {scoring!r}; choose one of {SCORINGS}")


# -- "tinyzero": the original release's reward rule ----------------------------------------------
_TINYZERO_PATTERNS = (re.compile(r"<answer>(.*?)</answer>"), re.compile(r"\\boxed{(.*?)}"))
_TINYZERO_CHARS = re.compile(r"^[\d+\-*/().\s]+$")
_DIGIT_GROUP = re.compile(r"(\d+),(\d+)")
_PY_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}


def _join_digit_groups(completion: str) -> str:
    # tinyzero_moi.py: `re.sub(r'(\d+),(\d+)', r'\1\2', generation)` before the reward.
    return _DIGIT_GROUP.sub(r"\1\2", completion)


def _extract_tinyzero(completion: str) -> str | None:
    text = completion.replace("\n", " ")
    found = None
    for pattern in _TINYZERO_PATTERNS:  # a \boxed{} match overrides an <answer> match
        matches = pattern.findall(text)
        if matches:
            found = matches[-1].strip()
            if "=" in found:
                found = found.split("=")[0].strip()
    return found


def _score_tinyzero(completion: str, numbers: list[int], target: int) -> bool:
    equation = extract_expression(completion, "tinyzero")
    if equation is None:
        return False
    try:
        used = sorted(int(n) for n in re.findall(r"\d+", equation))
    except ValueError:  # a digit run too long for int()
        return False
    if used != sorted(int(n) for n in numbers):
        return False
    value = evaluate_tinyzero(equation)
    if value is None:
        return False
    try:
        return bool(abs(value - target) < TOLERANCE)
    except (TypeError, OverflowError):
        return False


def evaluate_tinyzero(equation: str) -> int | float | complex | None:
    """What the original's restricted ``eval`` gave for ``equation`` (None where it raised),
    computed from the ``ast`` without ``eval``; powers beyond ``MAX_POWER_BITS`` give None.

    >>> evaluate_tinyzero("2 ** 3 + 7 // 2"), evaluate_tinyzero("(1 + 2) / 4")
    (11, 0.75)
    >>> evaluate_tinyzero("1 / 0"), evaluate_tinyzero("9 ** 9 ** 9"), evaluate_tinyzero("3 × 2")
    (None, None, None)
    """
    if not _TINYZERO_CHARS.match(equation):
        return None
    try:
        tree = ast.parse(equation.lstrip(" \t"), mode="eval")  # eval() strips these too
        return _py_value(tree.body)
    except (SyntaxError, ValueError, TypeError, ArithmeticError, MemoryError, RecursionError):
        return None


def _py_value(node: ast.AST) -> int | float | complex:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _py_value(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        left, right = _py_value(node.left), _py_value(node.right)
        if isinstance(node.op, ast.Pow):
            return _bounded_pow(left, right)
        if type(node.op) in _PY_OPS:
            return _PY_OPS[type(node.op)](left, right)
    # Anything else ((), ..., calls) made the original's eval or its comparison raise.
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def _bounded_pow(base, exponent):
    # |base| >= 2 ** (bit_length - 1), so exponent * (bit_length - 1) bounds the result's size.
    if (
        type(base) is int
        and type(exponent) is int
        and abs(base) > 1
        and exponent * (abs(base).bit_length() - 1) > MAX_POWER_BITS
    ):
        raise OverflowError("power too large to evaluate")
    return base**exponent


# -- "lenient": LaTeX operators, balanced boxes, exact fractions ----------------------------------
def _extract_lenient(completion: str) -> str | None:
    found = last_answer_tag(completion)
    if found is None:
        found = last_boxed(completion)
    if found is None:
        return None
    found = found.replace("×", "*").replace("÷", "/").replace("\\times", "*")
    found = found.replace("\\div", "/").replace("\\cdot", "*")
    return found.split("=")[0].strip() or None


def evaluate(expression: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, numbers used) of a ``+ - * /`` expression over whole numbers, or None when
    it is not one (the lenient scoring's evaluator, and the generator's).

    >>> evaluate("(1 + 2) / 3")
    (Fraction(1, 1), [1, 2, 3])
    >>> evaluate("__import__('os')") is None, evaluate("2 ** 10") is None, evaluate("1/0") is None
    (True, True, True)
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError):
        return None
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        raise ValueError(f"not allowed: {type(node).__name__}")

    try:
        return walk(tree.body), used
    except (ValueError, ZeroDivisionError):
        return None


def _score_lenient(completion: str, numbers: list[int], target: int) -> bool:
    expression = _extract_lenient(completion)
    if expression is None:
        return False
    result = evaluate(expression)
    if result is None:
        return False
    value, used = result
    if Counter(used) != Counter(int(n) for n in numbers):
        return False
    return abs(float(value) - target) < TOLERANCE


def generate(
    count: int, seed: int = 0, num_numbers: int = 4, max_number: int = 99, max_target: int = 1000
) -> list[Instance]:
    """``count`` solvable instances, the same for the same arguments on every machine.

    Each is built from a random equation over random numbers whose value is a whole number in
    ``1..max_target``; that equation is kept as the instance's ``solution``.

    >>> [i.target for i in generate(3, seed=1)] == [i.target for i in generate(3, seed=1)]
    True
    """
    out = []
    for index in range(count):
        rng = random.Random(f"countdown-{seed}-{index}")
        while True:
            numbers = [rng.randint(1, max_number) for _ in range(num_numbers)]
            expression = _random_expression(rng, [str(n) for n in numbers])
            value = evaluate(expression)
            if value is None:
                continue
            if value[0].denominator == 1 and 1 <= value[0] <= max_target:
                rng.shuffle(numbers)
                out.append(Instance(tuple(numbers), int(value[0]), expression))
                break
    return out


def _random_expression(rng: random.Random, terms: list[str]) -> str:
    terms = terms[:]
    rng.shuffle(terms)
    while len(terms) > 1:
        i = rng.randrange(len(terms) - 1)
        op = rng.choice("+-*/")
        terms[i : i + 2] = [f"({terms[i]} {op} {terms[i + 1]})"]
    expression = terms[0]
    return (
        expression[1:-1] if expression.startswith("(") and expression.endswith(")") else expression
    )


def load_tinyzero(path: str | Path) -> list[Instance]:
    """TinyZero's Count Down files: JSON list or JSONL of ``{"nums": [...], "target": T}``."""
    text = Path(path).read_text()
    try:
        rows = json.loads(text)
        if isinstance(rows, dict):
            rows = [rows]
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    instances = []
    for n, row in enumerate(rows):
        try:
            instances.append(Instance(tuple(int(x) for x in row["nums"]), int(row["target"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: row {n} is not a Count Down instance "
                f"({{'nums': [...], 'target': int}}): {e}"
            ) from None
    return instances
