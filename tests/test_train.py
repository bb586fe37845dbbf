"""The training loop: resume is bitwise, selection is on validation, non-finite losses stop cleanly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dhan.checkpoint import load_checkpoint
from dhan.config import build_run_config
from dhan.data.store import PreparedData
from dhan.errors import UserError
from dhan.train import BIASED_LABEL, fit

SMALL = ["model.item_embedding_dim=8", "model.attribute_embedding_dim=8", "model.head_hidden=16,8"]


def _rc(model: str, *extra: str, **train: object):
    from dhan.checkpoint import model_config_class

    flags = [*SMALL, "train.batch_size=8", "train.eval_batch_size=16", "train.eval_every=4", "train.patience=0"]
    return build_run_config(
        model,
        set_flags=[*flags, *extra],
        train_flags=train,
        model_config_class=model_config_class(model),
    )


def _lines(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        for k in ("samples_per_second", "eval_seconds"):
            d.pop(k)
        out.append(d)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dhan", "dien"])
def test_resume_after_stop_at_step_k_is_bitwise_identical(tiny_data: PreparedData, tmp_path: Path, model: str) -> None:
    rc = _rc(model, epochs=2, seed=1)
    full = fit(rc, tiny_data, tmp_path / "full", progress=False)
    per_epoch = -(-len(tiny_data.split("train")) // 8)
    assert full is not None
    assert full["steps"] == 2 * per_epoch
    k = per_epoch + 2  # mid-epoch and between evaluations (every 4 steps)
    assert k % 4 != 0
    assert fit(rc, tiny_data, tmp_path / "cut", progress=False, stop_after=k) is None
    resumed = fit(rc, tiny_data, tmp_path / "cut", resume=True, progress=False)
    assert resumed is not None
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _lines(tmp_path / "full") == _lines(tmp_path / "cut")
    assert resumed["test"] == full["test"]
    assert resumed["best_step"] == full["best_step"]


def test_best_checkpoint_is_selected_on_valid_and_test_scored_once(tiny_data: PreparedData, tmp_path: Path) -> None:
    metrics = fit(_rc("din", epochs=2), tiny_data, tmp_path / "run", progress=False)
    assert metrics is not None
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["eval_split"] == "valid" and "test_auc" not in line for line in lines)
    best = max(lines, key=lambda r: r["valid_auc"])
    assert metrics["best_step"] == best["step"]
    assert metrics["valid"]["auc"] == pytest.approx(best["valid_auc"])
    assert metrics["protocol"] == "valid"
    assert set(metrics) >= {"model", "seed", "best_step", "valid", "test", "train_samples_per_second"}
    for f in ("config.json", "schema.json", "versions.json", "best.pt", "last.pt", "metrics.json"):
        assert (tmp_path / "run" / f).is_file(), f


def test_paper_protocol_selects_on_test_and_says_biased(tiny_data: PreparedData, tmp_path: Path) -> None:
    metrics = fit(_rc("din", max_steps=4, protocol="paper"), tiny_data, tmp_path / "run", progress=False)
    assert metrics is not None
    assert metrics["protocol"] == BIASED_LABEL
    assert "BIASED" in metrics["protocol"]
    assert metrics["selected_on"] == "test"
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["eval_split"] == "test"


def test_non_finite_loss_stops_with_a_user_error_and_no_nan_weights(tiny_data: PreparedData, tmp_path: Path) -> None:
    rc = _rc("din", "train.optimizer=sgd", "train.lr=1e30", "train.grad_clip=0", epochs=5)
    with pytest.raises(UserError, match=r"at step \d+ .*Lower the learning rate"):
        fit(rc, tiny_data, tmp_path / "run", progress=False)
    last = tmp_path / "run" / "last.pt"
    if last.exists():
        for v in load_checkpoint(last)["model"].values():
            assert not v.is_floating_point() or torch.isfinite(v).all()


def test_early_stopping_and_existing_run_dir(tiny_data: PreparedData, tmp_path: Path) -> None:
    rc = _rc("base", "train.patience=1", "train.eval_every=1", "train.lr=1e-9", epochs=50)
    metrics = fit(rc, tiny_data, tmp_path / "run", progress=False)
    assert metrics is not None
    assert metrics["stop_reason"].startswith("early stop")
    assert metrics["steps"] < 50 * -(-len(tiny_data.split("train")) // 8)
    with pytest.raises(UserError, match="already holds a run"):
        fit(rc, tiny_data, tmp_path / "run", progress=False)
    again = fit(rc, tiny_data, tmp_path / "run", resume=True, progress=False)  # finished: not retrained
    assert again == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["auc"])


def test_precision_resolves_bf16_on_cuda_by_default_fp32_on_cpu() -> None:
    from dhan.train import use_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert use_bf16("auto", cuda)
    assert not use_bf16("auto", cpu)
    assert use_bf16("bf16", cpu)
    assert not use_bf16("fp32", cuda)


def test_bf16_training_runs_and_changes_the_numbers(tiny_data: PreparedData, tmp_path: Path) -> None:
    # CPU autocast exercises the same code path as bf16 on CUDA: forward in bf16, loss and weights in float32
    runs = {}
    for precision in ("fp32", "bf16"):
        rc = _rc("dhan", f"train.precision={precision}", epochs=1, seed=3)
        result = fit(rc, tiny_data, tmp_path / precision, progress=False)
        assert result is not None
        assert math.isfinite(result["test"]["auc"])
        runs[precision] = load_checkpoint(tmp_path / precision / "last.pt")["model"]
    weights = [key for key, value in runs["fp32"].items() if value.is_floating_point()]
    assert all(runs["bf16"][key].dtype == torch.float32 for key in weights)  # master weights stay float32
    assert any(not torch.equal(runs["fp32"][key], runs["bf16"][key]) for key in weights)


@pytest.mark.parametrize("model", ["base", "wdl", "pnn", "din", "dien", "dhan-gru"])
def test_every_model_trains_under_bf16_autocast(tiny_data: PreparedData, tmp_path: Path, model: str) -> None:
    result = fit(_rc(model, "train.precision=bf16", epochs=1), tiny_data, tmp_path / model, progress=False)
    assert result is not None
    assert math.isfinite(result["test"]["auc"])
    assert math.isfinite(result["test"]["logloss"])
