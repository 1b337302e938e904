"""The README and the pages of docs/ hold: the transformers snippet runs as printed, on the
embedded model, and prints text; every ``mixinputs`` command and ``make`` target shown exists as
shown; every relative link resolves; the generated tables sit between their markers."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```.*?^```\n?", re.M | re.S)  # a fence, from its opening line to its closing


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [
        (m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
    ]


def page_block(page: Path, section: str, language: str = "python") -> str:
    """The first ``language`` code block under the heading ``section`` (any level) of ``page``."""
    text = page.read_text()
    heading = re.search(rf"^#+ {re.escape(section)}\n", text, re.M)
    assert heading, f"no heading {section!r} in {page.name}"
    found = re.search(rf"```{language}\n(.*?)```", text[heading.end() :], re.S)
    assert found, f"no {language} block under {section!r} in {page.name}"
    return found.group(1)


@pytest.mark.slow
def test_the_hf_snippet_runs_as_printed_and_prints_text(tmp_path):
    pytest.importorskip("transformers")
    code = page_block(DOCS / "hf.md", "The snippet")
    assert "embedded_model_path()" in code and "apply_chat_template" in code
    script = tmp_path / "snippet.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    assert printed, done.stderr[-2000:]  # the model answered (not an immediate end of text)


# -- the commands shown ---------------------------------------------------------------------------
def shell_lines(page: Path) -> list[str]:
    """Every command of the page's shell blocks (```bash or plain fences, 4-space indented blocks),
    continuation lines joined, comments dropped, ``&&`` and ``$(`` starting a command."""
    text = page.read_text()
    blocks = [body for lang, body in fenced_blocks(text) if lang in ("", "bash", "sh", "shell")]
    outside = FENCE.sub("", text)
    blocks += re.findall(r"(?:^\n)((?:    .+\n)+)", outside, re.M)
    lines = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line.strip())
            lines += [part.strip() for part in re.split(r"&&|\$\(", line) if part.strip()]
    return lines


def shown_commands(program: str) -> list[tuple[str, str]]:
    return [
        (page.relative_to(ROOT).as_posix(), line)
        for page in PAGES
        for line in shell_lines(page)
        if line.startswith(program + " ")
    ]


def test_pages_show_commands():
    assert any(line.startswith("mixinputs demo") for _, line in shown_commands("mixinputs"))
    assert ("README.md", "make demo") in shown_commands("make")


@pytest.mark.parametrize("page, line", shown_commands("mixinputs"))
def test_every_mixinputs_command_shown_parses(page, line, capsys):
    """Each ``mixinputs`` command of the README and docs/ is one the CLI takes, options and all
    (``...`` stands for the options a reader fills in; ``setup / cleanup`` names two commands)."""
    from mixinputs.cli import build_parser

    argv = shlex.split(line.split("|")[0].split("...")[0])[1:]
    for words in [[w] for w in argv if w != "/"] if "/" in argv else [argv]:
        if words[:1] == ["eval"] and (
            len(words) == 1 or words[1] not in ("run", "rescore", "report")
        ):
            words.insert(1, "run")  # as mixinputs.cli.main does
        try:
            build_parser().parse_args(words)
        except SystemExit as e:
            error = capsys.readouterr().err
            if "..." in line and "arguments are required" in error:
                continue  # the reader fills them in
            pytest.fail(f"{page}: `{line}` does not parse (exit {e.code}): {error}")


@pytest.mark.parametrize("page, line", shown_commands("make"))
def test_every_make_target_shown_exists(page, line):
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert shlex.split(line)[1] in targets, f"{page}: `{line}`"


@pytest.mark.parametrize("page, line", shown_commands("python"))
def test_every_script_shown_exists(page, line):
    argv = shlex.split(line)
    if argv[1] == "-m" and argv[2].startswith("mixinputs."):
        assert (ROOT / "src" / (argv[2].replace(".", "/") + ".py")).exists(), f"{page}: `{line}`"
    elif argv[1].endswith(".py"):
        assert (ROOT / argv[1]).exists(), f"{page}: `{line}`"


# -- links and anchors ----------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.*)$", FENCE.sub("", page.read_text()), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    return [
        target
        for target in re.findall(r"\]\(([^)\s]+)\)", text)
        if not re.match(r"[a-z]+:", target)
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} names no file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}: no such heading"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert not {p.resolve() for p in PAGES[1:]} - linked


# -- the generated tables -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "page, name, header",
    [
        (README, "methods-table", "| method | request keys | `--method` |"),
        (DOCS / "methods.md", "request-keys", "| key | modes | values | default |"),
    ],
)
def test_generated_tables_sit_alone_between_their_markers(page, name, header):
    lines = page.read_text().splitlines()
    start = lines.index(f"<!-- generated: {name} -->")
    end = lines.index("<!-- end generated -->", start)
    table = lines[start + 1 : end]
    assert table[0].startswith(header) and len(table) > 2
    assert all(line.startswith("|") for line in table), "only the table between the markers"


@pytest.mark.parametrize("page", [README, DOCS / "methods.md"])
def test_generated_tables_equal_the_method_registry(page):
    """The methods table and the request-key table are the registry's (``mixinputs.methods``):
    a method added, moved or changed shows in the docs, or this fails. Regenerate them with
    ``python -m mixinputs.methods``."""
    from mixinputs.methods import write_tables

    write_tables(page.read_text(), check=True)


def test_a_changed_registry_makes_the_table_check_fail(monkeypatch):
    import mixinputs.methods as registry

    text = README.read_text()
    monkeypatch.setattr(registry.SELAR, "title", "SeLaR (renamed)")
    with pytest.raises(ValueError, match="methods-table"):
        registry.write_tables(text, check=True)
