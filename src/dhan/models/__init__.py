"""The model zoo: ``MODELS`` maps each ``--model`` name to its (config class, model class).

Every model: ``Model(config, schema)``, ``forward(batch) -> ModelOutput`` (logits (B,), aux_loss or None), a class
attribute ``needs_negatives``; the attention models (din, dien, dhan, dhan-gru) have ``explain(batch) -> dict``.
Every config class has two presets, ``paper()`` and ``reference_code()`` (see ``docs/models.md``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from dhan.errors import UserError
from dhan.models.base import BaseConfig, BaseModel
from dhan.models.common import CommonConfig, CTRModel, ModelOutput
from dhan.models.dhan import DHAN, DHANConfig
from dhan.models.dhan_gru import DHANGRU, DHANGRUConfig
from dhan.models.dien import DIEN, DIENConfig
from dhan.models.din import DIN, DINConfig
from dhan.models.pnn import PNN, PNNConfig
from dhan.models.wide_deep import WideDeep, WideDeepConfig
from dhan.schema import Schema

MODELS: dict[str, tuple[type[CommonConfig], type[CTRModel]]] = {
    "base": (BaseConfig, BaseModel),
    "wdl": (WideDeepConfig, WideDeep),
    "pnn": (PNNConfig, PNN),
    "din": (DINConfig, DIN),
    "dien": (DIENConfig, DIEN),
    "dhan": (DHANConfig, DHAN),
    "dhan-gru": (DHANGRUConfig, DHANGRU),
}

PRESETS = ("paper", "reference-code")


class ModelConfigError(UserError, ValueError):
    """An unknown model, preset or config field, or a value of the wrong type."""


def make_config(name: str, overrides: dict[str, Any] | None = None, preset: str = "paper") -> CommonConfig:
    """The config of model ``name``: the preset, then ``overrides`` (field name → value).

    Values may be typed (``3``, ``("category", "brand")``) or strings as they come from ``--set``
    (``"3"``, ``"category,brand"``, ``"true"``); unknown fields are rejected.
    """
    if name not in MODELS:
        raise ModelConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    config_cls = MODELS[name][0]
    if preset == "paper":
        config = config_cls.paper()  # type: ignore[attr-defined]
    elif preset == "reference-code":
        config = config_cls.reference_code()  # type: ignore[attr-defined]
    else:
        raise ModelConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not overrides:
        return config
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {}
    for key, value in overrides.items():
        field = key.removeprefix("model.")
        if field not in names:
            raise ModelConfigError(f"model {name!r} has no config field {field!r}; its fields are {sorted(names)}")
        try:
            values[field] = coerce(hints[field], value)
        except (TypeError, ValueError) as exc:
            raise ModelConfigError(f"model.{field}={value!r}: {exc}") from None
    try:
        return dataclasses.replace(config, **values)
    except ValueError as exc:
        raise ModelConfigError(str(exc)) from None


def build_model(name: str, schema: Schema, overrides: dict[str, Any] | None = None, preset: str = "paper") -> CTRModel:
    """``MODELS[name][1](make_config(name, overrides, preset), schema)``."""
    config = make_config(name, overrides, preset)
    try:
        return MODELS[name][1](config, schema)
    except ValueError as exc:
        raise ModelConfigError(str(exc)) from None


def config_from_dict(name: str, data: dict[str, Any]) -> CommonConfig:
    """Rebuild a config from ``asdict(config)`` (e.g. a checkpoint's config.json; lists become tuples)."""
    if name not in MODELS:
        raise ModelConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    config_cls = MODELS[name][0]
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - names
    if unknown:
        raise ModelConfigError(f"model {name!r} has no config fields {sorted(unknown)}")
    return config_cls(**{k: coerce(hints[k], v) for k, v in data.items()})


def coerce(tp: Any, value: Any) -> Any:
    """Convert ``value`` (possibly a string or a JSON list) to the field type ``tp``; raise ValueError if it can't."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ValueError(f"expected one of {list(allowed)}")
        return value
    if origin is tuple:
        (item_tp, _ellipsis) = get_args(tp)
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, list | tuple):
            parts = list(value)
        else:
            raise ValueError(f"expected a comma-separated list or a sequence; got {type(value).__name__}")
        return tuple(coerce(item_tp, p) for p in parts)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    return value


__all__ = [
    "DHAN",
    "DHANGRU",
    "DIEN",
    "DIN",
    "MODELS",
    "PNN",
    "PRESETS",
    "BaseConfig",
    "BaseModel",
    "CTRModel",
    "CommonConfig",
    "DHANConfig",
    "DHANGRUConfig",
    "DIENConfig",
    "DINConfig",
    "ModelConfigError",
    "ModelOutput",
    "PNNConfig",
    "WideDeep",
    "WideDeepConfig",
    "build_model",
    "config_from_dict",
    "make_config",
]
