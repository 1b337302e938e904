"""Pulling the final answer out of a completion: ``\\boxed{...}`` (nested braces), ``<answer>``."""

from __future__ import annotations

import re

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``), nested braces included.

    >>> last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}")
    '\\frac{1}{2}'
    >>> last_boxed("no box") is None
    True
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: the completion was cut off inside the box


def last_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>``.

    >>> last_answer_tag("<answer>1</answer> and <answer> 2+3 </answer>")
    '2+3'
    """
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks, Python ones first; a block cut off by the end of
    the completion counts.

    >>> code_blocks("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nand ```\\nx\\n```")
    ['def f():\\n    return 1\\n', 'x\\n']
    >>> code_blocks("```py\\nprint(1)")  # truncated at max_tokens
    ['print(1)']
    """
    found = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [body for lang, body in found if lang in ("python", "py", "python3")]
    return python + [body for lang, body in found if lang not in ("python", "py", "python3")]
