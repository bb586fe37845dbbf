"""DIEN: the auxiliary loss ignores padded steps; AUGRU matches a hand-computed step; padded steps carry the state."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from dhan.models import build_model
from dhan.models.dien import AUGRU, DIEN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_aux_loss_ignores_padded_steps_and_averages_over_real_ones(tiny_schema, tiny_batch):
    torch.manual_seed(0)
    model = build_model("dien", tiny_schema, {"item_embedding_dim": 8, "attribute_embedding_dim": 8})
    assert isinstance(model, DIEN)
    model.eval()
    aux = model(tiny_batch).aux_loss
    assert aux is not None
    # garbage negatives at padded positions change nothing
    pad = ~tiny_batch.hist_mask
    noisy = replace(
        tiny_batch,
        neg_hist_items=torch.where(pad, torch.randint(2, 14, pad.shape), tiny_batch.neg_hist_items),  # type: ignore[arg-type]
        neg_hist_attrs=torch.where(pad[..., None], 3, tiny_batch.neg_hist_attrs),  # type: ignore[arg-type]
    )
    torch.testing.assert_close(model(noisy).aux_loss, aux)
    # the mean runs over real (t, t+1) pairs only: recompute it row by row
    with torch.no_grad():
        emb = model.embedding
        hist, neg = emb.history(tiny_batch), emb.negatives(tiny_batch)
        states, _ = model.interest.extractor(hist)
        terms = []
        for b in range(tiny_batch.size):
            n = int(tiny_batch.hist_mask[b].sum())
            for t in range(n - 1):
                pos = model.interest.aux_net(torch.cat([states[b, t], hist[b, t + 1]]))
                neg_logit = model.interest.aux_net(torch.cat([states[b, t], neg[b, t + 1]]))
                terms.append(-F.logsigmoid(pos) - F.logsigmoid(-neg_logit))
        expected = torch.cat(terms).mean()
    torch.testing.assert_close(aux, expected, atol=1e-6, rtol=1e-5)


def test_aux_loss_weight_zero_gives_none(tiny_schema, tiny_batch):
    model = build_model("dien", tiny_schema, {"aux_loss_weight": 0})
    assert model(tiny_batch).aux_loss is None


def _set_weights(cell: AUGRU) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("update", ["paper", "reference-code"])
def test_augru_matches_hand_computed_step(update: str):
    cell = AUGRU(3, 2, update)  # type: ignore[arg-type]
    _set_weights(cell)
    x, h, a = torch.randn(1, 3), torch.randn(1, 2), torch.tensor([[0.3]])
    w_ih, b_ih = cell.input_proj.weight, cell.input_proj.bias
    w_hh, b_hh = cell.hidden_proj.weight, cell.hidden_proj.bias
    gi, gh = x @ w_ih.t() + b_ih, h @ w_hh.t() + b_hh
    r = torch.sigmoid(gi[:, 0:2] + gh[:, 0:2])
    u = torch.sigmoid(gi[:, 2:4] + gh[:, 2:4])
    cand = torch.tanh(gi[:, 4:6] + r * gh[:, 4:6])
    if update == "paper":  # DIEN Eq. 6: u' = a u; h' = (1 - u') h + u' h~
        expected = (1 - a * u) * h + a * u * cand
    else:  # VecAttGRUCell: u = (1 - a) u; h = u h + (1 - u) h~
        g = (1 - a) * u
        expected = g * h + (1 - g) * cand
    torch.testing.assert_close(cell.step(x @ w_ih.t() + b_ih, h, a), expected)
    # forward over one real step from h = 0 equals the step from zeros
    out = cell(x[:, None], a, torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(out, cell.step(x @ w_ih.t() + b_ih, torch.zeros(1, 2), a))


@pytest.mark.parametrize("update", ["paper", "reference-code"])
def test_augru_padded_steps_carry_state(update: str):
    cell = AUGRU(3, 2, update)  # type: ignore[arg-type]
    _set_weights(cell)
    x, a = torch.randn(2, 4, 3), torch.rand(2, 4)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    out = cell(x, a, mask)
    torch.testing.assert_close(out[1], cell(x[1:, :2], a[1:, :2], mask[1:, :2])[0])
    torch.testing.assert_close(cell(x, a, torch.zeros_like(mask)), torch.zeros(2, 2))
