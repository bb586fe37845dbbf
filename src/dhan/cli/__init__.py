"""The ``dhan`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Subcommand modules are imported only when their command runs, so ``dhan inspect`` does not pay for importing
torch. A :class:`~dhan.errors.UserError` anywhere below becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from dhan import __version__
from dhan.errors import UserError

# subcommand -> (module under dhan.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("prepare", "turn raw interaction logs into leak-free training samples"),
    "inspect": ("inspect", "print prepared samples as JSON lines with raw ids"),
    "train": ("train", "train one model into a run directory (select on validation, test once)"),
    "evaluate": ("evaluate", "re-score a saved run on a split and print the metrics as JSON"),
    "compare": ("compare", "models x seeds: the paper's tables with mean ± std, RelaImpr and a t-test"),
    "plot": ("plot", "training loss and validation AUC of several runs (paper Figure 5)"),
    "explain": ("explain", "one user's category- and item-level attention for a target (paper Figure 4)"),
    "export": ("export", "a run's model, id maps and schema as one TorchScript or ONNX file (parity-checked)"),
    "serve": ("serve", "HTTP JSON scoring service for a run or an exported model (FastAPI + uvicorn)"),
    "demo": ("demo", "synthetic data, DIN vs DHAN over 3 seeds, report and figures in a few minutes"),
}
# commands that run models: large tensors are kept on the heap for them (dhan.allocator; DHAN_MALLOC_TUNING=0: off)
MODEL_COMMANDS = frozenset({"train", "evaluate", "compare", "explain", "export", "serve", "demo"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dhan", description="Deep Interest with Hierarchical Attention Network (DHAN) for CTR")
    parser.add_argument("--version", action="version", version=f"dhan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (_module, help_text) in COMMANDS.items():
        # a small stub parser per command: its module fills it in only when the command is chosen
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    known, rest = top.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if known.verbose else logging.INFO, format="%(message)s")
    name = known.command
    module = importlib.import_module(f"dhan.cli.{COMMANDS[name][0]}")
    parser = _Parser(prog=f"dhan {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    if name in MODEL_COMMANDS:
        from dhan.allocator import tune_malloc

        tune_malloc()
    try:
        code = module.run(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here for short outputs
    except UserError as exc:
        print(f"dhan {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dhan {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`dhan inspect DIR | head`): stop quietly, as other Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(code or 0)
