"""Run config: typed --set overrides, unknown keys, files, presets."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from dhan.config import (
    TrainConfig,
    build_run_config,
    load_config_file,
    parse_value,
    run_config_from_resolved,
    train_defaults,
)
from dhan.errors import UserError


@dataclasses.dataclass(frozen=True)
class _ToyModelConfig:
    dimensions: tuple[str, ...] = ("category",)
    hidden: tuple[int, ...] = (80, 40)
    dropout: float = 0.0
    share: bool = False
    mode: Literal["softmax", "sum"] = "softmax"
    width: int | None = None


def test_set_flags_are_typed_by_the_dataclass_fields() -> None:
    rc = build_run_config(
        "toy",
        set_flags=[
            "train.lr=0.05",
            "train.batch_size=64",
            "train.optimizer=sgd",
            "model.dimensions=category,brand",
            "model.hidden=200,80",
            "model.share=true",
            "model.width=none",
            "data.max_len=20",
        ],
        model_config_class=_ToyModelConfig,
    )
    assert rc.train.lr == 0.05
    assert rc.train.batch_size == 64
    assert rc.train.optimizer == "sgd"
    assert rc.model_overrides == {
        "dimensions": ("category", "brand"),
        "hidden": (200, 80),
        "share": True,
        "width": None,
    }
    assert rc.data.max_len == 20


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("train.lrr=1", "unknown setting 'train.lrr'; valid train settings: train.optimizer, train.lr"),
        ("model.nope=1", "valid model settings: model.dimensions"),
        ("train.optimizer=rmsprop", "choose one of adam, sgd, adagrad"),
        ("train.batch_size=abc", "not an integer"),
        ("lr=1", "needs a section"),
        ("train.lr", "expected SECTION.FIELD=VALUE"),
        ("train.lr=-1", "must be > 0"),
    ],
)
def test_bad_set_flags_are_user_errors(flag: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build_run_config("toy", set_flags=[flag], model_config_class=_ToyModelConfig)


def test_precedence_defaults_preset_file_set_flags(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\n  epochs: 7\nmodel:\n  hidden: [10, 5]\n")
    rc = build_run_config(
        "toy",
        recipe="din",
        preset="reference-code",
        file_config=load_config_file(path),
        set_flags=["train.epochs=9"],
        train_flags={"epochs": None, "seed": 3},
        model_config_class=_ToyModelConfig,
    )
    assert rc.train.optimizer == "sgd"
    assert rc.train.batch_size == 32
    assert rc.train.lr == 0.5  # file over preset
    assert rc.train.epochs == 9  # --set over file
    assert rc.train.seed == 3  # explicit flag
    assert rc.model_overrides == {"hidden": (10, 5)}


def test_resolved_config_round_trips() -> None:
    rc = build_run_config("toy", set_flags=["train.lr=0.2"], model_config_class=_ToyModelConfig)
    resolved = rc.resolved(dataclasses.asdict(_ToyModelConfig()))
    back = run_config_from_resolved(resolved)
    assert back.train == rc.train
    assert back.data == rc.data
    assert back.model_name == "toy"


def test_presets_and_defaults() -> None:
    assert train_defaults("paper", "din") == {}
    assert train_defaults("reference-code", "dien")["batch_size"] == 128
    assert TrainConfig().optimizer == "adam"
    assert TrainConfig().batch_size == 256
    with pytest.raises(UserError, match="unknown preset"):
        train_defaults("nope", "din")


def test_parse_value_int_from_float_text() -> None:
    assert parse_value("1e3", int, "train.max_steps") == 1000
