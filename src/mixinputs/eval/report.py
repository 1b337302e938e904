"""From records to evidence: accuracy with 95% confidence intervals, each method's paired
difference from standard decoding (same items, seeds, T and top-p) with its interval, the exact
McNemar test on paired samples, a markdown table like the paper's Table 1, and a plot of accuracy
against beta with the other methods beside it.

Accuracy intervals are Wilson's (``scipy.stats.binomtest``). The paired difference's interval is
Newcombe's hybrid score interval for a difference of paired proportions (method 10 of Newcombe
1998, Statistics in Medicine 17:2635): it stays honest when few or no pairs are discordant (0 of 5
gives about ±43 points, never ``[+0.0, +0.0]``). It is written here because neither scipy nor
statsmodels has an interval for paired proportions; it is built from scipy's Wilson intervals.
Every (item, seed) pair counts as one pair: with several seeds per item the pairs of one item are
not independent, and the interval is then narrower than the items alone would support.

Each figure is labelled with the scoring its records name, as ``task (scoring)``: Count Down under
the paper's TinyZero rule and under the lenient reading are different columns, never mixed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mixinputs.config import DEFAULT_MODE as MOI
from mixinputs.config import DIRECT_MODE as DIRECT


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
    diff: float  # mean(method correct − standard correct), in accuracy points (0..1)
    low: float  # 95% Newcombe (method 10) interval of the paired difference
    high: float
    only_moi: int  # McNemar's discordant counts
    only_standard: int
    p_value: float  # exact McNemar (binomial) test, two-sided


def newcombe_paired_interval(
    both: int, only_a: int, only_b: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for p_a − p_b from paired binary outcomes:
    ``both`` pairs where a and b are right, ``only_a``, ``only_b``, ``neither``.

    Built from the Wilson intervals of p_a and p_b and the pairs' correlation φ (0 where a
    margin is empty). No discordant pair still gives a real interval around 0.

    >>> lo, hi = newcombe_paired_interval(5, 0, 0, 0)  # 5 pairs, all right both ways
    >>> round(lo, 3), round(hi, 3)  # ± (1 − the Wilson lower bound of 5/5)
    (-0.434, 0.434)
    """
    from scipy.stats import binomtest

    n = both + only_a + only_b + neither
    if n == 0:
        return float("nan"), float("nan")

    def wilson(k: int) -> tuple[float, float]:
        ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        return ci.low, ci.high

    a_right, b_right = both + only_a, both + only_b
    p_a, p_b = a_right / n, b_right / n
    (l_a, u_a), (l_b, u_b) = wilson(a_right), wilson(b_right)
    margins = a_right * (n - a_right) * b_right * (n - b_right)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins else 0.0
    diff = p_a - p_b
    below = (p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2
    above = (u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2
    return max(-1.0, diff - math.sqrt(max(below, 0.0))), min(1.0, diff + math.sqrt(max(above, 0.0)))


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
    from scipy.stats import binomtest

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
        both = sum(m and s for m, s in pairs)
        neither = len(pairs) - both - only_moi - only_std
        low, high = newcombe_paired_interval(both, only_moi, only_std, neither)
        discordant = only_moi + only_std
        p = binomtest(only_moi, discordant, 0.5).pvalue if discordant else 1.0
        out.append(
            Paired(
                task,
                std_key,
                key,
                len(pairs),
                (only_moi - only_std) / len(pairs),
                low,
                high,
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
    header = " | ".join(map(md_cell, tasks))
    lines = [f"| config | {header} | avg |", "|---|" + "---:|" * (len(tasks) + 1)]
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
        lines.append(f"| {md_cell(key)} | " + " | ".join(cells) + f" | {avg} |")
    pairs = paired(records)
    if pairs:
        lines += [
            "",
            "| task | method config | vs | n pairs | method − standard (95% CI, Newcombe) | "
            "only method / only std | McNemar p |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for p in pairs:
            lines.append(
                f"| {md_cell(p.task)} | {md_cell(p.moi_key)} | {md_cell(p.standard_key)} | {p.n} | "
                f"{100 * p.diff:+.2f} [{100 * p.low:+.1f}, {100 * p.high:+.1f}] | "
                f"{p.only_moi} / {p.only_standard} | {p.p_value:.3g} |"
            )
        best = _best_moi(pairs)
        lines += ["", f"| method | {header} |", "|---|" + "---:|" * len(tasks)]
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
            name = md_cell(f"{method} − standard (best config)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *_scoring_notes(records)]
    return "\n".join(lines) + "\n"


def md_cell(text: str) -> str:
    r"""``text`` safe in a Markdown table cell: ``|`` escaped (a config key such as
    ``standard|T=0.6|top_p=0.95`` would otherwise split the row) and ``<`` / ``>`` as entities
    (a think-end token such as ``</think>`` would otherwise be read as HTML). Written here: it is
    one line, and the table writers at hand (tabulate's ``github`` format) do not escape ``|``.

    >>> print(md_cell("standard|T=0.6|top_p=0.95"))
    standard\|T=0.6\|top_p=0.95
    """
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


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
        if method == MOI:
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
        is_moi = p.moi_key.split("|")[0] == MOI  # not moi@thinking, moi+gumbel, ...
        if is_moi and (p.task not in best or p.diff > best[p.task].diff):
            best[p.task] = p
    return best


def _config_order(key: str) -> tuple:
    method = key.split("|")[0]
    return ({"standard": 0, DIRECT: 1, MOI: 2}.get(method, 3), key)


def beta_positions(betas: list[float]) -> dict[float, float]:
    """Where each beta goes on the plot's x axis: log2(beta), with 0 one and a half steps left
    of the smallest positive beta and inf (standard decoding's input rule) as far right of the
    largest, so every beta MoI accepts has a place (a log axis holds neither).

    >>> beta_positions([0.5, 2.0, float("inf"), 0.0])
    {0.0: -2.5, 0.5: -1.0, 2.0: 1.0, inf: 2.5}
    """
    finite = sorted(math.log2(b) for b in set(betas) if 0 < b < math.inf)
    low, high = (finite[0], finite[-1]) if finite else (0.0, 0.0)
    out = {}
    for b in sorted(set(betas)):
        if b == 0:
            out[b] = low - 1.5 if finite else -1.5
        elif math.isinf(b):
            out[b] = high + 1.5 if finite else 1.5
        else:
            out[b] = math.log2(b)
    return out


def beta_label(beta: float) -> str:
    """A beta as the plot's axis writes it.

    >>> beta_label(float("inf")), beta_label(0.25), beta_label(2.0)
    ('∞', '0.25', '2')
    """
    return "∞" if math.isinf(beta) else f"{beta:g}"


def _n_text(ns: list[int]) -> str:
    return f"n={ns[0]}" if min(ns) == max(ns) else f"n={min(ns)}-{max(ns)}"


def figure(records: list[dict]):
    """The plot :func:`plot` saves, as a matplotlib figure: accuracy against beta per task.

    Each method with a beta (``moi``, ``moi@thinking``, ...) at each (T, top-p) is a series of
    points with 95% Wilson intervals, nudged sideways so series that coincide stay visible;
    standard decoding is a dashed line and the methods without a beta (``direct``, ``soft``,
    ...) dotted lines. Every legend entry gives n, and each line its accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accs = accuracies(records)
    configs = configs_of(records)
    tasks = sorted({a.task for a in accs})
    betas = [
        float(configs[(a.task, a.config_key)]["beta"])
        for a in accs
        if configs[(a.task, a.config_key)].get("beta") is not None
    ]
    where = beta_positions(betas)
    settings = {(c["temperature"], c["top_p"]) for c in configs.values()}
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    series: dict[tuple, list] = defaultdict(list)  # (task, method, T, top-p) -> [(beta, acc)]
    lines: list[tuple[str, Accuracy, dict]] = []
    for a in accs:
        config = configs[(a.task, a.config_key)]
        if config.get("beta") is not None:
            key = (a.task, config["method"], config["temperature"], config["top_p"])
            series[key].append((float(config["beta"]), a))
        else:
            lines.append((a.task, a, config))
    count = len(series)
    for m, ((task, method, t, top_p), points) in enumerate(sorted(series.items())):
        points.sort(key=lambda pa: pa[0])
        nudge = (m - (count - 1) / 2) * min(0.08, 0.6 / max(count, 1))
        name = "MoI" if method == MOI else method
        setting = f" T={t:g} top_p={top_p:g}" if len(settings) > 1 else ""
        ax.errorbar(
            [where[b] + nudge for b, _ in points],
            [100 * a.accuracy for _, a in points],
            yerr=[
                [100 * (a.accuracy - a.low) for _, a in points],
                [100 * (a.high - a.accuracy) for _, a in points],
            ],
            marker="os^vDP"[m % 6],
            markerfacecolor="none",
            capsize=3,
            color=f"C{tasks.index(task) % 10}",
            linestyle=("-", "-.", (0, (5, 1)), (0, (1, 1)))[m % 4],
            label=f"{task} {name}{setting} ({_n_text([a.n for _, a in points])} per β)",
        )
    for m, (task, a, config) in enumerate(lines):
        standard = config["method"] == "standard"
        ax.axhline(
            100 * a.accuracy,
            color=f"C{tasks.index(task) % 10}",
            linestyle="--" if standard else (0, (1, 1 + m % 3)),
            linewidth=1.2 if standard else 1,
            label=f"{task} {config['method']} (T={config['temperature']:g} "
            f"top_p={config['top_p']:g}): {100 * a.accuracy:.1f}% (n={a.n})",
        )
    if where:
        ax.set_xticks(list(where.values()), [beta_label(b) for b in where])
        span = max(where.values()) - min(where.values())
        ax.set_xlim(min(where.values()) - 0.5 - 0.1 * span, max(where.values()) + 0.5 + 0.1 * span)
        apart = [beta_label(b) for b in where if b == 0 or math.isinf(b)]
        ax.set_xlabel("beta (log scale" + (f"; {' and '.join(apart)} set apart)" if apart else ")"))
    else:
        ax.set_xticks([])
        ax.set_xlabel("(no method with a beta in these records)")
    ax.set_ylabel("accuracy (%), 95% Wilson intervals")
    ax.set_title("accuracy vs beta (MoI) and other methods")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def plot(records: list[dict], path: str | Path) -> Path:
    """Save :func:`figure` as a PNG at ``path``; returns the path."""
    import matplotlib.pyplot as plt

    fig = figure(records)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
