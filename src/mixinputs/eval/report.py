"""From records to evidence: accuracy with 95% confidence intervals, each method's paired
difference from standard decoding (same items, seeds, T and top-p) with its interval, the exact
McNemar test on paired samples, a markdown table like the paper's Table 1, and a plot of accuracy
against beta with the other methods beside it.

Each figure is labelled with the scoring its records name, as ``task (scoring)``: Count Down under
the paper's TinyZero rule and under the lenient reading are different columns, never mixed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Accuracy:
    task: str
    config_key: str
    n: int
    correct: int
    low: float  # Wilson 95% interval
    high: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class Paired:
    task: str
    standard_key: str
    moi_key: str
    n: int  # (item, seed) pairs
    diff: float  # mean(MoI correct − standard correct), in accuracy points (0..1)
    low: float  # 95% t-interval of the paired difference, items as the unit
    high: float
    only_moi: int  # McNemar's discordant counts
    only_standard: int
    p_value: float  # exact McNemar (binomial) test, two-sided


def task_label(record: dict) -> str:
    """``task (scoring)``, or the bare task name for records written before scorings had names.

    >>> task_label({"task": "countdown", "scoring": "tinyzero"}), task_label({"task": "aime"})
    ('countdown (tinyzero)', 'aime')
    """
    scoring = record.get("scoring")
    return f"{record['task']} ({scoring})" if scoring else record["task"]


def accuracies(records: list[dict]) -> list[Accuracy]:
    """Accuracy per (task label, config); ``Accuracy.task`` is the label (task and scoring)."""
    from scipy.stats import binomtest

    groups: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in records:
        groups[(task_label(r), r["config_key"])].append(bool(r["correct"]))
    out = []
    for (task, key), results in sorted(groups.items()):
        k, n = sum(results), len(results)
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        out.append(Accuracy(task, key, n, k, ci.low, ci.high))
    return out


def standard_key_for(config: dict) -> str:
    return f"standard|T={config['temperature']:g}|top_p={config['top_p']:g}"


def paired(records: list[dict]) -> list[Paired]:
    """Every MoI / direct config against standard decoding at the same temperature and top-p."""
    from scipy.stats import binomtest, t

    by_key: dict[tuple[str, str], dict[tuple[str, int], bool]] = defaultdict(dict)
    configs: dict[tuple[str, str], dict] = {}
    for r in records:
        by_key[(task_label(r), r["config_key"])][(r["item_id"], r["seed"])] = bool(r["correct"])
        configs[(task_label(r), r["config_key"])] = r["config"]
    out = []
    for (task, key), results in sorted(by_key.items()):
        if configs[(task, key)]["method"] == "standard":
            continue
        std_key = standard_key_for(configs[(task, key)])
        standard = by_key.get((task, std_key))
        if not standard:
            continue
        pairs = [(results[k], standard[k]) for k in results.keys() & standard.keys()]
        if not pairs:
            continue
        only_moi = sum(m and not s for m, s in pairs)
        only_std = sum(s and not m for m, s in pairs)
        # Items are the unit: average each item over its seeds, then a paired t-interval.
        per_item: dict[str, list[int]] = defaultdict(list)
        for (item_id, seed), m in results.items():
            s = standard.get((item_id, seed))
            if s is not None:
                per_item[item_id].append(int(m) - int(s))
        diffs = [sum(v) / len(v) for v in per_item.values()]
        mean = sum(diffs) / len(diffs)
        if len(diffs) > 1:
            sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
            half = t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
        else:
            half = float("nan")
        discordant = only_moi + only_std
        p = binomtest(only_moi, discordant, 0.5).pvalue if discordant else 1.0
        out.append(
            Paired(
                task,
                std_key,
                key,
                len(pairs),
                mean,
                mean - half,
                mean + half,
                only_moi,
                only_std,
                p,
            )
        )
    return out


def markdown(records: list[dict]) -> str:
    """All configs × tasks, every method paired with standard decoding, then a Table-1 style
    summary (best MoI config per task, and each other method's best gain over standard)."""
    accs = accuracies(records)
    tasks = sorted({a.task for a in accs})
    keys = sorted({a.config_key for a in accs}, key=_config_order)
    table = {(a.task, a.config_key): a for a in accs}
    lines = ["| config | " + " | ".join(tasks) + " | avg |", "|---|" + "---:|" * (len(tasks) + 1)]
    for key in keys:
        cells, values = [], []
        for task in tasks:
            a = table.get((task, key))
            if a is None:
                cells.append("")
                continue
            values.append(a.accuracy)
            cells.append(
                f"{100 * a.accuracy:.2f} [{100 * a.low:.1f}, {100 * a.high:.1f}] (n={a.n})"
            )
        avg = f"{100 * sum(values) / len(values):.2f}" if len(values) == len(tasks) else ""
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {avg} |")
    pairs = paired(records)
    if pairs:
        lines += [
            "",
            "| task | method config | vs | n pairs | method − standard (95% CI) | "
            "only method / only std | McNemar p |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for p in pairs:
            lines.append(
                f"| {p.task} | {p.moi_key} | {p.standard_key} | {p.n} | "
                f"{100 * p.diff:+.2f} [{100 * p.low:+.1f}, {100 * p.high:+.1f}] | "
                f"{p.only_moi} / {p.only_standard} | {p.p_value:.3g} |"
            )
        best = _best_moi(pairs)
        lines += ["", "| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
        for label, pick in (
            ("Standard", "standard"),
            ("MoI (best beta)", "moi"),
            ("Gain vs. Standard", "gain"),
        ):
            cells = []
            for task in tasks:
                p = best.get(task)
                if p is None:
                    cells.append("")
                    continue
                moi, std = table[(task, p.moi_key)], table[(task, p.standard_key)]
                value = {
                    "standard": std.accuracy,
                    "moi": moi.accuracy,
                    "gain": moi.accuracy - std.accuracy,
                }[pick]
                cells.append(f"{100 * value:+.2f}" if pick == "gain" else f"{100 * value:.2f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for method, picks in _best_per_method(pairs, configs_of(records)).items():
            cells = [f"{100 * picks[task].diff:+.2f}" if task in picks else "" for task in tasks]
            lines.append(f"| {method} − standard (best config) | " + " | ".join(cells) + " |")
    lines += ["", *_scoring_notes(records)]
    return "\n".join(lines) + "\n"


def configs_of(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(task label, config key) -> the record's config (method, T, top-p, beta)."""
    return {(task_label(r), r["config_key"]): r["config"] for r in records}


def _best_per_method(
    pairs: list[Paired], configs: dict[tuple[str, str], dict]
) -> dict[str, dict[str, Paired]]:
    """For each method other than MoI (``direct``, ``soft+gumbel``, ``moi@thinking``, ...): its
    best pair against standard per task, over temperatures, top-ps and betas."""
    best: dict[str, dict[str, Paired]] = {}
    for p in pairs:
        method = configs[(p.task, p.moi_key)]["method"]
        if method == "moi":
            continue  # its row is "MoI (best beta)" above
        picks = best.setdefault(method, {})
        if p.task not in picks or p.diff > picks[p.task].diff:
            picks[p.task] = p
    return dict(sorted(best.items(), key=lambda kv: _config_order(kv[0])))


def _scoring_notes(records: list[dict]) -> list[str]:
    from mixinputs.eval.tasks import SCORINGS

    used = sorted({r["scoring"] for r in records if r.get("scoring")})
    return [f"Scoring `{s}`: {SCORINGS.get(s, 'see the task')}." for s in used]


def _best_moi(pairs: list[Paired]) -> dict[str, Paired]:
    best: dict[str, Paired] = {}
    for p in pairs:
        is_moi = p.moi_key.split("|")[0] == "moi"  # not moi@thinking, moi+gumbel, ...
        if is_moi and (p.task not in best or p.diff > best[p.task].diff):
            best[p.task] = p
    return best


def _config_order(key: str) -> tuple:
    method = key.split("|")[0]
    return ({"standard": 0, "direct": 1, "moi": 2}.get(method, 3), key)


def plot(records: list[dict], path: str | Path) -> Path:
    """Accuracy against beta per task: each method with a beta (``moi``, ``moi@thinking``, ...)
    as points with 95% intervals, standard decoding as dashed lines, the methods without a beta
    (``direct``, ``soft``, ...) as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accs = accuracies(records)
    configs = configs_of(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, task in enumerate(sorted({a.task for a in accs})):
        color = f"C{n}"
        series: dict[str, list] = defaultdict(list)
        for a in accs:
            config = configs[(task, a.config_key)] if a.task == task else None
            if config is not None and config.get("beta") is not None:
                series[config["method"]].append((config["beta"], a))
        for m, (method, points) in enumerate(sorted(series.items())):
            points.sort(key=lambda pa: pa[0])
            ys = [100 * a.accuracy for _, a in points]
            err = [
                [100 * (a.accuracy - a.low) for _, a in points],
                [100 * (a.high - a.accuracy) for _, a in points],
            ]
            name = "MoI" if method == "moi" else method
            ax.errorbar(
                [b for b, _ in points],
                ys,
                yerr=err,
                marker="os^vD"[m % 5],
                capsize=3,
                color=color,
                label=f"{task} {name}",
            )
        for a in accs:
            config = configs[(task, a.config_key)] if a.task == task else None
            if config is None or config.get("beta") is not None:
                continue
            standard = config["method"] == "standard"
            ax.axhline(
                100 * a.accuracy,
                color=color,
                linestyle="--" if standard else ":",
                linewidth=1,
                label=f"{task} {config['method']} ({a.config_key.split('|', 1)[1]})",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("beta")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs beta (MoI) and other methods")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
