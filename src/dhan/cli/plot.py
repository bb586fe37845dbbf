"""``dhan plot``: training loss and validation AUC against steps for several runs (the paper's Figure 5)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run directories made by `dhan train`")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--labels", help="comma-separated legend labels, one per run (default: model and seed)")


def run(args: argparse.Namespace) -> int:
    from dhan.errors import UserError
    from dhan.plots import plot_training_curves

    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise UserError(f"--labels has {len(labels)} entries for {len(args.runs)} runs; give one per run")
    out = plot_training_curves([Path(r) for r in args.runs], Path(args.out), labels)
    print(f"wrote {out}")
    return 0
