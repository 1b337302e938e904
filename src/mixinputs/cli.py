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

    path, changed = site_setup.setup(_site_file(args))
    print(f"{'added' if changed else 'already present:'} `import mixinputs` in {path}")
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from mixinputs import site_setup

    path, changed = site_setup.cleanup(_site_file(args))
    print(f"{'removed' if changed else 'nothing to remove:'} `import mixinputs` from {path}")
    return 0


def _site_file(args: argparse.Namespace) -> Path | None:
    if args.site_dir is None:
        return None
    return Path(args.site_dir) / args.file


def _cmd_demo(args: argparse.Namespace) -> int:
    from mixinputs.demo import run_demo

    run_demo(args.backend, args.model, beta=args.beta, max_tokens=args.max_tokens)
    return 0


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

    demo = sub.add_parser("demo", help="standard decoding vs MoI on a few prompts")
    demo.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    demo.add_argument("--model", default=None, help="default: the embedded model")
    demo.add_argument("--beta", type=float, default=1.0)
    demo.add_argument("--max-tokens", type=int, default=64)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
