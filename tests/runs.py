"""Tiny trained runs for the export and serving tests (a few steps of the real training loop)."""

from __future__ import annotations

from pathlib import Path

from dhan.checkpoint import model_config_class
from dhan.config import build_run_config
from dhan.data.store import PreparedData
from dhan.train import fit

SMALL = ["model.item_embedding_dim=8", "model.attribute_embedding_dim=8", "model.head_hidden=16,8"]


def make_run(data: PreparedData, root: Path, model: str, *extra: str, preset: str = "paper") -> Path:
    """Save ``data`` under ``root/ds`` (once) and train ``model`` for 3 steps into ``root/<model>``; the run dir."""
    data_dir = root / "ds"
    if not (data_dir / "schema.json").is_file():
        data.save(data_dir)
    flags = [*SMALL, "train.batch_size=8", "train.eval_batch_size=16", "train.eval_every=3", "train.patience=0"]
    rc = build_run_config(
        model,
        preset=preset,
        set_flags=[*flags, *extra],
        train_flags={"max_steps": 3},
        data_flags={"path": str(data_dir)},
        model_config_class=model_config_class(model),
    )
    run = root / f"{model}-{preset}{'-' + '-'.join(extra) if extra else ''}".replace("=", "_").replace(",", "_")
    fit(rc, data, run, progress=False)
    return run
