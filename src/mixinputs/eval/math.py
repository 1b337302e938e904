"""Math answers (AIME, MATH-500, GSM8K): final-answer extraction and equivalence with math-verify.

This module is ``mixinputs.eval.math``; it shadows nothing, as every import here is absolute.
"""

from __future__ import annotations

import re

from mixinputs.eval.extract import last_boxed

PROMPT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
_GSM8K_FINAL = re.compile(r"####\s*([-+]?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*")


def extract_answer(completion: str) -> str | None:
    r"""The final answer: the last ``\boxed{}``, else a GSM8K ``#### x``, else the last number.

    >>> extract_answer(r"so \boxed{\frac{3}{4}}"), extract_answer("... #### 1,234"), \
    ... extract_answer("it is 7 apples")
    ('\\frac{3}{4}', '1,234', '7')
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    final = _GSM8K_FINAL.findall(completion)
    if final:
        return final[-1]
    numbers = _NUMBER.findall(completion)
    return numbers[-1].rstrip(".") if numbers else None


def score(completion: str, gold: str) -> bool:
    r"""True when the completion's final answer equals ``gold`` mathematically (math-verify).

    >>> score(r"The answer is $\boxed{\dfrac{1}{2}}$.", "0.5")
    True
    >>> score(r"\boxed{(3, \pi/2)}", r"\left( 3, \frac{\pi}{2} \right)")
    True
    >>> score(r"\boxed{17}", "18")
    False
    """
    from math_verify import parse, verify

    answer = extract_answer(completion)
    if answer is None:
        return False
    answer = answer.replace(",", "") if re.fullmatch(r"[-+]?[\d,]+\.?\d*", answer) else answer
    try:
        gold_parsed = parse(f"${gold}$")
        answer_parsed = parse(f"${answer}$")
        return bool(gold_parsed and answer_parsed and verify(gold_parsed, answer_parsed))
    except Exception:  # math-verify raises on some inputs it cannot parse: not a match
        return False
