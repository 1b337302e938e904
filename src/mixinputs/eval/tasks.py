"""The tasks: each is data, a prompt template and a pure scorer, behind one small interface."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mixinputs.eval import countdown, gpqa
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
    score: Callable[[str, Item], tuple[str | None, bool]]  # completion -> (extracted, correct)


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


def _math_score(completion: str, item: Item) -> tuple[str | None, bool]:
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


def _countdown_score(completion: str, item: Item) -> tuple[str | None, bool]:
    meta = item.meta
    return countdown.extract_expression(completion), countdown.score(
        completion, meta["numbers"], meta["target"]
    )


def _load_gpqa(path: str | None, seed: int) -> list[Item]:
    items = []
    for n, q in enumerate(gpqa.load(path)):
        prompt, gold = gpqa.render(q, seed, f"gpqa-{n}")
        items.append(Item(f"gpqa-{n}", prompt, gold))
    return items


def _gpqa_score(completion: str, item: Item) -> tuple[str | None, bool]:
    return gpqa.extract_letter(completion), gpqa.score(completion, item.gold)


TASKS: dict[str, Task] = {
    "countdown": Task(
        "countdown",
        "Count Down 4 (generated, or TinyZero files via --data)",
        _load_countdown,
        _countdown_score,
    ),
    "aime": Task(
        "aime",
        "AIME 2024 (shipped; other years via --data)",
        _load_math("aime2024.json", "aime2024"),
        _math_score,
    ),
    "math500": Task(
        "math500", "MATH-500 (shipped)", _load_math("math500.json", "math500"), _math_score
    ),
    "gsm8k": Task("gsm8k", "GSM8K test (shipped)", _load_math("gsm8k.json", "gsm8k"), _math_score),
    "gpqa": Task(
        "gpqa", "GPQA-Diamond (not shipped: --data PATH, or the hub)", _load_gpqa, _gpqa_score
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]
