"""``dhan export``: every model to TorchScript and ONNX with parity, artifacts that reload, and clear failures."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dhan.cli import main
from dhan.data.store import PreparedData
from dhan.errors import UserError
from dhan.export import (
    ExportError,
    ScoringModule,
    batch_inputs,
    build_metadata,
    export_model,
    export_run,
    load_artifact,
    load_run,
    sample_batches,
)
from dhan.models import build_model
from runs import SMALL, make_run

FAST = ["base", "wdl", "pnn", "din", "dhan"]
SLOW = ["dien", "dhan-gru"]
CASES = [pytest.param(m, id=m) for m in FAST] + [pytest.param(m, id=m, marks=pytest.mark.slow) for m in SLOW]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("model", CASES)
def test_every_model_exports_with_parity(tiny_data: PreparedData, root: Path, model: str, fmt: str) -> None:
    run = make_run(tiny_data, root, model) if not (root / f"{model}-paper").is_dir() else root / f"{model}-paper"
    out = root / f"{model}.{fmt}"
    report = export_run(run, fmt, out)  # type: ignore[arg-type]
    assert report.max_abs_diff <= 1e-5
    shapes = {(b["batch"], b["history"]) for b in report.batches}
    assert {(3, 1), (8, 5)} <= shapes
    assert {b for b, _ in shapes} >= {1, 3, 17}
    art = load_artifact(out)
    assert art.format == fmt
    assert art.metadata["model_name"] == model
    assert art.metadata["items"]["raw_ids"][2] == "item2"
    # a batch the parity check did not see: B=2, T=4 (onnx runs in onnxruntime)
    loaded = load_run(run)
    batch = sample_batches(tiny_data, 4, seed=7)[1].with_padding(3)
    eager = ScoringModule(loaded.model)(*batch_inputs(batch)).detach().numpy()
    got = art.run([t.numpy() for t in batch_inputs(batch)])
    np.testing.assert_allclose(got, eager, atol=1e-5, rtol=0)


def test_dhan_two_dimensions_three_levels_and_reference_preset_export_to_onnx(
    tiny_data: PreparedData, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    small = {"item_embedding_dim": 8, "attribute_embedding_dim": 8, "head_hidden": (16, 8)}
    for overrides, preset in (
        ({**small, "dimensions": ("category", "brand"), "levels": 3}, "paper"),
        (small, "reference-code"),
    ):
        model = build_model("dhan", tiny_data.schema, overrides, preset=preset).eval()
        meta = build_metadata(model, {"model_name": "dhan"}, tiny_data.schema, tiny_data)
        report = export_model(model, meta, sample_batches(tiny_data, 5), "onnx", tmp_path / "m.onnx")
        assert report.max_abs_diff <= 1e-5


def test_a_failed_parity_check_leaves_no_file(tiny_data: PreparedData, root: Path) -> None:
    run = make_run(tiny_data, root, "din", "model.head_hidden=4")
    out = root / "fails" / "din.onnx"
    with pytest.raises(ExportError, match="parity check"):
        export_run(run, "onnx", out, atol=-1.0)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_garbage_and_foreign_artifacts_are_user_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model\xff" * 10)
    with pytest.raises(UserError, match="not a readable ONNX model"):
        load_artifact(garbage)
    fake_zip = tmp_path / "fake.pt"
    with zipfile.ZipFile(fake_zip, "w") as zf:
        zf.writestr("x/data.pkl", b"garbage")
    with pytest.raises(UserError, match="cannot load the TorchScript archive"):
        load_artifact(fake_zip)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), str(plain))
    with pytest.raises(UserError, match="not a dhan scoring artifact"):
        load_artifact(plain)
    with pytest.raises(UserError, match="no such model file"):
        load_artifact(tmp_path / "missing.onnx")


def test_cli_export_prints_the_report_and_errors_are_one_line(
    tiny_data: PreparedData, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tiny_data, root, "dhan", *SMALL[:1])
    out = tmp_path / "dhan.ts"
    assert main(["export", "--run", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= 1e-5
    assert out.is_file()
    assert main(["export", "--run", str(tmp_path / "nope"), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dhan export: error:")
    assert "\n" not in err


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_long_histories_trace_the_folded_activation_unit(tiny_data: PreparedData, tmp_path: Path, fmt: str) -> None:
    # T = 60 > H / 2 = 40 keys per row: the trace records the per-row fold (baddbmm), which must export and then
    # score any history length (here 5) as the eager model does.
    torch.manual_seed(0)
    small = {"item_embedding_dim": 8, "attribute_embedding_dim": 8, "head_hidden": (16, 8)}
    model = build_model("dhan", tiny_data.schema, small).eval()
    meta = build_metadata(model, {"model_name": "dhan"}, tiny_data.schema, tiny_data)
    long = [b.with_padding(60 - b.hist_items.shape[1]) for b in sample_batches(tiny_data, 5)]
    report = export_model(model, meta, long, fmt, tmp_path / f"m.{fmt}")  # type: ignore[arg-type]
    assert report.max_abs_diff <= 1e-5
    assert min(b["history"] for b in report.batches) == 60
    art = load_artifact(tmp_path / f"m.{fmt}")
    short = sample_batches(tiny_data, 4, seed=7)[1]
    eager = ScoringModule(model)(*batch_inputs(short)).detach().numpy()
    np.testing.assert_allclose(art.run([t.numpy() for t in batch_inputs(short)]), eager, atol=1e-5, rtol=0)
