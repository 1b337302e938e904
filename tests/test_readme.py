"""The README's Hugging Face snippet runs as printed, on the embedded model, and prints text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(section: str, language: str = "python") -> str:
    """The first ``language`` code block under the README heading ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    found = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    assert found, f"no {language} block under {section!r}"
    return found.group(1)


@pytest.mark.slow
def test_the_readme_hf_snippet_runs_as_printed_and_prints_text(tmp_path):
    pytest.importorskip("transformers")
    code = readme_block("Hugging Face transformers")
    assert "embedded_model_path()" in code and "apply_chat_template" in code
    script = tmp_path / "snippet.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    assert printed, done.stderr[-2000:]  # the model answered (not an immediate end of text)
