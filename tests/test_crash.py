"""Crash-safe training: checksummed checkpoints, SIGKILL at several points, resume bitwise (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhan.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    load_last_checkpoint,
    previous_path,
)
from dhan.cli import main
from dhan.data.store import PreparedData

FLAGS = [
    *("--set", "model.item_embedding_dim=8", "--set", "model.attribute_embedding_dim=8"),
    *("--set", "model.head_hidden=16,8", "--set", "train.eval_every=4", "--set", "train.num_threads=1"),
    *("--set", "train.patience=0", "--batch-size", "8", "--epochs", "3", "--checkpoint-every", "2", "--quiet"),
]


def _ckpt(step: int) -> dict[str, object]:
    return {"format": 1, "model": {"w": torch.full((3,), float(step))}, "step": step}


def test_damaged_checkpoints_are_detected_and_the_previous_one_is_used(tmp_path: Path) -> None:
    last = tmp_path / "last.pt"
    atomic_torch_save(_ckpt(1), last, keep_previous=True)
    atomic_torch_save(_ckpt(2), last, keep_previous=True)
    assert previous_path(last).name == "last.prev.pt"
    assert load_checkpoint(previous_path(last))["step"] == 1
    assert load_last_checkpoint(last)[0]["step"] == 2
    good = last.read_bytes()
    damages = {
        "truncated": good[: len(good) - 100],
        "checksum mismatch": good[:-50] + bytes([good[-50] ^ 0xFF]) + good[-49:],
        "not a dhan checkpoint": b"garbage" * 10,
        "damaged checkpoint header": b"DHAN-CHECKPOINT sha256=zz\n" + good[200:],
    }
    for message, blob in damages.items():
        last.write_bytes(blob)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(last)
        ckpt, used = load_last_checkpoint(last)
        assert (ckpt["step"], used) == (1, previous_path(last))
    last.unlink()
    assert load_last_checkpoint(last)[0]["step"] == 1
    previous_path(last).write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_last_checkpoint(last)


def _train(data_dir: Path, run: Path, fault: str | None, resume: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DHAN_FAULT_INJECT", "WORLD_SIZE")}
    if fault:
        env["DHAN_FAULT_INJECT"] = fault
    argv = [sys.executable, "-m", "dhan", "train", "--out", str(run)]
    argv += ["--resume"] if resume else ["--data", str(data_dir), "--model", "dhan", *FLAGS]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_sigkill_at_every_kind_of_point_then_resume_is_bitwise_identical(
    tiny_data: PreparedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tiny_data.save(tmp_path / "ds")
    assert main(["train", "--data", str(data_dir), "--model", "dhan", "--out", str(tmp_path / "full"), *FLAGS]) == 0
    full = json.loads(capsys.readouterr().out)
    run = tmp_path / "cut"
    # 26 train samples, batch 8: 4 steps an epoch, 12 in all; last.pt every 2 steps, evaluation every 4
    faults = [
        ("step:3", False),  # inside step 3 (after backward, before the optimiser step)
        ("eval:1", True),  # inside the evaluation at step 4
        ("checkpoint_write:2", True),  # half-written last.pt at step 4 (write #1 is best.pt)
        ("checkpoint_rotate:1", True),  # last.pt renamed to last.prev.pt, the new one not yet in place
        ("step:5", True),  # mid-epoch 2
    ]
    steps_at_kill = []
    for fault, resume in faults:
        proc = _train(data_dir, run, fault, resume)
        assert proc.returncode == -9, (fault, proc.returncode, proc.stderr[-2000:])
        ckpt, _ = load_last_checkpoint(run / "last.pt")
        steps_at_kill.append(ckpt["progress"]["step"])
    assert steps_at_kill == [2, 2, 2, 2, 6]
    # finally a damaged last.pt (as from a disk fault): detected, and last.prev.pt (step 4) is used
    blob = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(blob[: len(blob) // 3])
    proc = _train(data_dir, run, None, True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "truncated checkpoint" in proc.stderr
    assert "resuming from last.prev.pt" in proc.stderr
    assert "resuming at step 4" in proc.stderr
    assert not list(run.glob(".*.tmp"))
    resumed = json.loads(proc.stdout)
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "full" / name)["model"]
        b = load_checkpoint(run / name)["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    for key in ("valid", "test", "best_step", "steps", "stop_reason"):
        assert resumed[key] == full[key], key
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8, 12]


def test_non_finite_loss_names_the_step_and_users_and_exits_2(
    tiny_data: PreparedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tiny_data.save(tmp_path / "ds")
    argv = ["train", "--data", str(data_dir), "--model", "din", "--out", str(tmp_path / "run"), *FLAGS]
    argv += ["--set", "train.optimizer=sgd", "--set", "train.lr=1e30", "--set", "train.grad_clip=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "at step 2 (epoch 0, batch 1) on the batch of users user" in err
    assert "Lower the learning rate" in err
    assert "check these users' data" in err
    for name in ("last.pt", "last.prev.pt"):
        if (tmp_path / "run" / name).exists():
            for v in load_checkpoint(tmp_path / "run" / name)["model"].values():
                assert not v.is_floating_point() or torch.isfinite(v).all()
