"""Run configuration: the training settings, the data settings, and how files and ``--set`` flags override them.

A *resolved run config* is one JSON object that says everything a run did::

    {"model_name": "dhan", "preset": "paper", "model": {...DHANConfig fields...},
     "train": {...TrainConfig fields...}, "data": {...DataConfig fields...}}

It is written to ``RUN/config.json`` and is enough, with the dataset, to rebuild the model of a run.

Precedence, lowest first: the dataclass defaults, the preset's training defaults for the dataset's recipe
(:func:`train_defaults`), a ``--config`` YAML/JSON file, ``--set section.field=value`` flags, and finally the
explicit flags of ``dhan train`` (``--seed``, ``--epochs``, ...). Values from ``--set`` are parsed by the type of
the dataclass field they set (never evaluated as code): ``int``, ``float``, ``bool`` (true/false/1/0/yes/no),
``str``, ``Literal[...]`` (checked against the allowed strings), ``X | None`` (``none``/``null``) and tuples from
comma-separated lists (``model.dimensions=category,brand``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from dhan.errors import UserError

Preset = Literal["paper", "reference-code"]
PRESETS: tuple[str, ...] = ("paper", "reference-code")
PROTOCOLS: tuple[str, ...] = ("valid", "paper")

MAX_THREADS = 1024  # torch.set_num_threads with a huge count crashes the process; no machine needs more


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained and evaluated.

    The authors trained DIN-style runs with plain SGD, lr 1.0, batch 32, global-norm clip 5 (reference notes
    §1.6) and DIEN-style runs with Adam 1e-3 halved each epoch, batch 128, 3 epochs (§4.4); that is
    ``--preset reference-code``. The defaults here are practical ones instead. Adam needs no per-model
    learning-rate search across the models of the comparison (SGD at lr 1.0 is what the authors used with
    their TF initialisation and norm layers; nothing says it suits every model here). Adam 1e-3 at batch 256
    brings DIN and DHAN close to convergence within 2 epochs on the synthetic data (``dhan demo``).
    Batch 256 is for GPUs, where small batches leave the device idle; on a CPU it is not faster per sample
    (histories are padded to the longest in the batch, so small batches pad less: DIN on the synthetic data,
    1 thread, measured 3.4k samples/s at batch 32 and 2.7k at batch 256 on a loaded machine).

    No model has its own training defaults; per-model settings go in a config file (``dhan compare
    --config``'s ``model_overrides``) or ``--set``.
    """

    optimizer: Literal["adam", "sgd", "adagrad"] = "adam"  # practical default; the DIN-style code used SGD (§1.6)
    lr: float = 1e-3  # Adam's usual rate, also DIEN-style code's (§4.4)
    weight_decay: float = 0.0  # the authors used no regularisation (§1.6)
    batch_size: int = 256  # see the class docstring; authors: 32 (DIN-style), 128 (DIEN-style)
    eval_batch_size: int = 1024  # evaluation has no backward pass; authors: 512 (§1.6)
    epochs: int = 3  # DIEN-style code's 3 epochs (§4.4); DIN-style peaked at epoch 3-7 (§7)
    max_steps: int = 0  # stop after this many optimiser steps; 0 = no limit
    eval_every: int = 0  # evaluate every N steps (authors: 1000); 0 = once at the end of every epoch
    patience: int = 3  # stop after this many evaluations without a better selection AUC; 0 = never stop early
    min_delta: float = 0.0  # an AUC gain of at most this does not count as better
    grad_clip: float = 5.0  # global-norm clip, as the DIN-style code (§1.6); 0 = no clipping
    lr_schedule: Literal["constant", "epoch_decay", "step_decay"] = "constant"
    lr_decay: float = 0.5  # factor of epoch_decay (DIEN-style code halves every epoch) and step_decay (DIN: 0.1)
    lr_decay_steps: int = 0  # step_decay: multiply by lr_decay once at this step (DIN-style code: 360000)
    device: str = "auto"  # auto = cuda when available, else cpu
    # bf16: forward passes (training and evaluation) under torch.autocast(bfloat16), weights and optimiser state in
    # float32; auto = bf16 on CUDA, fp32 on CPU (where bf16 has no fast path on most x86 CPUs).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0  # model initialisation, data order and dropout
    num_threads: int = 0  # torch intra-op threads; 0 = all cores
    protocol: Literal["valid", "paper"] = "valid"  # paper = select on test as the authors did: biased
    log_every: int = 50  # steps between progress-bar and TensorBoard updates of the running loss
    checkpoint_every: int = 1000  # also save last.pt every N steps, to resume mid-epoch after a crash; 0 = never
    # sort samples by history length within windows of N batches, then shuffle the batches (DIEN's data iterator
    # sorts 20 batches at a time): less padding on data with skewed history lengths; 0 = plain shuffling.
    # Measured: DHAN on Amazon Beauty, 1 thread, 2.2k -> 8.8k samples/s, same valid AUC after 300 steps.
    bucket_batches: int = 20

    def __post_init__(self) -> None:
        positive = {"lr": self.lr, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"train.{name} must be > 0; got {value}. Fix it with --set train.{name}=...")
        non_negative = {
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "eval_every": self.eval_every,
            "patience": self.patience,
            "grad_clip": self.grad_clip,
            "weight_decay": self.weight_decay,
            "num_threads": self.num_threads,
            "lr_decay_steps": self.lr_decay_steps,
            "checkpoint_every": self.checkpoint_every,
            "bucket_batches": self.bucket_batches,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise UserError(f"train.{name} must be >= 0; got {value}. Fix it with --set train.{name}=...")
        if self.log_every < 1:
            raise UserError(f"train.log_every must be >= 1; got {self.log_every}. Fix it with --set train.log_every=50")
        if self.num_threads > MAX_THREADS:
            raise UserError(
                f"train.num_threads must be at most {MAX_THREADS}; got {self.num_threads}. Use 0 for all cores"
            )
        if self.epochs == 0 and self.max_steps == 0:
            raise UserError("train.epochs and train.max_steps are both 0; set at least one of them")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"train.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which prepared dataset a run reads and how its histories are cut."""

    path: str = ""  # a directory written by `dhan prepare`
    max_len: int = 0  # keep at most this many most recent behaviours; 0 = the dataset's max_len
    eval_max_len: int = 0  # the same for evaluation; 0 = as max_len (DIEN-style code did not truncate at test)

    def __post_init__(self) -> None:
        for name in ("max_len", "eval_max_len"):
            if getattr(self, name) < 0:
                raise UserError(f"data.{name} must be >= 0; got {getattr(self, name)}")


def train_defaults(preset: str, recipe: str) -> dict[str, Any]:
    """Training settings a preset brings for a dataset recipe (``din`` or ``dien`` samples).

    ``paper`` uses the practical :class:`TrainConfig` defaults. ``reference-code`` copies the authors' scripts:
    DIN-style SGD lr 1.0 batch 32 clip 5 with a 10x drop at step 360000, evaluated every 1000 steps (notes §1.6);
    DIEN-style Adam 1e-3 halved each epoch, batch 128, 3 epochs, evaluated every 1000 steps (notes §4.4).
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset == "paper":
        return {}
    if recipe == "dien":
        return {
            "optimizer": "adam",
            "lr": 1e-3,
            "batch_size": 128,
            "epochs": 3,
            "lr_schedule": "epoch_decay",
            "lr_decay": 0.5,
            "eval_every": 1000,
            "grad_clip": 0.0,
        }
    return {
        "optimizer": "sgd",
        "lr": 1.0,
        "batch_size": 32,
        "eval_batch_size": 512,
        "epochs": 10,
        "lr_schedule": "step_decay",
        "lr_decay": 0.1,
        "lr_decay_steps": 360_000,
        "eval_every": 1000,
        "grad_clip": 5.0,
    }


# --------------------------------------------------------------------------- typed overrides


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse the string ``text`` as a value of the type ``tp`` (a dataclass field type)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        last: UserError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg, key)
            except UserError as exc:
                last = exc
        raise last or UserError(f"{key}: cannot parse {text!r}")
    if origin is Literal:
        if text not in args:
            raise UserError(f"{key}={text!r} is not allowed; choose one of {', '.join(map(str, args))}")
        return text
    if origin is tuple:
        inner = args[0] if args else str
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return tuple(parse_value(p, inner, key) for p in parts)
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{key}={text!r} is not a boolean; use true or false")
    if tp is int:
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = float("nan")
            if not as_float.is_integer():
                raise UserError(f"{key}={text!r} is not an integer") from None
            number = int(as_float)
        if not -(2**63) <= number < 2**63:  # torch and numpy take 64-bit integers: 1e30 overflowed there
            raise UserError(f"{key}={text!r} is out of range for a 64-bit integer")
        return number
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{key}={text!r} is not a number") from None
    if tp is str:
        return text
    raise UserError(f"{key}: fields of type {tp} cannot be set from the command line")


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """Check and convert a value read from YAML/JSON (already typed, or a string) to the field type ``tp``."""
    if isinstance(value, str) and tp is not str:
        return parse_value(value, tp, key)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            return None
        raise UserError(f"{key} cannot be null")
    if origin is tuple and isinstance(value, list | tuple):
        inner = args[0] if args else str
        return tuple(coerce_value(v, inner, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(value, arg, key)
            except UserError:
                continue
        raise UserError(f"{key}={value!r} does not fit the type {tp}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, args))}")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise UserError(f"{key}={value!r} does not fit the type {getattr(tp, '__name__', tp)}")


def apply_overrides(cls: type, base: Mapping[str, Any], overrides: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``base`` updated with ``overrides`` (strings from ``--set`` or typed values from a file), checked by ``cls``.

    Unknown fields raise :class:`UserError` listing the valid ones.
    """
    types_ = _field_types(cls)
    out = dict(base)
    for name, value in overrides.items():
        key = f"{section}.{name}"
        if name not in types_:
            valid = ", ".join(f"{section}.{n}" for n in types_)
            raise UserError(f"unknown setting {key!r}; valid {section} settings: {valid}")
        out[name] = coerce_value(value, types_[name], key)
    return out


def split_set_flags(pairs: list[str] | None) -> dict[str, dict[str, str]]:
    """``["train.lr=0.1", "model.dimensions=category,brand"]`` → ``{"train": {"lr": "0.1"}, "model": {...}}``."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set {pair!r}: expected SECTION.FIELD=VALUE, e.g. --set train.lr=0.01")
        key, value = pair.split("=", 1)
        key = key.strip()
        if "." not in key:
            raise UserError(
                f"--set {pair!r}: the key needs a section, one of model, train, data (e.g. train.{key}={value})"
            )
        section, name = key.split(".", 1)
        if section not in ("model", "train", "data"):
            raise UserError(f"--set {pair!r}: unknown section {section!r}; use model., train. or data.")
        out.setdefault(section, {})[name] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON run config file: a mapping with optional ``model``, ``train``, ``data`` sections.

    Top-level ``model_name`` and ``preset`` are allowed too (the keys of a resolved ``config.json``).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such config file")
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{p}: cannot read config ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping with sections model, train, data")
    allowed = {"model", "train", "data", "model_name", "preset", "description"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{p}: unknown top-level keys {unknown}; allowed: {', '.join(sorted(allowed))}")
    for section in ("model", "train", "data"):
        if section in data and not isinstance(data[section] or {}, dict):
            raise UserError(f"{p}: section {section!r} must be a mapping")
    return data


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs besides the dataset itself."""

    model_name: str
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    preset: str = "paper"
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # typed, checked at build

    def resolved(self, model_config: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON-ready resolved config, with the model's full config as built."""
        return {
            "model_name": self.model_name,
            "preset": self.preset,
            "model": _jsonable(dict(model_config)),
            "train": asdict(self.train),
            "data": asdict(self.data),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def build_run_config(
    model_name: str,
    *,
    recipe: str = "din",
    preset: str = "paper",
    file_config: Mapping[str, Any] | None = None,
    set_flags: list[str] | None = None,
    train_flags: Mapping[str, Any] | None = None,
    data_flags: Mapping[str, Any] | None = None,
    model_config_class: type | None = None,
) -> RunConfig:
    """Merge defaults, preset, config file, ``--set`` flags and explicit flags into a :class:`RunConfig`.

    ``model_config_class`` (the model's config dataclass) types and checks the ``model.*`` overrides; without it
    they are kept as given and checked when the model is built.
    """
    file_config = dict(file_config or {})
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    sets = split_set_flags(set_flags)
    train = apply_overrides(TrainConfig, {}, train_defaults(preset, recipe), "train")
    train = apply_overrides(TrainConfig, train, file_config.get("train") or {}, "train")
    train = apply_overrides(TrainConfig, train, sets.get("train", {}), "train")
    train = apply_overrides(
        TrainConfig, train, {k: v for k, v in (train_flags or {}).items() if v is not None}, "train"
    )
    data = apply_overrides(DataConfig, {}, file_config.get("data") or {}, "data")
    data = apply_overrides(DataConfig, data, sets.get("data", {}), "data")
    data = apply_overrides(DataConfig, data, {k: v for k, v in (data_flags or {}).items() if v is not None}, "data")
    model_over: dict[str, Any] = dict(file_config.get("model") or {})
    if model_config_class is not None:
        model_over = apply_overrides(model_config_class, {}, model_over, "model")
        model_over = apply_overrides(model_config_class, model_over, sets.get("model", {}), "model")
    else:
        model_over.update(sets.get("model", {}))
    return RunConfig(
        model_name=model_name,
        train=TrainConfig(**train),
        data=DataConfig(**data),
        preset=preset,
        model_overrides=model_over,
    )


def run_config_from_resolved(resolved: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a saved ``config.json`` (for resuming and re-scoring)."""
    try:
        train = apply_overrides(TrainConfig, {}, resolved["train"], "train")
        data = apply_overrides(DataConfig, {}, resolved["data"], "data")
        return RunConfig(
            model_name=str(resolved["model_name"]),
            train=TrainConfig(**train),
            data=DataConfig(**data),
            preset=str(resolved.get("preset", "paper")),
            model_overrides=dict(resolved.get("model") or {}),
        )
    except (KeyError, TypeError) as exc:
        raise UserError(f"config.json of the run is malformed ({exc}); start a new run") from None
