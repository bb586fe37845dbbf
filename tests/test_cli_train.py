"""Command-line runs on the tiny dataset: train → evaluate → plot → explain, compare, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dhan.cli import main
from dhan.data.store import PreparedData

SMALL = [
    "--set",
    "model.item_embedding_dim=8",
    "--set",
    "model.attribute_embedding_dim=8",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.eval_every=2",
]


@pytest.fixture
def data_dir(tiny_data: PreparedData, tmp_path: Path) -> Path:
    return tiny_data.save(tmp_path / "ds")


@pytest.mark.slow
def test_train_evaluate_plot_explain(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--model", "dhan", "--out", str(run), "--epochs", "2", *SMALL]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["test"]["auc"] == json.loads((run / "metrics.json").read_text())["test"]["auc"]
    assert main(["evaluate", "--run", str(run)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["auc"] == pytest.approx(trained["test"]["auc"])  # the best checkpoint scores the same again
    png = tmp_path / "curves.png"
    assert main(["plot", "--runs", str(run), str(run), "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    bars = tmp_path / "att.png"
    assert main(["explain", "--run", str(run), "--user", "user1", "--out", str(bars)]) == 0
    out = capsys.readouterr().out
    assert "category level 2 attention over category groups" in out
    assert "top " in out
    assert "history items by item-level weight" in out
    assert bars.stat().st_size > 0
    assert main(["explain", "--run", str(run), "--user", "user1", "--target", "item5"]) == 0


@pytest.mark.slow
def test_compare_two_models_two_seeds_writes_the_report(data_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    argv = ["compare", "--data", str(data_dir), "--models", "din,dhan", "--seeds", "2", "--baseline", "din"]
    argv += ["--out", str(report), "--epochs", "1", "--quiet", *SMALL]
    assert main(argv) == 0
    rep = json.loads((report / "report.json").read_text())
    assert rep["baseline"] == "din"
    assert [r["model"] for r in rep["rows"]] == ["din", "dhan"]
    for row in rep["rows"]:
        assert {"model", "test_auc_mean", "test_auc_std", "test_gauc_mean", "relaimpr", "p_value", "runs"} <= set(row)
        assert len(row["runs"]) == 2
    assert rep["rows"][0]["relaimpr"] == 0.0
    assert rep["rows"][0]["p_value"] is None
    md = (report / "report.md").read_text()
    assert "test AUC mean ± std" in md
    assert "RelaImpr" in md
    assert (report / "training_curves.png").is_file()
    assert (report / "attention_dhan.png").is_file()
    # an interrupted comparison: remove one finished run; only that one is trained again
    stamp = (report / "runs" / "din" / "seed0" / "metrics.json").stat().st_mtime_ns
    (report / "runs" / "dhan" / "seed1" / "metrics.json").unlink()
    assert main(argv) == 0
    assert (report / "runs" / "din" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert (report / "runs" / "dhan" / "seed1" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "train.nope=1"], "unknown setting 'train.nope'; valid train settings: train.optimizer"),
        (["--set", "model.nope=1"], "unknown setting 'model.nope'; valid model settings:"),
        (["--model", "nope"], "unknown model 'nope'; choose one of"),
    ],
)
def test_bad_settings_are_one_line_errors_with_exit_code_2(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = ["train", "--data", str(data_dir), "--out", str(tmp_path / "run")]
    if "--model" not in argv:
        base += ["--model", "din"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("dhan train: error: ")
    assert message in err


def test_missing_data_dir_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(tmp_path / "missing"), "--model", "din", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing: no such directory" in err


def test_evaluate_missing_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
