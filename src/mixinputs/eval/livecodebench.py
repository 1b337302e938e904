"""LiveCodeBench (code generation): problems from a file you have, graded in the sandbox.

Not shipped. ``--data PATH`` reads the public release format (``code_generation_lite`` JSONL or a
JSON list): ``question_id``, ``question_title``, ``question_content``, ``starter_code``,
``public_test_cases`` and ``private_test_cases`` (JSON strings, the private ones possibly
base64-zlib-pickled as in the release: only a pickled *string* is accepted, nothing else is
unpickled), ``metadata`` (JSON with ``func_name`` for LeetCode-style problems). A sample passes
when the code in its last Python block passes every test, public and private:

- ``stdin`` tests: the program reads the input and its stdout must match the expected output
  line by line (whitespace-trimmed), numbers within 1e-6 where both sides parse as floats;
- ``functional`` tests: ``Solution().<func_name>(*args)``, each input line a JSON argument, must
  equal the JSON output.

Each run has LiveCodeBench's usual star imports prepended (``from math import *`` etc.).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

from mixinputs.eval.extract import code_blocks
from mixinputs.eval.sandbox import Limits, run_python

SYSTEM = (
    "You are an expert Python programmer. You will be given a question (problem specification) "
    "and will generate a correct Python program that matches the specification and passes all "
    "tests."
)
WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters."
)
WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not "
    "directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure "
    "that when the python program runs, it reads the inputs, runs the algorithm and writes output "
    "to STDOUT."
)
IMPORTS = (
    "import sys, math, re, heapq, bisect, itertools, functools, collections, string\n"
    "from math import *\nfrom heapq import *\nfrom bisect import *\nfrom itertools import *\n"
    "from functools import *\nfrom collections import *\nfrom typing import *\n"
    "sys.setrecursionlimit(50000)\n"
)
LIMITS = Limits(timeout_s=12.0, cpu_s=6)
_DECODE_ERRORS = (zlib.error, pickle.PickleError)


@dataclass(frozen=True)
class Problem:
    question_id: str
    title: str
    content: str
    starter_code: str
    tests: tuple[dict, ...]  # {"input", "output", "testtype"}
    func_name: str | None


def prompt(problem: Problem) -> str:
    """The user message (LiveCodeBench's generic prompt, its system text first)."""
    text = f"{SYSTEM}\n\n### Question:\n{problem.content}\n\n"
    if problem.starter_code:
        text += f"### Format: {WITH_STARTER}\n```python\n{problem.starter_code}\n```\n\n"
    else:
        text += f"### Format: {WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return text + "### Answer: (use the provided format with backticks)\n\n"


def load(path: str | Path) -> list[Problem]:
    """The problems of a release file (JSONL or JSON list); a clear error names a bad row."""
    path = Path(path)
    text = path.read_text()
    try:
        rows = json.loads(text)
        rows = [rows] if isinstance(rows, dict) else rows
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    problems = []
    for n, row in enumerate(rows):
        try:
            metadata = row.get("metadata") or "{}"
            metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
            tests = _tests(row.get("public_test_cases") or "[]")
            tests += _tests(row.get("private_test_cases") or "[]")
            if not tests:
                raise ValueError("no test cases")
            problems.append(
                Problem(
                    str(row["question_id"]),
                    row.get("question_title", ""),
                    row["question_content"],
                    row.get("starter_code") or "",
                    tuple(tests),
                    metadata.get("func_name"),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError, *_DECODE_ERRORS) as e:
            raise ValueError(
                f"{path}: row {n} is not a LiveCodeBench problem (question_id, "
                f"question_content, public/private_test_cases): {e}"
            ) from None
    return problems


@functools.lru_cache(maxsize=4)
def problems_by_id(path: str) -> dict[str, Problem]:
    return {p.question_id: p for p in load(path)}


class _StringOnly(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: expected a string")


def _tests(field) -> list[dict]:
    if isinstance(field, list):
        return list(field)
    try:
        return json.loads(field)
    except json.JSONDecodeError:
        raw = zlib.decompress(base64.b64decode(field))
        decoded = _StringOnly(io.BytesIO(raw)).load()
        return json.loads(decoded) if isinstance(decoded, str) else decoded


def solution_code(completion: str) -> str:
    """The last fenced block (models often sketch first), else the whole completion."""
    blocks = code_blocks(completion)
    return blocks[-1] if blocks else completion


def score(completion: str, problem: Problem, limits: Limits = LIMITS) -> tuple[str, bool]:
    """(the extracted code, whether it passes every test)."""
    code = solution_code(completion)
    functional = [t for t in problem.tests if t.get("testtype") == "functional"]
    stdin = [t for t in problem.tests if t.get("testtype") != "functional"]
    if functional and not _functional_ok(code, functional, problem.func_name, limits):
        return code, False
    for test in stdin:
        run = run_python(IMPORTS + code, stdin=test["input"], limits=limits)
        if not run.ok or not outputs_match(run.stdout, test["output"]):
            return code, False
    return code, True


def outputs_match(got: str, expected: str) -> bool:
    """Line by line, whitespace-trimmed; tokens that both parse as numbers within 1e-6.

    >>> outputs_match("3 \\n0.3333333\\n", "3\\n0.33333333"), outputs_match("1\\n", "2")
    (True, False)
    """
    a, b = got.strip().splitlines(), expected.strip().splitlines()
    if [x.strip() for x in a] == [x.strip() for x in b]:
        return True
    if len(a) != len(b):
        return False
    for line_a, line_b in zip(a, b, strict=True):
        ta, tb = line_a.split(), line_b.split()
        if len(ta) != len(tb):
            return False
        for x, y in zip(ta, tb, strict=True):
            if x == y:
                continue
            try:
                if abs(float(x) - float(y)) > 1e-6:
                    return False
            except ValueError:
                return False
    return True


_FUNCTIONAL_HARNESS = """
import json as _json
def _norm(v):
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v
_tests = _json.loads({tests!r})
for _t in _tests:
    _args = [_json.loads(line) for line in _t["input"].split("\\n") if line.strip()]
    _got = getattr(Solution(), {func!r})(*_args)
    assert _norm(_got) == _norm(_json.loads(_t["output"])), "wrong answer"
"""


def _functional_ok(code: str, tests: list[dict], func: str | None, limits: Limits) -> bool:
    if not func:
        return False
    harness = _FUNCTIONAL_HARNESS.format(tests=json.dumps(tests), func=func)
    return run_python(IMPORTS + code + "\n" + harness, limits=limits).ok
