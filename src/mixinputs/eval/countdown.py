"""Count Down: reach a target with each given number used exactly once and + - * / only.

Instances are generated deterministically from a seed, each built from a solution (so every one
is solvable), or read from TinyZero's public JSON/JSONL files (``nums``/``target``). Answers are
parsed with ``ast`` into a whitelisted tree and evaluated with exact fractions: no ``eval``.
"""

from __future__ import annotations

import ast
import json
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from mixinputs.eval.extract import last_answer_tag, last_boxed

TOLERANCE = 1e-5
MAX_EXPRESSION_CHARS = 200
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


def extract_expression(completion: str) -> str | None:
    r"""The equation in the last ``<answer>`` tags, else in the final ``\boxed{}``; the part left
    of an ``=`` when the model wrote ``expr = target``.

    >>> extract_expression("<think>..</think><answer> (3 + 5) * 2 = 16 </answer>")
    '(3 + 5) * 2'
    """
    found = last_answer_tag(completion)
    if found is None:
        found = last_boxed(completion)
    if found is None:
        return None
    found = found.replace("×", "*").replace("÷", "/").replace("\\times", "*")
    found = found.replace("\\div", "/").replace("\\cdot", "*")
    return found.split("=")[0].strip() or None


def evaluate(expression: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, numbers used) of an arithmetic expression, or None when it is not one.

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


def score(completion: str, numbers: list[int], target: int) -> bool:
    """True when the completion's final equation uses each number exactly once, only + - * / and
    parentheses, and equals ``target`` (within 1e-5).

    >>> score("<answer>(44 - 19) * 3 + 1</answer>", [19, 44, 3, 1], 76)
    True
    >>> score("<answer>44 - 19 + 3</answer>", [19, 44, 3, 1], 28)  # 1 is not used
    False
    """
    expression = extract_expression(completion)
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
