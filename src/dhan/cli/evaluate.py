"""``dhan evaluate``: re-score a saved run on one split of a prepared dataset and print the metrics as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory made by `dhan train`")
    parser.add_argument("--data", help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def run(args: argparse.Namespace) -> int:
    from dhan.checkpoint import load_checkpoint, load_run_model
    from dhan.data.loader import BatchLoader, HistoryTensors
    from dhan.data.store import PreparedData
    from dhan.errors import UserError
    from dhan.train import BIASED_LABEL, evaluate, needs_negatives, resolve_device, use_bf16

    run_dir = Path(args.run)
    model, resolved, schema = load_run_model(run_dir, args.checkpoint)
    data_path = args.data or resolved["data"]["path"]
    data = PreparedData.load(data_path)
    if data.schema != schema:
        raise UserError(
            f"{data_path}: its schema differs from the run's (vocabularies or hierarchy); "
            "evaluate on the dataset the run was trained on"
        )
    samples = data.split(args.split)
    if len(samples) == 0:
        raise UserError(f"{data_path}: the {args.split} split is empty")
    device = resolve_device(args.device)
    model.to(device)
    train, dcfg = resolved["train"], resolved["data"]
    loader = BatchLoader(
        HistoryTensors(data),
        samples,
        args.batch_size or int(train["eval_batch_size"]),
        max_len=int(dcfg.get("eval_max_len") or dcfg.get("max_len") or 0) or None,
        with_negatives=needs_negatives(model),
    )
    metrics = evaluate(model, loader, device, bf16=use_bf16(str(train.get("precision", "auto")), device))
    ckpt = load_checkpoint(run_dir / f"{args.checkpoint}.pt")
    step = int(ckpt["step"]) if "step" in ckpt else int(ckpt.get("progress", {}).get("step", -1))
    out = {
        "run": str(run_dir),
        "model": resolved["model_name"],
        "data": str(data_path),
        "split": args.split,
        "checkpoint": args.checkpoint,
        "step": step,
        "protocol": train["protocol"] if train["protocol"] == "valid" else BIASED_LABEL,
        **metrics,
    }
    print(json.dumps(out, indent=2))
    return 0
