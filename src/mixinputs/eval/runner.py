"""Running a task: standard decoding, MoI and the other methods (``eval.methods``) on the same
items and seeds, one JSONL record per sample, resumable (finished samples are never redone). A run
goes to the backend as one submission: every pending (item, config, seed) at once.

Every record carries what made its sample (``settings``: max tokens, temperature, top-p, the
model's identity, the backend, the dtype and a digest of the chat template; ``request``: the
method's request keys; ``prompt``: the exact text sent). A resume reuses a record only when all of
them match the command, and a file made under other settings is refused with one line naming what
differs (:class:`ResumeError`), never silently reported as this command's result."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TextIO

from mixinputs.backends import Backend, SamplingSettings
from mixinputs.config import DEFAULT_MODE, DIRECT_MODE, STANDARD_REQUEST, MoIConfig
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
    specs = split_methods(",".join(methods)) if methods is not None else [DEFAULT_MODE]
    if direct:
        specs = [DIRECT_MODE, *specs]
    # (label, beta) per method; parsing every spec first fails before any sample runs.
    planned: list[tuple[str, float | None]] = []
    for spec in specs:
        config, explicit = parse_method_options(spec)
        if config is None:
            continue  # standard decoding always runs
        if config.mode != DEFAULT_MODE:
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


RUN_SETTINGS = ("model", "backend", "dtype", "chat_template", "max_tokens")
"""The settings every record of one run shares (the file is refused when any differs)."""
CHAT_PROBE = "{message}"
"""The user message a backend's chat template is rendered on for the run's template digest."""


class ResumeError(ValueError):
    """The output file holds samples made under other settings than the command's."""


def run_settings(backend: Backend, max_tokens: int, chat_template: bool = True) -> dict:
    """What every sample of a run shares: the model's identity, the backend, the dtype, the chat
    template (a digest of it rendered on :data:`CHAT_PROBE`; ``"none"`` when not applied) and
    ``max_tokens``. The backend gives ``model_id`` and ``dtype`` where it has them.

    >>> class B:
    ...     name, model = "echo", "m"
    ...     def chat_prompt(self, message): return f"<user>{message}</user>"
    >>> run_settings(B(), 32)["max_tokens"], run_settings(B(), 32, False)["chat_template"]
    (32, 'none')
    """
    from mixinputs.backends.local import text_digest

    template = text_digest(backend.chat_prompt(CHAT_PROBE)) if chat_template else "none"
    return {
        "model": getattr(backend, "model_id", None) or backend.model,
        "backend": backend.name,
        "dtype": getattr(backend, "dtype", None),
        "chat_template": template,
        "max_tokens": max_tokens,
    }


def config_request(config: DecodeConfig) -> dict:
    """The request keys a config sends (standard decoding: ``mixinputs_mode: off``)."""
    mixing = config.moi()
    return mixing.to_request() if mixing is not None else dict(STANDARD_REQUEST)


