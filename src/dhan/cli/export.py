"""``dhan export``: a run's model with its id maps and schema as one TorchScript or ONNX file, parity-checked."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory made by `dhan train`")
    parser.add_argument("--format", choices=("torchscript", "onnx"), required=True, help="artifact format")
    parser.add_argument("--out", required=True, help="artifact file to write (replaced atomically)")
    parser.add_argument("--data", help="prepared dataset with the id maps (default: the one the run was trained on)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument(
        "--atol", type=float, default=1e-5, help="largest allowed |p_export - p_eager| on the sample batches"
    )


def run(args: argparse.Namespace) -> int:
    from dhan.export import export_run

    report = export_run(args.run, args.format, args.out, data_dir=args.data, which=args.checkpoint, atol=args.atol)
    print(json.dumps(report.to_dict(), indent=2))
    return 0
