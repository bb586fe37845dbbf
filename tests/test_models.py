"""Every model in MODELS: shapes, losses, gradients, padding invariance, empty histories, overfitting, state_dict."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dhan.batch import Batch
from dhan.models import MODELS, PRESETS, ModelConfigError, build_model, config_from_dict, make_config
from dhan.models.common import CTRModel
from dhan.schema import Schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NAMES = list(MODELS)
SMALL = {"item_embedding_dim": 8, "attribute_embedding_dim": 8}


def small(name: str, schema: Schema, preset: str = "paper", seed: int = 0) -> CTRModel:
    torch.manual_seed(seed)
    return build_model(name, schema, SMALL, preset)


def total_loss(model: CTRModel, batch: Batch) -> torch.Tensor:
    out = model(batch)
    assert batch.label is not None
    loss = F.binary_cross_entropy_with_logits(out.logits, batch.label)
    return loss if out.aux_loss is None else loss + out.aux_loss


def empty_history(batch: Batch) -> Batch:
    return replace(
        batch,
        hist_items=torch.zeros_like(batch.hist_items),
        hist_attrs=torch.zeros_like(batch.hist_attrs),
        hist_mask=torch.zeros_like(batch.hist_mask),
        neg_hist_items=torch.zeros_like(batch.hist_items),
        neg_hist_attrs=torch.zeros_like(batch.hist_attrs),
    )


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_finite_loss_and_every_parameter_gets_gradient(name: str, preset: str, tiny_schema, tiny_batch):
    tiny_batch.validate(len(tiny_schema.attribute_names))
    model = small(name, tiny_schema, preset)
    out = model(tiny_batch)
    assert out.logits.shape == (tiny_batch.size,)
    assert (out.aux_loss is not None) == model.needs_negatives
    loss = total_loss(model, tiny_batch)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", NAMES)
def test_appending_padding_changes_nothing(name: str, preset: str, tiny_schema, tiny_batch):
    model = small(name, tiny_schema, preset).eval()
    with torch.no_grad():
        base, padded = model(tiny_batch), model(tiny_batch.with_padding(4))
    torch.testing.assert_close(base.logits, padded.logits, atol=1e-6, rtol=1e-5)
    if base.aux_loss is not None:
        assert padded.aux_loss is not None
        torch.testing.assert_close(base.aux_loss, padded.aux_loss, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_empty_history_gives_finite_logits_and_gradients(name: str, tiny_schema, tiny_batch):
    model = small(name, tiny_schema)
    batch = empty_history(tiny_batch)
    loss = total_loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch).logits).all()
        assert torch.isfinite(model(batch.with_padding(0)).logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_history_of_length_one(name: str, tiny_schema, tiny_batch):
    batch = replace(
        tiny_batch,
        hist_items=tiny_batch.hist_items[:, :1],
        hist_attrs=tiny_batch.hist_attrs[:, :1],
        hist_mask=tiny_batch.hist_mask[:, :1],
        neg_hist_items=tiny_batch.neg_hist_items[:, :1],  # type: ignore[index]
        neg_hist_attrs=tiny_batch.neg_hist_attrs[:, :1],  # type: ignore[index]
    )
    assert torch.isfinite(total_loss(small(name, tiny_schema), batch))


@pytest.mark.parametrize("name", NAMES)
def test_overfits_one_tiny_batch(name: str, tiny_schema, tiny_batch):
    model = small(name, tiny_schema)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    assert tiny_batch.label is not None
    for _ in range(80):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(tiny_batch).logits, tiny_batch.label)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = F.binary_cross_entropy_with_logits(model(tiny_batch).logits, tiny_batch.label)
    assert final < 0.1, f"{name} did not overfit: loss {float(final):.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str, tiny_schema, tiny_batch, tmp_path: Path):
    model = small(name, tiny_schema, seed=0)
    model.train()
    total_loss(model, tiny_batch).backward()  # one forward in train mode moves Dice's running statistics
    model.eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = small(name, tiny_schema, seed=1)
    other.load_state_dict(torch.load(tmp_path / "m.pt"))
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_batch).logits, other(tiny_batch).logits, atol=0, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", NAMES)
def test_presets_build_and_config_json_round_trips(name: str, preset: str, tiny_schema):
    config = make_config(name, preset=preset)
    config_cls = MODELS[name][0]
    assert dataclasses.is_dataclass(config)
    assert type(config) is config_cls
    assert config_cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    assert config_from_dict(name, data) == config
    build_model(name, tiny_schema, SMALL, preset)


def test_string_overrides_as_from_the_command_line(tiny_schema):
    config = make_config("dhan", {"model.dimensions": "category,brand", "levels": "3", "attention_scaled": "true"})
    assert config.dimensions == ("category", "brand")  # type: ignore[attr-defined]
    assert config.levels == 3
    assert config.attention_scaled
    assert make_config("din", {"head_hidden": "64,32"}).head_hidden == (64, 32)


def test_bad_overrides_say_what_is_wrong(tiny_schema):
    with pytest.raises(ModelConfigError, match="no config field 'nope'"):
        make_config("din", {"nope": 1})
    with pytest.raises(ModelConfigError, match="expected one of"):
        make_config("din", {"head_activation": "tanh"})
    with pytest.raises(ModelConfigError, match="unknown model"):
        make_config("dinn")
    with pytest.raises(ModelConfigError, match="unknown preset"):
        make_config("din", preset="tf")
    with pytest.raises(ModelConfigError, match="dataset does not have"):
        build_model("dhan", tiny_schema, {"dimensions": "style"})


def test_needs_negatives_flags():
    assert {n for n, (_, cls) in MODELS.items() if cls.needs_negatives} == {"dien", "dhan-gru"}


@pytest.mark.parametrize("name", ["dien", "dhan-gru"])
def test_training_without_negatives_is_an_error_eval_is_not(name: str, tiny_schema, tiny_batch):
    model = small(name, tiny_schema)
    batch = replace(tiny_batch, neg_hist_items=None, neg_hist_attrs=None)
    with pytest.raises(ValueError, match="neg_hist_items"):
        model(batch)
    model.eval()
    assert model(batch).aux_loss is None


@pytest.mark.parametrize("name", ["din", "dien", "dhan", "dhan-gru"])
def test_explain_item_weights(name: str, tiny_schema, tiny_batch):
    model = small(name, tiny_schema).eval()
    weights = model.explain(tiny_batch)["item_weights"]  # type: ignore[operator]
    assert weights.shape == tiny_batch.hist_mask.shape
    assert (weights[~tiny_batch.hist_mask] == 0).all()
