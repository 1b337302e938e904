"""The evaluation harness: scorers (table-driven), data, runs with resume, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixinputs.backends import Completion, SamplingSettings
from mixinputs.eval import countdown, gpqa, report, runner
from mixinputs.eval import math as math_eval
from mixinputs.eval.tasks import TASKS, get_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# -- Count Down -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, numbers, target, expected",
    [
        ("<answer>(44 - 19) * 3 + 1</answer>", [19, 44, 3, 1], 76, True),
        ("<think>try</think> <answer> 44 - 19 + 3 + 1 = 29 </answer>", [19, 44, 3, 1], 29, True),
        (r"so the equation is $\boxed{(6 \times 4) \div 2 + 1}$", [6, 4, 2, 1], 13, True),
        ("<answer>100 / 4 - 3 * 5</answer>", [100, 4, 3, 5], 10, True),
        ("<answer>(8 / 3) * 3 + 0</answer>", [8, 3, 3, 0], 8, True),  # exact fractions
        ("<answer>1</answer><answer>(1 + 2) * 3 - 4</answer>", [1, 2, 3, 4], 5, True),  # last tag
        ("<answer>44 - 19 + 3</answer>", [19, 44, 3, 1], 28, False),  # a number missing
        ("<answer>44 - 19 + 3 + 3</answer>", [19, 44, 3, 1], 31, False),  # a number reused
        ("<answer>(44 - 19) * 3 + 2</answer>", [19, 44, 3, 1], 77, False),  # a foreign number
        ("<answer>(1 + 2) / (3 - 3)</answer>", [1, 2, 3, 3], 0, False),  # division by zero
        ("<answer>2 ** 3 + 1 - 1</answer>", [2, 3, 1, 1], 8, False),  # power is not allowed
        ("<answer>-1 + 2 + 3 + 4</answer>", [1, 2, 3, 4], 8, False),  # no unary minus
        ("<answer>__import__('os').system('echo hi')</answer>", [1, 2, 3, 4], 0, False),
        ("<answer>(lambda: 1)()</answer>", [1, 2, 3, 4], 1, False),
        ("<answer>1.5 * 2 + 3 + 4</answer>", [1, 2, 3, 4], 10, False),  # floats are not given
        ("<answer>" + "(" * 300 + "1" + ")" * 300 + "</answer>", [1], 1, False),  # too long
        ("the answer is 1 + 2 + 3 + 4", [1, 2, 3, 4], 10, False),  # no tags, no box
        ("<answer></answer>", [1, 2, 3, 4], 10, False),
        ("<answer>(1 + 2</answer>", [1, 2, 3, 4], 3, False),  # syntax error
    ],
)
def test_countdown_score(completion, numbers, target, expected):
    assert countdown.score(completion, numbers, target) is expected


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
    MoI is on, a wrong equation otherwise; counts its calls."""

    name, model = "echo", "echo"

    def __init__(self):
        self.calls = 0
        self.solutions = {
            f"{list(i.numbers)}|{i.target}": i.solution for i in countdown.generate(50, seed=0)
        }

    def chat_prompt(self, message: str) -> str:
        return f"<user>{message}</user>"

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        self.calls += 1
        out = []
        for p in prompts:
            key = (
                p.split("Using the numbers ")[1].split(", create")[0]
                + "|"
                + p.split("equals ")[1].split(".")[0]
            )
            good = settings.moi is not None and (settings.seed or 0) % 2 == 0
            answer = self.solutions[key] if good else "1 + 1"
            out.append(Completion(f"<answer>{answer}</answer>", 7))
        return out


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


def test_run_writes_records_and_resumes(tmp_path):
    out = tmp_path / "run.jsonl"
    configs = runner.plan_configs([0.5, 2.0], [0.6], [0.95])
    backend = EchoSolver()
    added = run_countdown(out, backend, configs=configs, seeds=[0, 1], limit=5, batch_size=2)
    assert added == 3 * 2 * 5
    records = runner.read_records(out)
    assert len(records) == 30
    r = records[0]
    assert r["prompt"].startswith("<user>Using the numbers") and r["tokens"] == 7
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
    }
    # Interrupt: drop the last records and cut a line in half, then resume.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-4]) + "\n" + lines[-4][:20])
    calls = backend.calls
    added = run_countdown(out, backend, configs=configs, seeds=[0, 1], limit=5, batch_size=2)
    assert added == 4 and backend.calls - calls <= 2
    keys = [(r["item_id"], r["config_key"], r["seed"]) for r in runner.read_records(out)]
    assert len(keys) == len(set(keys)) == 30
    assert run_countdown(out, backend, configs=configs, seeds=[0, 1], limit=5) == 0


def test_report_statistics(tmp_path):
    from scipy.stats import binomtest

    out = tmp_path / "run.jsonl"
    run_countdown(out, seeds=[0, 1], limit=10)
    records = runner.read_records(out)
    accs = {a.config_key: a for a in report.accuracies(records)}
    moi, std = accs["moi|beta=1|T=0.6|top_p=0.95"], accs["standard|T=0.6|top_p=0.95"]
    assert (moi.correct, moi.n, std.correct, std.n) == (10, 20, 0, 20)
    wilson = binomtest(10, 20).proportion_ci(method="wilson")
    assert (moi.low, moi.high) == pytest.approx((wilson.low, wilson.high))
    (pair,) = report.paired(records)
    assert (pair.only_moi, pair.only_standard, pair.n) == (10, 0, 20)
    assert pair.diff == pytest.approx(0.5)
    assert pair.p_value == pytest.approx(binomtest(10, 10).pvalue)  # exact McNemar
    assert pair.low < 0.5 < pair.high or pair.low == pair.high == 0.5
    table = report.markdown(records)
    assert "| Gain vs. Standard | +50.00 |" in table
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


@pytest.mark.slow
def test_cli_end_to_end_on_the_embedded_model_hf(tmp_path):
    from mixinputs.cli import main

    out = tmp_path / "hf.jsonl"
    argv = "eval --task countdown,gsm8k --backend hf --limit 2 --max-tokens 12 --beta 1 --out"
    assert main([*argv.split(), str(out)]) == 0
    records = runner.read_records(out)
    assert len(records) == 2 * 2 * 2
    assert {r["backend"] for r in records} == {"hf"}
    assert out.with_suffix(".md").read_text().count("|") > 10
    assert out.with_suffix(".png").exists()
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
