"""Running a task: standard decoding and MoI on the same items and seeds, one JSONL record per
sample, resumable (finished samples are never redone)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from mixinputs.backends import Backend, SamplingSettings
from mixinputs.config import MoIConfig
from mixinputs.eval.tasks import Item, Task

PAPER_BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
PAPER_TEMPERATURES = (0.6, 0.8, 1.0)
PAPER_TOP_PS = (0.4, 0.6, 0.8, 0.95)


@dataclass(frozen=True)
class DecodeConfig:
    """One decoding method with its sampling settings."""

    method: str  # "standard", "moi" or "direct"
    temperature: float
    top_p: float
    beta: float | None = None

    @property
    def key(self) -> str:
        """>>> DecodeConfig("moi", 0.6, 0.95, 1.0).key
        'moi|beta=1|T=0.6|top_p=0.95'
        """
        beta = "" if self.beta is None else f"|beta={self.beta:g}"
        return f"{self.method}{beta}|T={self.temperature:g}|top_p={self.top_p:g}"

    def moi(self) -> MoIConfig | None:
        if self.method == "standard":
            return None
        if self.method == "direct":
            return MoIConfig(mode="direct")
        return MoIConfig(beta=self.beta if self.beta is not None else 1.0)


def plan_configs(
    betas: Iterable[float],
    temperatures: Iterable[float],
    top_ps: Iterable[float],
    direct: bool = False,
) -> list[DecodeConfig]:
    """Standard decoding for every (T, top-p), MoI for every (beta, T, top-p), optionally direct.

    >>> [c.key for c in plan_configs([1.0], [0.6], [0.95])]
    ['standard|T=0.6|top_p=0.95', 'moi|beta=1|T=0.6|top_p=0.95']
    """
    configs = []
    for t in temperatures:
        for p in top_ps:
            configs.append(DecodeConfig("standard", t, p))
            if direct:
                configs.append(DecodeConfig("direct", t, p))
            configs.extend(DecodeConfig("moi", t, p, b) for b in betas)
    return configs


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


def run_task(
    task: Task,
    backend: Backend,
    out_path: str | Path,
    *,
    configs: list[DecodeConfig],
    seeds: Iterable[int],
    limit: int | None = None,
    data: str | None = None,
    max_tokens: int = 2048,
    chat_template: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> int:
    """Generate and score every (item, config, seed) not yet in ``out_path``; returns how many
    samples were added. Each item's exact prompt is saved with its record."""
    from tqdm.auto import tqdm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_last_line(out_path)
    done = {
        sample_key(r["task"], r["item_id"], r["config_key"], r["seed"])
        for r in read_records(out_path)
    }
    added = 0
    seeds = list(seeds)
    with open(out_path, "a") as out:
        for seed in seeds:
            items = task.load(data, seed)[:limit]
            prompts = {
                i.item_id: backend.chat_prompt(i.prompt) if chat_template else i.prompt
                for i in items
            }
            for config in configs:
                todo = [
                    i
                    for i in items
                    if sample_key(task.name, i.item_id, config.key, seed) not in done
                ]
                settings = SamplingSettings(
                    max_tokens=max_tokens,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    seed=seed,
                    moi=config.moi(),
                )
                bar = tqdm(
                    total=len(todo),
                    desc=f"{task.name} {config.key} seed={seed}",
                    disable=not progress or not todo,
                    leave=False,
                )
                for start in range(0, len(todo), batch_size):
                    batch = todo[start : start + batch_size]
                    completions = backend.generate([prompts[i.item_id] for i in batch], settings)
                    for item, completion in zip(batch, completions, strict=True):
                        out.write(
                            json.dumps(
                                _record(
                                    task,
                                    item,
                                    config,
                                    seed,
                                    prompts[item.item_id],
                                    completion,
                                    backend,
                                )
                            )
                            + "\n"
                        )
                    out.flush()
                    added += len(batch)
                    bar.update(len(batch))
                bar.close()
    return added


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
) -> dict:
    extracted, correct = task.score(completion.text, item)
    return {
        "task": task.name,
        "item_id": item.item_id,
        "config_key": config.key,
        "config": {k: v for k, v in asdict(config).items() if not _nan(v)},
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


def rescore(path: str | Path, out_path: str | Path | None = None) -> tuple[int, int]:
    """Score saved completions again with the current scorers; returns (records, changed)."""
    from mixinputs.eval.tasks import get_task

    records = read_records(path)
    changed = 0
    for r in records:
        task = get_task(r["task"])
        item = Item(r["item_id"], r["prompt"], r["gold"], r.get("meta") or {})
        extracted, correct = task.score(r["completion"], item)
        changed += bool(correct) != r["correct"]
        r["extracted"], r["correct"] = extracted, bool(correct)
    target = Path(out_path or path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(target)
    return len(records), changed
