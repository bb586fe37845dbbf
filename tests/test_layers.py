"""Generic layers: masked softmax, split activation unit, TF BatchNorm, Dice, MLP, grouping helpers."""

from __future__ import annotations

import math

import pytest
import torch

from dhan.layers import (
    MLP,
    ActivationUnit,
    AttentionOptions,
    Dice,
    HierarchicalAttention,
    MaskedGroupLayerNorm,
    TFInferenceBatchNorm,
    group_pool,
    group_slots,
    masked_softmax,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_masked_softmax_zeroes_padding_and_empty_rows() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 9.0], [1e30, -1e30, 0.0]])
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])
    w = masked_softmax(scores, mask)
    assert torch.isfinite(w).all()
    assert w[0, 2] == 0
    assert w[2, 1] == 0
    torch.testing.assert_close(w[0, :2], torch.softmax(scores[0, :2], 0))
    assert (w[1] == 0).all()
    torch.testing.assert_close(w.sum(1), torch.tensor([1.0, 0.0, 1.0]))


def test_masked_softmax_bf16_input_stays_finite() -> None:
    w = masked_softmax(torch.randn(4, 6).bfloat16(), torch.rand(4, 6) > 0.5)
    assert w.dtype == torch.bfloat16
    assert torch.isfinite(w.float()).all()


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "prelu"])
@pytest.mark.parametrize("num_keys", [5, 30])  # 5 <= H / 2 = 6: split form; 30 > H / 2: the per-row fold
def test_split_activation_unit_equals_concat_form(activation: str, num_keys: int) -> None:
    torch.manual_seed(0)
    unit = ActivationUnit(16, (12, 7), activation)  # type: ignore[arg-type]
    q, k = torch.randn(5, 16), torch.randn(5, num_keys, 16)
    split = unit(q, k)
    concat = unit.forward_concat(q, k)
    assert split.shape == (5, num_keys)
    torch.testing.assert_close(split, concat, atol=1e-5, rtol=1e-5)
    # and the concat form is literally the MLP on [q, k, q-k, q*k]
    x = torch.cat([q[:, None].expand_as(k), k, q[:, None] - k, q[:, None] * k], -1)
    torch.testing.assert_close(concat, unit.rest(unit.first_activation(unit.first(x))).squeeze(-1))


@pytest.mark.parametrize("num_keys", [3, 20])  # split form and per-row fold (H = 6)
def test_split_activation_unit_gradients_match_concat(num_keys: int) -> None:
    torch.manual_seed(1)
    unit = ActivationUnit(8, (6,), "sigmoid")
    q = torch.randn(3, 8, requires_grad=True)
    k = torch.randn(3, num_keys, 8, requires_grad=True)
    unit(q, k).sum().backward()
    grads = [g.clone() for g in (unit.first.weight.grad, unit.first.bias.grad, q.grad, k.grad)]  # type: ignore[union-attr]
    unit.zero_grad()
    q.grad, k.grad = None, None
    unit.forward_concat(q, k).sum().backward()
    for got, want in zip(grads, (unit.first.weight.grad, unit.first.bias.grad, q.grad, k.grad), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_activation_unit_broadcast_history_matches_repeated_rows() -> None:
    # one history (1, N, D) against B queries takes the split path even with N > H / 2; the B copies take the
    # per-row fold: the same scores
    torch.manual_seed(2)
    unit = ActivationUnit(8, (6,), "sigmoid")
    q, k = torch.randn(5, 8), torch.randn(1, 20, 8)
    torch.testing.assert_close(unit(q, k), unit(q, k.expand(5, -1, -1)), atol=1e-5, rtol=1e-5)


def test_tf_inference_batchnorm_is_affine() -> None:
    bn = TFInferenceBatchNorm(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, 0.5]))
    x = torch.randn(4, 3)
    torch.testing.assert_close(bn(x), bn.weight * x / math.sqrt(1.001) + bn.bias)


