"""``dhan train``: train one model on a prepared dataset into a run directory.

Under ``torchrun --nproc-per-node N -m dhan train ...`` every process runs this with the same arguments; rank 0
reads a resumed run's ``config.json`` and shares it, so only rank 0 needs the run directory (``docs/scaling.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dhan.config import PRESETS, PROTOCOLS

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="prepared dataset directory (from `dhan prepare`); optional with --resume")
    parser.add_argument("--model", help="model name, e.g. din, dien, dhan; optional with --resume")
    parser.add_argument("--out", required=True, help="run directory to create (or continue with --resume)")
    parser.add_argument("--config", help="YAML or JSON file with model/train/data sections")
    parser.add_argument(
        "--set",
        dest="set_flags",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set train.lr=0.01 --set model.dimensions=category,brand (repeatable)",
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, help="model and training defaults (paper)")
    parser.add_argument("--seed", type=int, help="seed of initialisation, data order and dropout (train.seed)")
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--max-steps", type=int, help="train.max_steps (0 = no limit)")
    parser.add_argument(
        "--batch-size", type=int, help="train.batch_size: the global batch (under torchrun split over the processes)"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, help="train.checkpoint_every: also save last.pt every N steps (0 = never)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="train.device")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="valid (default): select the checkpoint on validation; paper: on test as the authors did (BIASED)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "seed": args.seed,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "checkpoint_every": args.checkpoint_every,
        "device": args.device,
        "protocol": args.protocol,
    }


def run(args: argparse.Namespace) -> int:
    from dhan.checkpoint import model_config_class, read_json
    from dhan.config import build_run_config, load_config_file
    from dhan.data.store import PreparedData
    from dhan.distributed import distributed
    from dhan.errors import UserError
    from dhan.train import fit

    out = Path(args.out)
    saved = out / "config.json"
    device = args.device or (read_json(saved)["train"].get("device", "auto") if saved.is_file() else "auto")
    with distributed(device) as ctx:
        # rank 0 reads the saved config of a resumed run; the other ranks may not see the run directory
        resolved = ctx.on_main(lambda: read_json(saved) if args.resume and saved.is_file() else None)
        if resolved is not None:
            data_path = args.data or resolved["data"]["path"]
            data = PreparedData.load(data_path)
            from dhan.config import run_config_from_resolved

            ignored = [
                f for f, v in (("--model", args.model), ("--config", args.config), ("--set", args.set_flags)) if v
            ]
            ignored += [f"--{k.replace('_', '-')}" for k, v in train_flags(args).items() if v is not None]
            if ignored and ctx.is_main:
                log.warning("--resume continues with the run's saved config.json; ignoring %s", ", ".join(ignored))
            rc = run_config_from_resolved(resolved)
        else:
            file_config = load_config_file(args.config) if args.config else {}
            model = args.model or file_config.get("model_name")
            if not model:
                raise UserError("--model is required (or model_name in the --config file)")
            if not args.data:
                raise UserError("--data is required: a directory made by `dhan prepare`")
            mcls = model_config_class(model)
            data = PreparedData.load(args.data)
            rc = build_run_config(
                model,
                recipe=data.schema.recipe,
                preset=args.preset or str(file_config.get("preset", "paper")),
                file_config=file_config,
                set_flags=args.set_flags,
                train_flags=train_flags(args),
                data_flags={"path": str(args.data)},
                model_config_class=mcls,
            )
        metrics = fit(rc, data, out, resume=args.resume, progress=not args.quiet)
        if ctx.is_main:
            print(json.dumps(metrics, indent=2))
    return 0
