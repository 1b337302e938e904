"""Count Down answers written the way reasoning models write them, each with a correct equation:
how the paper's TinyZero rule and the lenient reading score each style.

``STYLES`` doubles as the measurement set of the scoring gap (docs/eval-scoring.md):
``python -m tests.eval.test_eval_countdown_styles`` prints the accuracy under both scorings.
"""

from __future__ import annotations

import pytest

from mixinputs.eval import countdown

THINK = "<think>\nLet me try combinations. {numbers} ... that works.\n</think>\n\n"


def _latex(solution: str) -> str:
    return solution.replace("*", r"\times").replace("/", r"\div")


def _has_mul_or_div(solution: str) -> bool:
    return "*" in solution or "/" in solution


# name -> (completion from (solution, target, numbers), correct under tinyzero, under lenient);
# a verdict is a bool, or a function of the solution where it depends on its operators.
STYLES = {
    "answer tag": (lambda s, t, n: THINK.format(numbers=n) + f"<answer>{s}</answer>", True, True),
    "answer tag with = target": (
        lambda s, t, n: THINK.format(numbers=n) + f"<answer> {s} = {t} </answer>",
        True,
        True,
    ),
    "answer tag over lines": (
        lambda s, t, n: THINK.format(numbers=n) + f"<answer>\n{s}\n</answer>",
        True,
        True,
    ),
    "plain boxed": (lambda s, t, n: f"So the equation is $\\boxed{{{s}}}$.", True, True),
    "boxed with LaTeX operators": (
        lambda s, t, n: f"**Final Answer**\n\\[\n\\boxed{{{_latex(s)} = {t}}}\n\\]",
        lambda s: not _has_mul_or_div(s),
        True,
    ),
    "answer tag with ×": (
        lambda s, t, n: f"<answer>{s.replace('*', '×').replace('/', '÷')}</answer>",
        lambda s: not _has_mul_or_div(s),
        True,
    ),
    "answer tag then boxed target": (
        lambda s, t, n: f"<answer>{s}</answer>\n\nThe target is reached: $\\boxed{{{t}}}$",
        False,  # the last \boxed{} overrides the <answer>, and it holds only the target
        True,
    ),
    "boxed with \\cdot and \\left(": (
        lambda s, t, n: (
            "\\boxed{"
            + s.replace("*", r" \cdot ").replace("(", r"\left(").replace(")", r"\right)")
            + "}"
        ),
        False,
        False,
    ),
    "answer tag in $...$": (lambda s, t, n: f"<answer>${s}$</answer>", False, False),
}


def instances():
    return countdown.generate(40, seed=0)


def verdict(expected, solution: str) -> bool:
    return expected(solution) if callable(expected) else expected


@pytest.mark.parametrize("style", list(STYLES))
def test_each_style_under_both_scorings(style):
    render, tinyzero, lenient = STYLES[style]
    for inst in instances():
        text = render(inst.solution, inst.target, list(inst.numbers))
        numbers = list(inst.numbers)
        got = countdown.score(text, numbers, inst.target, scoring="tinyzero")
        assert got is verdict(tinyzero, inst.solution), (style, text)
        got = countdown.score(text, numbers, inst.target, scoring="lenient")
        assert got is verdict(lenient, inst.solution), (style, text)


def accuracy_table() -> str:
    rows = ["| style | n | tinyzero (paper) | lenient |", "|---|---:|---:|---:|"]
    totals = {"tinyzero": 0, "lenient": 0}
    n_all = 0
    for style, (render, _, _) in STYLES.items():
        counts = {"tinyzero": 0, "lenient": 0}
        for inst in instances():
            text = render(inst.solution, inst.target, list(inst.numbers))
            for scoring in counts:
                counts[scoring] += countdown.score(
                    text, list(inst.numbers), inst.target, scoring=scoring
                )
        n = len(instances())
        n_all += n
        for scoring in totals:
            totals[scoring] += counts[scoring]
        rows.append(
            f"| {style} | {n} | {100 * counts['tinyzero'] / n:.1f} | "
            f"{100 * counts['lenient'] / n:.1f} |"
        )
    rows.append(
        f"| all | {n_all} | {100 * totals['tinyzero'] / n_all:.1f} | "
        f"{100 * totals['lenient'] / n_all:.1f} |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(accuracy_table())