def test_dice_running_uses_running_stats_at_eval_batch_variant_does_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 5) * 3 + 2
    running, batch = Dice(5, "running"), Dice(5, "batch")
    running.train()
    for _ in range(50):
        running(x)
    running.eval()
    batch.eval()
    one = x[:1]
    # eval, running stats: a row's output does not depend on the other rows
    torch.testing.assert_close(running(one), running(x)[:1])
    # batch variant: normalises with the current batch's statistics even at eval
    assert not torch.allclose(batch(one), batch(x)[:1])
    # alpha = 0 at init: y = p * x
    p = torch.sigmoid((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-8))
    torch.testing.assert_close(batch(x), p * x)


def test_dice_rejects_unknown_variant() -> None:
    with pytest.raises(ValueError, match="variant"):
        Dice(3, "bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "prelu", "dice"])
def test_mlp_activations_by_name(activation: str) -> None:
    mlp = MLP(6, (5, 4), activation, out_dim=2)  # type: ignore[arg-type]
    assert mlp(torch.randn(3, 6)).shape == (3, 2)


def test_group_slots_and_pool() -> None:
    ids = torch.tensor([[7, 3, 7, 9, 0], [5, 5, 5, 0, 0], [0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    slot, slot_mask, slot_ids = group_slots(ids, mask)
    assert slot[0, :4].tolist() == [1, 0, 1, 2]
    assert slot_mask.tolist()[0] == [True, True, True, False, False]
    assert slot_ids[0, :3].tolist() == [3, 7, 9]
    assert slot_ids[0, 3:].tolist() == [0, 0]
    assert slot_mask[1].tolist() == [True, False, False, False, False]
    assert slot_ids[1, 0] == 5
    assert not slot_mask[2].any()
    values = torch.randn(3, 5, 2)
    w = torch.rand(3, 5) * mask
    c = group_pool(values, w, slot, 5)
    expected = (w[0, [0, 2], None] * values[0, [0, 2]]).sum(0) / (w[0, [0, 2]].sum() + 1e-10)
    torch.testing.assert_close(c[0, 1], expected)
    assert (c[0, 3:] == 0).all()
    assert (c[2] == 0).all()


def test_masked_group_layer_norm_ignores_unused_slots() -> None:
    ln = MaskedGroupLayerNorm(4)
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    padded = torch.cat([x, torch.randn(2, 2, 4)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1)
    torch.testing.assert_close(ln(x, mask)[mask], ln(padded, padded_mask)[:, :3][mask])
    real = x[0, :2]
    expected = (real - real.mean()) / torch.sqrt(real.var(unbiased=False) + 1e-12)
    torch.testing.assert_close(ln(x, mask)[0, :2], expected)


def test_hierarchical_attention_docstring_example_and_empty_rows() -> None:
    torch.manual_seed(0)
    b, t, d = 32, 50, 128
    han = HierarchicalAttention(dim=d, num_levels=3, options=AttentionOptions())
    query = torch.randn(b, d)
    keys = torch.randn(b, t, d)
    mask = torch.arange(t) < torch.randint(1, t + 1, (b, 1))
    mask[0] = False  # one empty history
    groups = torch.stack([torch.randint(2, 40, (b, t)), torch.randint(2, 5, (b, t))], dim=-1)
    out = han(query, keys, mask, groups)
    features = torch.cat(out.pooled, dim=-1)
    assert features.shape == (b, 3 * d)
    assert torch.isfinite(features).all()
    assert (features[0] == 0).all()
    for w, m in zip(out.weights[1:], out.group_mask[1:], strict=True):
        assert torch.isfinite(w).all()
        assert (w[~m] == 0).all()
        torch.testing.assert_close(w[1:].sum(1), torch.ones(b - 1))


def test_hierarchical_attention_needs_enough_group_columns() -> None:
    han = HierarchicalAttention(8, 3)
    with pytest.raises(ValueError, match="group_ids has 1 columns"):
        han(torch.randn(2, 8), torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 4, 1).long())
