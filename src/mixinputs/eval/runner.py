"""Running a task: standard decoding, MoI and the other methods (``eval.methods``) on the same
items and seeds, one JSONL record per sample, resumable (finished samples are never redone). A run
goes to the backend as one submission: every pending (item, config, seed) at once."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mixinputs.backends import Backend, SamplingSettings
from mixinputs.config import STANDARD_REQUEST, MoIConfig
from mixinputs.eval.methods import (
    method_label,
    parse_method,
    parse_method_options,
    split_methods,
)
from mixinputs.eval.tasks import Item, Task

PAPER_BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
PAPER_TEMPERATURES = (0.6, 0.8, 1.0)
PAPER_TOP_PS = (0.4, 0.6, 0.8, 0.95)


@dataclass(frozen=True)
class DecodeConfig:
    """One decoding method with its sampling settings."""

    method: str  # "standard", "moi", "direct", or a method label (``eval.methods``)
    temperature: float
    top_p: float
    beta: float | None = None  # MoI's beta (mode moi); part of the key, never of the label

    @property
    def key(self) -> str:
        """The config's name in records and reports.

        >>> DecodeConfig("moi", 0.6, 0.95, 1.0).key
        'moi|beta=1|T=0.6|top_p=0.95'
        >>> DecodeConfig("soft@thinking(cold_stop_entropy=0.01)", 0.6, 0.95).key
        'soft@thinking(cold_stop_entropy=0.01)|T=0.6|top_p=0.95'
        """
        beta = "" if self.beta is None else f"|beta={self.beta:g}"
        return f"{self.method}{beta}|T={self.temperature:g}|top_p={self.top_p:g}"

    def moi(self) -> MoIConfig | None:
        """The request's mixing config (None: standard decoding); labels parse back.

        >>> DecodeConfig("moi@thinking", 0.6, 0.95, 2.0).moi().beta
        2.0
        """
        config = parse_method(self.method)
        if config is not None and self.beta is not None:
            config = replace(config, beta=self.beta)
        return config


def plan_configs(
    betas: Iterable[float],
    temperatures: Iterable[float],
    top_ps: Iterable[float],
    direct: bool = False,
    methods: Iterable[str] | None = None,
) -> list[DecodeConfig]:
    """Every method for every (T, top-p), standard decoding first: the baseline of each pair.

    ``methods`` are method specs (``eval.methods``; default ``["moi"]``); ``direct`` adds direct
    mixture (``--direct``). A method in mode moi that does not set ``beta`` itself runs once per
    beta in ``betas`` (``moi``, ``moi+gumbel``, ``moi@thinking``, ...); ``moi:beta=2`` runs once.
    MoI's beta goes in its own field and key part (``moi|beta=2|...``), as in older records.

    >>> [c.key for c in plan_configs([1.0], [0.6], [0.95])]
    ['standard|T=0.6|top_p=0.95', 'moi|beta=1|T=0.6|top_p=0.95']
    >>> [c.key for c in plan_configs([1.0], [0.6], [0.95], methods=["soft", "moi:beta=2"])]
    ['standard|T=0.6|top_p=0.95', 'soft|T=0.6|top_p=0.95', 'moi|beta=2|T=0.6|top_p=0.95']
    """
    specs = split_methods(",".join(methods)) if methods is not None else ["moi"]
    if direct:
        specs = ["direct", *specs]
    # (label, beta) per method; parsing every spec first fails before any sample runs.
    planned: list[tuple[str, float | None]] = []
    for spec in specs:
        config, explicit = parse_method_options(spec)
        if config is None:
            continue  # standard decoding always runs
        if config.mode != "moi":
            planned.append((method_label(config), None))
        elif "beta" in explicit:
            planned.append((method_label(config, beta=False), config.beta))
        else:
            planned += [(method_label(config, beta=False), float(b)) for b in betas]
    configs: dict[str, DecodeConfig] = {}
    for t in temperatures:
        for p in top_ps:
            for c in [DecodeConfig("standard", t, p)] + [
                DecodeConfig(label, t, p, b) for label, b in planned
            ]:
                configs.setdefault(c.key, c)
    return list(configs.values())


def sample_key(task: str, item_id: str, config_key: str, seed: int) -> tuple:
    return (task, item_id, config_key, seed)


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSONL file; a line cut off by an interruption is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_task(task: Task, backend: Backend, out_path: str | Path, **options) -> int:
    """:func:`run` on one task."""
    return run([task], backend, out_path, **options)


def run(
    tasks: list[Task],
    backend: Backend,
    out_path: str | Path,
    *,
    configs: list[DecodeConfig],
    seeds: Iterable[int],
    limit: int | None = None,
    data: str | None = None,
    max_tokens: int = 2048,
    chat_template: bool = True,
    scoring: str | None = None,
    progress: bool = True,
) -> int:
    """Generate and score every (task, item, config, seed) not yet in ``out_path``; returns how
    many samples were added.

    1. Read the finished samples (a line cut off by an interruption is dropped).
    2. Plan the pending samples: seeds x items x configs, an item's configs side by side.
    3. Submit them all to the backend at once (``generate_stream``: vLLM batches every config
       together, since MoI is per request) and score each completion as it finishes.
    4. Append each record as soon as it is scored, so an interrupted run resumes where it stopped.

    ``scoring`` picks a task's scoring by name (e.g. ``"lenient"`` for Count Down) for the tasks
    that have it; the others keep their default. Each record names its scoring.
    """
    from tqdm.auto import tqdm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_last_line(out_path)
    scorings = resolve_scorings(tasks, scoring)
    existing = read_records(out_path)
    _check_same_scoring(existing, scorings, out_path)
    done = {sample_key(r["task"], r["item_id"], r["config_key"], r["seed"]) for r in existing}
    seeds = list(seeds)

    pending: list[tuple[Task, Item, DecodeConfig, int, str]] = []
    chat: dict[str, str] = {}
    for task in tasks:
        for seed in seeds:
            for item in task.load(data, seed)[:limit]:
                todo = [
                    c
                    for c in configs
                    if sample_key(task.name, item.item_id, c.key, seed) not in done
                ]
                if not todo:
                    continue
                if item.prompt not in chat:
                    chat[item.prompt] = (
                        backend.chat_prompt(item.prompt) if chat_template else item.prompt
                    )
                pending += [(task, item, c, seed, chat[item.prompt]) for c in todo]
    if not pending:
        return 0

    requests = [
        (
            prompt,
            SamplingSettings(
                max_tokens=max_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=seed,
                moi=config.moi(),
            ),
        )
        for _, _, config, seed, prompt in pending
    ]
    bar = tqdm(total=len(pending), desc="eval", unit="sample", disable=not progress)
    added = 0
    stream = backend.generate_stream(requests)
    with open(out_path, "a") as out, contextlib.closing(stream), bar:
        for index, completion in stream:
            task, item, config, seed, prompt = pending[index]
            record = _record(
                task, item, config, seed, prompt, completion, backend, scorings[task.name]
            )
            out.write(json.dumps(record) + "\n")
            out.flush()
            added += 1
            bar.update(1)
    return added


def resolve_scorings(tasks: list[Task], scoring: str | None) -> dict[str, str]:
    """The scoring each task uses: ``scoring`` where the task has it, else its default."""
    if scoring is not None and not any(scoring in t.scorings for t in tasks):
        offered = sorted({s for t in tasks for s in t.scorings})
        raise ValueError(
            f"no task here has the scoring {scoring!r}; these tasks offer: {', '.join(offered)}"
        )
    return {t.name: scoring if scoring in t.scorings else t.check_scoring(None) for t in tasks}


def _check_same_scoring(records: list[dict], scorings: dict[str, str], path: Path) -> None:
    for r in records:
        want = scorings.get(r["task"])
        if want is not None and r.get("scoring", want) != want:
            raise ValueError(
                f"{path} holds {r['task']} samples scored {r.get('scoring')!r}, not {want!r}: "
                f"run `mixinputs eval rescore {path} --scoring {want}` first, or use another --out"
            )


def _drop_partial_last_line(path: Path) -> None:
    """An interrupted run can leave half a line; appending after it would corrupt a record."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _record(
    task: Task,
    item: Item,
    config: DecodeConfig,
    seed: int,
    prompt: str,
    completion,
    backend: Backend,
    scoring: str,
) -> dict:
    extracted, correct = task.score(completion.text, item, scoring)
    mixing = config.moi()
    return {
        "task": task.name,
        "scoring": scoring,
        "item_id": item.item_id,
        "config_key": config.key,
        "config": {k: v for k, v in asdict(config).items() if not _nan(v)},
        # every setting of the method, defaults included (the label names only the others)
        "request": mixing.to_request() if mixing is not None else dict(STANDARD_REQUEST),
        "seed": seed,
        "prompt": prompt,
        "completion": completion.text,
        "extracted": extracted,
        "correct": bool(correct),
        "gold": item.gold,
        "meta": item.meta,
        "tokens": completion.num_tokens,
        "model": backend.model,
        "backend": backend.name,
    }


def _nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def rescore(
    path: str | Path, out_path: str | Path | None = None, scoring: str | None = None
) -> tuple[int, int]:
    """Score saved completions again with the current scorers; returns (records, changed).

    ``scoring`` switches the tasks that have it (e.g. Count Down to ``"lenient"``); the other
    records keep the scoring they name (their task's default when they name none)."""
    from mixinputs.eval.tasks import get_task

    records = read_records(path)
    if scoring is not None and not any(scoring in get_task(r["task"]).scorings for r in records):
        raise ValueError(f"no record in {path} is of a task with the scoring {scoring!r}")
    changed = 0
    for r in records:
        task = get_task(r["task"])
        use = scoring if scoring in task.scorings else task.check_scoring(r.get("scoring"))
        item = Item(r["item_id"], r["prompt"], r["gold"], r.get("meta") or {})
        extracted, correct = task.score(r["completion"], item, use)
        changed += bool(correct) != r["correct"]
        r["extracted"], r["correct"], r["scoring"] = extracted, bool(correct), use
    target = Path(out_path or path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(target)
    return len(records), changed