def check_resumable(
    records: list[dict], settings: dict, configs: list[DecodeConfig], path: Path
) -> None:
    """Raise :class:`ResumeError` unless every record of ``path`` was made under ``settings``
    and each of ``configs`` sends the request its records were made with."""
    how = (
        f"write to another --out, or read this one with `mixinputs eval report {path}` "
        f"(`mixinputs eval rescore {path}` re-scores it)"
    )
    requests = {c.key: config_request(c) for c in configs}
    for r in records:
        theirs = r.get("settings")
        if theirs is None:
            raise ResumeError(
                f"{path} was written before records carried their generation settings "
                f"(max_tokens, model, dtype, chat template), so this command cannot tell whether "
                f"its samples are its own: {how}"
            )
        differ = [
            f"{name} {theirs.get(name)!r} (this command: {settings[name]!r})"
            for name in RUN_SETTINGS
            if theirs.get(name) != settings[name]
        ]
        if differ:
            raise ResumeError(f"{path} was made with other settings: {'; '.join(differ)}; {how}")
        want = requests.get(r["config_key"])
        if want is not None and r.get("request") != want:
            raise ResumeError(
                f"{path}: {r['config_key']} was sent as {r.get('request')}, this command sends "
                f"{want} (a default changed?); {how}"
            )


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
    progress_file: TextIO | None = None,
) -> int:
    """Generate and score every (task, item, config, seed) not yet in ``out_path``; returns how
    many samples were added.

    1. Read the finished samples (a line cut off by an interruption is dropped) and refuse the
       file if they were made under other settings (:func:`check_resumable`, ``ResumeError``).
    2. Check every method against the backend where it can say (``backend.check_method``: a
       local model's tokenizer and the engine's limits, before any engine starts).
    3. Plan the pending samples: seeds x items x configs, an item's configs side by side. A
       finished sample whose prompt differs from this command's is refused too.
    4. Nothing pending: return 0 (a deferred backend never starts its engine). Else submit them
       all at once (``generate_stream``: vLLM batches every config together, since MoI is per
       request) and score each completion as it finishes.
    5. Append each record as soon as it is scored, so an interrupted run resumes where it stopped.

    ``scoring`` picks a task's scoring by name (e.g. ``"lenient"`` for Count Down) for the tasks
    that have it; the others keep their default. Each record names its scoring.
    """
    from tqdm.auto import tqdm

    out_path = Path(out_path)
    scorings = resolve_scorings(tasks, scoring)
    seeds = list(seeds)
    # The data first: a missing or malformed file is the quickest mistake to report.
    items = {(t.name, seed): t.load(data, seed)[:limit] for t in tasks for seed in seeds}
    _drop_partial_last_line(out_path)
    existing = read_records(out_path)
    _check_same_scoring(existing, scorings, out_path)
    settings = run_settings(backend, max_tokens, chat_template)
    check_resumable(existing, settings, configs, out_path)
    check = getattr(backend, "check_method", None)
    if check is not None:
        for config in configs:
            try:
                check(config.moi())
            except ValueError as e:
                raise ValueError(f"method {config.method}: {e}") from None
    done = {sample_key(r["task"], r["item_id"], r["config_key"], r["seed"]): r for r in existing}

    pending: list[tuple[Task, Item, DecodeConfig, int, str]] = []
    chat: dict[str, str] = {}
    for task in tasks:
        for seed in seeds:
            for item in items[(task.name, seed)]:
                if item.prompt not in chat:
                    chat[item.prompt] = (
                        backend.chat_prompt(item.prompt) if chat_template else item.prompt
                    )
                prompt = chat[item.prompt]
                for c in configs:
                    record = done.get(sample_key(task.name, item.item_id, c.key, seed))
                    if record is None:
                        pending.append((task, item, c, seed, prompt))
                    elif record["prompt"] != prompt:
                        raise ResumeError(
                            f"{out_path}: {task.name} item {item.item_id} was asked with another "
                            "prompt (another --data, prompt or chat template?): write to another "
                            f"--out, or read this one with `mixinputs eval report {out_path}`"
                        )
    if not pending:
        return 0

    out_path.parent.mkdir(parents=True, exist_ok=True)
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
    start = getattr(backend, "start", None)
    if start is not None:  # a deferred backend's engine starts now, before the progress bar
        start()
    bar = tqdm(
        total=len(pending), desc="eval", unit="sample", disable=not progress, file=progress_file
    )
    added = 0
    stream = backend.generate_stream(requests)
    with open(out_path, "a") as out, contextlib.closing(stream), bar:
        for index, completion in stream:
            task, item, config, seed, prompt = pending[index]
            record = _record(
                task, item, config, seed, prompt, completion, backend, scorings[task.name]
            )
            record["settings"] = {
                **settings,
                "temperature": config.temperature,
                "top_p": config.top_p,
            }
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
    return {
        "task": task.name,
        "scoring": scoring,
        "item_id": item.item_id,
        "config_key": config.key,
        "config": {k: v for k, v in asdict(config).items() if not _nan(v)},
        # every setting of the method, defaults included (the label names only the others)
        "request": config_request(config),
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
