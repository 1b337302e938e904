"""The math-symbol tokens SwiReasoning and SeLaR always feed as themselves (``plain_math``).

Both methods keep a step explicit when its token is a math symbol: digits, Latin letters,
operators, brackets and LaTeX commands. Which tokens those are depends on the tokenizer: every id
that encoding one of the symbols below yields. The symbol list is the authors' own
(github sdc17/SwiReasoning, ``generation_utils.py`` ``get_math_symbols_ids``, lines 108-132 @
7f3b278; SeLaR's ``src/generation_utils.py`` lines 42-66 @ 1198a74 has the same list).

>>> class Chars:   # a tokenizer that spells every character as its code point
...     def encode(self, text, add_special_tokens=False): return [ord(c) for c in text]
>>> ids = math_token_ids(Chars())
>>> ord("7") in ids, ord("q") in ids, ord("?") in ids
(True, True, False)
"""

from __future__ import annotations

import contextlib
import string
import weakref
from typing import Any

# One line per group of the authors' list reads better than a hundred quoted strings.
_LATEX = (  # noqa: SIM905
    "\\leq \\geq \\neq \\approx \\sim \\equiv \\to \\implies \\iff "
    "\\left( \\right) \\left[ \\right] \\left\\{ \\right\\} \\begin{pmatrix} \\end{pmatrix} "
    "\\frac \\dfrac \\sqrt \\sqrt[] "
    "\\in \\notin \\subset \\supset \\subseteq \\supseteq \\cup \\cap \\emptyset \\varnothing "
    "\\pi \\theta \\alpha \\beta \\gamma \\delta \\epsilon \\zeta \\lambda \\mu \\nu "
    "\\sin \\cos \\tan \\arcsin \\arccos \\arctan \\log \\ln \\exp "
    "\\binom \\choose \\cdot \\dots \\ldots \\cdots \\vdots \\ddots "
    "\\mathbb \\mathbf \\mathrm \\text \\mbox "
    "\\infty \\circ \\prime \\ast \\star \\triangle \\triangleleft \\triangleright \\perp "
    "\\parallel \\angle \\boxed \\overline \\underline \\lceil \\rceil \\lfloor \\rfloor "
    "\\left \\right \\mid \\vert \\Vert "
    "\\because \\therefore \\forall \\exists \\wedge \\vee \\neg "
    "\\sum \\prod \\int \\lim \\min \\max \\arg \\deg \\gcd \\operatorname "
    "\\cot \\cotg \\sec \\csc"
).split()
MATH_SYMBOLS = (
    *"+ - * / ^ = < > ( ) [ ] { } _ |".split(),  # noqa: SIM905
    *_LATEX,
    *string.digits,
    *string.ascii_lowercase,
    *string.ascii_uppercase,
)
"""The symbols, as the authors list them (order aside)."""


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def math_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every token id the tokenizer uses for a math symbol, sorted (computed once per
    tokenizer)."""
    try:
        return _CACHE[tokenizer]
    except (KeyError, TypeError):  # TypeError: a tokenizer that cannot be weakly referenced
        pass
    ids: set[int] = set()
    for symbol in MATH_SYMBOLS:
        ids.update(int(i) for i in tokenizer.encode(symbol, add_special_tokens=False))
    result = tuple(sorted(ids))
    with contextlib.suppress(TypeError):
        _CACHE[tokenizer] = result
    return result
