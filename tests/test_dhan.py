"""DHAN: the vectorised grouping against a plain per-category loop written from Eq. 2, and DHAN-specific checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dhan.layers import ActivationUnit, AttentionOptions, HierarchicalAttention, masked_softmax
from dhan.models import build_model
from dhan.models.dhan import DHAN
from dhan.schema import Schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def attend_loop(unit: ActivationUnit, scale: float, query, keys, mask):
    """Scores by the literal concat form, masked softmax, pooled vector."""
    w = masked_softmax(unit.forward_concat(query, keys) * scale, mask)
    return (w[..., None] * keys).sum(1), w


def group_loop(values, weights, unit_group, mask, num_groups: int, eps: float = 1e-10):
    """Eq. 2 for every group id 0..num_groups-1 of the dataset, one at a time (the reference code's loop)."""
    vectors, present = [], []
    for g in range(num_groups):
        in_g = (unit_group == g) & mask  # (B, N)
        wg = torch.where(in_g, weights, torch.zeros_like(weights))
        vectors.append((wg[..., None] * values).sum(1) / (wg.sum(1, keepdim=True) + eps))
        present.append(in_g.any(1))
    return torch.stack(vectors, 1), torch.stack(present, 1)  # (B, G, D), (B, G)


def hand_made_case(d: int = 6):
    """Rows: padding + repeated categories; one item per category; all items in one category; empty history."""
    torch.manual_seed(0)
    cats = torch.tensor(
        [
            [3, 7, 3, 5, 0, 0],  # two padded positions, category 3 twice
            [2, 3, 4, 5, 6, 7],  # one item per category
            [4, 4, 4, 4, 4, 0],  # all items in one category
            [0, 0, 0, 0, 0, 0],  # empty history
        ]
    )
    mask = cats != 0
    keys = torch.randn(4, 6, d) * mask[..., None]
    query = torch.randn(4, d)
    return query, keys, mask, cats


@pytest.mark.parametrize(
    "options",
    [AttentionOptions(), AttentionOptions(scaled=True, share_level_mlp=True)],
    ids=["paper", "scaled-shared"],
)
def test_two_levels_equal_per_category_loop(options: AttentionOptions):
    query, keys, mask, cats = hand_made_case()
    han = HierarchicalAttention(6, 2, options)
    out = han(query, keys, mask, cats[..., None])
    num_categories = 10  # categories 0, 1, 8, 9 never occur: empty in every row
    pooled1, w = attend_loop(han.unit(0), han.scale, query, keys, mask)
    groups, present = group_loop(keys, w, cats, mask, num_categories)
    pooled2, alpha = attend_loop(han.unit(1), han.scale, query, groups, present)
    torch.testing.assert_close(out.pooled[0], pooled1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.pooled[1], pooled2, atol=1e-6, rtol=1e-5)
    for b in range(4):
        used = out.group_mask[1][b]
        ids = out.group_ids[1][b][used]
        assert ids.tolist() == torch.nonzero(present[b]).flatten().tolist()
        torch.testing.assert_close(out.group_vectors[1][b][used], groups[b, ids], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.weights[1][b][used], alpha[b, ids], atol=1e-6, rtol=1e-5)
    assert (out.pooled[1][3] == 0).all()  # empty history
    assert (out.pooled[0][3] == 0).all()
    torch.testing.assert_close(out.group_vectors[1][2][0], pooled1[2], atol=1e-6, rtol=1e-5)  # one category = i_x


def test_three_levels_equal_nested_loop():
    query, keys, mask, cats = hand_made_case()
    parent_of = torch.tensor([0, 1, 2, 3, 2, 3, 2, 3, 2, 3])  # category c -> parent (c % 2) + 2; 0 stays 0
    parents = parent_of[cats]
    han = HierarchicalAttention(6, 3, AttentionOptions())
    out = han(query, keys, mask, torch.stack([cats, parents], -1))
    _, w = attend_loop(han.unit(0), han.scale, query, keys, mask)
    cat_vectors, present = group_loop(keys, w, cats, mask, 10)
    _, alpha = attend_loop(han.unit(1), han.scale, query, cat_vectors, present)
    cat_parent = parent_of[None].expand(4, -1)  # (B, C) parent of each category unit
    parent_vectors, parent_present = group_loop(cat_vectors, alpha, cat_parent, present, 4)
    pooled3, _ = attend_loop(han.unit(2), han.scale, query, parent_vectors, parent_present)
    torch.testing.assert_close(out.pooled[2], pooled3, atol=1e-6, rtol=1e-5)
    assert (out.pooled[2][3] == 0).all()


def test_every_item_its_own_group_reduces_to_attention_over_items():
    torch.manual_seed(1)
    b, t, d = 3, 5, 4
    keys, query = torch.randn(b, t, d), torch.randn(b, d)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    own = torch.arange(2, 2 + t).expand(b, t)[..., None]  # distinct id per position
    han = HierarchicalAttention(d, 2, AttentionOptions())
    out = han(query, keys, mask, own)
    # c_t = w_t e_t / (w_t + eps) = e_t, so level 2 is attention over the items with the level-2 unit
    expected, _ = attend_loop(han.unit(1), 1.0, query, keys, mask)
    torch.testing.assert_close(out.pooled[1], expected, atol=1e-5, rtol=1e-4)
    # and with one shared activation unit the level-2 vector equals the item-level vector
    shared = HierarchicalAttention(d, 2, AttentionOptions(share_level_mlp=True))
    out = shared(query, keys, mask, own)
    torch.testing.assert_close(out.pooled[1], out.pooled[0], atol=1e-5, rtol=1e-4)


def test_group_layer_norm_variant_is_padding_invariant_and_finite():
    query, keys, mask, cats = hand_made_case()
    han = HierarchicalAttention(6, 2, AttentionOptions.reference_code())
    out = han(query, keys, mask, cats[..., None])
    pad = lambda x: torch.cat([x, torch.zeros_like(x[:, :3])], 1)  # noqa: E731
    padded = han(query, pad(keys), pad(mask), pad(cats)[..., None])
    torch.testing.assert_close(out.pooled[1], padded.pooled[1])
    assert torch.isfinite(out.pooled[1]).all()


def test_three_levels_two_dimensions_run_and_explain(tiny_schema, tiny_batch):
    torch.manual_seed(0)
    model = build_model("dhan", tiny_schema, {"dimensions": "category,brand", "levels": 3})
    assert isinstance(model, DHAN)
    assert [p.num_levels for p in model.plans] == [3, 2]  # brand has one attribute level: 2 attention levels
    out = model(tiny_batch)
    assert out.logits.shape == (tiny_batch.size,)
    assert torch.isfinite(out.logits).all()
    explained = model.explain(tiny_batch)
    levels = explained["dimensions"]["category"]["levels"]
    assert [(lv["level"], lv["attribute"]) for lv in levels] == [(2, "category"), (3, "category_parent")]
    assert [lv["attribute"] for lv in explained["dimensions"]["brand"]["levels"]] == ["brand"]
    for lv in levels:
        assert lv["weights"].shape == lv["group_ids"].shape == lv["group_mask"].shape
        assert (lv["weights"][~lv["group_mask"]] == 0).all()
        assert (lv["group_ids"][lv["group_mask"]] >= 2).all()
    # levels beyond a dimension's hierarchy are ignored, and price (one level) also works
    deep = build_model("dhan", tiny_schema, {"dimensions": "category,brand,price", "levels": 5})
    assert [p.num_levels for p in deep.plans] == [3, 2, 2]  # type: ignore[attr-defined]
    assert torch.isfinite(deep(tiny_batch).logits).all()


def with_category_count(schema: Schema, n: int) -> Schema:
    attrs = tuple(dataclasses.replace(a, num_values=n) if a.name == "category" else a for a in schema.attributes)
    return dataclasses.replace(schema, attributes=attrs)


@pytest.mark.parametrize("preset", ["paper", "reference-code"])
def test_result_does_not_depend_on_number_of_categories(preset: str, tiny_schema, tiny_batch):
    small, large = with_category_count(tiny_schema, 10), with_category_count(tiny_schema, 10_000)
    torch.manual_seed(0)
    model_small = build_model("dhan", small, preset=preset).eval()
    model_large = build_model("dhan", large, preset=preset).eval()
    state = model_small.state_dict()
    big_table = model_large.state_dict()["embedding.attribute_tables.0.weight"].clone()
    big_table[: state["embedding.attribute_tables.0.weight"].shape[0]] = state["embedding.attribute_tables.0.weight"]
    model_large.load_state_dict({**state, "embedding.attribute_tables.0.weight": big_table})
    with torch.no_grad():
        torch.testing.assert_close(model_small(tiny_batch).logits, model_large(tiny_batch).logits, atol=0, rtol=0)


def test_default_is_simplified_dhan(tiny_schema):
    model = build_model("dhan", tiny_schema)
    assert isinstance(model, DHAN)
    assert [(p.dimension, p.num_levels) for p in model.plans] == [("category", 2)]
    assert model.embedding.attributes == ("category",)
    d = model.embedding.dim
    assert d == 128  # item 64 ⊕ category 64
    assert model.head.mlp.net[0].in_features == 3 * d  # X = [x, i_x, e_a]
