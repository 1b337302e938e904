"""GPQA-Diamond: multiple choice, options shuffled under a seed, letter extraction.

The data is not redistributed: load it from a file you have (``--data``: the JSON layout of
``shared/data/gpqa_diamond.json``, or the hub's CSV/JSON columns ``Question``,
``Correct Answer``, ``Incorrect Answer 1..3``), or from the hub with ``datasets`` (gated: needs
your Hugging Face login and network).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from mixinputs.eval.extract import last_answer_tag, last_boxed

LETTERS = "ABCD"
PROMPT = (
    "{question}\n\n{options}\n\nAnswer with the letter of the correct option, reasoning step by "
    "step first, and put the final letter within \\boxed{{}}."
)
_CHOICE_LINE = re.compile(r"^\s*([A-D])[.)]\s")
_LETTER = re.compile(r"\b([A-D])\b")


@dataclass(frozen=True)
class Question:
    question: str
    correct: str
    incorrect: tuple[str, str, str]


def shuffled(q: Question, seed: int, item_id: str) -> tuple[list[str], str]:
    """The four options in a seeded order and the letter of the correct one.

    >>> q = Question("2+2?", "4", ("3", "5", "22"))
    >>> shuffled(q, 0, "x") == shuffled(q, 0, "x"), sorted(shuffled(q, 0, "x")[0])
    (True, ['22', '3', '4', '5'])
    """
    options = [q.correct, *q.incorrect]
    random.Random(f"gpqa-{seed}-{item_id}").shuffle(options)
    return options, LETTERS[options.index(q.correct)]


def render(q: Question, seed: int, item_id: str) -> tuple[str, str]:
    """(prompt text, gold letter)."""
    options, gold = shuffled(q, seed, item_id)
    lines = "\n".join(f"{letter}) {text}" for letter, text in zip(LETTERS, options, strict=True))
    return PROMPT.format(question=q.question.strip(), options=lines), gold


def extract_letter(completion: str) -> str | None:
    r"""The chosen letter: ``\boxed{B}``, ``<answer>B</answer>``, ``Answer: B``, else the last
    standalone A-D.

    >>> extract_letter(r"so \boxed{C}"), extract_letter("Answer: (b)"), extract_letter("none")
    ('C', 'B', None)
    """
    for found in (last_boxed(completion), last_answer_tag(completion)):
        if found:
            letter = re.search(r"[A-Da-d]", found.replace("\\text", ""))
            if letter:
                return letter.group(0).upper()
    marked = re.findall(r"[Aa]nswer\s*(?:is)?\s*[:：]?\s*\(?([A-Da-d])\)?\b", completion)
    if marked:
        return marked[-1].upper()
    letters = _LETTER.findall(completion)
    return letters[-1] if letters else None


def score(completion: str, gold_letter: str) -> bool:
    """>>> score("I pick \\\\boxed{A}", "A"), score("\\\\boxed{B}", "A")
    (True, False)
    """
    return extract_letter(completion) == gold_letter


def load(path: str | Path | None) -> list[Question]:
    """Questions from ``path`` (JSON list, JSONL or CSV), or from the hub when ``path`` is None."""
    if path is None:
        return _load_hub()
    path = Path(path)
    if path.suffix == ".csv":
        import csv

        with open(path, newline="") as f:
            return [_from_hub_row(row, n, path) for n, row in enumerate(csv.DictReader(f))]
    text = path.read_text()
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [_from_row(row, n, path) for n, row in enumerate(rows)]


def _from_row(row: dict, n: int, path: Path) -> Question:
    if "Question" in row:
        return _from_hub_row(row, n, path)
    try:  # the layout of shared/data: the prompt lists "A. ..." lines, choices + final_answer
        prompt = row["prompt"][0]["value"]
        choices = row["choices"]
        gold = row["final_answer"].strip()
        stem = "\n".join(line for line in prompt.splitlines() if not _CHOICE_LINE.match(line))
        incorrect = tuple(v for k, v in sorted(choices.items()) if k != gold)
        if len(incorrect) != 3 or gold not in choices:
            raise ValueError("needs four choices A-D and a gold letter among them")
        return Question(stem.strip(), choices[gold], incorrect)  # type: ignore[arg-type]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: row {n} is not a GPQA question: {e}") from None


def _from_hub_row(row: dict, n: int, path: object) -> Question:
    try:
        return Question(
            row["Question"],
            row["Correct Answer"].strip(),
            tuple(row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)),
        )  # type: ignore[arg-type]
    except (KeyError, AttributeError) as e:
        raise ValueError(f"{path}: row {n} lacks the GPQA column {e}") from None


def _load_hub() -> list[Question]:
    """GPQA-Diamond from the hub, or one line saying why not (never a traceback after a minute
    of retries: an unreachable hub is found out in seconds)."""
    import os

    try:
        from datasets import load_dataset
    except ImportError:
        raise ValueError(
            "GPQA is not shipped: pass --data PATH to your copy, or install "
            "`datasets` and log in to the hub (the dataset is gated)"
        ) from None
    offline = any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    if not offline:
        problem = _hub_unreachable()
        if problem is not None:
            raise ValueError(
                f"GPQA is not shipped and the hub cannot be reached ({problem}): pass --data "
                "PATH to your copy (or set HF_HUB_OFFLINE=1 to use a copy the datasets cache holds)"
            )
    try:
        rows = load_dataset("Idavidrein/gpqa", "gpqa_diamond", split="train")
    except Exception as e:  # gated (no login), offline without a cached copy, ...
        lines = str(e).strip().splitlines()
        raise ValueError(
            f"GPQA from the hub failed ({type(e).__name__}: {lines[-1] if lines else ''}): pass "
            "--data PATH to your copy, or log in (`hf auth login`; the dataset is gated)"
        ) from None
    return [_from_hub_row(dict(r), n, "hub") for n, r in enumerate(rows)]


def _hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when it answers."""
    import urllib.error
    import urllib.request

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:
        endpoint = "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as e:
        return f"{endpoint}: {getattr(e, 'reason', e)}"
    return None
