"""``CTRModel.score_candidates`` (one user's history against many candidates) equals the plain forward."""

from __future__ import annotations

import pytest
import torch

from dhan.batch import Batch
from dhan.models import MODELS, build_model

CASES = [(name, {}) for name in MODELS] + [
    (name, {"levels": 3, "dimensions": "category,brand"}) for name in MODELS if name.startswith("dhan")
]


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[f"{n}-{'deep' if o else 'default'}" for n, o in CASES])
def test_score_candidates_equals_forward(name: str, overrides: dict, tiny_schema, tiny_batch: Batch) -> None:
    torch.manual_seed(0)
    model = build_model(name, tiny_schema, overrides).eval()
    row = 1  # a row with a non-empty history
    history = Batch(
        target_item=tiny_batch.target_item[row : row + 1],
        target_attrs=tiny_batch.target_attrs[row : row + 1],
        hist_items=tiny_batch.hist_items[row : row + 1],
        hist_attrs=tiny_batch.hist_attrs[row : row + 1],
        hist_mask=tiny_batch.hist_mask[row : row + 1],
    )
    items = torch.arange(2, 2 + tiny_schema.num_items)  # every item as a candidate
    attrs = tiny_batch.hist_attrs.new_tensor([[i % 4 + 2, i % 2 + 2, i % 3 + 2, i % 2 + 2] for i in items.tolist()])
    k = items.shape[0]
    plain = Batch(
        target_item=items,
        target_attrs=attrs,
        hist_items=history.hist_items.repeat(k, 1),
        hist_attrs=history.hist_attrs.repeat(k, 1, 1),
        hist_mask=history.hist_mask.repeat(k, 1),
    )
    with torch.inference_mode():
        expected = model(plain).logits
        fast = model.score_candidates(history, items, attrs)
    assert fast.shape == (k,)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)


def test_score_candidates_rejects_several_users(tiny_schema, tiny_batch: Batch) -> None:
    model = build_model("din", tiny_schema).eval()
    with pytest.raises(ValueError, match="one user"):
        model.score_candidates(tiny_batch, tiny_batch.target_item, tiny_batch.target_attrs)
