"""The evaluation harness: scorers (table-driven), data, runs with resume, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mixinputs.backends import Completion, SamplingSettings
from mixinputs.config import MoIConfig
from mixinputs.eval import countdown, gpqa, report, runner
from mixinputs.eval import math as math_eval
from mixinputs.eval.tasks import TASKS, get_task

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


# -- Count Down -----------------------------------------------------------------------------
# (completion, numbers, target, correct under "tinyzero" (the paper's rule), under "lenient")
COUNTDOWN_CASES = [
    ("<answer>(44 - 19) * 3 + 1</answer>", [19, 44, 3, 1], 76, True, True),
    ("<think>try</think> <answer> 44 - 19 + 3 + 1 = 29 </answer>", [19, 44, 3, 1], 29, True, True),
    ("<answer>100 / 4 - 3 * 5</answer>", [100, 4, 3, 5], 10, True, True),
    ("<answer>(8 / 3) * 3 + 0</answer>", [8, 3, 3, 0], 8, True, True),  # 8.000000000000002
    ("<answer>1</answer><answer>(1 + 2) * 3 - 4</answer>", [1, 2, 3, 4], 5, True, True),
    ("<answer>\n(1 + 2)\n* 3 - 4\n</answer>", [1, 2, 3, 4], 5, True, False),  # newlines
    # LaTeX and Unicode operators: the paper's rule scores them 0.
    (r"so the equation is $\boxed{(6 \times 4) \div 2 + 1}$", [6, 4, 2, 1], 13, False, True),
    ("<answer>(6 × 4) / 2 + 1</answer>", [6, 4, 2, 1], 13, False, True),
    (r"<answer>6 \cdot 4 / 2 + 1</answer>", [6, 4, 2, 1], 13, False, True),
    # Both tags: the last \boxed{} overrides the <answer>.
    (r"<answer>(1 + 2) * 3 - 4</answer> So: \boxed{1 + 2 + 3 + 4}", [1, 2, 3, 4], 5, False, True),
    (r"<answer>1 + 2 + 3 + 4</answer> \boxed{(1 + 2) * 3 - 4}", [1, 2, 3, 4], 5, True, False),
    # \boxed{...} ends at the first "}" under the paper's rule.
    (r"\boxed{{(1 + 2) * 3 - 4}}", [1, 2, 3, 4], 5, False, False),
    # "=" in the answer: the left side counts, whatever the right side says.
    ("<answer>(1 + 2) * 3 - 4 = 5</answer>", [1, 2, 3, 4], 5, True, True),
    ("<answer>(1 + 2) * 3 - 4 = 6</answer>", [1, 2, 3, 4], 5, True, True),
    ("<answer>5 = (1 + 2) * 3 - 4</answer>", [1, 2, 3, 4], 5, False, False),
    # A truncated \boxed{ (cut off at max_tokens): the earlier <answer> stands (paper's rule).
    (r"<answer>(1 + 2) * 3 - 4</answer> so \boxed{(1 + 2) * 3", [1, 2, 3, 4], 5, True, True),
    (r"so \boxed{(1 + 2) * 3 - 4", [1, 2, 3, 4], 5, False, False),
    # Repeated, missing and foreign numbers.
    ("<answer>44 - 19 + 3</answer>", [19, 44, 3, 1], 28, False, False),  # a number missing
    ("<answer>44 - 19 + 3 + 3</answer>", [19, 44, 3, 1], 31, False, False),  # a number reused
    ("<answer>3 * 3 + 3 - 1</answer>", [3, 3, 3, 1], 11, True, True),  # given twice, used twice
    ("<answer>(44 - 19) * 3 + 2</answer>", [19, 44, 3, 1], 77, False, False),  # a foreign number
    # Division by zero, powers and huge exponents.
    ("<answer>(1 + 2) / (3 - 3)</answer>", [1, 2, 3, 3], 0, False, False),
    ("<answer>2 ** 3 + 1 - 1</answer>", [2, 3, 1, 1], 8, True, False),  # ** passes its charset
    ("<answer>9 ** 9 ** 9 - 1</answer>", [9, 9, 9, 1], 8, False, False),  # must not hang
    ("<answer>99 ** 99 ** 99 // 1</answer>", [99, 99, 99, 1], 1, False, False),
    ("<answer>7 // 2 + 1 + 1</answer>", [7, 2, 1, 1], 5, True, False),
    # Signs, decimals, digit groups.
    ("<answer>-1 + 2 + 3 + 4</answer>", [1, 2, 3, 4], 8, True, False),  # unary minus
    ("<answer>1.5 * 2 + 3 + 4</answer>", [1, 2, 3, 4], 10, False, False),  # 1.5 is not given
    ("<answer>1,000 - 1 + 2 - 3</answer>", [1000, 1, 2, 3], 998, True, False),
    # Not arithmetic at all.
    ("<answer>__import__('os').system('echo hi')</answer>", [1, 2, 3, 4], 0, False, False),
    ("<answer>(lambda: 1)()</answer>", [1, 2, 3, 4], 1, False, False),
    ("<answer>" + "(" * 300 + "1" + ")" * 300 + "</answer>", [1], 1, False, False),  # too deep
    ("the answer is 1 + 2 + 3 + 4", [1, 2, 3, 4], 10, False, False),  # no tags, no box
    ("<answer></answer>", [1, 2, 3, 4], 10, False, False),
    ("<answer>(1 + 2</answer>", [1, 2, 3, 4], 3, False, False),  # syntax error
    ("<ANSWER>1 + 2 + 3 + 4</ANSWER>", [1, 2, 3, 4], 10, False, True),  # the tag is lower case
]


@pytest.mark.parametrize("completion, numbers, target, tinyzero, lenient", COUNTDOWN_CASES)
def test_countdown_score(completion, numbers, target, tinyzero, lenient):
    assert countdown.score(completion, numbers, target) is tinyzero  # the default: the paper's
    assert countdown.score(completion, numbers, target, scoring="tinyzero") is tinyzero
    assert countdown.score(completion, numbers, target, scoring="lenient") is lenient


def test_countdown_tinyzero_extraction_and_unknown_scoring():
    assert countdown.extract_expression(r"<answer>1+2</answer> \boxed{3 = 3}") == "3"
    assert countdown.extract_expression(r"\boxed{\frac{1}{2}}") == r"\frac{1"
    assert countdown.extract_expression("no answer") is None
    assert countdown.evaluate_tinyzero("2 ** 10") == 1024
    assert countdown.evaluate_tinyzero("2 ** 2 ** 30") is None  # 2**30 bits: refused, not run
    with pytest.raises(ValueError, match="unknown Count Down scoring 'strict'"):
        countdown.score("<answer>1</answer>", [1], 1, scoring="strict")


def test_countdown_generator_is_deterministic_and_solvable():
    a = countdown.generate(200, seed=3)
    assert a == countdown.generate(200, seed=3)
    assert a != countdown.generate(200, seed=4)
    for inst in a:
        assert len(inst.numbers) == 4 and 1 <= inst.target <= 1000
        assert countdown.score(f"<answer>{inst.solution}</answer>", list(inst.numbers), inst.target)


def test_countdown_reads_tinyzero_files(tmp_path):
    rows = [{"nums": [19, 44, 3, 1], "target": 76}, {"nums": [1, 2, 3, 4], "target": 10}]
    (tmp_path / "cd.json").write_text(json.dumps(rows))
    (tmp_path / "cd.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("cd.json", "cd.jsonl"):
        got = countdown.load_tinyzero(tmp_path / name)
        assert [(i.numbers, i.target) for i in got] == [((19, 44, 3, 1), 76), ((1, 2, 3, 4), 10)]
    (tmp_path / "bad.json").write_text(json.dumps([{"numbers": [1], "goal": 2}]))
    with pytest.raises(ValueError, match="row 0 is not a Count Down instance"):
        countdown.load_tinyzero(tmp_path / "bad.json")


# -- math -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        (r"The answer is $\boxed{73}$.", "73", True),
        (r"$\boxed{\frac{1}{2}}$", "0.5", True),
        (r"\boxed{\dfrac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True),
        (r"so $\boxed{\left( 3, \frac{\pi}{2} \right)}$", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"first \boxed{1}, finally \boxed{2}", "2", True),  # the last box counts
        (r"\boxed{\text{(C)}}", r"\text{(C)}", True),
        ("She makes 9 * 2 = $18 a day.\n#### 18", "18", True),  # GSM8K style
        ("so the total is 1,234 dollars", "1234", True),  # last number, thousands separator
        (r"\boxed{17}", "18", False),
        (r"\boxed{x^2 + 1", "x^2+1", False),  # cut off inside the box: the last number is 1
        ("no answer at all", "5", False),
        (r"\boxed{}", "5", False),
    ],
)
def test_math_score(completion, gold, expected):
    assert math_eval.score(completion, gold) is expected


# -- GPQA ---------------------------------------------------------------------------------------
def test_gpqa_shuffles_under_a_seed_and_extracts_letters(tmp_path):
    q = gpqa.Question("Which is even?", "4", ("3", "5", "7"))
    orders = {tuple(gpqa.shuffled(q, seed, "x")[0]) for seed in range(20)}
    assert len(orders) > 1
    prompt, gold = gpqa.render(q, 1, "x")
    assert f"{gold}) 4" in prompt
    assert gpqa.score(f"reasoning... \\boxed{{{gold}}}", gold)
    assert not gpqa.score("\\boxed{E}", gold)
    assert gpqa.extract_letter("The answer is (d).") == "D"


def test_gpqa_loads_user_files_in_both_layouts(tmp_path):
    hub = [
        {
            "Question": "Q1?",
            "Correct Answer": "yes",
            "Incorrect Answer 1": "a",
            "Incorrect Answer 2": "b",
            "Incorrect Answer 3": "c",
        }
    ]
    (tmp_path / "hub.json").write_text(json.dumps(hub))
    assert gpqa.load(tmp_path / "hub.json")[0] == gpqa.Question("Q1?", "yes", ("a", "b", "c"))
    (tmp_path / "bad.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(ValueError, match="row 0 is not a GPQA question"):
        gpqa.load(tmp_path / "bad.json")


@pytest.mark.skipif(not (SHARED / "gpqa_diamond.json").exists(), reason="no local GPQA copy")
def test_gpqa_diamond_from_a_local_copy():
    questions = gpqa.load(SHARED / "gpqa_diamond.json")
    assert len(questions) == 198
    items = get_task("gpqa").load(str(SHARED / "gpqa_diamond.json"), 0)
    assert all(item.gold in "ABCD" for item in items)
    assert "A) " in items[0].prompt and "\nA. " not in items[0].prompt


def test_gpqa_is_not_shipped():
    data = Path(runner.__file__).parent / "data"
    assert not list(data.glob("*gpqa*"))


def test_shipped_tasks_load():
    sizes = {name: len(TASKS[name].load(None, 0)) for name in ("aime", "math500", "gsm8k")}
    assert sizes == {"aime": 30, "math500": 500, "gsm8k": 1319}
    cd = TASKS["countdown"].load(None, 0)
    assert len(cd) == 1000 and cd[0].meta["numbers"]
    with pytest.raises(ValueError, match="unknown task"):
        get_task("mmlu")


# -- runs and the report ------------------------------------------------------------------------
class EchoSolver:
    """A deterministic backend for the run logic: answers Count Down with the known solution when
    MoI is on, a wrong equation otherwise; records each submission's size, and finishes requests
    in reverse order (so records must be matched by index, not by position)."""

    name, model = "echo", "echo"

    def __init__(self, interrupt_after: int | None = None):
        self.submissions: list[int] = []
        self.interrupt_after = interrupt_after
        self.solutions = {
            f"{list(i.numbers)}|{i.target}": i.solution for i in countdown.generate(50, seed=0)
        }

    def chat_prompt(self, message: str) -> str:
        return f"<user>{message}</user>"

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        return [self._answer(p, settings) for p in prompts]

    def generate_stream(self, requests):
        self.submissions.append(len(requests))
        for n, index in enumerate(reversed(range(len(requests)))):
            if self.interrupt_after is not None and n == self.interrupt_after:
                raise KeyboardInterrupt
            yield index, self._answer(*requests[index])

    def _answer(self, prompt: str, settings: SamplingSettings) -> Completion:
        key = (
            prompt.split("Using the numbers ")[1].split(", create")[0]
            + "|"
            + prompt.split("equals ")[1].split(".")[0]
        )
        good = settings.moi is not None and (settings.seed or 0) % 2 == 0
        answer = self.solutions[key] if good else "1 + 1"
        return Completion(f"<answer>{answer}</answer>", 7)


def run_countdown(out, backend=None, **kw):
    """A Count Down run through ``runner.run_task`` with the test defaults."""
    options = {
        "configs": runner.plan_configs([1.0], [0.6], [0.95]),
        "seeds": [0],
        "limit": 3,
        "progress": False,
        **kw,
    }
    return runner.run_task(get_task("countdown"), backend or EchoSolver(), out, **options)


def test_run_is_one_submission_and_resumes(tmp_path):
    out = tmp_path / "run.jsonl"
    configs = runner.plan_configs([0.5, 2.0], [0.6], [0.95])
    backend = EchoSolver()
    added = run_countdown(out, backend, configs=configs, seeds=[0, 1], limit=5)
    assert added == 3 * 2 * 5
    assert backend.submissions == [30]  # every config and seed in one submission
    records = runner.read_records(out)
    assert len(records) == 30
    r = records[0]
    assert r["prompt"].startswith("<user>Using the numbers") and r["tokens"] == 7
    assert r["scoring"] == "tinyzero"
    assert set(r) >= {
        "task",
        "item_id",
        "config",
        "seed",
        "prompt",
        "completion",
        "extracted",
        "correct",
        "tokens",
        "request",
        "settings",
    }
    assert r["settings"]["max_tokens"] == 2048 and r["settings"]["backend"] == "echo"
    for r in records:  # each record carries its own sample's answer, whatever the finish order
        assert r["correct"] is (r["config"]["method"] == "moi" and r["seed"] == 0)
    # Interrupt: drop the last records and cut a line in half, then resume.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-4]) + "\n" + lines[-4][:20])
    added = run_countdown(out, backend, configs=configs, seeds=[0, 1], limit=5)
    assert added == 4 and backend.submissions[-1] == 4
    keys = [(r["item_id"], r["config_key"], r["seed"]) for r in runner.read_records(out)]
    assert len(keys) == len(set(keys)) == 30
    assert run_countdown(out, backend, configs=configs, seeds=[0, 1], limit=5) == 0
    assert len(backend.submissions) == 2  # nothing left: nothing submitted


def test_records_are_written_as_samples_finish(tmp_path):
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_countdown(out, EchoSolver(interrupt_after=4), limit=5)
    assert len(runner.read_records(out)) == 4  # what finished before the interrupt is kept
    assert run_countdown(out, EchoSolver(), limit=5) == 10 - 4


def test_scoring_is_named_switchable_and_never_mixed(tmp_path):
    out = tmp_path / "run.jsonl"
    latex = EchoSolver()
    latex._answer = lambda prompt, settings: Completion(r"<answer>3 \times 1</answer>", 5)
    run_countdown(out, latex, scoring="lenient")
    records = runner.read_records(out)
    assert {r["scoring"] for r in records} == {"lenient"}
    table = report.markdown(records)
    assert "countdown (lenient)" in table and "not the paper's rule" in table
    with pytest.raises(ValueError, match="scored 'lenient', not 'tinyzero'"):
        run_countdown(out, EchoSolver())  # resuming under another scoring would mix them
    assert runner.rescore(out, scoring="tinyzero") == (6, 0)
    assert {r["scoring"] for r in runner.read_records(out)} == {"tinyzero"}
    assert "countdown (tinyzero)" in report.markdown(runner.read_records(out))
    with pytest.raises(ValueError, match="no task here has the scoring 'sandbox'"):
        run_countdown(out, EchoSolver(), scoring="sandbox")


def test_report_statistics(tmp_path):
    from scipy.stats import binomtest

    out = tmp_path / "run.jsonl"
    run_countdown(out, seeds=[0, 1], limit=10)
    records = runner.read_records(out)
    accs = {a.config_key: a for a in report.accuracies(records)}
    moi, std = accs["moi|beta=1|T=0.6|top_p=0.95"], accs["standard|T=0.6|top_p=0.95"]
    assert (moi.correct, moi.n, std.correct, std.n) == (10, 20, 0, 20)
    assert moi.task == "countdown (tinyzero)"
    wilson = binomtest(10, 20).proportion_ci(method="wilson")
    assert (moi.low, moi.high) == pytest.approx((wilson.low, wilson.high))
    (pair,) = report.paired(records)
    assert (pair.only_moi, pair.only_standard, pair.n) == (10, 0, 20)
    assert pair.diff == pytest.approx(0.5)
    assert pair.p_value == pytest.approx(binomtest(10, 10).pvalue)  # exact McNemar
    assert pair.low < 0.5 < pair.high or pair.low == pair.high == 0.5
    table = report.markdown(records)
    assert "| Gain vs. Standard | +50.00 |" in table
    assert "Scoring `tinyzero`: the TinyZero reward rule" in table
    png = report.plot(records, tmp_path / "plot.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_rescore_uses_current_scorers(tmp_path):
    out = tmp_path / "run.jsonl"
    run_countdown(out)
    records = runner.read_records(out)
    for r in records:  # pretend an older scorer got every verdict wrong
        r["correct"] = not r["correct"]
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert runner.rescore(out) == (6, 6)
    assert runner.rescore(out) == (6, 0)


def test_hf_style_backends_stream_grouped_by_settings():
    from mixinputs.backends import stream_by_settings

    backend = EchoSolver()
    item = get_task("countdown").load(None, 0)[0]
    settings = [SamplingSettings(seed=s, moi=m) for s in (0, 1) for m in (None, MoIConfig())]
    requests = [(item.prompt, st) for st in settings for _ in range(3)]
    got = dict(stream_by_settings(backend, requests, batch_size=2))
    assert sorted(got) == list(range(12))
    for index, (_, st) in enumerate(requests):
        assert got[index] == backend._answer(item.prompt, st)


@pytest.mark.slow
def test_cli_end_to_end_on_the_embedded_model_hf(tmp_path):
    """The command as a user runs it: quiet (the model's own output goes to a log), a complete
    file is not run again (no model is loaded), and another --max-tokens is refused in a line."""
    import subprocess
    import sys

    from mixinputs.eval.methods import method_label, parse_method

    out = tmp_path / "hf.jsonl"
    spec = "moi+gumbel@thinking:think_end=49151"
    argv = "eval --task countdown,gsm8k --backend hf --limit 1 --max-tokens 12 --beta 1 "
    argv = [*argv.split(), "--method", f"moi,{spec}", "--out", str(out)]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mixinputs", *args], capture_output=True, text=True, timeout=600
        )

    first = cli(*argv)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting transformers on SmolLM2-135M-Instruct-bf16" in first.stderr
    assert "Loading weights" not in first.stderr  # transformers' own bar went to the log
    assert "eval: 100%" in first.stderr  # the run's progress bar reaches the terminal
    records = runner.read_records(out)
    assert len(records) == 2 * 1 * 3
    assert {r["backend"] for r in records} == {"hf"}
    methods = {r["config"]["method"] for r in records}
    assert methods == {"standard", "moi", method_label(parse_method(spec), beta=False)}
    settings = records[0]["settings"]
    assert (
        settings["max_tokens"] == 12
        and settings["dtype"]
        and settings["model"].startswith("SmolLM2-135M-Instruct-bf16@")
    )
    assert out.with_suffix(".md").read_text().count("|") > 10
    assert out.with_suffix(".png").exists()

    again = cli(*argv)  # every sample is on disk: nothing to generate, no model loaded
    assert again.returncode == 0 and "0 new samples" in again.stdout
    assert "starting transformers" not in again.stderr

    shorter = cli(*[("8" if a == "12" else a) for a in argv])
    assert shorter.returncode == 2
    assert shorter.stderr.strip().splitlines() == [
        f"error: {out} was made with other settings: max_tokens 12 (this command: 8); write to "
        f"another --out, or read this one with `mixinputs eval report {out}` "
        f"(`mixinputs eval rescore {out}` re-scores it)"
    ]
    assert len(runner.read_records(out)) == 6  # untouched

    from mixinputs.cli import main

    assert main(["eval", "rescore", str(out)]) == 0


@pytest.mark.slow
@pytest.mark.vllm
def test_cli_end_to_end_on_the_embedded_model_vllm(tmp_path):
    pytest.importorskip("vllm")
    from mixinputs.cli import main

    out = tmp_path / "vllm.jsonl"
    argv = "eval --task countdown --backend vllm --limit 3 --seeds 0,1 --max-tokens 16 "
    argv += "--beta 0.5,2 --out"
    assert main([*argv.split(), str(out)]) == 0
    records = runner.read_records(out)
    assert len(records) == 3 * 2 * 3
    moi = [r["completion"] for r in records if r["config"]["method"] == "moi"]
    std = [r["completion"] for r in records if r["config"]["method"] == "standard"]
    assert moi and std and set(moi) != set(std)


# -- methods as data ------------------------------------------------------------------------------
def test_method_specs_name_every_method_of_the_family():
    from mixinputs.eval.methods import parse_method

    assert parse_method("standard") is None
    assert parse_method(" moi ") == MoIConfig()
    assert parse_method("direct") == MoIConfig(mode="direct")
    soft = parse_method("soft")
    assert (soft.mode, soft.top_k, soft.prior, soft.noise) == ("soft", 10, "sampling", "none")
    for noise in ("dirichlet", "gumbel"):
        for mode in ("moi", "soft"):
            assert parse_method(f"{mode}+{noise}") == MoIConfig(mode=mode, noise=noise)
    assert parse_method("moi@all") == MoIConfig()
    assert parse_method("direct@thinking").region == "thinking"
    noisy = parse_method("soft+gumbel@thinking:think_end=7:noise_temperature=0.25")
    assert (noisy.noise, noisy.noise_temperature, noisy.region, noisy.think_end) == (
        "gumbel",
        0.25,
        "thinking",
        7,
    )
    assert parse_method("moi@thinking:think_end=<end>").think_end == "<end>"
    cold = parse_method("soft@thinking:cold_stop_entropy=0.01:cold_stop_steps=256")
    assert (cold.cold_stop_entropy, cold.cold_stop_steps) == (0.01, 256)
    # The label form (what reports print) names the same config as the colon form.
    assert parse_method("soft@thinking(cold_stop_entropy=0.01, cold_stop_steps=64)") == (
        parse_method("soft@thinking:cold_stop_entropy=0.01:cold_stop_steps=64")
    )
    assert parse_method("moi:beta=inf").beta == float("inf")
    assert parse_method("moi:beta=0.5:prior=sampling").prior == "sampling"
    assert parse_method("direct:top_k=5").top_k == 5


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("blend", "unknown mode 'blend'"),
        ("soft+uniform", "unknown noise 'uniform'"),
        ("moi@sometimes", "unknown region 'sometimes'"),
        ("soft:temperature=2", "bad option 'temperature=2'"),
        ("soft:beta", "bad option 'beta'"),
        ("soft:top_k=", "bad option 'top_k='"),
        ("soft:noise=gumbel", "goes in the name"),
        ("moi:beta=1:beta=2", "given twice"),
        ("soft(top_k=5", "parentheses"),
        ("soft(top_k=5)(beta=1)", "parentheses"),
        ("direct+gumbel", "noise"),
        ("moi:cold_stop_entropy=0.1", "region"),
        ("soft:top_k=0", "top_k"),
        ("moi:beta=-1", "beta must be >= 0"),
        # A key of another method is refused as the server refuses it, not dropped.
        ("moi:selar_threshold=0.7", "mixinputs_selar_threshold belongs to mode 'selar'"),
        ("selar:swir_window=3", "mixinputs_swir_window belongs to mode 'swir'"),
        ("moi:think_end=5", "needs mixinputs_region='thinking'"),
        ("moi:cold_stop_steps=5", "needs mixinputs_cold_stop_entropy"),
        ("moi:bta=2", "bad option 'bta=2' (did you mean 'beta'?)"),
        ("mio", "unknown mode 'mio' (did you mean 'moi'?)"),
        ("soft+gumbl", "unknown noise 'gumbl' (did you mean 'gumbel'?)"),
    ],
)
def test_bad_method_specs_say_what_is_wrong(spec, names):
    from mixinputs.eval.methods import MethodSpecError, parse_method

    with pytest.raises(MethodSpecError, match=re.escape(names)) as err:
        parse_method(spec)
    assert f"bad method {spec!r}" in str(err.value)
    if "unknown" in names or "option" in names:
        assert "valid forms: standard | MODE[+NOISE][@REGION]" in str(err.value)


def test_an_empty_method_list_is_an_error():
    from mixinputs.eval.methods import MethodSpecError, parse_methods

    with pytest.raises(MethodSpecError, match="no method given; valid forms"):
        parse_methods(" , ")


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ("standard", "standard"),
        ("moi", "moi"),
        ("moi:beta=1", "moi"),
        ("moi:beta=2", "moi(beta=2)"),
        ("moi:beta=inf:top_k=5", "moi(beta=inf, top_k=5)"),
        ("direct", "direct"),
        ("direct:top_k=20", "direct"),
        ("soft", "soft"),
        ("soft:top_k=10", "soft"),
        ("soft:top_k=20", "soft(top_k=20)"),
        ("soft+gumbel", "soft+gumbel"),
        ("soft+gumbel:noise_temperature=0.5", "soft+gumbel"),
        ("soft+dirichlet:noise_temperature=0.5", "soft+dirichlet(noise_temperature=0.5)"),
        ("moi@thinking", "moi@thinking"),
        ("moi@thinking:think_end=151668", "moi@thinking(think_end=151668)"),
        (
            "moi@thinking:cold_stop_steps=256:cold_stop_entropy=0.01",
            "moi@thinking(cold_stop_entropy=0.01)",
        ),
        (
            "moi+gumbel@thinking:cold_stop_entropy=0.125:cold_stop_steps=64",
            "moi+gumbel@thinking(cold_stop_entropy=0.125, cold_stop_steps=64)",
        ),
    ],
)
def test_labels_are_stable_and_parse_back(spec, label):
    from mixinputs.eval.methods import method_label, parse_method

    config = parse_method(spec)
    assert method_label(config) == label
    assert parse_method(label) == config  # what a report prints can be asked for again
    if config is not None and label != "standard":
        assert label.startswith(config.name)


def test_a_multi_method_plan_is_one_config_per_method_and_setting():
    specs = ["moi", "direct", "soft", "soft+gumbel", "moi@thinking:think_end=5", "moi:beta=4"]
    configs = runner.plan_configs([0.5, 2.0], [0.6, 1.0], [0.8, 0.95], methods=specs)
    # per (T, top-p): standard, moi x 2 betas, direct, soft, soft+gumbel, moi@thinking x 2 betas,
    # and moi at beta 4
    assert len(configs) == 4 * 9
    assert len({c.key for c in configs}) == len(configs)
    at = [c for c in configs if (c.temperature, c.top_p) == (1.0, 0.8)]
    assert [c.key.rsplit("|T=", 1)[0] for c in at] == [
        "standard",
        "moi|beta=0.5",
        "moi|beta=2",
        "direct",
        "soft",
        "soft+gumbel",
        "moi@thinking(think_end=5)|beta=0.5",
        "moi@thinking(think_end=5)|beta=2",
        "moi|beta=4",
    ]
    by_key = {c.key: c.moi() for c in at}
    assert by_key["standard|T=1|top_p=0.8"] is None
    assert by_key["moi|beta=4|T=1|top_p=0.8"] == MoIConfig(beta=4)
    assert by_key["moi@thinking(think_end=5)|beta=2|T=1|top_p=0.8"] == MoIConfig(
        beta=2, region="thinking", think_end=5
    )
    assert by_key["soft+gumbel|T=1|top_p=0.8"] == MoIConfig(mode="soft", noise="gumbel")


def test_method_and_direct_flags_combine():
    keys = lambda cs: [c.key.split("|T=")[0] for c in cs]  # noqa: E731
    plain = runner.plan_configs([1.0], [0.6], [0.95])
    assert keys(plain) == ["standard", "moi|beta=1"]
    assert keys(runner.plan_configs([1.0], [0.6], [0.95], methods=["moi"])) == keys(plain)
    with_direct = runner.plan_configs([1.0], [0.6], [0.95], direct=True)
    assert keys(with_direct) == ["standard", "direct", "moi|beta=1"]
    # --direct and --method direct, or moi twice: each config once
    twice = runner.plan_configs([1.0], [0.6], [0.95], True, ["moi,direct", "moi:beta=1"])
    assert keys(twice) == ["standard", "direct", "moi|beta=1"]
    assert keys(runner.plan_configs([1.0], [0.6], [0.95], methods=["soft"])) == [
        "standard",
        "soft",
    ]
    assert keys(runner.plan_configs([1.0], [0.6], [0.95], methods=["standard"])) == ["standard"]
    with pytest.raises(ValueError, match="unknown noise 'uniform'"):
        runner.plan_configs([1.0], [0.6], [0.95], methods=["soft", "soft+uniform"])


class MethodEcho(EchoSolver):
    """Solves Count Down for one method only, and records the mixing config of each request."""

    def __init__(self, solves: str):
        super().__init__()
        self.solves = solves
        self.sent: list[MoIConfig | None] = []

    def _answer(self, prompt, settings):
        from mixinputs.eval.methods import method_label

        self.sent.append(settings.moi)
        label = method_label(settings.moi, beta=False)
        good = label == self.solves
        key = prompt.split("Using the numbers ")[1].split(", create")[0]
        key += "|" + prompt.split("equals ")[1].split(".")[0]
        return Completion(f"<answer>{self.solutions[key] if good else '1 + 1'}</answer>", 7)


def test_methods_run_side_by_side_in_one_run_and_one_report(tmp_path):
    out = tmp_path / "run.jsonl"
    specs = ["moi", "direct", "soft", "moi+gumbel@thinking:think_end=5"]
    configs = runner.plan_configs([1.0], [0.6], [0.95], methods=specs)
    backend = MethodEcho(solves="moi+gumbel@thinking(think_end=5)")
    assert run_countdown(out, backend, configs=configs, limit=4) == 4 * 5
    assert backend.submissions == [20]  # every method in one submission
    assert {str(c) for c in backend.sent} == {str(c.moi()) for c in configs}
    records = runner.read_records(out)
    methods = {r["config"]["method"] for r in records}
    assert methods == {"standard", "moi", "direct", "soft", "moi+gumbel@thinking(think_end=5)"}
    for r in records:  # a record's config names the method it ran; its key is the config's
        assert runner.DecodeConfig(**r["config"]).key == r["config_key"]
        assert r["correct"] is (r["config"]["method"] == "moi+gumbel@thinking(think_end=5)")
        config = runner.DecodeConfig(**r["config"]).moi()
        assert r["request"] == (config.to_request() if config else {"mixinputs_mode": "off"})
    pairs = {p.moi_key: p for p in report.paired(records)}
    assert set(pairs) == {c.key for c in configs} - {"standard|T=0.6|top_p=0.95"}
    assert all(p.standard_key == "standard|T=0.6|top_p=0.95" for p in pairs.values())
    assert pairs["moi+gumbel@thinking(think_end=5)|beta=1|T=0.6|top_p=0.95"].only_moi == 4
    assert pairs["soft|T=0.6|top_p=0.95"].only_moi == 0
    moi_gumbel = next(r for r in records if r["config"]["method"].startswith("moi+gumbel"))
    assert moi_gumbel["request"]["mixinputs_noise_temperature"] == 0.5  # defaults are recorded
    table = report.markdown(records)
    for c in configs:  # the accuracy table and the paired table list each (| escaped)
        assert f"| {report.md_cell(c.key)} |" in table
    assert "| moi+gumbel@thinking(think_end=5) − standard (best config) | +100.00 |" in table
    assert "| direct − standard (best config) | +0.00 |" in table
    assert "| MoI (best beta) | 0.00 |" in table
    png = report.plot(records, tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# Records as `eval run` wrote them before methods were data (standard, MoI and direct only).
OLD_RECORDS = [
    {
        "task": "countdown",
        "scoring": "tinyzero",
        "item_id": str(item),
        "config_key": key,
        "config": config,
        "seed": 0,
        "prompt": "<user>Using the numbers [1, 2, 3, 4], create an equation that equals 5.</user>",
        "completion": f"<answer>{answer}</answer>",
        "extracted": answer,
        "correct": answer != "1 + 1",
        "gold": 5,
        "meta": {"numbers": [1, 2, 3, 4], "target": 5},
        "tokens": 7,
        "model": "m",
        "backend": "vllm",
    }
    for item in range(3)
    for key, config, answer in [
        (
            "standard|T=0.6|top_p=0.95",
            {"method": "standard", "temperature": 0.6, "top_p": 0.95, "beta": None},
            "1 + 1",
        ),
        (
            "direct|T=0.6|top_p=0.95",
            {"method": "direct", "temperature": 0.6, "top_p": 0.95, "beta": None},
            "1 + 1",
        ),
        (
            "moi|beta=2|T=0.6|top_p=0.95",
            {"method": "moi", "temperature": 0.6, "top_p": 0.95, "beta": 2.0},
            "(1 + 2) * 3 - 4",
        ),
    ]
]


def test_old_result_files_still_rescore_and_report_but_never_resume(tmp_path):
    out = tmp_path / "old.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in OLD_RECORDS))
    # No settings recorded: nothing can tell whether its samples match a command.
    with pytest.raises(runner.ResumeError, match="before records carried their generation"):
        run_countdown(out)
    assert runner.rescore(out) == (9, 0)
    records = runner.read_records(out)
    for r in records:
        config = runner.DecodeConfig(**r["config"])
        assert config.key == r["config_key"]  # a new run with the same flags resumes the file
    assert runner.DecodeConfig(**OLD_RECORDS[2]["config"]).moi() == MoIConfig(beta=2)
    assert runner.DecodeConfig(**OLD_RECORDS[1]["config"]).moi() == MoIConfig(mode="direct")
    new = {c.key for c in runner.plan_configs([2.0], [0.6], [0.95], direct=True)}
    assert new == {r["config_key"] for r in records}
    table = report.markdown(records)
    assert "| MoI (best beta) | 100.00 |" in table
    assert "| direct − standard (best config) | +0.00 |" in table
    assert report.plot(records, tmp_path / "old.png").stat().st_size > 1000


def test_eval_cli_refuses_a_bad_method_before_loading_a_model(capsys):
    from mixinputs.cli import main

    assert main(["eval", "run", "--task", "countdown", "--method", "moi,soft@later"]) == 2
    assert "unknown region 'later'" in capsys.readouterr().err
